"""The decision code: given what the agent knows, what is the next action? No I/O.

:meth:`Decider.decide` takes an :class:`Observation` (the active rollout, the facts, the
clock's now) and the :class:`Answers` of the calls made so far in this step, and returns
one action as a value:

* a **call** (:class:`FindLatestVersion`, :class:`StartPackaging`, :class:`PollJob`,
  :class:`CreateDeployment`, ...): the executor (``agent.reconciler``) performs it through
  a port and decides again with its answer (a value or an ``AgentError``);
* a **record** (:class:`Record`): the state change to write (rollout, status event,
  facts) and the seconds until the next step; this ends the step;
* a **wait** (:class:`Wait`): nothing is due yet.

``plan`` runs the same code and prints the actions instead of performing the writing ones.
The phases of a rollout (``agent.rollout.Phase``) and the calls that move them::

    (check finds version V > deployed)
          │
    PACKAGING_REQUESTED ──component exists──────────────┐
          │ StartPackaging (client token)               │
    PACKAGING ──FAILED──> FAILED (retry after back-off) │
          │ SUCCEEDED (or the component appeared)       │
    DEPLOY_REQUESTED <──────────────────────────────────┘
          │ CreateDeployment (clientToken), carrying over the target's components
    DEPLOYING ──failed / rolled back──> FAILED
          │ component RUNNING on this device
    SUCCEEDED
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from agent import errors
from agent.clock import Backoff, JitteredInterval, ThrottleAdaptation, capped_wait
from agent.config import FleetSettings
from agent.coordination import (
    Deployed,
    Failed,
    FleetNews,
    JobNews,
    Ready,
    Released,
    Succeeded,
    stamp,
)
from agent.platform import DetectedPlatform
from agent.ports import (
    KEEP,
    DeploymentProgress,
    DeploymentSpec,
    FactChanges,
    Facts,
    Keep,
    LastError,
    PackagingJob,
    PackagingRequest,
)
from agent.reporting.events import ErrorInfo, StatusPhase
from agent.request import NamingTemplates, deployment_token, derive_request
from agent.rollout import Phase, Rollout

if TYPE_CHECKING:
    from agent.coordination import AnnouncementBase

_RUNNING_STATES = {"RUNNING", "FINISHED"}
_EXECUTION_FAILED = {"FAILED", "TIMED_OUT", "REJECTED", "CANCELED"}
_DEPLOYMENT_FAILED = {"FAILED", "CANCELED"}

@dataclass(frozen=True)
class RolloutSettings:
    """What the decision code needs from the configuration."""

    thing_name: str
    project: str
    bucket: str
    prefix: str
    naming: NamingTemplates
    status_topic: str
    check_interval: JitteredInterval
    poll_backoff: Backoff
    job_poll_backoff: Backoff
    failure_retry_seconds: float
    pinned_version: int | None = None
    target_arn: str | None = None
    failure_handling_policy: str = "ROLLBACK"
    component_tags: dict[str, str] | None = None
    #: the configured packaging backend (status messages name it)
    packaging_backend: str = "lookoutvision"
    #: how throttled and successful checks stretch and shrink ``check_interval``
    check_adaptation: ThrottleAdaptation = field(default_factory=ThrottleAdaptation)
    #: fleet coordination (announcements, canary waves); None: this device acts alone
    fleet: FleetSettings | None = None


#: The status event that describes a rollout resting in each phase (``status`` on
#: request). The one mapping between the two vocabularies: a phase is where a rollout
#: is, a status event is what happened to it.
STATUS_OF_PHASE: dict[Phase, StatusPhase] = {
    Phase.PACKAGING_REQUESTED: StatusPhase.CHECKING,
    Phase.PACKAGING: StatusPhase.PACKAGING_RUNNING,
    Phase.DEPLOY_REQUESTED: StatusPhase.PACKAGING_SUCCEEDED,
    Phase.DEPLOYING: StatusPhase.DEPLOYMENT_IN_PROGRESS,
    Phase.SUCCEEDED: StatusPhase.COMPONENT_RUNNING,
    Phase.FAILED: StatusPhase.ROLLOUT_FAILED,
    Phase.HALTED: StatusPhase.HALTED,
}

#: Greengrass calls per second a fleet's spread-out deployment calls and confirmations aim
#: at: a third of the control plane's 30 requests/s per Region, so that two canary waves'
#: confirmations may overlap and still leave room for everything else.
FLEET_GREENGRASS_CALLS_PER_SECOND = 10.0
#: Greengrass calls one device makes to confirm a deployment its nucleus reported
#: (ReadInstalled: one ListInstalledComponents page).
CONFIRM_CALLS = 1
#: ``last_reported`` key of a deployment the nucleus said it applied (confirmation pending).
APPLIED_LOCALLY = "APPLIED_LOCALLY"


# -- calls: performed by the executor, answered back ------------------------------------------
@dataclass(frozen=True)
class Call:
    """An action that asks a port (or the store) something; ``writes`` when it changes the
    cloud (``plan`` stops there)."""

    writes = False

    def describe(self) -> dict[str, Any]:
        """The call as plain data (``plan`` prints it)."""
        data: dict[str, Any] = {"action": type(self).__name__}
        for name, value in vars(self).items():
            if hasattr(value, "api_kwargs"):  # a backend's packaging request
                value = value.api_kwargs()
            elif isinstance(value, DeploymentSpec):
                value = {"components": value.components, "replacesName": value.name}
            data[name] = value
        return data


@dataclass(frozen=True)
class FindLatestVersion(Call):
    project: str


@dataclass(frozen=True)
class LookUpThingArn(Call):
    thing_name: str


@dataclass(frozen=True)
class FindPreviousRollout(Call):
    """The newest earlier rollout of ``model_version`` (the store answers)."""

    model_version: int


@dataclass(frozen=True)
class FindFailedDeployments(Call):
    """Deployments a rollout of this device saw fail (the store answers)."""


@dataclass(frozen=True)
class CheckComponent(Call):
    arn_prefix: str
    name: str
    version: str


@dataclass(frozen=True)
class StartPackaging(Call):
    request: PackagingRequest
    writes = True


@dataclass(frozen=True)
class PollJob(Call):
    project: str
    job_name: str


@dataclass(frozen=True)
class ReadLatestDeployment(Call):
    target_arn: str


@dataclass(frozen=True)
class CreateDeployment(Call):
    target_arn: str
    spec: DeploymentSpec
    token: str
    writes = True


@dataclass(frozen=True)
class ReadInstalled(Call):
    """The model component as installed on this device (ListInstalledComponents)."""

    thing_name: str
    component_name: str


@dataclass(frozen=True)
class ReadProgress(Call):
    thing_name: str
    deployment_id: str
    component_name: str


# -- outcomes: end a step ------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """Write this state change (atomically) and step again in ``wait`` seconds."""

    wait: float
    rollout: Rollout | None = None
    event: StatusPhase | None = None
    detail: str | None = None
    error: ErrorInfo | None = None
    facts: FactChanges | None = None
    #: the rollout's next job-status poll (KEEP: unchanged)
    job_poll_due: float | Keep | None = KEEP
    #: fleet announcements to publish (retained) with this change
    announce: tuple[AnnouncementBase, ...] = ()

    def describe(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": "Record", "waitSeconds": round(self.wait, 3)}
        if self.rollout is not None:
            data["phase"] = self.rollout.phase.value
            data["modelVersion"] = self.rollout.model_version
        if self.event is not None:
            data["event"] = self.event.value
        if self.detail:
            data["detail"] = self.detail
        if self.error is not None:
            data["error"] = {"type": self.error.type, "message": self.error.message}
        if self.announce:
            data["announce"] = [getattr(a, "kind", type(a).__name__) for a in self.announce]
        return data


@dataclass(frozen=True)
class Wait:
    """Nothing is due for ``seconds``; ``rebased`` is a rollout whose due-time was further
    away than any wait could have set (the wall clock went back) and must be stored."""

    seconds: float
    rebased: Rollout | None = None
    rebased_facts: FactChanges | None = None

    def describe(self) -> dict[str, Any]:
        return {"action": "Wait", "seconds": round(self.seconds, 3)}


Action = Call | Record | Wait


@dataclass(frozen=True)
class Observation:
    """What the agent knows at the start of a step."""

    now: float
    rollout: Rollout | None
    facts: Facts
    #: the active rollout's next job-status poll (epoch seconds), if stored
    job_poll_due: float | None = None
    #: a command or configuration change asked for a check now
    check_requested: bool = False
    #: what the fleet announced (None: fleet coordination off)
    fleet: FleetNews | None = None
    #: deployment ids this device's nucleus reported finished (post-update events); a
    #: hint that the cloud holds the outcome now, not the outcome itself
    locally_completed: frozenset[str] = frozenset()
    #: whether the nucleus reports applied deployments at all (else the cloud is polled)
    nucleus_reports_deployments: bool = False


@dataclass
class Answers:
    """The calls made in this step, in order, and what each answered (a value or an
    AgentError). The same call asked twice (a component checked again after a conflict)
    is asked of the port twice."""

    made: list[tuple[Call, Any]] = field(default_factory=list)

    def add(self, call: Call, answer: Any) -> None:
        self.made.append((call, answer))

    def answer(self, position: int, call: Call) -> tuple[bool, Any]:
        """The answer to the ``position``-th call of the step, which must be ``call``
        (the decision code is deterministic, so a replay asks the same calls in order)."""
        if position >= len(self.made):
            return False, None
        made, answer = self.made[position]
        if made != call:
            raise AssertionError(f"call {position} was {made}, now {call}")
        return True, answer


class _Need(Exception):
    """Raised inside the decision code when a call has no answer yet."""

    def __init__(self, call: Call) -> None:
        super().__init__(type(call).__name__)
        self.call = call


#: How a backend derives its request: (settings, platform, model version, attempt).
RequestDeriver = Callable[[RolloutSettings, DetectedPlatform, int, int], PackagingRequest]


def lookout_for_vision_request(
    settings: RolloutSettings, platform: DetectedPlatform, version: int, attempt: int
) -> PackagingRequest:
    """The Lookout for Vision StartModelPackagingJob request (the default backend)."""
    return derive_request(
        project=settings.project,
        model_version=version,
        platform=platform,
        attempt=attempt,
        bucket=settings.bucket,
        prefix=settings.prefix,
        templates=settings.naming,
        tags=settings.component_tags,
    )


class Decider:
    """The decision code for one device. Holds no state between calls; draws jitter from
    ``rng`` (injected, so tests are deterministic). ``derive`` makes the packaging
    backend's request; nothing else here knows which backend packages."""

    def __init__(
        self,
        settings: RolloutSettings,
        platform: DetectedPlatform,
        rng: random.Random,
        derive: RequestDeriver = lookout_for_vision_request,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.rng = rng
        self.derive = derive
        self._answers = Answers()
        self._asked = 0

    # -- public ----------------------------------------------------------------------------
    def decide(self, observation: Observation, answers: Answers) -> Action:
        """The next action for ``observation`` given the calls answered so far."""
        self._answers, self._asked = answers, 0
        try:
            return self._decide(observation)
        except _Need as need:
            return need.call
        finally:
            self._answers = Answers()

    def request_for(self, version: int, attempt: int) -> PackagingRequest:
        """The packaging request this device sends for ``version`` (deterministic)."""
        return self.derive(self.settings, self.platform, version, attempt)

    def merged_deployment(self, latest: DeploymentSpec | None, name: str, version: str) -> DeploymentSpec:
        """The target's latest deployment with our component at ``version``.

        A deployment replaces the previous one to the same target, so everything it held
        (the agent itself included) is carried over; only our component's entry changes.
        """
        components: dict[str, dict[str, Any]] = {}
        if latest is not None:
            components = {k: dict(v) for k, v in latest.components.items()}
        components[name] = {"componentVersion": version}
        policies = latest.policies if latest is not None and latest.policies else None
        if policies is None:
            policies = {
                "failureHandlingPolicy": self.settings.failure_handling_policy,
                "componentUpdatePolicy": {"action": "NOTIFY_COMPONENTS", "timeoutInSeconds": 60},
            }
        return DeploymentSpec(
            deployment_id="",
            name=(latest.name if latest is not None and latest.name else None)
            or f"l4v-edge-agent-{self.settings.thing_name}",
            components=components,
            policies=policies,
            iot_job_configuration=latest.iot_job_configuration if latest is not None else None,
            tags=dict(latest.tags) if latest is not None else {},
        )

    # -- asking ----------------------------------------------------------------------------
    def _ask(self, call: Call) -> Any:
        """The answer to ``call`` (re-raising the error it answered with), or stop the
        decision here and return ``call`` as the action."""
        found, answer = self._answers.answer(self._asked, call)
        self._asked += 1
        if not found:
            raise _Need(call)
        if isinstance(answer, errors.AgentError):
            raise answer
        return answer

    def _thing_arn(self, facts: Facts) -> str:
        if facts.thing_arn:
            return facts.thing_arn
        return str(self._ask(LookUpThingArn(self.settings.thing_name)))

    def _arn_prefix(self, facts: Facts) -> str:
        parts = self._thing_arn(facts).split(":")
        return f"arn:{parts[1]}:greengrass:{parts[3]}:{parts[4]}"

    def _component_exists(self, facts: Facts, name: str, version: str) -> bool:
        return bool(self._ask(CheckComponent(self._arn_prefix(facts), name, version)))

    # -- the step --------------------------------------------------------------------------
    @property
    def fleet(self) -> FleetSettings | None:
        """Fleet coordination settings, when it is on."""
        fleet = self.settings.fleet
        return fleet if fleet is not None and fleet.enabled else None

    def _decide(self, obs: Observation) -> Action:
        rollout = obs.rollout
        if rollout is not None:
            wait = self._action_wait(rollout, obs.now)
            if wait.seconds > 0 and not obs.check_requested and not self._news_moves(obs, rollout):
                return wait
            return self._advance(obs, rollout)
        wait = self._check_wait(obs)
        if wait.seconds > 0 and not obs.check_requested and self._hinted_version(obs) is None:
            return wait
        return self._check(obs)

    # Due-times are stored as wall-clock epoch seconds (they survive a restart). One that
    # happened while the agent was stopped is caught by capping every wait at the longest
    # one that could have set it (a jump seen while running is followed by the executor).
    def _longest_action_wait(self) -> float:
        longest = max(self.settings.poll_backoff.cap, self.settings.job_poll_backoff.cap)
        fleet = self.fleet
        if fleet is None:
            return longest
        waves = max(k * fleet.wave_delay_seconds + self._deploy_spread(fleet, k) for k in range(len(fleet.waves)))
        return max(
            longest,
            fleet.poller_fallback_seconds + fleet.suppression_seconds,
            waves,
            fleet.deployment_watch_seconds,
            max(self._confirm_spread(fleet, k) for k in range(len(fleet.waves))),
        )

    def _longest_check_wait(self, facts: Facts) -> float:
        # The stored interval factor was written with the due-time it stretched (one
        # FactChanges), so it bounds that wait; it never exceeds the adaptation's cap.
        factor = self._check_factor(facts)
        interval = self.settings.check_interval
        return max(
            interval.seconds * (1 + interval.jitter) * factor,
            self.settings.failure_retry_seconds,
            self._longest_action_wait() * factor,
        )

    def _check_factor(self, facts: Facts) -> float:
        return self.settings.check_adaptation.bounded(facts.check_interval_factor)

    def _action_wait(self, rollout: Rollout, now: float) -> Wait:
        longest = self._longest_action_wait()
        wait = capped_wait(rollout.next_action_at, now, longest)
        if rollout.next_action_at - now > longest:
            return Wait(wait, rebased=rollout.model_copy(update={"next_action_at": now + wait}))
        return Wait(wait)

    def _check_wait(self, obs: Observation) -> Wait:
        due = obs.facts.next_check_at or 0.0
        longest = self._longest_check_wait(obs.facts)
        wait = capped_wait(due, obs.now, longest)
        if due - obs.now > longest:
            return Wait(wait, rebased_facts=FactChanges(next_check_at=obs.now + wait))
        return Wait(wait)

    # -- checking --------------------------------------------------------------------------
    def _check(self, obs: Observation) -> Action:
        now, facts = obs.now, obs.facts
        requested = facts.requested_version
        hinted = None if requested else self._hinted_version(obs)
        try:
            desired = (
                requested
                if requested
                else self.settings.pinned_version
                or hinted
                or int(self._ask(FindLatestVersion(self.settings.project)))
            )
        except errors.TransientError as error:
            return self._check_failed(now, facts, error, retry=True)
        except errors.TerminalError as error:
            return self._check_failed(now, facts, error, retry=False)
        deployed = facts.deployed_version or 0
        pinned_or_requested = bool(requested) or self.settings.pinned_version is not None
        # The service answered: the interval creeps back towards the budget's.
        factor = self.settings.check_adaptation.succeeded(facts.check_interval_factor)

        def checked(next_check: float) -> FactChanges:
            if hinted:
                # Not a check: our own next check stays where it was, so the fleet's
                # checks stay spread over the interval (re-timing them all from one
                # announcement would leave the fleet blind for most of an interval);
                # the next hint may start a rollout only hintMinIntervalSeconds later.
                return FactChanges(last_hint_at=now, hinted_version=hinted)
            return FactChanges(
                last_check_at=now, last_error=None, next_check_at=next_check, requested_version=None,
                halt_lifted_version=requested if requested else KEEP,
                check_interval_factor=factor,
            )

        # Never go back on our own: only a pin or a command may ask for an older version.
        if desired == deployed or (desired < deployed and not pinned_or_requested):
            next_check_at = now + self.settings.check_interval.next(self.rng) * factor
            return Record(next_check_at - now, facts=checked(next_check_at), detail="up to date")
        previous: Rollout | None = self._ask(FindPreviousRollout(desired))
        # Jitter is drawn only after the last call: a replay draws nothing twice.
        next_check_at = now + self.settings.check_interval.next(self.rng) * factor
        attempt = 1
        if previous is not None:
            last = previous
            attempt = last.attempt + 1
            fixed: Rollout | None = None
            if last.ended_at is not None and last.ended_at > now:
                # It ended "in the future": the wall clock went back while we were stopped.
                fixed = last = last.model_copy(update={"ended_at": now})
            if last.phase is Phase.HALTED and not requested:
                # Only an operator (deploy-version) or a newer version lifts a halt.
                return Record(next_check_at - now, rollout=fixed, facts=checked(next_check_at),
                              detail=f"v{desired} halted by canary failures")
            if hinted and last.phase is not Phase.FAILED:
                return Record(next_check_at - now, rollout=fixed, facts=checked(next_check_at),
                              detail=f"v{desired} announced; already rolled out")
            retry_at = (last.ended_at or now) + self.settings.failure_retry_seconds
            if last.phase is Phase.FAILED and retry_at > now and not requested:
                next_check = min(retry_at, next_check_at)
                return Record(next_check - now, rollout=fixed, facts=checked(next_check),
                              detail=f"retry of v{desired} not due yet")
        request = self.request_for(desired, attempt)
        pause = self.settings.poll_backoff.delay(0, self.rng)
        announce: tuple[AnnouncementBase, ...] = ()
        fleet = self.fleet
        if fleet is not None:
            # Only one device of the platform should start the job: wait a random moment
            # and see whether another announces it first.
            pause = self.rng.uniform(0, fleet.suppression_seconds)
            news = obs.fleet or FleetNews()
            if not hinted and (news.released or 0) < desired:
                announce = (Released(thing_name=self.settings.thing_name, sent_at=stamp(now),
                                     model_version=desired),)
        rollout = Rollout(
            model_version=desired,
            platform_key=self.platform.key,
            attempt=attempt,
            phase=Phase.PACKAGING_REQUESTED,
            job_name=request.job_name,
            client_token=request.client_token,
            component_name=request.component_name,
            component_version=request.component_version,
            # A short jittered pause before StartPackaging: back to back with the
            # version lookup just made, a fleet's checks would reach the account's
            # requests/s quota in pairs.
            next_action_at=now + pause,
            started_at=now,
            updated_at=now,
        )
        record = self._record(
            rollout, StatusPhase.CHECKING, facts=checked(next_check_at),
            detail=f"deployed={deployed or 'none'}" + (" (announced)" if hinted else ""),
            wait=rollout.next_action_at - now,
        )
        return replace(record, announce=announce)

    def _check_failed(self, now: float, facts: Facts, error: errors.AgentError, *, retry: bool) -> Record:
        factor = self._check_factor(facts)
        if not retry:
            delay = self.settings.check_interval.next(self.rng) * factor
        elif isinstance(error, errors.ThrottledError):
            # The account's quota is used up right now (by the fleet): back off harder,
            # as for every other throttled call, escalating with the throttles in a row
            # (the factor doubles with each), but never past the job-poll cap, so a
            # release is still found soon. The stretched factor then slows this
            # device's idle checks, so a fleet larger than configured settles below
            # the quota.
            factor = self.settings.check_adaptation.throttled(factor)
            attempt = 2 + round(math.log2(factor))
            delay = self._throttled_delay(error, self.settings.job_poll_backoff.delay(attempt, self.rng))
        else:
            delay = self.settings.poll_backoff.delay(3, self.rng)
        return Record(
            delay,
            facts=FactChanges(
                last_error=LastError(error.kind, error.message, now), next_check_at=now + delay,
                check_interval_factor=factor,
            ),
            detail="check failed",
            error=ErrorInfo(type=error.kind, code=error.code, message=error.message),
        )

    # -- advancing a rollout ---------------------------------------------------------------
    def _advance(self, obs: Observation, rollout: Rollout) -> Action:
        if self.fleet is not None:
            return self._fleet_advance(obs, rollout, self.fleet)
        return self._advance_alone(obs, rollout)

    def _advance_alone(self, obs: Observation, rollout: Rollout) -> Action:
        try:
            if rollout.phase is Phase.PACKAGING_REQUESTED:
                return self._start_packaging(obs, rollout)
            if rollout.phase is Phase.PACKAGING:
                return self._poll_packaging(obs, rollout)
            if rollout.phase is Phase.DEPLOY_REQUESTED:
                return self._deploy(obs, rollout)
            if rollout.phase is Phase.DEPLOYING:
                return self._poll_deployment(obs, rollout)
        except errors.TransientError as error:
            return self._retry_later(rollout, obs.now, error)
        except errors.TerminalError as error:
            return self._fail(rollout, obs.now, error, StatusPhase.ROLLOUT_FAILED)
        raise AssertionError(f"rollout {rollout.id} in ended phase {rollout.phase}")

    def _start_packaging(self, obs: Observation, rollout: Rollout) -> Action:
        now = obs.now
        request = self.request_for(rollout.model_version, rollout.attempt)
        name, version = request.component_name, request.component_version
        if self._component_exists(obs.facts, name, version):
            return self._record(
                self._to(rollout, Phase.DEPLOY_REQUESTED, now),
                StatusPhase.PACKAGING_SKIPPED,
                detail=f"component {name} {version} already exists",
            )
        # After a throttled StartPackaging its retry has a due-time of its own (stored as
        # the rollout's job poll); until then only the component is watched, at the poll
        # pace, so a job started by another device is noticed as soon as it delivers.
        longest = self._longest_action_wait()
        due = obs.job_poll_due or 0.0
        start_wait = capped_wait(due, now, longest)
        if start_wait > 0:
            polls = rollout.polls + 1
            pace = min(start_wait, self.settings.poll_backoff.delay(polls, self.rng))
            watching = rollout.model_copy(update={"polls": polls, "updated_at": now, "next_action_at": now + pace})
            rebased: float | Keep = now + start_wait if due - now > longest else KEEP
            return Record(pace, rollout=watching, detail="watching for the component", job_poll_due=rebased)
        detail: str | None = None
        try:
            job_name: str | None = str(self._ask(StartPackaging(request)))
        except errors.ThrottledError as throttled:
            return self._start_throttled(rollout, now, throttled)
        except errors.ConflictError as conflict:
            job_name, detail = self._adopt(obs.facts, request, conflict)
            if job_name is None:
                # The component version exists (another device's job just finished).
                return self._record(
                    self._to(rollout, Phase.DEPLOY_REQUESTED, now), StatusPhase.PACKAGING_SKIPPED, detail=detail
                )
        updated = self._to(rollout, Phase.PACKAGING, now, job_name=job_name)
        updated.next_action_at = now + self.settings.poll_backoff.delay(0, self.rng)
        # The job was just created or found, so its status is known: the first status
        # poll waits one job-poll interval. Until then the component appearing in
        # Greengrass (no packaging-service quota) says it SUCCEEDED.
        return self._record(
            updated, StatusPhase.PACKAGING_STARTED, detail=detail, job_poll_due=now + self._job_poll_delay()
        )

    def _start_throttled(self, rollout: Rollout, now: float, error: errors.ThrottledError) -> Record:
        """StartPackaging was throttled: ask again after an escalating job-poll back-off
        (at least the service's Retry-After) and watch for the component meanwhile."""
        retry = self._retry_later(rollout, now, error, same_call=False)
        # Escalates with the throttles in a row only: the watch steps between them are
        # Greengrass calls and say nothing about the packaging service's quota.
        backoff = self.settings.job_poll_backoff.delay(rollout.throttles + 1, self.rng)
        return _with_job_poll(retry, now + self._throttled_delay(error, backoff))

    def _adopt(
        self, facts: Facts, request: PackagingRequest, conflict: errors.ConflictError
    ) -> tuple[str | None, str]:
        """After a conflict: adopt the same-named job if it is ours in all but name, or
        learn that the component version already exists."""
        try:
            job: PackagingJob | None = self._ask(PollJob(request.project_name, request.job_name))
        except errors.NotFoundError:
            job = None
        if job is not None:
            if request.same_target(job.configuration, job.model_version):
                return job.name, f"adopted existing job {job.name}"
            raise errors.ConflictError(
                f"job {job.name} exists for another model version or platform: {conflict.message}",
                code=conflict.code,
            ) from conflict
        name, version = request.component_name, request.component_version
        if self._component_exists(facts, name, version):
            return None, f"component {name} {version} already exists"
        # Another job (under another name) is producing this component version: wait for
        # it to appear rather than fail the rollout.
        raise errors.TransientError(
            f"component {name} {version} is being created elsewhere: {conflict.message}",
            code=conflict.code,
        ) from conflict

    def _poll_packaging(self, obs: Observation, rollout: Rollout) -> Action:
        now = obs.now
        name, version = rollout.component_name or "", rollout.component_version or ""
        polls = rollout.polls + 1
        # A packaging service's quota is per account and shared by the whole fleet: ask it
        # rarely (it is needed only to learn that a job FAILED), and watch for the
        # component version to appear in Greengrass (created on SUCCEEDED) in between.
        longest = self.settings.job_poll_backoff.cap
        due = obs.job_poll_due or 0.0
        job_wait = capped_wait(due, now, longest)
        rebased_due: float | Keep = now + job_wait if due - now > longest else KEEP
        if job_wait > 0:
            if self._component_exists(obs.facts, name, version):
                return self._packaged(rollout, now, detail="component version appeared")
            updated = self._to(rollout, Phase.PACKAGING, now, polls=polls)
            # Paced, not ramped: the whole fleet watches for the same few components and
            # Greengrass limits DescribeComponent per account.
            poll_max = self.settings.poll_backoff.cap
            updated.next_action_at = now + max(1.0, poll_max * self.rng.uniform(0.75, 1.0))
            return Record(updated.next_action_at - now, rollout=updated, job_poll_due=rebased_due)
        try:
            job: PackagingJob = self._ask(PollJob(self.settings.project, rollout.job_name or ""))
        except errors.TransientError as unavailable:
            # Ask the packaging service again a job-poll interval later, but keep watching
            # Greengrass at the usual pace: a throttled or failed status call must not
            # delay noticing that the component appeared.
            retry = self._retry_later(rollout, now, unavailable, backoff=self.settings.poll_backoff)
            return _with_job_poll(retry, now + self._job_poll_delay())
        next_job_poll = now + self._job_poll_delay()
        if job.status == "SUCCEEDED":
            return self._packaged(
                rollout,
                now,
                component_name=job.component_name or name,
                component_version=job.component_version or version,
            )
        if job.status == "FAILED":
            error = errors.PackagingFailedError(job.status_message or "packaging job FAILED")
            return self._fail(rollout, now, error, StatusPhase.PACKAGING_FAILED)
        updated = self._to(rollout, Phase.PACKAGING, now, polls=polls)
        updated.next_action_at = now + self.settings.poll_backoff.delay(polls, self.rng)
        event: StatusPhase | None = StatusPhase.PACKAGING_RUNNING if job.status == "RUNNING" else None
        if event is not None and rollout.last_reported == event.value:
            event = None
        return self._record(updated, event, detail=f"job status {job.status}", job_poll_due=next_job_poll)

    def _job_poll_delay(self) -> float:
        """Time to the next job-status poll: 75-100 % of jobPollMaxSeconds.

        All devices of a platform share one job, so each device's status call repeats
        its siblings'; with a fleet they must not ramp up from a few seconds.
        """
        backoff = self.settings.job_poll_backoff
        return max(backoff.floor, backoff.cap * self.rng.uniform(0.75, 1.0))

    def _packaged(
        self,
        rollout: Rollout,
        now: float,
        *,
        component_name: str | None = None,
        component_version: str | None = None,
        detail: str | None = None,
    ) -> Record:
        updated = self._to(
            rollout,
            Phase.DEPLOY_REQUESTED,
            now,
            component_name=component_name or rollout.component_name,
            component_version=component_version or rollout.component_version,
        )
        return self._record(updated, StatusPhase.PACKAGING_SUCCEEDED, detail=detail)

    def _deploy(
        self, obs: Observation, rollout: Rollout, *, target: str | None = None, verify: bool = False
    ) -> Action:
        now = obs.now
        target = target or self.settings.target_arn or self._thing_arn(obs.facts)
        name, version = rollout.component_name or "", rollout.component_version or ""
        latest: DeploymentSpec | None = self._ask(ReadLatestDeployment(target))
        self._refuse_mixed_platform_group(target, latest, name)
        token = deployment_token(target, name, version, rollout.attempt)
        if latest is not None and self._adoptable(latest, name, version):
            # Already deployed (e.g. killed after CreateDeployment): adopt, never duplicate.
            deployment_id, detail = latest.deployment_id, "adopted the target's latest deployment"
        else:
            if verify and not self._component_exists(obs.facts, name, version):
                # The component was only announced: never deploy on a hint alone.
                raise errors.TransientError(f"component {name} {version} was announced but does not exist (yet)")
            spec = self.merged_deployment(latest, name, version)
            deployment_id = str(self._ask(CreateDeployment(target, spec, token)))
            detail = f"target {target}"
        updated = self._to(
            rollout,
            Phase.DEPLOYING,
            now,
            target_arn=target,
            deployment_id=deployment_id,
            deployment_token=token,
        )
        updated.next_action_at = now + self.settings.poll_backoff.delay(0, self.rng)
        return self._record(updated, StatusPhase.DEPLOYMENT_CREATED, detail=detail)

    def _refuse_mixed_platform_group(self, target: str, latest: DeploymentSpec | None, name: str) -> None:
        """A thing group's deployment reaches every device in the group: if it already
        holds this project's model component for another platform, the group mixes
        platforms and each platform's component would be installed (and fail) on the
        others. Refuse rather than fight over the group's deployment."""
        if ":thinggroup/" not in target or latest is None:
            return
        others = sorted(
            other for other in latest.components
            if other != name and self._is_model_component(other)
        )
        if others:
            raise errors.ConflictError(
                f"deploymentTargetArn: thing group {target} already deploys {', '.join(others)} "
                f"(this project's model for another platform) and this device needs {name}; "
                "a thing-group target must hold devices of one platform only: use one group "
                "per platform, or leave deploymentTargetArn unset to deploy to each device's thing"
            )

    def _is_model_component(self, component_name: str) -> bool:
        """Whether ``component_name`` is this project's model component for some platform
        (by ``componentNameTemplate``, which always holds ``{platform}``)."""
        template = self.settings.naming.component_name
        pattern = re.escape(template)
        pattern = pattern.replace(re.escape("{project}"), re.escape(self.settings.project))
        pattern = pattern.replace(re.escape("{platform}"), "[A-Za-z0-9._-]+")
        return re.fullmatch(pattern, component_name) is not None

    def _adoptable(self, latest: DeploymentSpec, name: str, version: str) -> bool:
        """Whether the target's latest deployment is ours to adopt: it holds our component
        version and is not one that already failed on this device (adopting that one
        would fail the retry again without trying)."""
        if (latest.components.get(name) or {}).get("componentVersion") != version:
            return False
        failed = cast(set[str], self._ask(FindFailedDeployments()))
        return latest.deployment_id not in failed

    def _poll_deployment(self, obs: Observation, rollout: Rollout) -> Action:
        now = obs.now
        name, version = rollout.component_name or "", rollout.component_version or ""
        progress: DeploymentProgress = self._ask(
            ReadProgress(self.settings.thing_name, rollout.deployment_id or "", name)
        )
        polls = rollout.polls + 1
        if progress.installed_version == version and progress.lifecycle_state in _RUNNING_STATES and (
            progress.execution_status in (None, "SUCCEEDED", "COMPLETED")
            or progress.deployment_status in ("COMPLETED", "INACTIVE")
        ):
            return self._running(rollout, now, progress.lifecycle_state)
        failed = progress.execution_status in _EXECUTION_FAILED or (
            progress.deployment_status in _DEPLOYMENT_FAILED
        )
        if not failed and progress.deployment_status == "INACTIVE" and progress.installed_version != version:
            failed = True
        if failed:
            reason = progress.reason or (
                f"deployment {progress.deployment_status}, execution {progress.execution_status}"
            )
            rolled_back = progress.installed_version not in (None, version)
            error = errors.DeploymentFailedError(
                f"{reason}" + (f"; device rolled back to {progress.installed_version}" if rolled_back else "")
            )
            return self._fail(
                rollout, now, error,
                StatusPhase.ROLLED_BACK if rolled_back else StatusPhase.DEPLOYMENT_FAILED,
            )
        updated = self._to(rollout, Phase.DEPLOYING, now, polls=polls)
        updated.next_action_at = now + self.settings.poll_backoff.delay(polls, self.rng)
        state = f"{progress.execution_status or 'QUEUED'}/{progress.lifecycle_state or '-'}"
        event = StatusPhase.DEPLOYMENT_IN_PROGRESS
        reported = f"{event.value}:{state}"
        return self._record(
            updated, None if rollout.last_reported == reported else event, detail=state, reported_key=state
        )

    # -- fleet coordination ------------------------------------------------------------------
    # With ``fleet.enabled`` a device acts for the fleet only when nobody announced or
    # claimed the same action first (a random pause lets one device go first, and its claim
    # holds the others while its calls are retried), deploys in its canary wave, and
    # learns that its deployment finished from its nucleus. Every action that follows a
    # hint is verified by the call that performs it.
    def _hinted_version(self, obs: Observation) -> int | None:
        """A version announced as released that this device should roll out now, if any
        (at most one hint-started rollout per ``hintMinIntervalSeconds``)."""
        fleet, news = self.fleet, obs.fleet
        if fleet is None or news is None or self.settings.pinned_version is not None:
            return None
        released = news.released
        if released is None or released <= max(obs.facts.deployed_version or 0, obs.facts.hinted_version or 0):
            return None
        last = obs.facts.last_hint_at
        if last is not None and last <= obs.now < last + fleet.hint_min_interval_seconds:
            return None
        return released

    def _news_moves(self, obs: Observation, rollout: Rollout) -> bool:
        """Whether fleet news or the nucleus lets ``rollout`` move before its due-time."""
        fleet, news = self.fleet, obs.fleet
        if fleet is None:
            return False
        version, phase = rollout.model_version, rollout.phase
        if phase is Phase.DEPLOYING:
            return rollout.deployment_id in obs.locally_completed and not self._applied_locally(rollout)
        if news is None:
            return False
        ready = news.ready.get(version)
        job = news.jobs.get(version)
        if phase is Phase.PACKAGING_REQUESTED:
            return self._ready_matches(ready, rollout) or (
                job is not None and job.job_name == rollout.job_name and job.sender != self.settings.thing_name
            )
        if phase is Phase.PACKAGING:
            return self._ready_matches(ready, rollout) or (
                job is not None and job.status == "FAILED" and job.job_name == rollout.job_name
                and job.sender != self.settings.thing_name
            )
        if phase is Phase.DEPLOY_REQUESTED:
            return self._halted(obs, fleet, rollout) is not None
        return False

    @staticmethod
    def _ready_matches(ready: Any, rollout: Rollout) -> bool:
        return ready is not None and (ready.component_name, ready.component_version) == (
            rollout.component_name, rollout.component_version
        )

    @staticmethod
    def _applied_locally(rollout: Rollout) -> bool:
        return rollout.last_reported == f"{StatusPhase.DEPLOYMENT_IN_PROGRESS.value}:{APPLIED_LOCALLY}"

    def _wave(self, fleet: FleetSettings) -> int:
        return fleet.wave_of(self.settings.thing_name)

    @staticmethod
    def _wave_devices(fleet: FleetSettings, wave: int) -> float:
        previous = fleet.waves[wave - 1] if wave > 0 else 0.0
        return fleet.size * (fleet.waves[wave] - previous) / 100

    def _deploy_spread(self, fleet: FleetSettings, wave: int) -> float:
        """How widely the devices of ``wave`` spread their own deployment calls: one actor
        per wave with thing-group targets; per-device targets share the Greengrass budget."""
        if fleet.group_name_template is not None:
            return fleet.suppression_seconds
        devices = self._wave_devices(fleet, wave)
        return max(fleet.suppression_seconds, devices * 3 / FLEET_GREENGRASS_CALLS_PER_SECOND)

    def _confirm_spread(self, fleet: FleetSettings, wave: int) -> float:
        """How widely the devices of ``wave`` spread their one confirming ReadInstalled:
        a canary wave is small, so its failures are known within seconds of the install."""
        return self._wave_devices(fleet, wave) * CONFIRM_CALLS / FLEET_GREENGRASS_CALLS_PER_SECOND

    def _halted(self, obs: Observation, fleet: FleetSettings, rollout: Rollout) -> int | None:
        """The number of failures that halt ``rollout`` before it deploys, if it is halted:
        ``haltFailures`` of them, or ``haltShare`` of the canary outcomes announced."""
        news = obs.fleet
        if news is None or obs.facts.halt_lifted_version == rollout.model_version:
            return None
        failures = news.failed_count(rollout.model_version)
        outcomes = failures + news.succeeded_count(rollout.model_version)
        if failures >= fleet.halt_failures or (failures and failures >= fleet.halt_share * outcomes):
            return failures
        return None

    def _fleet_advance(self, obs: Observation, rollout: Rollout, fleet: FleetSettings) -> Action:
        try:
            if rollout.phase is Phase.PACKAGING_REQUESTED:
                action = self._fleet_request_packaging(obs, rollout, fleet)
            elif rollout.phase is Phase.PACKAGING:
                action = self._fleet_packaging(obs, rollout, fleet)
            elif rollout.phase is Phase.DEPLOY_REQUESTED:
                action = self._fleet_deploy(obs, rollout, fleet)
            elif rollout.phase is Phase.DEPLOYING:
                action = self._fleet_deploying(obs, rollout, fleet)
            else:
                action = self._advance_alone(obs, rollout)
        except errors.TransientError as error:
            return self._retry_later(rollout, obs.now, error)
        except errors.TerminalError as error:
            return self._fail(rollout, obs.now, error, StatusPhase.ROLLOUT_FAILED)
        if isinstance(action, Record):
            return self._fleet_schedule(obs, rollout, action, fleet)
        return action

    def _fleet_request_packaging(self, obs: Observation, rollout: Rollout, fleet: FleetSettings) -> Action:
        now, news = obs.now, obs.fleet or FleetNews()
        version = rollout.model_version
        if self._ready_matches(news.ready.get(version), rollout):
            return self._record(
                self._to(rollout, Phase.DEPLOY_REQUESTED, now), StatusPhase.PACKAGING_SKIPPED,
                detail=f"component {rollout.component_name} {rollout.component_version} announced ready",
            )
        job = news.jobs.get(version)
        me = self.settings.thing_name
        if job is not None and job.job_name == rollout.job_name and job.sender != me:
            if job.status == "FAILED":
                error = errors.PackagingFailedError(f"job {job.job_name} FAILED (announced by {job.sender}): {job.reason or ''}")
                return self._fail(rollout, now, error, StatusPhase.PACKAGING_FAILED)
            if job.status == "STARTING":
                if now < job.heard_at + self._claim_seconds(fleet):
                    # Another device claimed the job: wait for its outcome, not call too.
                    return self._wait_for_claim(rollout, now, job.heard_at, fleet)
            else:
                # Another device started our job: follow it without a call of our own,
                # and poll it only if its poller goes quiet.
                updated = self._to(rollout, Phase.PACKAGING, now)
                due = self._fallback_due(job.heard_at, fleet)
                updated.next_action_at = due
                return self._record(updated, StatusPhase.PACKAGING_STARTED, job_poll_due=due,
                                    detail=f"job {job.job_name} started by {job.sender}")
        if not (job is not None and job.job_name == rollout.job_name and job.sender == me and job.status == "STARTING"):
            # Claim it first (a record, no call): the platform's other devices hear the
            # claim at once and wait, however long our own calls take or fail.
            claimed = rollout.model_copy(update={"updated_at": now, "next_action_at": now})
            return Record(0.0, rollout=claimed, announce=(self._job_news(now, rollout, "STARTING"),),
                          detail=f"claimed job {rollout.job_name}")
        action = self._advance_alone(obs, rollout)
        if isinstance(action, Record) and action.rollout is not None:
            after = action.rollout
            if after.phase is Phase.PACKAGING:
                # This device started (or adopted) the job: it polls it for the fleet.
                return replace(action, announce=(self._job_news(now, after, "STARTED"),))
            if after.phase is Phase.DEPLOY_REQUESTED:
                return replace(action, announce=(self._ready_news(now, after),))
            if after.phase is Phase.FAILED:
                return replace(action, announce=(self._job_news(now, after, "FAILED", after.error_message),))
            # A retry of our own: renew the claim so that the others keep waiting.
            return replace(action, announce=(self._job_news(now, after, "STARTING"),))
        return action

    @property
    def _claim_retry(self) -> Backoff:
        return Backoff(base=2.0, cap=self.settings.poll_backoff.cap, floor=1.0)

    def _claim_seconds(self, fleet: FleetSettings) -> float:
        """How long a claim holds without news from its claimer (who renews it at every
        retry, each within the longest back-off)."""
        return max(self.settings.poll_backoff.cap, self.settings.job_poll_backoff.cap) + fleet.suppression_seconds

    def _wait_for_claim(self, rollout: Rollout, now: float, heard_at: float, fleet: FleetSettings) -> Record:
        due = heard_at + self._claim_seconds(fleet) + self.rng.uniform(0, fleet.suppression_seconds)
        updated = rollout.model_copy(update={"next_action_at": due, "updated_at": now})
        return Record(due - now, rollout=updated)

    def _fallback_due(self, heard_at: float, fleet: FleetSettings) -> float:
        return heard_at + fleet.poller_fallback_seconds + self.rng.uniform(0, fleet.suppression_seconds)

    def _fleet_packaging(self, obs: Observation, rollout: Rollout, fleet: FleetSettings) -> Action:
        now, news = obs.now, obs.fleet or FleetNews()
        version = rollout.model_version
        if self._ready_matches(news.ready.get(version), rollout):
            return self._packaged(rollout, now, detail="component announced ready")
        job = news.jobs.get(version)
        others = job is not None and job.job_name == rollout.job_name and job.sender != self.settings.thing_name
        if others and job is not None:
            if job.status == "FAILED":
                error = errors.PackagingFailedError(f"job {job.job_name} FAILED (announced by {job.sender}): {job.reason or ''}")
                return self._fail(rollout, now, error, StatusPhase.PACKAGING_FAILED)
            quiet_until = job.heard_at + fleet.poller_fallback_seconds
            if now < quiet_until:
                # Another device polls the job: wait for its news, or until it goes quiet.
                due = self._fallback_due(job.heard_at, fleet)
                updated = rollout.model_copy(update={"next_action_at": due, "updated_at": now})
                return Record(due - now, rollout=updated, job_poll_due=due)
        action = self._advance_alone(obs, rollout)
        if not isinstance(action, Record) or action.rollout is None:
            return action
        after = action.rollout
        if after.phase is Phase.DEPLOY_REQUESTED:
            return replace(action, announce=(self._ready_news(now, after),))
        if after.phase is Phase.FAILED:
            return replace(action, announce=(self._job_news(now, after, "FAILED", after.error_message),))
        polled = any(isinstance(c, PollJob) and not isinstance(a, errors.AgentError) for c, a in self._answers.made)
        if polled:
            return replace(action, announce=(self._job_news(now, after, "RUNNING"),))
        if action.error is None and after.next_action_at - now > self.settings.poll_backoff.base:
            # The one watcher of its platform: it can afford to look for the component
            # at the fastest pace, and the whole platform deploys sooner for it.
            due = now + max(1.0, self.settings.poll_backoff.base * self.rng.uniform(0.75, 1.0))
            return replace(action, rollout=after.model_copy(update={"next_action_at": due}), wait=due - now)
        return action

    def _fleet_deploy(self, obs: Observation, rollout: Rollout, fleet: FleetSettings) -> Action:
        now, news = obs.now, obs.fleet or FleetNews()
        failures = self._halted(obs, fleet, rollout)
        if failures is not None:
            updated = self._to(rollout, Phase.HALTED, now)
            updated.ended_at = now
            succeeded = (obs.fleet or FleetNews()).succeeded_count(rollout.model_version)
            detail = (f"{failures} devices announced v{rollout.model_version} failed, {succeeded} canaries "
                      f"succeeded (haltFailures {fleet.halt_failures}, haltShare {fleet.halt_share}); "
                      "lift with a deploy-version command or release a newer version")
            return self._record(updated, StatusPhase.HALTED, detail=detail)
        wave = self._wave(fleet)
        try:
            group = fleet.group_name(self.settings.project, self.platform.key, wave)
        except ValueError as invalid:
            raise errors.TerminalError(str(invalid)) from invalid
        if group is None:
            return self._deploy(obs, rollout, verify=True)
        heard = news.deployed.get((rollout.model_version, wave))
        me = self.settings.thing_name
        if heard is not None and not heard.target_arn.endswith(f":thinggroup/{group}"):
            heard = None
        if heard is not None and heard.deployment_id is not None:
            # Adopted by name: the group's other devices need not look up their ARN.
            updated = self._to(rollout, Phase.DEPLOYING, now, target_arn=heard.target_arn,
                               deployment_id=heard.deployment_id)
            return self._record(updated, StatusPhase.DEPLOYMENT_CREATED,
                                detail=f"wave {wave} deployment {heard.deployment_id} announced")
        if heard is not None and heard.sender != me and now < heard.heard_at + self._claim_seconds(fleet):
            return self._wait_for_claim(rollout, now, heard.heard_at, fleet)
        target = fleet.group_arn(self._thing_arn(obs.facts), self.settings.project, self.platform.key, wave) or ""

        def deployed(status: str, deployment_id: str | None = None) -> Deployed:
            return Deployed(
                thing_name=me, sent_at=stamp(now), model_version=rollout.model_version,
                platform=self.platform.key, wave=wave, target_arn=target, status=status,
                deployment_id=deployment_id,
            )

        if heard is None or heard.sender != me:
            # Claim the wave's deployment before the calls (see the job's claim).
            claimed = rollout.model_copy(update={"updated_at": now, "next_action_at": now})
            return Record(0.0, rollout=claimed, announce=(deployed("CREATING"),),
                          detail=f"claimed wave {wave}'s deployment")
        try:
            action = self._deploy(obs, rollout, target=target, verify=True)
        except errors.TransientError as error:
            # The whole wave waits on this claim: retry a failed call soon (a throttle
            # still escalates, and waits at least its Retry-After).
            action = self._retry_later(rollout, now, error, backoff=self._claim_retry)
        if isinstance(action, Record) and action.rollout is not None:
            after = action.rollout
            if after.phase is Phase.DEPLOYING:
                return replace(action, announce=(deployed("CREATED", after.deployment_id),))
            if not after.phase.ended:
                return replace(action, announce=(deployed("CREATING"),))
        return action

    def _fleet_deploying(self, obs: Observation, rollout: Rollout, fleet: FleetSettings) -> Action:
        now = obs.now
        if rollout.deployment_id in obs.locally_completed and not self._applied_locally(rollout):
            # The nucleus applied it: confirm with the cloud once, spread over the fleet.
            updated = self._to(rollout, Phase.DEPLOYING, now)
            updated.next_action_at = now + self.rng.uniform(0, self._confirm_spread(fleet, self._wave(fleet)))
            return self._record(
                updated, StatusPhase.DEPLOYMENT_IN_PROGRESS, reported_key=APPLIED_LOCALLY,
                detail=f"applied by the nucleus; confirming in {updated.next_action_at - now:.0f} s",
            )
        if self._applied_locally(rollout):
            action: Action = self._confirm_installed(obs, rollout)
        else:
            action = self._advance_alone(obs, rollout)
        wave = self._wave(fleet)
        if (isinstance(action, Record) and action.rollout is not None
                and action.rollout.phase is Phase.SUCCEEDED and wave == 0 and len(fleet.waves) > 1):
            # A first-wave canary's success counts against the failures (haltShare); the
            # later waves' successes would only cost messages.
            after = action.rollout
            succeeded = Succeeded(
                thing_name=self.settings.thing_name, sent_at=stamp(now), model_version=after.model_version,
                platform=self.platform.key, wave=wave, component_version=after.component_version,
            )
            return replace(action, announce=(succeeded,))
        if isinstance(action, Record) and action.rollout is not None and action.rollout.phase is Phase.FAILED:
            after = action.rollout
            failed = Failed(
                thing_name=self.settings.thing_name, sent_at=stamp(now), model_version=after.model_version,
                platform=self.platform.key, component_version=after.component_version,
                reason=(after.error_message or "")[:500] or None,
            )
            return replace(action, announce=(failed,))
        return action

    def _fleet_schedule(self, obs: Observation, before: Rollout, record: Record, fleet: FleetSettings) -> Record:
        """Fleet timing for a rollout entering a phase: the canary wave's wait before
        deploying, and the nucleus's report awaited before polling a deployment."""
        after = record.rollout
        if after is None or after.phase is before.phase:
            return record
        now = obs.now
        if after.phase in (Phase.SUCCEEDED, Phase.HALTED) and (obs.facts.next_check_at or 0.0) <= now:
            # The device's check came due during the rollout: put it back at a random
            # point of the interval, not at once, or a fleet's overdue checks would all
            # land when the rollout ends.
            next_check = now + self.rng.uniform(0, self.settings.check_interval.seconds)
            facts = replace(record.facts or FactChanges(), next_check_at=next_check)
            return replace(record, facts=facts)
        if after.phase is Phase.DEPLOY_REQUESTED:
            wave = self._wave(fleet)
            due = now + wave * fleet.wave_delay_seconds + self.rng.uniform(0, self._deploy_spread(fleet, wave))
        elif after.phase is Phase.DEPLOYING and obs.nucleus_reports_deployments:
            due = now + fleet.deployment_watch_seconds
        else:
            return record
        after = after.model_copy(update={"next_action_at": due})
        return replace(record, rollout=after, wait=due - now)

    def _job_news(self, now: float, rollout: Rollout, status: str, reason: str | None = None) -> JobNews:
        return JobNews(
            thing_name=self.settings.thing_name, sent_at=stamp(now), model_version=rollout.model_version,
            platform=self.platform.key, job_name=rollout.job_name or "", status=status,
            reason=(reason or "")[:500] or None,
        )

    def _ready_news(self, now: float, rollout: Rollout) -> Ready:
        return Ready(
            thing_name=self.settings.thing_name, sent_at=stamp(now), model_version=rollout.model_version,
            platform=self.platform.key, component_name=rollout.component_name or "",
            component_version=rollout.component_version or "",
        )

    def _running(self, rollout: Rollout, now: float, lifecycle_state: str | None) -> Record:
        """The rollout ends SUCCEEDED: its component runs on this device."""
        name, version = rollout.component_name or "", rollout.component_version or ""
        updated = self._to(rollout, Phase.SUCCEEDED, now)
        updated.ended_at = now
        facts = FactChanges(
            deployed_version=rollout.model_version,
            deployed_component_name=name,
            deployed_component_version=version,
            deployed_at=now,
            # What health reports as the component's state (and says where it came from).
            deployed_lifecycle_state=lifecycle_state,
            last_error=None,
        )
        return self._record(updated, StatusPhase.COMPONENT_RUNNING, facts=facts,
                            detail=f"{name} {version} {lifecycle_state}")

    def _confirm_installed(self, obs: Observation, rollout: Rollout) -> Record:
        """After the nucleus reported the deployment applied: one ListInstalledComponents
        says whether it worked (our version running) or not (another version: rolled back;
        ours broken)."""
        now = obs.now
        name, version = rollout.component_name or "", rollout.component_version or ""
        installed: tuple[str, str] | None = self._ask(ReadInstalled(self.settings.thing_name, name))
        installed_version, state = installed if installed is not None else (None, None)
        if installed_version == version and state in _RUNNING_STATES:
            return self._running(rollout, now, state)
        if installed_version == version and state not in ("BROKEN", "ERRORED"):
            # Installed, still starting: look again at the poll pace.
            updated = self._to(rollout, Phase.DEPLOYING, now, polls=rollout.polls + 1)
            updated.next_action_at = now + self.settings.poll_backoff.delay(rollout.polls + 1, self.rng)
            return Record(updated.next_action_at - now, rollout=updated, detail=f"{name} {version} {state}")
        if installed_version == version:
            error = errors.DeploymentFailedError(f"{name} {version} is {state} on this device")
            return self._fail(rollout, now, error, StatusPhase.DEPLOYMENT_FAILED)
        error = errors.DeploymentFailedError(
            f"the nucleus applied deployment {rollout.deployment_id} but {name} is "
            + (f"at {installed_version}: device rolled back" if installed_version else "not installed")
        )
        return self._fail(rollout, now, error,
                          StatusPhase.ROLLED_BACK if installed_version else StatusPhase.DEPLOYMENT_FAILED)

    # -- outcomes ----------------------------------------------------------------------------
    def _retry_later(
        self,
        rollout: Rollout,
        now: float,
        error: errors.AgentError,
        *,
        backoff: Backoff | None = None,
        same_call: bool = True,
    ) -> Record:
        """Stay in the phase and step again after ``backoff`` (the poll back-off by
        default). ``same_call``: the next step repeats the failed call, so a throttle's
        Retry-After holds it back too; otherwise the failed call keeps a due-time of its
        own and the next step only watches (another service)."""
        throttled = isinstance(error, errors.ThrottledError)
        # Greengrass's shared 30/s budget frees up at the poll pace; a throttled start of
        # packaging keeps its own, longer due-time (see _start_packaging).
        backoff = backoff or self.settings.poll_backoff
        throttles = rollout.throttles + 1 if throttled else rollout.throttles
        delay = backoff.delay(rollout.polls + throttles, self.rng)
        if same_call:
            delay = self._throttled_delay(error, delay)
        updated = rollout.model_copy(
            update={"throttles": throttles, "updated_at": now, "next_action_at": now + delay}
        )
        return Record(
            delay,
            rollout=updated,
            facts=FactChanges(last_error=LastError(error.kind, error.message, now)),
            detail="transient error",
            error=ErrorInfo(type=error.kind, code=error.code, message=error.message),
        )

    def _throttled_delay(self, error: errors.AgentError, delay: float) -> float:
        """``delay``, or longer when ``error`` is a throttle whose service said how long
        to wait (Retry-After), honoured up to the longest back-off (so the wait stays
        within what the clock-jump caps allow)."""
        retry_after = error.retry_after if isinstance(error, errors.ThrottledError) else None
        if retry_after is None:
            return delay
        return max(delay, min(retry_after, self._longest_action_wait()))

    def _fail(self, rollout: Rollout, now: float, error: errors.AgentError, event: StatusPhase) -> Record:
        updated = self._to(rollout, Phase.FAILED, now)
        updated.ended_at = now
        updated.error_type, updated.error_code, updated.error_message = error.kind, error.code, error.message
        retry_at = now + self.settings.failure_retry_seconds
        return self._record(
            updated,
            event,
            error=ErrorInfo(type=error.kind, code=error.code, message=error.message),
            facts=FactChanges(last_error=LastError(error.kind, error.message, now), next_check_at=retry_at),
            wait=retry_at - now,
        )

    @staticmethod
    def _to(rollout: Rollout, phase: Phase, now: float, **changes: Any) -> Rollout:
        reset = phase is not rollout.phase
        update: dict[str, Any] = {
            "phase": phase,
            "updated_at": now,
            "next_action_at": now,
            "polls": 0 if reset else rollout.polls,
            "throttles": 0,
        }
        update.update(changes)
        return rollout.model_copy(update=update)

    @staticmethod
    def _record(
        rollout: Rollout,
        event: StatusPhase | None,
        *,
        detail: str | None = None,
        error: ErrorInfo | None = None,
        facts: FactChanges | None = None,
        reported_key: str | None = None,
        job_poll_due: float | Keep = KEEP,
        wait: float | None = None,
    ) -> Record:
        """A state change of ``rollout``; its reported event is remembered on it so that
        an unchanged state is not reported twice."""
        if event is not None:
            rollout = rollout.model_copy(
                update={"last_reported": event.value if reported_key is None else f"{event.value}:{reported_key}"}
            )
        return Record(
            max(0.0, rollout.next_action_at - rollout.updated_at) if wait is None else wait,
            rollout=rollout,
            event=event,
            detail=detail,
            error=error,
            facts=facts,
            job_poll_due=job_poll_due,
        )


def _with_job_poll(record: Record, due: float) -> Record:
    return replace(record, job_poll_due=due)

