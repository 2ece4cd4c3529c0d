"""The token exchange role policy against what the agent really does in the local world.

The agent's clients sign with their own access key, so the world's call log tells
exactly which actions the agent used. A small evaluator of the policy (Allow statements
with wildcard ARNs, the subset of IAM the policy files use) then checks both ways:
everything used is allowed on the resource AWS authorizes it against, and nothing is
granted that the agent does not use, except the documented actions that CreateDeployment
is authorized against.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.integration.test_rollout import drive
from tests.support import agentworld as aw

ROOT = Path(__file__).resolve().parents[2]
TES_POLICY = ROOT / "iam" / "token-exchange-role-policy.json"
#: The documented variant for a thing-group deploymentTargetArn.
TES_GROUP_POLICY = ROOT / "iam" / "token-exchange-role-policy-thing-group.json"
GROUP = "line-1"
#: Target kind -> the policy file for it.
TARGET_POLICIES = {"thing": TES_POLICY, "thinggroup": TES_GROUP_POLICY}
PACKAGING_POLICY = ROOT / "iam" / "packaging-caller-policy.json"
IAM_README = ROOT / "iam" / "README.md"
AGENT_KEY = "AKIDAGENTUNDERTEST"
DEVICES = ("dev-1", "dev-2")

#: What AWS authorizes a CreateDeployment against besides greengrass:CreateDeployment
#: (the IoT job that carries the deployment, and tags on the new deployment).
CREATE_DEPLOYMENT_NEEDS = frozenset(
    {
        "iot:CancelJob",
        "iot:CreateJob",
        "iot:DeleteThingShadow",
        "iot:DescribeJob",
        "iot:DescribeThing",
        "iot:DescribeThingGroup",
        "iot:GetThingShadow",
        "iot:UpdateJob",
        "iot:UpdateThingShadow",
        "greengrass:TagResource",
    }
)
#: Actions without a resource type in the Service Authorization Reference: IAM matches
#: them only against "Resource": "*".
NO_RESOURCE_TYPE = frozenset(
    {
        "lookoutvision:ListModels",
        "lookoutvision:DescribeModelPackagingJob",
        "greengrass:ListDeployments",
        "greengrass:CreateDeployment",
    }
)
#: What StartModelPackagingJob documents it needs from its caller.
PACKAGING_NEEDS = frozenset(
    {
        "s3:PutObject",
        "s3:GetBucketLocation",
        "kms:GenerateDataKey",
        "greengrass:CreateComponentVersion",
        "greengrass:DescribeComponent",
        "greengrass:TagResource",
    }
)
AGENT_SERVICES = ("lookoutvision", "greengrass", "iot")


# -- a minimal evaluator -------------------------------------------------------------------
@dataclass(frozen=True)
class Statement:
    sid: str
    actions: frozenset[str]
    resources: tuple[str, ...]


@cache
def _arn_pattern(glob: str) -> re.Pattern[str]:
    """IAM resource matching: ``*`` any run of characters, ``?`` one, case-sensitive."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    )


class Policy:
    def __init__(self, statements: Iterable[Statement]) -> None:
        self.statements = tuple(statements)

    @classmethod
    def load(cls, path: Path, values: dict[str, str]) -> Policy:
        text = path.read_text()
        for name, value in values.items():
            text = text.replace("${" + name + "}", value)
        assert "${" not in text, f"{path.name}: a placeholder was left unsubstituted"
        document = json.loads(text)
        statements = []
        for item in document["Statement"]:
            actions = item["Action"] if isinstance(item["Action"], list) else [item["Action"]]
            resources = (
                item["Resource"] if isinstance(item["Resource"], list) else [item["Resource"]]
            )
            statements.append(Statement(item["Sid"], frozenset(actions), tuple(resources)))
        return cls(statements)

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(a for s in self.statements for a in s.actions)

    def allows(self, action: str, resource: str) -> bool:
        """Whether an Allow statement names the action (case-insensitive, as IAM) and a
        Resource pattern matching ``resource`` ("*" for actions without a resource type)."""
        for statement in self.statements:
            if action.lower() not in {a.lower() for a in statement.actions}:
                continue
            if any(_arn_pattern(r).fullmatch(resource) for r in statement.resources):
                return True
        return False


def _placeholders(world: World, thing: str) -> dict[str, str]:
    return {
        "Region": world.region,
        "Account": world.account_id,
        "ProjectName": aw.PROJECT,
        "ThingName": thing,
        "ThingGroupName": GROUP,
    }


# -- the agent's real behaviour ------------------------------------------------------------
@dataclass(frozen=True)
class Observed:
    """What the agent did: IAM actions it called, and the resources each one touched."""

    used: frozenset[str]
    resources: dict[str, set[str]]
    target: str = "thing"


def _rollout(
    world: World, clock: VirtualClock, tmp_path: Path, target: str = "thing"
) -> Observed:
    """Two devices of one platform: dev-1 packages v1 and deploys it, dev-2 finds the
    component already there and only deploys (``thinggroup``: adopts the group's
    deployment). Then v2 is trained and dev-1 rolls forward, so the agent also replaces
    its own previous deployment."""
    aw.seed(world)
    for thing in DEVICES:
        aw.add_device(world, thing, groups=(GROUP,))
    overrides = {}
    if target == "thinggroup":
        group_arn = world.arn("iot", f"thinggroup/{GROUP}")
        overrides["deploymentTargetArn"] = group_arn
        # The group already deploys the agent, with tags the agent carries over.
        world.client("greengrassv2").create_deployment(
            targetArn=group_arn, deploymentName=f"agent-{GROUP}",
            components={aw.AGENT_COMPONENT: {"componentVersion": "0.1.0"}},
            tags={"owner": "fleet-team"},
        )
    keys = (AGENT_KEY, "agent-secret")
    first, second = (
        aw.reconciler(world, thing, tmp_path, credentials=keys, **overrides) for thing in DEVICES
    )
    assert drive(first, clock) == "SUCCEEDED"
    assert drive(second, clock) == "SUCCEEDED"
    world.lookoutvision.add_model(aw.PROJECT, "TRAINED")
    assert drive(first, clock) == "SUCCEEDED"

    calls = [c for c in world.calls.calls if c.access_key == AGENT_KEY]
    assert {c.service for c in calls} <= set(AGENT_SERVICES), "the agent called another service"
    used = frozenset(f"{c.service}:{c.operation}" for c in calls)
    assert "greengrass:CreateDeployment" in used
    return Observed(used, _touched_resources(world, target), target)


def _touched_resources(world: World, target: str = "thing") -> dict[str, set[str]]:
    """The ARN each action is authorized against (per the Service Authorization
    Reference), for every resource the rollouts involved."""
    gg = world.client("greengrassv2")
    arn = world.arn
    out: dict[str, set[str]] = {action: {"*"} for action in NO_RESOURCE_TYPE}
    jobs = world.lookoutvision.jobs(aw.PROJECT)
    out["lookoutvision:StartModelPackagingJob"] = {
        arn("lookoutvision", f"model/{j.project}/{j.model_version}") for j in jobs
    }
    out["greengrass:DescribeComponent"] = {
        arn("greengrass", f"components:{j.component_name}:versions:{j.component_version}")
        for j in jobs
    }
    out["greengrass:ListEffectiveDeployments"] = {
        arn("greengrass", f"coreDevices:{t}") for t in DEVICES
    }
    out["greengrass:ListInstalledComponents"] = out["greengrass:ListEffectiveDeployments"]
    things = {arn("iot", f"thing/{t}") for t in DEVICES}
    out["iot:DescribeThing"] = set(things)

    targets = things if target == "thing" else {arn("iot", f"thinggroup/{GROUP}")}
    if target == "thinggroup":
        out["iot:DescribeThingGroup"] = set(targets)
    deployments = []
    for target_arn in targets:
        for item in gg.list_deployments(targetArn=target_arn, historyFilter="ALL")["deployments"]:
            deployments.append(gg.get_deployment(deploymentId=item["deploymentId"]))
    out["greengrass:GetDeployment"] = {
        arn("greengrass", f"deployments:{d['deploymentId']}") for d in deployments
    }
    created = [
        d for d in deployments if any(n.startswith(f"{aw.PROJECT}.") for n in d["components"])
    ]
    # A thing target gets three (v1 on each device, v2 on dev-1); a group two (v1, v2).
    assert len(created) == (3 if target == "thing" else 2)
    for deployment in created:
        job, target_arn = deployment["iotJobArn"], deployment["targetArn"]
        out.setdefault("iot:CreateJob", set()).update({job, target_arn})
        for action in ("iot:DescribeJob", "iot:UpdateJob", "iot:CancelJob"):
            out.setdefault(action, set()).add(job)
        # Shadows belong to the devices that receive the deployment.
        receivers = {target_arn} if target == "thing" else things
        for action in ("iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"):
            out.setdefault(action, set()).update(receivers)
        if deployment.get("tags"):
            out.setdefault("greengrass:TagResource", set()).add(
                arn("greengrass", f"deployments:{deployment['deploymentId']}")
            )
    assert "greengrass:TagResource" in out, "the carried-over tags exercise TagResource"
    return out


@pytest.fixture(params=sorted(TARGET_POLICIES))
def observed(
    world: World, clock: VirtualClock, tmp_path: Path, request: pytest.FixtureRequest
) -> Observed:
    """The rollouts with the device's own thing as target, and with a thing group."""
    return _rollout(world, clock, tmp_path, request.param)


# -- tests -----------------------------------------------------------------------------------
def test_every_action_the_agent_uses_is_allowed_on_its_resource(
    world: World, observed: Observed
) -> None:
    """Rollouts on two devices (package, reuse, roll forward): every action signed with
    the agent's key, and every action CreateDeployment is authorized against, is allowed
    by the policy on the exact ARN AWS checks (with ${ThingName} as a fleet pattern).
    For a thing-group target the documented variant of the policy is used."""
    policy = Policy.load(TARGET_POLICIES[observed.target], _placeholders(world, "dev-*"))
    checked = observed.used | CREATE_DEPLOYMENT_NEEDS
    if observed.target == "thing":
        checked -= {"iot:DescribeThingGroup"}
    denied = []
    for action in sorted(checked):
        resources = observed.resources.get(action)
        assert resources, (
            f"no resource rule for {action}: add it from the Service Authorization Reference"
        )
        denied += [f"{action} on {r}" for r in sorted(resources) if not policy.allows(action, r)]
    assert denied == []


def test_the_policy_grants_nothing_the_agent_does_not_use(world: World, observed: Observed) -> None:
    """Every Lookout for Vision, Greengrass and IoT action in the policy was either used by
    the agent in the rollouts or is one CreateDeployment is documented to need; granting
    anything else fails this test."""
    policy = Policy.load(TARGET_POLICIES[observed.target], _placeholders(world, "dev-*"))
    granted = {a for a in policy.actions if a.split(":")[0] in AGENT_SERVICES}
    assert granted == policy.actions, "the policy grants actions of other services"
    assert sorted(granted - observed.used - CREATE_DEPLOYMENT_NEEDS) == []
    assert sorted(observed.used - granted) == []


def test_the_policy_is_scoped_to_the_project_and_the_thing(world: World) -> None:
    """With one device's values filled in, the policy does not reach another project's
    models or components, another core device or thing, or the agent's own component."""
    policy = Policy.load(TES_POLICY, _placeholders(world, "dev-1"))
    arn = world.arn
    assert policy.allows(
        "lookoutvision:StartModelPackagingJob", arn("lookoutvision", "model/widgets/3")
    )
    assert policy.allows(
        "greengrass:ListInstalledComponents", arn("greengrass", "coreDevices:dev-1")
    )
    outside = [
        ("lookoutvision:StartModelPackagingJob", arn("lookoutvision", "model/gadgets/1")),
        ("lookoutvision:StartModelPackagingJob", arn("lookoutvision", "model/widgets2/1")),
        (
            "greengrass:DescribeComponent",
            arn("greengrass", "components:gadgets.x86-64-cpu:versions:1.0.0"),
        ),
        (
            "greengrass:DescribeComponent",
            arn("greengrass", "components:l4v.edge.Agent:versions:0.1.0"),
        ),
        ("greengrass:ListInstalledComponents", arn("greengrass", "coreDevices:dev-2")),
        ("greengrass:ListEffectiveDeployments", arn("greengrass", "coreDevices:dev-10")),
        ("iot:DescribeThing", arn("iot", "thing/dev-2")),
        ("iot:UpdateThingShadow", arn("iot", "thing/dev-2")),
        ("iot:CreateJob", arn("iot", "thing/dev-2")),
        ("greengrass:GetDeployment", "arn:aws:greengrass:eu-west-1:123456789012:deployments:x"),
    ]
    assert [item for item in outside if policy.allows(*item)] == []


def test_the_thing_group_variant_reaches_only_its_group(world: World) -> None:
    """The thing-group variant lets the IoT job of a deployment target the configured
    group and no other group, and no longer targets single things."""
    policy = Policy.load(TES_GROUP_POLICY, _placeholders(world, "dev-1"))
    arn = world.arn
    assert policy.allows("iot:CreateJob", arn("iot", f"thinggroup/{GROUP}"))
    assert policy.allows("iot:DescribeThingGroup", arn("iot", f"thinggroup/{GROUP}"))
    outside = [
        ("iot:CreateJob", arn("iot", "thinggroup/line-2")),
        ("iot:CreateJob", arn("iot", "thing/dev-1")),
        ("iot:DescribeThingGroup", arn("iot", "thinggroup/line-10")),
        ("lookoutvision:StartModelPackagingJob", arn("lookoutvision", "model/gadgets/1")),
    ]
    assert [item for item in outside if policy.allows(*item)] == []


@pytest.mark.parametrize("path", [TES_POLICY, TES_GROUP_POLICY, PACKAGING_POLICY], ids=lambda p: p.name)
def test_policy_files_are_plain_least_privilege_documents(path: Path) -> None:
    """Each file is a 2012-10-17 policy of named Allow statements with explicit actions
    (no "*" or "service:*" wildcards) and only the documented placeholders; "*" as a
    resource appears only for actions that have no resource type, and the README says why."""
    document = json.loads(path.read_text())
    assert document["Version"] == "2012-10-17"
    assert set(document) == {"Version", "Statement"}
    readme = IAM_README.read_text()
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        actions = statement["Action"]
        assert isinstance(actions, list) and actions
        assert all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", a) for a in actions), actions
        resources = statement["Resource"]
        if resources == "*":
            assert set(actions) <= NO_RESOURCE_TYPE, statement["Sid"]
            assert all(f"`{a}`" in readme for a in actions)
        else:
            assert all(r.startswith("arn:aws:") for r in resources), statement["Sid"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", path.read_text()))
    assert placeholders <= {
        "Region", "Account", "ProjectName", "ThingName", "ThingGroupName", "Bucket", "KmsKeyId"
    }
    assert all(f"`${{{p}}}`" in readme for p in placeholders)


def test_create_deployment_needs_are_documented() -> None:
    """The actions granted for CreateDeployment rather than used by the agent are each
    named in iam/README.md, where the test's list comes from."""
    readme = IAM_README.read_text()
    section = readme.split("## Granted for CreateDeployment", 1)[1].split("\n## ", 1)[0]
    assert {a for a in CREATE_DEPLOYMENT_NEEDS if f"`{a}`" not in section} == set()


def test_packaging_caller_policy_is_what_start_model_packaging_job_documents(world: World) -> None:
    """The packaging policy grants exactly the documented needs of a packaging job, on
    the output bucket's project prefix and the project's components only."""
    values = {**_placeholders(world, "dev-1"), "Bucket": aw.BUCKET, "KmsKeyId": "k-1"}
    policy = Policy.load(PACKAGING_POLICY, values)
    assert policy.actions == PACKAGING_NEEDS
    arn = world.arn
    assert policy.allows(
        "s3:PutObject", f"arn:aws:s3:::{aw.BUCKET}/l4v-edge-agent/widgets/x86-64-cpu/model.zip"
    )
    assert not policy.allows(
        "s3:PutObject", f"arn:aws:s3:::{aw.BUCKET}/l4v-edge-agent/gadgets/a.zip"
    )
    assert not policy.allows(
        "s3:PutObject", "arn:aws:s3:::other-bucket/l4v-edge-agent/widgets/a.zip"
    )
    assert policy.allows(
        "greengrass:CreateComponentVersion", arn("greengrass", "components:widgets.x86-64-cpu")
    )
    assert not policy.allows(
        "greengrass:CreateComponentVersion", arn("greengrass", "components:l4v.edge.Agent")
    )
    assert policy.allows("kms:GenerateDataKey", arn("kms", "key/k-1"))
