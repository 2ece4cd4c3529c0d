"""The periodic health report: how the agent is, what runs on the device, what it costs.

A :class:`HealthReporter` builds a :class:`~agent.reporting.events.HealthReport` from
what is true *now*: the ledger's facts (written by the reconciler and the publisher),
the active rollout, the deployed component's lifecycle state (as the rollout last saw it
in Greengrass, or from a live provider, and saying which) and the process' own resource
use. An error the reconciler has cleared is not reported.

Status levels:

* ``UNHEALTHY``: the agent cannot do its job (its state is one of ``unhealthy_states``,
  e.g. the daemon's ``DEGRADED`` for an unsupported platform, or the current error is
  an :class:`~agent.errors.UnsupportedPlatformError`).
* ``DEGRADED``: a current error, an active rollout that is failing transiently
  (throttled or with an error recorded), a backlog while the transport is down, or
  messages dropped by the outbox bound since the previous report.
* ``HEALTHY``: none of the above.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import structlog

from agent.clock import Clock
from agent.ledger import Ledger, OutgoingMessage
from agent.reporting.events import (
    AnnouncementCounts,
    DeployedModel,
    ErrorInfo,
    HealthReport,
    ResourceUse,
    utc_iso,
)
from agent.reporting.outbox import dropped_total, transport_connected

log = structlog.get_logger("agent.health")

#: Agent states that mean the agent cannot do its job. The daemon enters ``DEGRADED``
#: only when the platform is not supported (health and commands only).
UNHEALTHY_STATES: frozenset[str] = frozenset({"DEGRADED"})

#: Where the process's own CPU and memory figures are read.
PROC_SELF = Path("/proc/self")

#: Error types that make the device unable to take any model.
UNHEALTHY_ERRORS: frozenset[str] = frozenset({"UnsupportedPlatformError"})

Status = Literal["HEALTHY", "DEGRADED", "UNHEALTHY"]


class HealthReporter:
    """Builds health reports; thread-safe (one lock around the CPU sample)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        thing_name: str,
        topic: str,
        clock: Clock,
        started_at: float,
        state_provider: Callable[[], str],
        lifecycle_provider: Callable[[str], str | None] | None,
        state_dir: Path,
    ) -> None:
        self.ledger = ledger
        self.thing_name = thing_name
        self.topic = topic
        self.clock = clock
        self.started_at = started_at
        # Uptime is measured on the monotonic clock: a wall-clock jump does not change it.
        self._started_monotonic = clock.monotonic() - max(0.0, clock.now() - started_at)
        self.state_provider = state_provider
        self.lifecycle_provider = lifecycle_provider
        self.state_dir = Path(state_dir)
        self._lock = threading.Lock()
        #: set by the main loop while the ledger cannot be written (reported, not stored)
        self.storage_error: ErrorInfo | None = None
        #: why the nucleus's deployment events are not followed now (None: they are, or
        #: there is no nucleus); the agent then polls the cloud instead
        self.local_deployments_problem: Callable[[], str | None] | None = None
        #: the fleet channel's counts (set when fleet announcements are enabled)
        self.announcements_provider: Callable[[], AnnouncementCounts] | None = None
        self._cpu_sample = (time.monotonic(), self._cpu_seconds())
        self._dropped_seen = dropped_total(ledger)

    # -- public ------------------------------------------------------------------------
    def build(self) -> HealthReport:
        """A report of the agent's health as of now (sequence 0; the outbox assigns it)."""
        now = self.clock.now()
        state = self._state()
        error = self.storage_error or self._current_error()
        reset = self.ledger.take_reset_reason()
        rollout = self.ledger.active_rollout()
        depth = self.ledger.outbox_depth()
        dropped = dropped_total(self.ledger)
        with self._lock:
            dropped_since = dropped - self._dropped_seen
            self._dropped_seen = dropped
        announcements = self.announcements_provider() if self.announcements_provider else None
        reasons: list[str] = []
        status: Status = "HEALTHY"
        local_problem = self.local_deployments_problem() if self.local_deployments_problem else None
        if state in UNHEALTHY_STATES or (error is not None and error.type in UNHEALTHY_ERRORS):
            status = "UNHEALTHY"
        else:
            if error is not None:
                reasons.append(f"error {error.type}")
            if rollout is not None and (rollout.error_type is not None or rollout.throttles > 0):
                reasons.append(f"rollout {rollout.id} retrying")
            if depth > 0 and not self._transport_up():
                reasons.append(f"{depth} message(s) waiting for the transport")
            if dropped_since > 0:
                reasons.append(f"{dropped_since} message(s) dropped by the outbox bound")
            if self.storage_error is not None:
                reasons.append("the ledger cannot be written")
            if local_problem:
                reasons.append(f"no deployment events from the nucleus ({local_problem})")
            if reset is not None and "corrupt" in reset:
                reasons.append("the ledger was corrupt and replaced")
            if announcements is not None and announcements.subscription_error is not None:
                reasons.append("fleet announcements cannot be received")
            if reasons:
                status = "DEGRADED"
        if reasons:
            log.debug("health degraded", reasons=reasons)
        last_check = self.ledger.facts().last_check_at
        return HealthReport(
            thing_name=self.thing_name,
            timestamp=utc_iso(now),
            agent_state=state,
            status=status,
            uptime_seconds=round(max(0.0, self.clock.monotonic() - self._started_monotonic), 3),
            deployed=self._deployed(),
            active_rollout=None
            if rollout is None
            else {
                "id": rollout.id,
                "modelVersion": rollout.model_version,
                "phase": rollout.phase.value,
                "jobName": rollout.job_name,
                "deploymentId": rollout.deployment_id,
            },
            last_successful_check=None if last_check is None else utc_iso(last_check),
            last_error=error,
            resources=self._resources(),
            outbox_depth=depth,
            ledger_reset=reset,
            deployment_events_problem=local_problem or None,
            announcements=announcements,
        )

    def message(self) -> OutgoingMessage:
        """The current report as an outbox message (kind ``health``, not retained)."""
        report = self.build()

        def render(sequence: int, epoch: str) -> bytes:
            return report.model_copy(update={"sequence": sequence, "epoch": epoch}).to_json()

        return OutgoingMessage("health", self.topic, render, retain=False)

    # -- parts ---------------------------------------------------------------------------
    def _state(self) -> str:
        try:
            return str(self.state_provider())
        except Exception as exc:
            log.warning("agent state unavailable", error=type(exc).__name__)
            return "UNKNOWN"

    def _current_error(self) -> ErrorInfo | None:
        """The last error, only while the reconciler still holds it as current."""
        error = self.ledger.facts().last_error
        if error is None:
            return None
        return ErrorInfo(type=error.type, message=error.message)

    def _transport_up(self) -> bool:
        """As the publisher last recorded it in the ledger."""
        return bool(transport_connected(self.ledger))

    def _deployed(self) -> DeployedModel | None:
        facts = self.ledger.facts()
        model_version = facts.deployed_version
        name, component_version = facts.deployed_component_name, facts.deployed_component_version
        if not model_version or not name or not component_version:
            return None
        # A live reading when a provider gives one; else what the rollout saw in
        # Greengrass when the component started (the nucleus serves component states only
        # through the Greengrass CLI, which production devices do not run).
        if self.lifecycle_provider is not None:
            try:
                live = self.lifecycle_provider(name)
            except Exception as exc:
                live = None
                log.warning("lifecycle state unavailable", component=name, error=type(exc).__name__)
            if live is not None:
                return DeployedModel(
                    model_version=model_version,
                    component_name=name,
                    component_version=component_version,
                    lifecycle_state=live,
                    lifecycle_state_source="live",
                    lifecycle_state_observed_at=utc_iso(self.clock.now()),
                )
        observed, observed_at = facts.deployed_lifecycle_state, facts.deployed_at
        return DeployedModel(
            model_version=model_version,
            component_name=name,
            component_version=component_version,
            lifecycle_state=observed,
            lifecycle_state_source="rollout" if observed else None,
            lifecycle_state_observed_at=utc_iso(observed_at) if observed and observed_at else None,
        )

    def _resources(self) -> ResourceUse:
        wall, cpu = time.monotonic(), self._cpu_seconds()
        with self._lock:
            last_wall, last_cpu = self._cpu_sample
            self._cpu_sample = (wall, cpu)
        elapsed = wall - last_wall
        percent = 0.0 if elapsed <= 0 else max(0.0, (cpu - last_cpu) / elapsed * 100.0)
        used, free = self._disk()
        return ResourceUse(
            cpu_percent=round(percent, 2),
            memory_rss_bytes=self._rss_bytes(),
            disk_used_bytes=used,
            disk_free_bytes=free,
        )

    def _cpu_seconds(self) -> float:
        """User + system CPU time of this process (/proc/self/stat; os.times elsewhere)."""
        try:
            text = (PROC_SELF / "stat").read_text()
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = text[text.rindex(")") + 2 :].split()
            ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
            return ticks / float(os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, IndexError):
            times = os.times()
            return times.user + times.system

    def _rss_bytes(self) -> int:
        """Current resident set size (/proc/self/statm); the peak where /proc is missing."""
        try:
            pages = int((PROC_SELF / "statm").read_text().split()[1])
            return pages * int(os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, IndexError):
            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def _disk(self) -> tuple[int, int]:
        """(used, free) bytes of the file system holding the state directory."""
        path = self.state_dir
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            stats = os.statvfs(path)
        except OSError:
            return 0, 0
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        return int(used), int(stats.f_bavail * stats.f_frsize)

