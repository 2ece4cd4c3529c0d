"""The agent as a real process, run exactly as Greengrass runs it.

``python -m agent run`` in a work dir, with the component environment of the simulated
nucleus (IPC socket, SVCUID, thing name, region, TES credentials), its configuration
read over IPC GetConfiguration from the deployed component configuration, and the
service endpoints of the local world (``AWS_ENDPOINT_URL_<SERVICE>``). No sleeps: every
wait is on a bus message or on the process.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from localcloud.iotcore import BusMessage
from localcloud.stage import AGENT_COMPONENT, Stage
from tests.support.oracle import official_data_path

pytestmark = pytest.mark.slow

ROLLOUT_TIMEOUT = 40.0
RUNNING_STATES = ("RUNNING", "FINISHED")
#: One rollout's status phases, in order (DEPLOYMENT_IN_PROGRESS once per observed state).
ROLLOUT_PHASES = re.compile(
    r"CHECKING PACKAGING_STARTED (PACKAGING_RUNNING )?PACKAGING_SUCCEEDED "
    r"DEPLOYMENT_CREATED (DEPLOYMENT_IN_PROGRESS )*COMPONENT_RUNNING"
)


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    with Stage(tmp_path / "work") as started:
        yield started


def _payload(message: BusMessage) -> dict[str, Any]:
    body = json.loads(message.payload)
    assert isinstance(body, dict)
    return body


def _status(
    stage: Stage, version: int, phase: str, *, timeout: float = ROLLOUT_TIMEOUT, since: int = 0
) -> dict[str, Any]:
    """Wait for status ``phase`` of model ``version``; fail early on a terminal failure."""
    assert stage.world is not None
    topic = stage.topics["status"]

    def matches(message: BusMessage) -> bool:
        if message.topic != topic:
            return False
        body = _payload(message)
        if body["modelVersion"] != version:
            return False
        return body["phase"] in (
            phase,
            "ROLLOUT_FAILED",
            "PACKAGING_FAILED",
            "DEPLOYMENT_FAILED",
            "ROLLED_BACK",
        )

    try:
        body = _payload(stage.world.iotcore.wait_for(matches, timeout, since=since))
    except TimeoutError:
        pytest.fail(
            f"no {phase} for v{version} within {timeout} s; agent log:\n" + stage.log_tail(),
            pytrace=False,
        )
    assert body["phase"] == phase, f"{body}\nagent log:\n{stage.log_tail()}"
    return body


def _messages(stage: Stage) -> list[BusMessage]:
    assert stage.world is not None
    prefix = f"l4v-edge/{stage.thing}/"
    return [m for m in stage.world.iotcore.messages if m.topic.startswith(prefix)]


def _official_lookoutvision_operations() -> set[str]:
    folder = official_data_path() / "lookoutvision" / "2020-11-20"
    plain = folder / "service-2.json"
    text = (
        plain.read_bytes()
        if plain.is_file()
        else gzip.decompress((folder / "service-2.json.gz").read_bytes())
    )
    return set(json.loads(text)["operations"])


def test_agent_process_rolls_out_two_versions(stage: Stage) -> None:
    """Scenario: the device runs the agent component; the project has v1. The agent
    process packages and deploys v1; then v2 is released and rolled out too. The
    subscriber sees every rollout's status events in order, with per-device sequence
    numbers that never repeat or skip; health reports the deployed v2 as RUNNING or
    FINISHED; SIGTERM stops the agent with exit code 0; every Lookout for Vision call it
    made is an operation of the official 2020-11-20 model and none was rejected."""
    process = stage.start_agent()
    first = _status(stage, 1, "COMPONENT_RUNNING")
    assert first["componentVersion"] == "1.0.0"

    since = len(_messages(stage))
    assert stage.release() == 2
    second = _status(stage, 2, "COMPONENT_RUNNING", since=since)
    name = second["componentName"]
    assert second["componentVersion"] == "2.0.0"

    assert stage.world is not None
    health_topic = stage.topics["health"]

    def deployed_v2(message: BusMessage) -> bool:
        if message.topic != health_topic:
            return False
        deployed = _payload(message).get("deployed") or {}
        return (
            deployed.get("modelVersion") == 2 and deployed.get("lifecycleState") in RUNNING_STATES
        )

    stage.world.iotcore.wait_for(deployed_v2, timeout=15.0)

    process.terminate()
    assert process.wait(10.0) == 0, stage.log_tail()

    # The device: the new model component at 2.0.0 next to the running agent.
    states = stage.device.states()
    assert stage.component_version(name) == "2.0.0"
    assert states[name] in RUNNING_STATES
    assert states[AGENT_COMPONENT] == "RUNNING"

    # The subscriber's view: each rollout's complete, ordered status sequence.
    messages = _messages(stage)
    status_topic = stage.topics["status"]
    phases: dict[int, list[str]] = defaultdict(list)
    for message in messages:
        if message.topic == status_topic:
            body = _payload(message)
            phases[body["modelVersion"]].append(body["phase"])
    assert sorted(phases) == [1, 2]
    for version, seen in phases.items():
        assert ROLLOUT_PHASES.fullmatch(" ".join(seen)), (version, seen)

    # One sequence across status, health and platform: increasing per topic, no repeats,
    # no gaps.
    by_topic: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        by_topic[message.topic].append(_payload(message)["sequence"])
    assert set(by_topic) == {stage.topics[k] for k in ("platform", "status", "health")}
    for topic, sequences in by_topic.items():
        assert all(a < b for a, b in itertools.pairwise(sequences)), (topic, sequences)
    combined = sorted(s for sequences in by_topic.values() for s in sequences)
    assert combined == list(range(combined[0], combined[0] + len(combined)))

    # What the agent actually sent matches the published JSON Schema files.
    schemas_dir = Path(__file__).resolve().parents[2] / "schemas"
    for message in messages:
        body = _payload(message)
        kind = body["schema"].split("/")[1]
        schema = json.loads((schemas_dir / f"{kind}.schema.json").read_text())
        jsonschema.validate(body, schema)

    # Every request against the official model; nothing rejected.
    official = _official_lookoutvision_operations()
    calls = stage.world.calls.calls
    l4v_calls = [c for c in calls if c.service == "lookoutvision"]
    assert {c.operation for c in l4v_calls} >= {"StartModelPackagingJob", "ListModels"}
    assert {c.operation for c in l4v_calls} <= official
    rejected = [
        c
        for c in calls
        if 400 <= c.status < 500
        # Probing whether a component version exists before packaging is a 404 by design.
        and not (
            c.service == "greengrass" and c.operation == "DescribeComponent" and c.status == 404
        )
    ]
    assert rejected == []
    assert all(c.access_key.startswith("ASIA") for c in calls), "credentials must come from TES"

    # The agent answered the nucleus's pre-update event of each model deployment at once.
    assert stage.nucleus is not None
    answered = {d.deployment_id for d in stage.nucleus.deferrals
                if d.component == AGENT_COMPONENT and d.recheck_after_ms == 0}
    deployed = {_payload(m).get("deploymentId") for m in messages if m.topic == status_topic}
    assert len(answered & deployed) >= 2, (answered, deployed)


def test_kill_dash_nine_between_steps(stage: Stage) -> None:
    """Scenario: during v1's rollout the agent process is killed with SIGKILL right after
    each step boundary it reports (CHECKING, PACKAGING_STARTED, PACKAGING_SUCCEEDED,
    DEPLOYMENT_CREATED, DEPLOYMENT_IN_PROGRESS) and restarted each time; then v2 is
    released and the agent is killed right after v2's PACKAGING_STARTED and restarted.
    Both rollouts still end RUNNING, with exactly one packaging job and one successful
    CreateDeployment per version: a restart resumes from the ledger, it never repeats a
    step."""
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

    assert stage.world is not None
    jobs = Counter(job.model_version for job in stage.world.lookoutvision.jobs())
    assert jobs == {"1": 1, "2": 1}, jobs
    created = [
        c
        for c in stage.world.calls.calls
        if c.service == "greengrass" and c.operation == "CreateDeployment" and c.status < 300
    ]
    assert len(created) == 2, created
    deployed = [
        _payload(m)["deploymentId"]
        for m in _messages(stage)
        if m.topic == stage.topics["status"] and _payload(m)["phase"] == "DEPLOYMENT_CREATED"
    ]
    assert len(set(deployed)) == 2, deployed
    assert stage.component_version(done["componentName"]) == "2.0.0"
    assert stage.component_state(done["componentName"]) in RUNNING_STATES
    assert stage.component_state(AGENT_COMPONENT) == "RUNNING"


def test_bad_configuration_exits_2_naming_the_field(tmp_path: Path) -> None:
    """Scenario: the agent component is deployed with projectName "-bad". Started by the
    nucleus, the agent reads that configuration over IPC, refuses to start, exits with
    code 2 and names projectName on stderr; it calls no AWS service."""
    with Stage(tmp_path / "work", agent_config={"projectName": "-bad"}) as bad:
        result = subprocess.run(
            bad.agent_command(),
            cwd=bad.workdir,
            env=bad.agent_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.world is not None
        assert bad.world.calls.calls == []
    assert result.returncode == 2, result
    assert any("projectName" in line for line in result.stderr.splitlines()), result.stderr


def _update_agent_configuration(stage: Stage, merge: dict[str, Any]) -> None:
    """Deploy the thing's latest components again with a configuration merge for the agent,
    as an operator would from the console."""
    assert stage.world is not None
    gg = stage.world.client("greengrassv2")
    target = stage.world.client("iot").describe_thing(thingName=stage.thing)["thingArn"]
    latest = gg.list_deployments(targetArn=target, historyFilter="LATEST_ONLY")["deployments"][0]
    current = gg.get_deployment(deploymentId=latest["deploymentId"])
    components = {name: dict(spec) for name, spec in current["components"].items()}
    components[AGENT_COMPONENT] = {
        "componentVersion": components[AGENT_COMPONENT]["componentVersion"],
        "configurationUpdate": {"merge": json.dumps(merge)},
    }
    gg.create_deployment(
        targetArn=target,
        deploymentName=current.get("deploymentName") or "operator-update",
        components=components,
        deploymentPolicies=current.get("deploymentPolicies") or {},
    )


def test_live_configuration_update_applies_or_is_rejected(tmp_path: Path) -> None:
    """A deployment that changes the agent's configuration reaches the running process
    over IPC: an invalid value is rejected (health names it, nothing changes) and a valid
    one applies at once: a shorter check interval finds the waiting v2 without a restart."""
    with Stage(tmp_path / "work", agent_config={"checkIntervalSeconds": "3600"}) as stage:
        assert stage.world is not None
        process = stage.start_agent()
        _status(stage, 1, "COMPONENT_RUNNING")
        stage.release()  # v2 waits: the next check is an hour away
        mark = len(stage.world.iotcore.messages)
        _update_agent_configuration(stage, {"checkIntervalSeconds": "soon"})
        health_topic = stage.topics["health"]

        def rejected(message: BusMessage) -> bool:
            if message.topic != health_topic:
                return False
            error = _payload(message).get("lastError") or {}
            return error.get("type") == "ConfigurationError" and "checkIntervalSeconds" in error.get(
                "message", ""
            )

        try:
            stage.world.iotcore.wait_for(rejected, ROLLOUT_TIMEOUT, since=mark)
        except TimeoutError:
            pytest.fail("no health report named the rejected setting:\n" + stage.log_tail())
        assert process.poll() is None, "an invalid update must not stop the agent"
        mark = len(stage.world.iotcore.messages)
        _update_agent_configuration(stage, {"checkIntervalSeconds": "10"})
        _status(stage, 2, "COMPONENT_RUNNING", since=mark)
        assert stage.stop_agent() == 0
