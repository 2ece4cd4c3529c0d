"""Fleet announcements arriving over the agent's MQTT transport.

:class:`FleetChannel` owns this device's :class:`~agent.coordination.FleetBoard` and is
the transport's message handler for the fleet topics (``FleetTopics.subscriptions``).
It keeps three promises the board alone does not:

* it never raises into the transport's thread, whatever arrives;
* a rejected announcement is counted (by the board) and logged with its reason at most
  once per ``log_interval`` seconds, so a flood of bogus messages cannot flood the log;
* the main loop is woken only when what the fleet announced changed (not for every
  repeat of a retained message), so the reconciler steps at once on news.

Whether the subscription itself was refused (e.g. by the recipe's accessControl) is
kept here too, for the health report.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from agent.clock import Clock
from agent.coordination import FleetBoard, FleetNews, FleetTopics
from agent.errors import AgentError
from agent.reporting.events import AnnouncementCounts
from agent.text import clip

log = structlog.get_logger("agent.fleet")

#: Seconds between two log lines about rejected announcements.
REJECTION_LOG_INTERVAL = 60.0


def news_content(news: FleetNews) -> tuple[Any, ...]:
    """What ``news`` says, without when it was heard: equal for a repeated announcement."""
    return (
        news.released,
        {v: (j.job_name, j.status, j.reason) for v, j in news.jobs.items()},
        {v: (r.component_name, r.component_version) for v, r in news.ready.items()},
        {k: (d.target_arn, d.deployment_id) for k, d in news.deployed.items()},
        dict(news.failures),
    )


class FleetChannel:
    """Receives this device's fleet announcements into its board (transport thread)."""

    def __init__(
        self,
        board: FleetBoard,
        *,
        clock: Clock,
        wake: Callable[[], None],
        log_interval: float = REJECTION_LOG_INTERVAL,
    ) -> None:
        self.board = board
        self._clock = clock
        self._wake = wake
        self._log_interval = log_interval
        self._lock = threading.Lock()
        self._next_log = float("-inf")
        self._unlogged = 0
        #: topic filter -> why subscribing to it failed at the last attempt
        self._refused: dict[str, str] = {}

    @classmethod
    def for_device(
        cls, prefix: str, project: str, platform: str, *, clock: Clock, wake: Callable[[], None]
    ) -> FleetChannel:
        """The channel of a device of ``platform`` in ``project`` under ``prefix``."""
        board = FleetBoard(FleetTopics(prefix, project), platform, clock.now)
        return cls(board, clock=clock, wake=wake)

    def subscriptions(self) -> tuple[str, ...]:
        """The topic filters this device subscribes to."""
        return self.board.topics.subscriptions(self.board.platform)

    def handle(self, topic: str, payload: bytes) -> None:
        """One message from the transport: into the board, or counted and dropped."""
        try:
            before = news_content(self.board.news())
            if self.board.receive(topic, payload):
                if news_content(self.board.news()) != before:
                    self._wake()
                return
            self._log_rejection(topic)
        except Exception as exc:  # the transport's thread must survive any message
            log.exception("fleet announcement handler failed", topic=clip(topic, 200),
                          error=type(exc).__name__)

    @property
    def subscription_error(self) -> str | None:
        """Why a fleet subscription failed at its last attempt; None when all hold."""
        with self._lock:
            refused = sorted(self._refused.items())
        return "; ".join(clip(f"{topic}: {reason}", 300) for topic, reason in refused) or None

    def subscription_result(self, topic: str, error: AgentError | None) -> None:
        """The transport's outcome of subscribing to ``topic`` (None: subscribed)."""
        with self._lock:
            if error is None:
                self._refused.pop(topic, None)
                return
            self._refused[topic] = error.message
        log.error("fleet announcements unavailable: subscription refused",
                  topic=topic, error=error.kind, message=error.message)

    def counts(self) -> AnnouncementCounts:
        """What the health report says about announcements."""
        board = self.board
        return AnnouncementCounts(
            accepted=board.accepted,
            rejected=board.rejected,
            last_rejection=board.last_rejection,
            subscription_error=self.subscription_error,
        )

    def _log_rejection(self, topic: str) -> None:
        now = self._clock.monotonic()
        with self._lock:
            self._unlogged += 1
            if now < self._next_log:
                return
            self._next_log = now + self._log_interval
            rejected, self._unlogged = self._unlogged, 0
        log.warning("fleet announcement rejected", topic=clip(topic, 200),
                    reason=self.board.last_rejection, rejected_since_last_log=rejected,
                    rejected_total=self.board.rejected)
