"""The reconciler against the local world (in-process, virtual clock, real boto3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.ledger import Ledger
from agent.reconciler import Reconciler
from agent.request import PackagingRequest
from localcloud.clock import VirtualClock
from localcloud.fleet import make_reconciler
from localcloud.world import World
from tests.support import agentworld as aw


def drive(reconciler: Reconciler, clock: VirtualClock, *, limit: float = 6 * 3600) -> str:
    """Step (advancing the virtual clock) until a rollout newer than the current newest
    has ended; return its final phase."""
    before = reconciler.ledger.rollouts(limit=1)
    start_id = 0
    if before:
        start_id = (before[0].id or 0) - (0 if before[0].phase.ended else 1)
    start = clock.now()
    while clock.now() - start < limit:
        delay = reconciler.step()
        latest = reconciler.ledger.rollouts(limit=1)
        if latest and (latest[0].id or 0) > start_id and latest[0].phase.ended:
            return latest[0].phase.value
        clock.advance(max(delay, 0.1))
    raise AssertionError("rollout did not settle in time")


def phases(ledger: Ledger) -> list[str]:
    return [json.loads(m.payload)["phase"] for m in ledger.pending() if m.kind == "status"]


def components(device: Any) -> dict[str, tuple[str, str]]:
    return {c.name: (c.version, c.state) for c in device.components()}


def start(world: World, clock: VirtualClock, tmp_path: Path, **overrides: Any) -> tuple[Reconciler, Any]:
    aw.seed(world)
    device = aw.add_device(world, "dev-1")
    clock.advance(60)
    world.tick()
    return aw.reconciler(world, "dev-1", tmp_path, **overrides), device


def test_first_rollout_packages_deploys_and_keeps_the_agent(world: World, clock: VirtualClock, tmp_path: Path) -> None:
    """A device with only the agent packages v1 for its platform, deploys it next to the
    agent (carrying over the target's components, policies and tags) and reports each step."""
    reconciler, device = start(world, clock, tmp_path)
    assert drive(reconciler, clock) == "SUCCEEDED"
    installed = components(device)
    assert installed["widgets.x86-64-cpu"][0] == "1.0.0"
    assert installed["l4v.edge.Agent"] == ("0.1.0", "RUNNING")
    assert "aws.iot.lookoutvision.EdgeAgent" in installed
    assert phases(reconciler.ledger) == [
        "CHECKING", "PACKAGING_STARTED", "PACKAGING_RUNNING", "PACKAGING_SUCCEEDED",
        "DEPLOYMENT_CREATED", "DEPLOYMENT_IN_PROGRESS", "COMPONENT_RUNNING",
    ]
    counts = world.calls.counts()
    assert counts["lookoutvision:StartModelPackagingJob"] == 1
    assert counts["greengrass:CreateDeployment"] == 1
    latest = world.client("greengrassv2").list_deployments(
        targetArn=world.arn("iot", "thing/dev-1"), historyFilter="LATEST_ONLY")["deployments"][0]
    full = world.client("greengrassv2").get_deployment(deploymentId=latest["deploymentId"])
    assert full["tags"] == {"owner": "fleet-team"}
    assert full["deploymentPolicies"]["failureHandlingPolicy"] == "ROLLBACK"


def test_rolls_forward_to_a_new_version_and_never_back(world: World, clock: VirtualClock, tmp_path: Path) -> None:
    """After v1 runs, a new trained v2 is picked up at the next check and replaces v1;
    deleting v2 later does not make the agent go back to v1 on its own."""
    reconciler, device = start(world, clock, tmp_path)
    assert drive(reconciler, clock) == "SUCCEEDED"
    world.lookoutvision.add_model(aw.PROJECT, "TRAINED")
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert components(device)["widgets.x86-64-cpu"][0] == "2.0.0"
    world.lookoutvision.delete_model(aw.PROJECT, 2)
    clock.advance(3600)
    reconciler.step()
    assert reconciler.ledger.active_rollout() is None
    assert components(device)["widgets.x86-64-cpu"][0] == "2.0.0"


def test_failed_job_ends_the_rollout_then_retries_with_a_new_job(world: World, clock: VirtualClock, tmp_path: Path) -> None:
    """A FAILED job ends attempt 1 with its StatusMessage; after the back-off attempt 2
    starts a job under a new name and succeeds."""
    aw.seed(world)
    device = aw.add_device(world, "dev-1")
    world.lookoutvision.fail_jobs(aw.PROJECT, times=1, message="Compilation failed for target")
    reconciler = aw.reconciler(world, "dev-1", tmp_path, failureRetrySeconds=600)
    assert drive(reconciler, clock) == "FAILED"
    failed = reconciler.ledger.rollouts(limit=1)[0]
    assert failed.error_type == "PackagingFailedError"
    assert "Compilation failed" in (failed.error_message or "")
    assert drive(reconciler, clock) == "SUCCEEDED"
    jobs = sorted(j.name for j in world.lookoutvision.jobs(aw.PROJECT))
    assert jobs == ["widgets-x86-64-cpu-v1-1", "widgets-x86-64-cpu-v1-2"]
    assert components(device)["widgets.x86-64-cpu"][0] == "1.0.0"


def test_install_failure_rolls_back_and_is_reported(world: World, clock: VirtualClock, tmp_path: Path) -> None:
    """When the model component fails to install, ROLLBACK restores the previous set and
    the rollout ends ROLLED_BACK/DEPLOYMENT_FAILED with the device's reason."""
    reconciler, device = start(world, clock, tmp_path)
    world.greengrass.fail_install("widgets.x86-64-cpu", times=1, message="disk full")
    assert drive(reconciler, clock) == "FAILED"
    reported = phases(reconciler.ledger)
    assert reported[-1] in ("ROLLED_BACK", "DEPLOYMENT_FAILED")
    assert "widgets.x86-64-cpu" not in components(device)
    assert components(device)["l4v.edge.Agent"][1] == "RUNNING"
    assert reconciler.ledger.rollouts(limit=1)[0].error_type == "DeploymentFailedError"


def test_failed_install_is_retried_with_a_new_deployment_revision(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """Break-it scenario "failed install, then retry": the first install of v1 fails and
    the device rolls back. After failureRetrySeconds the next attempt must not adopt the
    failed deployment (nor get it back from the clientToken): it creates a new revision
    on the same target, which installs and runs."""
    reconciler, device = start(world, clock, tmp_path, failureRetrySeconds=600)
    world.greengrass.fail_install("widgets.x86-64-cpu", times=1, message="disk full")
    assert drive(reconciler, clock) == "FAILED"
    failed = reconciler.ledger.rollouts(limit=1)[0]
    assert failed.attempt == 1 and failed.deployment_id
    ended = clock.now()
    assert drive(reconciler, clock) == "SUCCEEDED"
    retried = reconciler.ledger.rollouts(limit=1)[0]
    assert retried.attempt == 2
    assert retried.deployment_id != failed.deployment_id
    assert retried.started_at >= ended + 600
    assert components(device)["widgets.x86-64-cpu"][0] == "1.0.0"
    creates = [c for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300]
    assert len(creates) == 2
    assert len(world.lookoutvision.jobs(aw.PROJECT)) == 1  # the component was reused


def test_throttling_and_5xx_bursts_slow_the_agent_down_but_change_nothing(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """Bursts of ThrottlingException and 500s on every operation delay the rollout but
    still end with exactly one job and one deployment."""
    reconciler, _ = start(world, clock, tmp_path)
    world.faults.inject("lookoutvision", "*", "throttle", times=8)
    world.faults.inject("greengrass", "*", "5xx", times=8)
    assert drive(reconciler, clock) == "SUCCEEDED"
    counts = world.calls.counts()
    assert counts["lookoutvision:StartModelPackagingJob"] >= 1
    assert len(world.lookoutvision.jobs(aw.PROJECT)) == 1
    creates = [c for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300]
    assert len(creates) == 1


def test_project_without_a_trained_model_reports_the_error_and_waits(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """With only a TRAINING model there is nothing to package: no rollout, a clear error."""
    world.client("s3").create_bucket(Bucket=aw.BUCKET)
    world.lookoutvision.create_project(aw.PROJECT)
    world.lookoutvision.add_model(aw.PROJECT, "TRAINING")
    world.greengrass.register_component_version(json.loads(aw.AGENT_RECIPE.read_text()))
    aw.add_device(world, "dev-1")
    reconciler = aw.reconciler(world, "dev-1", tmp_path)
    delay = reconciler.step()
    assert delay > 0 and reconciler.ledger.active_rollout() is None
    last_error = reconciler.ledger.facts().last_error
    assert last_error is not None and last_error.type == "NoTrainedModelError"


def test_restart_at_every_step_boundary_resumes_without_duplicates(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """A new agent process (new reconciler, same ledger file) after every single step
    picks up where the last one stopped: one job, one deployment, v1 RUNNING."""
    aw.seed(world)
    aw.add_device(world, "dev-1")
    cfg = aw.config("dev-1", tmp_path / "dev-1")
    for _ in range(500):
        ledger = Ledger(Path(cfg.state_dir) / "agent.sqlite")
        reconciler = make_reconciler(world, cfg, aw.PLATFORMS["x86-64-cpu"], ledger)
        delay = reconciler.step()
        done = ledger.active_rollout() is None and ledger.facts().deployed_version == 1
        ledger.close()
        if done:
            break
        clock.advance(max(delay, 0.1))
    else:
        raise AssertionError("did not converge")
    assert len(world.lookoutvision.jobs(aw.PROJECT)) == 1
    assert sum(1 for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300) == 1


def test_action_done_but_not_recorded_is_adopted_not_repeated(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """If the agent died after StartModelPackagingJob returned but before recording it,
    the repeated call (same ClientToken) returns the same job; likewise for a deployment
    created but not recorded: the target's latest deployment is adopted."""
    reconciler, _ = start(world, clock, tmp_path)
    reconciler.step()  # CHECKING: rollout recorded as PACKAGING_REQUESTED
    rollout = reconciler.ledger.active_rollout()
    assert rollout is not None
    request: PackagingRequest = reconciler.request_for(rollout.model_version, rollout.attempt)
    reconciler.packaging.start_packaging(request)  # the "lost" call
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert len(world.lookoutvision.jobs(aw.PROJECT)) == 1
    assert sum(1 for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300) == 1


def test_component_version_already_registered_skips_packaging(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """When the cloud already has this platform's component version (another device
    packaged it), the agent deploys it without starting a job."""
    reconciler, device = start(world, clock, tmp_path)
    other = aw.reconciler(world, "dev-2", tmp_path)
    aw.add_device(world, "dev-2")
    assert drive(other, clock) == "SUCCEEDED"
    jobs_before = len(world.lookoutvision.jobs(aw.PROJECT))
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert len(world.lookoutvision.jobs(aw.PROJECT)) == jobs_before == 1
    assert "PACKAGING_SKIPPED" in phases(reconciler.ledger)
    assert components(device)["widgets.x86-64-cpu"][0] == "1.0.0"


def test_model_version_that_vanishes_ends_the_rollout_then_the_next_best_is_used(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """v2 is chosen, then deleted before packaging starts: that rollout fails with the
    service's ResourceNotFound, and the next check rolls out v1, the newest that remains."""
    aw.seed(world, models=2)
    device = aw.add_device(world, "dev-1")
    reconciler = aw.reconciler(world, "dev-1", tmp_path, failureRetrySeconds=600)
    reconciler.step()  # CHECKING: v2 chosen
    active = reconciler.ledger.active_rollout()
    assert active is not None and active.model_version == 2
    world.lookoutvision.delete_model(aw.PROJECT, 2)
    assert drive(reconciler, clock) == "FAILED"
    assert reconciler.ledger.rollouts(limit=1)[0].error_type in ("NotFoundError", "InvalidRequestError")
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert components(device)["widgets.x86-64-cpu"][0] == "1.0.0"


def test_component_version_taken_by_another_job_is_waited_for_and_used(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """Another device packages the same component version under a different job name;
    our StartModelPackagingJob gets ConflictException. The agent waits for that
    component version to appear, then deploys it without a job of its own."""
    aw.seed(world)
    aw.add_device(world, "dev-1")
    aw.add_device(world, "dev-2")
    other = aw.reconciler(
        world, "dev-2", tmp_path, jobNameTemplate="{project}-{platform}-other-v{version}-{attempt}"
    )
    clock.advance(other.step())  # CHECKING (then a short pause before starting)
    other.step()  # PACKAGING_STARTED under the other name
    assert len(world.lookoutvision.jobs(aw.PROJECT)) == 1
    reconciler = aw.reconciler(world, "dev-1", tmp_path)
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert len(world.lookoutvision.jobs(aw.PROJECT)) == 1
    conflicts = [c for c in world.calls.calls if c.operation == "StartModelPackagingJob" and c.status == 409]
    assert conflicts, "the scenario must exercise the ConflictException path"
    assert "PACKAGING_SKIPPED" in phases(reconciler.ledger)
