"""The ports the core talks through: packaging, deployments, the rollout store (ledger)
and, in ``agent.clock``, the clock.

Each port has one production adapter (``agent.aws`` for the cloud, ``agent.ledger`` for
SQLite) and an in-memory fake for unit tests (``tests/support/fakes.py``). The decision
code (``agent.decide``) sees only these value types; every adapter method raises only
errors from ``agent.errors``.

The packaging port is backend-neutral: a backend finds the newest version ready to
package, starts (or is told it already has) a packaging job, and reports the job's
status in the neutral words of :data:`JOB_STATUSES`. How the Greengrass component comes
to exist is the backend's business: Lookout for Vision creates it server-side when the
job succeeds; a backend that must create it itself does so before reporting SUCCEEDED.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, Protocol

from agent.rollout import Rollout

#: The packaging job statuses the core understands (a backend maps its own to these).
JOB_STATUSES = frozenset({"CREATED", "RUNNING", "SUCCEEDED", "FAILED"})


@dataclass(frozen=True)
class PackagingJob:
    """A packaging job as the backend reports it."""

    name: str
    model_version: str
    status: str  # one of JOB_STATUSES
    status_message: str | None
    #: the backend's own description of what the job packages, for adoption checks
    configuration: dict[str, Any]
    component_name: str | None = None
    component_version: str | None = None


@dataclass(frozen=True)
class DeploymentSpec:
    """What a target's latest deployment holds, to be carried over into the next one."""

    deployment_id: str
    name: str | None
    components: dict[str, dict[str, Any]]
    policies: dict[str, Any] | None = None
    iot_job_configuration: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentProgress:
    """What the cloud knows about one deployment on this device."""

    deployment_status: str | None  # GetDeployment: ACTIVE, COMPLETED, CANCELED, FAILED, INACTIVE
    execution_status: str | None  # ListEffectiveDeployments: QUEUED ... SUCCEEDED
    reason: str | None
    installed_version: str | None  # ListInstalledComponents: the model component's version
    lifecycle_state: str | None


class PackagingRequest(Protocol):
    """What the core reads of a backend's packaging request. Deterministic per (project,
    model version, platform, attempt): every device of a platform derives the same one,
    so a fleet shares one job (``client_token``) and one component version."""

    @property
    def project_name(self) -> str: ...

    @property
    def job_name(self) -> str: ...

    @property
    def client_token(self) -> str: ...

    @property
    def component_name(self) -> str: ...

    @property
    def component_version(self) -> str: ...

    def same_target(self, configuration: dict[str, Any], model_version: str) -> bool:
        """Whether an existing job (its backend configuration and model version) makes
        exactly what this request asks for: the condition for adopting it."""
        ...

    def api_kwargs(self) -> dict[str, Any]:
        """The request as the backend's API takes it (``plan`` prints it)."""
        ...


class PackagingPort(Protocol):
    """A packaging backend (today: Amazon Lookout for Vision)."""

    def latest_version(self, project: str) -> int:
        """The newest model version ready to package; NoTrainedModelError if none."""
        ...

    def start_packaging(self, request: PackagingRequest) -> str:
        """Start the job for ``request`` (idempotent on its client token); returns its
        name. ConflictError when a job of that name exists (the core then adopts it)."""
        ...

    def request_arguments(self, request: PackagingRequest) -> dict[str, Any]:
        """The arguments :meth:`start_packaging` would send for ``request``, with what
        the backend learns by read-only calls filled in (``plan`` shows them). Raises
        what start_packaging would raise before sending, when a read tells."""
        ...

    def packaging_status(self, project: str, job_name: str) -> PackagingJob:
        """The job's status, in :data:`JOB_STATUSES` words."""
        ...


class DeploymentPort(Protocol):
    """AWS IoT Greengrass V2 (and IoT for the thing's ARN)."""

    def thing_arn(self, thing_name: str) -> str: ...

    def component_version_exists(self, arn_prefix: str, name: str, version: str) -> bool:
        """``arn_prefix`` is ``arn:PARTITION:greengrass:REGION:ACCOUNT``."""
        ...

    def latest_deployment(self, target_arn: str) -> DeploymentSpec | None: ...

    def create_deployment(
        self, target_arn: str, spec: DeploymentSpec, client_token: str
    ) -> str:
        """CreateDeployment with ``spec``'s components/policies/tags; returns deploymentId."""
        ...

    def progress(
        self, thing_name: str, deployment_id: str, component_name: str
    ) -> DeploymentProgress: ...

    def installed_component(self, thing_name: str, component_name: str) -> tuple[str, str] | None:
        """(version, lifecycle state) of ``component_name`` on the device, if installed:
        one call, what confirms a deployment the nucleus already reported applied."""
        ...


class LocalDeployments(Protocol):
    """What the device's own nucleus says about deployments on it (Greengrass IPC
    ``SubscribeToComponentUpdates``): the ids of deployments it reported as finished.

    A post-update event means the nucleus ran the update, not that it worked: a failed or
    rolled-back deployment is reported too, so the cloud still has the last word on the
    outcome. With the SKIP_NOTIFY_COMPONENTS policy, or while not :meth:`available`, no
    event comes and the agent must ask the cloud.
    """

    def completed(self) -> frozenset[str]:
        """Deployment ids reported finished on this device since the agent started (the
        most recent :data:`RECENT_DEPLOYMENTS` only)."""
        ...

    def available(self) -> bool:
        """Whether the subscription is in place now (events can arrive)."""
        ...


#: How many finished deployment ids :class:`LocalDeployments` remembers.
RECENT_DEPLOYMENTS = 64


class RecentIds:
    """The last ``limit`` distinct ids added, oldest forgotten first. Thread-safe."""

    def __init__(self, limit: int = RECENT_DEPLOYMENTS) -> None:
        self._limit = limit
        self._ids: dict[str, None] = {}  # insertion-ordered
        self._lock = threading.Lock()

    def add(self, item: str) -> bool:
        """Remember ``item``; False if it was already known."""
        with self._lock:
            if item in self._ids:
                return False
            self._ids[item] = None
            while len(self._ids) > self._limit:
                del self._ids[next(iter(self._ids))]
            return True

    def snapshot(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)


# -- the rollout store ----------------------------------------------------------------------
class Keep(Enum):
    """The type of :data:`KEEP`."""

    KEEP = "keep"


#: In :class:`FactChanges`: leave this fact as it is (``None`` clears it).
KEEP = Keep.KEEP


@dataclass(frozen=True)
class LastError:
    """The error the agent currently holds (reported in health until cleared)."""

    type: str
    message: str
    at: float | None = None


@dataclass(frozen=True)
class Facts:
    """What the agent knows besides its rollouts, typed."""

    deployed_version: int | None = None
    deployed_component_name: str | None = None
    deployed_component_version: str | None = None
    deployed_at: float | None = None
    #: the component's lifecycle state when the rollout saw it start
    deployed_lifecycle_state: str | None = None
    #: a version asked for by a command (cleared by the next check)
    requested_version: int | None = None
    last_check_at: float | None = None
    next_check_at: float | None = None
    last_error: LastError | None = None
    #: this device's thing ARN (looked up once)
    thing_arn: str | None = None
    #: a version whose canary halt an operator lifted (deploy-version command)
    halt_lifted_version: int | None = None
    #: when an announcement last started a rollout (hints start at most one per interval)
    last_hint_at: float | None = None
    #: the newest version an announcement was acted on for (each is acted on once)
    hinted_version: int | None = None
    #: the check interval's multiplier: grows when checks are throttled, shrinks back
    #: on success (``agent.clock.ThrottleAdaptation``)
    check_interval_factor: float = 1.0

    def changed(self, changes: FactChanges) -> Facts:
        """These facts with ``changes`` applied."""
        update = {
            f.name: getattr(changes, f.name)
            for f in fields(changes)
            if getattr(changes, f.name) is not KEEP
        }
        return replace(self, **update)


@dataclass(frozen=True)
class FactChanges:
    """Facts to set in one write; a field left at :data:`KEEP` is not touched."""

    deployed_version: int | Keep | None = KEEP
    deployed_component_name: str | Keep | None = KEEP
    deployed_component_version: str | Keep | None = KEEP
    deployed_at: float | Keep | None = KEEP
    deployed_lifecycle_state: str | Keep | None = KEEP
    requested_version: int | Keep | None = KEEP
    last_check_at: float | Keep | None = KEEP
    next_check_at: float | Keep | None = KEEP
    last_error: LastError | Keep | None = KEEP
    thing_arn: str | Keep | None = KEEP
    halt_lifted_version: int | Keep | None = KEEP
    last_hint_at: float | Keep | None = KEEP
    hinted_version: int | Keep | None = KEEP
    check_interval_factor: float | Keep = KEEP

    def items(self) -> list[tuple[str, Any]]:
        """(name, value) of every fact this changes."""
        return [
            (f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not KEEP
        ]


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to enqueue; ``render`` gets the sequence number and the ledger's epoch
    and returns the payload."""

    kind: str
    topic: str
    render: Callable[[int, str], bytes]
    retain: bool = False


class RolloutStore(Protocol):
    """The durable record of rollouts, facts and outgoing messages (the ledger).

    :meth:`save` is atomic: the rollout, its messages and the facts change together or
    not at all, so no state change is ever without its report.
    """

    def facts(self) -> Facts: ...

    def update_facts(self, changes: FactChanges) -> None: ...

    def save(
        self,
        rollout: Rollout,
        messages: Sequence[OutgoingMessage] = (),
        facts: FactChanges | None = None,
        *,
        job_poll_due: float | Keep | None = KEEP,
    ) -> Rollout:
        """Insert or update ``rollout`` (a new one gets its ``id`` in place), enqueue
        ``messages``, change ``facts`` and the rollout's next job-status poll due-time;
        a rollout that has ended forgets its job-status poll."""
        ...

    def active_rollout(self) -> Rollout | None: ...

    def rollouts(self, *, model_version: int | None = None, limit: int = 50) -> list[Rollout]: ...

    def job_poll_due(self, rollout_id: int) -> float | None: ...

    def failed_deployment_ids(self) -> set[str]: ...

    def shift_due_times(self, seconds: float) -> None: ...
