"""DirectMqttTransport against a real Mosquitto with mutual TLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from agent.errors import ConfigurationError, TransportError
from agent.reporting.mqtt import DirectMqttTransport, topic_matches
from tests.support.mosquitto import MessageCollector, MosquittoBroker, Pki, TcpProxy

pytestmark = pytest.mark.mosquitto

TransportFactory = Callable[..., DirectMqttTransport]
CollectorFactory = Callable[..., MessageCollector]

TIMEOUT = 5.0


class Inbox:
    """Collects (topic, payload) from a transport handler; waits on a condition."""

    def __init__(self) -> None:
        self._items: list[tuple[str, bytes]] = []
        self._changed = threading.Condition()

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._changed:
            self._items.append((topic, payload))
            self._changed.notify_all()

    def wait_for(self, item: tuple[str, bytes], timeout: float = TIMEOUT) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: item in self._items, timeout), self._items


def test_qos1_round_trip_over_mutual_tls(
    mosquitto: MosquittoBroker,
    transport_factory: TransportFactory,
    collector_factory: CollectorFactory,
) -> None:
    """A client certificate signed by the broker's CA connects; a QoS 1 publish is
    acknowledged and reaches both an independent subscriber and the transport's own
    wildcard subscription."""
    collector = collector_factory(mosquitto, "devices/#")
    transport = transport_factory(mosquitto)
    transport.connect(TIMEOUT)
    assert transport.is_connected()
    inbox = Inbox()
    transport.subscribe("devices/+/status", inbox, timeout=TIMEOUT)

    transport.publish("devices/agent-1/status", b'{"ok":true}', timeout=TIMEOUT)

    message = collector.wait_for(lambda m: m.topic == "devices/agent-1/status")
    assert message.payload == b'{"ok":true}'
    assert not message.retain
    inbox.wait_for(("devices/agent-1/status", b'{"ok":true}'))


def test_connect_twice_is_a_no_op_and_close_is_idempotent(
    mosquitto: MosquittoBroker, transport_factory: TransportFactory
) -> None:
    """connect() on a connected transport changes nothing; close() may be called again;
    after close() publishing is refused with TransportError."""
    transport = transport_factory(mosquitto)
    transport.connect(TIMEOUT)
    transport.connect(TIMEOUT)
    assert transport.is_connected()

    transport.close()
    transport.close()

    assert not transport.is_connected()
    with pytest.raises(TransportError, match="not connected"):
        transport.publish("devices/agent-1/status", b"x", timeout=1)


def test_broker_certificate_not_trusted_gives_transport_error(
    mosquitto: MosquittoBroker, pki: Pki, transport_factory: TransportFactory
) -> None:
    """With a CA file that did not sign the broker's certificate, connect raises
    TransportError within its (short) timeout and leaves the transport disconnected.
    The client rejects the server here, so s2n delays the failure report by 10-30 s
    ("blinding"): the connect timeout is what bounds it, and close() does not wait."""
    transport = transport_factory(mosquitto, ca_path=pki.rogue_ca_path)
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"127\.0\.0\.1"):
        transport.connect(1.5)
    assert time.monotonic() - started < 3.0
    assert not transport.is_connected()


def test_client_certificate_from_unknown_ca_is_rejected(
    mosquitto: MosquittoBroker, pki: Pki, transport_factory: TransportFactory
) -> None:
    """A client certificate signed by a CA the broker does not trust is refused by the
    broker: connect raises TransportError quickly."""
    rogue = pki.rogue_client("intruder")
    transport = transport_factory(mosquitto, cert_path=rogue.cert_path, key_path=rogue.key_path)
    started = time.monotonic()
    with pytest.raises(TransportError):
        transport.connect(10.0)
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    ("field", "setting"),
    [
        ("cert_path", "reporting.mqtt.cert_path"),
        ("key_path", "reporting.mqtt.key_path"),
        ("ca_path", "reporting.mqtt.ca_path"),
    ],
)
def test_missing_tls_file_is_a_configuration_error(
    mosquitto: MosquittoBroker,
    transport_factory: TransportFactory,
    tmp_path: Any,
    field: str,
    setting: str,
) -> None:
    """A certificate, key or CA path that does not exist makes connect raise
    ConfigurationError naming the setting and the file; nothing is started."""
    missing = tmp_path / f"absent-{field}.pem"
    transport = transport_factory(mosquitto, **{field: missing})
    with pytest.raises(ConfigurationError) as caught:
        transport.connect(TIMEOUT)
    assert setting in caught.value.message
    assert str(missing) in caught.value.message
    assert not transport.is_connected()


def test_unparseable_certificate_is_a_configuration_error(
    mosquitto: MosquittoBroker, transport_factory: TransportFactory, tmp_path: Any
) -> None:
    """A certificate file that exists but is not PEM raises ConfigurationError."""
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    transport = transport_factory(mosquitto, cert_path=garbage)
    with pytest.raises(ConfigurationError, match=r"reporting\.mqtt\.cert_path"):
        transport.connect(TIMEOUT)


def test_nothing_listening_fails_fast(
    mosquitto: MosquittoBroker, transport_factory: TransportFactory
) -> None:
    """Connecting while the broker is down raises TransportError on the refused attempt."""
    mosquitto.stop()
    transport = transport_factory(mosquitto)
    started = time.monotonic()
    with pytest.raises(TransportError):
        transport.connect(10.0)
    assert time.monotonic() - started < 5.0


def test_publish_while_broker_down_raises_quickly(
    mosquitto: MosquittoBroker, transport_factory: TransportFactory
) -> None:
    """Once the broker is gone, publish raises TransportError within its timeout
    (immediately when the disconnect is already known)."""
    transport = transport_factory(mosquitto)
    transport.connect(TIMEOUT)
    mosquitto.stop()

    started = time.monotonic()
    with pytest.raises(TransportError):
        transport.publish("devices/agent-1/status", b"lost?", timeout=1.0)
    assert time.monotonic() - started < 2.0

    assert transport.wait_until_disconnected(TIMEOUT)
    started = time.monotonic()
    with pytest.raises(TransportError, match="not connected"):
        transport.publish("devices/agent-1/status", b"lost", timeout=1.0)
    assert time.monotonic() - started < 0.5


def test_reconnects_and_resubscribes_after_broker_restart(
    mosquitto: MosquittoBroker,
    transport_factory: TransportFactory,
    collector_factory: CollectorFactory,
) -> None:
    """The broker restarts (same port, no persistence, so the session is gone): the
    transport reconnects by itself, renews its subscription, and publishing works again."""
    transport = transport_factory(mosquitto)
    transport.connect(TIMEOUT)
    inbox = Inbox()
    transport.subscribe("commands/agent-1", inbox, timeout=TIMEOUT)
    transport.publish("commands/agent-1", b"before", timeout=TIMEOUT)
    inbox.wait_for(("commands/agent-1", b"before"))

    mosquitto.stop()
    assert transport.wait_until_disconnected(TIMEOUT)
    with pytest.raises(TransportError, match="reconnecting"):
        transport.connect(0.2)  # waits for the automatic reconnect; does not rebuild
    mosquitto.start()
    transport.connect(10.0)
    assert transport.is_connected()

    collector = collector_factory(mosquitto, "commands/#")
    transport.publish("commands/agent-1", b"after", timeout=TIMEOUT)
    collector.wait_for(lambda m: m.payload == b"after")
    inbox.wait_for(("commands/agent-1", b"after"))


def test_session_resumes_after_network_outage(
    mosquitto: MosquittoBroker, transport_factory: TransportFactory
) -> None:
    """The network drops while the broker keeps running: the transport reconnects with
    clean start False, the broker resumes the session, and a QoS 1 message published
    while the transport was offline is delivered to its subscription afterwards."""
    with TcpProxy(mosquitto.port) as proxy:
        listener = transport_factory(mosquitto, "agent-1", port=proxy.port)
        sender = transport_factory(mosquitto, "operator")
        listener.connect(TIMEOUT)
        sender.connect(TIMEOUT)
        inbox = Inbox()
        listener.subscribe("commands/agent-1", inbox, timeout=TIMEOUT)

        proxy.block()
        assert listener.wait_until_disconnected(TIMEOUT)
        sender.publish("commands/agent-1", b"while offline", timeout=TIMEOUT)
        proxy.unblock()

        assert listener.wait_until_connected(10.0)
        inbox.wait_for(("commands/agent-1", b"while offline"))
        assert "(p5, c0," in mosquitto.log()  # a reconnect with clean start False


def test_subscription_receives_messages_from_other_clients(
    mosquitto: MosquittoBroker, transport_factory: TransportFactory
) -> None:
    """A message published by another client on a subscribed topic reaches the handler;
    one on another topic does not."""
    listener = transport_factory(mosquitto, "agent-1")
    sender = transport_factory(mosquitto, "operator")
    listener.connect(TIMEOUT)
    sender.connect(TIMEOUT)
    inbox = Inbox()
    listener.subscribe("commands/agent-1/#", inbox, timeout=TIMEOUT)

    sender.publish("commands/agent-2/reboot", b"no", timeout=TIMEOUT)
    sender.publish("commands/agent-1/reboot", b"yes", timeout=TIMEOUT)

    inbox.wait_for(("commands/agent-1/reboot", b"yes"))
    assert ("commands/agent-2/reboot", b"no") not in inbox._items


def test_retained_message_reaches_late_subscriber(
    mosquitto: MosquittoBroker,
    transport_factory: TransportFactory,
    collector_factory: CollectorFactory,
) -> None:
    """A retained publish is kept by the broker and delivered, flagged retained, to a
    subscriber that connects afterwards."""
    transport = transport_factory(mosquitto)
    transport.connect(TIMEOUT)
    assert transport.supports_retain
    transport.publish("devices/agent-1/state", b"RUNNING", retain=True, timeout=TIMEOUT)

    late = collector_factory(mosquitto, "devices/agent-1/state")

    message = late.wait_for(lambda m: m.topic == "devices/agent-1/state")
    assert message.payload == b"RUNNING"
    assert message.retain


ACL = """\
user agent-1
topic readwrite devices/agent-1/#

user collector
topic read #
"""


def test_publish_denied_by_broker_acl_raises(
    mosquitto_factory: Callable[..., MosquittoBroker], transport_factory: TransportFactory
) -> None:
    """Under an ACL (the certificate CN is the user name), a publish outside the allowed
    topics gets a PUBACK with NOT_AUTHORIZED: publish raises TransportError; an allowed
    topic still works."""
    broker = mosquitto_factory(acl=ACL)
    transport = transport_factory(broker, "agent-1")
    transport.connect(TIMEOUT)

    transport.publish("devices/agent-1/status", b"ok", timeout=TIMEOUT)
    with pytest.raises(TransportError, match="NOT_AUTHORIZED"):
        transport.publish("devices/agent-2/status", b"not mine", timeout=TIMEOUT)


def test_rejected_subscription_raises_and_is_not_kept(
    mosquitto: MosquittoBroker, transport_factory: TransportFactory
) -> None:
    """A subscription that fails (here an invalid filter) raises TransportError, and the
    handler is not kept for resubscription after a reconnect. (Mosquitto 2.0 grants a
    SUBACK even for filters its ACL denies; it just delivers nothing on them.)"""
    transport = transport_factory(mosquitto)
    transport.connect(TIMEOUT)

    with pytest.raises(TransportError, match="subscribe to devices/#/bad"):
        transport.subscribe("devices/#/bad", Inbox(), timeout=TIMEOUT)
    assert transport._subscriptions == {}
    transport.publish("devices/agent-1/status", b"still fine", timeout=TIMEOUT)


def test_sdk_metrics_are_kept_out_of_the_connect_username(
    mosquitto_factory: Callable[..., MosquittoBroker], transport_factory: TransportFactory
) -> None:
    """The CONNECT user name carries no SDK metrics (they would break username ACLs): a
    broker that takes the user name from CONNECT (not from the certificate) logs none."""
    broker = mosquitto_factory(identity_as_username=False)
    transport = transport_factory(broker, "agent-1")
    transport.connect(TIMEOUT)
    transport.publish("devices/agent-1/status", b"ok", timeout=TIMEOUT)

    connected = [line for line in broker.log().splitlines() if "New client connected" in line]
    assert connected, broker.log()
    assert not any("SDK=" in line or "u'" in line for line in connected), connected


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$aws/things/x", False),
        ("+/b", "$SYS/b", False),
        ("$aws/#", "$aws/things/x", True),
        ("a/b", "a/c", False),
    ],
)
def test_topic_filter_matching(topic_filter: str, topic: str, expected: bool) -> None:
    """Handler dispatch follows MQTT filter rules, including the $-topic exception."""
    assert topic_matches(topic_filter, topic) is expected
