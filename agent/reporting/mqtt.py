"""Direct MQTT5 transport: mutual TLS to AWS IoT Core (or any MQTT5 broker) with awscrt.

The agent imports this module only when it talks MQTT itself instead of through the
Greengrass nucleus, so awscrt/awsiot are imported here and nowhere else.

Behaviour worth knowing:

* ``connect`` returns once the broker sent a successful CONNACK. It raises
  ``TransportError`` on the first failed attempt (bad CA, rejected client certificate,
  refused connection) or when ``timeout`` passes, and leaves nothing running behind. Once
  connected, awscrt reconnects by itself with exponential back-off and full jitter
  (``reconnect_min_seconds``/``reconnect_max_seconds``); ``connect_timeout`` bounds each
  attempt (TCP connect, then CONNACK).
* Sessions: the first CONNECT asks for a clean session; every reconnect sets clean start
  False with ``session_expiry`` so the broker keeps the QoS 1 subscriptions across a
  network outage. When the broker did not resume the session (it restarted, or the
  session expired), every subscription is sent again before the transport reports
  itself connected.
* ``publish`` refuses at once when disconnected, and otherwise waits for the PUBACK. A
  publish that timed out may still be delivered later by awscrt (it retransmits unacked
  QoS 1 publishes after a reconnect): delivery is at least once, never exactly once.
* SDK metrics are not put into the CONNECT username (they break username-based ACLs).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awscrt import io, mqtt5
from awsiot import mqtt5_client_builder

from agent.errors import ConfigurationError, TransportError
from agent.reporting.transport import MessageHandler

_log = logging.getLogger(__name__)

#: MQTT5 reason codes below this value mean success (PUBACK, SUBACK).
_FIRST_FAILURE_REASON_CODE = 0x80


@dataclass(frozen=True)
class DirectMqttConfig:
    """Settings of a direct MQTT5 connection with mutual TLS.

    ``setting_prefix`` is only used in error messages, so that a ConfigurationError names
    the setting the operator has to fix (e.g. ``reporting.mqtt.cert_path``).
    """

    endpoint: str
    client_id: str
    cert_path: str | Path
    key_path: str | Path
    ca_path: str | Path
    port: int = 8883
    #: Seconds the broker keeps our session (and its subscriptions) after a disconnect.
    session_expiry: int = 3600
    keep_alive: int = 60
    #: Seconds one connection attempt (TCP connect, then CONNACK) may take, also on reconnects.
    connect_timeout: float = 10.0
    #: Reconnect back-off bounds, in seconds (exponential, full jitter).
    reconnect_min_seconds: float = 1.0
    reconnect_max_seconds: float = 120.0
    #: Seconds awscrt waits for a PUBACK/SUBACK before failing the operation itself.
    ack_timeout: int = 30
    #: Seconds ``close`` waits for the client to report it has stopped.
    close_timeout: float = 5.0
    setting_prefix: str = "reporting.mqtt"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT ``topic_filter`` (``+`` and ``#`` wildcards)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # wildcards at the first level never match $-topics
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


def _check_readable(path: str | Path, setting: str, what: str) -> str:
    """Return ``path`` as a string, or raise ConfigurationError naming ``setting``."""
    text = os.fspath(path)
    if not text:
        raise ConfigurationError(f"{setting}: no {what} file given")
    candidate = Path(text)
    if not candidate.is_file():
        raise ConfigurationError(f"{setting}: {what} file not found: {text}")
    try:
        with candidate.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigurationError(f"{setting}: {what} file not readable: {text} ({exc})") from exc
    return text


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    name = getattr(exc, "name", None)
    message = getattr(exc, "message", None) or str(exc)
    return f"{name}: {message}" if name else f"{type(exc).__name__}: {message}"


class DirectMqttTransport:
    """MQTT5 over mutual TLS with QoS 1 acknowledgements, automatic reconnect and resubscribe."""

    supports_retain = True

    def __init__(self, config: DirectMqttConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._client: Any = None
        #: Set by the current client's "stopped" lifecycle event.
        self._stopped = threading.Event()
        #: Counts clients built; callbacks of an older client are ignored.
        self._generation = 0
        self._connected = False
        self._failures = 0
        self._last_failure: BaseException | None = None
        self._subscriptions: dict[str, MessageHandler] = {}
        #: Clients stopped without waiting, kept referenced until they report "stopped".
        self._retired: list[tuple[Any, threading.Event]] = []

    # -- Transport --------------------------------------------------------------------

    def connect(self, timeout: float) -> None:
        """Connect; raise TransportError on the first failed attempt or after ``timeout``.

        Raises ConfigurationError when a certificate, key or CA file is missing or unusable.
        On a transport that was connected and is now reconnecting by itself, connect only
        waits (keeping the session); TransportError if it is still down after ``timeout``.
        """
        with self._lock:
            running = self._client is not None
        if running:
            if self._wait_for_state(True, timeout):
                return
            raise TransportError(f"MQTT still reconnecting after {timeout:g} s")
        with self._lock:
            self._generation += 1
            generation = self._generation
            stopped = threading.Event()
        client = self._build_client(generation, stopped)
        with self._lock:
            self._client = client
            self._stopped = stopped
            self._failures = 0
            self._last_failure = None
        try:
            client.start()
        except Exception as exc:
            self._shutdown()
            raise TransportError(f"MQTT client did not start: {_describe(exc)}") from exc
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._connected and self._failures == 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            connected = self._connected
            failure = self._last_failure
            failed = self._failures > 0
        if connected:
            return
        # No waiting here: after a certificate verification failure s2n holds the socket
        # for 10-30 s ("blinding"), and the caller asked for a bounded connect.
        self._shutdown(wait=False)
        where = f"{self._config.endpoint}:{self._config.port}"
        if failed:
            raise TransportError(
                f"MQTT connection to {where} failed: {_describe(failure)}"
            ) from failure
        raise TransportError(f"MQTT connection to {where} not established within {timeout:g} s")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        """Publish at QoS 1 and wait for a successful PUBACK."""
        client = self._require_connected("publish")
        packet = mqtt5.PublishPacket(
            topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=retain
        )
        try:
            future = client.publish(packet)
            result = future.result(timeout)
        except FutureTimeoutError as exc:
            raise TransportError(f"no PUBACK for {topic} within {timeout:g} s") from exc
        except Exception as exc:
            raise TransportError(f"publish to {topic} failed: {_describe(exc)}") from exc
        puback = getattr(result, "puback", None)
        code = getattr(puback, "reason_code", None)
        if code is None or int(code) >= _FIRST_FAILURE_REASON_CODE:
            reason = getattr(puback, "reason_string", None)
            raise TransportError(
                f"publish to {topic} refused by the broker: {_reason_name(code)}"
                + (f" ({reason})" if reason else "")
            )

    def subscribe(self, topic: str, handler: MessageHandler, *, timeout: float) -> None:
        """Subscribe at QoS 1; the subscription is renewed after a reconnect without session."""
        client = self._require_connected("subscribe")
        with self._lock:
            previous = self._subscriptions.get(topic)
            self._subscriptions[topic] = handler
        try:
            suback = client.subscribe(self._subscribe_packet([topic])).result(timeout)
        except FutureTimeoutError as exc:
            self._restore_subscription(topic, previous)
            raise TransportError(f"no SUBACK for {topic} within {timeout:g} s") from exc
        except Exception as exc:
            self._restore_subscription(topic, previous)
            raise TransportError(f"subscribe to {topic} failed: {_describe(exc)}") from exc
        codes = list(getattr(suback, "reason_codes", None) or [])
        if not codes or any(c is None or int(c) >= _FIRST_FAILURE_REASON_CODE for c in codes):
            self._restore_subscription(topic, previous)
            raise TransportError(
                f"subscribe to {topic} refused by the broker: "
                + ", ".join(_reason_name(c) for c in codes)
            )

    def is_connected(self) -> bool:
        with self._lock:
            return self._connected

    def close(self) -> None:
        """Stop the client and wait (bounded) until it has stopped. Idempotent."""
        self._shutdown()

    # -- extras -----------------------------------------------------------------------

    def wait_until_connected(self, timeout: float) -> bool:
        """Block until connected (e.g. after an automatic reconnect); False after ``timeout``."""
        return self._wait_for_state(True, timeout)

    def wait_until_disconnected(self, timeout: float) -> bool:
        """Block until the connection is known to be down; False after ``timeout``."""
        return self._wait_for_state(False, timeout)

    def _wait_for_state(self, connected: bool, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._connected != connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._client is None:
                    return self._connected == connected
                self._changed.wait(remaining)
            return True

    def __enter__(self) -> DirectMqttTransport:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _build_client(self, generation: int, stopped: threading.Event) -> Any:
        config = self._config
        prefix = config.setting_prefix
        low, high = config.reconnect_min_seconds, config.reconnect_max_seconds
        if low <= 0 or high < low:
            raise ConfigurationError(
                f"{prefix}.reconnect_min_seconds/reconnect_max_seconds: need 0 < min <= max, "
                f"got {low:g} and {high:g}"
            )
        if config.connect_timeout <= 0:
            raise ConfigurationError(f"{prefix}.connect_timeout: must be > 0")
        attempt_ms = max(1, int(config.connect_timeout * 1000))
        socket_options = io.SocketOptions()
        socket_options.connect_timeout_ms = attempt_ms
        return self._new_client(
            dict(
                endpoint=config.endpoint,
                port=config.port,
                client_id=config.client_id,
                enable_metrics_collection=False,
                session_behavior=mqtt5.ClientSessionBehaviorType.REJOIN_POST_SUCCESS,
                session_expiry_interval_sec=config.session_expiry,
                keep_alive_interval_sec=config.keep_alive,
                retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.FULL,
                min_reconnect_delay_ms=max(1, int(low * 1000)),
                max_reconnect_delay_ms=max(1, int(high * 1000)),
                socket_options=socket_options,
                connack_timeout_ms=attempt_ms,
                ack_timeout_sec=config.ack_timeout,
                offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
                on_publish_received=self._on_publish_received,
                on_lifecycle_connection_success=lambda d: self._on_connection_success(
                    generation, d
                ),
                on_lifecycle_connection_failure=lambda d: self._on_connection_failure(
                    generation, d
                ),
                on_lifecycle_disconnection=lambda d: self._on_disconnection(generation, d),
                on_lifecycle_stopped=lambda _d: stopped.set(),
            )
        )

    def _new_client(self, options: dict[str, Any]) -> Any:
        """The awscrt client with mutual TLS; ``options`` are the builder's common arguments."""
        prefix = self._config.setting_prefix
        cert = _check_readable(self._config.cert_path, f"{prefix}.cert_path", "client certificate")
        key = _check_readable(self._config.key_path, f"{prefix}.key_path", "private key")
        ca = _check_readable(self._config.ca_path, f"{prefix}.ca_path", "CA certificate")
        try:
            return mqtt5_client_builder.mtls_from_path(
                cert_filepath=cert, pri_key_filepath=key, ca_filepath=ca, **options
            )
        except Exception as exc:
            raise ConfigurationError(
                f"{prefix}.cert_path/{prefix}.key_path/{prefix}.ca_path: "
                f"cannot load TLS material: {_describe(exc)}"
            ) from exc

    def _require_connected(self, operation: str) -> Any:
        with self._lock:
            if self._client is None or not self._connected:
                raise TransportError(f"cannot {operation}: MQTT not connected")
            return self._client

    def _restore_subscription(self, topic: str, previous: MessageHandler | None) -> None:
        with self._lock:
            if previous is None:
                self._subscriptions.pop(topic, None)
            else:
                self._subscriptions[topic] = previous

    @staticmethod
    def _subscribe_packet(topics: list[str]) -> Any:
        return mqtt5.SubscribePacket(
            subscriptions=[
                mqtt5.Subscription(topic_filter=t, qos=mqtt5.QoS.AT_LEAST_ONCE) for t in topics
            ]
        )

    def _shutdown(self, *, wait: bool = True) -> None:
        with self._lock:
            client = self._client
            stopped = self._stopped
            self._client = None
            self._generation += 1  # late callbacks of this client are ignored from now on
            self._connected = False
            self._changed.notify_all()
            self._retired = [(c, e) for c, e in self._retired if not e.is_set()]
        if client is None:
            return
        try:
            client.stop()
        except Exception as exc:  # stopping is best effort; the client is dropped anyway
            _log.warning("mqtt client stop failed: %s", _describe(exc))
            return
        if not wait:
            with self._lock:
                self._retired.append((client, stopped))
        elif not stopped.wait(self._config.close_timeout):
            _log.warning("mqtt client did not stop within %gs", self._config.close_timeout)

    # -- awscrt callbacks (event-loop thread: never block, never raise) ----------------

    def _on_connection_success(self, generation: int, data: Any) -> None:
        settings = getattr(data, "negotiated_settings", None)
        resumed = bool(getattr(settings, "rejoined_session", False))
        with self._lock:
            if generation != self._generation:
                return
            client = self._client
            topics = list(self._subscriptions)
        if client is not None and topics and not resumed:
            # Queued ahead of anything published after we report "connected".
            for start in range(0, len(topics), 8):  # IoT Core: at most 8 per SUBSCRIBE
                batch = topics[start : start + 8]
                try:
                    future = client.subscribe(self._subscribe_packet(batch))
                except Exception as exc:
                    _log.warning("mqtt resubscribe %s failed: %s", batch, _describe(exc))
                    continue
                future.add_done_callback(_resubscribe_logger(batch))
        with self._changed:
            if generation == self._generation:
                self._connected = True
            self._changed.notify_all()
        _log.info("mqtt connected (session resumed: %s)", resumed)

    def _on_connection_failure(self, generation: int, data: Any) -> None:
        exc = getattr(data, "exception", None)
        with self._changed:
            if generation != self._generation:
                return
            self._failures += 1
            self._last_failure = exc if isinstance(exc, BaseException) else None
            self._connected = False
            self._changed.notify_all()
        _log.info("mqtt connection attempt failed: %s", _describe(exc))

    def _on_disconnection(self, generation: int, data: Any) -> None:
        with self._changed:
            if generation != self._generation:
                return
            self._connected = False
            self._changed.notify_all()
        _log.info("mqtt disconnected: %s", _describe(getattr(data, "exception", None)))

    def _on_publish_received(self, data: Any) -> None:
        packet = data.publish_packet
        topic = str(packet.topic)
        payload = packet.payload
        body = bytes(payload) if payload is not None else b""
        with self._lock:
            handlers = [h for f, h in self._subscriptions.items() if topic_matches(f, topic)]
        for handler in handlers:
            try:
                handler(topic, body)
            except Exception:  # a handler must not raise; never let it reach awscrt
                _log.exception("mqtt message handler failed for %s", topic)


def _reason_name(code: Any) -> str:
    if code is None:
        return "no reason code"
    name = getattr(code, "name", None)
    return f"{name} ({int(code)})" if name else str(code)


def _resubscribe_logger(topics: list[str]) -> Callable[[Any], None]:
    def done(future: Any) -> None:
        try:
            suback = future.result()
        except Exception as exc:
            _log.warning("mqtt resubscribe %s failed: %s", topics, _describe(exc))
            return
        codes = list(getattr(suback, "reason_codes", None) or [])
        if any(c is None or int(c) >= _FIRST_FAILURE_REASON_CODE for c in codes):
            _log.warning("mqtt resubscribe %s refused: %s", topics, codes)

    return done
