"""AWS IoT Greengrass V2 control-plane emulator (botocore ``greengrassv2``, REST-JSON).

Request members are checked by :mod:`localcloud.validation` against the shapes of
botocore's own ``greengrassv2`` service model (types, required members, lengths, ranges,
patterns, enums), so the emulator cannot drift from what boto3 sends. Semantics on top of the shapes (what a
deployment replaces, how targets combine on a device, idempotency) are documented in
``localcloud/README.md`` (section "Greengrass V2").

Simulated core devices (:class:`localcloud.device.CoreDevice`) apply deployments on the
world clock inside :meth:`GreengrassEmulator.tick`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import functools
import heapq
import json
import math
import re
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from localcloud import validation
from localcloud.device import (
    NUCLEUS_NAME,
    NUCLEUS_VERSION,
    CoreDevice,
    EffectiveDeployment,
    is_version,
    parse_requirement,
    parse_version,
    recipe_dependencies,
    recipe_get,
)
from localcloud.http import Request, Response, Route, Router, ServiceError, parse_json_body
from localcloud.recipe_artifacts import artifact_errors

#: Successful responses to requests with a clientToken are replayed for this long.
TOKEN_TTL_SECONDS = 8 * 3600
RECIPE_FORMAT_VERSION = "2020-01-25"
TES_NAME = "aws.greengrass.TokenExchangeService"
EDGE_AGENT_NAME = "aws.iot.lookoutvision.EdgeAgent"
#: Public (AWS-owned) components registered when the emulator starts.
PUBLIC_VERSIONS: dict[str, tuple[str, ...]] = {
    NUCLEUS_NAME: (NUCLEUS_VERSION,),
    TES_NAME: ("2.0.3",),
    EDGE_AGENT_NAME: ("1.0.0", "1.1.0"),
}
#: Control-plane request-rate quotas per account and Region (the scope of one emulator), as
#: the AWS General Reference documents them ("AWS IoT Greengrass V2 endpoints and quotas",
#: Service quotas, "Quotas for API operations"; neither is adjustable): CreateComponentVersion
#: 1 request/s; every other control-plane operation 30 requests/s **combined** (10 in the
#: Regions of ``REDUCED_CONTROL_PLANE_RATES``). Keys of ``GreengrassEmulator.rate_quotas``:
#: an operation name gives that operation its own quota; ``OTHER_OPERATIONS`` is the quota
#: every operation without its own key shares. See localcloud/README.md.
OTHER_OPERATIONS = "*"
CONTROL_PLANE_RATE = 30.0
REDUCED_CONTROL_PLANE_RATES: dict[str, float] = {
    "cn-north-1": 10.0,
    "us-gov-west-1": 10.0,
    "us-gov-east-1": 10.0,
}
DEFAULT_RATE_QUOTAS: dict[str, float] = {
    "CreateComponentVersion": 1.0,
    OTHER_OPERATIONS: CONTROL_PLANE_RATE,
}
#: quotaCode labels of the emulator's ThrottlingException. AWS documents no Service Quotas
#: code for these (non-adjustable) quotas; the labels name the quota that was hit.
QUOTA_LABELS: dict[str, str] = {
    "CreateComponentVersion": "CreateComponentVersion-requests-per-second",
    OTHER_OPERATIONS: "control-plane-requests-per-second",
}
#: IoT jobs notify at most this many things per minute.
MAX_ROLLOUT_PER_MINUTE = 1000.0
#: Final execution statuses that count as executed for abortConfig (SUCCEEDED first).
_EXECUTED = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")
#: The Service Quotas code of Greengrass (ThrottlingException.serviceCode).
QUOTA_SERVICE_CODE = "greengrass"
DEFAULT_POLICIES: dict[str, Any] = {
    "failureHandlingPolicy": "ROLLBACK",
    "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
    "configurationValidationPolicy": {"timeoutInSeconds": 30},
}
_TARGET = re.compile(r"arn:([^:]*):iot:([^:]*):([0-9]+):(thing|thinggroup)/(.+)")
_COMPONENT_NAME = re.compile(r"[a-zA-Z0-9._-]+")


# -- the service model as the source of truth for shapes -----------------------------------


@functools.cache
def _botocore_session() -> Any:
    """One botocore session per process: its loader caches service models across worlds."""
    import botocore.session

    return botocore.session.get_session()


def service_model() -> Any:
    """botocore's current ``greengrassv2`` model (loaded once per process)."""
    return validation.service_model("greengrassv2")


def _invalid(
    message: str,
    fields: list[dict[str, str]] | None = None,
    reason: str = "FIELD_VALIDATION_FAILED",
) -> ServiceError:
    extra: dict[str, Any] = {"reason": reason}
    if fields:
        extra["fields"] = fields
    return ServiceError("ValidationException", message, 400, **extra)


def _not_found(message: str, resource_id: str, resource_type: str) -> ServiceError:
    return ServiceError(
        "ResourceNotFoundException",
        message,
        404,
        resourceId=resource_id,
        resourceType=resource_type,
    )


def _conflict(message: str, resource_id: str, resource_type: str) -> ServiceError:
    return ServiceError(
        "ConflictException", message, 409, resourceId=resource_id, resourceType=resource_type
    )


_TYPE_MESSAGES = {
    "structure": "must be an object",
    "map": "must be an object",
    "list": "must be a list",
    "string": "must be a string",
    "integer": "must be an integer",
    "long": "must be an integer",
    "double": "must be a number",
    "float": "must be a number",
    "boolean": "must be a boolean",
    "blob": "must be a base64 string",
    "timestamp": "must be a timestamp",
}


def _field_name(path: validation.FieldPath) -> str:
    """A member path as Greengrass names it in ``fields``: ``a.b[0].<key 'k'>``."""
    name = ""
    for segment in path:
        if isinstance(segment, validation.Member):
            name += f".{segment.name}"
        elif isinstance(segment, validation.Item):
            name += f"[{segment.index}]"
        elif isinstance(segment, validation.MapKey):
            name += f".<key {segment.key!r}>"
        else:
            name += f".{segment.key}"
    return name.lstrip(".")


def _field(violation: validation.Violation) -> dict[str, str]:
    """One ``{name, message}`` entry of a ValidationException's ``fields``."""
    rule, bound = violation.rule, violation.bound
    if rule == validation.REQUIRED:
        message = "is required"
    elif rule in (validation.TYPE, validation.NULL):
        message = _TYPE_MESSAGES.get(bound, f"must be a {bound}")
    elif rule in (validation.MIN_LENGTH, validation.MAX_LENGTH):
        value = violation.value
        unit = (
            "entries"
            if isinstance(value, dict)
            else "items"
            if isinstance(value, list)
            else "characters"
        )
        least = "least" if rule == validation.MIN_LENGTH else "most"
        message = f"must have at {least} {bound} {unit}"
    elif rule == validation.MIN_VALUE:
        message = f"must be >= {bound}"
    elif rule == validation.MAX_VALUE:
        message = f"must be <= {bound}"
    elif rule == validation.PATTERN:
        message = f"must satisfy the pattern {bound}"
    elif rule == validation.ENUM:
        message = f"must be one of {', '.join(bound)}"
    else:
        message = "must be valid base64"
    return {"name": _field_name(violation.path), "message": message}


def _raise_if(errors: list[dict[str, str]]) -> None:
    if errors:
        summary = "; ".join(f"{e['name']} {e['message']}" for e in errors[:5])
        raise _invalid(f"{len(errors)} validation error(s) detected: {summary}", errors)


def read_input(operation: str, request: Request, params: Mapping[str, str]) -> dict[str, Any]:
    """Decode an operation's input (path, query, JSON body) and check it against the model."""
    shape = service_model().operation_model(operation).input_shape

    def body() -> dict[str, Any]:
        try:
            return parse_json_body(request)
        except ServiceError as error:
            raise _invalid(error.message, reason="CANNOT_PARSE") from error

    values = validation.rest_input(shape, params, request.query_value, request.headers.get, body)
    if shape is not None:
        _raise_if([_field(v) for v in validation.violations(shape, values)])
    return values


# -- records -----------------------------------------------------------------------------------


@dataclass
class ComponentVersion:
    """One registered component version."""

    name: str
    version: str
    arn: str
    recipe: dict[str, Any]
    created: float
    public: bool
    tags: dict[str, str] = field(default_factory=dict)

    def platforms(self) -> list[dict[str, Any]]:
        out = []
        for manifest in recipe_get(self.recipe, "Manifests") or []:
            platform = recipe_get(manifest, "Platform") or {}
            attributes = {str(k): str(v) for k, v in platform.items() if str(v)}
            entry: dict[str, Any] = {"attributes": attributes}
            if "os" in attributes:
                entry["name"] = attributes["os"]
            out.append(entry)
        return out

    def describe(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "arn": self.arn,
            "componentName": self.name,
            "componentVersion": self.version,
            "creationTimestamp": self.created,
            "publisher": str(
                recipe_get(self.recipe, "ComponentPublisher") or ("AWS" if self.public else "")
            ),
            "description": str(recipe_get(self.recipe, "ComponentDescription") or ""),
            "status": _deployable(),
            "platforms": self.platforms(),
        }
        if self.tags:
            answer["tags"] = dict(self.tags)
        return answer


def _deployable() -> dict[str, Any]:
    return {
        "componentState": "DEPLOYABLE",
        "message": "NONE",
        "errors": {},
        "vendorGuidance": "ACTIVE",
    }


@dataclass
class Deployment:
    """One deployment (one revision for its target)."""

    deployment_id: str
    sequence: int
    target_arn: str
    target_kind: str  # "thing" | "thinggroup"
    target_name: str
    revision_id: str
    name: str
    components: dict[str, dict[str, Any]]
    policies: dict[str, Any]
    iot_job_configuration: dict[str, Any]
    tags: dict[str, str]
    parent_target_arn: str | None
    created: float
    iot_job_id: str
    iot_job_arn: str
    status: str = "ACTIVE"
    is_latest: bool = True
    #: Thing-group rollout (IoT jobExecutionsRolloutConfig): devices not yet notified,
    #: when the next batch goes out and how many things a batch holds now.
    pending: deque[str] = field(default_factory=deque)
    next_batch_at: float | None = None
    rate: float = 0.0
    notified_since_increase: int = 0
    succeeded_since_increase: int = 0
    #: Final execution statuses of a thing-group deployment's devices (abortConfig).
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def job(self) -> dict[str, Any]:
        return self.iot_job_configuration

    def orders_events(self) -> bool:
        """Whether its rollout or abort rules need device events in time order."""
        return self.status == "ACTIVE" and (
            bool(self.pending) or bool((self.job.get("abortConfig") or {}).get("criteriaList"))
        )

    def summary(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "targetArn": self.target_arn,
            "revisionId": self.revision_id,
            "deploymentId": self.deployment_id,
            "deploymentName": self.name,
            "creationTimestamp": self.created,
            "deploymentStatus": self.status,
            "isLatestForTarget": self.is_latest,
        }
        if self.parent_target_arn:
            item["parentTargetArn"] = self.parent_target_arn
        return item

    def detail(self) -> dict[str, Any]:
        item = self.summary()
        item.update(
            {
                "iotJobId": self.iot_job_id,
                "iotJobArn": self.iot_job_arn,
                "components": copy.deepcopy(self.components),
                "deploymentPolicies": copy.deepcopy(self.policies),
                "iotJobConfiguration": copy.deepcopy(self.iot_job_configuration),
            }
        )
        if self.tags:
            item["tags"] = dict(self.tags)
        return item


@dataclass
class _InstallFailure:
    component: str
    version: str | None
    times: int
    message: str


# -- pagination --------------------------------------------------------------------------------


def _page(items: list[Any], values: Mapping[str, Any], kind: str) -> tuple[list[Any], str | None]:
    """Slice ``items`` by nextToken/maxResults; tokens are opaque and bound to ``kind``."""
    limit = values.get("maxResults") or 50
    start = 0
    token = values.get("nextToken")
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
            if decoded["k"] != kind or not isinstance(decoded["o"], int) or decoded["o"] < 0:
                raise ValueError(token)
            start = decoded["o"]
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError) as exc:
            raise _invalid(
                "The nextToken is not valid", [{"name": "nextToken", "message": "is not valid"}]
            ) from exc
    page = items[start : start + limit]
    end = start + len(page)
    if end >= len(items):
        return page, None
    raw = json.dumps({"k": kind, "o": end}, separators=(",", ":")).encode()
    return page, base64.urlsafe_b64encode(raw).decode()


class _GreengrassRouter(Router):
    """A router that answers paths it does not know with ValidationException UNKNOWN_OPERATION."""

    def __init__(self, fallback: Callable[[Request, dict[str, str]], Response]) -> None:
        super().__init__()
        self._fallback = Route("*", "*", "UnknownOperation", fallback, re.compile(".*"))

    def match(self, request: Request) -> tuple[Route, dict[str, str]] | None:
        found = super().match(request)
        return found if found is not None else (self._fallback, {})


# -- the emulator ------------------------------------------------------------------------------


class GreengrassEmulator:
    """The Greengrass V2 control plane and the core devices it deploys to."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.lock: threading.RLock = getattr(world, "_lock", None) or threading.RLock()
        #: Seconds a device takes to install a deployment (read when it starts one).
        self.install_seconds: float = 20.0
        #: Simulated core devices by thing name.
        self.devices: dict[str, CoreDevice] = {}
        self._components: dict[str, dict[str, ComponentVersion]] = {}
        self._deployments: dict[str, Deployment] = {}
        self._latest: dict[str, str] = {}  # target ARN -> latest deployment id
        self._by_target: dict[str, list[Deployment]] = {}  # target ARN -> oldest first
        self._revisions: dict[str, int] = {}
        self._tokens: dict[tuple[str, str], tuple[float, str, dict[str, Any]]] = {}
        self._failures: list[_InstallFailure] = []
        #: Device steps by due time (a heap with stale entries) and each device's entry.
        self._steps: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        #: Deployments whose rollout or abort rules need events in time order.
        self._ordered: set[str] = set()
        self._next_due = float("inf")
        self._sequence = 0
        #: Called with (thing name, deployment id) whenever a device's nucleus would send
        #: a post-update event for a deployment (see ``localcloud.device``): fleets without
        #: a nucleus feed each device's local deployment events from it. O(1) per event,
        #: called under the world lock: it must not call back into the world.
        self.on_post_update: Callable[[str, str], None] | None = None
        #: notified (under ``lock``) when an answer to a pre-update event moved a device on
        self.stage_changed = threading.Condition(self.lock)
        self._iot_client: Any = None
        #: Requests/s per quota (None: unlimited); see DEFAULT_RATE_QUOTAS.
        self.rate_quotas: dict[str, float | None] = dict(DEFAULT_RATE_QUOTAS)
        region = getattr(world, "region", None)
        if region in REDUCED_CONTROL_PLANE_RATES:
            self.rate_quotas[OTHER_OPERATIONS] = REDUCED_CONTROL_PLANE_RATES[region]
        self._request_times: dict[str, deque[float]] = {}
        self.router: Router = _GreengrassRouter(self._unknown_operation)
        prefix = "/greengrass/v2"
        for method, path, operation, handler in (
            (
                "POST",
                f"{prefix}/createComponentVersion",
                "CreateComponentVersion",
                self._create_component_version,
            ),
            (
                "GET",
                f"{prefix}/components/{{arn}}/metadata",
                "DescribeComponent",
                self._describe_component,
            ),
            (
                "GET",
                f"{prefix}/components/{{arn}}/versions",
                "ListComponentVersions",
                self._list_component_versions,
            ),
            ("GET", f"{prefix}/components/{{arn}}", "GetComponent", self._get_component),
            ("POST", f"{prefix}/deployments", "CreateDeployment", self._create_deployment),
            ("GET", f"{prefix}/deployments", "ListDeployments", self._list_deployments),
            (
                "GET",
                f"{prefix}/deployments/{{deploymentId}}",
                "GetDeployment",
                self._get_deployment,
            ),
            (
                "POST",
                f"{prefix}/deployments/{{deploymentId}}/cancel",
                "CancelDeployment",
                self._cancel_deployment,
            ),
            ("GET", f"{prefix}/coreDevices", "ListCoreDevices", self._list_core_devices),
            (
                "GET",
                f"{prefix}/coreDevices/{{coreDeviceThingName}}",
                "GetCoreDevice",
                self._get_core_device,
            ),
            (
                "GET",
                f"{prefix}/coreDevices/{{coreDeviceThingName}}/effectiveDeployments",
                "ListEffectiveDeployments",
                self._list_effective_deployments,
            ),
            (
                "GET",
                f"{prefix}/coreDevices/{{coreDeviceThingName}}/installedComponents",
                "ListInstalledComponents",
                self._list_installed_components,
            ),
        ):
            self.router.add(method, path, operation, self._wrap(operation, handler))
        for name, versions in PUBLIC_VERSIONS.items():
            for version in versions:
                self._register(_public_recipe(name, version), public=True, now=world.clock.now())

    # -- time -------------------------------------------------------------------------------
    def deployments(self) -> list[Deployment]:
        """Every deployment, oldest first (for benchmarks and tests)."""
        with self.lock:
            return sorted(self._deployments.values(), key=lambda d: d.sequence)

    def next_due(self) -> float:
        """When :meth:`tick` next has device work to do (``inf``: none), so a simulation
        can tick the world then rather than wait for the next request."""
        return self._next_due

    def tick(self, now: float) -> None:
        """Advance every device with work due by ``now``; O(1) when nothing is due, and
        O(log devices) per due step otherwise (a thing-group deployment to 25,000 devices
        costs nothing per tick while they install).

        While a thing-group deployment rolls out in batches or has abort criteria, events
        (batches, device steps) are taken one at a time in time order, so that a failure
        can abort the deployment before later devices act.
        """
        if now < self._next_due:
            return
        self._ordered = {d for d in self._ordered if self._deployments[d].orders_events()}
        if self._ordered:
            self._tick_in_order(now)
            return
        while True:
            step = self._first_step()
            if step is None or step[0] > now:
                break
            self._advance_device(step, now)
        self._next_due = self._first_due()

    def _tick_in_order(self, now: float) -> None:
        while True:
            self._ordered = {d for d in self._ordered if self._deployments[d].orders_events()}
            batches = [
                (deployment.next_batch_at, deployment_id)
                for deployment_id in self._ordered
                if (deployment := self._deployments[deployment_id]).next_batch_at is not None
                and deployment.pending
            ]
            first_batch = min(batches, default=None)
            first_step = self._first_step()
            if (
                first_batch is not None
                and first_batch[0] <= now
                and (first_step is None or first_batch[0] <= first_step[0])
            ):
                self._notify_batch(self._deployments[first_batch[1]], first_batch[0])
            elif first_step is not None and first_step[0] <= now:
                self._advance_device(first_step, first_step[0])
            else:
                upcoming = [event[0] for event in (first_batch, first_step) if event is not None]
                self._next_due = min(upcoming, default=float("inf"))
                return

    def _first_step(self) -> tuple[float, str] | None:
        """The earliest scheduled device step (due, thing name), stale entries dropped."""
        steps = self._steps
        while steps:
            due, thing_name = steps[0]
            if self._scheduled.get(thing_name) == due:
                return due, thing_name
            heapq.heappop(steps)
        return None

    def _first_due(self) -> float:
        step = self._first_step()
        batches = [
            deployment.next_batch_at
            for deployment_id in self._ordered
            if (deployment := self._deployments[deployment_id]).next_batch_at is not None
        ]
        return min(([step[0]] if step else []) + batches, default=float("inf"))

    def _advance_device(self, step: tuple[float, str], until: float) -> None:
        """Run the device of ``step`` (popped from the schedule) up to ``until``."""
        heapq.heappop(self._steps)
        del self._scheduled[step[1]]
        device = self.devices[step[1]]
        device.advance(until)
        self._wake(device)

    def sync(self) -> None:
        """Bring the world (and so every device) up to the clock's now."""
        self.world.tick()

    def _wake(self, device: CoreDevice) -> None:
        """Schedule the device's next step (an earlier one replaces a later one; a step
        found not due yet when it comes up is simply rescheduled)."""
        due = device.next_due()
        if due is None:
            return
        scheduled = self._scheduled.get(device.thing_name)
        if scheduled is None or due < scheduled:
            self._scheduled[device.thing_name] = due
            heapq.heappush(self._steps, (due, device.thing_name))
        self._next_due = min(self._next_due, due)

    def wake_device(self, device: CoreDevice) -> None:
        """A device's next step moved (an answer to a pre-update event came): look at it."""
        with self.lock:
            self._wake(device)

    def post_update_done(self, device: CoreDevice, deployment_id: str) -> None:
        """A device sent a post-update event for ``deployment_id``: tell ``on_post_update``."""
        if self.on_post_update is not None:
            self.on_post_update(device.thing_name, deployment_id)

    # -- Python API used by other emulators, tests and the demo ---------------------------------
    def register_component_version(
        self,
        recipe: dict[str, Any],
        *,
        tags: Mapping[str, str] | None = None,
        created_at: float | None = None,
    ) -> str:
        """Register a private component version from a recipe dict; return its ARN.

        ``tags`` are attached to the component version; ``created_at`` (world time,
        default now) is its creationTimestamp. Raises ServiceError ValidationException for
        a bad recipe, ConflictException if the name and version exist.
        """
        with self.lock:
            errors = _recipe_errors(recipe)
            _raise_if(errors)
            now = self.world.clock.now() if created_at is None else created_at
            record = self._register(recipe, public=False, now=now)
            record.tags = dict(tags or {})
            return record.arn

    def component_version_exists(self, name: str, version: str) -> bool:
        with self.lock:
            return version in self._components.get(name, {})

    def add_core_device(
        self,
        thing_name: str,
        *,
        thing_groups: Iterable[str] = (),
        platform: str = "linux",
        architecture: str = "amd64",
    ) -> CoreDevice:
        """Create (if missing) the IoT thing, its thing groups and memberships, and the device.

        The device at once receives the latest active deployment of its thing and of each
        of its thing groups. Calling it again for the same thing adds group memberships.
        """
        groups = list(thing_groups)
        iot = self._iot()
        with self.lock:
            with contextlib.suppress(iot.exceptions.ResourceAlreadyExistsException):
                iot.create_thing(thingName=thing_name)
            for group in groups:
                with contextlib.suppress(iot.exceptions.ResourceAlreadyExistsException):
                    iot.create_thing_group(thingGroupName=group)
                iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing_name)
            now = self.world.clock.now()
            device = self.devices.get(thing_name)
            if device is None:
                device = CoreDevice(
                    self, thing_name, platform=platform, architecture=architecture, now=now
                )
                self.devices[thing_name] = device
            self._deliver(device, self._deployments_for_new_device(device), now)
            return device

    def add_core_devices(
        self,
        devices: Iterable[tuple[str, str]],
        *,
        thing_group: str | None = None,
        platform: str = "linux",
    ) -> list[CoreDevice]:
        """Many core devices at once, each ``(thing name, architecture)``: what
        ``add_core_device`` does for each, for fleets of 100,000 (benchmarks).

        The IoT things, the thing group and the memberships are written into moto's state
        directly (no request per device), and which active deployments apply is worked out
        once per deployment, not once per device. ``thing_group`` (created if missing)
        gets every device as a member.
        """
        from moto.iot.exceptions import ResourceNotFoundException

        iot = self._moto_iot()
        wanted = list(devices)
        with self.lock:
            if thing_group is not None:
                try:
                    iot.describe_thing_group(thing_group)
                except ResourceNotFoundException:
                    iot.create_thing_group(thing_group, None, None)
            for thing_name, _architecture in wanted:
                # A membership test, not describe_thing: moto's exceptions render XML.
                if self.world.arn("iot", f"thing/{thing_name}") not in iot.things:
                    iot.create_thing(thing_name, None, None)
                if thing_group is not None:
                    iot.add_thing_to_thing_group(thing_group, None, thing_name, None)
            active = sorted(
                (
                    deployment
                    for deployment in map(self._deployments.__getitem__, self._latest.values())
                    if deployment.status == "ACTIVE"
                ),
                key=lambda d: d.sequence,
            )
            members = {
                d.deployment_id: set(self._group_members(d.target_name))
                for d in active
                if d.target_kind == "thinggroup"
            }
            now = self.world.clock.now()
            added: list[CoreDevice] = []
            for thing_name, architecture in wanted:
                device = self.devices.get(thing_name)
                if device is None:
                    device = CoreDevice(
                        self, thing_name, platform=platform, architecture=architecture, now=now
                    )
                    self.devices[thing_name] = device
                applies = [
                    d
                    for d in active
                    if (
                        d.target_name == thing_name
                        if d.target_kind == "thing"
                        else thing_name in members[d.deployment_id]
                    )
                ]
                self._deliver(device, applies, now)
                added.append(device)
            return added

    def _deliver(self, device: CoreDevice, deployments: list[Deployment], now: float) -> None:
        """A new device receives the deployments of its targets (oldest first)."""
        for deployment in deployments:
            if deployment.pending:  # a rollout in batches: it waits for its turn
                if device.thing_name not in deployment.pending:
                    deployment.pending.append(device.thing_name)
            else:
                device.receive(deployment, now)
        self._wake(device)

    def fail_install(
        self,
        component_name: str,
        version: str | None = None,
        *,
        times: int = 1,
        message: str = "Install script exited with code 1",
    ) -> None:
        """Make the next ``times`` installs of a component (any or one version) fail."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self.lock:
            self._failures.append(_InstallFailure(component_name, version, times, message))

    # -- helpers the devices call ---------------------------------------------------------------
    def versions_of(self, name: str) -> list[ComponentVersion]:
        return list(self._components.get(name, {}).values())

    def latest_public(self, name: str) -> ComponentVersion | None:
        found = [v for v in self.versions_of(name) if v.public]
        return max(found, key=lambda v: parse_version(v.version)) if found else None

    def take_install_failure(self, name: str, version: str) -> str | None:
        for rule in self._failures:
            if rule.component == name and rule.version in (None, version):
                rule.times -= 1
                if rule.times <= 0:
                    self._failures.remove(rule)
                return rule.message
        return None

    def device_finished(self, device: CoreDevice, effective: EffectiveDeployment) -> None:
        """A device reached a final status for a deployment: thing targets follow it;
        thing-group targets count it for their rollout rate and abort criteria."""
        deployment = effective.deployment
        if deployment.status != "ACTIVE":
            return
        if deployment.target_kind == "thinggroup":
            deployment.outcomes[effective.status] += 1
            if effective.status == "SUCCEEDED":
                deployment.succeeded_since_increase += 1
                self._maybe_increase_rate(deployment)
            self._check_abort(deployment, effective.modified)
            return
        if effective.status == "SUCCEEDED":
            deployment.status = "COMPLETED"
        elif effective.status in ("FAILED", "REJECTED", "TIMED_OUT"):
            deployment.status = "FAILED"

    # -- IoT job configuration of thing-group deployments ---------------------------------------
    def _roll_out(self, deployment: Deployment, devices: list[CoreDevice], now: float) -> None:
        """Send ``deployment`` to ``devices``: all at once, or in per-minute batches when the
        job has a rollout configuration (thing groups only)."""
        rollout = deployment.job.get("jobExecutionsRolloutConfig") or {}
        if deployment.target_kind == "thinggroup" and (deployment.job.get("abortConfig") or {}).get(
            "criteriaList"
        ):
            self._ordered.add(deployment.deployment_id)
        if deployment.target_kind != "thinggroup" or not rollout:
            for device in devices:
                device.receive(deployment, now)
                self._wake(device)
            return
        exponential = rollout.get("exponentialRate")
        deployment.rate = float(
            exponential["baseRatePerMinute"] if exponential else rollout["maximumPerMinute"]
        )
        deployment.pending = deque(device.thing_name for device in devices)
        self._ordered.add(deployment.deployment_id)
        self._notify_batch(deployment, now)

    def _notify_batch(self, deployment: Deployment, at: float) -> None:
        """Notify the next batch of a rolling deployment (at most its current rate)."""
        cap = (deployment.job.get("jobExecutionsRolloutConfig") or {}).get("maximumPerMinute")
        size = int(min(deployment.rate, cap or MAX_ROLLOUT_PER_MINUTE))
        for _ in range(size):
            if not deployment.pending:
                break
            device = self.devices.get(deployment.pending.popleft())
            if device is not None:
                device.receive(deployment, at)
                self._wake(device)
                deployment.notified_since_increase += 1
        self._maybe_increase_rate(deployment)
        deployment.next_batch_at = at + 60.0 if deployment.pending else None
        if deployment.next_batch_at is not None:
            self._next_due = min(self._next_due, deployment.next_batch_at)

    def _maybe_increase_rate(self, deployment: Deployment) -> None:
        """exponentialRate: multiply the batch size once the increase criterion is met."""
        rollout = deployment.job.get("jobExecutionsRolloutConfig") or {}
        exponential = rollout.get("exponentialRate")
        if not exponential:
            return
        criteria = exponential["rateIncreaseCriteria"]
        notified = criteria.get("numberOfNotifiedThings")
        succeeded = criteria.get("numberOfSucceededThings")
        if (notified and deployment.notified_since_increase >= notified) or (
            succeeded and deployment.succeeded_since_increase >= succeeded
        ):
            deployment.rate = min(
                MAX_ROLLOUT_PER_MINUTE,
                float(math.ceil(deployment.rate * exponential["incrementFactor"])),
            )
            deployment.notified_since_increase = 0
            deployment.succeeded_since_increase = 0

    def _check_abort(self, deployment: Deployment, at: float) -> None:
        """abortConfig: cancel the deployment once a criterion's failure share is reached
        among at least minNumberOfExecutedThings finished executions."""
        executed = sum(deployment.outcomes[s] for s in _EXECUTED)
        for criteria in (deployment.job.get("abortConfig") or {}).get("criteriaList") or []:
            kind = criteria["failureType"]
            kinds = _EXECUTED[1:] if kind == "ALL" else (kind,)
            failed = sum(deployment.outcomes[k] for k in kinds)
            if (
                executed
                and executed >= criteria["minNumberOfExecutedThings"]
                and failed * 100.0 / executed >= criteria["thresholdPercentage"]
            ):
                reason = (
                    f"Deployment aborted: {failed} of {executed} executions {kind} "
                    f"(threshold {criteria['thresholdPercentage']:g} %)"
                )
                self._stop(deployment, at, reason)
                return

    def _stop(self, deployment: Deployment, at: float, reason: str) -> None:
        """Cancel a deployment: no more notifications; queued and running executions end."""
        deployment.status = "CANCELED"
        deployment.pending.clear()
        deployment.next_batch_at = None
        for device in self.devices.values():
            if device.effective(deployment.deployment_id) is not None:
                device.cancel(deployment.deployment_id, at, reason)
                self._wake(device)

    # -- registry -----------------------------------------------------------------------------
    def _register(self, recipe: Mapping[str, Any], *, public: bool, now: float) -> ComponentVersion:
        name = str(recipe_get(recipe, "ComponentName"))
        version = str(recipe_get(recipe, "ComponentVersion"))
        account = "aws" if public else self.world.account_id
        arn = (
            f"arn:aws:greengrass:{self.world.region}:{account}:components:{name}:versions:{version}"
        )
        if version in self._components.get(name, {}):
            raise _conflict(
                f"Component {name} version {version} already exists", arn, "COMPONENT_VERSION"
            )
        record = ComponentVersion(name, version, arn, copy.deepcopy(dict(recipe)), now, public)
        self._components.setdefault(name, {})[version] = record
        return record

    def _component_by_arn(self, arn: str) -> ComponentVersion | None:
        parts = arn.split(":")
        if len(parts) != 9:
            return None
        found = self._components.get(parts[6], {}).get(parts[8])
        return found if found is not None and found.arn == arn else None

    def _iot(self) -> Any:
        """Internal IoT client to moto (no faults, no call log), like ``world.client("iot")``.

        Built on a process-wide botocore session so a new World does not reload the large
        IoT model (tests create hundreds of worlds).
        """
        if self._iot_client is None:
            from localcloud.transport import world_client

            self._iot_client = world_client(
                self.world, "iot", internal=True, botocore_session=_botocore_session()
            )
        return self._iot_client

    def _moto_iot(self) -> Any:
        """moto's IoT backend of this account and region (the state ``_iot()`` talks to)."""
        from moto.iot.models import iot_backends

        return iot_backends[self.world.account_id][self.world.region]

    # -- request plumbing ----------------------------------------------------------------------
    def _wrap(
        self, operation: str, handler: Callable[[dict[str, Any]], Response]
    ) -> Callable[[Request, dict[str, str]], Response]:
        def run(request: Request, params: dict[str, str]) -> Response:
            values = read_input(operation, request, params)
            return handler(values)

        return run

    def check_rate_quota(self, operation: str) -> None:
        """ThrottlingException when ``operation`` is over its rate quota (world clock).

        Called by ``World.dispatch`` for external requests (the world's own internal calls
        are not counted). The quota is the operation's own key of ``rate_quotas`` if it has
        one, else the shared ``OTHER_OPERATIONS`` one. A sliding window of one second: at
        most ``rate`` requests under the quota in any second of world time; throttled
        requests do not count.
        """
        quota = operation if operation in self.rate_quotas else OTHER_OPERATIONS
        rate = self.rate_quotas.get(quota)
        if rate is None:
            return
        now = self.world.clock.now()
        stamps = self._request_times.setdefault(quota, deque())
        while stamps and stamps[0] <= now - 1.0:
            stamps.popleft()
        if len(stamps) >= rate:
            wait = max(1, math.ceil(stamps[0] + 1.0 - now))
            scope = "" if quota == OTHER_OPERATIONS else f"{operation} "
            raise ServiceError(
                "ThrottlingException",
                f"Rate exceeded: {scope}control-plane requests are limited to {rate:g} per second",
                429,
                headers={"Retry-After": str(wait)},  # retryAfterSeconds, bound to this header
                quotaCode=QUOTA_LABELS.get(quota, f"{quota}-requests-per-second"),
                serviceCode=QUOTA_SERVICE_CODE,
            )
        stamps.append(now)

    def _unknown_operation(self, request: Request, _params: dict[str, str]) -> Response:
        raise _invalid(
            f"No Greengrass V2 operation at {request.method} {request.path} in this emulator",
            reason="UNKNOWN_OPERATION",
        )

    def _idempotent(
        self, operation: str, values: Mapping[str, Any], create: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        token = values.get("clientToken")
        if not token:
            return create()
        now = self.world.clock.now()
        fingerprint = json.dumps(
            {k: v for k, v in values.items() if k != "clientToken"}, sort_keys=True, default=str
        )
        cached = self._tokens.get((operation, token))
        if cached is not None and now - cached[0] < TOKEN_TTL_SECONDS:
            if cached[1] != fingerprint:
                raise _conflict(
                    "The clientToken was already used with a different request",
                    token,
                    "CLIENT_TOKEN",
                )
            return copy.deepcopy(cached[2])
        answer = create()
        self._tokens[(operation, token)] = (now, fingerprint, copy.deepcopy(answer))
        if len(self._tokens) > 10_000:
            self._tokens = {
                key: entry
                for key, entry in self._tokens.items()
                if now - entry[0] < TOKEN_TTL_SECONDS
            }
        return answer

    # -- components -----------------------------------------------------------------------------
    def _create_component_version(self, values: dict[str, Any]) -> Response:
        if values.get("lambdaFunction") is not None:
            raise _invalid(
                "lambdaFunction recipe sources are not supported by this emulator; use inlineRecipe",
                [{"name": "lambdaFunction", "message": "not supported"}],
            )
        if values.get("inlineRecipe") is None:
            raise _invalid(
                "Provide inlineRecipe or lambdaFunction",
                [{"name": "inlineRecipe", "message": "is required"}],
            )
        recipe = _decode_recipe(values["inlineRecipe"])
        _raise_if(_recipe_errors(recipe))

        def create() -> dict[str, Any]:
            record = self._register(recipe, public=False, now=self.world.clock.now())
            record.tags = dict(values.get("tags") or {})
            return {
                "arn": record.arn,
                "componentName": record.name,
                "componentVersion": record.version,
                "creationTimestamp": record.created,
                "status": _deployable(),
            }

        return Response.json(201, self._idempotent("CreateComponentVersion", values, create))

    def _describe_component(self, values: dict[str, Any]) -> Response:
        record = self._component_by_arn(values["arn"])
        if record is None:
            raise _not_found(
                f"Component version {values['arn']} not found", values["arn"], "COMPONENT_VERSION"
            )
        return Response.json(200, record.describe())

    def _get_component(self, values: dict[str, Any]) -> Response:
        record = self._component_by_arn(values["arn"])
        if record is None:
            raise _not_found(
                f"Component version {values['arn']} not found", values["arn"], "COMPONENT_VERSION"
            )
        fmt = values.get("recipeOutputFormat") or "JSON"
        if fmt == "YAML":
            import yaml

            text = yaml.safe_dump(record.recipe, sort_keys=False)
        else:
            text = json.dumps(record.recipe)
        answer: dict[str, Any] = {
            "recipeOutputFormat": fmt,
            "recipe": base64.b64encode(text.encode()).decode(),
        }
        if record.tags:
            answer["tags"] = dict(record.tags)
        return Response.json(200, answer)

    def _list_component_versions(self, values: dict[str, Any]) -> Response:
        arn = values["arn"]
        parts = arn.split(":")
        versions = (
            [v for v in self._components.get(parts[6], {}).values() if v.arn.startswith(arn + ":")]
            if len(parts) == 7
            else []
        )
        if not versions:
            raise _not_found(f"Component {arn} not found", arn, "COMPONENT")
        versions.sort(key=lambda v: parse_version(v.version), reverse=True)
        page, token = _page(versions, values, "ListComponentVersions:" + arn)
        answer: dict[str, Any] = {
            "componentVersions": [
                {"componentName": v.name, "componentVersion": v.version, "arn": v.arn} for v in page
            ]
        }
        if token:
            answer["nextToken"] = token
        return Response.json(200, answer)

    # -- deployments ----------------------------------------------------------------------------
    def _create_deployment(self, values: dict[str, Any]) -> Response:
        _check_deployment_semantics(values)

        def create() -> dict[str, Any]:
            deployment = self._new_deployment(values)
            return {
                "deploymentId": deployment.deployment_id,
                "iotJobId": deployment.iot_job_id,
                "iotJobArn": deployment.iot_job_arn,
            }

        return Response.json(201, self._idempotent("CreateDeployment", values, create))

    def _new_deployment(self, values: Mapping[str, Any]) -> Deployment:
        target_arn = values["targetArn"]
        kind, name = self._existing_target(target_arn)
        parent = values.get("parentTargetArn")
        if parent:
            parent_kind, _ = self._existing_target(parent)
            if parent_kind != "thinggroup":
                raise _invalid("parentTargetArn must be a thing group ARN")
        components: dict[str, dict[str, Any]] = {}
        for component, spec in (values.get("components") or {}).items():
            if not self.component_version_exists(component, spec["componentVersion"]):
                raise _not_found(
                    f"Component {component} version {spec['componentVersion']} not found",
                    f"{component}:{spec['componentVersion']}",
                    "COMPONENT_VERSION",
                )
            components[component] = copy.deepcopy(spec)
        policies = copy.deepcopy(DEFAULT_POLICIES)
        for key, value in (values.get("deploymentPolicies") or {}).items():
            if isinstance(value, dict):
                policies[key].update(value)
            else:
                policies[key] = value
        now = self.world.clock.now()
        self._sequence += 1
        self._revisions[target_arn] = self._revisions.get(target_arn, 0) + 1
        job_id = str(uuid.uuid4())
        deployment = Deployment(
            deployment_id=str(uuid.uuid4()),
            sequence=self._sequence,
            target_arn=target_arn,
            target_kind=kind,
            target_name=name,
            revision_id=str(self._revisions[target_arn]),
            name=values.get("deploymentName") or f"Deployment for {name}",
            components=components,
            policies=policies,
            iot_job_configuration=copy.deepcopy(values.get("iotJobConfiguration") or {}),
            tags=dict(values.get("tags") or {}),
            parent_target_arn=parent,
            created=now,
            iot_job_id=job_id,
            iot_job_arn=self.world.arn("iot", f"job/{job_id}"),
        )
        previous = self._deployments.get(self._latest.get(target_arn, ""))
        if previous is not None:
            previous.is_latest = False
            if previous.status != "CANCELED":
                previous.status = "INACTIVE"
        self._deployments[deployment.deployment_id] = deployment
        self._by_target.setdefault(target_arn, []).append(deployment)
        self._latest[target_arn] = deployment.deployment_id
        self._roll_out(deployment, self._member_devices(kind, name), now)
        return deployment

    def _existing_target(self, arn: str) -> tuple[str, str]:
        found = _TARGET.fullmatch(arn)
        if found is None:
            raise _invalid(f"{arn} is not a thing or thing group ARN")
        _partition, region, account, kind, name = found.groups()
        resource = "THING" if kind == "thing" else "THING_GROUP"
        if region != self.world.region or account != self.world.account_id:
            raise _not_found(f"{arn} not found", arn, resource)
        from moto.iot.exceptions import ResourceNotFoundException

        # moto's own state, read in-process: a request per check would cost a botocore
        # round trip for every deployment of a 100,000-device fleet.
        iot = self._moto_iot()
        try:
            if kind == "thing":
                iot.describe_thing(name)
            else:
                iot.describe_thing_group(name)
        except ResourceNotFoundException as exc:
            raise _not_found(f"{arn} not found", arn, resource) from exc
        return kind, name

    def _member_devices(self, kind: str, name: str) -> list[CoreDevice]:
        if kind == "thing":
            device = self.devices.get(name)
            return [device] if device is not None else []
        if not self.devices:
            return []
        return [self.devices[t] for t in self._group_members(name) if t in self.devices]

    def _group_members(self, name: str) -> list[str]:
        """Thing names in the thing group ``name`` and its descendants (IoT's view)."""
        iot = self._iot()
        groups = [name] + [
            g["groupName"]
            for g in _all(iot.list_thing_groups, "thingGroups", parentGroup=name, recursive=True)
        ]
        things: list[str] = []
        for group in groups:
            things += _all(iot.list_things_in_thing_group, "things", thingGroupName=group)
        return list(dict.fromkeys(things))

    def _deployments_for_new_device(self, device: CoreDevice) -> list[Deployment]:
        wanted: list[Deployment] = []
        for deployment_id in self._latest.values():
            deployment = self._deployments[deployment_id]
            if deployment.status != "ACTIVE":
                continue
            if deployment.target_kind == "thing":
                applies = deployment.target_name == device.thing_name
            else:
                applies = device in self._member_devices("thinggroup", deployment.target_name)
            if applies:
                wanted.append(deployment)
        return sorted(wanted, key=lambda d: d.sequence)

    def _get_deployment(self, values: dict[str, Any]) -> Response:
        return Response.json(200, self._deployment(values["deploymentId"]).detail())

    def _deployment(self, deployment_id: str) -> Deployment:
        found = self._deployments.get(deployment_id)
        if found is None:
            raise _not_found(f"Deployment {deployment_id} not found", deployment_id, "DEPLOYMENT")
        return found

    def _list_deployments(self, values: dict[str, Any]) -> Response:
        history = values.get("historyFilter") or "LATEST_ONLY"
        target = values.get("targetArn")
        parent = values.get("parentTargetArn")
        # One target's deployments come from its index, not a scan of the whole fleet's.
        candidates = (
            self._deployments.values() if target is None else self._by_target.get(target, [])
        )
        found = [
            d
            for d in candidates
            if (parent is None or d.parent_target_arn == parent)
            and (history == "ALL" or d.is_latest)
        ]
        found.sort(key=lambda d: d.sequence, reverse=True)
        page, token = _page(found, values, f"ListDeployments:{target}:{parent}:{history}")
        answer: dict[str, Any] = {"deployments": [d.summary() for d in page]}
        if token:
            answer["nextToken"] = token
        return Response.json(200, answer)

    def _cancel_deployment(self, values: dict[str, Any]) -> Response:
        deployment = self._deployment(values["deploymentId"])
        if deployment.status != "ACTIVE":
            raise _conflict(
                f"Deployment {deployment.deployment_id} is {deployment.status}, not ACTIVE",
                deployment.deployment_id,
                "DEPLOYMENT",
            )
        self._stop(deployment, self.world.clock.now(), "Deployment canceled")
        return Response.json(200, {"message": f"Deployment {deployment.deployment_id} canceled"})

    # -- core devices -------------------------------------------------------------------------
    def _device(self, thing_name: str) -> CoreDevice:
        found = self.devices.get(thing_name)
        if found is None:
            raise _not_found(f"Core device {thing_name} not found", thing_name, "CORE_DEVICE")
        return found

    def _get_core_device(self, values: dict[str, Any]) -> Response:
        device = self._device(values["coreDeviceThingName"])
        return Response.json(
            200,
            {
                "coreDeviceThingName": device.thing_name,
                "coreVersion": device.core_version,
                "platform": device.platform,
                "architecture": device.architecture,
                "runtime": "aws_nucleus_classic",
                "status": device.status,
                "lastStatusUpdateTimestamp": device.status_updated_at,
            },
        )

    def _list_core_devices(self, values: dict[str, Any]) -> Response:
        devices = sorted(self.devices.values(), key=lambda d: d.thing_name)
        if values.get("status"):
            devices = [d for d in devices if d.status == values["status"]]
        group_arn = values.get("thingGroupArn")
        if group_arn:
            kind, name = self._existing_target(group_arn)
            members = set(id(d) for d in self._member_devices(kind, name))
            devices = [d for d in devices if id(d) in members]
        page, token = _page(devices, values, f"ListCoreDevices:{values.get('status')}:{group_arn}")
        answer: dict[str, Any] = {
            "coreDevices": [
                {
                    "coreDeviceThingName": d.thing_name,
                    "status": d.status,
                    "lastStatusUpdateTimestamp": d.status_updated_at,
                    "platform": d.platform,
                    "architecture": d.architecture,
                    "runtime": "aws_nucleus_classic",
                }
                for d in page
            ]
        }
        if token:
            answer["nextToken"] = token
        return Response.json(200, answer)

    def _list_effective_deployments(self, values: dict[str, Any]) -> Response:
        device = self._device(values["coreDeviceThingName"])
        page, token = _page(
            device.effective_deployments(), values, "ListEffectiveDeployments:" + device.thing_name
        )
        answer: dict[str, Any] = {"effectiveDeployments": [e.to_wire() for e in page]}
        if token:
            answer["nextToken"] = token
        return Response.json(200, answer)

    def _list_installed_components(self, values: dict[str, Any]) -> Response:
        device = self._device(values["coreDeviceThingName"])
        topology = values.get("topologyFilter") or "ROOT"
        components = sorted(device.installed(), key=lambda c: c.name)
        if topology == "ROOT":
            components = [c for c in components if c.is_root]
        page, token = _page(
            components, values, f"ListInstalledComponents:{device.thing_name}:{topology}"
        )
        answer: dict[str, Any] = {"installedComponents": [c.to_wire() for c in page]}
        if token:
            answer["nextToken"] = token
        return Response.json(200, answer)


# -- input checks beyond the shapes ------------------------------------------------------------


def _check_deployment_semantics(values: Mapping[str, Any]) -> None:
    errors: list[dict[str, str]] = []
    for name, spec in (values.get("components") or {}).items():
        update = spec.get("configurationUpdate") or {}
        merge = update.get("merge")
        if merge is not None:
            try:
                parsed = json.loads(merge)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                errors.append(
                    {
                        "name": f"components.{name}.configurationUpdate.merge",
                        "message": "must be a JSON object",
                    }
                )
        for index, path in enumerate(update.get("reset") or []):
            if path and not path.startswith("/"):
                errors.append(
                    {
                        "name": f"components.{name}.configurationUpdate.reset[{index}]",
                        "message": "must be a JSON pointer ('' or starting with '/')",
                    }
                )
    job = values.get("iotJobConfiguration") or {}
    rate = (job.get("jobExecutionsRolloutConfig") or {}).get("exponentialRate")
    if rate:
        criteria = rate.get("rateIncreaseCriteria") or {}
        given = [
            k
            for k in ("numberOfNotifiedThings", "numberOfSucceededThings")
            if criteria.get(k) is not None
        ]
        if len(given) != 1:
            errors.append(
                {
                    "name": "iotJobConfiguration.jobExecutionsRolloutConfig.exponentialRate.rateIncreaseCriteria",
                    "message": "must give exactly one of numberOfNotifiedThings, numberOfSucceededThings",
                }
            )
    for index, criteria in enumerate((job.get("abortConfig") or {}).get("criteriaList") or []):
        if criteria.get("thresholdPercentage", 0) < 0:
            errors.append(
                {
                    "name": f"iotJobConfiguration.abortConfig.criteriaList[{index}].thresholdPercentage",
                    "message": "must be >= 0",
                }
            )
    timeout = (job.get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")
    if timeout is not None and not 1 <= timeout <= 10080:
        errors.append(
            {
                "name": "iotJobConfiguration.timeoutConfig.inProgressTimeoutInMinutes",
                "message": "must be between 1 and 10080",
            }
        )
    _raise_if(errors)


def _decode_recipe(blob: str) -> dict[str, Any]:
    raw = base64.b64decode(blob)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid("inlineRecipe must be UTF-8 text", reason="CANNOT_PARSE") from exc
    try:
        recipe = json.loads(text)
    except ValueError:
        import yaml

        try:
            recipe = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _invalid("inlineRecipe is neither JSON nor YAML", reason="CANNOT_PARSE") from exc
    if not isinstance(recipe, dict):
        raise _invalid("inlineRecipe must be a JSON or YAML object", reason="CANNOT_PARSE")
    # YAML turns unquoted dates (RecipeFormatVersion: 2020-01-25) into objects: keep JSON types.
    return dict(json.loads(json.dumps(recipe, default=str)))


def _recipe_errors(recipe: Any) -> list[dict[str, str]]:
    """What is wrong with a recipe (empty when it can be registered)."""
    if not isinstance(recipe, Mapping):
        return [{"name": "inlineRecipe", "message": "must be an object"}]
    errors: list[dict[str, str]] = []

    def bad(name: str, message: str) -> None:
        errors.append({"name": f"inlineRecipe.{name}", "message": message})

    if str(recipe_get(recipe, "RecipeFormatVersion")) != RECIPE_FORMAT_VERSION:
        bad("RecipeFormatVersion", f"must be {RECIPE_FORMAT_VERSION}")
    name = recipe_get(recipe, "ComponentName")
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 128
        or not _COMPONENT_NAME.fullmatch(name)
    ):
        bad("ComponentName", "must be 1-128 characters of [a-zA-Z0-9._-]")
    version = recipe_get(recipe, "ComponentVersion")
    if not isinstance(version, str) or len(version) > 64 or not is_version(version):
        bad("ComponentVersion", "must be a semantic version major.minor.patch")
    dependencies = recipe_get(recipe, "ComponentDependencies")
    if dependencies is not None:
        if not isinstance(dependencies, Mapping):
            bad("ComponentDependencies", "must be an object")
        else:
            for dependency, spec in dependencies.items():
                if not isinstance(spec, Mapping):
                    bad(f"ComponentDependencies.{dependency}", "must be an object")
                    continue
                requirement = recipe_get(spec, "VersionRequirement")
                if requirement is not None:
                    try:
                        parse_requirement(str(requirement))
                    except ValueError:
                        bad(
                            f"ComponentDependencies.{dependency}.VersionRequirement",
                            "is not a version requirement",
                        )
                if recipe_get(spec, "DependencyType") not in (None, "HARD", "SOFT"):
                    bad(
                        f"ComponentDependencies.{dependency}.DependencyType", "must be HARD or SOFT"
                    )
            if not errors:
                recipe_dependencies(recipe)
    configuration = recipe_get(recipe, "ComponentConfiguration")
    if configuration is not None:
        default = (
            recipe_get(configuration, "DefaultConfiguration")
            if isinstance(configuration, Mapping)
            else None
        )
        if not isinstance(configuration, Mapping) or (
            default is not None and not isinstance(default, Mapping)
        ):
            bad("ComponentConfiguration.DefaultConfiguration", "must be an object")
    manifests = recipe_get(recipe, "Manifests")
    if manifests is not None and (
        not isinstance(manifests, list) or not all(isinstance(m, Mapping) for m in manifests)
    ):
        bad("Manifests", "must be a list of objects")
    return errors + artifact_errors(recipe)


def _all(call: Callable[..., Any], key: str, **kwargs: Any) -> list[Any]:
    """Every item of a paginated moto call."""
    out: list[Any] = []
    token: str | None = None
    while True:
        answer = call(**kwargs, **({"nextToken": token} if token else {}))
        out += answer.get(key, [])
        token = answer.get("nextToken")
        if not token:
            return out


def _public_recipe(name: str, version: str) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": RECIPE_FORMAT_VERSION,
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentPublisher": "AWS",
    }
    if name == NUCLEUS_NAME:
        recipe["ComponentType"] = "aws.greengrass.nucleus"
        recipe["ComponentDescription"] = "Greengrass nucleus (local stand-in)."
        recipe["Manifests"] = [{"Platform": {"os": "linux"}}, {"Platform": {"os": "windows"}}]
    elif name == TES_NAME:
        recipe["ComponentDescription"] = "Token exchange service (local stand-in)."
        recipe["ComponentDependencies"] = {
            NUCLEUS_NAME: {"VersionRequirement": ">=2.0.0 <2.15.0", "DependencyType": "SOFT"}
        }
        recipe["Manifests"] = [{"Platform": {"os": "*"}, "Lifecycle": {"Run": "builtin"}}]
    else:
        recipe["ComponentDescription"] = "Lookout for Vision edge agent (local stand-in)."
        recipe["ComponentDependencies"] = {
            NUCLEUS_NAME: {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "SOFT"}
        }
        recipe["ComponentConfiguration"] = {
            "DefaultConfiguration": {"Socket": "unix:///tmp/aws.iot.lookoutvision.EdgeAgent.sock"}
        }
        recipe["Manifests"] = [
            {"Platform": {"os": "linux", "architecture": arch}, "Lifecycle": {"Run": "edge-agent"}}
            for arch in ("aarch64", "amd64")
        ]
    return recipe
