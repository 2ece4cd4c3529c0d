"""The reconciler: observe, decide, execute, record; say when to look again.

Desired state: the newest packageable model version (or a pinned or requested one),
packaged for this platform and RUNNING on this device. Each :meth:`Reconciler.step`
observes the rollout store, asks the decision code (``agent.decide``, no I/O) for the next
action, performs the calls it asks for through the ports and records the outcome it
returns. The intent of every cloud action is in the store before the call (the previous
step's record), its result after; every action carries a deterministic token, so
re-running a step after a crash or kill -9 never makes a second job or deployment.

This module talks only to ports: it imports no SQLite, botocore or awscrt (a test
asserts it).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import structlog

from agent import errors
from agent.clock import TimeSource, WallClockWatch
from agent.config import AgentConfig, FleetSettings
from agent.coordination import FleetBoard, FleetTopics
from agent.decide import (
    Action,
    Answers,
    Call,
    CheckComponent,
    CreateDeployment,
    Decider,
    FindFailedDeployments,
    FindLatestVersion,
    FindPreviousRollout,
    LookUpThingArn,
    Observation,
    PollJob,
    ReadInstalled,
    ReadLatestDeployment,
    ReadProgress,
    Record,
    RequestDeriver,
    RolloutSettings,
    StartPackaging,
    Wait,
    lookout_for_vision_request,
)
from agent.platform import DetectedPlatform
from agent.ports import (
    DeploymentPort,
    FactChanges,
    LocalDeployments,
    OutgoingMessage,
    PackagingPort,
    PackagingRequest,
    RolloutStore,
)
from agent.reporting.events import ErrorInfo, StatusEvent, StatusPhase, utc_iso
from agent.rollout import Rollout

if TYPE_CHECKING:
    from agent.coordination import AnnouncementBase

log = structlog.get_logger("agent.reconciler")

#: Calls in one step at most (a step makes four at most today): a guard against a
#: decision that keeps asking.
MAX_CALLS_PER_STEP = 16

__all__ = ["Reconciler", "RolloutSettings", "settings_from_config"]


def settings_from_config(config: AgentConfig) -> RolloutSettings:
    """The decision code's view of a validated configuration."""
    return RolloutSettings(
        thing_name=config.thing_name,
        project=config.project_name,
        bucket=config.s3_bucket,
        prefix=config.s3_prefix,
        naming=config.naming,
        status_topic=config.reporting.topics.render(config.thing_name)["status"],
        check_interval=config.check_interval,
        poll_backoff=config.poll_backoff,
        job_poll_backoff=config.job_poll_backoff,
        failure_retry_seconds=config.failure_retry_seconds,
        pinned_version=config.pinned_version,
        target_arn=config.deployment_target_arn,
        failure_handling_policy=config.failure_handling_policy,
        component_tags=dict(config.component_tags) or None,
        packaging_backend=config.packaging.backend,
        fleet=config.fleet if config.fleet.enabled else None,
    )


class Reconciler:
    """Drives one device's rollouts. Not thread-safe: one caller at a time.

    ``packaging`` and ``derive`` together are the packaging backend (its adapter and how
    its requests are made); the decision code does not know which backend it is."""

    def __init__(
        self,
        *,
        settings: RolloutSettings,
        platform: DetectedPlatform,
        packaging: PackagingPort,
        deployments: DeploymentPort,
        ledger: RolloutStore,
        clock: TimeSource,
        rng: random.Random | None = None,
        derive: RequestDeriver = lookout_for_vision_request,
        fleet_board: FleetBoard | None = None,
        local_deployments: LocalDeployments | None = None,
    ) -> None:
        self.fleet_board = fleet_board
        self.platform = platform
        #: what the fleet announced (fleet coordination on), and the nucleus's reports
        self.fleet_board = fleet_board
        self.local_deployments = local_deployments
        self.packaging = packaging
        self.deployments = deployments
        self.ledger = ledger
        self.clock = clock
        #: what the nucleus says finished on this device (None: nothing, ask the cloud)
        self.local_deployments = local_deployments
        self.rng = rng or random.Random()
        self.decider = Decider(settings, platform, self.rng, derive)
        self._check_requested = False
        self._wall_watch = WallClockWatch()

    @property
    def settings(self) -> RolloutSettings:
        return self.decider.settings

    @settings.setter
    def settings(self, settings: RolloutSettings) -> None:
        self.decider.settings = settings

    # -- public ------------------------------------------------------------------------
    def request_check(self, model_version: int | None = None) -> None:
        """Look for a new version at the next step (a command or a config change)."""
        self._check_requested = True
        if model_version is not None:
            self.ledger.update_facts(FactChanges(requested_version=model_version))

    def step(self) -> float:
        """Take at most one decision's actions; return seconds until the next step is due."""
        now = self.clock.now()
        self._follow_wall_clock(now)
        observation = self.observe(now, check_requested=self._check_requested)
        self._check_requested = False
        answers = Answers()
        for _ in range(MAX_CALLS_PER_STEP):
            action = self.decider.decide(observation, answers)
            if not isinstance(action, Call):
                return self.record(action)
            answers.add(action, self.perform(action))
        raise AssertionError(f"the decision kept asking: {[type(c).__name__ for c, _ in answers.made]}")

    def observe(self, now: float, *, check_requested: bool = False) -> Observation:
        """What the store knows now."""
        rollout = self.ledger.active_rollout()
        due = None if rollout is None or rollout.id is None else self.ledger.job_poll_due(rollout.id)
        local = self.local_deployments
        return Observation(
            now=now, rollout=rollout, facts=self.ledger.facts(), job_poll_due=due,
            check_requested=check_requested,
            fleet=self.fleet_board.news() if self.fleet_board is not None else None,
            locally_completed=local.completed() if local is not None else frozenset(),
            nucleus_reports_deployments=local is not None and local.available(),
        )

    def request_for(self, version: int, attempt: int) -> PackagingRequest:
        """The packaging request this device sends for ``version`` (deterministic)."""
        return self.decider.request_for(version, attempt)

    # -- wall-clock jumps ------------------------------------------------------------------
    # Due-times are stored as wall-clock epoch seconds (they survive a restart). A jump of
    # the wall clock seen while running moves them by the same amount (the remaining wait
    # is kept); the decision code caps waits for one that happened while stopped.
    def _follow_wall_clock(self, now: float) -> None:
        jump = self._wall_watch.jump(now, self.clock.monotonic())
        if jump:
            log.warning("wall clock jumped: due-times moved with it", seconds=round(jump, 1))
            self.ledger.shift_due_times(jump)

    # -- executing -----------------------------------------------------------------------
    def perform(self, call: Call, *, remember: bool = True) -> Any:
        """Perform ``call`` through its port; an ``AgentError`` from the cloud is the
        answer (the decision code handles it), one from the store is raised.
        ``remember=False`` (``plan``): do not cache the thing's ARN."""
        if isinstance(call, FindPreviousRollout):
            previous = self.ledger.rollouts(model_version=call.model_version, limit=1)
            return previous[0] if previous else None
        if isinstance(call, FindFailedDeployments):
            return self.ledger.failed_deployment_ids()
        try:
            answer = self._call_port(call)
        except (errors.StateStorageError, errors.LedgerCorruptError):
            raise
        except errors.AgentError as error:
            return error
        if isinstance(call, LookUpThingArn) and remember:
            self.ledger.update_facts(FactChanges(thing_arn=str(answer)))
        return answer

    def _call_port(self, call: Call) -> Any:
        if isinstance(call, FindLatestVersion):
            return self.packaging.latest_version(call.project)
        if isinstance(call, StartPackaging):
            return self.packaging.start_packaging(call.request)
        if isinstance(call, PollJob):
            return self.packaging.packaging_status(call.project, call.job_name)
        if isinstance(call, LookUpThingArn):
            return self.deployments.thing_arn(call.thing_name)
        if isinstance(call, CheckComponent):
            return self.deployments.component_version_exists(call.arn_prefix, call.name, call.version)
        if isinstance(call, ReadLatestDeployment):
            return self.deployments.latest_deployment(call.target_arn)
        if isinstance(call, CreateDeployment):
            return self.deployments.create_deployment(call.target_arn, call.spec, call.token)
        if isinstance(call, ReadProgress):
            return self.deployments.progress(call.thing_name, call.deployment_id, call.component_name)
        if isinstance(call, ReadInstalled):
            return self.deployments.installed_component(call.thing_name, call.component_name)
        raise AssertionError(f"no port performs {type(call).__name__}")

    # -- recording -------------------------------------------------------------------------
    def record(self, outcome: Action) -> float:
        """Write what ``outcome`` says (atomically); returns the seconds to the next step."""
        if isinstance(outcome, Wait):
            if outcome.rebased is not None:
                self.ledger.save(outcome.rebased)
            if outcome.rebased_facts is not None:
                self.ledger.update_facts(outcome.rebased_facts)
            return outcome.seconds
        assert isinstance(outcome, Record)
        self._log(outcome)
        if outcome.rollout is None:
            if outcome.facts is not None:
                self.ledger.update_facts(outcome.facts)
            return outcome.wait
        rollout = outcome.rollout
        messages: list[OutgoingMessage] = []
        if outcome.event is not None:
            messages.append(self.status_message(rollout, outcome.event, outcome.detail, outcome.error))
        messages.extend(self.announcement_message(a) for a in outcome.announce)
        self.ledger.save(rollout, messages, outcome.facts, job_poll_due=outcome.job_poll_due)
        if outcome.event is not None:
            log.info(
                "status", phase=outcome.event.value, rollout=rollout.id, model_version=rollout.model_version,
                job=rollout.job_name, deployment=rollout.deployment_id, detail=outcome.detail,
            )
        return outcome.wait

    @staticmethod
    def _log(outcome: Record) -> None:
        rollout, error = outcome.rollout, outcome.error
        if error is None:
            if rollout is None:
                log.info(outcome.detail or "checked", next_in=round(outcome.wait, 1))
            return
        if rollout is None:
            log.warning("check failed", error=error.type, message=error.message, retry_in=round(outcome.wait, 1))
        elif rollout.phase.ended:
            log.error("rollout failed", rollout=rollout.id, error=error.type, message=error.message)
        else:
            log.warning(
                "transient error", rollout=rollout.id, phase=rollout.phase.value,
                error=error.type, message=error.message, retry_in=round(outcome.wait, 1),
            )

    def announcement_message(self, announcement: AnnouncementBase) -> OutgoingMessage:
        """A fleet announcement as an outbox message (retained: late joiners need it)."""
        fleet = self.settings.fleet
        prefix = (fleet or FleetSettings()).topic_prefix
        topic = FleetTopics(prefix, self.settings.project).topic_of(announcement)
        payload = announcement.to_json()
        if self.fleet_board is not None:
            # Heard at once by this device too (the broker echo may come later or never).
            self.fleet_board.add(announcement)
        return OutgoingMessage("announcement", topic, lambda _sequence, _epoch: payload, retain=True)

    def status_message(
        self, rollout: Rollout, event: StatusPhase, detail: str | None, error: ErrorInfo | None
    ) -> OutgoingMessage:
        """The status event of ``rollout`` as an outbox message (retained)."""
        settings = self.settings
        timestamp = utc_iso(rollout.updated_at)

        def render(sequence: int, epoch: str) -> bytes:
            return StatusEvent(
                thing_name=settings.thing_name,
                sequence=sequence,
                epoch=epoch,
                timestamp=timestamp,
                rollout_id=rollout.id or 0,
                model_version=rollout.model_version,
                platform_key=rollout.platform_key,
                attempt=rollout.attempt,
                phase=event,
                packaging_backend=settings.packaging_backend,
                job_name=rollout.job_name,
                component_name=rollout.component_name,
                component_version=rollout.component_version,
                deployment_id=rollout.deployment_id,
                detail=detail,
                error=error,
            ).to_json()

        return OutgoingMessage("status", settings.status_topic, render, retain=True)
