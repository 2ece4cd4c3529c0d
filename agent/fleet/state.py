"""What the fleet looks like, built from the messages devices publish.

:class:`FleetState` takes every message received on the platform, status and health
topics (:meth:`FleetState.ingest`) and keeps one :class:`DeviceView` per device. It is
lenient on purpose: it reads the fields it needs and ignores the rest, so messages of
a newer schema (an ``epoch`` field, a new phase such as ``HALTED``) are understood as far
as they can be; a message it cannot read is counted, never raised.

Ordering and duplicates: delivery is at least once and retained messages arrive again
after a reconnect. A message whose ``(epoch, sequence)`` was already seen from that
device is dropped (``epoch`` may be absent); among the rest, the newest by
``(timestamp, sequence)`` wins per kind, so an older message arriving late never
overwrites a newer state, also across a new ``epoch`` whose sequences restart.

Time: "silent" compares receipt times on the *fleet clock*: the newest device timestamp
seen, advanced by the watcher's own monotonic clock since it arrived. It follows the
devices' time (also a simulated fleet's), and still moves when the whole fleet is quiet.
:meth:`FleetState.snapshot` returns an immutable summary for the views and the report.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Latest-status phases that mean the rollout stopped on this device. Compared as
#: strings, so phases the agent adds later (``HALTED``) need no code change elsewhere.
PROBLEM_PHASES: frozenset[str] = frozenset(
    {"PACKAGING_FAILED", "DEPLOYMENT_FAILED", "ROLLED_BACK", "ROLLOUT_FAILED", "HALTED"}
)
#: The phase of a device whose rollout ended with the component running.
DONE_PHASE = "COMPONENT_RUNNING"
#: Display order of the known phases; unknown ones follow in order of appearance.
PHASE_ORDER: tuple[str, ...] = (
    "CHECKING",
    "PACKAGING_STARTED",
    "PACKAGING_RUNNING",
    "PACKAGING_SUCCEEDED",
    "PACKAGING_SKIPPED",
    "DEPLOYMENT_CREATED",
    "DEPLOYMENT_IN_PROGRESS",
    "COMPONENT_RUNNING",
    "PACKAGING_FAILED",
    "DEPLOYMENT_FAILED",
    "ROLLED_BACK",
    "ROLLOUT_FAILED",
    "HALTED",
)
#: Health statuses worth an operator's look.
PROBLEM_HEALTH: frozenset[str] = frozenset({"DEGRADED", "UNHEALTHY"})
#: Column of devices that published no status yet.
NO_STATUS = "NO_STATUS"
#: How many (epoch, sequence) keys are remembered per device for de-duplication; older
#: re-deliveries are caught by the (timestamp, sequence) order anyway.
SEEN_PER_DEVICE = 64
#: Lifecycle states of the deployed model component that make the device a problem.
BROKEN_LIFECYCLE: frozenset[str | None] = frozenset({"BROKEN", "ERRORED"})
#: Lifecycle states of a deployed component that count as running it.
RUNNING_LIFECYCLE: frozenset[str | None] = frozenset({None, "RUNNING", "FINISHED"})


def parse_timestamp(value: object) -> float | None:
    """An ISO-8601 timestamp (as devices send it) as epoch seconds; None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # devices always send UTC with an offset; a naive time is ambiguous
    return parsed.timestamp()


def _error_text(value: object) -> str | None:
    """``Type: message`` of an ErrorInfo object, or None."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    message = value.get("message")
    if not kind and not message:
        return None
    return f"{kind or 'Error'}: {message or ''}".rstrip(": ").strip()


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class FleetClock:
    """The fleet's time: the newest device timestamp, advanced by a monotonic clock."""

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._anchor: tuple[float, float] | None = None  # (fleet time, monotonic) at anchor
        self._wall = wall

    def now(self) -> float:
        if self._anchor is None:
            return self._wall()
        at, mono = self._anchor
        return at + max(0.0, self._monotonic() - mono)

    def observe(self, timestamp: float) -> None:
        """A device said it is ``timestamp``: move the fleet clock forward to it."""
        if self._anchor is None or timestamp > self.now():
            self._anchor = (timestamp, self._monotonic())


@dataclass
class DeviceView:
    """Everything known about one device."""

    thing: str
    first_heard: float
    platform_key: str | None = None
    platform_description: str | None = None
    supported: bool | None = None
    platform_error: str | None = None
    # latest status
    status_version: int | None = None
    phase: str | None = None
    status_at: float | None = None
    status_error: str | None = None
    attempt: int | None = None
    # what it runs
    running_version: int | None = None
    running_at: float | None = None
    lifecycle_state: str | None = None
    # latest health
    health: str | None = None
    health_at: float | None = None
    health_heard: float | None = None
    health_error: str | None = None
    outbox_depth: int | None = None
    newest: dict[str, tuple[float, int]] = field(default_factory=dict)
    seen: set[tuple[str, int]] = field(default_factory=set)
    seen_order: deque[tuple[str, int]] = field(default_factory=deque)

    @property
    def last_error(self) -> str | None:
        """The error that explains the device's state best."""
        if self.phase in PROBLEM_PHASES and self.status_error:
            return self.status_error
        return self.health_error or self.status_error or self.platform_error

    @property
    def problem(self) -> str | None:
        """Why the device needs a look (its phase, health or platform), or None."""
        if self.supported is False:
            return "UNSUPPORTED"
        if self.phase in PROBLEM_PHASES:
            return self.phase
        if self.lifecycle_state in BROKEN_LIFECYCLE:
            return f"COMPONENT_{self.lifecycle_state}"
        if self.health in PROBLEM_HEALTH:
            return self.health
        return None


@dataclass(frozen=True)
class ProblemDevice:
    thing: str
    platform: str
    problem: str
    version: int | None
    error: str | None
    since: float | None


@dataclass(frozen=True)
class SilentDevice:
    thing: str
    platform: str
    silent_seconds: float
    last_health_at: float | None


@dataclass(frozen=True)
class PlatformRow:
    platform: str
    devices: int
    on_target: int
    in_progress: int
    problems: int
    silent: int
    versions: dict[str, int]


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at one moment, ready to show (all counts are devices)."""

    at: float
    devices: int
    target_version: int | None
    on_target: int
    in_progress: int
    problems: tuple[ProblemDevice, ...]
    silent: tuple[SilentDevice, ...]
    phases: tuple[str, ...]
    by_version_phase: dict[str, dict[str, int]]
    platforms: tuple[PlatformRow, ...]
    running: dict[str, int]
    messages: int
    unreadable: int
    duplicates: int
    health_interval: float

    @property
    def complete(self) -> bool:
        """Every known device runs the target version (or newer)."""
        return self.target_version is not None and self.devices > 0 and self.on_target == self.devices

    def summary(self) -> str:
        """The one-line summary."""
        target = f"v{self.target_version}" if self.target_version is not None else "no version yet"
        share = 100.0 * self.on_target / self.devices if self.devices else 0.0
        problems = Counter(p.problem for p in self.problems)
        failed = sum(n for k, n in problems.items() if k not in PROBLEM_HEALTH)
        degraded = sum(n for k, n in problems.items() if k in PROBLEM_HEALTH)
        return (
            f"{self.devices} devices · {target} running on {self.on_target} ({share:.0f} %) · "
            f"{self.in_progress} in progress · {failed} failed · {degraded} degraded · "
            f"{len(self.silent)} silent"
        )

    def to_json(self) -> dict[str, Any]:
        """The snapshot as plain JSON values (``fleet.json``)."""
        return {
            "at": self.at,
            "devices": self.devices,
            "targetVersion": self.target_version,
            "onTarget": self.on_target,
            "inProgress": self.in_progress,
            "complete": self.complete,
            "summary": self.summary(),
            "byVersionPhase": self.by_version_phase,
            "running": self.running,
            "platforms": [
                {
                    "platform": p.platform,
                    "devices": p.devices,
                    "onTarget": p.on_target,
                    "inProgress": p.in_progress,
                    "problems": p.problems,
                    "silent": p.silent,
                    "running": p.versions,
                }
                for p in self.platforms
            ],
            "problems": [
                {
                    "thingName": p.thing,
                    "platform": p.platform,
                    "problem": p.problem,
                    "modelVersion": p.version,
                    "error": p.error,
                    "since": p.since,
                }
                for p in self.problems
            ],
            "silent": [
                {
                    "thingName": s.thing,
                    "platform": s.platform,
                    "silentSeconds": round(s.silent_seconds, 1),
                    "lastHealthAt": s.last_health_at,
                }
                for s in self.silent
            ],
            "messages": {
                "read": self.messages,
                "unreadable": self.unreadable,
                "duplicates": self.duplicates,
            },
            "healthIntervalSeconds": self.health_interval,
        }


class FleetState:
    """Thread-safe store of the fleet's devices, fed by :meth:`ingest`."""

    def __init__(
        self,
        *,
        health_interval: float = 300.0,
        target_version: int | None = None,
        clock: FleetClock | None = None,
    ) -> None:
        self.health_interval = health_interval
        self.target_version = target_version
        self.clock = clock or FleetClock()
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceView] = {}
        self._extra_phases: list[str] = []
        #: (device timestamp, thing, version it runs from then on), in arrival order.
        self._running_history: list[tuple[float, str, int]] = []
        self.messages = 0
        self.unreadable = 0
        self.duplicates = 0

    # -- input -------------------------------------------------------------------------
    def ingest(self, topic: str, payload: bytes) -> bool:
        """Take one message; False (and counted) when it cannot be read. Never raises."""
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            data = None
        with self._lock:
            if not isinstance(data, dict):
                self.unreadable += 1
                return False
            try:
                return self._ingest(topic, data)
            except (TypeError, ValueError, AttributeError):
                self.unreadable += 1
                return False

    def receive(self, topic: str, payload: bytes) -> None:
        """:meth:`ingest` as an MQTT message handler."""
        self.ingest(topic, payload)

    def _ingest(self, topic: str, data: dict[str, Any]) -> bool:
        schema = data.get("schema")
        kind = schema.split("/")[1] if isinstance(schema, str) and schema.count("/") >= 2 else None
        thing = data.get("thingName")
        timestamp = parse_timestamp(data.get("timestamp"))
        sequence = _int(data.get("sequence"))
        if kind not in ("status", "health", "platform") or not isinstance(thing, str) or not thing:
            self.unreadable += 1
            return False
        if timestamp is None or sequence is None:
            self.unreadable += 1
            return False
        # Device time first: "heard" is on the fleet's clock even for the very first message.
        self.clock.observe(timestamp)
        device = self._devices.get(thing)
        heard = self.clock.now()
        if device is None:
            device = self._devices[thing] = DeviceView(thing=thing, first_heard=heard)
        key = (str(data.get("epoch", "")), sequence)
        if key in device.seen:
            self.duplicates += 1
            return True
        device.seen.add(key)
        device.seen_order.append(key)
        if len(device.seen_order) > SEEN_PER_DEVICE:
            device.seen.discard(device.seen_order.popleft())
        self.messages += 1
        order = (timestamp, sequence)
        newest = device.newest.get(kind)
        if newest is not None and order < newest:
            return True  # late arrival of an older state
        device.newest[kind] = order
        if kind == "status":
            self._status(device, data, timestamp)
        elif kind == "health":
            self._health(device, data, timestamp, heard)
        else:
            self._platform(device, data)
        return True

    def _status(self, device: DeviceView, data: dict[str, Any], at: float) -> None:
        phase = data.get("phase")
        version = _int(data.get("modelVersion"))
        if not isinstance(phase, str) or version is None:
            raise ValueError("status without phase or modelVersion")
        if phase not in PHASE_ORDER and phase not in self._extra_phases:
            self._extra_phases.append(phase)
        device.phase, device.status_version, device.status_at = phase, version, at
        device.status_error = _error_text(data.get("error"))
        device.attempt = _int(data.get("attempt"))
        key = data.get("platformKey")
        if isinstance(key, str) and key and device.platform_key is None:
            device.platform_key = key
        if phase == DONE_PHASE:
            self._runs(device, version, at)

    def _health(self, device: DeviceView, data: dict[str, Any], at: float, heard: float) -> None:
        status = data.get("status")
        device.health = status if isinstance(status, str) else None
        device.health_at, device.health_heard = at, heard
        device.health_error = _error_text(data.get("lastError"))
        device.outbox_depth = _int(data.get("outboxDepth"))
        deployed = data.get("deployed")
        device.lifecycle_state = None
        if isinstance(deployed, dict):
            version = _int(deployed.get("modelVersion"))
            state = deployed.get("lifecycleState")
            device.lifecycle_state = state if isinstance(state, str) else None
            if version is not None and device.lifecycle_state in RUNNING_LIFECYCLE:
                self._runs(device, version, at)

    def _platform(self, device: DeviceView, data: dict[str, Any]) -> None:
        supported = data.get("supported")
        device.supported = supported if isinstance(supported, bool) else None
        device.platform_error = _error_text(data.get("error"))
        platform = data.get("platform")
        if isinstance(platform, dict):
            key = platform.get("key")
            if isinstance(key, str) and key:
                device.platform_key = key
            description = platform.get("description")
            if isinstance(description, str):
                device.platform_description = description

    def _runs(self, device: DeviceView, version: int, at: float) -> None:
        if device.running_at is not None and at < device.running_at:
            return
        if device.running_version != version:
            self._running_history.append((at, device.thing, version))
        device.running_version, device.running_at = version, at

    # -- output ------------------------------------------------------------------------
    def devices(self) -> list[DeviceView]:
        """Copies of the device views, by thing name."""
        with self._lock:
            return [
                DeviceView(**{**vars(d), "newest": {}, "seen": set(), "seen_order": deque()})
                for _, d in sorted(self._devices.items())
            ]

    def running_history(self) -> list[tuple[float, str, int]]:
        """(device timestamp, thing, version) each time a device started running a version."""
        with self._lock:
            return list(self._running_history)

    def snapshot(self) -> FleetSnapshot:
        """The fleet as of now."""
        with self._lock:
            now = self.clock.now()
            devices = list(self._devices.values())
            phases = [p for p in PHASE_ORDER] + list(self._extra_phases)
            return _summarize(
                devices, now, self._target(devices), phases, self.health_interval,
                self.messages, self.unreadable, self.duplicates,
            )

    def _target(self, devices: Iterable[DeviceView]) -> int | None:
        if self.target_version is not None:
            return self.target_version
        versions = [
            v for d in devices for v in (d.status_version, d.running_version) if v is not None
        ]
        return max(versions, default=None)


def _summarize(
    devices: list[DeviceView],
    now: float,
    target: int | None,
    phases: list[str],
    health_interval: float,
    messages: int,
    unreadable: int,
    duplicates: int,
) -> FleetSnapshot:
    silence_limit = 2.0 * health_interval
    by_version_phase: dict[str, Counter[str]] = {}
    running: Counter[str] = Counter()
    platforms: dict[str, list[DeviceView]] = {}
    problems: list[ProblemDevice] = []
    silent: list[SilentDevice] = []
    on_target = in_progress = 0
    silent_things: set[str] = set()
    for d in devices:
        platform = d.platform_key or "unknown"
        platforms.setdefault(platform, []).append(d)
        version = "-" if d.status_version is None else str(d.status_version)
        by_version_phase.setdefault(version, Counter())[d.phase or NO_STATUS] += 1
        running["-" if d.running_version is None else str(d.running_version)] += 1
        done = _on_target(d, target)
        on_target += done
        problem = d.problem
        if problem is not None:
            problems.append(
                ProblemDevice(
                    d.thing, platform, problem, d.status_version, d.last_error,
                    d.status_at if problem in PROBLEM_PHASES else d.health_at,
                )
            )
        elif not done and d.phase is not None and d.phase != DONE_PHASE:
            in_progress += 1
        quiet_since = d.health_heard if d.health_heard is not None else d.first_heard
        if now - quiet_since > silence_limit:
            silent.append(SilentDevice(d.thing, platform, now - quiet_since, d.health_at))
            silent_things.add(d.thing)
    if any(NO_STATUS in c for c in by_version_phase.values()):
        phases = [*phases, NO_STATUS]
    used = {p for c in by_version_phase.values() for p in c}
    rows = tuple(
        PlatformRow(
            platform=key,
            devices=len(members),
            on_target=sum(1 for d in members if _on_target(d, target)),
            in_progress=sum(
                1 for d in members
                if d.problem is None and d.phase not in (None, DONE_PHASE) and not _on_target(d, target)
            ),
            problems=sum(1 for d in members if d.problem is not None),
            silent=sum(1 for d in members if d.thing in silent_things),
            versions=dict(sorted(Counter(
                "-" if d.running_version is None else str(d.running_version) for d in members
            ).items(), key=_version_key)),
        )
        for key, members in sorted(platforms.items())
    )
    return FleetSnapshot(
        at=now,
        devices=len(devices),
        target_version=target,
        on_target=on_target,
        in_progress=in_progress,
        problems=tuple(sorted(problems, key=lambda p: (_SEVERITY.get(p.problem, 0), p.thing))),
        silent=tuple(sorted(silent, key=lambda s: (-s.silent_seconds, s.thing))),
        phases=tuple(p for p in phases if p in used),
        by_version_phase={
            v: {p: c[p] for p in phases if c[p]}
            for v, c in sorted(by_version_phase.items(), key=_version_key, reverse=True)
        },
        platforms=rows,
        running=dict(sorted(running.items(), key=_version_key, reverse=True)),
        messages=messages,
        unreadable=unreadable,
        duplicates=duplicates,
        health_interval=health_interval,
    )


def _on_target(device: DeviceView, target: int | None) -> bool:
    """The device runs ``target`` or newer, and its model component is not broken."""
    return (
        target is not None
        and device.running_version is not None
        and device.running_version >= target
        and device.lifecycle_state not in BROKEN_LIFECYCLE
    )


#: Problem order in lists: stopped rollouts first, then platform, then health.
_SEVERITY: dict[str, int] = {"UNSUPPORTED": 1, "UNHEALTHY": 2, "DEGRADED": 3}


def _version_key(item: tuple[str, object]) -> int:
    """Sort key of a version label: numbers by value, ``-`` (none) lowest."""
    return int(item[0]) if item[0].isdigit() else -1
