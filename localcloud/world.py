"""The local AWS world: one clock, the emulators, moto, faults and a call log.

``World.dispatch`` is the single entry for every request, whether it came over HTTP
(``localcloud.server``) or through the in-process botocore transport
(``localcloud.transport``). Requests are routed by the service named in their SigV4
credential scope, exactly as AWS front ends do, so one endpoint serves every service.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from localcloud.clock import Clock, RealClock
from localcloud.faults import FaultInjector
from localcloud.http import DropConnection, Request, Response, Router, ServiceError
from localcloud.iotcore import IoTCoreBus
from localcloud.nucleus.tes import CredentialRegistry

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
# The endpoint name the in-process transport answers for (never resolved on a network).
INTERNAL_ENDPOINT = "http://localcloud.internal"

_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")

# botocore signing names of services the world emulates itself; the rest go to moto.
MOTO_SERVICES = {"s3", "iot", "sts", "iam"}


class Emulator(Protocol):
    """What World needs from a service emulator."""

    router: Router

    def tick(self, now: float) -> None:
        """Advance time-driven state (jobs, deployments) up to ``now``."""


@dataclass(frozen=True)
class Call:
    """One request the world answered, for benchmarks and the IAM policy test."""

    time: float
    service: str
    operation: str
    status: int
    access_key: str


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
        self.emulators: dict[str, Emulator] = {}
        # Imported here: the emulators import World's helpers.
        from localcloud.greengrass import GreengrassEmulator
        from localcloud.lookoutvision import LookoutVisionEmulator
        from localcloud.sagemaker import SageMakerEmulator

        self.greengrass = GreengrassEmulator(self)
        self.lookoutvision = LookoutVisionEmulator(self)
        self.sagemaker = SageMakerEmulator(self)
        self.emulators = {
            "greengrass": self.greengrass,
            "lookoutvision": self.lookoutvision,
            "sagemaker": self.sagemaker,
        }

    # -- time -----------------------------------------------------------------------
    def tick(self) -> None:
        """Bring every time-driven state up to the clock's now."""
        now = self.clock.now()
        with self._lock:
            for emulator in self.emulators.values():
                emulator.tick(now)

    # -- requests -------------------------------------------------------------------
    def dispatch(self, request: Request, *, internal: bool = False) -> Response:
        """Answer one request. ``internal`` calls (emulator to moto) skip faults and log.

        Raises DropConnection when a fault says the connection is dropped.
        """
        scope = _SCOPE.search(request.headers.get("authorization", "") or "")
        if scope is None:
            return ServiceError(
                "MissingAuthenticationTokenException", "Missing Authentication Token", 403
            ).to_response()
        access_key, _region, service = scope.groups()
        denied = self.credentials.check(access_key)
        if denied is not None:
            return denied.to_response()
        if service in MOTO_SERVICES:
            operation = _moto_operation(service, request)
            response = self._moto.call(request)
            if not internal:
                self.calls.record(
                    Call(self.clock.now(), service, operation, response.status, access_key)
                )
            return response
        emulator = self.emulators.get(service)
        if emulator is None:
            return ServiceError(
                "UnknownServiceException", f"Service {service!r} is not emulated", 400
            ).to_response()
        matched = emulator.router.match(request)
        operation = matched[0].operation if matched else "Unknown"
        try:
            if not internal:
                self.faults.check(service, operation)
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
            if not internal:
                self.calls.record(Call(self.clock.now(), service, operation, 0, access_key))
            raise
        if not internal:
            self.calls.record(Call(self.clock.now(), service, operation, response.status, access_key))
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
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.test import Client

        self._client = Client(DomainDispatcherApplication(create_backend_app))
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
