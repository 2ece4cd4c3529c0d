"""Property tests: whatever arrives on the commands topic, the handler never raises and
answers each message with exactly one response (or drops it with a log line)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from agent.config import CommandSettings
from agent.ledger import OutgoingMessage
from agent.reporting.commands import CommandHandler
from agent.reporting.events import Command, CommandResponse
from localcloud.clock import VirtualClock

# About 5,000 payloads in all; the file runs in well under 20 s.
FUZZ = settings(
    max_examples=1500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class CountingTarget:
    """Counts target calls; optionally fails every one of them."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    def request_check(self, model_version: int | None = None) -> None:
        self._call()

    def report_health_now(self) -> None:
        self._call()

    def report_status_now(self) -> None:
        self._call()

    def _call(self) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("target refused")


def run_one(payload: bytes, *, allow_deploy: bool = True, fail: bool = False) -> CommandResponse:
    """Handle ``payload`` and return its one response (after checking there is one)."""
    sent: list[OutgoingMessage] = []
    target = CountingTarget(fail=fail)
    handler = CommandHandler(
        thing_name="dev-1",
        response_topic="r",
        settings=CommandSettings(allow_deploy_version=allow_deploy, max_payload_bytes=2048),
        target=target,
        enqueue=sent.extend,
        clock=VirtualClock(),
    )
    with capture_logs() as logs:
        handler.handle("l4v-edge/dev-1/commands", payload)
        handler.process()
    assert len(sent) == 1, "exactly one response per message"
    assert len(logs) == 1, "exactly one log line per message"
    response = CommandResponse.model_validate_json(sent[0].render(1, "e"))
    assert len(response.detail) <= 500
    if response.outcome == "REJECTED":
        assert target.calls == 0
        assert logs[0]["event"] == "command rejected"
    elif response.outcome == "ACCEPTED":
        assert target.calls == 1
    else:
        assert fail and logs[0]["event"] == "command failed"
    return response


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)

VALID = {
    "schema": "l4v-edge-agent/command/1",
    "id": "cmd-1",
    "command": "deploy-version",
    "modelVersion": 3,
}
FIELDS = [*VALID, "extra", "Id", "model_version", "schema_"]


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid command with a few fields removed, added or replaced by odd values."""
    document: dict[str, Any] = dict(VALID)
    document["command"] = draw(
        st.sampled_from(["check-now", "report-health", "report-status", "deploy-version"])
    )
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(FIELDS))
        action = draw(st.sampled_from(["delete", "replace", "replace-similar"]))
        if action == "delete":
            document.pop(field, None)
        elif action == "replace":
            document[field] = draw(json_values)
        else:
            document[field] = draw(
                st.sampled_from(
                    [
                        "",
                        "x" * 65,
                        "a b",
                        "CHECK-NOW",
                        "check-now ",
                        0,
                        -1,
                        1_000_000,
                        999_999,
                        "3",
                        3.0,
                        3.5,
                        True,
                        None,
                        [],
                        {},
                        "l4v-edge-agent/command/2",
                        "ok:id_1.2-3",
                    ]
                )
            )
    return document


@FUZZ
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    """Random bytes (mostly not UTF-8/JSON, some over the size limit) are rejected."""
    response = run_one(payload)
    assert response.outcome in ("REJECTED", "ACCEPTED")


@settings(FUZZ, max_examples=1000)
@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    """Any JSON document gets one response; only a real command is accepted."""
    payload = json.dumps(value).encode()
    response = run_one(payload)
    if response.outcome == "ACCEPTED":
        Command.model_validate(value)


@settings(FUZZ, max_examples=1200)
@given(near_valid(), st.booleans(), st.booleans())
def test_near_valid_commands_never_raise(
    document: dict[str, Any], allow_deploy: bool, fail: bool
) -> None:
    """Valid commands with mutated fields: accepted exactly when the schema and the
    configuration allow them, otherwise rejected with the id echoed if it was valid."""
    response = run_one(json.dumps(document).encode(), allow_deploy=allow_deploy, fail=fail)
    try:
        command: Command | None = Command.model_validate(document)
    except ValueError:
        command = None
    if command is None:
        assert response.outcome == "REJECTED"
        return
    assert response.id == command.id
    deploy = command.command.value == "deploy-version"
    allowed = (deploy and allow_deploy and command.model_version is not None) or (
        not deploy and command.model_version is None
    )
    if not allowed:
        assert response.outcome == "REJECTED"
    else:
        assert response.outcome == ("FAILED" if fail else "ACCEPTED")


@settings(FUZZ, max_examples=1000)
@given(st.text(max_size=1500))
def test_arbitrary_text_never_raises(text: str) -> None:
    """Arbitrary (valid UTF-8) text, including lone JSON fragments, is answered."""
    run_one(text.encode("utf-8", errors="surrogatepass"))
