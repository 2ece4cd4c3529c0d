"""In-memory fakes of the core's ports, for unit tests that run in milliseconds.

Each fake keeps the port's contract (idempotent tokens, conflicts, NotFound, the error
tree) and nothing else: what the cloud does between calls is set by the test
(``script``), not simulated. The local world (``localcloud``) remains the place where
the production adapters meet the wire.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from agent import errors
from agent.ports import (
    DeploymentProgress,
    DeploymentSpec,
    PackagingJob,
    PackagingRequest,
    RecentIds,
)
from localcloud.memorystore import MemoryStore  # noqa: F401  (re-exported for the tests)

THING_ARN = "arn:aws:iot:us-east-1:123456789012:thing/dev-1"
ARN_PREFIX = "arn:aws:greengrass:us-east-1:123456789012"


class FakeClock:
    """A wall clock that moves only when told to, with its own monotonic time (the wall
    clock may jump; the monotonic one only advances)."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.wall = start
        self.mono = 1000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def jump(self, seconds: float) -> None:
        """The wall clock alone moves (an NTP correction)."""
        self.wall += seconds

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        """Waiting moves virtual time; a set ``wake`` ends it at once."""
        self.waits.append(seconds)
        if wake.is_set():
            return True
        self.advance(max(0.0, seconds))
        return False


class Script:
    """Errors to answer with, per method, in order (one per call)."""

    def __init__(self) -> None:
        self._errors: dict[str, list[errors.AgentError]] = {}
        self.calls: list[str] = []

    def fail(self, method: str, *failures: errors.AgentError) -> None:
        self._errors.setdefault(method, []).extend(failures)

    def called(self, method: str) -> None:
        self.calls.append(method)
        queued = self._errors.get(method)
        if queued:
            raise queued.pop(0)

    def count(self, method: str) -> int:
        return self.calls.count(method)


class FakePackaging:
    """A packaging backend: model versions with statuses, jobs by name."""

    def __init__(self, versions: dict[int, str] | None = None) -> None:
        self.versions = dict(versions or {1: "TRAINED"})
        self.jobs: dict[str, PackagingJob] = {}
        self.tokens: dict[str, str] = {}
        self.script = Script()

    def latest_version(self, project: str) -> int:
        self.script.called("latest_version")
        ready = [v for v, status in self.versions.items() if status in ("TRAINED", "HOSTED")]
        if not ready:
            raise errors.NoTrainedModelError(f"project {project} has no trained model")
        return max(ready)

    def start_packaging(self, request: PackagingRequest) -> str:
        self.script.called("start_packaging")
        if request.client_token in self.tokens:
            return self.tokens[request.client_token]
        if request.job_name in self.jobs:
            raise errors.ConflictError(f"job {request.job_name} exists", code="ConflictException")
        self.tokens[request.client_token] = request.job_name
        self.jobs[request.job_name] = PackagingJob(
            name=request.job_name,
            model_version=request.model_version,
            status="CREATED",
            status_message=None,
            configuration=request.api_kwargs()["Configuration"],
        )
        return request.job_name

    def request_arguments(self, request: PackagingRequest) -> dict[str, Any]:
        return request.api_kwargs()

    def packaging_status(self, project: str, job_name: str) -> PackagingJob:
        self.script.called("packaging_status")
        if job_name not in self.jobs:
            raise errors.NotFoundError(f"no job {job_name}")
        return self.jobs[job_name]

    def set_job(self, name: str, status: str, **changes: Any) -> None:
        self.jobs[name] = replace(self.jobs[name], status=status, **changes)


class FakeDeployments:
    """Greengrass as the core sees it: components, deployments per target, progress."""

    def __init__(self) -> None:
        self.components: set[tuple[str, str]] = set()
        self.deployments: dict[str, list[DeploymentSpec]] = {}
        self.tokens: dict[str, str] = {}
        self.progress_of: dict[str, DeploymentProgress] = {}
        #: what ListInstalledComponents answers per thing (default: from progress_of)
        self.installed_of: dict[str, tuple[str, str]] = {}
        self.script = Script()

    def thing_arn(self, thing_name: str) -> str:
        self.script.called("thing_arn")
        return THING_ARN.replace("dev-1", thing_name)

    def component_version_exists(self, arn_prefix: str, name: str, version: str) -> bool:
        self.script.called("component_version_exists")
        assert arn_prefix == ARN_PREFIX, arn_prefix
        return (name, version) in self.components

    def latest_deployment(self, target_arn: str) -> DeploymentSpec | None:
        self.script.called("latest_deployment")
        found = self.deployments.get(target_arn)
        return found[-1] if found else None

    def create_deployment(self, target_arn: str, spec: DeploymentSpec, client_token: str) -> str:
        self.script.called("create_deployment")
        if client_token in self.tokens:
            return self.tokens[client_token]
        deployment_id = f"d-{sum(len(v) for v in self.deployments.values()) + 1}"
        self.tokens[client_token] = deployment_id
        self.deployments.setdefault(target_arn, []).append(replace(spec, deployment_id=deployment_id))
        return deployment_id

    def installed_component(self, thing_name: str, component_name: str) -> tuple[str, str] | None:
        self.script.called("installed_component")
        installed = self.installed_of.get(thing_name)
        if installed is not None:
            return installed
        for progress in self.progress_of.values():
            if progress.installed_version is not None:
                return progress.installed_version, progress.lifecycle_state or "RUNNING"
        return None

    def progress(self, thing_name: str, deployment_id: str, component_name: str) -> DeploymentProgress:
        self.script.called("progress")
        return self.progress_of.get(
            deployment_id, DeploymentProgress("ACTIVE", "QUEUED", None, None, None)
        )

    def set_progress(
        self, deployment_id: str, execution: str | None, *, deployment: str = "ACTIVE",
        installed: str | None = None, state: str | None = None, reason: str | None = None,
    ) -> None:
        self.progress_of[deployment_id] = DeploymentProgress(deployment, execution, reason, installed, state)


class FakeLocalDeployments:
    """The LocalDeployments port without a nucleus: the test (or a simulated fleet, from
    ``GreengrassEmulator.on_post_update``) says which deployments finished here."""

    def __init__(self, *, available: bool = True) -> None:
        self.is_available = available
        self._completed = RecentIds()

    def finish(self, deployment_id: str) -> None:
        """The nucleus reported ``deployment_id`` finished (a post-update event)."""
        self._completed.add(deployment_id)

    def completed(self) -> frozenset[str]:
        return self._completed.snapshot()

    def available(self) -> bool:
        return self.is_available
