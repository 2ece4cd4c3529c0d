"""Whole rollouts with the SageMaker backend in the local world (Model Registry, Neo,
Greengrass CreateComponentVersion), in-process, on the virtual clock, real botocore.

The SageMaker and Greengrass emulators check every request they receive against the
official ``sagemaker`` and ``greengrassv2`` models in the installed botocore (shapes,
patterns, enums, required members), so a request the agent builds wrongly is a 400 in
the call log; the tests assert there is none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.ledger import Ledger
from agent.reconciler import Reconciler
from localcloud.clock import VirtualClock
from localcloud.fleet import make_reconciler
from localcloud.world import World
from tests.integration.test_rollout import components, drive
from tests.support import agentworld as aw

COMPONENT = "widgets.x86-64-cpu"


def statuses(ledger: Ledger) -> list[dict[str, Any]]:
    return aw.messages(ledger, "status")


def start(
    world: World, clock: VirtualClock, tmp_path: Path, *, versions: int = 1, **changes: Any
) -> tuple[Reconciler, Any]:
    role = aw.seed_sagemaker(world, versions=versions)
    device = aw.add_device(world, "dev-1")
    clock.advance(60)
    world.tick()
    overrides = aw.sagemaker_settings(role, **changes.pop("sagemaker", {}))
    return aw.reconciler(world, "dev-1", tmp_path, **overrides, **changes), device


def refused(world: World) -> list[str]:
    """Requests to SageMaker or Greengrass the world refused as malformed or invalid."""
    return [
        f"{c.service}:{c.operation} {c.status}"
        for c in world.calls.calls
        if c.service in ("sagemaker", "greengrass") and c.status == 400
    ]


def recipe_of(world: World, name: str, version: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The component version's recipe and tags (GetComponent)."""
    arn = world.arn("greengrass", f"components:{name}:versions:{version}")
    answer = world.client("greengrassv2").get_component(arn=arn)
    return json.loads(answer["recipe"]), answer.get("tags", {})  # botocore decodes the blob


def test_two_model_versions_roll_out_through_neo_and_a_made_component(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """v1, the newest Approved package, is compiled by Neo (one job, target from the
    platform, output under the configured location + prefix), made into a component
    whose recipe installs and extracts the .tar.gz for linux/amd64, deployed next to the
    agent and FINISHED; a newer Approved v2 then replaces it. Every status event names
    the backend, no request is refused, and the component carries componentTags."""
    reconciler, device = start(world, clock, tmp_path, componentTags={"team": "vision"})
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert components(device)[COMPONENT][0] == "1.0.0"
    assert components(device)[COMPONENT][1] in ("RUNNING", "FINISHED")
    assert components(device)["l4v.edge.Agent"] == ("0.1.0", "RUNNING")
    events = statuses(reconciler.ledger)
    # PACKAGING_RUNNING shows only when a status poll catches Neo INPROGRESS.
    assert [e["phase"] for e in events if e["phase"] != "PACKAGING_RUNNING"] == [
        "CHECKING", "PACKAGING_STARTED", "PACKAGING_SUCCEEDED",
        "DEPLOYMENT_CREATED", "DEPLOYMENT_IN_PROGRESS", "COMPONENT_RUNNING",
    ]
    assert {e["packagingBackend"] for e in events} == {"sagemaker"}
    [job] = world.sagemaker.jobs()
    assert job.name == "widgets-x86-64-cpu-v1-1"
    described = world.client("sagemaker").describe_compilation_job(CompilationJobName=job.name)
    assert described["ModelPackageVersionArn"] == world.sagemaker.package_arn(aw.GROUP, 1)
    assert described["OutputConfig"]["TargetPlatform"] == {"Os": "LINUX", "Arch": "X86_64"}
    assert described["OutputConfig"]["S3OutputLocation"].startswith(
        f"s3://{aw.NEO_BUCKET}/compiled/l4v-edge-agent/widgets/x86-64-cpu"
    )
    recipe, tags = recipe_of(world, COMPONENT, "1.0.0")
    assert tags == {"team": "vision"}
    [manifest] = recipe["Manifests"]
    assert manifest["Platform"] == {"os": "linux", "architecture": "amd64"}
    [artifact] = manifest["Artifacts"]
    assert artifact["URI"] == described["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact["URI"].endswith(".tar.gz") and artifact["Unarchive"] == "NONE"
    assert "tar -xzf" in manifest["Lifecycle"]["Install"]["Script"]
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["ModelPath"] == (
        f"work/{COMPONENT}/model"
    )

    world.sagemaker.add_model_package(aw.GROUP, approval="Approved")
    clock.advance(3600)
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert components(device)[COMPONENT][0] == "2.0.0"
    counts = world.calls.counts()
    assert counts["sagemaker:CreateCompilationJob"] == 2
    assert counts["greengrass:CreateComponentVersion"] == 2
    assert counts["greengrass:CreateDeployment"] == 2
    assert refused(world) == []


def test_only_approved_packages_count_and_a_pin_selects_its_version(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """A newer package still PendingManualApproval is not deployed; with modelVersion
    pinned to 1 the agent deploys v1 even though v2 is the newest Approved."""
    reconciler, device = start(world, clock, tmp_path, versions=2)
    world.sagemaker.add_model_package(aw.GROUP)  # v3, pending approval
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert components(device)[COMPONENT][0] == "2.0.0"

    pinned_world_dir = tmp_path / "pinned"
    role = world.sagemaker.create_execution_role("PinnedRole")
    aw.add_device(world, "dev-2")
    pinned = aw.reconciler(
        world, "dev-2", pinned_world_dir, modelVersion="1", **aw.sagemaker_settings(role)
    )
    assert drive(pinned, clock) == "SUCCEEDED"
    assert pinned.ledger.facts().deployed_version == 1


def test_identical_devices_share_one_job_and_one_component(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """Two devices of one platform derive the same job name: the second gets
    ResourceInUse, checks that the job compiles the same package for the same target and
    adopts it; the component is made once (same recipe, same clientToken)."""
    role = aw.seed_sagemaker(world)
    aw.add_device(world, "dev-1")
    aw.add_device(world, "dev-2")
    first = aw.reconciler(world, "dev-1", tmp_path, **aw.sagemaker_settings(role))
    second = aw.reconciler(world, "dev-2", tmp_path, **aw.sagemaker_settings(role))
    for _ in range(3):
        first.step()
        second.step()
        clock.advance(20)
    assert drive(first, clock) == "SUCCEEDED"
    assert drive(second, clock) == "SUCCEEDED"
    assert len(world.sagemaker.jobs()) == 1
    in_use = [
        c for c in world.calls.calls if c.operation == "CreateCompilationJob" and c.status >= 400
    ]
    assert len(in_use) == 1
    assert world.greengrass.component_version_exists(COMPONENT, "1.0.0")
    made = [
        c for c in world.calls.calls if c.operation == "CreateComponentVersion" and c.status < 300
    ]
    assert 1 <= len(made) <= 2  # a second call with the same token returns the same version


def test_a_same_named_job_for_another_target_is_not_adopted(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """A job already named like ours but compiling for ARM64 is a ConflictError that
    names the difference; the rollout fails instead of deploying the wrong build."""
    reconciler, _ = start(world, clock, tmp_path)
    role = world.sagemaker.create_execution_role("Other")
    world.client("sagemaker").create_compilation_job(
        CompilationJobName="widgets-x86-64-cpu-v1-1",
        RoleArn=role,
        ModelPackageVersionArn=world.sagemaker.package_arn(aw.GROUP, 1),
        OutputConfig={
            "S3OutputLocation": f"s3://{aw.NEO_BUCKET}/other",
            "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"},
        },
        StoppingCondition={"MaxRuntimeInSeconds": 900},
    )
    assert drive(reconciler, clock) == "FAILED"
    failed = reconciler.ledger.rollouts(limit=1)[0]
    assert failed.error_type == "ConflictError"
    assert "exists for another model version or platform" in (failed.error_message or "")
    assert not world.greengrass.component_version_exists(COMPONENT, "1.0.0")


def test_failed_compilation_ends_the_rollout_with_its_reason_then_retries(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """A FAILED Neo job ends attempt 1 with PACKAGING_FAILED and Neo's FailureReason;
    after the back-off, attempt 2 compiles under a new job name and succeeds."""
    reconciler, device = start(world, clock, tmp_path, failureRetrySeconds=600)
    world.sagemaker.fail_jobs(times=1, reason="ClientError: unsupported operator aten::foo")
    assert drive(reconciler, clock) == "FAILED"
    failed = reconciler.ledger.rollouts(limit=1)[0]
    assert failed.error_type == "PackagingFailedError"
    assert "unsupported operator aten::foo" in (failed.error_message or "")
    assert "SageMaker Neo compilation job widgets-x86-64-cpu-v1-1 FAILED" in (
        failed.error_message or ""
    )
    assert statuses(reconciler.ledger)[-1]["phase"] == "PACKAGING_FAILED"
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert sorted(j.name for j in world.sagemaker.jobs()) == [
        "widgets-x86-64-cpu-v1-1",
        "widgets-x86-64-cpu-v1-2",
    ]
    assert components(device)[COMPONENT][0] == "1.0.0"


def test_package_without_an_input_shape_is_a_terminal_error_not_sent_to_neo(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """A package whose container lacks ModelInput.DataInputConfig fails the rollout with
    an InvalidRequestError naming that member; Neo is never asked."""
    role = aw.seed_sagemaker(world, versions=0)
    world.sagemaker.add_model_package(aw.GROUP, approval="Approved", data_input_config=None)
    aw.add_device(world, "dev-1")
    reconciler = aw.reconciler(world, "dev-1", tmp_path, **aw.sagemaker_settings(role))
    assert drive(reconciler, clock) == "FAILED"
    failed = reconciler.ledger.rollouts(limit=1)[0]
    assert failed.error_type == "InvalidRequestError"
    assert "InferenceSpecification.Containers[0].ModelInput.DataInputConfig" in (
        failed.error_message or ""
    )
    assert world.calls.counts()["sagemaker:CreateCompilationJob"] == 0


def test_group_without_an_approved_package_reports_the_error_and_waits(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """Only a pending package: no rollout, NoTrainedModelError naming the group."""
    role = aw.seed_sagemaker(world, versions=0)
    world.sagemaker.add_model_package(aw.GROUP)
    aw.add_device(world, "dev-1")
    reconciler = aw.reconciler(world, "dev-1", tmp_path, **aw.sagemaker_settings(role))
    reconciler.step()
    assert reconciler.ledger.active_rollout() is None
    error = reconciler.ledger.facts().last_error
    assert error is not None and error.type == "NoTrainedModelError"
    assert aw.GROUP in error.message and "Approved" in error.message


def test_restart_at_every_step_boundary_resumes_without_duplicates(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """A new agent process (new reconciler, same ledger) after every step: one Neo job,
    one component, one deployment, v1 running."""
    role = aw.seed_sagemaker(world)
    aw.add_device(world, "dev-1")
    cfg = aw.config("dev-1", tmp_path / "dev-1", **aw.sagemaker_settings(role))
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
    assert len(world.sagemaker.jobs()) == 1
    made = [
        c for c in world.calls.calls if c.operation == "CreateComponentVersion" and c.status < 300
    ]
    assert len(made) == 1
    deployed = [c for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300]
    assert len(deployed) == 1


def test_throttling_and_5xx_bursts_change_nothing(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """Bursts of throttling on SageMaker and 500s on Greengrass delay the rollout but it
    still ends with one job, one component and one deployment of v1."""
    reconciler, device = start(world, clock, tmp_path)
    world.faults.inject("sagemaker", "*", "throttle", times=8)
    world.faults.inject("greengrass", "*", "5xx", times=8)
    assert drive(reconciler, clock) == "SUCCEEDED"
    assert len(world.sagemaker.jobs()) == 1
    assert components(device)[COMPONENT][0] == "1.0.0"
    deployed = [c for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300]
    assert len(deployed) == 1


def test_concurrent_job_quota_delays_the_job_until_a_slot_frees(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """With Neo's concurrent-jobs quota used up by another job, CreateCompilationJob is
    ResourceLimitExceeded: a transient error, retried with back-off until the other job
    ends; then the rollout completes with one job of ours."""
    reconciler, device = start(world, clock, tmp_path)
    world.sagemaker.max_active_jobs = 1
    role = world.sagemaker.create_execution_role("Other")
    world.client("sagemaker").create_compilation_job(
        CompilationJobName="someone-elses-job",
        RoleArn=role,
        ModelPackageVersionArn=world.sagemaker.package_arn(aw.GROUP, 1),
        OutputConfig={
            "S3OutputLocation": f"s3://{aw.NEO_BUCKET}/other",
            "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"},
        },
        StoppingCondition={"MaxRuntimeInSeconds": 900},
    )
    assert drive(reconciler, clock) == "SUCCEEDED"
    limited = [
        c for c in world.calls.calls if c.operation == "CreateCompilationJob" and c.status == 400
    ]
    assert limited, "the quota was never hit"
    other, ours = world.sagemaker.jobs()
    assert (other.name, ours.name) == ("someone-elses-job", "widgets-x86-64-cpu-v1-1")
    assert other.ended is not None and ours.created >= other.ended
    assert components(device)[COMPONENT][0] == "1.0.0"


def test_stopped_compilation_ends_the_rollout_as_failed(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """A compilation job stopped by someone (StopCompilationJob) ends STOPPED: the rollout
    fails with PACKAGING_FAILED naming STOPPED; no component is made."""
    reconciler, _ = start(world, clock, tmp_path)
    while world.calls.counts()["sagemaker:CreateCompilationJob"] == 0:
        clock.advance(max(reconciler.step(), 0.1))
    world.client("sagemaker").stop_compilation_job(CompilationJobName="widgets-x86-64-cpu-v1-1")
    assert drive(reconciler, clock) == "FAILED"
    failed = reconciler.ledger.rollouts(limit=1)[0]
    assert failed.error_type == "PackagingFailedError"
    assert "widgets-x86-64-cpu-v1-1 STOPPED" in (failed.error_message or "")
    assert world.calls.counts()["greengrass:CreateComponentVersion"] == 0


def _writes(world: World) -> list[str]:
    """Calls that would change the cloud (every operation but reads)."""
    reads = ("List", "Describe", "Get")
    return [
        f"{c.service}:{c.operation}" for c in world.calls.calls
        if not c.operation.startswith(reads)
    ]


def test_plan_shows_the_real_model_package_arn_it_would_compile(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """`plan` on a fresh device with the SageMaker backend and two Approved versions: the
    CreateCompilationJob it would send names v2's real ModelPackageVersionArn (learned
    with DescribeModelPackage), not a group/version placeholder, with the Neo job name,
    role, OutputConfig and StoppingCondition run would send; nothing is written to the
    cloud (no compilation job, no component, no deployment)."""
    from agent.plan import plan_of

    reconciler, _ = start(world, clock, tmp_path, versions=2)
    world.calls.clear()

    out = plan_of(reconciler, clock.now())

    assert "error" not in out, out
    assert out["action"] == "package, then deploy"
    assert out["desiredVersion"] == 2
    request = out["packagingRequest"]
    assert request["ModelPackageVersionArn"] == world.sagemaker.package_arn(aw.GROUP, 2)
    assert request["CompilationJobName"] == "widgets-x86-64-cpu-v2-1"
    assert request["OutputConfig"]["S3OutputLocation"].startswith(f"s3://{aw.NEO_BUCKET}/compiled")
    assert set(request) == {
        "CompilationJobName", "RoleArn", "OutputConfig", "StoppingCondition",
        "ModelPackageVersionArn",
    }
    assert world.calls.counts()["sagemaker:DescribeModelPackage"] == 1
    assert _writes(world) == []
    assert world.sagemaker.jobs() == []
    assert refused(world) == []


def test_plan_reports_a_package_neo_cannot_compile(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """`plan` for a package without an input shape: the reading call tells what run
    would hit (InvalidRequestError naming ModelInput.DataInputConfig), so the plan shows
    that error with the placeholder request and sends nothing to Neo."""
    from agent.plan import plan_of

    role = aw.seed_sagemaker(world, versions=0)
    world.sagemaker.add_model_package(aw.GROUP, approval="Approved", data_input_config=None)
    aw.add_device(world, "dev-1")
    reconciler = aw.reconciler(world, "dev-1", tmp_path, **aw.sagemaker_settings(role))
    world.calls.clear()

    out = plan_of(reconciler, clock.now())

    assert out["error"]["type"] == "InvalidRequestError"
    assert "ModelInput.DataInputConfig" in out["error"]["message"]
    assert out["packagingRequest"]["ModelPackageVersionArn"] == f"<{aw.GROUP}/1>"
    assert out["actions"][-1]["answer"]["type"] == "InvalidRequestError"
    assert _writes(world) == []
