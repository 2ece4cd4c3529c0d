"""The simulated nucleus: event-stream framing, IoT Core bus, IPC server, TES.

The IPC tests drive the server with the unmodified awsiotsdk
``GreengrassCoreIPCClientV2`` (what components use), plus a raw socket for the
malformed-frame cases the SDK would never send.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import struct
import threading
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.utils
import pytest
from awsiot.eventstreamrpc import AccessDeniedError
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import (
    ConfigurationUpdateEvents,
    IoTCoreMessage,
    ResourceNotFoundError,
    ServiceError,
    UnauthorizedError,
)
from botocore.exceptions import ClientError, CredentialRetrievalError

from localcloud.clock import VirtualClock
from localcloud.componenthost import ComponentInfo
from localcloud.device import NUCLEUS_VERSION
from localcloud.http import Headers, Request
from localcloud.iotcore import IoTCoreBus, topic_matches, validate_filter
from localcloud.nucleus import Nucleus, Published, TokenExchangeService
from localcloud.nucleus.eventstream import (
    EventStreamError,
    FrameDecoder,
    Header,
    HeaderType,
    Message,
    decode,
    encode,
)
from localcloud.nucleus.server import mqtt_resource_matches
from localcloud.transport import attach, world_client
from localcloud.world import INTERNAL_ENDPOINT, World
from tests.support.nucleus import StaticHost, mqtt_acl, recipe_with_acl, short_socket_dir

THING = "edge-thing-1"
PUBLISHER = "com.example.Publisher"
READER = "com.example.Reader"
NO_ACL = "com.example.NoAcl"
CLI = "aws.greengrass.Cli"
WAIT = 5.0


# -- fixtures -----------------------------------------------------------------------------
def _components() -> list[ComponentInfo]:
    publisher_acl = mqtt_acl(
        publish=["dt/{iot:thingName}/telemetry", "status/+/health", "logs/#"],
        subscribe=["cmd/{iot:thingName}/#", "fleet/+/notice"],
    )
    reader_acl = {
        CLI: {
            "inspect": {
                "operations": [
                    "aws.greengrass#ListComponents",
                    "aws.greengrass#GetComponentDetails",
                ],
                "resources": ["*"],
            }
        },
        "aws.greengrass.ipc.config": {
            "read": {
                "operations": [
                    "aws.greengrass#GetConfiguration",
                    "aws.greengrass#SubscribeToConfigurationUpdate",
                ],
                "resources": [PUBLISHER],
            }
        },
        "aws.greengrass.ipc.mqttproxy": {
            "all": {"operations": ["*"], "resources": ["*"]},
        },
    }
    return [
        ComponentInfo(
            PUBLISHER,
            "1.2.0",
            "RUNNING",
            {"Interval": "30", "Model": {"Name": "m1", "Threshold": "0.5"}},
            recipe_with_acl(PUBLISHER, publisher_acl),
        ),
        ComponentInfo(READER, "0.1.0", "RUNNING", {}, recipe_with_acl(READER, reader_acl)),
        ComponentInfo(NO_ACL, "3.0.0", "FINISHED", {"a": "b"}, {"ComponentName": NO_ACL}),
    ]


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    with short_socket_dir(tmp_path) as directory:
        yield directory


@pytest.fixture
def host() -> StaticHost:
    return StaticHost(THING, _components())


@pytest.fixture
def bus() -> IoTCoreBus:
    return IoTCoreBus()


@pytest.fixture
def nucleus(host: StaticHost, bus: IoTCoreBus, sock_dir: Path) -> Iterator[Nucleus]:
    with Nucleus(host, bus, sock_dir / "ipc.sock") as server:
        yield server


@pytest.fixture
def ipc(
    nucleus: Nucleus, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], GreengrassCoreIPCClientV2]]:
    """Connect the SDK's V2 client as ``component``, configured only by its environment."""
    clients: list[GreengrassCoreIPCClientV2] = []

    def connect(component: str) -> GreengrassCoreIPCClientV2:
        env = nucleus.component_env(component)
        for name in ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID"):
            monkeypatch.setenv(name, env[name])
        client = GreengrassCoreIPCClientV2()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def _nucleus_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("nucleus-ipc")]


# -- raw event-stream client ----------------------------------------------------------
class RawClient:
    """A bare event-stream client over a Unix socket (for what the SDK never sends)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(str(path))
        self.decoder = FrameDecoder()
        self.pending: list[Message] = []

    def send(self, message_type: int, stream_id: int = 0, flags: int = 0, **kw: Any) -> None:
        headers = [
            Header.int32(":message-type", message_type),
            Header.int32(":message-flags", flags),
            Header.int32(":stream-id", stream_id),
            *kw.get("headers", []),
        ]
        self.sock.sendall(encode(headers, kw.get("payload", b"")))

    def connect(self, token: str) -> Message:
        self.send(
            4,
            headers=[Header.string(":version", "0.1.0")],
            payload=json.dumps({"authToken": token}).encode(),
        )
        return self.receive()

    def receive(self) -> Message:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    def closed_by_server(self) -> bool:
        """True once the server closed (EOF or reset); messages before that are skipped."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


# -- event-stream framing -------------------------------------------------------------
def test_eventstream_round_trips_every_header_type() -> None:
    """Every header type (0-9) and a payload survive encode -> decode unchanged."""
    ident = uuid.uuid4()
    headers = [
        Header("t", HeaderType.BOOL_TRUE, True),
        Header("f", HeaderType.BOOL_FALSE, False),
        Header("b", HeaderType.BYTE, -7),
        Header("s", HeaderType.INT16, -30000),
        Header("i", HeaderType.INT32, 2_000_000_000),
        Header("l", HeaderType.INT64, -(2**62)),
        Header("raw", HeaderType.BYTES, b"\x00\xff"),
        Header("str", HeaderType.STRING, "héllo"),
        Header("ts", HeaderType.TIMESTAMP, 1_790_000_000_123),
        Header("id", HeaderType.UUID, ident),
    ]
    message = decode(encode(headers, b"payload"))
    assert message.headers == headers
    assert message.payload == b"payload"
    assert message.get("STR") == "héllo"


def test_eventstream_frame_layout_matches_the_spec() -> None:
    """total/headers lengths and both CRC32s sit where the wire format puts them."""
    frame = encode([Header.string("a", "b")], b"xyz")
    total, headers_length, prelude_crc = struct.unpack(">III", frame[:12])
    assert total == len(frame) == 12 + headers_length + 3 + 4
    assert headers_length == 1 + 1 + 1 + 2 + 1
    assert prelude_crc == zlib.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == zlib.crc32(frame[:-4])


def test_eventstream_decoder_handles_split_and_coalesced_frames() -> None:
    """Frames fed one byte at a time, or several in one chunk, decode in order."""
    frames = [encode([Header.int32("n", i)], bytes([i]) * i) for i in range(5)]
    decoder = FrameDecoder()
    out: list[Message] = []
    for byte in b"".join(frames[:3]):
        out += decoder.feed(bytes([byte]))
    out += decoder.feed(b"".join(frames[3:]))
    assert [m.get("n") for m in out] == [0, 1, 2, 3, 4]
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda f: f[:-1] + bytes([f[-1] ^ 1]), id="message-crc"),
        pytest.param(lambda f: f[:9] + bytes([f[9] ^ 1]) + f[10:], id="prelude-crc"),
        pytest.param(lambda f: _with_prelude(f, total=8, headers=0), id="total-below-minimum"),
        pytest.param(
            lambda f: _with_prelude(f, total=len(f), headers=len(f)), id="headers-too-long"
        ),
        pytest.param(
            lambda f: _with_prelude(f, total=64 * 1024 * 1024, headers=0), id="frame-too-large"
        ),
        pytest.param(lambda f: _reframe(f, b"\x00"), id="empty-header-name"),
        pytest.param(lambda f: _reframe(f, b"\x01a\x0b"), id="unknown-header-type"),
        pytest.param(lambda f: _reframe(f, b"\x01a\x07\x00\x09ab"), id="truncated-string"),
    ],
)
def test_eventstream_decoder_rejects_malformed_frames(corrupt: Callable[[bytes], bytes]) -> None:
    """Bad CRCs, impossible lengths and bad header blocks raise EventStreamError."""
    frame = encode([Header.string("k", "v")], b"body")
    decoder = FrameDecoder()
    with pytest.raises(EventStreamError):
        decoder.feed(corrupt(frame))
    with pytest.raises(EventStreamError):
        decoder.feed(frame)  # a failed decoder stays failed


def _with_prelude(frame: bytes, *, total: int, headers: int) -> bytes:
    prelude = struct.pack(">II", total, headers)
    return prelude + struct.pack(">I", zlib.crc32(prelude)) + frame[12:]


def _reframe(frame: bytes, header_block: bytes) -> bytes:
    """A frame with valid CRCs around an arbitrary header block."""
    total = 12 + len(header_block) + 4
    prelude = struct.pack(">II", total, len(header_block))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + header_block
    return body + struct.pack(">I", zlib.crc32(body))


# -- IoT Core bus -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+/c", "a/x/c", True),
        ("+/+", "a/b", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("#", "$aws/things/x", False),
        ("+/things/x", "$aws/things/x", False),
        ("$aws/things/+/shadow/#", "$aws/things/x/shadow/update", True),
        ("a/+", "a/", True),
    ],
)
def test_bus_topic_matching_follows_mqtt(topic_filter: str, topic: str, expected: bool) -> None:
    """MQTT wildcard rules: + one level, # the rest (parent too), $-topics skip wildcards."""
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a/+b", "a/b+/c"])
def test_bus_rejects_invalid_filters(bad: str) -> None:
    """Wildcards that are not whole levels (or # not last) are invalid filters."""
    with pytest.raises(ValueError):
        validate_filter(bad)


def test_bus_delivers_records_and_unsubscribes(clock: VirtualClock) -> None:
    """Subscribers get matching messages; messages are recorded with world time and source."""
    bus = IoTCoreBus(clock)
    got: list[tuple[str, bytes]] = []
    handle = bus.subscribe("dt/+/telemetry", lambda t, p: got.append((t, p)))
    bus.publish("dt/a/telemetry", b"1", source="test")
    bus.publish("dt/a/other", b"2")
    assert bus.unsubscribe(handle) is True
    bus.publish("dt/b/telemetry", b"3")
    assert got == [("dt/a/telemetry", b"1")]
    assert next((m.topic, m.source, m.time) for m in bus.messages) == (
        "dt/a/telemetry",
        "test",
        clock.now(),
    )
    assert bus.unsubscribe(handle) is False
    with pytest.raises(ValueError):
        bus.publish("dt/+/telemetry", b"x")


def test_bus_retained_messages_reach_new_subscribers() -> None:
    """A retained message is delivered on subscribe; an empty retained payload clears it."""
    bus = IoTCoreBus()
    bus.publish("cfg/x", b"v1", retain=True)
    bus.publish("cfg/x", b"v2", retain=True)
    bus.publish("cfg/y", b"not retained")
    got: list[bytes] = []
    bus.subscribe("cfg/#", lambda t, p: got.append(p))
    assert got == [b"v2"]
    bus.publish("cfg/x", b"", retain=True)
    later: list[bytes] = []
    bus.subscribe("cfg/#", lambda t, p: later.append(p))
    assert later == []


def test_bus_wait_for_wakes_on_publish_from_another_thread() -> None:
    """wait_for blocks on a condition until a matching message arrives, else TimeoutError."""
    bus = IoTCoreBus()
    worker = threading.Thread(target=lambda: bus.publish("x/y", b"done"))
    worker.start()
    message = bus.wait_for(lambda m: m.topic == "x/y", WAIT)
    worker.join()
    assert message.payload == b"done"
    with pytest.raises(TimeoutError):
        bus.wait_for(lambda m: m.topic == "never", 0.05)


def test_bus_subscriber_errors_do_not_stop_delivery() -> None:
    """A callback that raises is logged; later subscribers still get the message."""
    bus = IoTCoreBus()
    got: list[bytes] = []

    def broken(topic: str, payload: bytes) -> None:
        raise RuntimeError("boom")

    bus.subscribe("t", broken)
    bus.subscribe("t", lambda t, p: got.append(p))
    bus.publish("t", b"ok")
    assert got == [b"ok"]


def test_world_has_an_iot_core_bus(world: World) -> None:
    """World exposes one IoTCoreBus on the world clock."""
    world.iotcore.publish("a/b", b"1")
    assert world.iotcore.messages[0].time == world.clock.now()


# -- authorization matching ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("resource", "requested", "expected"),
    [
        ("*", "anything/at/all", True),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+/c", "a/x/c", True),
        ("a/+/c", "a/+/c", True),
        ("a/+", "a/#", False),
        ("a/#", "a/+/c", True),
        ("a/#", "a/#", True),
        ("a/#", "a", True),
        ("a/b", "a/+", False),
        ("a/b/#", "a/c", False),
    ],
)
def test_mqtt_resource_matching(resource: str, requested: str, expected: bool) -> None:
    """Policy resources use MQTT wildcards; a requested filter needs a covering resource."""
    assert mqtt_resource_matches(resource, requested) is expected


# -- IPC ------------------------------------------------------------------------------
def test_component_env_has_what_greengrass_sets(nucleus: Nucleus, sock_dir: Path) -> None:
    """component_env gives the socket, a per-component SVCUID, thing, region and version."""
    env = nucleus.component_env(PUBLISHER, {"EXTRA": "1"})
    assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == str(sock_dir / "ipc.sock")
    assert env["SVCUID"] == nucleus.register_component(PUBLISHER)
    assert env["SVCUID"] != nucleus.register_component(READER)
    assert env["AWS_IOT_THING_NAME"] == THING
    assert env["AWS_REGION"] == "us-east-1"
    assert env["GGC_VERSION"] == NUCLEUS_VERSION
    assert env["EXTRA"] == "1"
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in env


def test_connect_with_the_component_svcuid(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], nucleus: Nucleus
) -> None:
    """The SDK client connects with SVCUID and the socket path from the environment."""
    client = ipc(PUBLISHER)
    assert client.get_configuration(key_path=["Interval"]).value == {"Interval": "30"}
    assert nucleus.connection_count == 1


def test_wrong_svcuid_is_access_denied(nucleus: Nucleus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CONNECT with an unknown SVCUID gets CONNECT_ACK without ACCEPTED: AccessDeniedError."""
    env = nucleus.component_env(PUBLISHER)
    monkeypatch.setenv(
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
        env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
    )
    monkeypatch.setenv("SVCUID", env["SVCUID"] + "-wrong")
    with pytest.raises(AccessDeniedError):
        GreengrassCoreIPCClientV2()
    assert nucleus.wait_for_connections(0, WAIT)


def test_publish_allowed_reaches_bus_and_published(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], nucleus: Nucleus, bus: IoTCoreBus
) -> None:
    """An allowed PublishToIoTCore ({iot:thingName} substituted) lands on the bus and in published."""
    client = ipc(PUBLISHER)
    client.publish_to_iot_core(topic_name=f"dt/{THING}/telemetry", qos="1", payload=b'{"t":1}')
    client.publish_to_iot_core(topic_name="status/x/health", qos="0", payload=b"ok")
    client.publish_to_iot_core(topic_name="logs/a/b/c", qos="1", payload=b"")
    message = bus.wait_for(lambda m: m.topic == f"dt/{THING}/telemetry", WAIT)
    assert (message.payload, message.qos, message.source) == (b'{"t":1}', 1, PUBLISHER)
    assert nucleus.published == [
        Published(PUBLISHER, f"dt/{THING}/telemetry", b'{"t":1}', 1),
        Published(PUBLISHER, "status/x/health", b"ok", 0),
        Published(PUBLISHER, "logs/a/b/c", b"", 1),
    ]


@pytest.mark.parametrize(
    ("component", "topic"),
    [
        (PUBLISHER, "dt/other-thing/telemetry"),
        (PUBLISHER, "status/x/y/health"),
        (PUBLISHER, "logsX/a"),
        (NO_ACL, "dt/edge-thing-1/telemetry"),
    ],
)
def test_publish_to_a_topic_not_allowed_is_unauthorized(
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
    nucleus: Nucleus,
    bus: IoTCoreBus,
    component: str,
    topic: str,
) -> None:
    """A publish outside the caller's mqttproxy policies fails with UnauthorizedError."""
    client = ipc(component)
    with pytest.raises(UnauthorizedError):
        client.publish_to_iot_core(topic_name=topic, qos="1", payload=b"x")
    assert nucleus.published == []
    assert bus.messages == []
    # The connection is still usable after the error.
    assert client.get_configuration().component_name == component


def test_subscribe_receives_bus_messages(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], bus: IoTCoreBus
) -> None:
    """SubscribeToIoTCore keeps the stream open and forwards matching bus messages."""
    client = ipc(PUBLISHER)
    events: queue.Queue[IoTCoreMessage] = queue.Queue()
    bus.publish(f"cmd/{THING}/retained", b"r", retain=True)
    _, operation = client.subscribe_to_iot_core(
        topic_name=f"cmd/{THING}/#", qos="1", on_stream_event=events.put
    )
    bus.publish(f"cmd/{THING}/reboot", b'{"now":true}')
    bus.publish("cmd/someone-else/reboot", b"no")
    first, second = events.get(timeout=WAIT), events.get(timeout=WAIT)
    assert (first.message.topic_name, first.message.payload) == (f"cmd/{THING}/retained", b"r")
    assert (second.message.topic_name, second.message.payload) == (
        f"cmd/{THING}/reboot",
        b'{"now":true}',
    )
    operation.close().result(WAIT)
    assert bus.wait_for_subscriptions(0, WAIT)
    bus.publish(f"cmd/{THING}/after", b"late")
    assert events.empty()


def test_subscribe_outside_policy_is_unauthorized(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], bus: IoTCoreBus
) -> None:
    """Subscribing wider than the policy (cmd/# vs cmd/{thing}/#) is UnauthorizedError."""
    client = ipc(PUBLISHER)
    with pytest.raises(UnauthorizedError):
        client.subscribe_to_iot_core(topic_name="cmd/#", qos="1", on_stream_event=print)
    _, operation = client.subscribe_to_iot_core(
        topic_name="fleet/+/notice", qos="0", on_stream_event=lambda e: None
    )
    assert bus.subscription_count == 1
    operation.close()


def test_get_configuration(ipc: Callable[[str], GreengrassCoreIPCClientV2]) -> None:
    """GetConfiguration returns the caller's config, a subtree, or {leaf: value}."""
    client = ipc(PUBLISHER)
    whole = client.get_configuration()
    assert whole.component_name == PUBLISHER
    assert whole.value == {"Interval": "30", "Model": {"Name": "m1", "Threshold": "0.5"}}
    assert client.get_configuration(key_path=["Model"]).value == {
        "Name": "m1",
        "Threshold": "0.5",
    }
    assert client.get_configuration(key_path=["Model", "Threshold"]).value == {"Threshold": "0.5"}
    with pytest.raises(ResourceNotFoundError):
        client.get_configuration(key_path=["Missing"])


def test_get_configuration_of_another_component_needs_config_policy(
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """Reading another component's config needs aws.greengrass.ipc.config for that component."""
    reader = ipc(READER)
    assert reader.get_configuration(component_name=PUBLISHER, key_path=["Interval"]).value == {
        "Interval": "30"
    }
    with pytest.raises(UnauthorizedError):
        reader.get_configuration(component_name=NO_ACL)
    with pytest.raises(UnauthorizedError):
        ipc(PUBLISHER).get_configuration(component_name=READER)


def test_subscribe_to_configuration_update_gets_an_event_after_a_change(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], host: StaticHost
) -> None:
    """A configuration change under the subscribed key path sends ConfigurationUpdateEvents."""
    client = ipc(PUBLISHER)
    events: queue.Queue[ConfigurationUpdateEvents] = queue.Queue()
    _, operation = client.subscribe_to_configuration_update(
        key_path=["Model"], on_stream_event=events.put
    )
    host.set_config(PUBLISHER, ["Interval"], "60")  # outside the key path: no event
    host.set_config(READER, ["Model"], "x")  # another component: no event
    host.set_config(PUBLISHER, ["Model", "Threshold"], "0.7")
    event = events.get(timeout=WAIT).configuration_update_event
    assert (event.component_name, event.key_path) == (PUBLISHER, ["Model", "Threshold"])
    assert events.empty()
    assert client.get_configuration(key_path=["Model", "Threshold"]).value == {"Threshold": "0.7"}
    operation.close()


def test_update_state_reaches_the_host(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], host: StaticHost
) -> None:
    """UpdateState is passed to ComponentHost.report_state for the calling component."""
    client = ipc(PUBLISHER)
    client.update_state(state="ERRORED")
    assert host.wait_for_report(PUBLISHER, "ERRORED", WAIT)
    client.update_state(state="RUNNING")
    assert host.reported == [(PUBLISHER, "ERRORED"), (PUBLISHER, "RUNNING")]


def _deploy_cli(host: StaticHost) -> None:
    host.add(ComponentInfo(CLI, "2.14.3", "RUNNING", {}, {"ComponentName": CLI}))


def test_list_components_and_get_component_details(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], host: StaticHost
) -> None:
    """With the Greengrass CLI deployed and a policy under aws.greengrass.Cli, ListComponents
    and GetComponentDetails report name, version, state and configuration."""
    _deploy_cli(host)
    client = ipc(READER)
    listed = {c.component_name: (c.version, c.state) for c in client.list_components().components}
    assert listed == {
        PUBLISHER: ("1.2.0", "RUNNING"),
        READER: ("0.1.0", "RUNNING"),
        NO_ACL: ("3.0.0", "FINISHED"),
        CLI: ("2.14.3", "RUNNING"),
    }
    details = client.get_component_details(component_name=NO_ACL).component_details
    assert (details.component_name, details.version, details.state, details.configuration) == (
        NO_ACL,
        "3.0.0",
        "FINISHED",
        {"a": "b"},
    )
    with pytest.raises(ResourceNotFoundError):
        client.get_component_details(component_name="com.example.Missing")


def test_cli_operations_without_a_cli_policy_are_unauthorized(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], host: StaticHost
) -> None:
    """CLI operations are authorized by accessControl under aws.greengrass.Cli: a caller
    without such a policy (even one allowed everything on MQTT) is UnauthorizedError,
    for its own component too, whether the CLI is deployed or not."""
    client = ipc(PUBLISHER)
    for deployed in (False, True):
        if deployed:
            _deploy_cli(host)
        with pytest.raises(UnauthorizedError):
            client.list_components()
        with pytest.raises(UnauthorizedError):
            client.get_component_details(component_name=PUBLISHER)
        with pytest.raises(UnauthorizedError):
            client.restart_component(component_name=PUBLISHER)


def test_cli_policy_resources_name_the_components(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], host: StaticHost
) -> None:
    """A GetComponentDetails policy whose resources name one component allows only that one."""
    _deploy_cli(host)
    acl = {
        CLI: {
            "own": {
                "operations": ["aws.greengrass#GetComponentDetails"],
                "resources": [NO_ACL],
            }
        }
    }
    narrow = "com.example.Narrow"
    host.add(ComponentInfo(narrow, "1.0.0", "RUNNING", {}, recipe_with_acl(narrow, acl)))
    client = ipc(narrow)
    assert client.get_component_details(component_name=NO_ACL).component_details.state == "FINISHED"
    with pytest.raises(UnauthorizedError):
        client.get_component_details(component_name=PUBLISHER)
    with pytest.raises(UnauthorizedError):
        client.list_components()


def test_cli_operations_without_the_cli_component_are_a_service_error(
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """An authorized caller on a device without aws.greengrass.Cli gets ServiceError: the
    operations exist only when the CLI component is deployed."""
    client = ipc(READER)
    with pytest.raises(ServiceError) as listed:
        client.list_components()
    assert CLI in str(listed.value.message)
    with pytest.raises(ServiceError):
        client.get_component_details(component_name=READER)


def test_raw_unknown_operation_is_a_service_error_and_ping_is_answered(
    nucleus: Nucleus,
) -> None:
    """An unknown operation gets APPLICATION_ERROR ServiceError; PING gets PING_RESPONSE."""
    raw = RawClient(nucleus.socket_path)
    try:
        assert raw.connect(nucleus.register_component(PUBLISHER)).get(":message-flags") == 1
        raw.send(2, payload=b"hb")
        pong = raw.receive()
        assert (pong.get(":message-type"), pong.payload) == (3, b"hb")
        raw.send(
            0,
            stream_id=1,
            headers=[
                Header.string("operation", "aws.greengrass#NoSuchThing"),
                Header.string(":content-type", "application/json"),
            ],
            payload=b"{}",
        )
        error = raw.receive()
        assert error.get(":message-type") == 1
        assert error.get(":message-flags") == 2
        assert error.get(":stream-id") == 1
        assert error.get("service-model-type") == "aws.greengrass#ServiceError"
        assert "NoSuchThing" in json.loads(error.payload)["message"]
    finally:
        raw.close()


def test_raw_bad_crc_closes_the_connection_and_the_server_keeps_serving(
    nucleus: Nucleus, ipc: Callable[[str], GreengrassCoreIPCClientV2], bus: IoTCoreBus
) -> None:
    """A frame with a bad CRC closes that connection; the next client is served normally."""
    raw = RawClient(nucleus.socket_path)
    assert raw.connect(nucleus.register_component(PUBLISHER)).get(":message-flags") == 1
    frame = bytearray(encode([Header.int32(":message-type", 2)], b"ping"))
    frame[-1] ^= 0xFF
    raw.sock.sendall(bytes(frame))
    assert raw.closed_by_server()
    raw.close()
    assert nucleus.wait_for_connections(0, WAIT)
    ipc(PUBLISHER).publish_to_iot_core(topic_name="logs/after", qos="1", payload=b"still here")
    assert bus.wait_for(lambda m: m.topic == "logs/after", WAIT).payload == b"still here"


def test_raw_message_before_connect_is_a_protocol_error(nucleus: Nucleus) -> None:
    """Anything but CONNECT first is answered with PROTOCOL_ERROR and the connection closed."""
    raw = RawClient(nucleus.socket_path)
    try:
        raw.send(2)
        assert raw.receive().get(":message-type") == 6
        assert raw.closed_by_server()
    finally:
        raw.close()


def test_many_messages_and_disconnects_leak_no_threads_or_fds(
    nucleus: Nucleus, ipc: Callable[[str], GreengrassCoreIPCClientV2], bus: IoTCoreBus
) -> None:
    """Hundreds of messages and dozens of connects/disconnects leave no server threads or fds."""
    client = ipc(READER)
    events: queue.Queue[IoTCoreMessage] = queue.Queue()
    client.subscribe_to_iot_core(topic_name="load/#", qos="1", on_stream_event=events.put)
    futures = [
        client.publish_to_iot_core_async(topic_name=f"load/{i}", qos="1", payload=str(i).encode())
        for i in range(300)
    ]
    for future in futures:
        future.result(WAIT)
    received = sorted(int(events.get(timeout=WAIT).message.payload) for _ in range(300))
    assert received == list(range(300))
    assert len(nucleus.published) == 300

    fds_before = len(os.listdir("/proc/self/fd"))
    threads_before = set(threading.enumerate())
    token = nucleus.register_component(PUBLISHER)
    for _ in range(40):
        raw = RawClient(nucleus.socket_path)
        raw.connect(token)
        raw.send(
            0,
            stream_id=1,
            headers=[
                Header.string("operation", "aws.greengrass#SubscribeToIoTCore"),
                Header.string(":content-type", "application/json"),
            ],
            payload=json.dumps({"topicName": f"cmd/{THING}/x", "qos": "0"}).encode(),
        )
        assert raw.receive().get("service-model-type") == (
            "aws.greengrass#SubscribeToIoTCoreResponse"
        )
        raw.close()  # disconnect with the subscription still open
    assert nucleus.wait_for_connections(1, WAIT)
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert bus.subscription_count == 1  # only the SDK client's
    for thread in set(threading.enumerate()) - threads_before:
        if thread.name.startswith("nucleus-ipc"):
            thread.join(WAIT)
            assert not thread.is_alive()
    assert len(_nucleus_threads()) == 2  # accept + the SDK client's connection


def test_stop_joins_threads_and_removes_the_socket(
    host: StaticHost, bus: IoTCoreBus, sock_dir: Path
) -> None:
    """stop() closes live connections, joins every thread and unlinks the socket file."""
    path = sock_dir / "stop.sock"
    server = Nucleus(host, bus, path).start()
    raw = RawClient(path)
    raw.connect(server.register_component(PUBLISHER))
    assert path.exists()
    server.stop()
    assert not path.exists()
    assert _nucleus_threads() == []
    assert raw.closed_by_server()
    raw.close()
    server.stop()  # idempotent


def test_socket_path_too_long_is_rejected(host: StaticHost, bus: IoTCoreBus) -> None:
    """AF_UNIX paths over 107 bytes are refused up front, not at bind time."""
    with pytest.raises(ValueError):
        Nucleus(host, bus, "/tmp/" + "x" * 120)


# -- token exchange service -------------------------------------------------------------
@pytest.fixture
def tes_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str, str], None]:
    """Isolate botocore from machine credentials; point it at a TES url and token."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # botocore waits 1 s (real time) between its 3 attempts on a refused fetch.
    monkeypatch.setattr(botocore.utils.ContainerMetadataFetcher, "SLEEP_TIME", 0)

    def point(url: str, token: str) -> None:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url)
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", token)

    return point


@pytest.fixture
def tes(world: World) -> Iterator[TokenExchangeService]:
    with TokenExchangeService(world) as service:
        yield service


def test_tes_gives_boto3_credentials_that_the_world_accepts(
    world: World, tes: TokenExchangeService, tes_env: Callable[[str, str], None]
) -> None:
    """boto3's container provider fetches ASIA credentials from the TES; World accepts them."""
    tes.register_token("component-token")
    tes_env(tes.url, "component-token")
    session = boto3.Session(region_name=world.region)
    credentials = session.get_credentials()
    assert credentials.method == "container-role"
    frozen = credentials.get_frozen_credentials()
    assert frozen.access_key.startswith("ASIA") and frozen.token
    assert tes.issued == 1
    iot = attach(session.client("iot", endpoint_url=INTERNAL_ENDPOINT), world)
    assert iot.list_things()["things"] == []
    assert world.calls.calls[-1].access_key == frozen.access_key


def test_tes_credentials_are_refreshed_by_botocore(
    world: World, tes_env: Callable[[str, str], None]
) -> None:
    """With a lifetime inside botocore's advisory window (15 min) but outside its mandatory
    one (10 min), the next use of the credentials refreshes them from the TES."""
    with TokenExchangeService(world, ttl_seconds=12 * 60) as tes:
        tes.register_token("tok")
        tes_env(tes.url, "tok")
        credentials = boto3.Session(region_name=world.region).get_credentials()
        assert tes.issued == 1  # the initial load
        refreshed = credentials.get_frozen_credentials()
        assert tes.issued == 2  # refreshed on first use, before anything is signed
        assert refreshed.access_key.startswith("ASIA")
        assert world.credentials.check(refreshed.access_key) is None


def test_tes_wrong_token_is_a_credential_error(
    world: World, tes: TokenExchangeService, tes_env: Callable[[str, str], None]
) -> None:
    """An Authorization token the TES does not know: 403, and botocore fails to get credentials."""
    tes.register_token("right")
    tes_env(tes.url, "wrong")
    with pytest.raises(CredentialRetrievalError):
        boto3.Session(region_name=world.region).get_credentials()
    assert tes.issued == 0


def test_tes_http_answers(tes: TokenExchangeService) -> None:
    """No Authorization header -> 403; another path -> 404; a good token -> 200 JSON."""
    tes.register_token("t1")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(tes.url, timeout=WAIT)
    assert denied.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(tes.url.replace("credentialprovider", "other"), timeout=WAIT)
    assert missing.value.code == 404
    request = urllib.request.Request(tes.url, headers={"Authorization": "t1"})
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        body = json.loads(response.read())
    assert set(body) == {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
    assert body["Expiration"].endswith("Z")


def test_expired_temporary_key_is_rejected_by_the_world(
    world: World,
    clock: VirtualClock,
    tes: TokenExchangeService,
    tes_env: Callable[[str, str], None],
) -> None:
    """After the TES lifetime passes on the world clock, World answers 403 ExpiredTokenException."""
    tes.register_token("tok")
    tes_env(tes.url, "tok")
    session = boto3.Session(region_name=world.region)
    iot = attach(session.client("iot", endpoint_url=INTERNAL_ENDPOINT), world)
    iot.list_things()
    clock.advance(tes.ttl_seconds + 1)
    with pytest.raises(ClientError) as expired:
        iot.list_things()
    assert expired.value.response["Error"]["Code"] == "ExpiredTokenException"
    assert expired.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unknown_temporary_key_is_unrecognized_and_long_term_keys_pass(world: World) -> None:
    """An ASIA key the world never issued -> UnrecognizedClientException; AKIA keys pass."""

    def call(access_key: str) -> int:
        auth = (
            f"AWS4-HMAC-SHA256 Credential={access_key}/20260101/us-east-1/iot/aws4_request, "
            "SignedHeaders=host, Signature=00"
        )
        request = Request("GET", "/things", {}, Headers({"Authorization": auth}), b"")
        response = world.dispatch(request)
        if response.status == 403:
            assert json.loads(response.body)["__type"] == "UnrecognizedClientException"
        return response.status

    assert call("ASIAXXXXXXXXXXXXXXXX") == 403
    assert call("AKIDLOCALCLOUD") == 200


# -- with the simulated core device ---------------------------------------------------------
APP = "com.example.App"


def test_nucleus_serves_a_component_deployed_to_the_core_device(
    world: World, clock: VirtualClock, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A component deployed through the Greengrass emulator talks IPC to its CoreDevice:
    recipe accessControl authorizes MQTT, GetConfiguration reads the deployed config, a
    configuration-update deployment raises an event, UpdateState changes its state."""
    gg = world_client(world, "greengrassv2")
    app_recipe = recipe_with_acl(APP, mqtt_acl(publish=["dt/{iot:thingName}/#"]))
    app_recipe["ComponentConfiguration"]["DefaultConfiguration"]["Interval"] = "30"
    app_recipe["Manifests"] = [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "run"}}]
    gg.create_component_version(inlineRecipe=json.dumps(app_recipe).encode())
    device = world.greengrass.add_core_device(THING)
    target = world.arn("iot", f"thing/{THING}")

    def deploy(components: dict[str, Any]) -> None:
        gg.create_deployment(targetArn=target, components=components)
        clock.advance(world.greengrass.install_seconds + 1)
        world.tick()

    deploy({APP: {"componentVersion": "1.0.0"}})
    assert device.states([APP]) == {APP: "RUNNING"}

    with Nucleus(device, world.iotcore, sock_dir / "dev.sock") as server:
        env = server.component_env(APP)
        monkeypatch.setenv("SVCUID", env["SVCUID"])
        monkeypatch.setenv(
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
            env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
        )
        client = GreengrassCoreIPCClientV2()
        try:
            client.publish_to_iot_core(topic_name=f"dt/{THING}/a", qos="1", payload=b"hello")
            assert world.iotcore.wait_for(lambda m: m.topic == f"dt/{THING}/a", WAIT)
            with pytest.raises(UnauthorizedError):
                client.publish_to_iot_core(topic_name="dt/other/a", qos="1", payload=b"x")
            assert client.get_configuration(key_path=["Interval"]).value == {"Interval": "30"}

            events: queue.Queue[ConfigurationUpdateEvents] = queue.Queue()
            client.subscribe_to_configuration_update(on_stream_event=events.put)
            update = {"merge": json.dumps({"Interval": "5"})}
            deploy({APP: {"componentVersion": "1.0.0", "configurationUpdate": update}})
            event = events.get(timeout=WAIT).configuration_update_event
            assert (event.component_name, event.key_path) == (APP, ["Interval"])
            assert client.get_configuration(key_path=["Interval"]).value == {"Interval": "5"}

            client.update_state(state="ERRORED")
            assert device.states([APP]) == {APP: "ERRORED"}
        finally:
            client.close()


def test_payload_base64_is_what_the_wire_carries(nucleus: Nucleus, bus: IoTCoreBus) -> None:
    """On the wire, PublishToIoTCore payloads are base64 in JSON; bad base64 is rejected."""
    raw = RawClient(nucleus.socket_path)
    try:
        raw.connect(nucleus.register_component(PUBLISHER))
        for stream_id, payload in ((1, base64.b64encode(b"\x00\x01").decode()), (3, "%%%")):
            raw.send(
                0,
                stream_id=stream_id,
                headers=[
                    Header.string("operation", "aws.greengrass#PublishToIoTCore"),
                    Header.string(":content-type", "application/json"),
                ],
                payload=json.dumps(
                    {"topicName": "logs/bin", "qos": "1", "payload": payload}
                ).encode(),
            )
        ok, bad = raw.receive(), raw.receive()
        assert ok.get("service-model-type") == "aws.greengrass#PublishToIoTCoreResponse"
        assert bad.get("service-model-type") == "aws.greengrass#InvalidArgumentsError"
        assert bus.messages[0].payload == b"\x00\x01"
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("request_body", "error"),
    [
        ({"topicName": "logs/x", "qos": "1"}, "Payload is required"),
        ({"topicName": "logs/x", "payload": ""}, "QoS is required"),
        ({"topicName": "logs/x", "qos": 1, "payload": ""}, "Invalid QoS value: 1"),
        ({"topicName": "logs/x", "qos": "1", "payload": "", "retain": "true"}, "retain must be a boolean"),
        ({"topicName": "dt/other/x", "qos": "1"}, "not authorized"),
    ],
)
def test_publish_requests_are_checked_as_the_real_nucleus_does(
    nucleus: Nucleus, bus: IoTCoreBus, request_body: dict[str, Any], error: str
) -> None:
    """PublishToIoTCore needs payload and QoS (no defaults), takes retain only as a JSON
    boolean, and authorizes the topic before it looks at the payload: each bad request
    is refused with the rule and nothing reaches the bus."""
    raw = RawClient(nucleus.socket_path)
    try:
        raw.connect(nucleus.register_component(PUBLISHER))
        raw.send(
            0,
            stream_id=1,
            headers=[
                Header.string("operation", "aws.greengrass#PublishToIoTCore"),
                Header.string(":content-type", "application/json"),
            ],
            payload=json.dumps(request_body).encode(),
        )
        answer = raw.receive()
        assert answer.get("service-model-type") in (
            "aws.greengrass#InvalidArgumentsError",
            "aws.greengrass#UnauthorizedError",
        )
        assert error in json.loads(answer.payload)["message"]
        assert bus.messages == []
    finally:
        raw.close()


def test_retained_publish_is_kept_for_a_later_subscriber(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], bus: IoTCoreBus
) -> None:
    """PublishToIoTCore with retain=True is kept by IoT Core for its topic and handed to
    a client that subscribes afterwards; retain=False is delivered but not kept."""
    client = ipc(PUBLISHER)
    client.publish_to_iot_core(topic_name="logs/kept", qos="1", payload=b"kept", retain=True)
    client.publish_to_iot_core(topic_name="logs/passing", qos="1", payload=b"gone", retain=False)
    late: queue.Queue[tuple[str, bytes]] = queue.Queue()
    bus.subscribe("logs/#", lambda topic, payload: late.put((topic, payload)))
    assert late.get(timeout=WAIT) == ("logs/kept", b"kept")
    assert late.empty()
    assert [m.retain for m in bus.messages] == [True, False]


def test_a_subscription_covered_by_an_open_one_gets_no_retained_messages(
    ipc: Callable[[str], GreengrassCoreIPCClientV2], bus: IoTCoreBus
) -> None:
    """The nucleus subscribes to IoT Core once per filter: while cmd/{thing}/# is open,
    subscribing to cmd/{thing}/# again (or anything under it) gets live messages but not
    the retained one; once the covering stream is closed, a new subscription gets it."""
    bus.publish(f"cmd/{THING}/kept", b"kept", retain=True)
    first: queue.Queue[IoTCoreMessage] = queue.Queue()
    second: queue.Queue[IoTCoreMessage] = queue.Queue()
    client = ipc(PUBLISHER)
    _, covering = client.subscribe_to_iot_core(
        topic_name=f"cmd/{THING}/#", qos="1", on_stream_event=first.put
    )
    assert first.get(timeout=WAIT).message.payload == b"kept"
    _, covered = client.subscribe_to_iot_core(
        topic_name=f"cmd/{THING}/#", qos="1", on_stream_event=second.put
    )
    bus.publish(f"cmd/{THING}/live", b"live")
    assert second.get(timeout=WAIT).message.payload == b"live"
    assert first.get(timeout=WAIT).message.payload == b"live"
    covering.close().result(WAIT)
    covered.close().result(WAIT)
    assert bus.wait_for_subscriptions(0, WAIT)

    third: queue.Queue[IoTCoreMessage] = queue.Queue()
    _, fresh = client.subscribe_to_iot_core(
        topic_name=f"cmd/{THING}/#", qos="1", on_stream_event=third.put
    )
    assert third.get(timeout=WAIT).message.payload == b"kept"
    fresh.close()
