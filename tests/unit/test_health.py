"""The health report: fields, truth-now semantics, the deployed model and status levels."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.health import HealthReporter
from agent.ledger import Ledger, OutgoingMessage
from agent.ports import FactChanges, LastError
from agent.reporting.events import HealthReport, utc_iso
from agent.reporting.outbox import CONNECTED_FACT, Outbox
from agent.rollout import Phase, Rollout
from localcloud.clock import VirtualClock


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "state" / "agent.sqlite")
    yield ledger
    ledger.close()


class Situation:
    """What the reporter's providers return; tests change it between reports."""

    def __init__(self) -> None:
        self.state = "RUNNING"
        self.lifecycle: dict[str, str] = {}
        self.lifecycle_calls: list[str] = []

    def lifecycle_of(self, component: str) -> str | None:
        self.lifecycle_calls.append(component)
        return self.lifecycle.get(component)


def reporter(
    ledger: Ledger,
    tmp_path: Path,
    clock: VirtualClock,
    situation: Situation,
    *,
    lifecycle: Callable[[str], str | None] | bool | None = True,
) -> HealthReporter:
    provider = situation.lifecycle_of if lifecycle is True else lifecycle or None
    return HealthReporter(
        ledger,
        thing_name="dev-1",
        topic="l4v-edge/dev-1/health",
        clock=clock,
        started_at=clock.now(),
        state_provider=lambda: situation.state,
        lifecycle_provider=provider if callable(provider) else None,
        state_dir=tmp_path / "state",
    )


def other(n: int) -> OutgoingMessage:
    return OutgoingMessage("status", "t/status", lambda seq, epoch: json.dumps({"n": n}).encode())


def test_report_fields_of_a_fresh_agent(ledger: Ledger, tmp_path: Path) -> None:
    """A fresh agent reports HEALTHY with its state, uptime, resources and no model yet."""
    clock = VirtualClock()
    situation = Situation()
    health = reporter(ledger, tmp_path, clock, situation)
    clock.advance(42.5)
    report = health.build()
    assert report.thing_name == "dev-1"
    assert report.status == "HEALTHY"
    assert report.agent_state == "RUNNING"
    assert report.uptime_seconds == pytest.approx(42.5)
    assert report.timestamp.endswith("+00:00")
    assert report.deployed is None
    assert report.active_rollout is None
    assert report.last_error is None
    assert report.last_successful_check is None
    assert report.outbox_depth == 0
    assert report.resources.memory_rss_bytes > 1_000_000
    assert report.resources.disk_free_bytes > 0
    assert report.resources.disk_used_bytes > 0
    assert report.resources.cpu_percent >= 0.0


def test_cpu_percent_is_measured_since_the_previous_report(ledger: Ledger, tmp_path: Path) -> None:
    """Burning CPU between two reports shows up as a positive cpuPercent in the second."""
    health = reporter(ledger, tmp_path, VirtualClock(), Situation())
    health.build()
    burn_until = time.process_time() + 0.05  # a few clock ticks of CPU time
    total = 0
    while time.process_time() < burn_until:
        total += 1
    assert total > 0
    assert health.build().resources.cpu_percent > 0.0


def test_message_is_a_non_retained_health_message_with_its_sequence(
    ledger: Ledger, tmp_path: Path
) -> None:
    """message() yields kind 'health', retain False; the payload validates as a
    HealthReport and carries the sequence the outbox assigned."""
    health = reporter(ledger, tmp_path, VirtualClock(), Situation())
    outgoing = health.message()
    assert (outgoing.kind, outgoing.topic, outgoing.retain) == (
        "health",
        "l4v-edge/dev-1/health",
        False,
    )
    (sequence,) = ledger.enqueue([outgoing], 0.0)
    payload = ledger.pending()[0].payload
    report = HealthReport.model_validate_json(payload)
    assert report.sequence == sequence
    assert json.loads(payload)["schema"] == "l4v-edge-agent/health/1"


def test_last_check_and_current_error_are_reported(ledger: Ledger, tmp_path: Path) -> None:
    """A current error makes the report DEGRADED and names it; the last check time is
    reported as ISO-8601."""
    clock = VirtualClock(start=1_800_000_000.0)
    health = reporter(ledger, tmp_path, clock, Situation())
    ledger.update_facts(
        FactChanges(
            last_check_at=1_800_000_000.25,
            last_error=LastError("ThrottledError", "slow down", 1_800_000_000.0),
        )
    )
    report = health.build()
    assert report.status == "DEGRADED"
    assert report.last_error is not None
    assert (report.last_error.type, report.last_error.message) == ("ThrottledError", "slow down")
    assert report.last_successful_check == "2027-01-15T08:00:00.250+00:00"


def test_cleared_error_is_no_longer_reported(ledger: Ledger, tmp_path: Path) -> None:
    """Once the reconciler clears last_error_* (last_error_at may remain), the report no
    longer mentions the error and is HEALTHY again."""
    health = reporter(ledger, tmp_path, VirtualClock(), Situation())
    ledger.update_facts(FactChanges(last_error=LastError("ServiceUnavailableError", "503")))
    assert health.build().last_error is not None
    ledger.update_facts(FactChanges(last_error=None))
    report = health.build()
    assert report.last_error is None
    assert report.status == "HEALTHY"


def test_deployed_model_with_a_live_lifecycle_reading(ledger: Ledger, tmp_path: Path) -> None:
    """The deployed model comes from the ledger facts; a live lifecycle provider is asked
    for that component at each report, and the report says the state is live and when."""
    situation = Situation()
    situation.lifecycle = {"proj.x86-64-cpu": "RUNNING"}
    clock = VirtualClock()
    health = reporter(ledger, tmp_path, clock, situation)
    ledger.update_facts(
        FactChanges(
            deployed_version=3,
            deployed_component_name="proj.x86-64-cpu",
            deployed_component_version="3.0.0",
            deployed_at=1_790_000_000.0,
            deployed_lifecycle_state="STARTING",
        )
    )
    deployed = health.build().deployed
    assert deployed is not None
    assert deployed.model_dump(by_alias=True) == {
        "modelVersion": 3,
        "componentName": "proj.x86-64-cpu",
        "componentVersion": "3.0.0",
        "lifecycleState": "RUNNING",
        "lifecycleStateSource": "live",
        "lifecycleStateObservedAt": utc_iso(clock.now()),
    }
    assert situation.lifecycle_calls == ["proj.x86-64-cpu"]
    situation.lifecycle = {"proj.x86-64-cpu": "BROKEN"}
    deployed = health.build().deployed
    assert deployed is not None and deployed.lifecycle_state == "BROKEN"


def test_deployed_model_lifecycle_as_the_rollout_saw_it(ledger: Ledger, tmp_path: Path) -> None:
    """Without a live provider (or when it fails or knows nothing) the state is the one the
    rollout saw in Greengrass when the component started, marked ``rollout`` with the time
    it was seen; with no such observation it is null and has no source."""
    ledger.update_facts(
        FactChanges(deployed_version=2, deployed_component_name="c", deployed_component_version="2.0.0")
    )
    plain = reporter(ledger, tmp_path, VirtualClock(), Situation(), lifecycle=None)
    deployed = plain.build().deployed
    assert deployed is not None
    assert (deployed.lifecycle_state, deployed.lifecycle_state_source) == (None, None)

    ledger.update_facts(FactChanges(deployed_lifecycle_state="RUNNING", deployed_at=1_790_000_000.0))

    def broken(component: str) -> str | None:
        raise ConnectionError("provider gone")

    for provider in (None, broken, lambda component: None):
        health = reporter(ledger, tmp_path, VirtualClock(), Situation(), lifecycle=provider)
        deployed = health.build().deployed
        assert deployed is not None
        assert deployed.model_dump(by_alias=True, exclude={"model_version"}) == {
            "componentName": "c",
            "componentVersion": "2.0.0",
            "lifecycleState": "RUNNING",
            "lifecycleStateSource": "rollout",
            "lifecycleStateObservedAt": utc_iso(1_790_000_000.0),
        }


def test_active_rollout_is_summarised(ledger: Ledger, tmp_path: Path) -> None:
    """An active rollout is reported with id, model version, phase, job and deployment;
    a finished one is not."""
    health = reporter(ledger, tmp_path, VirtualClock(), Situation())
    rollout = ledger.save(
        Rollout(
            model_version=4,
            platform_key="x86-64-cpu",
            phase=Phase.DEPLOYING,
            job_name="proj-x86-64-cpu-v4-1",
            deployment_id="dep-1",
        )
    )
    report = health.build()
    assert report.active_rollout == {
        "id": rollout.id,
        "modelVersion": 4,
        "phase": "DEPLOYING",
        "jobName": "proj-x86-64-cpu-v4-1",
        "deploymentId": "dep-1",
    }
    assert report.status == "HEALTHY"
    ledger.save(rollout.model_copy(update={"phase": Phase.SUCCEEDED}))
    assert health.build().active_rollout is None


def test_rollout_failing_transiently_is_degraded(ledger: Ledger, tmp_path: Path) -> None:
    """An active rollout that is being throttled makes the report DEGRADED."""
    health = reporter(ledger, tmp_path, VirtualClock(), Situation())
    ledger.save(Rollout(model_version=4, platform_key="p", phase=Phase.PACKAGING, throttles=2))
    assert health.build().status == "DEGRADED"


def test_backlog_with_transport_down_is_degraded(ledger: Ledger, tmp_path: Path) -> None:
    """Queued messages are normal while connected, DEGRADED while the transport is down."""
    situation = Situation()
    health = reporter(ledger, tmp_path, VirtualClock(), situation)
    ledger.put({CONNECTED_FACT: "true"})
    ledger.enqueue([other(1), other(2)], 0.0)
    report = health.build()
    assert (report.status, report.outbox_depth) == ("HEALTHY", 2)
    ledger.put({CONNECTED_FACT: "false"})
    assert health.build().status == "DEGRADED"


def test_transport_state_falls_back_to_the_publishers_ledger_fact(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Without a transport_connected callable the reporter reads the fact the publisher
    records on connection changes."""
    health = HealthReporter(
        ledger,
        thing_name="dev-1",
        topic="t",
        clock=VirtualClock(),
        started_at=0.0,
        state_provider=lambda: "RUNNING",
        lifecycle_provider=None,
        state_dir=tmp_path / "state",
    )
    ledger.enqueue([other(1)], 0.0)
    ledger.put({"transport_connected": "true"})
    assert health.build().status == "HEALTHY"
    ledger.put({"transport_connected": "false"})
    assert health.build().status == "DEGRADED"


def test_dropped_messages_degrade_the_next_report_once(ledger: Ledger, tmp_path: Path) -> None:
    """Messages dropped by the outbox bound since the previous report make that one
    report DEGRADED; the next report is HEALTHY again if nothing else is wrong."""
    health = reporter(ledger, tmp_path, VirtualClock(), Situation())
    ledger.put({CONNECTED_FACT: "true"})
    Outbox(ledger, VirtualClock(0.0), 10).send([other(n) for n in range(12)])
    assert health.build().status == "DEGRADED"
    assert health.build().status == "HEALTHY"


@pytest.mark.parametrize("state", ["DEGRADED"])
def test_agent_state_that_cannot_work_is_unhealthy(
    ledger: Ledger, tmp_path: Path, state: str
) -> None:
    """The daemon's DEGRADED state (unsupported platform) makes the report UNHEALTHY,
    even with an error also current."""
    situation = Situation()
    situation.state = state
    ledger.update_facts(FactChanges(last_error=LastError("ThrottledError", "x")))
    report = reporter(ledger, tmp_path, VirtualClock(), situation).build()
    assert (report.status, report.agent_state) == ("UNHEALTHY", state)


def test_unsupported_platform_error_is_unhealthy(ledger: Ledger, tmp_path: Path) -> None:
    """A current UnsupportedPlatformError means the device can take no model: UNHEALTHY."""
    ledger.update_facts(FactChanges(last_error=LastError("UnsupportedPlatformError", "arm32")))
    assert reporter(ledger, tmp_path, VirtualClock(), Situation()).build().status == "UNHEALTHY"


def test_state_dir_not_created_yet_still_reports_disk(ledger: Ledger, tmp_path: Path) -> None:
    """Disk figures come from the nearest existing parent when the state dir is missing."""
    health = HealthReporter(
        ledger,
        thing_name="dev-1",
        topic="t",
        clock=VirtualClock(),
        started_at=0.0,
        state_provider=lambda: "STARTING",
        lifecycle_provider=None,
        state_dir=tmp_path / "not" / "yet",
    )
    assert health.build().resources.disk_free_bytes > 0

