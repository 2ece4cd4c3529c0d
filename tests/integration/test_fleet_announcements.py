"""Fleet announcements between devices, over the agent's real transports.

Each device is what the agent builds when ``fleet.enabled``: a FleetChannel (with its
FleetBoard) subscribed through SubscribingTransport on the device's own transport.
Two worlds carry them:

* ``ipc``: one simulated nucleus per device (the shipped recipe, so its accessControl
  is what is enforced), sharing one IoT Core bus, reached with the unmodified awsiotsdk
  IPC client;
* ``mqtt``: a real Mosquitto with mutual TLS, one client certificate per device.

An outsider (a misbehaving device, or IoT Core itself) publishes straight to the bus or
the broker.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.coordination import KEPT_VERSIONS, FleetTopics, JobNews, Ready, Released, stamp
from agent.daemon import SubscribingTransport, Subscription
from agent.errors import AccessDeniedError
from agent.reporting.fleet_channel import FleetChannel
from agent.reporting.ipc import IpcTransport
from agent.reporting.transport import Transport
from localcloud.componenthost import ComponentInfo, ConfigListener, UpdatePolicyNotifier
from localcloud.iotcore import IoTCoreBus
from localcloud.nucleus import Nucleus
from tests.support.fakes import FakeClock
from tests.support.mosquitto import MosquittoBroker

RECIPE_PATH = Path(__file__).resolve().parents[2] / "recipes" / "l4v.edge.Agent.json"
AGENT = "l4v.edge.Agent"
PREFIX = "l4v-fleet"
PROJECT = "widgets"
X86 = "x86-64-cpu"
JETSON = "jetson-xavier"
TOPICS = FleetTopics(PREFIX, PROJECT)
TIMEOUT = 10.0
FLOOD = 10_000
#: MQTT connections the flood is sent from (each is held to 100 publishes/s).
FLOOD_SENDERS = 25


class Host:
    """The component host of one device: the agent with its shipped recipe."""

    def __init__(self, thing_name: str, configuration: dict[str, Any] | None = None) -> None:
        self.thing_name = thing_name
        recipe = json.loads(RECIPE_PATH.read_text())
        self._agent = ComponentInfo(AGENT, recipe["ComponentVersion"], "RUNNING", configuration or {}, recipe)

    def component(self, name: str) -> ComponentInfo | None:
        return self._agent if name == AGENT else None

    def components(self) -> list[ComponentInfo]:
        return [self._agent]

    def report_state(self, name: str, state: str) -> None:
        pass

    def add_config_listener(self, listener: ConfigListener) -> None:
        pass

    def set_update_notifier(self, notifier: UpdatePolicyNotifier | None) -> None:
        pass  # no deployments reach this host


class Handled:
    """Counts messages the channel has finished with (to wait on, never to sleep)."""

    def __init__(self, channel: FleetChannel) -> None:
        self.channel = channel
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.channel.handle(topic, payload)
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.count >= count, timeout), self.count


@dataclass
class Device:
    thing_name: str
    platform: str
    transport: Transport
    channel: FleetChannel
    handled: Handled
    wakes: threading.Event

    @property
    def board(self) -> Any:
        return self.channel.board

    def announce(self, message: Any) -> None:
        """Publish ``message`` retained on its topic, as the agent does."""
        self.transport.publish(TOPICS.topic_of(message), message.to_json(), retain=True, timeout=TIMEOUT)


class FleetWorld:
    """Devices joined over one transport kind; ``inject`` publishes as an outsider."""

    def __init__(
        self,
        connect: Callable[[str], Transport],
        inject: Callable[[str, bytes, bool], None],
        inject_many: Callable[[list[tuple[str, bytes]]], None] | None = None,
        *,
        delivers_all: bool = True,
    ) -> None:
        #: False where the broker drops what a slow subscriber cannot take (Mosquitto's
        #: max_queued_messages; IoT Core throttles a connection beyond 100 messages/s)
        self.delivers_all = delivers_all
        self._connect = connect
        self.inject = inject
        self.inject_many = inject_many or (lambda messages: [inject(t, p, False) for t, p in messages])
        self.clock = FakeClock()

    def join(self, thing_name: str, platform: str = X86) -> Device:
        """A device's transport, subscribed as build_agent subscribes it."""
        wakes = threading.Event()
        channel = FleetChannel.for_device(PREFIX, PROJECT, platform, clock=self.clock, wake=wakes.set)
        handled = Handled(channel)
        subscriptions = [Subscription(t, handled, channel.subscription_result) for t in channel.subscriptions()]
        transport = SubscribingTransport(self._connect(thing_name), subscriptions, TIMEOUT)
        transport.connect(TIMEOUT)
        assert channel.subscription_error is None
        return Device(thing_name, platform, transport, channel, handled, wakes)


@pytest.fixture
def ipc_world() -> Iterator[FleetWorld]:
    bus = IoTCoreBus()
    directory = Path(tempfile.mkdtemp(prefix="fleet-"))
    nuclei: list[Nucleus] = []
    transports: list[IpcTransport] = []

    def connect(thing_name: str) -> Transport:
        nucleus = Nucleus(Host(thing_name), bus, directory / f"{len(nuclei)}.sock").start()
        nuclei.append(nucleus)
        transport = IpcTransport.from_env(nucleus.component_env(AGENT))
        transports.append(transport)
        return transport

    def inject(topic: str, payload: bytes, retain: bool) -> None:
        bus.publish(topic, payload, retain=retain, source="outsider")

    yield FleetWorld(connect, inject)
    for transport in transports:
        transport.close()
    for nucleus in nuclei:
        nucleus.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def mqtt_world(mosquitto: MosquittoBroker, transport_factory: Callable[..., Any]) -> FleetWorld:
    def outsider(index: int) -> Any:
        transport = transport_factory(mosquitto, f"outsider-{index}")
        transport.connect(TIMEOUT)
        return transport

    first = outsider(0)

    def connect(thing_name: str) -> Transport:
        transport: Transport = transport_factory(mosquitto, thing_name)
        return transport

    def inject(topic: str, payload: bytes, retain: bool) -> None:
        first.publish(topic, payload, retain=retain, timeout=TIMEOUT)

    def inject_many(messages: list[tuple[str, bytes]]) -> None:
        # The SDK holds one connection to 100 publishes/s (IoT Core's limit per
        # connection), so a flood comes from many connections at once.
        senders = [first, *(outsider(i) for i in range(1, FLOOD_SENDERS))]
        batches = [messages[i :: len(senders)] for i in range(len(senders))]

        def send(index: int) -> None:
            for topic, payload in batches[index]:
                senders[index].publish(topic, payload, timeout=TIMEOUT)

        with ThreadPoolExecutor(max_workers=len(senders)) as pool:
            list(pool.map(send, range(len(senders))))

    return FleetWorld(connect, inject, inject_many, delivers_all=False)


@pytest.fixture(params=["ipc", pytest.param("mqtt", marks=pytest.mark.mosquitto)])
def world(request: pytest.FixtureRequest) -> FleetWorld:
    fixture: FleetWorld = request.getfixturevalue(f"{request.param}_world")
    return fixture


def _ready(thing_name: str, version: int, platform: str = X86) -> Ready:
    return Ready(
        thing_name=thing_name, sent_at=stamp(1.79e9), model_version=version, platform=platform,
        component_name=f"{PROJECT}.{platform}", component_version=f"{version}.0.0",
    )


def test_a_retained_announcement_reaches_a_device_that_subscribes_later(world: FleetWorld) -> None:
    """Device A announces release 3 and its component, retained; device B joins
    afterwards and its board holds both at once (the wake fires for the news), and A
    hears its own announcement too."""
    first = world.join("edge-a")
    first.announce(Released(thing_name="edge-a", sent_at=stamp(1.79e9), model_version=3))
    first.announce(_ready("edge-a", 3))
    first.handled.wait_for(2)

    late = world.join("edge-b")
    late.handled.wait_for(2)

    news = late.board.news()
    assert news.released == 3
    assert (news.ready[3].component_name, news.ready[3].component_version) == (f"{PROJECT}.{X86}", "3.0.0")
    assert late.wakes.is_set()
    assert (late.board.accepted, late.board.rejected) == (2, 0)
    assert first.board.news().ready[3] == news.ready[3]


def test_a_malformed_announcement_is_rejected_naming_the_field(world: FleetWorld) -> None:
    """A ready announcement whose componentVersion is not x.y.z is dropped: counted, the
    reason names the field, the board's news are what they were, no wake; health shows it."""
    device = world.join("edge-b")
    world.inject(TOPICS.ready(X86), _ready("edge-a", 2).to_json(), True)
    device.handled.wait_for(1)
    before = device.board.news()
    device.wakes.clear()
    bad = json.loads(_ready("edge-a", 3).to_json())
    bad["componentVersion"] = "3.0"

    world.inject(TOPICS.ready(X86), json.dumps(bad).encode(), False)
    device.handled.wait_for(2)

    assert device.board.rejected == 1
    assert device.board.last_rejection.startswith("ready.componentVersion: String should match pattern")
    assert device.board.news() == before
    assert not device.wakes.is_set()
    counts = device.channel.counts()
    assert (counts.accepted, counts.rejected, counts.last_rejection) == (1, 1, device.board.last_rejection)


def test_another_platforms_announcements_are_refused(world: FleetWorld) -> None:
    """A Jetson device's ready announcement never reaches an x86 device (it does not
    subscribe to that platform), and one that claims Jetson on the x86 topic is refused
    by topic: the x86 board learns nothing from either."""
    jetson = world.join("edge-j", JETSON)
    x86 = world.join("edge-x", X86)
    jetson.announce(_ready("edge-j", 4, JETSON))
    world.inject(TOPICS.ready(X86), _ready("edge-j", 4, JETSON).to_json(), False)
    world.inject(TOPICS.released(), Released(thing_name="edge-j", sent_at="", model_version=4).to_json(), False)

    x86.handled.wait_for(2)
    jetson.handled.wait_for(2)

    assert x86.board.rejected == 1
    assert x86.board.last_rejection.startswith("topic:")
    assert x86.board.news().ready == {}
    assert x86.board.news().released == 4
    assert jetson.board.news().ready[4].component_name == f"{PROJECT}.{JETSON}"


def test_a_flood_of_bogus_messages_leaves_memory_bounded_and_the_device_working(world: FleetWorld) -> None:
    """10,000 bogus messages (bad JSON, bad fields, wrong topic, oversized) on the
    device's topics: every one that arrives is counted and dropped, logged once (the
    minute has not passed), the agent's memory does not grow with them, and a real
    announcement after the flood is taken."""
    device = world.join("edge-b")
    oversized = b"{" + b" " * 5000 + b"}"
    bogus = [
        (TOPICS.ready(X86), b"not json"),
        (TOPICS.job(X86), b'{"kind":"job","thingName":"x","sentAt":"","modelVersion":-1}'),
        (TOPICS.released(), _ready("edge-a", 5).to_json()),
        (TOPICS.failed(X86, "edge-c"), oversized),
    ]
    tracemalloc.start()
    try:
        before = _agent_memory()
        with capture_logs() as logs:
            world.inject_many([bogus[index % len(bogus)] for index in range(FLOOD)])
            _announce_until_heard(device, JobNews(
                thing_name="edge-b", sent_at="", model_version=6, platform=X86, job_name="w-x-v6-1",
                status="STARTED",
            ))
        grown = _agent_memory() - before
    finally:
        tracemalloc.stop()

    assert device.board.news().jobs[6].status == "STARTED"
    assert device.board.news().released is None
    assert device.board.rejected == device.handled.count - device.board.accepted
    assert device.board.rejected == FLOOD if world.delivers_all else device.board.rejected >= 1000
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["fleet announcement rejected"]
    assert grown < 200_000, grown  # what the agent's code still holds after the flood


def _announce_until_heard(device: Device, message: Any, attempts: int = 30) -> None:
    """Announce ``message`` until the device's board has it (a broker may drop it while
    the device's queue is still full of the flood)."""
    device.wakes.clear()
    for _ in range(attempts):
        device.announce(message)
        if device.wakes.wait(2.0):
            return
    pytest.fail(f"{message.kind} announcement not heard after {attempts} attempts")


def _agent_memory() -> int:
    """Bytes currently allocated by the agent's own code (the world's records excluded)."""
    agent_files = str(Path(__file__).resolve().parents[2] / "agent" / "*")
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, agent_files)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_valid_announcements_of_ever_newer_versions_keep_only_the_newest(ipc_world: FleetWorld) -> None:
    """A device that announces 10,000 made-up versions (valid messages) cannot grow
    another's board: it keeps the newest few versions only."""
    world = ipc_world
    device = world.join("edge-b")
    world.inject_many([(TOPICS.ready(X86), _ready("edge-z", v).to_json()) for v in range(1, FLOOD + 1)])
    device.handled.wait_for(FLOOD, timeout=120)
    assert sorted(device.board.news().ready) == list(range(FLOOD - KEPT_VERSIONS + 1, FLOOD + 1))


def test_access_control_refuses_announcements_outside_the_fleet_topics(ipc_world: FleetWorld) -> None:
    """Under the shipped recipe, a device may announce on its project's topics and
    report failure under its own name only: another device's failed topic, a topic one
    level deeper, another prefix and a subscription wider than a platform are refused
    by the nucleus (AccessDeniedError), and the allowed ones pass."""
    device = ipc_world.join("edge-a")
    allowed = [
        TOPICS.released(), TOPICS.job(X86), TOPICS.ready(X86), TOPICS.deployed(X86, 2),
        TOPICS.failed(X86, "edge-a"),
    ]
    for topic in allowed:
        device.transport.publish(topic, b"{}", timeout=TIMEOUT)
    refused = [
        TOPICS.failed(X86, "edge-b"), f"{TOPICS.ready(X86)}/more", f"other-prefix/{PROJECT}/released",
        f"{PREFIX}/{PROJECT}/{X86}/wave/2/deployed/x", f"{PREFIX}/{PROJECT}/{X86}/anything",
    ]
    for topic in refused:
        with pytest.raises(AccessDeniedError):
            device.transport.publish(topic, b"{}", timeout=TIMEOUT)
    for topic_filter in (f"{PREFIX}/#", f"{PREFIX}/{PROJECT}/#", f"{PREFIX}/+/#", "#"):
        with pytest.raises(AccessDeniedError):
            device.transport.subscribe(topic_filter, lambda t, p: None, timeout=TIMEOUT)


# -- the agent as build_agent wires it ----------------------------------------------------
@pytest.fixture
def agent_host(tmp_path: Path) -> Iterator[Callable[[dict[str, Any] | None], tuple[Any, IoTCoreBus, Nucleus]]]:
    """Build the whole agent (fleet enabled, x86_64 CPU device) on a simulated nucleus
    whose component configuration is ``configuration`` (None: the recipe's defaults)."""
    from agent.config import load_config
    from agent.daemon import MainLoop, build_agent

    directory = Path(tempfile.mkdtemp(prefix="fleet-agent-"))
    started: list[tuple[MainLoop, Nucleus]] = []

    def start(configuration: dict[str, Any] | None) -> tuple[Any, IoTCoreBus, Nucleus]:
        bus = IoTCoreBus()
        nucleus = Nucleus(Host("edge-a", configuration), bus, directory / "ipc.sock").start()
        config = load_config(overrides={
            "thingName": "edge-a", "region": "us-east-1", "projectName": PROJECT, "s3Bucket": "l4v-models",
            "stateDir": str(tmp_path / "state"),
            "platformRoot": str(Path(__file__).resolve().parents[1] / "fixtures" / "platforms" / "x86-64-cpu-server"),
            "fleet": {"enabled": True, "topicPrefix": PREFIX},
        })
        agent = build_agent(config, env={}, transport_factory=lambda: IpcTransport.from_env(nucleus.component_env(AGENT)))
        loop = MainLoop(agent)
        loop.start()  # publisher: connects, subscribes, sends the platform and health reports
        started.append((loop, nucleus))
        assert agent.publisher.flush(TIMEOUT)
        return agent, bus, nucleus

    yield start
    for loop, nucleus in started:
        loop.stop(1.0)
        nucleus.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_the_built_agent_hears_announcements_and_wakes_its_loop(agent_host: Callable[..., Any]) -> None:
    """build_agent with fleet.enabled subscribes the board to the project's released topic
    and the platform's topics next to the command topic; a retained announcement made
    before wakes the main loop, the reconciler reads the same board, and the health
    report counts it."""
    agent, bus, _ = agent_host(None)
    platform = agent.platform.key
    assert agent.reconciler.fleet_board is agent.fleet_board
    assert agent.fleet_board.platform == platform
    agent.wake.clear()
    bus.publish(TOPICS.ready(platform), _ready("edge-z", 7, platform).to_json(), retain=True, source="edge-z")

    assert agent.wake.wait(TIMEOUT)
    assert agent.fleet_board.news().ready[7].component_version == "7.0.0"
    report = json.loads(agent.health.message().render(1, "e"))
    assert report["announcements"]["accepted"] == 1
    assert report["announcements"]["subscriptionError"] is None


def test_a_refused_fleet_subscription_leaves_the_agent_reporting(agent_host: Callable[..., Any]) -> None:
    """A deployment whose accessControl does not grant the fleet topics: the fleet
    subscription is refused by the nucleus, the agent still connects, takes commands and
    publishes its reports, and its health says DEGRADED with the refusal."""
    recipe = json.loads(RECIPE_PATH.read_text())
    access = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    del access["aws.greengrass.ipc.mqttproxy"]["l4v.edge.Agent:fleet-subscribe:1"]
    agent, bus, _ = agent_host({"accessControl": access})

    report = json.loads(agent.health.message().render(1, "e"))
    assert report["status"] == "DEGRADED"
    assert "not authorized" in report["announcements"]["subscriptionError"]
    assert [m.topic for m in bus.messages][:2] == ["l4v-edge/edge-a/platform", "l4v-edge/edge-a/health"]
    assert bus.subscription_count == 1  # the command topic


def test_after_the_nucleus_restarts_the_fleet_topics_are_subscribed_again(agent_host: Callable[..., Any]) -> None:
    """The nucleus restarts while an announcement is made: once the agent's transport
    is back (its next report), the fleet subscriptions are renewed and the retained
    announcement made meanwhile reaches the board."""
    agent, bus, nucleus = agent_host(None)
    platform = agent.platform.key
    nucleus.stop()
    bus.publish(TOPICS.job(platform), JobNews(
        thing_name="edge-z", sent_at="", model_version=8, platform=platform, job_name="w-x-v8-1", status="STARTED",
    ).to_json(), retain=True, source="edge-z")
    nucleus.start()
    agent.wake.clear()

    agent.send([agent.health.message()])
    assert agent.publisher.flush(TIMEOUT)
    assert agent.wake.wait(TIMEOUT)
    assert agent.fleet_board.news().jobs[8].job_name == "w-x-v8-1"
