"""The small ports the reconciler talks to. Each has one AWS adapter (``agent.aws``);
tests drive the same adapters against the local world at the wire.

Every method raises only errors from ``agent.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.model import PackagingRequest

#: Model statuses that can be packaged.
PACKAGEABLE = frozenset({"TRAINED", "HOSTED"})


@dataclass(frozen=True)
class ModelInfo:
    version: int
    status: str


@dataclass(frozen=True)
class PackagingJob:
    name: str
    model_version: str
    status: str  # CREATED | RUNNING | SUCCEEDED | FAILED
    status_message: str | None
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


class PackagingPort(Protocol):
    """Amazon Lookout for Vision."""

    def list_models(self, project: str) -> list[ModelInfo]: ...

    def start_job(self, request: PackagingRequest) -> str:
        """StartModelPackagingJob; returns the JobName."""
        ...

    def describe_job(self, project: str, job_name: str) -> PackagingJob: ...


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
        """(version, lifecycleState) of a component on the device, or None."""
        ...
