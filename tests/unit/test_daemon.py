"""The daemon's life: startup, main loop, shutdown; signals in one place; a second signal
forces the stop; construction without cycles.

The agent here runs on an unsupported platform (health and commands only), so it makes
no cloud call: these tests are about the process's life, not rollouts.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from agent import errors
from agent.config import load_config
from agent.daemon import Agent, AgentState, Daemon, build_agent
from agent.reporting.transport import MessageHandler

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "platforms"


class DownTransport:
    """A transport that never connects: nothing can be flushed."""

    supports_retain = True

    def connect(self, timeout: float) -> None:
        raise errors.TransportError("broker unreachable")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        raise errors.TransportError("not connected")

    def subscribe(self, topic: str, handler: MessageHandler, *, timeout: float) -> None:
        return None

    def is_connected(self) -> bool:
        return False

    def close(self) -> None:
        return None


def degraded_agent(tmp_path: Path, **build: Any) -> Agent:
    config = load_config(overrides={
        "thingName": "dev-1", "region": "us-east-1", "projectName": "widgets", "s3Bucket": "l4v-models",
        "stateDir": str(tmp_path / "state"), "platformRoot": str(FIXTURES / "armv7l-board"),
        "reporting": {"transport": "none"},
    })
    return build_agent(config, env={}, **build)


def test_a_built_agent_is_wired_without_a_back_reference(tmp_path: Path) -> None:
    """The parts are built first and wired after: the command target is the agent's
    request flags, health reads the agent's state, the outbox wakes the publisher."""
    agent = degraded_agent(tmp_path)
    try:
        assert agent.commands.target is agent.requests
        assert agent.health.state_provider() == "STARTING"
        agent.state = AgentState.RUNNING
        assert agent.health.state_provider() == "RUNNING"
        assert agent.outbox.notify == agent.publisher.notify
        agent.requests.report_health_now()
        assert agent.requests.health and agent.wake.is_set()
        with pytest.raises(errors.UnsupportedPlatformError):
            agent.requests.request_check()
    finally:
        agent.ledger.close()


def test_sigterm_stops_the_daemon_gracefully(tmp_path: Path) -> None:
    """SIGTERM after startup: the turn ends, the reports are flushed, the ledger closed,
    exit code 0; the previous signal handlers are back afterwards."""
    agent = degraded_agent(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    daemon = Daemon(agent, on_startup=lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert daemon.run() == 0
    assert daemon.should_exit and not daemon.force_exit
    assert agent.state is AgentState.STOPPED
    assert agent.publisher.published >= 2  # platform and first health report
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_cuts_the_shutdown_short(tmp_path: Path) -> None:
    """With the broker unreachable a graceful stop would wait its whole shutdown timeout
    for the outbox; a second signal forces the stop, the messages stay queued."""
    agent = degraded_agent(tmp_path, transport_factory=DownTransport)

    def twice() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)

    daemon = Daemon(agent, shutdown_timeout=60.0, on_startup=twice)
    started = time.monotonic()
    assert daemon.run() == 0
    assert daemon.force_exit
    assert time.monotonic() - started < 60.0 * 0.6  # the flush did not wait its time
    assert agent.state is AgentState.STOPPED


def test_shutdown_runs_even_when_startup_fails(tmp_path: Path) -> None:
    """A failure in startup still stops what was started and closes the ledger."""
    agent = degraded_agent(tmp_path)
    stopped: list[bool] = []

    def broken() -> None:
        raise RuntimeError("watcher could not start")

    daemon = Daemon(agent, on_startup=broken, on_shutdown=lambda: stopped.append(True))
    with pytest.raises(RuntimeError):
        daemon.run()
    assert stopped == [True] and agent.state is AgentState.STOPPED
    assert not agent.publisher.running


def test_once_on_an_unsupported_platform_exits_1(tmp_path: Path) -> None:
    """``once`` cannot settle a rollout on an unsupported platform: exit code 1."""
    agent = degraded_agent(tmp_path)
    assert Daemon(agent, until_settled=True).run() == 1
