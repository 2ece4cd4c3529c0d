"""The IAM documents of the SageMaker backend, checked as documents.

The both-ways test against real rollouts is
``tests/integration/test_iam_policy_sagemaker.py``. Here: shape, placeholders, that every action names a real operation of botocore's
models, and the scoping of each grant, with the same small policy evaluator.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import botocore.session
import pytest

from localcloud.transport import world_client
from localcloud.world import World
from tests.integration.test_iam_policy import Policy

ROOT = Path(__file__).resolve().parents[2]
IAM = ROOT / "iam"
AGENT_POLICY = IAM / "sagemaker-token-exchange-role-policy.json"
NEO_POLICY = IAM / "neo-execution-role-policy.json"
NEO_TRUST = IAM / "neo-execution-role-trust-policy.json"
README = (IAM / "README.md").read_text()
PLACEHOLDERS = {
    "Region": "eu-west-1",
    "Account": "123456789012",
    "ThingName": "line1-*",
    "ModelPackageGroup": "casting-defects",
    "JobNamePrefix": "casting-defects-",
    "NeoRoleName": "NeoCompiler",
    "Bucket": "models-out",
    "OutputPrefix": "l4v-edge-agent/casting-defects/",
    "ComponentNamePrefix": "casting-defects.",
    "ModelBucket": "registry-data",
    "ModelPrefix": "casting-defects/",
}
#: The SageMaker and Greengrass operations the backend calls (issue 12, item 6).
BACKEND_CALLS = {
    "sagemaker:ListModelPackages",
    "sagemaker:DescribeModelPackage",
    "sagemaker:CreateCompilationJob",
    "sagemaker:DescribeCompilationJob",
    "greengrass:CreateComponentVersion",
    "greengrass:DescribeComponent",
    "greengrass:ListDeployments",
    "greengrass:GetDeployment",
    "greengrass:CreateDeployment",
    "greengrass:ListEffectiveDeployments",
    "greengrass:ListInstalledComponents",
}
#: IAM prefix -> botocore models whose operations it covers (shadows are in iot-data).
BOTOCORE_SERVICES = {
    "sagemaker": ("sagemaker",),
    "greengrass": ("greengrassv2",),
    "iot": ("iot", "iot-data"),
}
A = "arn:aws:sagemaker:eu-west-1:123456789012"
G = "arn:aws:greengrass:eu-west-1:123456789012"


def load(path: Path) -> Policy:
    return Policy.load(path, PLACEHOLDERS)


@pytest.mark.parametrize("path", [AGENT_POLICY, NEO_POLICY, NEO_TRUST], ids=lambda p: p.name)
def test_documents_are_plain_allow_policies_with_documented_placeholders(path: Path) -> None:
    """Each file is a 2012-10-17 document of uniquely named Allow statements with
    explicit actions (no wildcards), and every placeholder it uses is explained in
    iam/README.md."""
    document = json.loads(path.read_text())
    assert set(document) == {"Version", "Statement"} and document["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        assert all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", a) for a in statement["Action"])
    for name in set(re.findall(r"\$\{(\w+)\}", path.read_text())):
        assert f"`${{{name}}}`" in README, name
        assert name in PLACEHOLDERS


def test_every_backend_call_is_granted_and_every_action_is_a_real_operation() -> None:
    """The agent policy grants each call the backend makes; every sagemaker/greengrass/
    iot action it names is an operation of botocore's current model; no Lookout for
    Vision action is left."""
    policy = load(AGENT_POLICY)
    assert policy.actions >= BACKEND_CALLS
    session = botocore.session.get_session()
    for action in policy.actions:
        prefix, name = action.split(":")
        if prefix in BOTOCORE_SERVICES:
            operations = {
                op
                for service in BOTOCORE_SERVICES[prefix]
                for op in session.get_service_model(service).operation_names
            }
            assert name in operations, action
    assert not any(a.startswith("lookoutvision:") for a in policy.actions)


def test_agent_policy_is_scoped() -> None:
    """Registry reads reach only the group's versions, Neo jobs only the name prefix,
    PassRole only the Neo role and only to SageMaker, components only the prefix."""
    policy = load(AGENT_POLICY)
    assert policy.allows("sagemaker:DescribeModelPackage", f"{A}:model-package/casting-defects/7")
    assert not policy.allows("sagemaker:DescribeModelPackage", f"{A}:model-package/other/7")
    assert policy.allows(
        "sagemaker:CreateCompilationJob", f"{A}:compilation-job/casting-defects-v7-rasp4b-1"
    )
    assert not policy.allows("sagemaker:CreateCompilationJob", f"{A}:compilation-job/other-job")
    assert policy.allows("iam:PassRole", "arn:aws:iam::123456789012:role/NeoCompiler")
    assert not policy.allows("iam:PassRole", "arn:aws:iam::123456789012:role/Admin")
    [pass_role] = [
        s
        for s in json.loads(AGENT_POLICY.read_text())["Statement"]
        if "iam:PassRole" in s["Action"]
    ]
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    assert policy.allows(
        "greengrass:CreateComponentVersion", f"{G}:components:casting-defects.rasp4b"
    )
    assert not policy.allows("greengrass:CreateComponentVersion", f"{G}:components:l4v.edge.Agent")
    assert policy.allows(
        "s3:GetObject", "arn:aws:s3:::models-out/l4v-edge-agent/casting-defects/rasp4b/m.tar.gz"
    )
    assert not policy.allows("s3:GetObject", "arn:aws:s3:::models-out/other/m.tar.gz")


def test_neo_role_reads_model_data_and_writes_the_output_prefix_only() -> None:
    """The Neo execution role reads the registry's model data prefix, writes the output
    prefix and its job logs, and nothing else; its trust policy names SageMaker only."""
    policy = load(NEO_POLICY)
    assert policy.actions == {
        "s3:GetObject",
        "s3:PutObject",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert policy.allows(
        "s3:GetObject", "arn:aws:s3:::registry-data/casting-defects/3/model.tar.gz"
    )
    assert not policy.allows("s3:GetObject", "arn:aws:s3:::registry-data/other/model.tar.gz")
    assert policy.allows(
        "s3:PutObject", "arn:aws:s3:::models-out/l4v-edge-agent/casting-defects/x.tar.gz"
    )
    assert not policy.allows("s3:PutObject", "arn:aws:s3:::registry-data/casting-defects/x")
    trust = json.loads(NEO_TRUST.read_text())
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "sagemaker.amazonaws.com"}]


def test_the_documented_neo_role_compiles_in_the_local_world(world: World) -> None:
    """A role made in the local world from iam/neo-execution-role-trust-policy.json with
    iam/neo-execution-role-policy.json inline (placeholders filled for this world) is
    accepted by CreateCompilationJob, sent by a real botocore client, and is enough for
    Neo to read the model data and write the compiled model; with an output location
    outside ``${OutputPrefix}`` the same role makes the job fail with access denied."""
    sm = world.sagemaker
    sm.create_model_package_group("casting-defects")
    sm.add_model_package("casting-defects", approval="Approved")
    world.client("s3").create_bucket(Bucket="models-out")
    text = NEO_POLICY.read_text()
    values = {**PLACEHOLDERS, "ModelBucket": sm.models_bucket, "OutputPrefix": "neo/"}
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    role = sm.create_execution_role(
        "NeoCompiler", trust_policy=json.loads(NEO_TRUST.read_text()), policy=json.loads(text)
    )
    client = world_client(world, "sagemaker")
    for name, location in (
        ("inside", "s3://models-out/neo/rasp4b"),
        ("outside", "s3://models-out/other"),
    ):
        client.create_compilation_job(
            CompilationJobName=f"casting-defects-v1-{name}",
            RoleArn=role,
            ModelPackageVersionArn=sm.package_arn("casting-defects", 1),
            OutputConfig={"S3OutputLocation": location, "TargetDevice": "rasp4b"},
            StoppingCondition={"MaxRuntimeInSeconds": 900},
        )
    world.clock.advance(sm.compile_seconds)  # type: ignore[attr-defined]
    outcome = {
        job["CompilationJobName"]: job["CompilationJobStatus"]
        for job in client.list_compilation_jobs()["CompilationJobSummaries"]
    }
    assert outcome == {
        "casting-defects-v1-inside": "COMPLETED",
        "casting-defects-v1-outside": "FAILED",
    }
    failed = client.describe_compilation_job(CompilationJobName="casting-defects-v1-outside")
    assert "not allowed s3:PutObject on arn:aws:s3:::models-out/other/" in failed["FailureReason"]
