"""Commands received over MQTT: validate, hand to the agent, answer through the outbox.

:meth:`CommandHandler.handle` runs on the transport's callback thread, so it only
validates, calls :class:`CommandTarget` methods that set flags or events, and enqueues
one :class:`~agent.reporting.events.CommandResponse`. It never raises: every payload
gets exactly one response (``ACCEPTED``, ``REJECTED`` with the field and the rule, or
``FAILED`` when the agent could not act), and a log line. A response that cannot even be
enqueued is logged and dropped.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import structlog
from pydantic import ValidationError

from agent.clock import Clock
from agent.config import CommandSettings
from agent.ledger import OutgoingMessage
from agent.reporting.events import Command, CommandName, CommandResponse, utc_iso

log = structlog.get_logger("agent.commands")

Outcome = Literal["ACCEPTED", "REJECTED", "FAILED"]

#: Longest ``detail`` put into a response (a reply never grows with the input).
MAX_DETAIL = 500
#: Longest field name quoted in a detail.
_MAX_FIELD = 64


class CommandTarget(Protocol):
    """What commands act on. Each method must return quickly (set a flag or an event)."""

    def request_check(self, model_version: int | None = None) -> None:
        """Look for a new model version (``model_version``: deploy that one) soon."""

    def report_health_now(self) -> None:
        """Send a health report soon."""

    def report_status_now(self) -> None:
        """Re-send the latest rollout status soon."""


class _Rejected(Exception):
    def __init__(self, detail: str, command_id: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.command_id = command_id


class CommandHandler:
    """Turns command payloads into target calls and durable responses."""

    def __init__(
        self,
        *,
        thing_name: str,
        response_topic: str,
        settings: CommandSettings,
        target: CommandTarget,
        enqueue: Callable[[list[OutgoingMessage]], None],
        clock: Clock,
    ) -> None:
        self.thing_name = thing_name
        self.response_topic = response_topic
        self.settings = settings
        self.target = target
        self._enqueue = enqueue
        self.clock = clock

    def handle(self, topic: str, payload: bytes) -> None:
        """Act on one received message and enqueue its response. Never raises."""
        try:
            self._handle(topic, payload)
        except Exception as exc:  # a bug here must never reach the transport's thread
            with contextlib.suppress(Exception):
                log.exception("command handling crashed", topic=topic, error=type(exc).__name__)

    # -- steps ---------------------------------------------------------------------------
    def _handle(self, topic: str, payload: bytes) -> None:
        size = len(payload)
        try:
            command = self._parse(payload)
        except _Rejected as rejected:
            log.warning(
                "command rejected",
                topic=topic,
                id=rejected.command_id,
                bytes=size,
                detail=rejected.detail,
            )
            self._respond(rejected.command_id, "REJECTED", rejected.detail)
            return
        try:
            detail = self._execute(command)
        except _Rejected as rejected:
            log.warning(
                "command rejected",
                topic=topic,
                id=command.id,
                command=command.command.value,
                detail=rejected.detail,
            )
            self._respond(command.id, "REJECTED", rejected.detail)
            return
        except Exception as exc:
            detail = f"{type(exc).__name__}: {_message(exc)}"
            log.error(
                "command failed",
                topic=topic,
                id=command.id,
                command=command.command.value,
                error=type(exc).__name__,
                detail=detail,
            )
            self._respond(command.id, "FAILED", detail)
            return
        log.info("command accepted", topic=topic, id=command.id, command=command.command.value)
        self._respond(command.id, "ACCEPTED", detail)

    def _parse(self, payload: bytes) -> Command:
        if not self.settings.enabled:
            raise _Rejected("commands: disabled by configuration (commands.enabled is false)")
        raw = bytes(payload)
        limit = self.settings.max_payload_bytes
        if len(raw) > limit:
            raise _Rejected(
                f"payload: {len(raw)} bytes exceeds the limit of {limit} bytes "
                "(commands.maxPayloadBytes)"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Rejected(f"payload: not valid UTF-8 (byte {exc.start})") from None
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise _Rejected(f"payload: not valid JSON ({_message(exc)})") from None
        if not isinstance(data, dict):
            raise _Rejected(f"payload: must be a JSON object, got {_json_type(data)}")
        try:
            return Command.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            readable_id = data.get("id") if isinstance(data.get("id"), str) else None
            if any(e["loc"][:1] == ("id",) for e in errors):
                readable_id = None
            raise _Rejected(_describe(errors), readable_id) from None

    def _execute(self, command: Command) -> str:
        """Call the target; returns the ACCEPTED detail."""
        name = command.command
        if name is CommandName.DEPLOY_VERSION:
            if command.model_version is None:
                raise _Rejected("modelVersion: required for deploy-version")
            if not self.settings.allow_deploy_version:
                raise _Rejected(
                    "deploy-version: disabled by configuration (commands.allowDeployVersion is false)"
                )
            self.target.request_check(command.model_version)
            return f"deployment of model version {command.model_version} requested"
        if command.model_version is not None:
            raise _Rejected(f"modelVersion: only allowed with deploy-version, not {name.value}")
        if name is CommandName.CHECK_NOW:
            self.target.request_check()
            return "check requested"
        if name is CommandName.REPORT_HEALTH:
            self.target.report_health_now()
            return "health report requested"
        self.target.report_status_now()
        return "status report requested"

    def _respond(self, command_id: str | None, outcome: Outcome, detail: str) -> None:
        timestamp = utc_iso(self.clock.now())
        thing, text = self.thing_name, _truncate(detail, MAX_DETAIL)

        def render(sequence: int) -> bytes:
            return CommandResponse(
                thing_name=thing,
                sequence=sequence,
                timestamp=timestamp,
                id=command_id,
                outcome=outcome,
                detail=text,
            ).to_json()

        message = OutgoingMessage("command-response", self.response_topic, render, retain=False)
        try:
            self._enqueue([message])
        except Exception as exc:
            log.error(
                "command response dropped",
                id=command_id,
                outcome=outcome,
                error=type(exc).__name__,
                message=_message(exc),
            )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _describe(errors: Sequence[Any]) -> str:
    """``field: rule`` for every validation error, e.g. ``id: String should match ...``."""
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error["loc"]) or "payload"
        if error["type"] == "extra_forbidden":
            rule = "unknown field (extra fields are not permitted)"
        elif error["type"] == "missing":
            rule = "required"
        else:
            rule = str(error["msg"])
        parts.append(f"{_truncate(_printable(field), _MAX_FIELD)}: {rule}")
    return "; ".join(parts) or "payload: invalid command"


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(exc: BaseException) -> str:
    return _truncate(_printable(str(exc)), 200)
