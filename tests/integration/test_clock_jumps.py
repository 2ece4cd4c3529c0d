"""Break-it scenario "clock jump": the device's wall clock jumps three days back or
forward while the agent runs (the main loop turn by turn on the world's virtual clock,
the device clock skewed on top of it), or jumped while it was stopped."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon import Agent, MainLoop
from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.support import agentworld as aw

DAYS_3 = 3 * 86_400.0
CHECK_MAX = 900 * 1.2  # checkIntervalSeconds with its jitter
HEALTH_MAX = 300 * 1.1  # healthIntervalSeconds with its jitter


@pytest.fixture
def device(world: World, clock: VirtualClock, tmp_path: Path) -> Iterator[tuple[Agent, MainLoop, aw.JumpingClock]]:
    """An agent whose project has no trained model yet: every check is one ListModels,
    then a wait of checkIntervalSeconds."""
    aw.seed(world, models=0)
    aw.add_device(world, "dev-1")
    device_clock = aw.JumpingClock(clock)
    agent = aw.daemon_agent(world, "dev-1", tmp_path / "dev-1", clock=device_clock)
    loop = MainLoop(agent)
    loop.start()
    yield agent, loop, device_clock
    loop.stop(shutdown_timeout=0.5)


def run_for(loop: MainLoop, clock: VirtualClock, seconds: float) -> list[float]:
    """Turn the loop for ``seconds`` of world time; returns every wait it asked for."""
    waits = []
    end = clock.now() + seconds
    while clock.now() < end:
        delay = loop.turn()
        waits.append(delay)
        clock.advance(max(delay, 0.1))
    return waits


def checks(world: World) -> list[float]:
    return [c.time for c in world.calls.calls if c.operation == "ListModels"]


def test_a_wall_clock_jump_back_does_not_silence_checks_or_health(
    world: World, clock: VirtualClock, device: tuple[Agent, MainLoop, aw.JumpingClock]
) -> None:
    """Three days back (an NTP correction): the agent keeps checking every
    checkIntervalSeconds and reporting health every healthIntervalSeconds; no wait is
    longer than its interval plus jitter."""
    agent, loop, device_clock = device
    run_for(loop, clock, 1000)
    device_clock.jump(-DAYS_3)
    before_checks, before_health = len(checks(world)), len(aw.messages(agent.ledger, "health"))
    waits = run_for(loop, clock, 2 * 3600)
    assert max(waits) <= max(CHECK_MAX, HEALTH_MAX) + 1e-6
    assert len(checks(world)) - before_checks >= int(2 * 3600 / CHECK_MAX)
    assert len(aw.messages(agent.ledger, "health")) - before_health >= int(2 * 3600 / HEALTH_MAX)


def test_a_wall_clock_jump_forward_keeps_the_remaining_wait(
    world: World, clock: VirtualClock, device: tuple[Agent, MainLoop, aw.JumpingClock]
) -> None:
    """Three days forward: due-times move with the clock, so the next check still comes
    one interval after the last one (not at once), and then every interval."""
    _agent, loop, device_clock = device
    loop.turn()
    (first,) = checks(world)
    clock.advance(100)
    device_clock.jump(DAYS_3)
    run_for(loop, clock, 3 * 3600)
    times = checks(world)
    assert times[1] - first >= 900 * 0.8
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(900 * 0.8 - 1 <= gap <= CHECK_MAX + 1 for gap in gaps), gaps


def test_due_times_stored_before_a_jump_while_stopped_are_capped(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """The agent ran with a clock three days ahead and stopped; it starts again with the
    right time. Its stored next check (three days away) waits at most the longest
    interval that could have set it, and the next step's wait is stored re-based."""
    aw.seed(world, models=0)
    aw.add_device(world, "dev-1")
    device_clock = aw.JumpingClock(clock)
    device_clock.jump(DAYS_3)
    first = aw.reconciler(world, "dev-1", tmp_path)
    first.clock = device_clock
    first.step()
    first.ledger.close()
    again = aw.reconciler(world, "dev-1", tmp_path)  # the world's (right) clock
    longest = max(CHECK_MAX, 3600.0)  # failureRetrySeconds may set the next check too
    assert again.step() <= longest
    assert (again.ledger.facts().next_check_at or 0) - clock.now() <= longest


def test_a_job_poll_stored_before_a_jump_while_stopped_still_comes(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """The agent started a packaging job with its clock three days ahead and stopped;
    the job then FAILED (only DescribeModelPackagingJob can tell). Restarted with the
    right time, it still asks within jobPollMaxSeconds and ends the rollout, instead of
    waiting three days for the stored due-time."""
    aw.seed(world)
    aw.add_device(world, "dev-1")
    world.lookoutvision.fail_jobs(aw.PROJECT, times=1, message="Compilation failed")
    device_clock = aw.JumpingClock(clock)
    device_clock.jump(DAYS_3)
    first = aw.reconciler(world, "dev-1", tmp_path)
    first.clock = device_clock
    while (active := first.ledger.active_rollout()) is None or active.phase.value != "PACKAGING":
        clock.advance(min(first.step(), 60))
    first.ledger.close()
    again = aw.reconciler(world, "dev-1", tmp_path)
    start = clock.now()
    while again.ledger.active_rollout() is not None:
        assert clock.now() - start < 2 * 600 + 120, "the stored job poll was not capped"
        clock.advance(max(again.step(), 0.1))
    assert again.ledger.rollouts(limit=1)[0].error_type == "PackagingFailedError"
