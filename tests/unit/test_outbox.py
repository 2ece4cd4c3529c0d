"""The outbox publisher and its bound, against a real ledger and a recording transport."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.clock import Backoff
from agent.errors import TransportError
from agent.ledger import Ledger, OutgoingMessage
from agent.reporting.outbox import (
    DROPPED_FACT,
    Outbox,
    Publisher,
    dropped_total,
    transport_connected,
)
from agent.reporting.transport import MessageHandler
from localcloud.clock import VirtualClock

WAIT = 5.0  # generous upper bound for anything a thread has to do


class RecordingTransport:
    """A Transport that records publishes; it can be told to fail or to hold publishes."""

    def __init__(self, *, supports_retain: bool = True, fail_connect: bool = False) -> None:
        self.supports_retain = supports_retain
        self.fail_connect = fail_connect
        self.fail_publish = False
        #: Fail every publish once this many have succeeded (None: never).
        self.fail_after: int | None = None
        #: When set to an Event, publish waits for it (an unacknowledged publish).
        self.gate: threading.Event | None = None
        self.published: list[tuple[str, bytes, bool]] = []
        self.attempts: list[tuple[float, int]] = []  # (monotonic time, sequence)
        self.connected = False
        self.closed = False
        self.cond = threading.Condition()

    def connect(self, timeout: float) -> None:
        with self.cond:
            if self.fail_connect:
                raise TransportError("connection refused")
            self.connected = True

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        with self.cond:
            self.attempts.append((time.monotonic(), json.loads(payload)["sequence"]))
            self.cond.notify_all()
            gate = self.gate
        if gate is not None and not gate.wait(timeout):
            raise TransportError("no PUBACK")
        with self.cond:
            if self.closed:
                raise TransportError("closed")
            if self.fail_publish or (
                self.fail_after is not None and len(self.published) >= self.fail_after
            ):
                raise TransportError("publish failed")
            self.published.append((topic, payload, retain))
            self.cond.notify_all()

    def subscribe(self, topic: str, handler: MessageHandler, *, timeout: float) -> None:
        return None

    def is_connected(self) -> bool:
        with self.cond:
            return self.connected and not self.closed

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.connected = False
            if self.gate is not None:
                self.gate.set()
            self.cond.notify_all()

    # -- test helpers --------------------------------------------------------------------
    def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def sequences(self) -> list[int]:
        with self.cond:
            return [json.loads(p)["sequence"] for _, p, _ in self.published]

    def numbers(self) -> list[int]:
        with self.cond:
            return [json.loads(p)["n"] for _, p, _ in self.published]


def message(n: int, kind: str = "status", *, retain: bool = False) -> OutgoingMessage:
    def render(sequence: int, epoch: str) -> bytes:
        return json.dumps({"n": n, "sequence": sequence, "epoch": epoch}).encode()

    return OutgoingMessage(kind, f"test/{kind}", render, retain=retain)


FAST = Backoff(base=0.01, cap=0.02)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "agent.sqlite")
    yield ledger
    ledger.close()


def make_publisher(
    ledger: Ledger,
    transports: list[RecordingTransport],
    *,
    backoff: Backoff = FAST,
) -> Publisher:
    """A publisher whose factory hands out ``transports`` in turn (the last one repeats)."""
    handed = iter(list(transports))
    last = transports[-1]

    def factory() -> RecordingTransport:
        return next(handed, last)

    return Publisher(
        ledger,
        factory,
        clock=VirtualClock(),
        publish_timeout=WAIT,
        backoff=backoff,
    )


def send(publisher: Publisher, messages: list[OutgoingMessage], max_messages: int = 1000) -> list[int]:
    """Messages into the publisher's outbox, as the agent sends them."""
    return Outbox(publisher.ledger, VirtualClock(), max_messages, notify=publisher.notify).send(messages)


def test_publishes_oldest_first_and_empties_outbox(ledger: Ledger) -> None:
    """Five queued messages are published in sequence order and all acknowledged."""
    transport = RecordingTransport()
    publisher = make_publisher(ledger, [transport])
    publisher.start()
    try:
        sequences = send(publisher, [message(n) for n in range(5)])
        assert publisher.flush(WAIT)
        assert transport.sequences() == sequences
        assert transport.numbers() == [0, 1, 2, 3, 4]
        assert ledger.outbox_depth() == 0
        assert publisher.published == 5
    finally:
        assert publisher.stop(WAIT)


def test_message_is_acked_only_after_the_transport_acknowledged_it(ledger: Ledger) -> None:
    """While a publish waits for its PUBACK the message stays in the outbox, and the next
    message is not published before it."""
    transport = RecordingTransport()
    transport.gate = threading.Event()
    publisher = make_publisher(ledger, [transport])
    publisher.start()
    try:
        first, _second = send(publisher, [message(1), message(2)])
        assert transport.wait_until(lambda: len(transport.attempts) == 1)
        assert ledger.outbox_depth() == 2
        assert ledger.pending()[0].sequence == first
        assert not publisher.flush(0.05)
        assert len(transport.attempts) == 1  # no second publish while the first is unacked
        transport.gate.set()
        assert publisher.flush(WAIT)
        assert transport.numbers() == [1, 2]
    finally:
        assert publisher.stop(WAIT)


def test_failure_retries_after_backoff_without_loss_or_duplicates(ledger: Ledger) -> None:
    """Publishes fail after two successes: the publisher retries the same message after a
    back-off, never skips ahead, and once the broker is back delivers the rest exactly
    once, in order."""
    floor = 0.03
    transport = RecordingTransport()
    transport.fail_after = 2
    publisher = make_publisher(ledger, [transport], backoff=Backoff(floor, floor, floor=floor))
    publisher.start()
    try:
        sequences = send(publisher, [message(n) for n in range(5)])
        assert transport.wait_until(lambda: len(transport.attempts) >= 5)
        with transport.cond:
            failed = transport.attempts[2:]
            assert {seq for _, seq in failed} == {sequences[2]}  # always the same message
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(failed)]
            transport.fail_after = None
        assert all(gap >= floor * 0.9 for gap in gaps), gaps
        assert publisher.flush(WAIT)
        assert transport.sequences() == sequences  # nothing lost, nothing twice
        attempted = [seq for _, seq in transport.attempts]
        assert attempted == sorted(attempted)  # never N+1 before N
    finally:
        assert publisher.stop(WAIT)


def test_connect_failure_backs_off_and_builds_a_new_transport(ledger: Ledger) -> None:
    """Two transports refuse to connect: each is closed, the factory is asked again after
    a back-off, and the third delivers the backlog."""
    refusing = [RecordingTransport(fail_connect=True), RecordingTransport(fail_connect=True)]
    working = RecordingTransport()
    publisher = make_publisher(ledger, [*refusing, working])
    send(publisher, [message(1), message(2)])
    with capture_logs() as logs:
        publisher.start()
        try:
            assert publisher.flush(WAIT)
        finally:
            assert publisher.stop(WAIT)
    assert all(t.closed for t in refusing)
    assert working.numbers() == [1, 2]
    assert sum(e["event"] == "transport connect failed; will retry" for e in logs) == 2
    assert transport_connected(ledger) is not None


def test_restart_sends_the_backlog_oldest_first(tmp_path: Path) -> None:
    """An agent delivers two messages, loses the broker, and is restarted: a new Ledger on
    the same file sends the rest, then newer messages, oldest first and only once."""
    path = tmp_path / "agent.sqlite"
    first_ledger = Ledger(path)
    down = RecordingTransport()
    down.fail_after = 2
    publisher = make_publisher(first_ledger, [down])
    publisher.start()
    sequences = send(publisher, [message(n) for n in range(5)])
    assert down.wait_until(lambda: len(down.attempts) >= 3)
    assert publisher.stop(WAIT)
    first_ledger.close()
    assert down.numbers() == [0, 1]

    ledger = Ledger(path)
    try:
        assert [m.sequence for m in ledger.pending()] == sequences[2:]
        later = ledger.enqueue([message(5)], VirtualClock().now())
        assert later[0] > sequences[-1]  # sequences keep growing across restarts
        up = RecordingTransport()
        restarted = make_publisher(ledger, [up])
        restarted.start()
        try:
            assert restarted.flush(WAIT)
        finally:
            assert restarted.stop(WAIT)
        assert up.numbers() == [2, 3, 4, 5]
        assert up.sequences() == [*sequences[2:], *later]
    finally:
        ledger.close()


def test_bound_drops_health_before_status_and_says_so(ledger: Ledger) -> None:
    """Over the bound, the oldest health messages go first; status events stay; each drop
    is logged and counted in the ledger."""
    now = VirtualClock().now()
    for n in range(6):
        Outbox(ledger, VirtualClock(now), 10).send([message(n, "status"), message(100 + n, "health")])
    assert ledger.outbox_depth() == 10
    assert ledger.outbox_depth("status") == 6
    assert ledger.outbox_depth("health") == 4
    assert dropped_total(ledger) == 2
    assert ledger.get(DROPPED_FACT) == "2"
    kept_health = [json.loads(m.payload)["n"] for m in ledger.pending() if m.kind == "health"]
    assert kept_health == [102, 103, 104, 105]  # the oldest ones were dropped

    with capture_logs() as logs:
        Outbox(ledger, VirtualClock(now), 10).send([message(6, "status")])
    assert [(e["event"], e["kind"], e["count"]) for e in logs] == [
        ("outbox full: dropped oldest messages", "health", 1)
    ]
    assert dropped_total(ledger) == 3


def test_bound_drop_order_is_health_responses_platform_then_status(ledger: Ledger) -> None:
    """With room for one message, health, command responses and platform reports are
    dropped before the status event; status goes only as a last resort (logged as error)."""
    now = VirtualClock().now()
    with capture_logs() as logs:
        Outbox(ledger, VirtualClock(now), 1).send(
            [
                message(1, "status"),
                message(2, "platform"),
                message(3, "command-response"),
                message(4, "health"),
            ]
        )
    assert [(e["kind"], e["log_level"]) for e in logs] == [
        ("health", "warning"),
        ("command-response", "warning"),
        ("platform", "warning"),
    ]
    assert [m.kind for m in ledger.pending()] == ["status"]

    with capture_logs() as logs:
        Outbox(ledger, VirtualClock(now), 1).send([message(5, "status")])
    assert [(e["kind"], e["log_level"]) for e in logs] == [("status", "error")]
    assert [json.loads(m.payload)["n"] for m in ledger.pending()] == [5]
    assert dropped_total(ledger) == 4


def test_bound_also_drops_unknown_kinds(ledger: Ledger) -> None:
    """A kind the drop order does not name is still dropped (oldest first) rather than let
    the outbox grow past its bound."""
    now = VirtualClock().now()
    Outbox(ledger, VirtualClock(now), 2).send([message(n, "custom") for n in range(4)])
    assert [json.loads(m.payload)["n"] for m in ledger.pending()] == [2, 3]
    assert dropped_total(ledger) == 2


@pytest.mark.parametrize("supports_retain", [True, False])
def test_retain_is_passed_only_when_the_transport_supports_it(
    ledger: Ledger, supports_retain: bool
) -> None:
    """A retained message is published with retain=True only on a transport that keeps
    retained messages; a non-retained message never is."""
    transport = RecordingTransport(supports_retain=supports_retain)
    publisher = make_publisher(ledger, [transport])
    publisher.start()
    try:
        send(publisher, [message(1, retain=True), message(2, retain=False)])
        assert publisher.flush(WAIT)
    finally:
        assert publisher.stop(WAIT)
    assert [retain for _, _, retain in transport.published] == [supports_retain, False]


def test_flush_waits_on_the_condition_until_the_outbox_is_empty(ledger: Ledger) -> None:
    """flush returns True at once when empty, False after its timeout while a message is
    unacknowledged, and True as soon as the last acknowledgement arrives."""
    transport = RecordingTransport()
    publisher = make_publisher(ledger, [transport])
    publisher.start()
    try:
        assert publisher.flush(0.0)
        transport.gate = threading.Event()
        send(publisher, [message(1)])
        started = time.monotonic()
        assert not publisher.flush(0.1)
        assert time.monotonic() - started >= 0.09
        result: list[bool] = []
        waiter = threading.Thread(target=lambda: result.append(publisher.flush(WAIT)))
        waiter.start()
        transport.gate.set()
        waiter.join(WAIT)
        assert result == [True]
        assert ledger.outbox_depth() == 0
    finally:
        assert publisher.stop(WAIT)


def test_stop_is_bounded_even_while_a_publish_waits(ledger: Ledger) -> None:
    """A publish that never gets its PUBACK does not keep stop() waiting: closing the
    transport ends it, and the message stays queued for the next start."""
    transport = RecordingTransport()
    transport.gate = threading.Event()
    publisher = make_publisher(ledger, [transport])
    publisher.start()
    send(publisher, [message(1)])
    assert transport.wait_until(lambda: len(transport.attempts) == 1)
    started = time.monotonic()
    assert publisher.stop(0.5)
    assert time.monotonic() - started < 0.5 + 0.1
    assert transport.closed
    assert ledger.outbox_depth() == 1
    assert not publisher.running


def test_publisher_survives_an_unexpected_exception(ledger: Ledger) -> None:
    """A transport that breaks its contract (raises a non-TransportError) is logged; the
    publisher backs off and delivers once the transport behaves."""

    class Broken(RecordingTransport):
        def __init__(self) -> None:
            super().__init__()
            self.broken = True

        def publish(
            self, topic: str, payload: bytes, *, retain: bool = False, timeout: float
        ) -> None:
            with self.cond:
                broken, self.broken = self.broken, False
            if broken:
                raise RuntimeError("bug in transport")
            super().publish(topic, payload, retain=retain, timeout=timeout)

    transport = Broken()
    publisher = make_publisher(ledger, [transport])
    with capture_logs() as logs:
        publisher.start()
        try:
            send(publisher, [message(1)])
            assert publisher.flush(WAIT)
        finally:
            assert publisher.stop(WAIT)
    assert transport.numbers() == [1]
    assert any(e["event"] == "publisher pass crashed" for e in logs)


def test_publisher_finds_messages_enqueued_without_notify(ledger: Ledger) -> None:
    """Messages the reconciler writes straight into the ledger (no notify) are found by
    the idle poll."""
    transport = RecordingTransport()
    publisher = Publisher(
        ledger,
        lambda: transport,
        clock=VirtualClock(),
        publish_timeout=WAIT,
        backoff=FAST,
        poll_interval=0.02,
    )
    publisher.start()
    try:
        ledger.enqueue([message(7)], VirtualClock().now())
        assert transport.wait_until(lambda: len(transport.published) == 1)
        assert transport.numbers() == [7]
    finally:
        assert publisher.stop(WAIT)


def test_back_off_ends_when_the_transport_reconnects_by_itself(ledger: Ledger) -> None:
    """The connection drops and publishes fail while the transport reconnects by itself:
    the publisher's long back-off ends as soon as the transport says it is connected
    again, and the backlog goes out at once."""
    transport = RecordingTransport()
    publisher = make_publisher(ledger, [transport], backoff=Backoff(30.0, 30.0, floor=30.0))
    publisher.start()
    try:
        send(publisher, [message(1)])
        assert transport.wait_until(lambda: len(transport.published) == 1)
        with transport.cond:
            transport.connected = False  # dropped, not closed: it reconnects by itself
            transport.fail_publish = True
        send(publisher, [message(2)])
        # The publisher noted the failure as a disconnection (a ledger fact: no callback).
        pause, deadline = threading.Event(), time.monotonic() + WAIT
        while transport_connected(ledger) is not False:
            assert time.monotonic() < deadline, "the publisher did not note the disconnection"
            pause.wait(0.01)
        with transport.cond:
            transport.connected = True
            transport.fail_publish = False
        assert publisher.flush(WAIT)  # well before the 30 s back-off
        assert transport.numbers() == [1, 2]
    finally:
        assert publisher.stop(WAIT)
