"""The SageMaker backend's token exchange role policy against what the agent really does.

As ``test_iam_policy.py`` does for Lookout for Vision: the agent's clients sign with
their own key, so the call log tells which actions it used; the policy evaluator then
checks both ways. Besides the calls, the role must allow what AWS authorizes
implicitly: passing the Neo role with CreateCompilationJob, tagging the component it
creates, the nucleus downloading the component's artifact with the same role, and
what CreateDeployment needs.
"""

from __future__ import annotations

from pathlib import Path

from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.integration.test_iam_policy import (
    AGENT_KEY,
    CREATE_DEPLOYMENT_NEEDS,
    DEVICES,
    Policy,
    _touched_resources,
)
from tests.integration.test_rollout import drive
from tests.support import agentworld as aw

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "iam" / "sagemaker-token-exchange-role-policy.json"
NEO_ROLE = "SageMakerNeoExecutionRole"
#: Authorized with the calls, not called: CreateCompilationJob passes the Neo role;
#: CreateComponentVersion with tags tags the component; the nucleus downloads the
#: component's artifact with the device's role.
IMPLIED = frozenset({"iam:PassRole", "greengrass:TagResource", "s3:GetObject"})
AGENT_SERVICES = ("sagemaker", "greengrass", "iot")


def _placeholders(world: World) -> dict[str, str]:
    return {
        "Region": world.region,
        "Account": world.account_id,
        "ThingName": "dev-*",
        "ModelPackageGroup": aw.GROUP,
        "JobNamePrefix": f"{aw.GROUP}-",
        "NeoRoleName": NEO_ROLE,
        "Bucket": aw.NEO_BUCKET,
        "OutputPrefix": "compiled/",
        "ComponentNamePrefix": f"{aw.GROUP}.",
    }


def _rollout(world: World, clock: VirtualClock, tmp_path: Path) -> tuple[frozenset[str], dict[str, set[str]]]:
    """dev-1 compiles and deploys v1 (with componentTags), dev-2 finds the component and
    deploys it, then v2 is approved and dev-1 rolls forward."""
    role = aw.seed_sagemaker(world)
    for thing in DEVICES:
        aw.add_device(world, thing)
    keys = (AGENT_KEY, "agent-secret")
    settings = aw.sagemaker_settings(role)
    first, second = (
        aw.reconciler(world, t, tmp_path, credentials=keys, componentTags={"team": "vision"}, **settings)
        for t in DEVICES
    )
    assert drive(first, clock) == "SUCCEEDED"
    assert drive(second, clock) == "SUCCEEDED"
    world.sagemaker.add_model_package(aw.GROUP, approval="Approved")
    clock.advance(3600)
    assert drive(first, clock) == "SUCCEEDED"

    calls = [c for c in world.calls.calls if c.access_key == AGENT_KEY]
    assert {c.service for c in calls} <= set(AGENT_SERVICES), "the agent called another service"
    used = frozenset(f"{c.service}:{c.operation}" for c in calls)
    assert {"sagemaker:CreateCompilationJob", "greengrass:CreateComponentVersion"} <= used
    return used, _resources(world, role)


def _resources(world: World, role: str) -> dict[str, set[str]]:
    """The ARN each action is authorized against, for every resource the rollouts used."""
    arn = world.arn
    out = _touched_resources(world, "thing")
    sm = world.client("sagemaker")
    jobs = [sm.describe_compilation_job(CompilationJobName=j.name) for j in world.sagemaker.jobs()]
    assert len(jobs) == 2
    out["sagemaker:ListModelPackages"] = {"*"}
    out["sagemaker:DescribeModelPackage"] = {j["ModelPackageVersionArn"] for j in jobs}
    out["sagemaker:CreateCompilationJob"] = {j["CompilationJobArn"] for j in jobs}
    out["sagemaker:DescribeCompilationJob"] = out["sagemaker:CreateCompilationJob"]
    out["iam:PassRole"] = {role}
    assert role.endswith(f":role/{NEO_ROLE}")
    out["s3:GetObject"] = {
        "arn:aws:s3:::" + j["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://")
        for j in jobs
    }
    components = {
        arn("greengrass", f"components:{aw.GROUP}.x86-64-cpu:versions:{v}.0.0") for v in (1, 2)
    }
    out["greengrass:CreateComponentVersion"] = {arn("greengrass", f"components:{aw.GROUP}.x86-64-cpu")}
    out["greengrass:DescribeComponent"] = components
    out.setdefault("greengrass:TagResource", set()).update(components)
    return out


def test_the_sagemaker_policy_allows_everything_the_agent_uses_and_nothing_more(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """Rollouts on two devices with the SageMaker backend (compile, make the component,
    reuse it, roll forward): every action signed with the agent's key, and every action
    AWS authorizes with them, is allowed on the exact ARN it is checked against; and the
    policy grants no action that is neither used nor implied."""
    used, resources = _rollout(world, clock, tmp_path)
    policy = Policy.load(POLICY, _placeholders(world))
    checked = used | IMPLIED | (CREATE_DEPLOYMENT_NEEDS - {"iot:DescribeThingGroup"})
    denied = []
    for action in sorted(checked):
        found = resources.get(action)
        assert found, f"no resource rule for {action}"
        denied += [f"{action} on {r}" for r in sorted(found) if not policy.allows(action, r)]
    assert denied == []
    # The policy also serves thing-group targets (DescribeThingGroup), as the L4V one.
    unused = policy.actions - used - IMPLIED - CREATE_DEPLOYMENT_NEEDS
    assert sorted(unused) == []
    assert sorted(used - policy.actions) == []
