"""MQTT test helpers around the local world's Mosquitto broker (``localcloud.mosquitto``).

* ``MessageCollector`` is an independent subscriber (a bare awscrt MQTT5 client, not the
  transport under test) that records every message it receives.
* ``TcpProxy`` cuts the network between a client and the broker without stopping it.

The broker and its certificates (``MosquittoBroker``, ``Pki``) live in
``localcloud.mosquitto``, where ``python -m localcloud serve --devices`` uses them too.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localcloud.mosquitto import (
    HOST,
    BrokerError,
    Credentials,
    MosquittoBroker,
    Pki,
    find_mosquitto,
    free_port,
)

__all__ = [
    "HOST",
    "BrokerError",
    "Credentials",
    "Message",
    "MessageCollector",
    "MosquittoBroker",
    "Pki",
    "TcpProxy",
    "find_mosquitto",
    "free_port",
]


# -- an independent subscriber ---------------------------------------------------------


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class MessageCollector:
    """A bare awscrt MQTT5 client that subscribes to a filter and records what arrives."""

    def __init__(
        self,
        broker: MosquittoBroker,
        credentials: Credentials,
        *,
        client_id: str,
        topic_filter: str = "#",
    ) -> None:
        from awscrt import mqtt5
        from awsiot import mqtt5_client_builder

        self._mqtt5 = mqtt5
        self.topic_filter = topic_filter
        self._messages: list[Message] = []
        self._changed = threading.Condition()
        self._connected = False
        self._stopped = threading.Event()
        self._client: Any = mqtt5_client_builder.mtls_from_path(
            endpoint=broker.host,
            port=broker.port,
            cert_filepath=str(credentials.cert_path),
            pri_key_filepath=str(credentials.key_path),
            ca_filepath=str(broker.pki.ca_path),
            client_id=client_id,
            enable_metrics_collection=False,
            on_publish_received=self._on_publish,
            on_lifecycle_connection_success=self._on_connected,
            on_lifecycle_stopped=lambda _data: self._stopped.set(),
        )

    def start(self, timeout: float = 5.0) -> MessageCollector:
        """Connect and subscribe (QoS 1); return once the broker acknowledged it."""
        self._client.start()
        with self._changed:
            if not self._changed.wait_for(lambda: self._connected, timeout):
                self._client.stop()
                raise BrokerError("collector did not connect")
        packet = self._mqtt5.SubscribePacket(
            subscriptions=[
                self._mqtt5.Subscription(
                    topic_filter=self.topic_filter, qos=self._mqtt5.QoS.AT_LEAST_ONCE
                )
            ]
        )
        suback = self._client.subscribe(packet).result(timeout)
        if any(int(code) >= 0x80 for code in suback.reason_codes):
            raise BrokerError(f"collector subscription refused: {suback.reason_codes}")
        return self

    def stop(self) -> None:
        self._client.stop()
        self._stopped.wait(5.0)

    def __enter__(self) -> MessageCollector:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Message]:
        with self._changed:
            return list(self._messages)

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 5.0) -> Message:
        """The first message matching ``predicate``; AssertionError after ``timeout``."""
        found: list[Message] = []

        def match() -> bool:
            found[:] = [m for m in self._messages if predicate(m)][:1]
            return bool(found)

        with self._changed:
            if not self._changed.wait_for(match, timeout):
                seen = [(m.topic, m.payload[:60]) for m in self._messages]
                raise AssertionError(f"no matching message within {timeout:g} s; got {seen}")
        return found[0]

    def _on_connected(self, _data: Any) -> None:
        with self._changed:
            self._connected = True
            self._changed.notify_all()

    def _on_publish(self, data: Any) -> None:
        packet = data.publish_packet
        message = Message(
            topic=str(packet.topic),
            payload=bytes(packet.payload or b""),
            retain=bool(packet.retain),
        )
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()


# -- a TCP proxy to cut the network without stopping the broker --------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to an upstream port; ``block()`` cuts every connection
    and refuses new ones until ``unblock()``, like a network outage the broker survives."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._blocked = False
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    def block(self) -> None:
        with self._lock:
            self._blocked = True
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _hard_close(sock)

    def unblock(self) -> None:
        with self._lock:
            self._blocked = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.block()
        _hard_close(self._listener)
        self._acceptor.join(5.0)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._blocked or self._closed
            if refuse:
                _hard_close(downstream)
                continue
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=5.0)
                upstream.settimeout(None)
            except OSError:
                _hard_close(downstream)
                continue
            with self._lock:
                self._sockets.update((downstream, upstream))
            for source, target in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(
                    target=self._pump, args=(source, target), name="tcp-proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(target)
            _hard_close(source)
            _hard_close(target)


def _hard_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
