"""Commands received over MQTT: validate, queue for the main loop, answer through the outbox.

:meth:`CommandHandler.handle` runs on the transport's callback thread. It only parses
and validates; a bad command is answered ``REJECTED`` (naming the field and the rule) at
once, a valid one goes into a bounded queue and the main loop's next turn takes it
(:meth:`CommandHandler.process`). Nothing reaches the reconciler from another thread.

In the main loop a command id seen recently is answered as a replay of its first answer
and not executed again. Commands that cause cloud calls (``check-now``,
``deploy-version``) pass a per-device rate limit: at most one such check per
``commands.minCheckIntervalSeconds``; the rest are coalesced into the next allowed check
and answered ``DEFERRED`` with its time (``runAt``). Every payload gets exactly one
response (``ACCEPTED``, ``DEFERRED``, ``REJECTED`` or ``FAILED`` when the agent could not
act) and a log line. It never raises; a response that cannot be enqueued is logged and
dropped.
"""

from __future__ import annotations

import contextlib
import json
import queue
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog
from pydantic import ValidationError

from agent.clock import Clock
from agent.config import CommandSettings
from agent.ledger import OutgoingMessage
from agent.reporting.events import Command, CommandName, CommandResponse, utc_iso

log = structlog.get_logger("agent.commands")

Outcome = Literal["ACCEPTED", "DEFERRED", "REJECTED", "FAILED"]

#: Longest ``detail`` put into a response (a reply never grows with the input).
MAX_DETAIL = 500
#: Longest field name quoted in a detail.
_MAX_FIELD = 64
#: Valid commands waiting for the main loop; more are rejected until it catches up.
INBOX_SIZE = 100
#: How many answered command ids are remembered, and for how long (seconds), for replays.
RECENT_IDS = 256
RECENT_SECONDS = 3600.0


class CommandTarget(Protocol):
    """What commands act on (called from the main loop only)."""

    def request_check(self, model_version: int | None = None) -> None:
        """Look for a new model version (``model_version``: deploy that one) soon."""

    def report_health_now(self) -> None:
        """Send a health report soon."""

    def report_status_now(self) -> None:
        """Re-send the latest rollout status soon."""


@dataclass
class CheckGate:
    """The per-device rate limit of command-caused checks, on the monotonic clock.

    A check runs at once when none ran in the last ``min_interval`` seconds; otherwise
    one check is scheduled at the earliest allowed time and every request until then joins
    it (the newest ``deploy-version`` wins).
    """

    min_interval: float
    last_run: float | None = None
    pending_at: float | None = None
    pending_version: int | None = None

    def request(self, now: float, model_version: int | None) -> float:
        """Ask for a check; returns the monotonic time it will run (``<= now``: now)."""
        if model_version is not None:
            self.pending_version = model_version
        if self.pending_at is None:
            earliest = now if self.last_run is None else self.last_run + self.min_interval
            self.pending_at = max(now, earliest)
        return self.pending_at

    def take_due(self, now: float) -> tuple[bool, int | None]:
        """(True, version) when the pending check is due (and marks it run)."""
        if self.pending_at is None or self.pending_at > now:
            return False, None
        version = self.pending_version
        self.pending_at, self.pending_version, self.last_run = None, None, now
        return True, version

    def wait(self, now: float) -> float | None:
        """Seconds until the pending check is due, or None when none is pending."""
        return None if self.pending_at is None else max(0.0, self.pending_at - now)


@dataclass(frozen=True)
class _Answer:
    outcome: Outcome
    detail: str
    run_at: str | None
    at: float


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
        enqueue: Callable[[list[OutgoingMessage]], object],
        clock: Clock,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.thing_name = thing_name
        self.response_topic = response_topic
        self.settings = settings
        self.target = target
        self._enqueue = enqueue
        self._notify = notify or (lambda: None)
        self.clock = clock
        self.gate = CheckGate(settings.min_check_interval_seconds)
        self._inbox: queue.Queue[tuple[str, Command]] = queue.Queue(maxsize=INBOX_SIZE)
        self._recent: OrderedDict[str, _Answer] = OrderedDict()

    def handle(self, topic: str, payload: bytes) -> None:
        """Validate one received message (any thread): answer it if it is bad, else queue
        it for the main loop. Never raises."""
        try:
            self._receive(topic, payload)
        except Exception as exc:  # a bug here must never reach the transport's thread
            with contextlib.suppress(Exception):
                log.exception("command handling crashed", topic=topic, error=type(exc).__name__)

    def process(self) -> float | None:
        """Main loop only: act on the queued commands and run a deferred check that is
        due; returns seconds until the next deferred check (None: none pending)."""
        while True:
            try:
                topic, command = self._inbox.get_nowait()
            except queue.Empty:
                break
            try:
                self._handle(topic, command)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    log.exception("command handling crashed", topic=topic, error=type(exc).__name__)
        now = self.clock.monotonic()
        due, version = self.gate.take_due(now)
        if due:
            try:
                self.target.request_check(version)
            except Exception as exc:
                log.error("deferred check failed", error=type(exc).__name__, message=_message(exc))
        return self.gate.wait(now)

    # -- steps ---------------------------------------------------------------------------
    def _receive(self, topic: str, payload: bytes) -> None:
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
            self._inbox.put_nowait((topic, command))
        except queue.Full:
            detail = f"commands: {INBOX_SIZE} commands are waiting; send again later"
            log.warning("command rejected", topic=topic, id=command.id, detail=detail)
            self._respond(command.id, "REJECTED", detail)
            return
        self._notify()

    def _handle(self, topic: str, command: Command) -> None:
        now = self.clock.monotonic()
        self._forget_old(now)
        earlier = self._recent.get(command.id)
        if earlier is not None:
            log.info("command replayed", topic=topic, id=command.id, command=command.command.value)
            self._respond(command.id, earlier.outcome, earlier.detail, run_at=earlier.run_at, replay=True)
            return
        run_at: str | None = None
        outcome: Outcome
        try:
            outcome, detail, run_at = self._execute(command, now)
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
            outcome, detail = "FAILED", f"{type(exc).__name__}: {_message(exc)}"
            log.error(
                "command failed",
                topic=topic,
                id=command.id,
                command=command.command.value,
                error=type(exc).__name__,
                detail=detail,
            )
        else:
            log.info(
                "command accepted" if outcome == "ACCEPTED" else "command deferred",
                topic=topic, id=command.id, command=command.command.value, run_at=run_at,
            )
        self._remember(command.id, _Answer(outcome, detail, run_at, now))
        self._respond(command.id, outcome, detail, run_at=run_at)

    def _forget_old(self, now: float) -> None:
        while self._recent:
            oldest = next(iter(self._recent.values()))
            if now - oldest.at <= RECENT_SECONDS and len(self._recent) <= RECENT_IDS:
                break
            self._recent.popitem(last=False)

    def _remember(self, command_id: str, answer: _Answer) -> None:
        self._recent[command_id] = answer
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

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

    def _execute(self, command: Command, now: float) -> tuple[Outcome, str, str | None]:
        """Act on a valid command; returns (outcome, detail, runAt)."""
        name = command.command
        if name is CommandName.DEPLOY_VERSION:
            if command.model_version is None:
                raise _Rejected("modelVersion: required for deploy-version")
            if not self.settings.allow_deploy_version:
                raise _Rejected(
                    "deploy-version: disabled by configuration (commands.allowDeployVersion is false)"
                )
            return self._check(now, command.model_version, f"deployment of model version {command.model_version}")
        if command.model_version is not None:
            raise _Rejected(f"modelVersion: only allowed with deploy-version, not {name.value}")
        if name is CommandName.CHECK_NOW:
            return self._check(now, None, "check")
        if name is CommandName.REPORT_HEALTH:
            self.target.report_health_now()
            return "ACCEPTED", "health report requested", self._wall(now)
        self.target.report_status_now()
        return "ACCEPTED", "status report requested", self._wall(now)

    def _check(self, now: float, version: int | None, what: str) -> tuple[Outcome, str, str | None]:
        """Pass a cloud-causing request through the rate limit."""
        due = self.gate.request(now, version)
        run_at = self._wall(due)
        if due <= now:
            self.gate.take_due(now)
            self.target.request_check(version)
            return "ACCEPTED", f"{what} requested", run_at
        limit = self.settings.min_check_interval_seconds
        return (
            "DEFERRED",
            f"{what} deferred to {run_at}: at most one command-requested check per {limit:g} s "
            "(commands.minCheckIntervalSeconds); requests until then join that check",
            run_at,
        )

    def _wall(self, monotonic: float) -> str:
        """A monotonic time as the wall-clock ISO timestamp it corresponds to now."""
        return utc_iso(self.clock.now() + (monotonic - self.clock.monotonic()))

    def _respond(
        self,
        command_id: str | None,
        outcome: Outcome,
        detail: str,
        *,
        run_at: str | None = None,
        replay: bool = False,
    ) -> None:
        timestamp = utc_iso(self.clock.now())
        thing, text = self.thing_name, _truncate(detail, MAX_DETAIL)

        def render(sequence: int, epoch: str) -> bytes:
            return CommandResponse(
                thing_name=thing,
                sequence=sequence,
                epoch=epoch,
                timestamp=timestamp,
                id=command_id,
                outcome=outcome,
                detail=text,
                run_at=run_at,
                replay=replay,
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
