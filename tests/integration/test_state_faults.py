"""Break-it scenarios "ledger corruption" and "full disk", on the local world with the
whole agent (main loop turn by turn, virtual clock)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon import MainLoop
from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.support import agentworld as aw

COMMANDS = "l4v-edge/dev-1/commands"


@pytest.fixture
def loops() -> Iterator[list[MainLoop]]:
    started: list[MainLoop] = []
    yield started
    for loop in started:
        if loop.agent.state.value != "STOPPED":
            loop.stop(shutdown_timeout=0.5)


def run_until(loop: MainLoop, clock: VirtualClock, done: object, *, limit: float = 6 * 3600) -> None:
    end = clock.now() + limit
    while clock.now() < end:
        clock.advance(max(loop.turn(), 0.1))
        if callable(done) and done():
            return
    raise AssertionError("condition not reached in time")


def test_a_corrupt_ledger_is_replaced_and_the_cloud_side_adopted(
    world: World, clock: VirtualClock, tmp_path: Path, loops: list[MainLoop]
) -> None:
    """v1 runs; the agent stops and its ledger is damaged. The next start keeps the
    damaged file aside, starts a new ledger (new epoch, sequence 1), reports it in the
    first health message (DEGRADED, ledgerReset) and adopts what the cloud already has:
    no second packaging job, no second deployment."""
    aw.seed(world)
    aw.add_device(world, "dev-1")
    state = tmp_path / "dev-1"
    agent = aw.daemon_agent(world, "dev-1", state)
    loop = MainLoop(agent)
    loops.append(loop)
    loop.start()
    run_until(loop, clock, lambda: agent.ledger.facts().deployed_version == 1)
    old_epoch = agent.ledger.epoch
    loop.stop(shutdown_timeout=0.5)
    creates = sum(1 for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300)
    (state / "agent.sqlite").write_bytes(b"\x00garbage" * 4096)

    agent = aw.daemon_agent(world, "dev-1", state)
    loop = MainLoop(agent)
    loops.append(loop)
    loop.start()
    assert list(state.glob("agent.sqlite.corrupt-*"))
    (first_health,) = aw.messages(agent.ledger, "health")
    assert first_health["epoch"] == agent.ledger.epoch != old_epoch
    assert first_health["sequence"] == 2  # after the platform report
    assert first_health["status"] == "DEGRADED"
    assert "corrupt" in first_health["ledgerReset"]
    run_until(loop, clock, lambda: agent.ledger.facts().deployed_version == 1)
    assert len(world.lookoutvision.jobs(aw.PROJECT)) == 1
    assert sum(1 for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300) == creates
    later = aw.messages(agent.ledger, "health")[-1]
    assert later["ledgerReset"] is None


def test_a_full_disk_degrades_the_agent_and_it_recovers(
    world: World, clock: VirtualClock, tmp_path: Path, loops: list[MainLoop]
) -> None:
    """The ledger cannot grow (SQLite max_page_count: SQLITE_FULL exactly as on a full
    disk). The agent does not crash: it logs, retries with growing back-off and keeps
    answering what it can. When room returns, it goes on and its next health report
    says DEGRADED with the StateStorageError and when it lasted; the one after no
    longer carries it."""
    aw.seed(world, models=0)
    aw.add_device(world, "dev-1")
    agent = aw.daemon_agent(
        world, "dev-1", tmp_path / "dev-1",
        reporting={"transport": "none", "outboxMaxMessages": 100_000},
    )
    loop = MainLoop(agent)
    loops.append(loop)
    loop.start()
    clock.advance(loop.turn())
    agent.ledger.cap_size(agent.ledger.page_count())
    waits = []
    for n in range(2000):
        agent.commands.handle(COMMANDS, json.dumps({"id": f"h-{n}", "command": "report-health"}).encode())
        delay = loop.turn()
        if loop.storage_failures:
            waits.append(delay)
            if len(waits) == 6:
                break
        clock.advance(max(delay, 0.1))
    assert len(waits) == 6, "the ledger never filled up"
    assert agent.health.storage_error is not None
    assert agent.health.storage_error.type == "StateStorageError"
    assert max(waits) > 2.0  # back-off grows (1 s doubling, full jitter)
    depth = agent.ledger.outbox_depth()
    agent.ledger.cap_size(1_000_000)  # room again
    clock.advance(waits[-1])
    loop.turn()
    assert loop.storage_failures == 0
    loop.turn()
    reports = aw.messages(agent.ledger, "health")
    assert agent.ledger.outbox_depth() > depth
    recovered = reports[-1]
    assert recovered["status"] == "DEGRADED"
    assert recovered["lastError"]["type"] == "StateStorageError"
    assert "recovered" in recovered["lastError"]["message"]
    agent.requests.health = True
    loop.turn()
    after = aw.messages(agent.ledger, "health")[-1]
    assert after["sequence"] > recovered["sequence"]
    assert (after["lastError"] or {}).get("type") != "StateStorageError"
