"""An in-process stand-in for the AWS IoT Core message broker.

Topics and filters follow MQTT 3.1.1/5 rules: ``+`` matches one level, ``#`` (last
level only) matches the parent level and everything below it, and a filter starting
with a wildcard does not match topics that start with ``$`` (``$aws/...``). Retained
messages are kept per topic and handed to new matching subscribers; a retained
message with an empty payload clears the topic's retained message.

Callbacks run on the publisher's thread, after the bus lock is released, in
subscription order. A callback that raises is logged and does not stop delivery.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from localcloud.clock import Clock, RealClock

logger = logging.getLogger(__name__)

#: Called with (topic, payload) for every matching message.
MessageCallback = Callable[[str, bytes], None]

MAX_TOPIC_BYTES = 65535


@dataclass(frozen=True)
class BusMessage:
    """One message published on the bus."""

    time: float
    topic: str
    payload: bytes
    qos: int
    retain: bool
    source: str


@dataclass(frozen=True)
class SubscriptionHandle:
    """What :meth:`IoTCoreBus.subscribe` returns; pass it to ``unsubscribe``."""

    id: int
    topic_filter: str


def validate_topic(topic: str) -> None:
    """Raise ValueError unless ``topic`` is a valid MQTT topic name to publish to."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty string")
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise ValueError("topic is too long")
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"topic {topic!r} must not contain wildcards or NUL")


def validate_filter(topic_filter: str) -> None:
    """Raise ValueError unless ``topic_filter`` is a valid MQTT topic filter."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise ValueError("topic filter must be a non-empty string")
    if len(topic_filter.encode()) > MAX_TOPIC_BYTES or "\x00" in topic_filter:
        raise ValueError("topic filter is too long or contains NUL")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"'#' must be a whole last level in {topic_filter!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level in {topic_filter!r}")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True if the MQTT ``topic_filter`` matches the concrete ``topic``."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    if topic.startswith("$") and filter_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


class IoTCoreBus:
    """Publish/subscribe with MQTT topic semantics, recorded for tests. Thread-safe."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or RealClock()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._subscriptions: dict[int, tuple[str, MessageCallback]] = {}
        self._retained: dict[str, BusMessage] = {}
        self._messages: list[BusMessage] = []

    # -- publishing -----------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        source: str = "",
    ) -> BusMessage:
        """Deliver ``payload`` to every subscriber whose filter matches ``topic``."""
        validate_topic(topic)
        if qos not in (0, 1):
            raise ValueError("AWS IoT Core supports QoS 0 and 1 only")
        message = BusMessage(self.clock.now(), topic, bytes(payload), qos, bool(retain), source)
        with self._cond:
            if retain:
                if message.payload:
                    self._retained[topic] = message
                else:
                    self._retained.pop(topic, None)
            self._messages.append(message)
            targets = [cb for flt, cb in self._subscriptions.values() if topic_matches(flt, topic)]
            self._cond.notify_all()
        for callback in targets:
            self._deliver(callback, message)
        return message

    # -- subscribing ----------------------------------------------------------------
    def subscribe(
        self, topic_filter: str, callback: MessageCallback, *, deliver_retained: bool = True
    ) -> SubscriptionHandle:
        """Call ``callback(topic, payload)`` for matching messages, retained ones first
        (unless ``deliver_retained`` is False: a client whose filter was already
        subscribed gets none, as MQTT sends them only for a new SUBSCRIBE)."""
        validate_filter(topic_filter)
        with self._cond:
            handle = SubscriptionHandle(next(self._ids), topic_filter)
            self._subscriptions[handle.id] = (topic_filter, callback)
            self._cond.notify_all()
            retained = [
                m for t, m in self._retained.items()
                if deliver_retained and topic_matches(topic_filter, t)
            ]
        for message in retained:
            self._deliver(callback, message)
        return handle

    def unsubscribe(self, handle: SubscriptionHandle) -> bool:
        """Stop a subscription. Returns False if it was already gone."""
        with self._cond:
            removed = self._subscriptions.pop(handle.id, None) is not None
            self._cond.notify_all()
            return removed

    @property
    def subscription_count(self) -> int:
        with self._cond:
            return len(self._subscriptions)

    def wait_for_subscriptions(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until exactly ``count`` subscriptions exist; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._subscriptions) == count, timeout)

    def retained(self, topic: str) -> BusMessage | None:
        """The retained message of ``topic``, if any."""
        with self._cond:
            return self._retained.get(topic)

    # -- inspection (tests) -----------------------------------------------------------
    @property
    def messages(self) -> list[BusMessage]:
        """A snapshot of every message published so far, oldest first."""
        with self._cond:
            return list(self._messages)

    def wait_for(
        self,
        predicate: Callable[[BusMessage], bool],
        timeout: float = 5.0,
        *,
        since: int = 0,
    ) -> BusMessage:
        """The first message (from index ``since``) matching ``predicate``.

        Waits up to ``timeout`` seconds for it; raises TimeoutError otherwise.
        """
        checked = since
        found: BusMessage | None = None

        def scan() -> bool:
            nonlocal checked, found
            while checked < len(self._messages):
                candidate = self._messages[checked]
                checked += 1
                if predicate(candidate):
                    found = candidate
                    return True
            return False

        with self._cond:
            if not self._cond.wait_for(scan, timeout):
                raise TimeoutError(f"no matching message within {timeout} s")
        assert found is not None
        return found

    def clear(self) -> None:
        """Forget recorded and retained messages (subscriptions stay)."""
        with self._cond:
            self._messages.clear()
            self._retained.clear()

    @staticmethod
    def _deliver(callback: MessageCallback, message: BusMessage) -> None:
        try:
            callback(message.topic, message.payload)
        except Exception:
            logger.exception("IoT Core bus subscriber failed on %s", message.topic)
