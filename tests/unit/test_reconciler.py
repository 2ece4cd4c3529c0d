"""The reconciler's decisions on in-memory ports: every phase transition, every error
class, the retry window, pinned and requested versions, the never-go-back rule.

The production adapters are proven against the local world (tests/integration); here
the same reconciler runs on fakes of its ports (tests/support/fakes.py), so each case
takes milliseconds.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import errors
from agent.config import load_config
from agent.decide import (
    STATUS_OF_PHASE,
    Answers,
    CheckComponent,
    Decider,
    FindLatestVersion,
    Observation,
    Record,
    StartPackaging,
    Wait,
)
from agent.platform import DetectedPlatform, detect_platform
from agent.ports import DeploymentSpec, FactChanges, Facts, LastError
from agent.reconciler import Reconciler, settings_from_config
from agent.rollout import Phase, Rollout
from tests.support.fakes import THING_ARN, FakeClock, FakeDeployments, FakePackaging, MemoryStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "platforms"
AGENT = "l4v.edge.Agent"


@pytest.fixture(scope="module")
def platform() -> DetectedPlatform:
    return detect_platform(FIXTURES / "x86-64-cpu-server")


class Device:
    """A reconciler on fakes, stepping on a fake clock."""

    def __init__(self, platform: DetectedPlatform, **config: Any) -> None:
        values: dict[str, Any] = {
            "thingName": "dev-1", "region": "us-east-1", "projectName": "widgets",
            "s3Bucket": "l4v-models", "stateDir": "/nonexistent-state",
        }
        values.update(config)
        self.config = load_config(overrides=values)
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.packaging = FakePackaging()
        self.gg = FakeDeployments()
        self.gg.deployments[THING_ARN] = [
            DeploymentSpec("d-agent", "agent-dev-1", {AGENT: {"componentVersion": "0.1.0"}})
        ]
        self.reconciler = Reconciler(
            settings=settings_from_config(self.config), platform=platform, packaging=self.packaging,
            deployments=self.gg, ledger=self.store, clock=self.clock, rng=random.Random(7),
        )

    def step(self) -> float:
        """One step, then let the time it asked for pass."""
        delay = self.reconciler.step()
        assert delay >= 0
        self.clock.advance(delay)
        return delay

    def steps(self, count: int) -> None:
        for _ in range(count):
            self.step()

    @property
    def rollout(self) -> Rollout:
        return self.store.rollouts(limit=1)[0]

    def component(self) -> tuple[str, str]:
        rollout = self.rollout
        return rollout.component_name or "", rollout.component_version or ""

    def packaged(self) -> None:
        """The job SUCCEEDED and the component exists."""
        self.packaging.set_job(self.rollout.job_name or "", "SUCCEEDED")
        self.gg.components.add(self.component())

    def running(self) -> None:
        """The device runs the rollout's component."""
        rollout = self.rollout
        self.gg.set_progress(
            rollout.deployment_id or "", "SUCCEEDED", deployment="COMPLETED",
            installed=rollout.component_version, state="RUNNING",
        )


def roll_out(device: Device) -> None:
    """Take a fresh version all the way to RUNNING."""
    device.step()  # check: new rollout
    device.step()  # packaging started
    device.packaged()
    device.step()  # component appeared
    device.step()  # deployment created
    device.running()
    device.step()  # running


# -- the happy path, phase by phase ------------------------------------------------------------
def test_a_new_version_goes_through_every_phase_to_running(platform: DetectedPlatform) -> None:
    """CHECKING -> PACKAGING_REQUESTED -> PACKAGING -> DEPLOY_REQUESTED -> DEPLOYING ->
    SUCCEEDED, one phase per step, each reported once, and the deployed facts recorded."""
    device = Device(platform)
    device.step()
    assert device.rollout.phase is Phase.PACKAGING_REQUESTED
    device.step()
    assert device.rollout.phase is Phase.PACKAGING and device.packaging.script.count("start_packaging") == 1
    device.packaged()
    device.step()
    assert device.rollout.phase is Phase.DEPLOY_REQUESTED
    device.step()
    assert device.rollout.phase is Phase.DEPLOYING
    [_, created] = device.gg.deployments[THING_ARN]
    # Everything the target ran is carried over; only our component is added.
    assert set(created.components) == {AGENT, device.rollout.component_name}
    assert created.policies is not None and created.policies["failureHandlingPolicy"] == "ROLLBACK"
    device.step()  # still queued
    assert device.rollout.phase is Phase.DEPLOYING
    device.running()
    device.step()
    assert device.rollout.phase is Phase.SUCCEEDED
    assert device.store.events() == [
        "CHECKING", "PACKAGING_STARTED", "PACKAGING_SUCCEEDED", "DEPLOYMENT_CREATED",
        "DEPLOYMENT_IN_PROGRESS", "COMPONENT_RUNNING",
    ]
    facts = device.store.facts()
    assert (facts.deployed_version, facts.deployed_lifecycle_state, facts.last_error) == (1, "RUNNING", None)
    assert facts.thing_arn == THING_ARN
    assert device.store.job_polls == {}  # forgotten when the rollout ended


def test_up_to_date_makes_no_rollout_and_checks_again_later(platform: DetectedPlatform) -> None:
    """With the newest version deployed, a check records when it looked and waits about
    one check interval."""
    device = Device(platform)
    device.store.update_facts(FactChanges(deployed_version=1))
    delay = device.reconciler.step()
    assert device.store.rollouts() == []
    assert 900 * 0.8 <= delay <= 900 * 1.2
    assert device.store.facts().last_check_at == device.clock.now()


def test_a_check_before_its_time_waits(platform: DetectedPlatform) -> None:
    """Between checks a step asks nothing; a requested check asks at once."""
    device = Device(platform)
    device.store.update_facts(FactChanges(deployed_version=1))
    device.reconciler.step()
    calls = len(device.packaging.script.calls)
    assert device.reconciler.step() > 0
    assert len(device.packaging.script.calls) == calls
    device.reconciler.request_check()
    device.reconciler.step()
    assert len(device.packaging.script.calls) == calls + 1


def test_never_goes_back_on_its_own(platform: DetectedPlatform) -> None:
    """Deployed v3 and the newest packageable is v2 (v3 deleted): nothing happens."""
    device = Device(platform)
    device.packaging.versions = {1: "TRAINED", 2: "TRAINED"}
    device.store.update_facts(FactChanges(deployed_version=3))
    device.step()
    assert device.store.rollouts() == []


def test_a_pinned_version_may_go_back(platform: DetectedPlatform) -> None:
    """modelVersion pinned to 2 with v3 deployed: v2 is rolled out, without asking for
    the latest version."""
    device = Device(platform, modelVersion=2)
    device.store.update_facts(FactChanges(deployed_version=3))
    device.step()
    assert device.rollout.model_version == 2
    assert device.packaging.script.count("latest_version") == 0


def test_a_requested_version_is_rolled_out_once(platform: DetectedPlatform) -> None:
    """check-now with a version: that version (older too) at the next step; the request
    is then forgotten."""
    device = Device(platform)
    device.packaging.versions = {1: "TRAINED", 2: "TRAINED"}
    device.store.update_facts(FactChanges(deployed_version=2))
    device.reconciler.request_check(1)
    assert device.store.facts().requested_version == 1
    device.step()
    assert device.rollout.model_version == 1
    assert device.store.facts().requested_version is None


def test_the_component_existing_skips_packaging(platform: DetectedPlatform) -> None:
    """Another device of the platform packaged it already: no job, PACKAGING_SKIPPED."""
    device = Device(platform)
    device.step()
    device.gg.components.add(device.component())
    device.step()
    assert device.rollout.phase is Phase.DEPLOY_REQUESTED
    assert device.packaging.script.count("start_packaging") == 0
    assert device.store.events()[-1] == "PACKAGING_SKIPPED"


def test_the_job_status_is_asked_only_when_its_poll_is_due(platform: DetectedPlatform) -> None:
    """While packaging, the step watches Greengrass; the packaging service is asked once
    its job-poll time has come, and reports RUNNING once, then SUCCEEDED."""
    device = Device(platform)
    device.steps(2)
    rollout_id = device.rollout.id or 0
    due = device.store.job_poll_due(rollout_id)
    assert due is not None and due > device.clock.now()
    device.step()
    assert device.packaging.script.count("packaging_status") == 0
    device.clock.advance(due - device.clock.now())
    device.packaging.set_job(device.rollout.job_name or "", "RUNNING")
    device.step()
    device.clock.advance((device.store.job_poll_due(rollout_id) or 0) - device.clock.now())
    device.step()
    assert device.packaging.script.count("packaging_status") == 2
    assert device.store.events().count("PACKAGING_RUNNING") == 1
    device.clock.advance((device.store.job_poll_due(rollout_id) or 0) - device.clock.now())
    device.packaging.set_job(device.rollout.job_name or "", "SUCCEEDED")
    device.step()
    assert device.rollout.phase is Phase.DEPLOY_REQUESTED
    assert device.store.events()[-1] == "PACKAGING_SUCCEEDED"


def test_a_failed_job_fails_the_rollout_and_a_retry_waits_for_the_window(platform: DetectedPlatform) -> None:
    """Job FAILED: the rollout fails with PACKAGING_FAILED; the next check before
    failureRetrySeconds makes no rollout; after it, attempt 2 with a new job name."""
    device = Device(platform)
    device.steps(2)
    first = device.rollout
    device.packaging.set_job(first.job_name or "", "FAILED", status_message="bad model")
    device.clock.advance((device.store.job_poll_due(first.id or 0) or 0) - device.clock.now())
    device.reconciler.step()
    failed = device.rollout
    assert (failed.phase, failed.error_type, failed.error_message) == (
        Phase.FAILED, "PackagingFailedError", "bad model"
    )
    assert device.store.events()[-1] == "PACKAGING_FAILED"
    assert device.store.job_poll_due(failed.id or 0) is None
    device.clock.advance(60)
    device.reconciler.request_check()
    device.reconciler.step()
    assert device.rollout.id == failed.id  # inside the retry window: nothing new
    device.clock.advance(3600)
    device.reconciler.request_check()
    device.reconciler.step()
    retry = device.rollout
    assert (retry.attempt, retry.phase) == (2, Phase.PACKAGING_REQUESTED)
    assert retry.job_name != failed.job_name


def test_a_requested_version_skips_the_retry_window(platform: DetectedPlatform) -> None:
    """A command naming the failed version retries it at once."""
    device = Device(platform)
    device.step()
    device.packaging.script.fail("start_packaging", errors.AccessDeniedError("no"))
    device.reconciler.step()  # FAILED; the clock stays inside the retry window
    assert device.rollout.phase is Phase.FAILED
    device.reconciler.request_check()
    device.reconciler.step()
    assert device.rollout.attempt == 1  # a plain check waits for the window
    device.reconciler.request_check(1)
    device.reconciler.step()
    assert (device.rollout.attempt, device.rollout.phase) == (2, Phase.PACKAGING_REQUESTED)


def test_a_failure_that_ended_in_the_future_is_brought_back(platform: DetectedPlatform) -> None:
    """A failed rollout that ended after now (the wall clock went back while stopped) is
    re-dated to now, so its retry window is not stretched."""
    device = Device(platform)
    device.store.save(Rollout(
        model_version=1, platform_key=platform.key, phase=Phase.FAILED, started_at=0,
        updated_at=0, next_action_at=0, ended_at=device.clock.now() + 86_400,
    ))
    delay = device.reconciler.step()
    assert device.rollout.ended_at == device.clock.now()
    assert delay <= 3600


# -- conflicts and adoption ---------------------------------------------------------------------
def test_a_conflict_with_our_own_job_adopts_it(platform: DetectedPlatform) -> None:
    """The job exists under our name for the same model and target (started by a
    sibling with another token): adopted, never started twice."""
    device = Device(platform)
    device.step()
    request = device.reconciler.request_for(1, 1)
    device.packaging.start_packaging(request.model_copy(update={"client_token": "sibling"}))
    device.step()
    assert device.rollout.phase is Phase.PACKAGING
    assert device.store.events()[-1] == "PACKAGING_STARTED"


def test_a_conflict_with_another_job_of_that_name_fails(platform: DetectedPlatform) -> None:
    """A same-named job for another model version: a ConflictError fails the rollout."""
    device = Device(platform)
    device.step()
    request = device.reconciler.request_for(1, 1)
    other = request.model_copy(update={"client_token": "other", "model_version": "9"})
    device.packaging.start_packaging(other)
    device.step()
    assert (device.rollout.phase, device.rollout.error_type) == (Phase.FAILED, "ConflictError")
    assert device.store.events()[-1] == "ROLLOUT_FAILED"


def test_a_conflict_without_a_job_waits_for_the_component(platform: DetectedPlatform) -> None:
    """Conflict but no job of our name: the component is being made elsewhere. Without it
    yet, retry later; once it exists, skip packaging."""
    device = Device(platform)
    device.step()
    device.packaging.script.fail("start_packaging", errors.ConflictError("taken"))
    device.step()
    assert device.rollout.phase is Phase.PACKAGING_REQUESTED
    last_error = device.store.facts().last_error
    assert last_error is not None and last_error.type == "TransientError"
    device.packaging.script.fail("start_packaging", errors.ConflictError("taken"))
    # The component shows up between the conflict and the check after it.
    original = device.gg.component_version_exists
    answers = iter([False, True])

    def appears(arn_prefix: str, name: str, version: str) -> bool:
        original(arn_prefix, name, version)
        return next(answers)

    device.gg.component_version_exists = appears  # type: ignore[method-assign]
    device.step()
    assert device.rollout.phase is Phase.DEPLOY_REQUESTED
    assert device.store.events()[-1] == "PACKAGING_SKIPPED"


def test_the_targets_deployment_holding_our_version_is_adopted(platform: DetectedPlatform) -> None:
    """Killed after CreateDeployment: the target's latest deployment already holds our
    version, so it is adopted and no second deployment is made."""
    device = Device(platform)
    device.steps(2)
    device.packaged()
    device.step()
    name, version = device.component()
    device.gg.deployments[THING_ARN].append(
        DeploymentSpec("d-earlier", None, {AGENT: {"componentVersion": "0.1.0"}, name: {"componentVersion": version}})
    )
    device.step()
    assert device.rollout.deployment_id == "d-earlier"
    assert device.gg.script.count("create_deployment") == 0


def test_a_deployment_that_failed_here_is_not_adopted(platform: DetectedPlatform) -> None:
    """Attempt 2 after a failed install makes a new deployment (new token) instead of
    adopting the one that failed."""
    device = Device(platform)
    device.steps(3 - 1)
    device.packaged()
    device.steps(2)
    first = device.rollout
    device.gg.set_progress(first.deployment_id or "", "FAILED", deployment="ACTIVE", reason="install failed")
    device.step()
    assert device.rollout.phase is Phase.FAILED and device.store.events()[-1] == "DEPLOYMENT_FAILED"
    device.clock.advance(3600)
    device.reconciler.request_check()
    device.steps(3)  # check, component exists (skip), deploy
    retry = device.rollout
    assert retry.attempt == 2 and retry.deployment_id not in (None, first.deployment_id)
    assert retry.deployment_token != first.deployment_token


def test_a_rolled_back_deployment_is_reported_as_such(platform: DetectedPlatform) -> None:
    """The device went back to the previous version: ROLLED_BACK, naming it."""
    device = Device(platform)
    device.steps(2)
    device.packaged()
    device.steps(2)
    device.gg.set_progress(device.rollout.deployment_id or "", "FAILED", installed="0.9.0", state="RUNNING")
    device.step()
    assert device.store.events()[-1] == "ROLLED_BACK"
    assert "rolled back to 0.9.0" in (device.rollout.error_message or "")


def test_an_inactive_deployment_without_our_version_failed(platform: DetectedPlatform) -> None:
    """Replaced by another deployment before ours was installed: DEPLOYMENT_FAILED."""
    device = Device(platform)
    device.steps(2)
    device.packaged()
    device.steps(2)
    device.gg.set_progress(device.rollout.deployment_id or "", None, deployment="INACTIVE")
    device.step()
    assert device.store.events()[-1] == "DEPLOYMENT_FAILED"


def test_progress_is_reported_once_per_state(platform: DetectedPlatform) -> None:
    """The same execution state polled twice is one DEPLOYMENT_IN_PROGRESS event; a new
    state is another."""
    device = Device(platform)
    device.steps(2)
    device.packaged()
    device.steps(4)
    device.gg.set_progress(device.rollout.deployment_id or "", "IN_PROGRESS", installed=None)
    device.steps(2)
    assert device.store.events().count("DEPLOYMENT_IN_PROGRESS") == 2


def test_a_thing_group_holding_another_platforms_model_is_refused(platform: DetectedPlatform) -> None:
    """A group target whose deployment holds this project's model for another platform:
    ConflictError, nothing deployed."""
    group = "arn:aws:iot:us-east-1:123456789012:thinggroup/line-1"
    device = Device(platform, deploymentTargetArn=group)
    device.gg.deployments[group] = [
        DeploymentSpec("d-g", None, {"widgets.arm64-nvidia": {"componentVersion": "1.0.0"}})
    ]
    device.steps(2)
    device.packaged()
    device.steps(2)
    assert (device.rollout.phase, device.rollout.error_type) == (Phase.FAILED, "ConflictError")
    assert device.gg.script.count("create_deployment") == 0


# -- errors by class -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (errors.ServiceUnavailableError("503"), True),
        (errors.ThrottledError("slow down"), True),
        (errors.TransientError("timeout"), True),
        (errors.AccessDeniedError("denied"), False),
        (errors.InvalidRequestError("bad"), False),
        (errors.NotFoundError("gone"), False),
    ],
)
@pytest.mark.parametrize("method", ["start_packaging", "component_version_exists", "latest_deployment",
                                    "create_deployment", "progress"])
def test_transient_errors_retry_and_terminal_errors_fail(
    platform: DetectedPlatform, error: errors.AgentError, retried: bool, method: str
) -> None:
    """In every phase: a transient error keeps the phase and records the error; a
    terminal one fails the rollout with ROLLOUT_FAILED."""
    device = Device(platform)
    device.step()
    phase_of = {
        "start_packaging": 0, "component_version_exists": 0, "latest_deployment": 2,
        "create_deployment": 2, "progress": 3,
    }
    if phase_of[method] >= 2:
        device.gg.components.add(device.component())
        device.steps(phase_of[method] - 1)
    target = device.packaging if method == "start_packaging" else device.gg
    target.script.fail(method, error)
    before = device.rollout
    device.reconciler.step()
    after = device.rollout
    last_error = device.store.facts().last_error
    assert last_error is not None and last_error.type == error.kind
    if retried:
        assert after.phase is before.phase and after.next_action_at > device.clock.now()
        assert after.throttles == before.throttles + isinstance(error, errors.ThrottledError)
    else:
        assert (after.phase, after.error_type) == (Phase.FAILED, error.kind)
        assert device.store.events()[-1] == "ROLLOUT_FAILED"


def test_a_503_on_the_start_of_packaging_retries_it_at_the_poll_pace(platform: DetectedPlatform) -> None:
    """StartPackaging answered 503: it is asked again at the next step, on the short poll
    back-off."""
    device = Device(platform)
    device.step()
    device.packaging.script.fail("start_packaging", *[errors.ServiceUnavailableError("y")] * 3)
    delays = [device.step() for _ in range(3)]
    assert max(delays) <= 60 and device.packaging.script.count("start_packaging") == 3
    device.step()
    assert device.rollout.phase is Phase.PACKAGING


def test_a_throttled_start_of_packaging_keeps_watching_for_the_component(platform: DetectedPlatform) -> None:
    """StartPackaging throttled with Retry-After 400 s: it is not asked again for at least
    that long, while every step (at the poll pace) checks Greengrass for the component;
    once its own due-time has come it is asked again and the job starts."""
    device = Device(platform)
    device.step()
    device.packaging.script.fail("start_packaging", errors.ThrottledError("slow down", retry_after=400))
    throttled_at = device.clock.now()
    device.step()
    rollout = device.rollout
    due = device.store.job_poll_due(rollout.id or 0) or 0
    assert rollout.phase is Phase.PACKAGING_REQUESTED and rollout.throttles == 1
    assert due - throttled_at >= 400
    checks_before = device.gg.script.count("component_version_exists")
    watch_steps = 0
    while device.clock.now() < due:
        assert device.step() <= 60
        watch_steps += 1
    assert device.packaging.script.count("start_packaging") == 1
    assert device.gg.script.count("component_version_exists") - checks_before == watch_steps >= 400 / 60
    device.step()
    assert device.packaging.script.count("start_packaging") == 2
    assert device.rollout.phase is Phase.PACKAGING


def test_a_component_that_appears_while_the_start_is_throttled_is_deployed(platform: DetectedPlatform) -> None:
    """Another device's job delivers while this one's StartPackaging waits out a
    throttle: the next watch step sees the component and goes on to deploy, without
    asking the packaging service again."""
    device = Device(platform)
    device.step()
    device.packaging.script.fail("start_packaging", errors.ThrottledError("slow down", retry_after=500))
    device.step()
    device.step()
    device.gg.components.add(device.component())
    device.step()
    assert device.rollout.phase is Phase.DEPLOY_REQUESTED
    assert device.store.events()[-1] == "PACKAGING_SKIPPED"
    assert device.packaging.script.count("start_packaging") == 1


def test_repeated_throttles_of_the_start_escalate_its_back_off(platform: DetectedPlatform) -> None:
    """Each throttled StartPackaging in a row raises the ceiling of its job-poll
    back-off (30 s, 60 s, 120 s, ...), so a fleet's retries spread further apart."""
    device = Device(platform)
    device.step()
    throttles = 6
    device.packaging.script.fail("start_packaging", *[errors.ThrottledError("x")] * throttles)
    waits = []
    while device.packaging.script.count("start_packaging") < throttles:
        calls = device.packaging.script.count("start_packaging")
        device.step()
        if device.packaging.script.count("start_packaging") > calls:
            waits.append((device.store.job_poll_due(device.rollout.id or 0) or 0) - device.clock.now())
    assert device.rollout.throttles == throttles
    assert max(waits[-2:]) > 60 >= max(waits[:1])


def test_a_due_start_retry_beyond_any_wait_is_rebased(platform: DetectedPlatform) -> None:
    """A StartPackaging retry stored three days ahead (the wall clock went back while
    stopped) waits at most the longest back-off and is stored re-based."""
    device = Device(platform)
    device.step()
    rollout = device.rollout
    device.store.save(rollout, job_poll_due=device.clock.now() + 3 * 86_400)
    device.clock.advance(rollout.next_action_at - device.clock.now())
    assert device.reconciler.step() <= 60
    assert device.store.job_poll_due(rollout.id or 0) == device.clock.now() + 600.0


def test_a_failed_job_status_call_retries_on_the_poll_pace(platform: DetectedPlatform) -> None:
    """A throttled job-status call: the job is asked again a job-poll interval later, the
    component watched at the poll pace meanwhile."""
    device = Device(platform)
    device.steps(2)
    rollout = device.rollout
    device.clock.advance((device.store.job_poll_due(rollout.id or 0) or 0) - device.clock.now())
    device.packaging.script.fail("packaging_status", errors.ThrottledError("x"))
    delay = device.reconciler.step()
    assert delay <= 60 and device.rollout.throttles == 1
    assert (device.store.job_poll_due(rollout.id or 0) or 0) - device.clock.now() >= 600 * 0.75


@pytest.mark.parametrize(
    ("error", "longest"),
    [(errors.ServiceUnavailableError("503"), 60.0), (errors.ThrottledError("x"), 600.0),
     (errors.NoTrainedModelError("none"), 900 * 1.2)],
)
def test_a_failed_check_records_the_error_and_retries(
    platform: DetectedPlatform, error: errors.AgentError, longest: float
) -> None:
    """A failed version lookup makes no rollout; transient errors retry on the poll (or,
    throttled, job-poll) back-off, terminal ones at the next check interval."""
    device = Device(platform)
    device.packaging.script.fail("latest_version", error)
    delay = device.reconciler.step()
    assert device.store.rollouts() == [] and 0 < delay <= longest
    assert device.store.facts().last_error == LastError(error.kind, error.message, device.clock.now())
    assert device.store.facts().next_check_at == device.clock.now() + delay


def test_no_trained_model_is_a_terminal_check_error(platform: DetectedPlatform) -> None:
    """Only TRAINING versions: NoTrainedModelError is recorded, no rollout."""
    device = Device(platform)
    device.packaging.versions = {1: "TRAINING"}
    device.reconciler.step()
    last_error = device.store.facts().last_error
    assert last_error is not None and last_error.type == "NoTrainedModelError"


def test_a_successful_check_clears_the_last_error(platform: DetectedPlatform) -> None:
    device = Device(platform)
    device.store.update_facts(FactChanges(last_error=LastError("ThrottledError", "x", 1.0)))
    device.reconciler.step()
    assert device.store.facts().last_error is None


# -- the check budget and throttle adaptation ---------------------------------------------------
def up_to_date(device: Device) -> None:
    """The device already runs the newest version (so a check only looks)."""
    device.store.update_facts(FactChanges(deployed_version=1))


@pytest.mark.parametrize("enabled", [False, True])
def test_a_big_fleet_checks_at_its_share_of_the_budget(platform: DetectedPlatform, enabled: bool) -> None:
    """10,000 devices with 0.5 checks/s between them: each checks every ~20,000 s
    (jittered), with fleet coordination on or off."""
    device = Device(platform, fleet={"enabled": enabled, "size": 10_000, "checkBudgetPerSecond": 0.5})
    up_to_date(device)
    delays = [device.step() for _ in range(20)]
    assert 20_000 * 0.8 <= min(delays) < max(delays) <= 20_000 * 1.2
    assert device.packaging.script.count("latest_version") == 20
    assert (device.reconciler.settings.fleet is not None) is enabled


def test_throttled_checks_stretch_the_interval_and_successful_ones_shrink_it_back(
    platform: DetectedPlatform,
) -> None:
    """Each throttled check doubles the stored interval factor (up to 16) and retries
    later the more it was throttled; each successful one multiplies it by 0.8 (down to
    1), and the next interval is the budget's times the factor."""
    device = Device(platform)
    up_to_date(device)
    device.packaging.script.fail("latest_version", *[errors.ThrottledError("x")] * 5)
    factors = []
    for _ in range(5):
        device.step()
        factors.append(device.store.facts().check_interval_factor)
    assert factors == [2, 4, 8, 16, 16]
    shrunk = []
    for _ in range(3):
        delay = device.step()
        factor = device.store.facts().check_interval_factor
        shrunk.append(factor)
        assert 900 * 0.8 * factor <= delay <= 900 * 1.2 * factor
    assert shrunk == pytest.approx([12.8, 10.24, 8.192])
    device.store.update_facts(FactChanges(check_interval_factor=1.1))
    device.step()
    assert device.store.facts().check_interval_factor == 1.0


def test_throttled_checks_in_a_row_escalate_their_back_off_up_to_the_job_poll_cap(
    platform: DetectedPlatform,
) -> None:
    """The first throttled check retries within the job-poll back-off's 4th step (5-240 s);
    with the factor already stretched (throttles in a row) the ceiling grows, but never
    past jobPollMaxSeconds, so a release is still found within minutes."""
    delays = {}
    for stored in (1.0, 16.0):
        device = Device(platform)
        device.store.update_facts(FactChanges(check_interval_factor=stored))
        device.packaging.script.fail("latest_version", *[errors.ThrottledError("x")] * 30)
        delays[stored] = [device.step() for _ in range(30)]
    assert 5 <= delays[1.0][0] <= 240
    assert 240 < max(delays[16.0]) <= 600 and min(delays[16.0]) >= 5


def test_a_throttled_check_waits_at_least_the_retry_after(platform: DetectedPlatform) -> None:
    """The service said Retry-After 550 s: the next check is not sooner, even though
    the back-off alone would have come earlier; a Retry-After beyond the longest
    back-off is honoured only up to it (600 s)."""
    device = Device(platform)
    device.packaging.script.fail("latest_version", errors.ThrottledError("x", retry_after=550))
    delay = device.reconciler.step()
    assert delay >= 550 and device.store.facts().next_check_at == device.clock.now() + delay
    greedy = Device(platform)
    greedy.packaging.script.fail("latest_version", errors.ThrottledError("x", retry_after=10**9))
    assert greedy.reconciler.step() == 600.0


def test_a_throttled_rollout_call_waits_at_least_the_retry_after(platform: DetectedPlatform) -> None:
    """A throttled Greengrass call while deploying: the retry is at least the service's
    Retry-After (the poll back-off alone is at most 60 s), at most the longest back-off."""
    for retry_after, low, high in ((300.0, 300.0, 300.0), (10.0**9, 600.0, 600.0), (None, 1.0, 60.0)):
        device = Device(platform)
        device.steps(2)
        device.packaged()
        device.step()  # component appeared
        device.gg.script.fail("latest_deployment", errors.ThrottledError("x", retry_after=retry_after))
        delay = device.reconciler.step()
        assert device.rollout.phase is Phase.DEPLOY_REQUESTED
        assert low <= delay <= high, (retry_after, delay)


def test_a_stretched_check_is_not_mistaken_for_a_clock_jump(platform: DetectedPlatform) -> None:
    """A next check 4 hours away is what a factor of 16 allows (and is kept); the same
    due-time with the factor back at 1 can only come from a clock that went back, and
    is rebased to the longest wait (failureRetrySeconds)."""
    device = Device(platform)
    up_to_date(device)
    far = device.clock.now() + 4 * 3600
    device.store.update_facts(FactChanges(next_check_at=far, check_interval_factor=16.0))
    assert device.reconciler.step() == 4 * 3600
    assert device.store.facts().next_check_at == far
    device.store.update_facts(FactChanges(check_interval_factor=1.0))
    assert device.reconciler.step() == 3600.0
    assert device.store.facts().next_check_at == device.clock.now() + 3600.0


# -- clocks -------------------------------------------------------------------------------------
def test_a_wall_clock_jump_moves_the_due_times(platform: DetectedPlatform) -> None:
    """The wall clock jumps a day ahead between steps: the stored due-times move with it,
    so the remaining wait is kept and nothing fires early."""
    device = Device(platform)
    device.steps(2)
    rollout = device.rollout
    remaining = rollout.next_action_at - device.clock.now()
    device.reconciler.step()  # the first look of the watch
    rollout = device.rollout
    remaining = rollout.next_action_at - device.clock.now()
    device.clock.jump(86_400)
    assert device.reconciler.step() == pytest.approx(remaining)


def test_a_due_time_beyond_any_wait_is_rebased(platform: DetectedPlatform) -> None:
    """A next action three days ahead (stored before the clock went back while stopped)
    waits at most the longest back-off and is stored re-based; so is a next check."""
    device = Device(platform)
    device.step()
    rollout = device.rollout
    device.store.save(rollout.model_copy(update={"next_action_at": device.clock.now() + 3 * 86_400}))
    assert device.reconciler.step() == 600.0
    assert device.rollout.next_action_at == device.clock.now() + 600.0
    idle = Device(platform)
    idle.store.update_facts(FactChanges(deployed_version=1, next_check_at=idle.clock.now() + 9 * 86_400))
    assert idle.reconciler.step() == 3600.0
    assert idle.store.facts().next_check_at == idle.clock.now() + 3600.0


# -- the decision code as a value ---------------------------------------------------------------
def test_the_decision_returns_calls_and_records_as_values(platform: DetectedPlatform) -> None:
    """decide() does no I/O: it names the call it needs, then, given the answers, the
    record to write."""
    config = Device(platform).config
    decider = Decider(settings_from_config(config), platform, random.Random(1))
    observation = Observation(now=100.0, rollout=None, facts=Facts(thing_arn=THING_ARN))
    answers = Answers()
    first = decider.decide(observation, answers)
    assert first == FindLatestVersion("widgets")
    answers.add(first, 4)
    second = decider.decide(observation, answers)
    assert second.__class__.__name__ == "FindPreviousRollout"
    answers.add(second, None)  # type: ignore[arg-type]
    record = decider.decide(observation, answers)
    assert isinstance(record, Record) and record.rollout is not None
    assert (record.rollout.model_version, record.event) == (4, STATUS_OF_PHASE[Phase.PACKAGING_REQUESTED])
    started = Observation(now=record.rollout.next_action_at, rollout=record.rollout, facts=observation.facts)
    check = decider.decide(started, Answers())
    assert isinstance(check, CheckComponent)
    answers = Answers()
    answers.add(check, False)
    start = decider.decide(started, answers)
    assert isinstance(start, StartPackaging) and start.writes
    assert start.describe()["request"]["ModelVersion"] == "4"
    early = Observation(now=record.rollout.next_action_at - 5, rollout=record.rollout, facts=observation.facts)
    assert decider.decide(early, Answers()) == Wait(pytest.approx(5.0))  # type: ignore[arg-type]


def test_every_phase_has_one_status_event() -> None:
    """The one mapping between the rollout phases and the reported status events."""
    assert set(STATUS_OF_PHASE) == set(Phase)


def test_the_reconciler_imports_no_sqlite_botocore_or_awscrt() -> None:
    """The core reaches storage and the cloud only through its ports."""
    code = (
        "import sys, agent.reconciler, agent.decide; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sqlite3', '_sqlite3', 'botocore', 'boto3', 'awscrt', 'awsiot'}))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_actions_describe_themselves_for_plan(platform: DetectedPlatform) -> None:
    """Every action a rollout goes through has a plain-data description (what ``plan``
    prints): calls with their arguments, records with phase and event, waits."""
    device = Device(platform)
    seen: list[dict[str, Any]] = []
    real_perform = device.reconciler.perform

    def perform(call: Any, *, remember: bool = True) -> Any:
        seen.append(call.describe())
        return real_perform(call, remember=remember)

    device.reconciler.perform = perform  # type: ignore[method-assign]
    device.gg.deployments.clear()  # a device with no deployment yet
    roll_out(device)
    names = [d["action"] for d in seen]
    assert names[:3] == ["FindLatestVersion", "FindPreviousRollout", "LookUpThingArn"]
    created = next(d for d in seen if d["action"] == "CreateDeployment")
    assert created["spec"]["replacesName"] == "l4v-edge-agent-dev-1"
    assert created["target_arn"] == THING_ARN
    decider = device.reconciler.decider
    rollout = device.rollout
    record = decider.decide(Observation(now=device.clock.now(), rollout=None, facts=device.store.facts()), Answers())
    assert isinstance(record, Wait) and record.describe()["action"] == "Wait"
    failed = Record(1.0, rollout=rollout, event=STATUS_OF_PHASE[Phase.FAILED], detail="x",
                    error=None).describe()
    assert failed == {"action": "Record", "waitSeconds": 1.0, "phase": "SUCCEEDED", "modelVersion": 1,
                      "event": "ROLLOUT_FAILED", "detail": "x"}
    with pytest.raises(AssertionError, match="ended phase"):
        decider.decide(Observation(now=device.clock.now(), rollout=rollout, facts=Facts(), check_requested=True),
                       Answers())


def test_a_completed_deployment_counts_once_the_component_runs(platform: DetectedPlatform) -> None:
    """The deployment COMPLETED while the execution status still lags: RUNNING is enough."""
    device = Device(platform)
    device.steps(2)
    device.packaged()
    device.steps(2)
    device.gg.set_progress(device.rollout.deployment_id or "", "IN_PROGRESS", deployment="COMPLETED",
                           installed=device.rollout.component_version, state="FINISHED")
    device.step()
    assert device.rollout.phase is Phase.SUCCEEDED



# -- plan: the same decisions, reading calls only ------------------------------------------------
def test_plan_shows_packaging_then_deployment_and_writes_nothing(platform: DetectedPlatform) -> None:
    """A fresh device: plan names the request it would send and the deployment after it,
    makes no writing call and stores nothing (not even the thing's ARN)."""
    from agent.plan import plan_of

    device = Device(platform)
    out = plan_of(device.reconciler, device.clock.now())
    assert out["action"] == "package, then deploy"
    assert (out["deployedVersion"], out["desiredVersion"]) == (None, 1)
    assert out["packagingRequest"]["JobName"] == "widgets-x86-64-cpu-v1-1"
    assert set(out["deployment"]["components"]) == {AGENT, "widgets.x86-64-cpu"}
    assert out["deployment"]["replaces"] == "d-agent"
    assert [a["action"] for a in out["actions"]][-1] == "CreateDeployment"
    assert device.packaging.script.count("start_packaging") == 0
    assert device.gg.script.count("create_deployment") == 0
    assert device.store.stored == {} and device.store.facts() == Facts()


def test_plan_follows_the_retry_window_and_requested_versions(platform: DetectedPlatform) -> None:
    """After a failure, plan says the retry is not due (as run would); a requested version
    is planned at once, like run does."""
    from agent.plan import plan_of

    device = Device(platform)
    device.step()
    device.packaging.script.fail("start_packaging", errors.AccessDeniedError("no"))
    device.reconciler.step()  # FAILED; the clock stays inside the retry window
    out = plan_of(device.reconciler, device.clock.now())
    assert out["action"] == "nothing: retry of v1 not due yet"
    device.store.update_facts(FactChanges(requested_version=1))
    out = plan_of(device.reconciler, device.clock.now())
    assert out["action"] == "package, then deploy" and out["packagingRequest"]["JobName"].endswith("-2")


def test_plan_of_an_existing_component_deploys_it_and_errors_are_reported(platform: DetectedPlatform) -> None:
    """The component exists: "deploy existing component". A failing read ends the plan
    with the error; up to date says so."""
    from agent.plan import plan_of

    device = Device(platform)
    device.gg.components.add(("widgets.x86-64-cpu", "1.0.0"))
    assert plan_of(device.reconciler, device.clock.now())["action"] == "deploy existing component"
    device.packaging.script.fail("latest_version", errors.ServiceUnavailableError("503"))
    out = plan_of(device.reconciler, device.clock.now())
    assert out["error"]["type"] == "ServiceUnavailableError"
    device.store.update_facts(FactChanges(deployed_version=1))
    assert plan_of(device.reconciler, device.clock.now())["action"] == "nothing: up to date"


def test_plan_continues_an_active_rollout(platform: DetectedPlatform) -> None:
    """With a rollout packaging, plan continues it: the job's status is read and the
    deployment after it shown; an unreadable job ends the plan with the error."""
    from agent.plan import plan_of

    device = Device(platform)
    device.steps(2)
    device.packaging.set_job(device.rollout.job_name or "", "SUCCEEDED")
    out = plan_of(device.reconciler, device.clock.now())
    assert out["action"].startswith("continue rollout 1 (PACKAGING)")
    assert "deployment" in out
    device.gg.script.fail("component_version_exists", errors.AccessDeniedError("denied"))
    out = plan_of(device.reconciler, device.clock.now())
    assert out["error"]["type"] == "AccessDeniedError"
