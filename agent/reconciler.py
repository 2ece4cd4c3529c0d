"""The reconciler: observe, decide one idempotent step, record it, say when to look again.

Desired state: the newest packageable model version (or a pinned one), packaged for this
platform and RUNNING on this device. Observed state: the ledger plus what the cloud says.
Each :meth:`Reconciler.step` takes at most one action through the ports and returns the
number of seconds until the next look. The intent of every cloud action is in the ledger
before the call, its result after; every action carries a deterministic token, so
re-running a step after a crash or kill -9 never makes a second job or deployment.

Phases of a rollout (``agent.model.Phase``)::

    (check finds version V > deployed)
          │
    PACKAGING_REQUESTED ──component exists──────────────┐
          │ StartModelPackagingJob (ClientToken)        │
    PACKAGING ──FAILED──> FAILED (retry after back-off) │
          │ SUCCEEDED (or the component appeared)       │
    DEPLOY_REQUESTED <──────────────────────────────────┘
          │ CreateDeployment (clientToken), carrying over the target's components
    DEPLOYING ──failed / rolled back──> FAILED
          │ component RUNNING on this device
    SUCCEEDED
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import structlog

from agent import errors
from agent.clock import Backoff, Clock, JitteredInterval, WallClockWatch, capped_wait
from agent.config import AgentConfig
from agent.ledger import Ledger, OutgoingMessage
from agent.model import (
    NamingTemplates,
    PackagingRequest,
    Phase,
    Rollout,
    deployment_token,
    derive_request,
)
from agent.platform import DetectedPlatform
from agent.ports import PACKAGEABLE, DeploymentPort, DeploymentSpec, PackagingPort
from agent.reporting.events import ErrorInfo, StatusEvent, StatusPhase, utc_iso

log = structlog.get_logger("agent.reconciler")

_RUNNING_STATES = {"RUNNING", "FINISHED"}
_EXECUTION_FAILED = {"FAILED", "TIMED_OUT", "REJECTED", "CANCELED"}
_DEPLOYMENT_FAILED = {"FAILED", "CANCELED"}


@dataclass(frozen=True)
class RolloutSettings:
    """What the reconciler needs from the configuration."""

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


def settings_from_config(config: AgentConfig) -> RolloutSettings:
    """The reconciler's view of a validated configuration."""
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
    )


class Reconciler:
    """Drives one device's rollouts. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        *,
        settings: RolloutSettings,
        platform: DetectedPlatform,
        packaging: PackagingPort,
        deployments: DeploymentPort,
        ledger: Ledger,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.packaging = packaging
        self.deployments = deployments
        self.ledger = ledger
        self.clock = clock
        self.rng = rng or random.Random()
        self._check_requested = False
        self._wall_watch = WallClockWatch()

    # -- public ------------------------------------------------------------------------
    def request_check(self, model_version: int | None = None) -> None:
        """Look for a new version at the next step (a command or a config change)."""
        self._check_requested = True
        if model_version is not None:
            self.ledger.put({"requested_version": str(model_version)})

    def step(self) -> float:
        """Take at most one action; return seconds until the next step is due."""
        now = self.clock.now()
        self._follow_wall_clock(now)
        rollout = self.ledger.active_rollout()
        if rollout is not None:
            wait = self._action_wait(rollout, now)
            if wait > 0 and not self._check_requested:
                return wait
            self._check_requested = False
            return self._advance(rollout, now)
        wait = self._check_wait(now)
        if wait > 0 and not self._check_requested:
            return wait
        self._check_requested = False
        return self._check(now)

    # -- wall-clock jumps ------------------------------------------------------------------
    # Due-times are stored as wall-clock epoch seconds (they survive a restart). A jump of
    # the wall clock seen while running moves them by the same amount (the remaining wait
    # is kept); one that happened while the agent was stopped is caught by capping every
    # wait at the longest one that could have set it.
    def _follow_wall_clock(self, now: float) -> None:
        jump = self._wall_watch.jump(now, self.clock.monotonic())
        if jump:
            log.warning("wall clock jumped: due-times moved with it", seconds=round(jump, 1))
            self.ledger.shift_due_times(jump)

    def _longest_action_wait(self) -> float:
        return max(self.settings.poll_backoff.cap, self.settings.job_poll_backoff.cap)

    def _longest_check_wait(self) -> float:
        interval = self.settings.check_interval
        return max(
            interval.seconds * (1 + interval.jitter),
            self.settings.failure_retry_seconds,
            self._longest_action_wait(),
        )

    def _action_wait(self, rollout: Rollout, now: float) -> float:
        longest = self._longest_action_wait()
        wait = capped_wait(rollout.next_action_at, now, longest)
        if rollout.next_action_at - now > longest:
            self.ledger.save(rollout.model_copy(update={"next_action_at": now + wait}))
        return wait

    def _check_wait(self, now: float) -> float:
        return self._due_fact_wait("next_check_at", now, self._longest_check_wait())

    def _due_fact_wait(self, key: str, now: float, longest: float) -> float:
        """Seconds until the due-time stored in fact ``key``, at most ``longest``; one
        further away (stored before the wall clock went back) is re-based to that."""
        due = float(self.ledger.get(key, "0") or 0)
        wait = capped_wait(due, now, longest)
        if due - now > longest:
            self.ledger.put({key: repr(now + wait)})
        return wait

    # -- checking ------------------------------------------------------------------------
    def _check(self, now: float) -> float:
        requested = self.ledger.get("requested_version")
        try:
            desired = (
                int(requested)
                if requested
                else self.settings.pinned_version or self._latest_packageable()
            )
        except errors.TransientError as error:
            return self._check_failed(now, error, retry=True)
        except errors.TerminalError as error:
            return self._check_failed(now, error, retry=False)
        deployed = int(self.ledger.get("deployed_version", "0") or 0)
        pinned_or_requested = bool(requested) or self.settings.pinned_version is not None
        facts: dict[str, str | None] = {
            "last_check_at": repr(now),
            "last_error_type": None,
            "last_error_message": None,
            "next_check_at": repr(now + self.settings.check_interval.next(self.rng)),
            "requested_version": None,
        }
        # Never go back on our own: only a pin or a command may ask for an older version.
        if desired == deployed or (desired < deployed and not pinned_or_requested):
            self.ledger.put(facts)
            log.info("up to date", model_version=deployed, latest=desired)
            return float(facts["next_check_at"] or 0) - now
        previous = self.ledger.rollouts(model_version=desired, limit=1)
        attempt = 1
        if previous:
            last = previous[0]
            attempt = last.attempt + 1
            if last.ended_at is not None and last.ended_at > now:
                # It ended "in the future": the wall clock went back while we were stopped.
                last = self.ledger.save(last.model_copy(update={"ended_at": now}))
            retry_at = (last.ended_at or now) + self.settings.failure_retry_seconds
            if last.phase is Phase.FAILED and retry_at > now and not requested:
                facts["next_check_at"] = repr(min(retry_at, float(facts["next_check_at"] or 0)))
                self.ledger.put(facts)
                return float(facts["next_check_at"] or 0) - now
        request = self.request_for(desired, attempt)
        rollout = Rollout(
            model_version=desired,
            platform_key=self.platform.key,
            attempt=attempt,
            phase=Phase.PACKAGING_REQUESTED,
            job_name=request.job_name,
            client_token=request.client_token,
            component_name=request.greengrass.component_name,
            component_version=request.greengrass.component_version,
            # A short jittered pause before StartModelPackagingJob: back to back with the
            # ListModels just made, a fleet's checks would reach the account's
            # requests/s quota in pairs.
            next_action_at=now + self.settings.poll_backoff.delay(0, self.rng),
            started_at=now,
            updated_at=now,
        )
        self._save(rollout, StatusPhase.CHECKING, facts=facts, detail=f"deployed={deployed or 'none'}")
        return rollout.next_action_at - now

    def _latest_packageable(self) -> int:
        models = self.packaging.list_models(self.settings.project)
        ready = [m.version for m in models if m.status in PACKAGEABLE]
        if not ready:
            raise errors.NoTrainedModelError(
                f"project {self.settings.project} has no model version in "
                f"{sorted(PACKAGEABLE)} (found {len(models)} version(s))"
            )
        return max(ready)

    def _check_failed(self, now: float, error: errors.AgentError, *, retry: bool) -> float:
        if not retry:
            delay = self.settings.check_interval.next(self.rng)
        elif isinstance(error, errors.ThrottledError):
            # The account's quota is used up right now (by the fleet): back off harder,
            # as for every other throttled call.
            delay = self.settings.job_poll_backoff.delay(3, self.rng)
        else:
            delay = self.settings.poll_backoff.delay(3, self.rng)
        log.warning("check failed", error=error.kind, message=error.message, retry_in=round(delay, 1))
        self.ledger.put(
            {
                "last_error_type": error.kind,
                "last_error_message": error.message,
                "last_error_at": repr(now),
                "next_check_at": repr(now + delay),
            }
        )
        return delay

    # -- advancing a rollout -----------------------------------------------------------
    def _advance(self, rollout: Rollout, now: float) -> float:
        try:
            if rollout.phase is Phase.PACKAGING_REQUESTED:
                return self._start_packaging(rollout, now)
            if rollout.phase is Phase.PACKAGING:
                return self._poll_packaging(rollout, now)
            if rollout.phase is Phase.DEPLOY_REQUESTED:
                return self._deploy(rollout, now)
            if rollout.phase is Phase.DEPLOYING:
                return self._poll_deployment(rollout, now)
        except errors.TransientError as error:
            return self._retry_later(rollout, now, error)
        except errors.TerminalError as error:
            return self._fail(rollout, now, error, StatusPhase.ROLLOUT_FAILED)
        raise AssertionError(f"rollout {rollout.id} in ended phase {rollout.phase}")

    def request_for(self, version: int, attempt: int) -> PackagingRequest:
        """The packaging request this device sends for ``version`` (deterministic)."""
        return derive_request(
            project=self.settings.project,
            model_version=version,
            platform=self.platform,
            attempt=attempt,
            bucket=self.settings.bucket,
            prefix=self.settings.prefix,
            templates=self.settings.naming,
            tags=self.settings.component_tags,
        )

    def arn_prefix(self, *, remember: bool = True) -> str:
        """``arn:PARTITION:greengrass:REGION:ACCOUNT`` of this device's account
        (``remember=False``: do not cache the thing's ARN in the ledger, for ``plan``)."""
        thing_arn = self.thing_arn(remember=remember)
        partition, region, account = thing_arn.split(":")[1], thing_arn.split(":")[3], thing_arn.split(":")[4]
        return f"arn:{partition}:greengrass:{region}:{account}"

    def thing_arn(self, *, remember: bool = True) -> str:
        """This device's thing ARN (cached in the ledger unless ``remember`` is False)."""
        cached = self.ledger.get("thing_arn")
        if cached:
            return cached
        arn = self.deployments.thing_arn(self.settings.thing_name)
        if remember:
            self.ledger.put({"thing_arn": arn})
        return arn

    def _start_packaging(self, rollout: Rollout, now: float) -> float:
        request = self.request_for(rollout.model_version, rollout.attempt)
        name, version = request.greengrass.component_name, request.greengrass.component_version or ""
        if self.deployments.component_version_exists(self.arn_prefix(), name, version):
            self._save(
                self._to(rollout, Phase.DEPLOY_REQUESTED, now),
                StatusPhase.PACKAGING_SKIPPED,
                detail=f"component {name} {version} already exists",
            )
            return 0.0
        detail: str | None = None
        try:
            job_name: str | None = self.packaging.start_job(request)
        except errors.ConflictError as conflict:
            job_name, detail = self._adopt(request, conflict)
            if job_name is None:
                # The component version exists (another device's job just finished).
                self._save(
                    self._to(rollout, Phase.DEPLOY_REQUESTED, now),
                    StatusPhase.PACKAGING_SKIPPED,
                    detail=detail,
                )
                return 0.0
        updated = self._to(rollout, Phase.PACKAGING, now, job_name=job_name)
        updated.next_action_at = now + self.settings.poll_backoff.delay(0, self.rng)
        # The job was just created or found, so its status is known: the first
        # DescribeModelPackagingJob waits one job-poll interval. Until then the component
        # appearing in Greengrass (no Lookout for Vision quota) says it SUCCEEDED.
        self._save(
            updated,
            StatusPhase.PACKAGING_STARTED,
            detail=detail,
            facts={self._job_poll_key(rollout): repr(now + self._job_poll_delay())},
        )
        return updated.next_action_at - now

    def _adopt(
        self, request: PackagingRequest, conflict: errors.ConflictError
    ) -> tuple[str | None, str]:
        """After a ConflictException: adopt the same-named job if it is ours in all but
        name, or learn that the component version already exists."""
        try:
            job = self.packaging.describe_job(request.project_name, request.job_name)
        except errors.NotFoundError:
            job = None
        if job is not None:
            if request.same_target(job.configuration, job.model_version):
                return job.name, f"adopted existing job {job.name}"
            raise errors.ConflictError(
                f"job {job.name} exists for another model version or platform: {conflict.message}",
                code=conflict.code,
            ) from conflict
        name, version = request.greengrass.component_name, request.greengrass.component_version or ""
        if self.deployments.component_version_exists(self.arn_prefix(), name, version):
            return None, f"component {name} {version} already exists"
        # Another job (under another name) is producing this component version: wait for
        # it to appear rather than fail the rollout.
        raise errors.TransientError(
            f"component {name} {version} is being created elsewhere: {conflict.message}",
            code=conflict.code,
        ) from conflict

    def _poll_packaging(self, rollout: Rollout, now: float) -> float:
        name, version = rollout.component_name or "", rollout.component_version or ""
        polls = rollout.polls + 1
        # Lookout for Vision allows ~5 requests/s per account, shared by the whole fleet:
        # ask it rarely (it is needed only to learn that a job FAILED), and watch for the
        # component version to appear in Greengrass (created on SUCCEEDED) in between.
        job_key = self._job_poll_key(rollout)
        if self._due_fact_wait(job_key, now, self.settings.job_poll_backoff.cap) > 0:
            if self.deployments.component_version_exists(self.arn_prefix(), name, version):
                return self._packaged(rollout, now, detail="component version appeared")
            updated = self._to(rollout, Phase.PACKAGING, now, polls=polls)
            # Paced, not ramped: the whole fleet watches for the same few components and
            # Greengrass limits DescribeComponent per account.
            poll_max = self.settings.poll_backoff.cap
            updated.next_action_at = now + max(1.0, poll_max * self.rng.uniform(0.75, 1.0))
            self._save(updated)
            return updated.next_action_at - now
        try:
            job = self.packaging.describe_job(self.settings.project, rollout.job_name or "")
        except errors.TransientError as unavailable:
            # Ask Lookout for Vision again a job-poll interval later, but keep watching
            # Greengrass at the usual pace: a throttled or failed status call must not
            # delay noticing that the component appeared.
            self.ledger.put({job_key: repr(now + self._job_poll_delay())})
            return self._retry_later(rollout, now, unavailable, backoff=self.settings.poll_backoff)
        self.ledger.put({job_key: repr(now + self._job_poll_delay())})
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
        event = StatusPhase.PACKAGING_RUNNING if job.status == "RUNNING" else None
        if event is not None and rollout.last_reported == event.value:
            event = None
        self._save(updated, event, detail=f"job status {job.status}")
        return updated.next_action_at - now

    @staticmethod
    def _job_poll_key(rollout: Rollout) -> str:
        return f"job_poll_due:{rollout.id}"

    def _job_poll_delay(self) -> float:
        """Time to the next DescribeModelPackagingJob: 75-100 % of jobPollMaxSeconds.

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
    ) -> float:
        updated = self._to(
            rollout,
            Phase.DEPLOY_REQUESTED,
            now,
            component_name=component_name or rollout.component_name,
            component_version=component_version or rollout.component_version,
        )
        self._save(updated, StatusPhase.PACKAGING_SUCCEEDED, detail=detail)
        return 0.0

    def _target(self) -> str:
        return self.settings.target_arn or self.thing_arn()

    def _deploy(self, rollout: Rollout, now: float) -> float:
        target = self._target()
        name, version = rollout.component_name or "", rollout.component_version or ""
        latest = self.deployments.latest_deployment(target)
        self._refuse_mixed_platform_group(target, latest, name)
        token = deployment_token(target, name, version, rollout.attempt)
        if self._adoptable(latest, name, version):
            assert latest is not None
            # Already deployed (e.g. killed after CreateDeployment): adopt, never duplicate.
            deployment_id, detail = latest.deployment_id, "adopted the target's latest deployment"
        else:
            spec = self.merged_deployment(latest, name, version)
            deployment_id = self.deployments.create_deployment(target, spec, token)
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
        self._save(updated, StatusPhase.DEPLOYMENT_CREATED, detail=detail)
        return updated.next_action_at - now

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
        (by ``componentNameTemplate``; without ``{platform}`` it cannot be told)."""
        template = self.settings.naming.component_name
        if "{platform}" not in template:
            return False
        pattern = re.escape(template)
        pattern = pattern.replace(re.escape("{project}"), re.escape(self.settings.project))
        pattern = pattern.replace(re.escape("{platform}"), "[A-Za-z0-9._-]+")
        return re.fullmatch(pattern, component_name) is not None

    def _adoptable(self, latest: DeploymentSpec | None, name: str, version: str) -> bool:
        """Whether the target's latest deployment is ours to adopt: it holds our component
        version and is not one that already failed on this device (adopting that one
        would fail the retry again without trying)."""
        if latest is None or (latest.components.get(name) or {}).get("componentVersion") != version:
            return False
        return latest.deployment_id not in self.ledger.failed_deployment_ids()

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

    def _poll_deployment(self, rollout: Rollout, now: float) -> float:
        name, version = rollout.component_name or "", rollout.component_version or ""
        progress = self.deployments.progress(
            self.settings.thing_name, rollout.deployment_id or "", name
        )
        polls = rollout.polls + 1
        if progress.installed_version == version and progress.lifecycle_state in _RUNNING_STATES and (
            progress.execution_status in (None, "SUCCEEDED", "COMPLETED")
            or progress.deployment_status in ("COMPLETED", "INACTIVE")
        ):
            updated = self._to(rollout, Phase.SUCCEEDED, now)
            updated.ended_at = now
            facts: dict[str, str | None] = {
                "deployed_version": str(rollout.model_version),
                "deployed_component_name": name,
                "deployed_component_version": version,
                "deployed_at": repr(now),
                # What health reports as the component's state (and says where it came from).
                "deployed_lifecycle_state": progress.lifecycle_state,
                "last_error_type": None,
                "last_error_message": None,
            }
            self._save(updated, StatusPhase.COMPONENT_RUNNING, facts=facts,
                       detail=f"{name} {version} {progress.lifecycle_state}")
            return 0.0
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
        event = None if rollout.last_reported == f"{StatusPhase.DEPLOYMENT_IN_PROGRESS.value}:{state}" else StatusPhase.DEPLOYMENT_IN_PROGRESS
        self._save(updated, event, detail=state, reported_key=state)
        return updated.next_action_at - now

    # -- outcomes ----------------------------------------------------------------------
    def _retry_later(
        self, rollout: Rollout, now: float, error: errors.AgentError, *, backoff: Backoff | None = None
    ) -> float:
        throttled = isinstance(error, errors.ThrottledError)
        if backoff is None:
            # Only StartModelPackagingJob's phase meets Lookout for Vision's tight account
            # quota; Greengrass throttling (per operation) clears within seconds.
            lookout = throttled and rollout.phase is Phase.PACKAGING_REQUESTED
            backoff = self.settings.job_poll_backoff if lookout else self.settings.poll_backoff
        throttles = rollout.throttles + 1 if throttled else rollout.throttles
        delay = backoff.delay(rollout.polls + throttles, self.rng)
        updated = rollout.model_copy(
            update={"throttles": throttles, "updated_at": now, "next_action_at": now + delay}
        )
        log.warning(
            "transient error", rollout=rollout.id, phase=rollout.phase.value,
            error=error.kind, message=error.message, retry_in=round(delay, 1),
        )
        self.ledger.save(
            updated,
            facts={"last_error_type": error.kind, "last_error_message": error.message, "last_error_at": repr(now)},
        )
        return delay

    def _fail(self, rollout: Rollout, now: float, error: errors.AgentError, event: StatusPhase) -> float:
        updated = self._to(rollout, Phase.FAILED, now)
        updated.ended_at = now
        updated.error_type, updated.error_code, updated.error_message = error.kind, error.code, error.message
        retry_at = now + self.settings.failure_retry_seconds
        self._save(
            updated,
            event,
            error=ErrorInfo(type=error.kind, code=error.code, message=error.message),
            facts={
                "last_error_type": error.kind,
                "last_error_message": error.message,
                "last_error_at": repr(now),
                "next_check_at": repr(retry_at),
            },
        )
        log.error("rollout failed", rollout=rollout.id, error=error.kind, message=error.message)
        return retry_at - now

    # -- recording ---------------------------------------------------------------------
    def _to(self, rollout: Rollout, phase: Phase, now: float, **changes: Any) -> Rollout:
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

    def _save(
        self,
        rollout: Rollout,
        event: StatusPhase | None = None,
        *,
        detail: str | None = None,
        error: ErrorInfo | None = None,
        facts: dict[str, str | None] | None = None,
        reported_key: str | None = None,
    ) -> Rollout:
        messages: list[OutgoingMessage] = []
        if event is not None:
            rollout.last_reported = event.value if reported_key is None else f"{event.value}:{reported_key}"
            messages.append(self.status_message(rollout, event, detail, error))
            log.info(
                "status", phase=event.value, rollout=rollout.id, model_version=rollout.model_version,
                job=rollout.job_name, deployment=rollout.deployment_id, detail=detail,
            )
        return self.ledger.save(rollout, messages, facts)

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
                job_name=rollout.job_name,
                component_name=rollout.component_name,
                component_version=rollout.component_version,
                deployment_id=rollout.deployment_id,
                detail=detail,
                error=error,
            ).to_json()

        return OutgoingMessage("status", settings.status_topic, render, retain=True)
