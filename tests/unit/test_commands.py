"""The command handler: every command, every rejection, failures, and never raising."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.config import CommandSettings
from agent.ledger import Ledger, OutgoingMessage
from agent.reporting.commands import CommandHandler, CommandTarget
from agent.reporting.events import CommandResponse
from localcloud.clock import VirtualClock

TOPIC = "l4v-edge/dev-1/commands"


class RecordingTarget:
    """A CommandTarget that records calls and can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: Exception | None = None

    def request_check(self, model_version: int | None = None) -> None:
        self._called("request_check", model_version)

    def report_health_now(self) -> None:
        self._called("report_health_now", None)

    def report_status_now(self) -> None:
        self._called("report_status_now", None)

    def _called(self, name: str, argument: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.calls.append((name, argument))


class Harness:
    """A handler wired to a recording target and a list standing in for the outbox."""

    def __init__(self, **settings: Any) -> None:
        self.target = RecordingTarget()
        self.sent: list[OutgoingMessage] = []
        self.clock = VirtualClock()
        target: CommandTarget = self.target
        self.handler = CommandHandler(
            thing_name="dev-1",
            response_topic="l4v-edge/dev-1/commands/responses",
            settings=CommandSettings(**settings),
            target=target,
            enqueue=self.sent.extend,
            clock=self.clock,
        )

    def send(self, payload: bytes | dict[str, Any] | str) -> CommandResponse:
        """Handle one payload and return its single response."""
        before = len(self.sent)
        raw = (
            json.dumps(payload).encode()
            if isinstance(payload, dict)
            else payload.encode()
            if isinstance(payload, str)
            else payload
        )
        self.handler.handle(TOPIC, raw)  # the transport's thread
        self.handler.process()  # the main loop's next turn
        assert len(self.sent) == before + 1, "exactly one response per command"
        message = self.sent[-1]
        assert (message.kind, message.retain) == ("command-response", False)
        assert message.topic == "l4v-edge/dev-1/commands/responses"
        return CommandResponse.model_validate_json(message.render(17, "0123456789abcdef"))


@pytest.fixture
def harness() -> Harness:
    return Harness(allow_deploy_version=True)


def test_check_now_requests_a_check(harness: Harness) -> None:
    """check-now asks the target for a check (no version) and is ACCEPTED with the id."""
    response = harness.send({"id": "c-1", "command": "check-now"})
    assert (response.id, response.outcome) == ("c-1", "ACCEPTED")
    assert response.sequence == 17 and response.thing_name == "dev-1"
    assert harness.target.calls == [("request_check", None)]


def test_report_health_and_report_status(harness: Harness) -> None:
    """report-health and report-status call the matching target methods."""
    assert harness.send({"id": "h", "command": "report-health"}).outcome == "ACCEPTED"
    assert harness.send({"id": "s", "command": "report-status"}).outcome == "ACCEPTED"
    assert harness.target.calls == [("report_health_now", None), ("report_status_now", None)]


def test_deploy_version_when_allowed(harness: Harness) -> None:
    """deploy-version with allowDeployVersion asks for that model version."""
    response = harness.send(
        {
            "schema": "l4v-edge-agent/command/1",
            "id": "d.1",
            "command": "deploy-version",
            "modelVersion": 7,
        }
    )
    assert response.outcome == "ACCEPTED"
    assert "7" in response.detail
    assert harness.target.calls == [("request_check", 7)]


def test_deploy_version_disabled_by_configuration() -> None:
    """deploy-version is REJECTED when the configuration does not allow it (the default),
    and the target is not called."""
    harness = Harness()
    response = harness.send({"id": "d-2", "command": "deploy-version", "modelVersion": 7})
    assert (response.id, response.outcome) == ("d-2", "REJECTED")
    assert "disabled by configuration" in response.detail
    assert harness.target.calls == []


def test_deploy_version_needs_a_model_version(harness: Harness) -> None:
    """deploy-version without modelVersion is REJECTED naming the field."""
    response = harness.send({"id": "d-3", "command": "deploy-version"})
    assert response.outcome == "REJECTED"
    assert response.detail.startswith("modelVersion: required")
    assert harness.target.calls == []


def test_model_version_only_with_deploy_version(harness: Harness) -> None:
    """A modelVersion on another command is REJECTED rather than silently ignored."""
    response = harness.send({"id": "c-2", "command": "check-now", "modelVersion": 3})
    assert response.outcome == "REJECTED"
    assert response.detail.startswith("modelVersion: only allowed with deploy-version")
    assert harness.target.calls == []


@pytest.mark.parametrize(
    ("payload", "expected_id", "detail_start"),
    [
        (b"\xff\xfe{}", None, "payload: not valid UTF-8"),
        (b'{"id": "x", ', None, "payload: not valid JSON"),
        (b'{"id": NaN, "command": "check-now"}', None, "payload: not valid JSON"),
        (b"", None, "payload: not valid JSON"),
        (b"[1, 2]", None, "payload: must be a JSON object, got array"),
        (b'"check-now"', None, "payload: must be a JSON object, got string"),
        (b"null", None, "payload: must be a JSON object, got null"),
        (b'{"id": "e-1", "command": "reboot"}', "e-1", "command: Input should be"),
        (b'{"id": "e-2", "command": "check-now", "force": true}', "e-2", "force: unknown field"),
        (b'{"id": "bad id!", "command": "check-now"}', None, "id: String should match pattern"),
        (b'{"id": "", "command": "check-now"}', None, "id: String should have at least 1"),
        (b'{"id": 5, "command": "check-now"}', None, "id: Input should be a valid string"),
        (b'{"command": "check-now"}', None, "id: required"),
        (b'{"id": "e-3"}', "e-3", "command: required"),
        (
            b'{"id": "e-4", "command": "deploy-version", "modelVersion": 0}',
            "e-4",
            "modelVersion: Input should be greater than or equal to 1",
        ),
        (
            b'{"id": "e-5", "command": "deploy-version", "modelVersion": "7x"}',
            "e-5",
            "modelVersion: Input should be a valid integer",
        ),
        (
            b'{"id": "e-6", "command": "check-now", "schema": "other/1"}',
            "e-6",
            "schema: Input should be",
        ),
    ],
)
def test_rejections_name_the_field_and_rule(
    harness: Harness, payload: bytes, expected_id: str | None, detail_start: str
) -> None:
    """Each malformed command is REJECTED with a detail naming the field and the rule,
    the id echoed when it could be read, a warning logged, and the target untouched."""
    with capture_logs() as logs:
        response = harness.send(payload)
    assert response.outcome == "REJECTED"
    assert response.id == expected_id
    assert response.detail.startswith(detail_start), response.detail
    assert harness.target.calls == []
    assert [(e["event"], e["log_level"]) for e in logs] == [("command rejected", "warning")]


def test_oversized_payload_is_rejected_unread(harness: Harness) -> None:
    """A payload over maxPayloadBytes is REJECTED before it is parsed (the id inside it
    is not read)."""
    limit = harness.handler.settings.max_payload_bytes
    payload = json.dumps({"id": "big", "command": "check-now", "pad": "x" * limit}).encode()
    response = harness.send(payload)
    assert (response.id, response.outcome) == (None, "REJECTED")
    assert response.detail == (
        f"payload: {len(payload)} bytes exceeds the limit of {limit} bytes "
        "(commands.maxPayloadBytes)"
    )


def test_several_errors_are_all_named_and_the_detail_is_bounded(harness: Harness) -> None:
    """Every invalid field is named; a detail never grows past 500 characters however
    many unknown fields a payload holds."""
    response = harness.send({"id": "m-1", "command": "nope", "a": 1})
    assert "command:" in response.detail and "a: unknown field" in response.detail
    many = {"id": "m-2", "command": "check-now", **{f"f{n:04d}": n for n in range(300)}}
    response = harness.send(json.dumps(many)[:4000].rsplit(",", 1)[0] + "}")
    assert response.outcome == "REJECTED"
    assert len(response.detail) <= 500


def test_commands_disabled_are_rejected() -> None:
    """With commands disabled every command is REJECTED (the daemon should not even
    subscribe, but a stray message still gets an answer)."""
    harness = Harness(enabled=False)
    response = harness.send({"id": "c-1", "command": "check-now"})
    assert response.outcome == "REJECTED"
    assert "disabled by configuration" in response.detail
    assert harness.target.calls == []


def test_target_failure_is_reported_as_failed(harness: Harness) -> None:
    """An exception from the target becomes a FAILED response and an error log line."""
    harness.target.fail = RuntimeError("reconciler not ready")
    with capture_logs() as logs:
        response = harness.send({"id": "f-1", "command": "check-now"})
    assert (response.id, response.outcome) == ("f-1", "FAILED")
    assert response.detail == "RuntimeError: reconciler not ready"
    assert [(e["event"], e["log_level"]) for e in logs] == [("command failed", "error")]


def test_enqueue_failure_is_logged_and_never_raises() -> None:
    """When the outbox itself fails, the response is dropped with an error log line and
    handle() still returns normally."""
    target = RecordingTarget()

    def broken_enqueue(messages: list[OutgoingMessage]) -> None:
        raise OSError("disk full")

    handler = CommandHandler(
        thing_name="dev-1",
        response_topic="r",
        settings=CommandSettings(),
        target=target,
        enqueue=broken_enqueue,
        clock=VirtualClock(),
    )
    with capture_logs() as logs:
        handler.handle(TOPIC, b'{"id": "x", "command": "report-health"}')
        handler.process()
    assert target.calls == [("report_health_now", None)]
    assert [e["event"] for e in logs] == ["command accepted", "command response dropped"]


def test_handle_never_raises_on_hostile_input(harness: Harness) -> None:
    """Deep nesting, huge numbers, lone surrogates and non-bytes buffers are answered,
    not raised."""
    for payload in [
        b"[" * 4000 + b"]" * 4000,
        b'{"id": "n", "command": "check-now", "modelVersion": ' + b"9" * 4000 + b"}",
        b'{"id": "\\ud800", "command": "check-now"}',
        b'{"\\u0000": 1}',
        b"{}" * 2000,
    ]:
        response = harness.send(payload)
        assert response.outcome == "REJECTED"
    harness.handler.handle(TOPIC, bytearray(b'{"id": "b", "command": "check-now"}'))  # type: ignore[arg-type]
    harness.handler.process()
    assert harness.target.calls == [("request_check", None)]


def test_responses_are_durable_through_the_outbox(tmp_path: Path) -> None:
    """Wired to a real ledger, the response is queued with its sequence in the payload."""
    ledger = Ledger(tmp_path / "agent.sqlite")
    try:
        clock = VirtualClock()

        def to_outbox(messages: list[OutgoingMessage]) -> None:
            ledger.enqueue(messages, clock.now())

        handler = CommandHandler(
            thing_name="dev-1",
            response_topic="r",
            settings=CommandSettings(),
            target=RecordingTarget(),
            enqueue=to_outbox,
            clock=clock,
        )
        handler.handle(TOPIC, b'{"id": "q-1", "command": "report-status"}')
        handler.process()
        (queued,) = ledger.pending()
        assert queued.kind == "command-response"
        body = json.loads(queued.payload)
        assert (body["id"], body["outcome"], body["sequence"]) == (
            "q-1",
            "ACCEPTED",
            queued.sequence,
        )
        assert body["schema"] == "l4v-edge-agent/command-response/1"
    finally:
        ledger.close()


def test_check_gate_runs_one_check_per_interval_and_coalesces_the_rest() -> None:
    """The first request runs at once; requests within minCheckIntervalSeconds join one
    check at the earliest allowed time; the newest deploy-version wins."""
    from agent.reporting.commands import CheckGate

    gate = CheckGate(60.0)
    assert gate.request(100.0, None) == 100.0
    assert gate.take_due(100.0) == (True, None)
    assert gate.wait(100.0) is None
    assert gate.request(110.0, 3) == 160.0
    assert gate.request(150.0, None) == 160.0
    assert gate.request(155.0, 4) == 160.0
    assert gate.wait(150.0) == 10.0
    assert gate.take_due(159.0) == (False, None)
    assert gate.take_due(160.0) == (True, 4)
    assert gate.request(230.0, None) == 230.0  # a minute after the last one: at once


def test_check_now_flood_is_deferred_with_the_time_it_runs() -> None:
    """Of ten check-now commands in one turn, the first runs now; the nine others are
    answered DEFERRED with the same runAt, one interval later, and cause one check when
    that time comes."""
    harness = Harness(min_check_interval_seconds=60)
    answers = [harness.send({"id": f"f-{n}", "command": "check-now"}) for n in range(10)]
    assert [a.outcome for a in answers] == ["ACCEPTED"] + ["DEFERRED"] * 9
    assert len({a.run_at for a in answers[1:]}) == 1
    assert "minCheckIntervalSeconds" in answers[1].detail
    assert harness.target.calls == [("request_check", None)]
    harness.clock.advance(59)
    assert harness.handler.process() == 1.0
    harness.clock.advance(1)
    assert harness.handler.process() is None
    assert harness.target.calls == [("request_check", None)] * 2


def test_report_commands_are_not_rate_limited(harness: Harness) -> None:
    """report-health and report-status cause no cloud calls: each runs at once."""
    for n in range(5):
        assert harness.send({"id": f"h-{n}", "command": "report-health"}).outcome == "ACCEPTED"
    assert harness.target.calls == [("report_health_now", None)] * 5


def test_a_full_inbox_rejects_commands_until_the_main_loop_catches_up() -> None:
    """When the main loop is busy, at most INBOX_SIZE valid commands wait; the ones
    beyond are answered REJECTED at once (memory stays flat under a flood)."""
    from agent.reporting.commands import INBOX_SIZE

    harness = Harness()
    for n in range(INBOX_SIZE + 5):
        harness.handler.handle(TOPIC, json.dumps({"id": f"q-{n}", "command": "report-health"}).encode())
    rejected = [CommandResponse.model_validate_json(m.render(1, "e")) for m in harness.sent]
    assert [r.id for r in rejected] == [f"q-{n}" for n in range(INBOX_SIZE, INBOX_SIZE + 5)]
    assert all(r.outcome == "REJECTED" and "waiting" in r.detail for r in rejected)
    harness.handler.process()
    assert len(harness.target.calls) == INBOX_SIZE
