"""The outbox publisher: delivers the ledger's queued messages over MQTT, oldest first.

Every message the agent reports is first written to the ledger's outbox (in the same
transaction as the state change that caused it). :class:`Publisher` runs in its own
thread and drains that table in sequence order:

* A message is ``ack``-ed (deleted) only after the transport returned from a QoS 1
  publish, i.e. the broker acknowledged it. A crash between the publish and the ack
  re-sends it after restart: delivery is at least once, and subscribers de-duplicate on
  ``sequence``.
* The first failure stops the pass; the publisher backs off and retries the *same*
  message, so message N+1 is never published before N is acknowledged.
* A connection that cannot be opened is closed, and a new transport is built by the
  factory after a back-off.

The outbox is bounded. :func:`enqueue` adds messages and then enforces the bound by
dropping the least valuable messages first (health, then command responses, then
platform reports, and only as a last resort status events). Every drop is logged and
counted in the ledger fact ``outbox_dropped_total`` so the health report can tell.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from agent.clock import Backoff, Clock, TimeSource
from agent.errors import AgentError, TransportError
from agent.ledger import Ledger, OutgoingMessage, QueuedMessage
from agent.reporting.transport import Transport

log = structlog.get_logger("agent.outbox")

#: Which kinds are dropped first when the outbox is over its bound (least valuable first).
DROP_ORDER: tuple[str, ...] = ("health", "command-response", "platform", "status")

#: Ledger fact counting every message ever dropped by the bound (a decimal string).
DROPPED_FACT = "outbox_dropped_total"

#: Ledger facts the publisher writes when its connection state changes.
CONNECTED_FACT = "transport_connected"
CONNECTED_CHANGED_FACT = "transport_changed_at"

#: Consecutive failed publishes on a transport that says it is disconnected before the
#: publisher gives up on that transport's own reconnection and builds a new one.
RECONNECT_AFTER_FAILURES = 5

#: How often a back-off looks whether a disconnected transport has reconnected by itself.
RECONNECT_CHECK_SECONDS = 0.25

_counter_lock = threading.Lock()


class Outbox:
    """The one way messages enter the outbox: enqueue them in the ledger, enforce the
    bound (``reporting.outboxMaxMessages``), then wake whoever publishes (``notify``,
    wired to :meth:`Publisher.notify` once the publisher exists). Thread-safe."""

    def __init__(
        self,
        ledger: Ledger,
        clock: TimeSource,
        max_messages: int,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.max_messages = max_messages
        self.notify: Callable[[], None] = notify or (lambda: None)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        """Enqueue ``messages`` (bound enforced) and wake the publisher; returns their
        sequences."""
        sequences = self.ledger.enqueue(messages, self.clock.now())
        enforce_bound(self.ledger, self.max_messages, log)
        self.notify()
        return sequences


def enforce_bound(ledger: Ledger, max_messages: int, log: Any = log) -> int:
    """Drop the oldest, least valuable messages while the outbox holds more than
    ``max_messages``; returns how many were dropped (also added to ``outbox_dropped_total``).
    """
    with _counter_lock:
        excess = ledger.outbox_depth() - max_messages
        if excess <= 0:
            return 0
        dropped = 0
        for kind in DROP_ORDER:
            if excess <= 0:
                break
            count = _drop(ledger, kind, excess, max_messages, log)
            excess -= count
            dropped += count
        while excess > 0:
            # Only kinds this module does not know are left: drop them oldest first.
            oldest = [m.kind for m in ledger.pending(limit=excess)]
            if not oldest:
                break
            progress = 0
            for kind in dict.fromkeys(oldest):
                count = _drop(ledger, kind, excess, max_messages, log)
                excess -= count
                progress += count
            dropped += progress
            if not progress:
                break
        if dropped:
            total = _int_fact(ledger, DROPPED_FACT) + dropped
            ledger.put({DROPPED_FACT: str(total)})
        return dropped


def _drop(ledger: Ledger, kind: str, excess: int, max_messages: int, log: Any) -> int:
    count = ledger.drop_oldest(kind, excess)
    if count:
        level = log.error if kind == "status" else log.warning
        level(
            "outbox full: dropped oldest messages",
            kind=kind,
            count=count,
            max_messages=max_messages,
        )
    return count


def _int_fact(ledger: Ledger, key: str) -> int:
    try:
        return int(ledger.get(key, "0") or 0)
    except ValueError:
        return 0


def dropped_total(ledger: Ledger) -> int:
    """How many messages the bound has dropped over the device's life."""
    return _int_fact(ledger, DROPPED_FACT)


class Publisher:
    """Drains the ledger's outbox over a :class:`Transport`, in its own thread.

    ``transport_factory`` builds a fresh (unconnected) transport; the publisher connects
    it, and builds another when a connection cannot be opened. ``backoff`` spaces the
    retries after a failed connect or publish. ``poll_interval`` is how often an idle
    publisher looks at the outbox even when nobody called :meth:`notify` (messages the
    reconciler writes with its state changes).
    """

    def __init__(
        self,
        ledger: Ledger,
        transport_factory: Callable[[], Transport],
        *,
        clock: Clock,
        publish_timeout: float,
        backoff: Backoff,
        rng: random.Random | None = None,
        connect_timeout: float | None = None,
        poll_interval: float = 5.0,
        batch_size: int = 50,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.publish_timeout = publish_timeout
        self.connect_timeout = publish_timeout if connect_timeout is None else connect_timeout
        self.backoff = backoff
        self.poll_interval = poll_interval
        self.batch_size = max(1, batch_size)
        self._factory = transport_factory
        self._rng = rng or random.Random()
        self._transport: Transport | None = None
        self._transport_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._disconnected_failures = 0
        self._connected_fact: bool | None = None
        #: Messages acknowledged by the broker since start (for tests and diagnostics).
        self.published = 0

    # -- control -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the publishing thread (once)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop within ``timeout`` seconds; returns True when the thread has ended.

        A publish waiting for its acknowledgement gets half of ``timeout``; then the
        transport is closed, which ends it (the message stays queued for the next start).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            # Half the time for a publish in flight to get its acknowledgement, then
            # closing the transport ends it (the message stays queued).
            thread.join(max(0.0, timeout) / 2)
        self._close_transport()
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._progress:
            self._progress.notify_all()
        ended = thread is None or not thread.is_alive()
        if not ended:
            log.warning("publisher did not stop in time", timeout=timeout)
        return ended

    def notify(self) -> None:
        """Something was enqueued: look at the outbox now (unless backing off)."""
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty or ``timeout`` seconds passed; True if empty."""
        self.notify()
        with self._progress:
            return self._progress.wait_for(self._empty, timeout=max(0.0, timeout))

    def connected(self) -> bool:
        """Whether the current transport exists and says it is connected."""
        transport = self._transport
        if transport is None:
            return False
        try:
            return bool(transport.is_connected())
        except Exception:
            return False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread --------------------------------------------------------------------
    def _empty(self) -> bool:
        return self.ledger.outbox_depth() == 0

    def _run(self) -> None:
        log.info("publisher started", pending=self.ledger.outbox_depth())
        try:
            while not self._stopping.is_set():
                try:
                    ok = self._pass()
                except AgentError as exc:  # e.g. the ledger cannot be written (full disk)
                    log.warning("publisher pass failed", error=exc.kind, message=exc.message)
                    ok = False
                except Exception as exc:  # the publisher must outlive its own bugs
                    log.exception("publisher pass crashed", error=type(exc).__name__)
                    ok = False
                if self._stopping.is_set():
                    break
                if ok:
                    self._failures = 0
                    self._idle()
                else:
                    delay = self.backoff.delay(self._failures, self._rng)
                    self._failures += 1
                    log.debug("publisher backing off", retry_in=round(delay, 3))
                    self._back_off(delay)
        finally:
            self._close_transport()
            with self._progress:
                self._progress.notify_all()
            log.info("publisher stopped", pending=self.ledger.outbox_depth())

    def _back_off(self, delay: float) -> None:
        """Wait ``delay`` seconds or until stopped. After a publish failed because the
        transport was disconnected (it reconnects by itself), the wait also ends as soon as
        it says it is connected again: the backlog goes out at once, not after the back-off."""
        if self._transport is None or not self._disconnected_failures:
            self.clock.wait(delay, self._stopping)
            return
        remaining = delay
        while remaining > 0:
            step = min(remaining, RECONNECT_CHECK_SECONDS)
            if self.clock.wait(step, self._stopping):
                return
            remaining -= step
            if self.connected():
                log.info("transport reconnected", pending=self.ledger.outbox_depth())
                return

    def _idle(self) -> None:
        """Nothing left (or a pass ended cleanly): wait for a notify, a stop or the poll."""
        with self._progress:
            self._progress.notify_all()
        if self.ledger.outbox_depth() > 0:
            return
        self.clock.wait(self.poll_interval, self._wake)

    def _pass(self) -> bool:
        """Publish pending messages oldest first; False at the first failure."""
        self._wake.clear()
        batch = self.ledger.pending(self.batch_size)
        if not batch:
            return True
        transport = self._ensure_transport()
        if transport is None:
            return False
        for message in batch:
            if self._stopping.is_set():
                return True
            if not self._publish(transport, message):
                return False
        return True

    def _publish(self, transport: Transport, message: QueuedMessage) -> bool:
        retain = message.retain and bool(getattr(transport, "supports_retain", False))
        try:
            transport.publish(
                message.topic, message.payload, retain=retain, timeout=self.publish_timeout
            )
        except AgentError as exc:
            self._publish_failed(transport, message, exc)
            return False
        self.ledger.ack(message.sequence)
        self.published += 1
        self._disconnected_failures = 0
        self._note_connected(True)
        log.debug("published", sequence=message.sequence, kind=message.kind, topic=message.topic)
        with self._progress:
            self._progress.notify_all()
        return True

    def _publish_failed(
        self, transport: Transport, message: QueuedMessage, exc: AgentError
    ) -> None:
        connected = self.connected()
        log.warning(
            "publish failed; will retry",
            sequence=message.sequence,
            kind=message.kind,
            error=exc.kind,
            message=exc.message,
            connected=connected,
            pending=self.ledger.outbox_depth(),
        )
        if connected:
            return
        self._disconnected_failures += 1
        self._note_connected(False)
        if self._disconnected_failures >= RECONNECT_AFTER_FAILURES:
            log.warning("transport stays disconnected; building a new one")
            self._disconnected_failures = 0
            self._close_transport()

    def _ensure_transport(self) -> Transport | None:
        if self._transport is not None:
            return self._transport
        transport: Transport | None = None
        try:
            transport = self._factory()
            transport.connect(self.connect_timeout)
        except AgentError as exc:
            level = log.warning if isinstance(exc, TransportError) else log.error
            level("transport connect failed; will retry", error=exc.kind, message=exc.message)
            if transport is not None:
                _close_quietly(transport)
            self._note_connected(False)
            return None
        with self._transport_lock:
            if self._stopping.is_set():
                _close_quietly(transport)
                return None
            self._transport = transport
        log.info("transport connected", pending=self.ledger.outbox_depth())
        self._note_connected(True)
        return transport

    def _close_transport(self) -> None:
        with self._transport_lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            _close_quietly(transport)

    def _note_connected(self, connected: bool) -> None:
        """Record connection changes as ledger facts (read by the health report)."""
        if self._connected_fact is connected:
            return
        self._connected_fact = connected
        try:
            self.ledger.put(
                {
                    CONNECTED_FACT: "true" if connected else "false",
                    CONNECTED_CHANGED_FACT: repr(self.clock.now()),
                }
            )
        except Exception as exc:
            log.warning("could not record transport state", error=type(exc).__name__)


def transport_connected(ledger: Ledger) -> bool | None:
    """The publisher's last recorded connection state, or None if never recorded."""
    value = ledger.get(CONNECTED_FACT)
    return None if value is None else value == "true"


def _close_quietly(transport: Transport) -> None:
    try:
        transport.close()
    except Exception as exc:
        log.warning("transport close failed", error=type(exc).__name__)
