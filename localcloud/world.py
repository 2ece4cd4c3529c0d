"""The local AWS world: one clock, the emulators, moto, faults and a call log.

``World.dispatch`` is the single entry for every request, whether it came over HTTP
(``localcloud.server``) or through the in-process botocore transport
(``localcloud.transport``). Requests are routed by the service named in their SigV4
credential scope, exactly as AWS front ends do, so one endpoint serves every service.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from localcloud.clock import Clock, RealClock
from localcloud.credentials import CredentialRegistry
from localcloud.faults import THROTTLING_CODES, FaultInjector
from localcloud.http import DropConnection, Request, Response, Router, ServiceError
from localcloud.iotcore import IoTCoreBus

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
# The endpoint name the in-process transport answers for (never resolved on a network).
INTERNAL_ENDPOINT = "http://localcloud.internal"

_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")

# botocore signing names of services the world emulates itself; the rest go to moto.
MOTO_SERVICES = {"s3", "iot", "sts", "iam"}
#: Long-term keys the world's own clients sign with (moto maps unknown keys to the home account).
TEST_CREDENTIALS = {"aws_access_key_id": "AKIDLOCALCLOUD", "aws_secret_access_key": "local-secret"}
#: Response headers that carry a request id (AWS JSON services; S3).
_REQUEST_ID_HEADERS = ("x-amzn-requestid", "x-amz-request-id")


class Emulator(Protocol):
    """What World needs from a service emulator."""

    router: Router

    def tick(self, now: float) -> None:
        """Advance time-driven state (jobs, deployments) up to ``now``."""


@dataclass(frozen=True, slots=True)  # millions of them in a fleet bench
class Call:
    """One request the world answered, for benchmarks and the IAM policy test."""

    time: float
    service: str
    operation: str
    status: int
    access_key: str
    #: The ``x-amzn-RequestId`` the caller received ("" when the connection was dropped).
    request_id: str = ""
    region: str = REGION
    #: The error code of an error answer (``x-amzn-ErrorType``), "" for a success.
    error_code: str = ""

    @property
    def throttled(self) -> bool:
        """Whether the answer was a throttle, whatever HTTP status the service uses for it
        (429 for REST services, 400 for JSON 1.1 ones such as SageMaker)."""
        return self.status == 429 or self.error_code in THROTTLING_CODES


class CallLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def counts(self, service: str | None = None) -> Counter[str]:
        """Calls per ``service:operation`` (or per operation of one service)."""
        with self._lock:
            if service is None:
                return Counter(f"{c.service}:{c.operation}" for c in self.calls)
            return Counter(c.operation for c in self.calls if c.service == service)

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


class World:
    """Everything the agent talks to, in one process.

    moto's state is global to the process, so one World at a time per process (creating
    a World resets moto).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        region: str = REGION,
        account_id: str = ACCOUNT_ID,
        seed: int | None = None,
    ) -> None:
        self.clock: Clock = clock or RealClock()
        self.region = region
        self.account_id = account_id
        self.faults = FaultInjector(self.clock, seed=seed)
        self.calls = CallLog()
        self.iotcore = IoTCoreBus(self.clock)
        self.credentials = CredentialRegistry(self.clock)
        self._lock = threading.RLock()
        self._moto = _MotoApp()
        self._internal_clients: dict[str, Any] = {}
        self._scopes: dict[tuple[str, str], Scope] = {}
        home = self.scope(account_id, region)
        self.greengrass = home.greengrass
        self.lookoutvision = home.lookoutvision
        self.sagemaker = home.sagemaker
        self.emulators: dict[str, Emulator] = home.emulators

    # -- accounts and regions -------------------------------------------------------------
    def scope(self, account_id: str, region: str) -> Scope:
        """The emulators' state for one account in one region, created on first use.

        As on AWS (and in moto), a Lookout for Vision project, a SageMaker model package
        group or compilation job, or a Greengrass component made in one region or account
        does not exist in another.
        """
        with self._lock:
            found = self._scopes.get((account_id, region))
            if found is None:
                found = self._scopes[(account_id, region)] = Scope(self, account_id, region)
            return found

    def _account(self, access_key: str) -> str | ServiceError:
        """The account a request signed with ``access_key`` acts in, or why it is refused.

        Keys the token exchange service issued and unknown long-term keys act in the home
        account; keys moto issued (IAM users, STS sessions) in the account moto gave them.
        """
        if self.credentials.expires_at(access_key) is None and access_key[:4] in ("AKIA", "ASIA"):
            account = _moto_account(access_key)
            if account is not None:
                return account
        return self.credentials.check(access_key) or self.account_id

    def client_credentials(self) -> dict[str, str]:
        """Credentials of the world's internal clients in the home account."""
        return dict(TEST_CREDENTIALS)

    # -- time -----------------------------------------------------------------------
    def tick(self) -> None:
        """Bring every time-driven state up to the clock's now."""
        now = self.clock.now()
        with self._lock:
            for scope in list(self._scopes.values()):
                for emulator in scope.emulators.values():
                    emulator.tick(now)

    # -- requests -------------------------------------------------------------------
    def dispatch(self, request: Request, *, internal: bool = False) -> Response:
        """Answer one request. ``internal`` calls (emulator to moto) skip faults and log.

        The request is served by the state of the account its access key belongs to, in
        the region of its SigV4 credential scope. Every answer carries a request id
        (``x-amzn-RequestId``), as AWS's do. Raises DropConnection when a fault says the
        connection is dropped.
        """
        request_id = str(uuid.uuid4())
        credential = _SCOPE.search(request.headers.get("authorization", "") or "")
        if credential is None:
            return _with_request_id(
                ServiceError(
                    "MissingAuthenticationTokenException", "Missing Authentication Token", 403
                ).to_response(),
                request_id,
            )
        access_key, region, service = credential.groups()
        account = self._account(access_key)
        if isinstance(account, ServiceError):
            return _with_request_id(account.to_response(), request_id)

        def log(operation: str, status: int, answer_id: str, response: Response | None = None) -> None:
            if not internal:
                code = "" if response is None or status < 300 else _error_code_of(response)
                self.calls.record(
                    Call(self.clock.now(), service, operation, status, access_key, answer_id, region, code)
                )

        if service in MOTO_SERVICES:
            response = _with_request_id(self._moto.call(request), request_id)
            log(_moto_operation(service, request), response.status, _request_id_of(response), response)
            return response
        emulator = self.scope(account, region).emulators.get(service)
        if emulator is None:
            return _with_request_id(
                ServiceError(
                    "UnknownServiceException", f"Service {service!r} is not emulated", 400
                ).to_response(),
                request_id,
            )
        matched = emulator.router.match(request)
        operation = matched[0].operation if matched else "Unknown"
        try:
            if not internal:
                self.faults.check(service, operation, account=account, region=region)
                with self._lock:
                    quota = getattr(emulator, "check_rate_quota", None)
                    if quota is not None:
                        quota(operation)
            if matched is None:
                raise ServiceError(
                    "UnknownOperationException", f"No operation at {request.method} {request.path}", 404
                )
            route, params = matched
            with self._lock:
                self.tick()
                response = route.handler(request, params)
        except ServiceError as error:
            response = error.to_response()
        except DropConnection:
            log(operation, 0, "")
            raise
        response = _with_request_id(response, request_id)
        log(operation, response.status, request_id, response)
        return response

    # -- helpers for emulators and tests -----------------------------------------------
    def client(self, service: str) -> Any:
        """A boto3 client wired in-process to this world (internal: no faults, no log)."""
        with self._lock:
            if service not in self._internal_clients:
                from localcloud.transport import world_client

                self._internal_clients[service] = world_client(self, service, internal=True)
            return self._internal_clients[service]

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"


class Scope:
    """One account in one region: the emulators' state there and what they see of the world.

    Emulators reach the world only through their scope (clock, ARNs, internal clients),
    so their ARNs, moto resources and component registry all belong to its account and
    region.
    """

    def __init__(self, world: World, account_id: str, region: str) -> None:
        self.world = world
        self.account_id = account_id
        self.region = region
        self.clock = world.clock
        self._lock = world._lock
        self._clients: dict[str, Any] = {}
        self._credentials: dict[str, str] | None = None
        # Imported here: the emulators import World's helpers.
        from localcloud.greengrass import GreengrassEmulator
        from localcloud.lookoutvision import LookoutVisionEmulator
        from localcloud.sagemaker import SageMakerEmulator

        self.greengrass = GreengrassEmulator(self)
        self.lookoutvision = LookoutVisionEmulator(self)
        self.sagemaker = SageMakerEmulator(self)
        self.emulators: dict[str, Emulator] = {
            "greengrass": self.greengrass,
            "lookoutvision": self.lookoutvision,
            "sagemaker": self.sagemaker,
        }

    def tick(self) -> None:
        self.world.tick()

    def dispatch(self, request: Request, *, internal: bool = False) -> Response:
        return self.world.dispatch(request, internal=internal)

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    def client_credentials(self) -> dict[str, str]:
        """Keys that moto maps to this scope's account (an assumed role outside home)."""
        if self.account_id == self.world.account_id:
            return self.world.client_credentials()
        if self._credentials is None:
            answer = self.world.client("sts").assume_role(
                RoleArn=f"arn:aws:iam::{self.account_id}:role/localcloud-internal",
                RoleSessionName="localcloud-internal",
            )["Credentials"]
            self._credentials = {
                "aws_access_key_id": answer["AccessKeyId"],
                "aws_secret_access_key": answer["SecretAccessKey"],
                "aws_session_token": answer["SessionToken"],
            }
        return dict(self._credentials)

    def client(self, service: str) -> Any:
        """A boto3 client for this account and region (internal: no faults, no log)."""
        with self._lock:
            if service not in self._clients:
                from localcloud.transport import world_client

                self._clients[service] = world_client(self, service, internal=True)
            return self._clients[service]


def _moto_account(access_key: str) -> str | None:
    """The account moto issued ``access_key`` in (IAM keys, STS sessions), else None."""
    from moto.iam.models import iam_backends
    from moto.utilities.utils import PARTITION_NAMES

    for account_id, account in list(iam_backends.items()):
        for partition in PARTITION_NAMES:
            if access_key in account[partition].access_keys:
                return str(account_id)
    return None


def _request_id_of(response: Response) -> str:
    for key, value in response.headers.items():
        if key.lower() in _REQUEST_ID_HEADERS:
            return str(value)
    return ""


def _error_code_of(response: Response) -> str:
    for key, value in response.headers.items():
        if key.lower() == "x-amzn-errortype":
            return str(value).split(":", 1)[0]
    return ""


def _with_request_id(response: Response, request_id: str) -> Response:
    """``response`` with an ``x-amzn-RequestId`` header unless it already has a request id."""
    if not _request_id_of(response):
        response.headers["x-amzn-RequestId"] = request_id
    return response


def _moto_operation(service: str, request: Request) -> str:
    """Best-effort operation name for the call log of moto-served services."""
    target = request.headers.get("x-amz-target")
    if target:
        return str(target).rsplit(".", 1)[-1]
    action = request.query_value("Action")
    if action:
        return action
    if service == "iot":
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET" and len(parts) == 2 and parts[0] == "things":
            return "DescribeThing"
        if request.method == "GET" and parts[:1] == ["endpoint"]:
            return "DescribeEndpoint"
    if service == "s3":
        return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject"}.get(
            request.method, request.method
        )
    return f"{request.method} {request.path}"


class _MotoApp:
    """moto's WSGI application, called in-process (no socket, no thread)."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.test import Client

        dispatcher = DomainDispatcherApplication(create_backend_app)
        # Which backend serves a host is a pure function of the host, but moto works it out
        # again on every request (listing its module directory): remember the answers.
        by_host: dict[str | None, Any] = {}
        find_backend = dispatcher.get_backend_for_host

        def backend_for_host(host: str | None) -> Any:
            if host not in by_host:
                by_host[host] = find_backend(host)
            return by_host[host]

        dispatcher.get_backend_for_host = backend_for_host  # type: ignore[method-assign]
        _index_moto_describe_thing()
        self._client = Client(dispatcher)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        from moto.moto_api._internal.models import moto_api_backend

        # Empties every backend (things, groups, buckets) so each World starts clean.
        moto_api_backend.reset()

    def call(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k not in ("content-length", "host")}
        query = urlencode([(k, v) for k, vs in request.query.items() for v in vs])
        with self._lock:
            result = self._client.open(
                path=request.path,
                method=request.method,
                headers=headers,
                data=request.body,
                query_string=query,
                # moto reads S3 bucket names from virtual-host names; callers are path-style.
                base_url="http://127.0.0.1",
            )
            body = result.get_data()
        out_headers = {k: v for k, v in result.headers.items() if k.lower() != "content-length"}
        return Response(result.status_code, body, out_headers)


def _index_moto_describe_thing() -> None:
    """Make moto's IoT ``describe_thing`` a dictionary lookup instead of a scan of every
    thing (with 100,000 simulated devices each call, and so each deployment to a thing,
    would cost O(things)). moto keys its things by ARN and a thing's ARN is made from its
    name, so the answer is the same (a miss raises moto's ResourceNotFoundException, as
    its scan does). Installed once per process.
    """
    from moto.iot.exceptions import ResourceNotFoundException
    from moto.iot.models import IoTBackend
    from moto.utilities.utils import get_partition

    current = IoTBackend.describe_thing
    if getattr(current, "indexed", False):
        return

    def describe_thing(self: Any, thing_name: str) -> Any:
        partition = get_partition(self.region_name)
        arn = f"arn:{partition}:iot:{self.region_name}:{self.account_id}:thing/{thing_name}"
        found = self.things.get(arn)
        if found is None or found.thing_name != thing_name:
            raise ResourceNotFoundException()  # what moto's scan raises for a missing name
        return found

    describe_thing.indexed = True  # type: ignore[attr-defined]
    IoTBackend.describe_thing = describe_thing  # type: ignore[method-assign]
