"""The messages the agent publishes and accepts, as versioned pydantic schemas.

Every outgoing message has ``schema`` (name/version), ``thingName``, ``timestamp`` and a
``sequence`` that grows monotonically across restarts (assigned by the outbox) within
its ``epoch`` (the ledger's id), so a subscriber orders and de-duplicates on
(epoch, sequence). JSON Schema files are exported to ``schemas/``
(``python -m agent schemas``) and a test keeps them equal to these models.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utc_iso(epoch: float) -> str:
    """Epoch seconds as an ISO-8601 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds")


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    thing_name: str = Field(alias="thingName")
    sequence: int = Field(
        default=0, ge=0, description="Grows by one per message within an epoch; set by the outbox"
    )
    epoch: str = Field(
        default="",
        max_length=64,
        description="Id of the ledger that numbered this message: sequences start again at 1 "
        "in a new ledger, so de-duplicate on (epoch, sequence)",
    )
    timestamp: str = Field(description="ISO-8601 UTC time the event happened")

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(description="Agent error class, e.g. ThrottledError, PackagingFailedError")
    code: str | None = Field(default=None, description="The service's error code, if any")
    message: str


class StatusPhase(str, Enum):
    """Every state change of a rollout that is reported."""

    CHECKING = "CHECKING"  # a newer model version was found; rollout starts
    PACKAGING_STARTED = "PACKAGING_STARTED"
    PACKAGING_RUNNING = "PACKAGING_RUNNING"
    PACKAGING_SUCCEEDED = "PACKAGING_SUCCEEDED"
    PACKAGING_SKIPPED = "PACKAGING_SKIPPED"  # the component version already existed
    PACKAGING_FAILED = "PACKAGING_FAILED"
    DEPLOYMENT_CREATED = "DEPLOYMENT_CREATED"
    DEPLOYMENT_IN_PROGRESS = "DEPLOYMENT_IN_PROGRESS"
    COMPONENT_RUNNING = "COMPONENT_RUNNING"
    DEPLOYMENT_FAILED = "DEPLOYMENT_FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLOUT_FAILED = "ROLLOUT_FAILED"  # any other terminal error of the rollout
    HALTED = "HALTED"  # canary failures halted this version before this device's wave


class StatusEvent(_Message):
    schema_: Literal["l4v-edge-agent/status/1"] = Field(
        default="l4v-edge-agent/status/1", alias="schema"
    )
    rollout_id: int = Field(alias="rolloutId")
    model_version: int = Field(alias="modelVersion")
    platform_key: str = Field(alias="platformKey")
    attempt: int = Field(ge=1)
    phase: StatusPhase
    packaging_backend: Literal["lookoutvision", "sagemaker"] = Field(
        default="lookoutvision",
        alias="packagingBackend",
        description="The service that packages the model (jobName names its job: a Lookout "
        "for Vision packaging job or a SageMaker Neo compilation job)",
    )
    job_name: str | None = Field(default=None, alias="jobName")
    component_name: str | None = Field(default=None, alias="componentName")
    component_version: str | None = Field(default=None, alias="componentVersion")
    deployment_id: str | None = Field(default=None, alias="deploymentId")
    detail: str | None = None
    error: ErrorInfo | None = None


class PlatformReport(_Message):
    schema_: Literal["l4v-edge-agent/platform/1"] = Field(
        default="l4v-edge-agent/platform/1", alias="schema"
    )
    supported: bool
    platform: dict[str, Any] | None = Field(
        default=None, description="What was detected (TargetDevice/TargetPlatform, options)"
    )
    request: dict[str, Any] | None = Field(
        default=None, description="The packaging request fields this device will send"
    )
    error: ErrorInfo | None = None


class DeployedModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    model_version: int = Field(alias="modelVersion")
    component_name: str = Field(alias="componentName")
    component_version: str = Field(alias="componentVersion")
    lifecycle_state: str | None = Field(
        default=None,
        alias="lifecycleState",
        description="The component's lifecycle state as Greengrass reported it "
        "(ListInstalledComponents), at lifecycleStateObservedAt",
    )
    lifecycle_state_source: Literal["rollout", "live"] | None = Field(
        default=None,
        alias="lifecycleStateSource",
        description="rollout: last seen by the agent's rollout when the component started; "
        "live: read for this report",
    )
    lifecycle_state_observed_at: str | None = Field(
        default=None, alias="lifecycleStateObservedAt", description="When lifecycleState was read"
    )


class ResourceUse(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    cpu_percent: float = Field(alias="cpuPercent", description="Agent process, since last report")
    memory_rss_bytes: int = Field(alias="memoryRssBytes")
    disk_used_bytes: int = Field(alias="diskUsedBytes", description="File system of the state dir")
    disk_free_bytes: int = Field(alias="diskFreeBytes")


class AnnouncementCounts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    accepted: int = Field(ge=0, description="Fleet announcements taken since the agent started")
    rejected: int = Field(
        ge=0, description="Announcements dropped since start (invalid, wrong topic or platform)"
    )
    last_rejection: str | None = Field(
        default=None, alias="lastRejection", description="Why the last one was dropped (field: rule)"
    )
    subscription_error: str | None = Field(
        default=None,
        alias="subscriptionError",
        description="Why subscribing to the fleet topics failed (null once subscribed)",
    )


class HealthReport(_Message):
    schema_: Literal["l4v-edge-agent/health/1"] = Field(
        default="l4v-edge-agent/health/1", alias="schema"
    )
    agent_state: str = Field(alias="agentState")
    status: Literal["HEALTHY", "DEGRADED", "UNHEALTHY"]
    uptime_seconds: float = Field(alias="uptimeSeconds")
    deployed: DeployedModel | None = None
    active_rollout: dict[str, Any] | None = Field(default=None, alias="activeRollout")
    last_successful_check: str | None = Field(default=None, alias="lastSuccessfulCheck")
    last_error: ErrorInfo | None = Field(
        default=None, alias="lastError", description="Only while the error is still current"
    )
    resources: ResourceUse
    outbox_depth: int = Field(alias="outboxDepth")
    ledger_reset: str | None = Field(
        default=None,
        alias="ledgerReset",
        description="Only in the first report from a new ledger (new epoch): why it is new, "
        "e.g. none existed, or the previous one was corrupt and moved aside",
    )
    deployment_events_problem: str | None = Field(
        default=None,
        alias="deploymentEventsProblem",
        description="Only under a Greengrass nucleus whose component update events the "
        "agent cannot follow now: why (it asks the cloud for deployment progress meanwhile)",
    )
    announcements: AnnouncementCounts | None = Field(
        default=None, description="Fleet announcements heard; null when fleet.enabled is false"
    )


class CommandName(str, Enum):
    CHECK_NOW = "check-now"
    REPORT_HEALTH = "report-health"
    REPORT_STATUS = "report-status"
    DEPLOY_VERSION = "deploy-version"


class Command(BaseModel):
    """A command received on the commands topic."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["l4v-edge-agent/command/1"] = Field(
        default="l4v-edge-agent/command/1", alias="schema"
    )
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    command: CommandName
    model_version: int | None = Field(default=None, alias="modelVersion", ge=1, le=999_999)


class CommandResponse(_Message):
    schema_: Literal["l4v-edge-agent/command-response/1"] = Field(
        default="l4v-edge-agent/command-response/1", alias="schema"
    )
    id: str | None = Field(description="The command's id; null if it could not be read")
    outcome: Literal["ACCEPTED", "DEFERRED", "REJECTED", "FAILED"] = Field(
        description="DEFERRED: rate-limited, runs at runAt (joined with other requests)"
    )
    detail: str
    run_at: str | None = Field(
        default=None,
        alias="runAt",
        description="ISO-8601 UTC time the command runs (ACCEPTED: now); null when it does not run",
    )
    replay: bool = Field(
        default=False,
        description="True when this id was answered before: the first answer again, not run twice",
    )


ALL_SCHEMAS: dict[str, type[BaseModel]] = {
    "status": StatusEvent,
    "platform": PlatformReport,
    "health": HealthReport,
    "command": Command,
    "command-response": CommandResponse,
}
