"""The operator's fleet state: what it makes of the messages devices publish."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.fleet.report import render_html, running_series
from agent.fleet.state import FleetClock, FleetState
from agent.reporting.events import (
    DeployedModel,
    ErrorInfo,
    HealthReport,
    PlatformReport,
    ResourceUse,
    StatusEvent,
    StatusPhase,
    utc_iso,
)

T0 = 1_790_000_000.0


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def status(thing: str, seq: int, at: float, version: int, phase: str, **extra: Any) -> bytes:
    """A status message as the agent's own model renders it (``phase`` may be unknown to it)."""
    known = phase in StatusPhase.__members__
    event = StatusEvent(
        thing_name=thing, sequence=seq, timestamp=utc_iso(at), rollout_id=1, model_version=version,
        platform_key="x86-64-cpu", attempt=1,
        phase=StatusPhase(phase) if known else StatusPhase.CHECKING,
        error=extra.pop("error", None),
    )
    data = json.loads(event.to_json())
    data["phase"] = phase
    data.update(extra)
    return json.dumps(data).encode()


def health(thing: str, seq: int, at: float, version: int | None, state: str = "HEALTHY",
           error: ErrorInfo | None = None, **extra: Any) -> bytes:
    report = HealthReport(
        thing_name=thing, sequence=seq, timestamp=utc_iso(at), agent_state="RUNNING",
        status=state, uptime_seconds=1.0,  # type: ignore[arg-type]
        deployed=None if version is None else DeployedModel(
            model_version=version, component_name="widgets.x86-64-cpu",
            component_version=f"{version}.0.0", lifecycle_state="RUNNING"),
        last_error=error,
        resources=ResourceUse(cpu_percent=0.1, memory_rss_bytes=1, disk_used_bytes=1, disk_free_bytes=1),
        outbox_depth=0,
    )
    data = json.loads(report.to_json())
    data.update(extra)
    return json.dumps(data).encode()


def platform(thing: str, seq: int, at: float, key: str) -> bytes:
    return PlatformReport(
        thing_name=thing, sequence=seq, timestamp=utc_iso(at), supported=True,
        platform={"key": key, "description": key},
    ).to_json()


def fresh(**kwargs: Any) -> tuple[FleetState, Ticker]:
    ticker = Ticker()
    return FleetState(clock=FleetClock(monotonic=ticker, wall=lambda: T0), **kwargs), ticker


def test_counts_per_version_phase_platform_and_target() -> None:
    """Three devices on two platforms mid-rollout: one runs v2, one deploys it, one is on v1."""
    state, _ = fresh()
    state.ingest("p", platform("a", 1, T0, "arm64-cpu"))
    state.ingest("p", platform("b", 1, T0, "x86-64-cpu"))
    state.ingest("p", platform("c", 1, T0, "x86-64-cpu"))
    state.ingest("s", status("a", 2, T0 + 10, 2, "COMPONENT_RUNNING"))
    state.ingest("s", status("b", 2, T0 + 11, 2, "DEPLOYMENT_IN_PROGRESS"))
    state.ingest("h", health("b", 3, T0 + 12, 1))
    state.ingest("s", status("c", 2, T0 + 5, 1, "COMPONENT_RUNNING"))
    snap = state.snapshot()
    assert snap.target_version == 2
    assert (snap.devices, snap.on_target, snap.in_progress) == (3, 1, 1)
    assert snap.by_version_phase == {
        "2": {"DEPLOYMENT_IN_PROGRESS": 1, "COMPONENT_RUNNING": 1},
        "1": {"COMPONENT_RUNNING": 1},
    }
    assert snap.running == {"2": 1, "1": 2}
    rows = {r.platform: r for r in snap.platforms}
    assert (rows["arm64-cpu"].devices, rows["arm64-cpu"].on_target) == (1, 1)
    assert (rows["x86-64-cpu"].devices, rows["x86-64-cpu"].in_progress) == (2, 1)
    assert not snap.complete
    assert snap.summary().startswith("3 devices · v2 running on 1 (33 %) · 1 in progress")


def test_duplicates_with_and_without_epoch_are_dropped_once() -> None:
    """At-least-once delivery: the same (epoch, sequence) twice counts once; a new epoch
    restarting its sequences is a new message."""
    state, _ = fresh()
    plain = status("a", 7, T0, 1, "CHECKING")
    assert state.ingest("s", plain) and state.ingest("s", plain)
    with_epoch = status("a", 7, T0 + 1, 1, "PACKAGING_STARTED", epoch="e1")
    assert state.ingest("s", with_epoch) and state.ingest("s", with_epoch)
    restarted = status("a", 1, T0 + 2, 1, "PACKAGING_RUNNING", epoch="e2")
    state.ingest("s", restarted)
    assert (state.messages, state.duplicates) == (3, 2)
    assert state.devices()[0].phase == "PACKAGING_RUNNING"


def test_an_older_message_arriving_late_does_not_overwrite_newer_state() -> None:
    """A retained status re-delivered after a newer live one leaves the newer phase."""
    state, _ = fresh()
    state.ingest("s", status("a", 5, T0 + 60, 1, "COMPONENT_RUNNING"))
    state.ingest("s", status("a", 3, T0 + 30, 1, "DEPLOYMENT_CREATED"))
    device = state.devices()[0]
    assert (device.phase, device.running_version) == ("COMPONENT_RUNNING", 1)


def test_unknown_and_halted_phases_are_shown_and_halted_is_a_problem() -> None:
    """A phase the watcher does not know gets its own column; HALTED lists the device."""
    state, _ = fresh()
    state.ingest("s", status("a", 1, T0, 3, "HALTED", error=ErrorInfo(type="HaltedError", message="operator halt")))
    state.ingest("s", status("b", 1, T0, 3, "WAITING_FOR_WINDOW"))
    snap = state.snapshot()
    assert snap.phases == ("HALTED", "WAITING_FOR_WINDOW")
    assert [(p.thing, p.problem, p.error) for p in snap.problems] == [
        ("a", "HALTED", "HaltedError: operator halt")
    ]
    assert snap.in_progress == 1


def test_failed_devices_carry_their_last_error_and_degraded_ones_their_health_error() -> None:
    """ROLLED_BACK shows the status error; a DEGRADED health shows its lastError."""
    state, _ = fresh()
    state.ingest("s", status("a", 1, T0, 2, "ROLLED_BACK",
                             error=ErrorInfo(type="DeploymentFailedError", message="install failed")))
    state.ingest("h", health("b", 1, T0, 1, "DEGRADED",
                             error=ErrorInfo(type="ThrottledError", message="slow down")))
    problems = {p.thing: (p.problem, p.error) for p in state.snapshot().problems}
    assert problems == {
        "a": ("ROLLED_BACK", "DeploymentFailedError: install failed"),
        "b": ("DEGRADED", "ThrottledError: slow down"),
    }


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"schema": "l4v-edge-agent/status/1", "thingName": "a", "sequence": 1}',
        b'{"schema": "l4v-edge-agent/status/1", "thingName": "a", "sequence": "1", "timestamp": "2026-01-01T00:00:00+00:00"}',
        b'{"schema": "l4v-edge-agent/status/1", "thingName": "a", "sequence": 1, "timestamp": "2026-01-01T00:00:00+00:00", "phase": 3, "modelVersion": 1}',
        b'{"schema": "l4v-edge-agent/status/1", "thingName": "a", "sequence": 1, "timestamp": "yesterday", "phase": "CHECKING", "modelVersion": 1}',
        b'{"schema": "something/else/1", "thingName": "a", "sequence": 1, "timestamp": "2026-01-01T00:00:00+00:00"}',
        b'{"schema": "l4v-edge-agent/health/1", "thingName": "", "sequence": 1, "timestamp": "2026-01-01T00:00:00+00:00"}',
    ],
    ids=["not-json", "not-utf8", "array", "no-timestamp", "string-sequence", "phase-not-text",
         "bad-timestamp", "other-schema", "empty-thing"],
)
def test_unreadable_messages_are_counted_never_raised(payload: bytes) -> None:
    """Bad input from the wire is counted and leaves the state as it was."""
    state, _ = fresh()
    assert state.ingest("x", payload) is False
    assert state.unreadable == 1
    assert state.snapshot().unreadable == 1


def test_silent_after_twice_the_health_interval_on_the_fleet_clock() -> None:
    """The fleet clock follows device time and then the watcher's clock: a device whose
    last health is older than 2 intervals is silent; one that reports again is not."""
    state, ticker = fresh(health_interval=60)
    state.ingest("h", health("quiet", 1, T0, 1))
    state.ingest("h", health("talker", 1, T0, 1))
    ticker.now = 100.0
    state.ingest("h", health("talker", 2, T0 + 100, 1))
    assert state.snapshot().silent == ()
    ticker.now = 121.0  # fleet time T0 + 121: "quiet" last heard at T0
    silent = state.snapshot().silent
    assert [(s.thing, round(s.silent_seconds)) for s in silent] == [("quiet", 121)]


def test_a_fleet_whose_clock_is_ahead_of_the_watcher_is_not_silent_at_once() -> None:
    """Devices an hour ahead of the watcher's wall clock (or a simulated fleet): the first
    message sets the fleet clock, so a device heard once is not silent right away."""
    state, ticker = fresh(health_interval=60)
    state.ingest("s", status("ahead", 1, T0 + 3600, 1, "CHECKING"))
    ticker.now = 5.0
    assert state.snapshot().silent == ()
    ticker.now = 121.0
    assert [s.thing for s in state.snapshot().silent] == ["ahead"]


def test_device_time_moves_the_fleet_clock_forward_only() -> None:
    """A late message with an old timestamp does not move the fleet clock back."""
    ticker = Ticker()
    clock = FleetClock(monotonic=ticker, wall=lambda: T0)
    clock.observe(T0 + 500)
    clock.observe(T0 + 10)
    ticker.now = 5
    assert clock.now() == T0 + 505


def test_complete_when_every_device_runs_the_target_or_newer() -> None:
    """With --until-version 2, a device already on v3 counts as done."""
    state, _ = fresh(target_version=2)
    state.ingest("h", health("a", 1, T0, 2))
    state.ingest("h", health("b", 1, T0, 3))
    assert state.snapshot().complete
    state.ingest("h", health("c", 1, T0, 1))
    assert not state.snapshot().complete


def test_running_series_moves_devices_between_versions() -> None:
    """Devices leaving v1 for v2 lower v1's count at the same moment."""
    series = running_series([(1.0, "a", 1), (2.0, "b", 1), (3.0, "a", 2), (4.0, "b", 2)])
    assert series == {1: [(1.0, 1), (2.0, 2), (3.0, 1), (4.0, 0)], 2: [(3.0, 1), (4.0, 2)]}


def test_report_escapes_what_devices_send() -> None:
    """A thing name or error text with HTML in it is shown as text, not markup."""
    state, _ = fresh()
    state.ingest("s", status("<b>x</b>", 1, T0, 1, "ROLLOUT_FAILED",
                             error=ErrorInfo(type="E", message="<script>alert(1)</script>")))
    page = render_html(state.snapshot(), state.devices(), None, title="t")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_a_broken_model_component_is_a_problem_and_not_running() -> None:
    """Health saying the deployed component went BROKEN: the device is listed as
    COMPONENT_BROKEN, counted as failed, and no longer counts as running that version."""
    state, _ = fresh(target_version=2)
    state.ingest("h", health("a", 1, T0, 2))
    assert state.snapshot().on_target == 1
    data = json.loads(health("a", 2, T0 + 60, 2))
    data["deployed"]["lifecycleState"] = "BROKEN"
    state.ingest("h", json.dumps(data).encode())
    snap = state.snapshot()
    assert [p.problem for p in snap.problems] == ["COMPONENT_BROKEN"]
    assert snap.on_target == 0 and "1 failed" in snap.summary()
