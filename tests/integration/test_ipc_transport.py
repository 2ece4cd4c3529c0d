"""IpcTransport against the simulated nucleus (real awsiotsdk IPC client, Unix socket).

The component is the agent with its shipped recipe, so the accessControl under test is
the one the project deploys.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import AccessDeniedError, ConfigurationError, TransportError
from agent.reporting.ipc import SOCKET_ENV, TOKEN_ENV, IpcTransport, nucleus_available
from localcloud.componenthost import ComponentInfo, ConfigListener, UpdatePolicyNotifier
from localcloud.iotcore import IoTCoreBus
from localcloud.nucleus import Nucleus

RECIPE_PATH = Path(__file__).resolve().parents[2] / "recipes" / "l4v.edge.Agent.json"
AGENT = "l4v.edge.Agent"
THING = "edge-1"
TIMEOUT = 5.0


class StaticHost:
    """A ComponentHost with a fixed set of components, all RUNNING."""

    def __init__(self, thing_name: str, *components: ComponentInfo) -> None:
        self.thing_name = thing_name
        self._components = {c.name: c for c in components}
        self.states: dict[str, str] = {}

    def component(self, name: str) -> ComponentInfo | None:
        return self._components.get(name)

    def components(self) -> list[ComponentInfo]:
        return list(self._components.values())

    def report_state(self, name: str, state: str) -> None:
        self.states[name] = state

    def add_config_listener(self, listener: ConfigListener) -> None:
        pass

    def set_update_notifier(self, notifier: UpdatePolicyNotifier | None) -> None:
        pass


class Inbox:
    """Collects (topic, payload) from a transport handler; waits on a condition."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = threading.Condition()

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._changed:
            self.items.append((topic, payload))
            self._changed.notify_all()

    def wait_for_count(self, count: int, timeout: float = TIMEOUT) -> list[tuple[str, bytes]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.items) >= count, timeout), self.items
            return list(self.items)


@pytest.fixture
def bus() -> IoTCoreBus:
    return IoTCoreBus()


@pytest.fixture
def nucleus(bus: IoTCoreBus) -> Iterator[Nucleus]:
    """A running nucleus for a device that has the agent installed with its recipe.

    The socket lives in a short directory of its own: AF_UNIX paths are limited to 107
    bytes, which pytest's per-test directories can exceed."""
    recipe = json.loads(RECIPE_PATH.read_text())
    agent = ComponentInfo(
        name=AGENT, version=recipe["ComponentVersion"], state="RUNNING", recipe=recipe
    )
    directory = Path(tempfile.mkdtemp(prefix="ipc-"))
    server = Nucleus(StaticHost(THING, agent), bus, directory / "ipc.sock")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def transport(nucleus: Nucleus) -> Iterator[IpcTransport]:
    """The agent's transport, built from the environment the nucleus gives the agent."""
    built = IpcTransport.from_env(nucleus.component_env(AGENT))
    yield built
    built.close()


def test_nucleus_available_reads_the_component_environment(nucleus: Nucleus) -> None:
    """nucleus_available is True for the env a nucleus gives; False without SVCUID,
    without the socket variable, or when the socket file is gone."""
    env = nucleus.component_env(AGENT)
    assert nucleus_available(env)
    assert not nucleus_available({k: v for k, v in env.items() if k != TOKEN_ENV})
    assert not nucleus_available({k: v for k, v in env.items() if k != SOCKET_ENV})
    assert not nucleus_available({**env, SOCKET_ENV: env[SOCKET_ENV] + ".gone"})
    assert not nucleus_available({})


def test_missing_environment_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside Greengrass (no SVCUID / socket variable) the transport refuses to be built."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    with pytest.raises(ConfigurationError, match=TOKEN_ENV):
        IpcTransport()
    with pytest.raises(ConfigurationError, match=SOCKET_ENV):
        IpcTransport.from_env({TOKEN_ENV: "token"})


def test_allowed_publish_reaches_the_bus(
    nucleus: Nucleus, bus: IoTCoreBus, transport: IpcTransport
) -> None:
    """A QoS 1 publish to a topic the recipe allows is accepted by the nucleus, attributed
    to the agent, and appears on the IoT Core bus with its retain flag (PublishToIoTCore
    carries ``retain`` since nucleus 2.10), so IoT Core keeps it for the topic."""
    transport.connect(TIMEOUT)
    assert transport.is_connected()
    assert transport.supports_retain
    topic = f"l4v-edge/{THING}/status"

    transport.publish(topic, b'{"phase":"IDLE"}', retain=True, timeout=TIMEOUT)

    message = bus.wait_for(lambda m: m.topic == topic, TIMEOUT)
    assert message.payload == b'{"phase":"IDLE"}'
    assert message.qos == 1
    assert message.retain
    assert bus.retained(topic) == message
    assert [(p.component, p.topic) for p in nucleus.published] == [(AGENT, topic)]


def test_retained_publish_reaches_a_later_subscriber_and_an_empty_one_clears_it(
    nucleus: Nucleus, bus: IoTCoreBus, transport: IpcTransport
) -> None:
    """A retained health report published through the nucleus is delivered to a
    subscriber that comes later; a retained empty payload deletes it (as in IoT Core),
    and a publish without retain leaves the retained message alone."""
    transport.connect(TIMEOUT)
    topic = f"l4v-edge/{THING}/health"
    transport.publish(topic, b"first", retain=True, timeout=TIMEOUT)
    transport.publish(topic, b"passing", retain=False, timeout=TIMEOUT)
    late = Inbox()
    bus.subscribe(topic, late)
    assert late.wait_for_count(1) == [(topic, b"first")]

    transport.publish(topic, b"", retain=True, timeout=TIMEOUT)
    bus.wait_for(lambda m: m.topic == topic and m.payload == b"", TIMEOUT)
    assert bus.retained(topic) is None
    later = Inbox()
    bus.subscribe(topic, later)
    transport.publish(topic, b"after", retain=False, timeout=TIMEOUT)
    assert later.wait_for_count(1) == [(topic, b"after")]


def test_publish_outside_access_control_is_access_denied(
    nucleus: Nucleus, bus: IoTCoreBus, transport: IpcTransport
) -> None:
    """A topic outside the recipe's accessControl (another thing's topic) raises
    AccessDeniedError, a terminal error; nothing reaches the bus; the connection stays
    usable for allowed topics."""
    transport.connect(TIMEOUT)

    with pytest.raises(AccessDeniedError) as caught:
        transport.publish("l4v-edge/other-thing/status", b"x", timeout=TIMEOUT)
    assert caught.value.code == "UnauthorizedError"
    assert "accessControl" in caught.value.message
    assert nucleus.published == []
    assert bus.messages == []

    transport.publish(f"l4v-edge/{THING}/health", b"ok", timeout=TIMEOUT)
    assert transport.is_connected()


def test_subscription_receives_bus_messages_in_order(
    bus: IoTCoreBus, transport: IpcTransport
) -> None:
    """After SubscribeToIoTCore on the command topic, messages published on the bus (by
    the cloud) reach the handler with topic and payload, in publish order."""
    transport.connect(TIMEOUT)
    inbox = Inbox()
    topic = f"l4v-edge/{THING}/commands"
    transport.subscribe(topic, inbox, timeout=TIMEOUT)

    for index in range(5):
        bus.publish(topic, f"command-{index}".encode(), source="cloud")
    bus.publish(f"l4v-edge/{THING}/status", b"not subscribed", source="cloud")

    received = inbox.wait_for_count(5)
    assert received == [(topic, f"command-{i}".encode()) for i in range(5)]


def test_subscribe_outside_access_control_is_access_denied(transport: IpcTransport) -> None:
    """Subscribing to a filter the recipe does not grant raises AccessDeniedError."""
    transport.connect(TIMEOUT)
    with pytest.raises(AccessDeniedError):
        transport.subscribe("l4v-edge/#", Inbox(), timeout=TIMEOUT)


def test_wrong_svcuid_is_rejected_at_connect(nucleus: Nucleus) -> None:
    """A CONNECT with an auth token the nucleus never issued is refused: connect raises
    AccessDeniedError and the transport stays disconnected."""
    env = nucleus.component_env(AGENT)
    stranger = IpcTransport(env[SOCKET_ENV], "not-a-token")
    try:
        with pytest.raises(AccessDeniedError, match=TOKEN_ENV):
            stranger.connect(TIMEOUT)
        assert not stranger.is_connected()
    finally:
        stranger.close()


def test_no_nucleus_socket_is_a_transport_error(nucleus: Nucleus) -> None:
    """With no nucleus listening (socket missing), connect raises TransportError at once."""
    env = nucleus.component_env(AGENT)
    nucleus.stop()
    transport = IpcTransport.from_env(env)
    started = time.monotonic()
    with pytest.raises(TransportError):
        transport.connect(TIMEOUT)
    assert time.monotonic() - started < 2.0
    transport.close()


def test_reconnects_and_resubscribes_after_nucleus_restart(
    nucleus: Nucleus, bus: IoTCoreBus, transport: IpcTransport
) -> None:
    """The nucleus goes away: publish raises TransportError. Once it is back (same
    socket, same SVCUID), the next publish reconnects by itself and the subscription is
    renewed, so bus messages reach the handler again."""
    transport.connect(TIMEOUT)
    inbox = Inbox()
    commands = f"l4v-edge/{THING}/commands"
    transport.subscribe(commands, inbox, timeout=TIMEOUT)

    nucleus.stop()
    with pytest.raises(TransportError):
        transport.publish(f"l4v-edge/{THING}/health", b"lost", timeout=1.0)
    nucleus.start()

    transport.publish(f"l4v-edge/{THING}/health", b"back", timeout=TIMEOUT)
    assert transport.is_connected()
    bus.wait_for(lambda m: m.payload == b"back", TIMEOUT)
    bus.publish(commands, b"after restart", source="cloud")
    assert inbox.wait_for_count(1) == [(commands, b"after restart")]


def test_close_is_idempotent_and_final(transport: IpcTransport) -> None:
    """close() twice is fine; afterwards publish raises TransportError (no silent
    reconnect of a closed transport)."""
    transport.connect(TIMEOUT)
    transport.close()
    transport.close()
    assert not transport.is_connected()
    with pytest.raises(TransportError, match="not connected"):
        transport.publish(f"l4v-edge/{THING}/health", b"x", timeout=1.0)
