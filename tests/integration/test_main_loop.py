"""The daemon's main loop against the local world, turn by turn on the virtual clock:
commands reach the reconciler only through the loop, and are rate-limited per device."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import Agent, MainLoop
from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.support import agentworld as aw

COMMANDS = "l4v-edge/dev-1/commands"


@pytest.fixture
def loops() -> Iterator[list[MainLoop]]:
    """Main loops started by a test; stopped (publisher joined, ledger closed) after it."""
    started: list[MainLoop] = []
    yield started
    for loop in started:
        loop.stop(shutdown_timeout=0.5)


def start_loop(agent: Agent, loops: list[MainLoop]) -> MainLoop:
    loop = MainLoop(agent)
    loop.start()
    loops.append(loop)
    return loop


def command(agent: Agent, body: dict[str, Any]) -> None:
    """Deliver a command as the transport's thread does."""
    agent.commands.handle(COMMANDS, json.dumps(body).encode())


def responses(agent: Agent) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in aw.messages(agent.ledger, "command-response")}


def list_models_calls(world: World) -> int:
    return sum(1 for c in world.calls.calls if c.operation == "ListModels")


def test_deploy_version_arriving_during_a_check_is_not_lost(
    world: World, clock: VirtualClock, tmp_path: Path, loops: list[MainLoop]
) -> None:
    """A deploy-version command arrives (on the transport's thread) while the step's
    ListModels is in flight. It must not touch the reconciler then: the main loop applies
    it after the step, and model version 1 is rolled out after the v2 rollout that the
    check had already started. (Before, the step cleared the flag and overwrote the
    requested version: the command was answered ACCEPTED and nothing happened.)"""
    aw.seed(world, models=2)
    aw.add_device(world, "dev-1")
    holder: list[Agent] = []
    sent = []

    def deliver_during_list_models(client: Any) -> None:
        def handler(model: Any, **_: Any) -> None:
            if model.name == "ListModels" and not sent:
                sent.append(True)
                command(holder[0], {"id": "d-1", "command": "deploy-version", "modelVersion": 1})

        client.meta.events.register("before-call", handler)

    agent = aw.daemon_agent(
        world, "dev-1", tmp_path / "dev-1", hook=deliver_during_list_models,
        commands={"allowDeployVersion": True},
    )
    holder.append(agent)
    loop = start_loop(agent, loops)
    loop.turn()  # the check: v2 chosen, the command arrives mid-call
    assert sent and agent.ledger.facts().requested_version is None  # untouched so far
    assert "d-1" not in responses(agent)  # not yet taken by the main loop
    loop.turn()
    assert responses(agent)["d-1"]["outcome"] == "ACCEPTED"
    assert agent.ledger.facts().requested_version == 1
    for _ in range(2000):
        clock.advance(max(loop.turn(), 0.1))
        versions = [r.model_version for r in agent.ledger.rollouts()]
        if 1 in versions:
            break
    assert [r.model_version for r in agent.ledger.rollouts()][-2:] == [1, 2]


def test_command_flood_makes_at_most_one_check_per_interval(
    world: World, clock: VirtualClock, tmp_path: Path, loops: list[MainLoop]
) -> None:
    """Break-it scenario "command flood": 10 check-now commands every second for five
    minutes cause one ListModels per minCheckIntervalSeconds (60 s), not ten per
    second. Every command is answered: ACCEPTED when its check runs at once, DEFERRED
    with the time of the next allowed check otherwise. (The project has no trained model,
    so every check is one ListModels and nothing else.)"""
    aw.seed(world, models=0)
    aw.add_device(world, "dev-1")
    agent = aw.daemon_agent(
        world, "dev-1", tmp_path / "dev-1",
        reporting={"transport": "none", "outboxMaxMessages": 10_000},
    )
    loop = start_loop(agent, loops)
    baseline = list_models_calls(world)
    start = clock.now()
    sent = 0
    for second in range(300):
        for n in range(10):
            command(agent, {"id": f"c-{second}-{n}", "command": "check-now"})
            sent += 1
        loop.turn()
        clock.advance(1.0)
    answers = responses(agent)
    assert len(answers) == sent
    outcomes = {r["outcome"] for r in answers.values()}
    assert outcomes <= {"ACCEPTED", "DEFERRED"}
    accepted = [r for r in answers.values() if r["outcome"] == "ACCEPTED"]
    assert 1 <= len(accepted) <= 5
    for answer in answers.values():
        assert answer["runAt"] is not None
    checks = list_models_calls(world) - baseline
    # At 0 s the start-up check (the first command joins it), then one at 60, 120, 180
    # and 240 s.
    assert checks == 5, checks
    assert clock.now() - start == 300


def test_a_repeated_command_id_is_answered_as_a_replay_and_runs_once(
    world: World, clock: VirtualClock, tmp_path: Path, loops: list[MainLoop]
) -> None:
    """The same command id delivered twice (a QoS 1 redelivery) gets the first answer
    again, marked as a replay, and the check runs only once."""
    aw.seed(world, models=0)
    aw.add_device(world, "dev-1")
    agent = aw.daemon_agent(world, "dev-1", tmp_path / "dev-1")
    loop = start_loop(agent, loops)
    clock.advance(max(loop.turn(), 0.1))  # the start-up check
    clock.advance(120)
    before = list_models_calls(world)
    command(agent, {"id": "same", "command": "check-now"})
    command(agent, {"id": "same", "command": "check-now"})
    loop.turn()
    answers = [r for r in aw.messages(agent.ledger, "command-response") if r["id"] == "same"]
    assert [(a["outcome"], a["replay"]) for a in answers] == [("ACCEPTED", False), ("ACCEPTED", True)]
    assert answers[0]["runAt"] == answers[1]["runAt"]
    assert list_models_calls(world) - before == 1
