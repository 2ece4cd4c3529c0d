"""Throttling in the local world: a throttled Lookout for Vision answer carries the
seconds until the account's quota frees (Retry-After), the agent reads them through the
real botocore client and waits at least that long before asking that service again,
while it keeps watching Greengrass for the component."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agent import errors
from agent.rollout import Phase
from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.support import agentworld as aw

#: The account's Lookout for Vision quota in this test: one request per this many seconds.
WINDOW = 550.0


def lookout_calls(world: World) -> list[tuple[float, str, int]]:
    return [(c.time, c.operation, c.status) for c in world.calls.calls if c.service == "lookoutvision"]


def test_a_throttled_start_of_packaging_waits_the_retry_after_and_keeps_watching(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """The version check uses the account's one Lookout for Vision request of the
    window; StartModelPackagingJob right after is throttled with Retry-After = the
    seconds until the window frees. The agent does not call Lookout for Vision again
    before that, watches Greengrass (DescribeComponent) meanwhile, then starts the job."""
    aw.seed(world)
    aw.add_device(world, "dev-1")
    agent = aw.reconciler(world, "dev-1", tmp_path)
    world.faults.set_quota("lookoutvision", 1, window=WINDOW)
    clock.advance(agent.step())  # the check: ListModels, the window's one request
    (checked_at, _, _), = lookout_calls(world)

    # What the service says, as the agent's own adapter (botocore) reads it.
    with pytest.raises(errors.ThrottledError) as caught:
        agent.packaging.latest_version(aw.PROJECT)
    assert caught.value.retry_after == math.ceil(checked_at + WINDOW - clock.now())

    end = clock.now() + 2 * WINDOW
    while clock.now() < end and agent.ledger.active_rollout() is not None:
        if agent.ledger.active_rollout().phase is Phase.PACKAGING:  # type: ignore[union-attr]
            break
        clock.advance(max(agent.step(), 0.1))
    calls = lookout_calls(world)
    starts = [(t, status) for t, op, status in calls if op == "StartModelPackagingJob"]
    (throttled_at, _), (started_at, started) = starts[0], starts[-1]
    assert starts[0][1] == 429 and started == 200 and len(starts) == 2
    retry_after = math.ceil(checked_at + WINDOW - throttled_at)
    assert started_at - throttled_at >= retry_after >= WINDOW / 2
    watched = [
        c.time for c in world.calls.calls
        if c.operation == "DescribeComponent" and throttled_at < c.time < started_at
    ]
    assert len(watched) >= retry_after / 60  # at least one look per pollMaxSeconds
    assert agent.ledger.active_rollout().phase is Phase.PACKAGING  # type: ignore[union-attr]


def test_a_throttled_check_waits_the_retry_after(world: World, clock: VirtualClock, tmp_path: Path) -> None:
    """The account's one request of the window is spent elsewhere: the agent's check
    is throttled and the next one comes no sooner than the Retry-After (longer than the
    check's own back-off could be on its first throttle)."""
    aw.seed(world)
    aw.add_device(world, "dev-1")
    agent = aw.reconciler(world, "dev-1", tmp_path)
    world.faults.set_quota("lookoutvision", 1, window=WINDOW)
    with pytest.raises(errors.NotFoundError):  # another caller spends the window's request
        agent.packaging.packaging_status(aw.PROJECT, "no-such-job")
    clock.advance(10)
    delay = agent.step()
    (_, _, first), = [c for c in lookout_calls(world) if c[1] == "ListModels"]
    assert first == 429
    assert delay >= WINDOW - 10
    assert agent.ledger.facts().check_interval_factor == 2.0
    clock.advance(delay)
    agent.step()
    assert [c[2] for c in lookout_calls(world) if c[1] == "ListModels"] == [429, 200]


def test_a_throttled_greengrass_answer_carries_retry_after(world: World, tmp_path: Path) -> None:
    """Greengrass's control-plane quota (here 1 request/s) answers ThrottlingException
    whose retryAfterSeconds (the Retry-After header) the agent's Greengrass adapter
    reads as ThrottledError.retry_after: the second until the quota frees."""
    from localcloud.greengrass import OTHER_OPERATIONS

    aw.seed(world)
    aw.add_device(world, "dev-1")
    agent = aw.reconciler(world, "dev-1", tmp_path)
    world.greengrass.rate_quotas[OTHER_OPERATIONS] = 1
    prefix = f"arn:aws:greengrass:{world.region}:{world.account_id}"
    assert agent.deployments.component_version_exists(prefix, aw.AGENT_COMPONENT, "0.1.0")
    with pytest.raises(errors.ThrottledError) as caught:
        agent.deployments.component_version_exists(prefix, aw.AGENT_COMPONENT, "0.1.0")
    assert caught.value.retry_after == 1
