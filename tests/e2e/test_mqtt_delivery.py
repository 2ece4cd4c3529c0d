"""Status, health and commands over MQTT: nothing is lost, against real parts.

The agent runs as a real process (``python -m agent run --config FILE``) with the direct
MQTT5 transport (mutual TLS) to a real Mosquitto, and talks to a local world served over
HTTP on a real clock. An independent subscriber watches ``l4v-edge/dev-1/#``.

The agent reaches the broker through a :class:`TcpProxy`. The proxy only forwards: the
outages below are real broker stops. It exists so that, after a restart, the test's
subscriber can subscribe before the agent may reconnect (Mosquitto runs without
persistence, so a message published before anybody subscribed would reach nobody).

No sleeps: waits are on the subscriber's condition variable, on processes, or (world
and ledger state, which have no callback) a short event-based poll.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from agent.ledger import Ledger
from agent.reporting.mqtt import DirectMqttConfig, DirectMqttTransport
from localcloud.clock import RealClock
from localcloud.server import WorldServer
from localcloud.world import World
from tests.support import agentworld
from tests.support.mosquitto import (
    HOST,
    Message,
    MessageCollector,
    MosquittoBroker,
    Pki,
    TcpProxy,
)

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]

REPO_ROOT = Path(__file__).resolve().parents[2]
PLATFORM_ROOT = REPO_ROOT / "tests" / "fixtures" / "platforms" / "x86-64-cpu-server"
THING = "dev-1"
TOPIC_PREFIX = f"l4v-edge/{THING}/"
STATUS_TOPIC = TOPIC_PREFIX + "status"
HEALTH_TOPIC = TOPIC_PREFIX + "health"
COMMAND_TOPIC = TOPIC_PREFIX + "commands"
RESPONSE_TOPIC = TOPIC_PREFIX + "commands/responses"
#: The model component the agent builds for this platform ({project}.{platform}).
MODEL_COMPONENT = f"{agentworld.PROJECT}.x86-64-cpu"

#: The status phases of one successful rollout, in order.
COMPLETE_ROLLOUT = re.compile(
    r"CHECKING PACKAGING_STARTED (PACKAGING_RUNNING )?PACKAGING_SUCCEEDED "
    r"DEPLOYMENT_CREATED (DEPLOYMENT_IN_PROGRESS )*COMPONENT_RUNNING"
)
ROLLOUT_TIMEOUT = 30.0
STEP_TIMEOUT = 20.0


# -- helpers -------------------------------------------------------------------------------


def _body(message: Message) -> dict[str, Any]:
    body = json.loads(message.payload)
    assert isinstance(body, dict), message
    return body


def _is_status(phase: str) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        return message.topic == STATUS_TOPIC and _body(message)["phase"] == phase

    return match


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll an external condition that offers no callback (world or ledger state)."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        pause.wait(0.1)


def delivered_statuses(messages: list[Message]) -> list[dict[str, Any]]:
    """Status events as a subscriber that de-duplicates on ``sequence`` sees them.

    A duplicate (QoS 1 redelivery) must carry the very same payload; the first copy of
    each sequence is kept, in arrival order.
    """
    first: dict[int, bytes] = {}
    kept: list[dict[str, Any]] = []
    for message in messages:
        if message.topic != STATUS_TOPIC:
            continue
        body = _body(message)
        sequence = int(body["sequence"])
        if sequence in first:
            assert first[sequence] == message.payload, f"sequence {sequence} reused: {body}"
            continue
        first[sequence] = message.payload
        kept.append(body)
    return kept


def assert_complete_rollout(messages: list[Message]) -> list[int]:
    """Every status of the rollout arrived once per sequence, in order, none missing."""
    statuses = delivered_statuses(messages)
    sequences = [s["sequence"] for s in statuses]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences), statuses
    phases = " ".join(s["phase"] for s in statuses)
    assert COMPLETE_ROLLOUT.fullmatch(phases), phases
    assert {s["modelVersion"] for s in statuses} == {1}, statuses
    return sequences


# -- the parts -------------------------------------------------------------------------------


@pytest.fixture
def broker(mosquitto_binary: str, pki: Pki, tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A mutual-TLS Mosquitto the test may stop and restart on the same port."""
    with MosquittoBroker(mosquitto_binary, pki, tmp_path / "broker") as started:
        yield started


@pytest.fixture
def proxy(broker: MosquittoBroker) -> Iterator[TcpProxy]:
    with TcpProxy(broker.port) as forwarding:
        yield forwarding


@pytest.fixture
def cloud() -> Iterator[tuple[World, str]]:
    """A local world on a real clock, served over HTTP, with the project and dev-1."""
    world = World(RealClock())
    agentworld.seed(world, packaging_seconds=4.0)
    world.lookoutvision.running_after_seconds = 0.5
    world.greengrass.install_seconds = 0.0  # dev-1 already runs the agent component
    device = agentworld.add_device(world, THING)

    def agent_component_running() -> bool:
        world.tick()
        info = device.component(agentworld.AGENT_COMPONENT)
        return info is not None and info.state == "RUNNING"

    wait_until(agent_component_running, 10.0, "the agent component on dev-1")
    world.greengrass.install_seconds = 1.0
    with WorldServer(world) as server:
        yield world, server.url


class Subscribers:
    """Independent subscribers to ``l4v-edge/dev-1/#``; a new one after each restart."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.collectors: list[MessageCollector] = []

    def start(self, broker: MosquittoBroker) -> MessageCollector:
        collector = MessageCollector(
            broker,
            self.pki.client("observer"),
            client_id=f"observer-{len(self.collectors)}",
            topic_filter=TOPIC_PREFIX + "#",
        ).start()
        self.collectors.append(collector)
        return collector

    @property
    def current(self) -> MessageCollector:
        return self.collectors[-1]

    def messages(self) -> list[Message]:
        return [m for c in self.collectors for m in c.messages]

    def stop(self) -> None:
        for collector in self.collectors:
            collector.stop()


@pytest.fixture
def subscribers(pki: Pki) -> Iterator[Subscribers]:
    observers = Subscribers(pki)
    yield observers
    observers.stop()


@dataclass
class AgentProcess:
    """``python -m agent run --config FILE`` for dev-1, restartable on the same state dir."""

    config_path: Path
    state_dir: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "agent.sqlite"

    def start(self) -> subprocess.Popen[bytes]:
        assert self.process is None or self.process.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SVCUID"))}
        env.update(
            AWS_ACCESS_KEY_ID="AKIDTESTTESTTESTTEST",
            AWS_SECRET_ACCESS_KEY="test-secret-key",
            AWS_CONFIG_FILE=str(self.workdir / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.workdir / "no-aws-credentials"),
            PYTHONPATH=os.pathsep.join(
                [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        )
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(self.config_path)],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self.process

    def kill(self) -> None:
        """kill -9, as a power cut or the OOM killer would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(5.0) == -signal.SIGKILL

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)
        return self.process.returncode

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def outbox_depth(self, kind: str | None = None) -> int:
        """Read from this (test) process; WAL lets it read while the agent writes."""
        if not self.ledger_path.exists():
            return 0
        ledger = Ledger(self.ledger_path)
        try:
            return ledger.outbox_depth(kind)
        finally:
            ledger.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def agent(
    cloud: tuple[World, str], pki: Pki, proxy: TcpProxy, tmp_path: Path
) -> Iterator[AgentProcess]:
    _world, url = cloud
    credentials = pki.client(THING)
    config = {
        "thingName": THING,
        "region": "us-east-1",
        "projectName": agentworld.PROJECT,
        "s3Bucket": agentworld.BUCKET,
        "endpoints": {"lookoutvision": url, "greengrassv2": url, "iot": url},
        "checkIntervalSeconds": 10,
        "pollInitialSeconds": 1,
        "pollMaxSeconds": 2,
        "jobPollMaxSeconds": 5,
        "failureRetrySeconds": 10,
        "stateDir": str(tmp_path / "state"),
        "platformRoot": str(PLATFORM_ROOT),
        "platform": {"arch": "X86_64", "os": "LINUX", "accelerator": "NONE", "mcpu": "core-avx2"},
        "logFormat": "json",
        "logLevel": "DEBUG",
        "reporting": {
            "transport": "mqtt",
            "healthIntervalSeconds": 5,
            "publishTimeoutSeconds": 5,
            "mqtt": {
                "endpoint": HOST,
                "port": proxy.port,
                "certPath": str(credentials.cert_path),
                "keyPath": str(credentials.key_path),
                "caPath": str(pki.ca_path),
                "connectTimeoutSeconds": 3,
                "reconnectMinSeconds": 0.2,
                "reconnectMaxSeconds": 1,
            },
        },
    }
    workdir = tmp_path / "agent"
    workdir.mkdir()
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    runner = AgentProcess(config_path, tmp_path / "state", workdir)
    yield runner
    runner.close()


def model_component_running(world: World) -> bool:
    """The deployed model component is up on dev-1 (the world's view, ticked to now);
    its recipe has no Run step, so up means FINISHED as much as RUNNING."""
    world.tick()
    info = world.greengrass.devices[THING].component(MODEL_COMPONENT)
    return info is not None and info.state in ("RUNNING", "FINISHED")


def restart_broker(
    broker: MosquittoBroker, proxy: TcpProxy, subscribers: Subscribers
) -> MessageCollector:
    """Broker back on the same port; a fresh subscriber is in place before the agent
    can reach the broker again."""
    proxy.block()
    broker.start()
    collector = subscribers.start(broker)
    proxy.unblock()
    return collector


def diagnostics(agent: AgentProcess, broker: MosquittoBroker) -> str:
    return f"\n--- agent log ---\n{agent.log_tail()}\n--- broker log ---\n{broker.log()[-3000:]}"


def expect_status(
    collector: MessageCollector,
    phase: str,
    timeout: float,
    agent: AgentProcess,
    broker: MosquittoBroker,
) -> Message:
    """The first status event ``phase`` the collector got; fails with both logs."""
    try:
        return collector.wait_for(_is_status(phase), timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}{diagnostics(agent, broker)}") from None


# -- the scenarios -------------------------------------------------------------------------------


def test_broker_down_during_a_rollout_loses_no_status_event(
    cloud: tuple[World, str],
    broker: MosquittoBroker,
    proxy: TcpProxy,
    subscribers: Subscribers,
    agent: AgentProcess,
) -> None:
    """Scenario: the broker stops right after the agent's first status event and stays
    down while the rollout packages and deploys the model. When it is back on the same
    port, every status event of the rollout arrives: de-duplicated on ``sequence``, the
    sequences increase strictly and the phases are the complete rollout, CHECKING to
    COMPONENT_RUNNING."""
    world, _url = cloud
    subscribers.start(broker)
    agent.start()
    expect_status(subscribers.current, "CHECKING", STEP_TIMEOUT, agent, broker)
    broker.stop()
    subscribers.current.stop()

    wait_until(lambda: model_component_running(world), ROLLOUT_TIMEOUT, "the model component")
    assert agent.outbox_depth("status") >= 1, diagnostics(agent, broker)

    collector = restart_broker(broker, proxy, subscribers)
    expect_status(collector, "COMPONENT_RUNNING", ROLLOUT_TIMEOUT, agent, broker)
    assert_complete_rollout(subscribers.messages())
    assert agent.process is not None and agent.process.poll() is None


def test_kill_9_while_status_events_are_queued_loses_none(
    cloud: tuple[World, str],
    broker: MosquittoBroker,
    proxy: TcpProxy,
    subscribers: Subscribers,
    agent: AgentProcess,
) -> None:
    """Scenario: the broker is down and status events wait in the agent's outbox; the
    agent is killed with SIGKILL and started again on the same state dir, then the broker
    comes back. The subscriber still sees the complete rollout, CHECKING to
    COMPONENT_RUNNING, once per sequence number and in order."""
    world, _url = cloud
    subscribers.start(broker)
    agent.start()
    expect_status(subscribers.current, "CHECKING", STEP_TIMEOUT, agent, broker)
    broker.stop()
    subscribers.current.stop()

    wait_until(lambda: agent.outbox_depth("status") >= 2, ROLLOUT_TIMEOUT, "queued status events")
    agent.kill()
    queued = agent.outbox_depth()
    assert agent.outbox_depth("status") >= 2

    agent.start()
    # The new process is up once it has queued its start-up reports next to the old ones.
    wait_until(lambda: agent.outbox_depth() > queued, STEP_TIMEOUT, "the restarted agent")
    collector = restart_broker(broker, proxy, subscribers)
    expect_status(collector, "COMPONENT_RUNNING", ROLLOUT_TIMEOUT, agent, broker)
    assert_complete_rollout(subscribers.messages())
    assert model_component_running(world)


def test_commands_round_trip_and_bad_commands_are_rejected(
    pki: Pki,
    broker: MosquittoBroker,
    subscribers: Subscribers,
    agent: AgentProcess,
) -> None:
    """Scenario: during a rollout an operator publishes ``report-health`` (id c-1) to
    ``l4v-edge/dev-1/commands``; the agent answers ACCEPTED for c-1 on
    ``commands/responses`` and a health report follows. An oversized payload, a JSON
    that is no command and a payload that is not JSON each get one REJECTED response,
    and the rollout still completes with every status event in order."""
    collector = subscribers.start(broker)
    agent.start()
    expect_status(collector, "CHECKING", STEP_TIMEOUT, agent, broker)

    operator_credentials = pki.client("operator")
    operator = DirectMqttTransport(
        DirectMqttConfig(
            endpoint=broker.host,
            port=broker.port,
            client_id="operator-1",
            cert_path=operator_credentials.cert_path,
            key_path=operator_credentials.key_path,
            ca_path=pki.ca_path,
        )
    )
    with operator:
        operator.connect(5.0)
        operator.publish(COMMAND_TOPIC, b'{"id":"c-1","command":"report-health"}', timeout=5.0)
        response = _body(
            collector.wait_for(
                lambda m: m.topic == RESPONSE_TOPIC and _body(m)["id"] == "c-1", STEP_TIMEOUT
            )
        )
        assert response["outcome"] == "ACCEPTED", response
        collector.wait_for(
            lambda m: m.topic == HEALTH_TOPIC and _body(m)["sequence"] > response["sequence"],
            STEP_TIMEOUT,
        )

        oversized = json.dumps({"id": "c-2", "command": "report-health", "pad": "x" * 5000})
        operator.publish(COMMAND_TOPIC, oversized.encode(), timeout=5.0)
        operator.publish(COMMAND_TOPIC, b'{"id":"c-3","command":"reboot"}', timeout=5.0)
        operator.publish(COMMAND_TOPIC, b"{not json", timeout=5.0)

        def rejected(detail: str, command_id: str | None) -> Callable[[Message], bool]:
            def match(message: Message) -> bool:
                if message.topic != RESPONSE_TOPIC:
                    return False
                body = _body(message)
                return body["id"] == command_id and detail in body["detail"]

            return match

        for detail, command_id in (
            ("exceeds the limit", None),
            ("command", "c-3"),
            ("not valid JSON", None),
        ):
            body = _body(collector.wait_for(rejected(detail, command_id), STEP_TIMEOUT))
            assert body["outcome"] == "REJECTED", body

    expect_status(collector, "COMPONENT_RUNNING", ROLLOUT_TIMEOUT, agent, broker)
    assert_complete_rollout(collector.messages)
    responses = [_body(m) for m in collector.messages if m.topic == RESPONSE_TOPIC]
    assert [(r["id"], r["outcome"]) for r in responses] == [
        ("c-1", "ACCEPTED"),
        (None, "REJECTED"),
        ("c-3", "REJECTED"),
        (None, "REJECTED"),
    ]
    assert agent.process is not None and agent.process.poll() is None, agent.log_tail()
