"""The agent process with the SageMaker backend, run as Greengrass runs it (see
``test_agent_process.py``): TES credentials, configuration over IPC, the local world's
HTTP front end; Neo compiles on the world's real-time clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcloud.stage import AGENT_COMPONENT, Stage
from tests.e2e.test_agent_process import RUNNING_STATES, _messages, _payload, _status

pytestmark = pytest.mark.slow


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    with Stage(tmp_path / "work", backend="sagemaker") as started:
        yield started


def test_kill_dash_nine_at_every_step_boundary_with_sagemaker(stage: Stage) -> None:
    """v1's rollout is killed with SIGKILL right after each step boundary it reports and
    restarted; v2 is then released (Approved) and killed after PACKAGING_STARTED. Both
    end RUNNING/FINISHED with one Neo job, one component made with CreateComponentVersion
    and one deployment per version; every status event names the backend; the world
    refused no SageMaker or Greengrass request; all calls used TES credentials."""
    stage.start_agent()
    for boundary in (
        "CHECKING",
        "PACKAGING_STARTED",
        "PACKAGING_SUCCEEDED",
        "DEPLOYMENT_CREATED",
        "DEPLOYMENT_IN_PROGRESS",
    ):
        _status(stage, 1, boundary)
        assert stage.kill_agent() == -9
        stage.start_agent()
    _status(stage, 1, "COMPONENT_RUNNING")

    since = len(_messages(stage))
    assert stage.release() == 2
    _status(stage, 2, "PACKAGING_STARTED", since=since)
    assert stage.kill_agent() == -9
    process = stage.start_agent()
    done = _status(stage, 2, "COMPONENT_RUNNING", since=since)
    process.terminate()
    assert process.wait(10.0) == 0, stage.log_tail()

    world = stage.world
    assert world is not None
    # One job per version (names end in -v<version>-<attempt>; the key is this machine's).
    jobs = Counter(job.name.rsplit("-", 2)[1] for job in world.sagemaker.jobs())
    assert jobs == {"v1": 1, "v2": 1}, jobs

    def succeeded(operation: str) -> int:
        return sum(1 for c in world.calls.calls if c.operation == operation and c.status < 300)

    assert succeeded("CreateCompilationJob") == 2
    assert succeeded("CreateComponentVersion") == 2
    assert succeeded("CreateDeployment") == 2
    refused = [
        f"{c.service}:{c.operation}"
        for c in world.calls.calls
        if c.service in ("sagemaker", "greengrass") and c.status == 400
    ]
    assert refused == []
    assert all(c.access_key.startswith("ASIA") for c in world.calls.calls), "TES credentials only"
    statuses = [_payload(m) for m in _messages(stage) if m.topic == stage.topics["status"]]
    assert {s["packagingBackend"] for s in statuses} == {"sagemaker"}
    assert stage.component_version(done["componentName"]) == "2.0.0"
    assert stage.component_state(done["componentName"]) in RUNNING_STATES
    assert stage.component_state(AGENT_COMPONENT) == "RUNNING"
