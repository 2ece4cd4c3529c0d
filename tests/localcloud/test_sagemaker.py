"""Conformance tests of the SageMaker emulator (Model Registry reads and Neo jobs).

Every call goes through a real current-botocore ``sagemaker`` client (the official
model that ships with botocore), answered in-process by the world, so serialization,
parsing and exception classes are botocore's own. Validation cases use a client with
``parameter_validation=False`` so bad values reach the emulator; bytes botocore cannot
produce (bad JSON, unknown targets) go as raw requests through ``World.dispatch``.
Time only moves with the virtual clock.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from typing import Any

import botocore.retries.standard
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localcloud.clock import VirtualClock
from localcloud.http import Headers, Request
from localcloud.sagemaker import SageMakerEmulator, service_model
from localcloud.transport import world_client
from localcloud.world import World

GROUP = "casting-defects"
BUCKET = "neo-output"
NVIDIA_XAVIER = {
    "Os": "LINUX",
    "Arch": "ARM64",
    "Accelerator": "NVIDIA",
}
XAVIER_OPTIONS = '{"cuda-ver":"10.2","gpu-code":"sm_72","trt-ver":"8.2.1"}'
AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDLOCALCLOUD/20260101/us-east-1/sagemaker/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=00"
)

#: One botocore session for every client here: it caches the large sagemaker model.
SESSION = botocore.session.get_session()


def client(world: World, **kwargs: Any) -> Any:
    """A real boto3 ``sagemaker`` client answered in-process by ``world``."""
    return world_client(world, "sagemaker", botocore_session=SESSION, **kwargs)


@pytest.fixture
def sm(world: World) -> SageMakerEmulator:
    """The emulator with one model package group, a Neo role and an output bucket."""
    world.sagemaker.create_model_package_group(GROUP)
    world.sagemaker.create_execution_role()
    world.client("s3").create_bucket(Bucket=BUCKET)
    return world.sagemaker


@pytest.fixture
def api(world: World, sm: SageMakerEmulator) -> Any:
    return client(world)


@pytest.fixture
def raw_api(world: World, sm: SageMakerEmulator) -> Any:
    """A client that skips botocore's parameter validation, to send what AWS must reject."""
    return client(world, config=Config(parameter_validation=False))


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """botocore retries without waiting (its backoff is real time)."""
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda *_: 0)
    yield


def role_arn(world: World) -> str:
    return f"arn:aws:iam::{world.account_id}:role/SageMakerNeoExecutionRole"


def job_kwargs(world: World, **changes: Any) -> dict[str, Any]:
    """A valid CreateCompilationJob request for version 1 of GROUP; ``a__b=`` edits nested
    members and the value MISSING removes one."""
    kwargs: dict[str, Any] = {
        "CompilationJobName": "defects-v1-xavier",
        "RoleArn": role_arn(world),
        "ModelPackageVersionArn": (
            f"arn:aws:sagemaker:{world.region}:{world.account_id}:model-package/{GROUP}/1"
        ),
        "OutputConfig": {
            "S3OutputLocation": f"s3://{BUCKET}/neo/defects",
            "TargetPlatform": dict(NVIDIA_XAVIER),
            "CompilerOptions": XAVIER_OPTIONS,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = kwargs
        for part in parents:
            node = node[part]
        if value is MISSING:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return kwargs


MISSING = object()


def error_of(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


def raw(world: World, target: str | None, body: bytes, method: str = "POST") -> Any:
    headers = Headers({"Authorization": AUTH, "Content-Type": "application/x-amz-json-1.1"})
    if target is not None:
        headers["X-Amz-Target"] = target
    return world.dispatch(Request(method, "/", {}, headers, body))


# -- model registry ------------------------------------------------------------------------------


def test_newest_approved_version_is_found_by_creation_time(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """Versions registered one hour apart; ListModelPackages for the group, Approved,
    sorted by CreationTime descending with MaxResults 1 returns the newest approved one,
    with the world clock's CreationTime and without ModelPackageName (versioned)."""
    created = []
    for approval in ("Approved", "Approved", "PendingManualApproval", "Rejected"):
        created.append(clock.now())
        sm.add_model_package(GROUP, approval=approval)
        clock.advance(3600)
    page = api.list_model_packages(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=1,
    )
    [summary] = page["ModelPackageSummaryList"]
    assert summary["ModelPackageVersion"] == 2
    assert summary["ModelPackageArn"] == sm.package_arn(GROUP, 2)
    assert summary["ModelPackageArn"].endswith(f":model-package/{GROUP}/2")
    assert summary["CreationTime"].timestamp() == created[1]
    assert summary["ModelApprovalStatus"] == "Approved"
    assert summary["ModelPackageStatus"] == "Completed"
    assert "ModelPackageName" not in summary
    assert "NextToken" in page
    sm.set_approval_status(GROUP, 3, "Approved")
    newest = api.list_model_packages(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
    )["ModelPackageSummaryList"]
    assert [s["ModelPackageVersion"] for s in newest] == [3, 2, 1]


def test_list_model_packages_pages_with_the_official_paginator(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """25 versions list in pages of 10 by default (ascending creation time); the
    paginator collects all; a forged token or one from another query is a
    ValidationException."""
    for _ in range(25):
        sm.add_model_package(GROUP, approval="Approved")
        clock.advance(1)
    first = api.list_model_packages(ModelPackageGroupName=GROUP)
    assert len(first["ModelPackageSummaryList"]) == 10
    versions = [
        s["ModelPackageVersion"]
        for page in api.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=GROUP, PaginationConfig={"PageSize": 7}
        )
        for s in page["ModelPackageSummaryList"]
    ]
    assert versions == list(range(1, 26))
    for token in ("forged", first["NextToken"]):
        with pytest.raises(ClientError) as caught:
            api.list_model_packages(
                ModelPackageGroupName=GROUP, SortOrder="Descending", NextToken=token
            )
        assert error_of(caught)[:2] == ("ValidationException", 400)


def test_list_model_packages_filters(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """The group may be named by ARN; other groups, CreationTimeAfter/Before (exclusive)
    and ModelPackageType apply; without a group only unversioned packages are listed by
    default (none here); an unknown group lists nothing."""
    other_arn = sm.create_model_package_group("other-group")
    sm.add_model_package(GROUP)
    clock.advance(10)
    middle = clock.now()
    sm.add_model_package("other-group")
    sm.add_model_package(GROUP)
    group_arn = f"arn:aws:sagemaker:{world.region}:{world.account_id}:model-package-group/{GROUP}"

    def versions(**kwargs: Any) -> list[tuple[str, int]]:
        listed = api.list_model_packages(**kwargs)["ModelPackageSummaryList"]
        return [(s["ModelPackageGroupName"], s["ModelPackageVersion"]) for s in listed]

    assert versions(ModelPackageGroupName=group_arn) == [(GROUP, 1), (GROUP, 2)]
    assert versions(ModelPackageGroupName=other_arn) == [("other-group", 1)]
    assert versions(ModelPackageGroupName=GROUP, CreationTimeAfter=middle - 1) == [(GROUP, 2)]
    assert versions(ModelPackageGroupName=GROUP, CreationTimeBefore=middle) == [(GROUP, 1)]
    assert versions() == []
    assert len(versions(ModelPackageType="Both")) == 3
    assert versions(ModelPackageGroupName="no-such-group") == []
    assert versions(ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved") == []


def test_describe_model_package_gives_what_neo_needs(
    world: World, sm: SageMakerEmulator, api: Any
) -> None:
    """DescribeModelPackage by ARN or ``group/version`` returns the inference specification
    (framework, version, input shape, model data); an unknown package, another region's
    ARN or an unversioned name is ValidationException."""
    sm.add_model_package(GROUP, approval="Approved", description="first model")
    arn = sm.package_arn(GROUP, 1)
    described = api.describe_model_package(ModelPackageName=arn)
    assert described == api.describe_model_package(ModelPackageName=f"{GROUP}/1") | {
        "ResponseMetadata": described["ResponseMetadata"]
    }
    assert described["ModelPackageName"] == GROUP
    assert described["ModelPackageVersion"] == 1
    assert described["ModelPackageDescription"] == "first model"
    [container] = described["InferenceSpecification"]["Containers"]
    assert container["Framework"] == "PYTORCH"
    assert container["FrameworkVersion"] == "2.0"
    assert json.loads(container["ModelInput"]["DataInputConfig"]) == {"input0": [1, 3, 224, 224]}
    model = world.client("s3").get_object(Bucket=sm.models_bucket, Key=f"{GROUP}/1/model.tar.gz")
    assert container["ModelDataUrl"] == f"s3://{sm.models_bucket}/{GROUP}/1/model.tar.gz"
    assert model["Body"].read().startswith(b"\x1f\x8b")  # gzip
    for name in (
        f"{GROUP}/2",
        arn.replace(world.region, "eu-west-1"),
        arn.replace(world.account_id, "210987654321"),
        GROUP,
    ):
        with pytest.raises(ClientError) as caught:
            api.describe_model_package(ModelPackageName=name)
        assert error_of(caught)[:2] == ("ValidationException", 400), name


def test_control_api_rejects_what_the_registry_would(sm: SageMakerEmulator) -> None:
    """Group names follow the model's EntityName rule and are unique (case-insensitive);
    versions are never reused after a delete; unknown groups and versions are KeyError."""
    with pytest.raises(ValueError, match="modelPackageGroupName"):
        sm.create_model_package_group("under_score")
    with pytest.raises(ValueError, match="already exists"):
        sm.create_model_package_group(GROUP.upper())
    with pytest.raises(ValueError, match="approval"):
        sm.add_model_package(GROUP, approval="approved")
    with pytest.raises(ValueError, match="frameworkVersion"):
        sm.add_model_package(GROUP, framework_version="two")
    assert sm.add_model_package(GROUP) == 1
    sm.delete_model_package(GROUP, 1)
    assert sm.add_model_package(GROUP) == 2
    with pytest.raises(KeyError):
        sm.add_model_package("no-such-group")
    with pytest.raises(KeyError):
        sm.set_approval_status(GROUP, 1, "Approved")


# -- CreateCompilationJob: the model's constraints -------------------------------------------------

SHAPE_CASES = [
    ("name-pattern", {"CompilationJobName": "-starts-with-dash"}, "compilationJobName"),
    ("name-underscore", {"CompilationJobName": "under_score"}, "compilationJobName"),
    ("name-too-long", {"CompilationJobName": "a" * 64}, "compilationJobName"),
    ("name-missing", {"CompilationJobName": MISSING}, "compilationJobName"),
    ("role-pattern", {"RoleArn": "arn:aws:iam::123456789012:user/someone"}, "roleArn"),
    ("role-short", {"RoleArn": "arn:aws:iam::1:role"}, "roleArn"),
    ("role-missing", {"RoleArn": MISSING}, "roleArn"),
    (
        "package-arn-pattern",
        {"ModelPackageVersionArn": "arn:aws:s3:::bucket"},
        "modelPackageVersionArn",
    ),
    ("output-missing", {"OutputConfig": MISSING}, "outputConfig"),
    (
        "output-location-missing",
        {"OutputConfig__S3OutputLocation": MISSING},
        "outputConfig.s3OutputLocation",
    ),
    (
        "output-location-pattern",
        {"OutputConfig__S3OutputLocation": "ftp://bucket/x"},
        "outputConfig.s3OutputLocation",
    ),
    ("device-enum", {"OutputConfig__TargetDevice": "jetson_orin"}, "outputConfig.targetDevice"),
    ("os-enum", {"OutputConfig__TargetPlatform__Os": "linux"}, "outputConfig.targetPlatform.os"),
    (
        "arch-missing",
        {"OutputConfig__TargetPlatform__Arch": MISSING},
        "outputConfig.targetPlatform.arch",
    ),
    (
        "accelerator-enum",
        {"OutputConfig__TargetPlatform__Accelerator": "CUDA"},
        "outputConfig.targetPlatform.accelerator",
    ),
    ("options-too-short", {"OutputConfig__CompilerOptions": "{}"}, "outputConfig.compilerOptions"),
    (
        "options-too-long",
        {"OutputConfig__CompilerOptions": "x" * 1025},
        "outputConfig.compilerOptions",
    ),
    ("kms-pattern", {"OutputConfig__KmsKeyId": "key id"}, "outputConfig.kmsKeyId"),
    ("stopping-missing", {"StoppingCondition": MISSING}, "stoppingCondition"),
    (
        "runtime-zero",
        {"StoppingCondition__MaxRuntimeInSeconds": 0},
        "stoppingCondition.maxRuntimeInSeconds",
    ),
    (
        "pending-too-short",
        {"StoppingCondition__MaxPendingTimeInSeconds": 60},
        "stoppingCondition.maxPendingTimeInSeconds",
    ),
    ("tags-too-many", {"Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]}, "tags"),
    ("tag-key-character", {"Tags": [{"Key": "a*b", "Value": "v"}]}, "tags.1.member.key"),
    ("tag-value-missing", {"Tags": [{"Key": "k"}]}, "tags.1.member.value"),
    (
        "framework-enum",
        {
            "ModelPackageVersionArn": MISSING,
            "InputConfig": {"S3Uri": "s3://b/m.tar.gz", "Framework": "pytorch"},
        },
        "inputConfig.framework",
    ),
    (
        "framework-version-pattern",
        {
            "ModelPackageVersionArn": MISSING,
            "InputConfig": {
                "S3Uri": "s3://b/m.tar.gz",
                "Framework": "PYTORCH",
                "FrameworkVersion": "v2",
            },
        },
        "inputConfig.frameworkVersion",
    ),
    (
        "vpc-subnets-empty",
        {"VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": []}},
        "vpcConfig.subnets",
    ),
]


@pytest.mark.parametrize(
    ("changes", "member"), [pytest.param(c, m, id=i) for i, c, m in SHAPE_CASES]
)
def test_create_job_checks_the_official_model(
    world: World, sm: SageMakerEmulator, raw_api: Any, changes: dict[str, Any], member: str
) -> None:
    """Each request breaking one constraint of the official model (pattern, length, enum,
    required member, range, list size) is a 400 ValidationException naming the member in
    AWS's format; nothing is created."""
    sm.add_model_package(GROUP, approval="Approved")
    with pytest.raises(ClientError) as caught:
        raw_api.create_compilation_job(**job_kwargs(world, **changes))
    code, status, message = error_of(caught)
    assert (code, status) == ("ValidationException", 400)
    assert f"at '{member}' failed to satisfy constraint: Member must" in message
    assert re.match(r"[12] validation errors? detected: Value ", message)
    assert sm.jobs() == []


def test_emulated_operations_and_errors_are_the_official_ones(world: World) -> None:
    """Every operation served exists in the official model, and the error codes Neo
    operations answer with are the ones the model declares."""
    model = service_model()
    declared = {
        name: {e.name for e in model.operation_model(name).error_shapes}
        for name in (
            "ListModelPackages",
            "DescribeModelPackage",
            "CreateCompilationJob",
            "DescribeCompilationJob",
            "StopCompilationJob",
            "ListCompilationJobs",
        )
    }
    assert declared["CreateCompilationJob"] == {"ResourceInUse", "ResourceLimitExceeded"}
    assert declared["DescribeCompilationJob"] == {"ResourceNotFound"}
    assert declared["StopCompilationJob"] == {"ResourceNotFound"}
    assert {r.operation for r in world.sagemaker.router.routes} == set(declared)


# -- CreateCompilationJob: Neo's own rules --------------------------------------------------------

NEO_RULE_CASES = [
    (
        "input-and-package",
        {"InputConfig": {"S3Uri": "s3://neo-output/m.tar.gz", "Framework": "ONNX"}},
        "Exactly one of InputConfig and ModelPackageVersionArn",
    ),
    (
        "neither-input-nor-package",
        {"ModelPackageVersionArn": MISSING},
        "Exactly one of InputConfig and ModelPackageVersionArn",
    ),
    (
        "device-and-platform",
        {"OutputConfig__TargetDevice": "jetson_xavier"},
        "Exactly one of OutputConfig.TargetDevice and OutputConfig.TargetPlatform",
    ),
    (
        "neither-device-nor-platform",
        {"OutputConfig__TargetPlatform": MISSING},
        "Exactly one of OutputConfig.TargetDevice",
    ),
    (
        "nvidia-without-options",
        {"OutputConfig__CompilerOptions": MISSING},
        "required for Accelerator NVIDIA",
    ),
    (
        "nvidia-without-cuda",
        {"OutputConfig__CompilerOptions": '{"gpu-code":"sm_72","trt-ver":"8.2.1"}'},
        "must give cuda-ver",
    ),
    (
        "nvidia-bad-gpu-code",
        {"OutputConfig__CompilerOptions": '{"gpu-code":"72","trt-ver":"8.2.1","cuda-ver":"10.2"}'},
        "gpu-code has an invalid value",
    ),
    (
        "options-not-json",
        {"OutputConfig__CompilerOptions": "{'gpu-code': 'sm_72'}"},
        "must be a JSON object",
    ),
    ("options-a-list", {"OutputConfig__CompilerOptions": '["sm_72"]'}, "must be a JSON object"),
    (
        "gpu-options-on-cpu",
        {"OutputConfig__TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
        "cuda-ver, gpu-code, trt-ver not accepted",
    ),
    (
        "unknown-option",
        {
            "OutputConfig__TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
            "OutputConfig__CompilerOptions": '{"mcpu":"core-avx2","opt-level":"3"}',
        },
        "opt-level not accepted",
    ),
    (
        "bad-mattr",
        {
            "OutputConfig__TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"},
            "OutputConfig__CompilerOptions": '{"mattr":["neon"]}',
        },
        "mattr has an invalid value",
    ),
    (
        "android-platform-on-linux",
        {
            "OutputConfig__TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"},
            "OutputConfig__CompilerOptions": '{"ANDROID_PLATFORM":27}',
        },
        "ANDROID_PLATFORM not accepted",
    ),
    (
        "role-other-account",
        {"RoleArn": "arn:aws:iam::210987654321:role/SageMakerNeoExecutionRole"},
        "Could not assume role",
    ),
    (
        "role-missing",
        {"RoleArn": "arn:aws:iam::123456789012:role/NoSuchRole"},
        "Could not assume role",
    ),
    (
        "role-not-trusting-sagemaker",
        {"RoleArn": "arn:aws:iam::123456789012:role/LambdaRole"},
        "Could not assume role",
    ),
    (
        "package-missing",
        {
            "ModelPackageVersionArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/casting-defects/9"
        },
        "does not exist",
    ),
    (
        "package-other-region",
        {
            "ModelPackageVersionArn": "arn:aws:sagemaker:eu-west-1:123456789012:model-package/casting-defects/1"
        },
        "does not exist",
    ),
    (
        "output-https",
        {"OutputConfig__S3OutputLocation": "https://neo-output.s3.amazonaws.com/x"},
        "must be an S3 URI",
    ),
    (
        "output-bucket-missing",
        {"OutputConfig__S3OutputLocation": "s3://no-such-bucket/neo"},
        "bucket no-such-bucket does not exist",
    ),
    (
        "output-bucket-other-region",
        {"OutputConfig__S3OutputLocation": "s3://eu-bucket/neo"},
        "is in eu-west-1",
    ),
    (
        "input-bucket-missing",
        {
            "ModelPackageVersionArn": MISSING,
            "InputConfig": {
                "S3Uri": "s3://nowhere/m.tar.gz",
                "Framework": "ONNX",
                "DataInputConfig": '{"x":[1]}',
            },
        },
        "InputConfig.S3Uri: the S3 bucket nowhere",
    ),
    (
        "input-without-shape",
        {
            "ModelPackageVersionArn": MISSING,
            "InputConfig": {"S3Uri": "s3://neo-output/m.tar.gz", "Framework": "PYTORCH"},
        },
        "DataInputConfig (the input shape) is required",
    ),
    (
        "input-shape-not-json",
        {
            "ModelPackageVersionArn": MISSING,
            "InputConfig": {
                "S3Uri": "s3://neo-output/m.tar.gz",
                "Framework": "PYTORCH",
                "DataInputConfig": "[1,3",
            },
        },
        "DataInputConfig must be JSON",
    ),
]


@pytest.mark.parametrize(
    ("changes", "fragment"), [pytest.param(c, f, id=i) for i, c, f in NEO_RULE_CASES]
)
def test_create_job_enforces_neo_rules(
    world: World, sm: SageMakerEmulator, raw_api: Any, changes: dict[str, Any], fragment: str
) -> None:
    """Requests that fit the model but break a Neo rule (input xor package, device xor
    platform, NVIDIA options, option names and values, role, package, S3 locations)
    are ValidationException with a message naming the rule; nothing is created."""
    sm.add_model_package(GROUP, approval="Approved")
    world.client("iam").create_role(
        RoleName="LambdaRole",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    world.client("s3").create_bucket(
        Bucket="eu-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    with pytest.raises(ClientError) as caught:
        raw_api.create_compilation_job(**job_kwargs(world, **changes))
    code, status, message = error_of(caught)
    assert (code, status) == ("ValidationException", 400)
    assert fragment in message
    assert sm.jobs() == []
    assert raw_api.list_compilation_jobs()["CompilationJobSummaries"] == []


@pytest.mark.parametrize(
    ("package", "fragment"),
    [
        pytest.param({"framework": None}, "Containers[0].Framework is required", id="no-framework"),
        pytest.param(
            {"framework_version": None},
            "Containers[0].FrameworkVersion is required",
            id="no-version",
        ),
        pytest.param(
            {"data_input_config": None},
            "DataInputConfig (the input shape) is required",
            id="no-shape",
        ),
        pytest.param({"framework": "scikit"}, "Framework 'SCIKIT' is not one Neo", id="not-neo"),
        pytest.param({"status": "InProgress"}, "only a Completed model package", id="in-progress"),
        pytest.param(
            {
                "inference_specification": {
                    "Containers": [
                        {"Image": "img", "Framework": "PYTORCH", "FrameworkVersion": "2.0"}
                    ]
                }
            },
            "Containers[0].ModelDataUrl is required",
            id="no-model-data",
        ),
        pytest.param(
            {
                "inference_specification": {
                    "Containers": [
                        {"Image": "a", "ModelDataUrl": "s3://neo-output/a", "Framework": "ONNX"},
                        {"Image": "b", "ModelDataUrl": "s3://neo-output/b", "Framework": "ONNX"},
                    ]
                }
            },
            "exactly one container",
            id="two-containers",
        ),
    ],
)
def test_package_without_what_neo_needs_is_rejected(
    world: World, sm: SageMakerEmulator, api: Any, package: dict[str, Any], fragment: str
) -> None:
    """A model package version whose inference specification lacks what Neo takes from
    it (framework, version, input shape, model data), or that is not Completed, is
    refused with a ValidationException naming the missing member."""
    sm.add_model_package(GROUP, approval="Approved", **package)
    with pytest.raises(ClientError) as caught:
        api.create_compilation_job(**job_kwargs(world))
    code, _, message = error_of(caught)
    assert code == "ValidationException"
    assert fragment in message
    assert sm.jobs() == []


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(
            {
                "OutputConfig__TargetPlatform": MISSING,
                "OutputConfig__CompilerOptions": MISSING,
                "OutputConfig__TargetDevice": "jetson_nano",
            },
            id="device-nano",
        ),
        pytest.param(
            {
                "OutputConfig__TargetPlatform": MISSING,
                "OutputConfig__TargetDevice": "jetson_xavier",
            },
            id="device-with-options",
        ),
        pytest.param(
            {
                "OutputConfig__TargetPlatform": MISSING,
                "OutputConfig__CompilerOptions": MISSING,
                "OutputConfig__TargetDevice": "rasp4b",
            },
            id="device-rasp4b",
        ),
        pytest.param(
            {
                "OutputConfig__TargetPlatform": {"Os": "LINUX", "Arch": "ARM_EABIHF"},
                "OutputConfig__CompilerOptions": '{"mattr":["+neon","+vfpv4"]}',
            },
            id="armhf-mattr-list",
        ),
        pytest.param(
            {
                "OutputConfig__TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
                "OutputConfig__CompilerOptions": '{"mcpu":"core-avx2"}',
            },
            id="x86-cpu",
        ),
        pytest.param(
            {
                "OutputConfig__TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"},
                "OutputConfig__CompilerOptions": MISSING,
            },
            id="cpu-without-options",
        ),
        pytest.param(
            {
                "OutputConfig__TargetPlatform": {"Os": "ANDROID", "Arch": "ARM64"},
                "OutputConfig__CompilerOptions": '{"ANDROID_PLATFORM":29}',
            },
            id="android",
        ),
        pytest.param(
            {
                "ModelPackageVersionArn": MISSING,
                "InputConfig": {"S3Uri": "s3://neo-output/m.tar.gz", "Framework": "TFLITE"},
            },
            id="input-config-tflite",
        ),
        pytest.param(
            {
                "StoppingCondition": {},
                "Tags": [{"Key": "Käfer ü", "Value": ""}],
                "OutputConfig__KmsKeyId": "alias/neo",
            },
            id="edge-values",
        ),
        pytest.param({"CompilationJobName": "a" * 63}, id="name-63"),
    ],
)
def test_valid_requests_are_accepted(
    world: World, sm: SageMakerEmulator, api: Any, changes: dict[str, Any]
) -> None:
    """Edge values that AWS accepts are accepted and echoed by DescribeCompilationJob."""
    sm.add_model_package(GROUP, approval="Approved")
    kwargs = job_kwargs(world, **changes)
    arn = api.create_compilation_job(**kwargs)["CompilationJobArn"]
    name = kwargs["CompilationJobName"]
    assert (
        arn == f"arn:aws:sagemaker:{world.region}:{world.account_id}:compilation-job/{name.lower()}"
    )
    described = api.describe_compilation_job(CompilationJobName=name)
    assert described["OutputConfig"] == kwargs["OutputConfig"]
    assert described["CompilationJobStatus"] == "STARTING"


# -- job name, quota, lifecycle -------------------------------------------------------------------


def test_job_name_is_unique_forever_and_case_insensitive(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """Neo has no client token: a second job with a used name (any case, even after the
    first completed) is ResourceInUse, a modelled error class of botocore."""
    sm.add_model_package(GROUP, approval="Approved")
    api.create_compilation_job(**job_kwargs(world))
    clock.advance(3600)
    for name in ("defects-v1-xavier", "DEFECTS-V1-XAVIER"):
        with pytest.raises(api.exceptions.ResourceInUse) as caught:
            api.create_compilation_job(**job_kwargs(world, CompilationJobName=name))
        assert error_of(caught)[:2] == ("ResourceInUse", 400)
    assert len(sm.jobs()) == 1


def test_concurrent_jobs_quota_is_resource_limit_exceeded(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """With ``max_active_jobs = 2`` a third running job is ResourceLimitExceeded; once one
    has finished, a new one is accepted."""
    sm.add_model_package(GROUP, approval="Approved")
    sm.max_active_jobs = 2
    api.create_compilation_job(**job_kwargs(world, CompilationJobName="a"))
    clock.advance(60)
    api.create_compilation_job(**job_kwargs(world, CompilationJobName="b"))
    with pytest.raises(api.exceptions.ResourceLimitExceeded) as caught:
        api.create_compilation_job(**job_kwargs(world, CompilationJobName="c"))
    assert "current utilization of 2 jobs" in error_of(caught)[2]
    clock.advance(sm.compile_seconds - 60)
    api.create_compilation_job(**job_kwargs(world, CompilationJobName="c"))
    assert [j.name for j in sm.jobs()] == ["a", "b", "c"]


def test_job_runs_on_the_world_clock_and_writes_a_tar_gz(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """STARTING, INPROGRESS after 20 s, COMPLETED after 180 s without sleeping; the
    artifact is a .tar.gz in the output location whose digest is ModelDigests; the
    package's framework, version and input shape show in InputConfig; changed settings
    do not affect a started job."""
    sm.add_model_package(GROUP, approval="Approved")
    created = clock.now()
    api.create_compilation_job(**job_kwargs(world))
    sm.compile_seconds = 10_000.0

    def describe() -> dict[str, Any]:
        return api.describe_compilation_job(CompilationJobName="defects-v1-xavier")  # type: ignore[no-any-return]

    first = describe()
    assert first["CompilationJobStatus"] == "STARTING"
    assert "CompilationStartTime" not in first
    assert first["FailureReason"] == ""
    assert first["InputConfig"] == {
        "S3Uri": f"s3://{sm.models_bucket}/{GROUP}/1/model.tar.gz",
        "Framework": "PYTORCH",
        "FrameworkVersion": "2.0",
        "DataInputConfig": '{"input0": [1, 3, 224, 224]}',
    }
    assert first["ModelPackageVersionArn"] == sm.package_arn(GROUP, 1)
    clock.advance(20)
    running = describe()
    assert running["CompilationJobStatus"] == "INPROGRESS"
    assert running["CompilationStartTime"].timestamp() == created + 20
    clock.advance(159)
    assert describe()["CompilationJobStatus"] == "INPROGRESS"
    clock.advance(1)
    done = describe()
    assert done["CompilationJobStatus"] == "COMPLETED"
    assert done["CompilationEndTime"].timestamp() == created + 180
    uri = done["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == f"s3://{BUCKET}/neo/defects/model-LINUX_ARM64_NVIDIA.tar.gz"
    body = world.client("s3").get_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])["Body"].read()
    assert done["ModelDigests"]["ArtifactDigest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(body))) as tar:
        names = sorted(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert names == ["compiled.params", "compiled.so", "compiled_model.json", "manifest.json"]
    assert manifest["ModelPackageVersionArn"] == sm.package_arn(GROUP, 1)
    assert manifest["Target"] == "LINUX_ARM64_NVIDIA"
    assert manifest["CompilerOptions"] == XAVIER_OPTIONS


def test_target_device_artifact_is_named_after_the_device(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """A TargetDevice job's artifact is ``<model>-<device>.tar.gz``."""
    sm.add_model_package(GROUP, approval="Approved")
    kwargs = job_kwargs(
        world,
        OutputConfig={"S3OutputLocation": f"s3://{BUCKET}/", "TargetDevice": "jetson_nano"},
    )
    api.create_compilation_job(**kwargs)
    clock.advance(sm.compile_seconds)
    described = api.describe_compilation_job(CompilationJobName=kwargs["CompilationJobName"])
    assert (
        described["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{BUCKET}/model-jetson_nano.tar.gz"
    )


def test_fail_jobs_makes_the_next_jobs_fail(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """``fail_jobs(1, name_prefix=...)`` fails the next finishing job with that prefix
    (FAILED with the FailureReason, no artifact), others complete."""
    sm.add_model_package(GROUP, approval="Approved")
    sm.fail_jobs(reason="ClientError: Unsupported operator", name_prefix="defects-")
    api.create_compilation_job(**job_kwargs(world, CompilationJobName="other-1"))
    api.create_compilation_job(**job_kwargs(world, CompilationJobName="defects-1"))
    api.create_compilation_job(**job_kwargs(world, CompilationJobName="defects-2"))
    clock.advance(sm.compile_seconds)
    outcome = {
        j["CompilationJobName"]: j["CompilationJobStatus"]
        for j in api.list_compilation_jobs()["CompilationJobSummaries"]
    }
    assert outcome == {"other-1": "COMPLETED", "defects-1": "FAILED", "defects-2": "COMPLETED"}
    failed = api.describe_compilation_job(CompilationJobName="defects-1")
    assert failed["FailureReason"] == "ClientError: Unsupported operator"
    assert failed["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{BUCKET}/neo/defects"
    assert "ModelDigests" not in failed
    with pytest.raises(ValueError):
        sm.fail_jobs(0)


@pytest.mark.parametrize("cause", ["package", "model-data", "output-bucket", "max-runtime"])
def test_job_fails_when_its_inputs_go_away(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock, cause: str
) -> None:
    """A job ends FAILED with a reason when its package is deleted, its model data or
    output bucket disappears before it finishes, or it needs longer than
    MaxRuntimeInSeconds (then it fails at that limit)."""
    sm.add_model_package(GROUP, approval="Approved")
    created = clock.now()
    kwargs = job_kwargs(world)
    if cause == "max-runtime":
        kwargs["StoppingCondition"] = {"MaxRuntimeInSeconds": 60}
    api.create_compilation_job(**kwargs)
    s3 = world.client("s3")
    if cause == "package":
        sm.delete_model_package(GROUP, 1)
    elif cause == "model-data":
        s3.delete_object(Bucket=sm.models_bucket, Key=f"{GROUP}/1/model.tar.gz")
    elif cause == "output-bucket":
        s3.delete_bucket(Bucket=BUCKET)
    clock.advance(sm.compile_seconds)
    described = api.describe_compilation_job(CompilationJobName=kwargs["CompilationJobName"])
    assert described["CompilationJobStatus"] == "FAILED"
    expected = {
        "package": "no longer exists",
        "model-data": "Unable to download model data",
        "output-bucket": "Unable to upload",
        "max-runtime": "exceeded MaxRuntimeInSeconds (60 s)",
    }[cause]
    assert expected in described["FailureReason"]
    if cause == "max-runtime":
        assert described["CompilationEndTime"].timestamp() == created + sm.starting_seconds + 60


def test_stop_compilation_job(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """StopCompilationJob: STOPPING, then STOPPED after ``stopping_seconds``; stopping a
    finished job is ValidationException; an unknown job is ResourceNotFound for Stop and
    Describe."""
    sm.add_model_package(GROUP, approval="Approved")
    api.create_compilation_job(**job_kwargs(world))
    clock.advance(30)
    api.stop_compilation_job(CompilationJobName="defects-v1-xavier")
    assert sm.jobs()[0].status == "STOPPING"
    clock.advance(sm.stopping_seconds)
    described = api.describe_compilation_job(CompilationJobName="defects-v1-xavier")
    assert described["CompilationJobStatus"] == "STOPPED"
    with pytest.raises(ClientError) as caught:
        api.stop_compilation_job(CompilationJobName="defects-v1-xavier")
    assert error_of(caught)[:2] == ("ValidationException", 400)
    for call in (api.stop_compilation_job, api.describe_compilation_job):
        with pytest.raises(api.exceptions.ResourceNotFound) as missing:
            call(CompilationJobName="no-such-job")
        assert error_of(missing)[:2] == ("ResourceNotFound", 400)


def test_list_compilation_jobs_filters_sorts_and_pages(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock
) -> None:
    """ListCompilationJobs: StatusEquals, NameContains, CreationTimeAfter, SortBy Name
    descending, target fields in summaries, and the official paginator over 12 jobs."""
    sm.add_model_package(GROUP, approval="Approved")
    for index in range(12):
        api.create_compilation_job(**job_kwargs(world, CompilationJobName=f"job-{index:02d}"))
        clock.advance(15)
    statuses = {
        j["CompilationJobName"]: j["CompilationJobStatus"]
        for page in api.get_paginator("list_compilation_jobs").paginate()
        for j in page["CompilationJobSummaries"]
    }
    assert list(statuses) == [f"job-{i:02d}" for i in range(12)]
    running = api.list_compilation_jobs(StatusEquals="INPROGRESS", MaxResults=100)
    assert {j["CompilationJobName"] for j in running["CompilationJobSummaries"]} == {
        n for n, s in statuses.items() if s == "INPROGRESS"
    }
    by_name = api.list_compilation_jobs(NameContains="job-1", SortBy="Name", SortOrder="Descending")
    assert [j["CompilationJobName"] for j in by_name["CompilationJobSummaries"]] == [
        "job-11",
        "job-10",
    ]
    [summary] = api.list_compilation_jobs(NameContains="job-11")["CompilationJobSummaries"]
    assert summary["CompilationTargetPlatformAccelerator"] == "NVIDIA"
    assert summary["CompilationTargetPlatformArch"] == "ARM64"


# -- throttling, quota and raw requests ------------------------------------------------------------


def test_request_quota_throttles_and_injected_throttling_survives_retries(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock, no_backoff: None
) -> None:
    """``faults.set_quota("sagemaker", 3)``: the fourth call within one virtual second is
    ThrottlingException with HTTP 400 (as JSON 1.1 services answer it), counted as throttled
    in the call log; a second later calls pass; an injected throttle outlasting
    botocore's retries is ThrottlingException after 3 requests."""
    no_retry = client(world, config=Config(retries={"max_attempts": 0, "mode": "standard"}))
    world.faults.set_quota("sagemaker", 3)
    for _ in range(3):
        no_retry.list_model_packages(ModelPackageGroupName=GROUP)
    world.calls.clear()
    with pytest.raises(ClientError) as caught:
        no_retry.list_compilation_jobs()
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    # A JSON 1.1 service: the throttle is HTTP 400, and the call log still counts it.
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert [c.throttled for c in world.calls.calls] == [True]
    clock.advance(1)
    no_retry.list_compilation_jobs()
    world.faults.set_quota("sagemaker", None)
    retrying = client(world, config=Config(retries={"max_attempts": 2, "mode": "standard"}))
    world.faults.inject("sagemaker", "DescribeCompilationJob", "throttle", times=10)
    world.calls.clear()
    with pytest.raises(ClientError) as throttled:
        retrying.describe_compilation_job(CompilationJobName="x")
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert world.calls.counts("sagemaker")["DescribeCompilationJob"] == 3
    assert all(c.throttled for c in world.calls.calls)


@pytest.mark.parametrize(
    ("target", "body", "method", "code"),
    [
        pytest.param(
            "SageMaker.CreateCompilationJob",
            b"{not json",
            "POST",
            "SerializationException",
            id="bad-json",
        ),
        pytest.param(
            "SageMaker.CreateCompilationJob",
            b"[]",
            "POST",
            "SerializationException",
            id="not-an-object",
        ),
        pytest.param(
            "SageMaker.CreateCompilationJob",
            b"\xff\xfe",
            "POST",
            "SerializationException",
            id="not-utf8",
        ),
        pytest.param(
            "SageMaker.ListCompilationJobs",
            b'{"MaxResults":"10"}',
            "POST",
            "SerializationException",
            id="string-for-integer",
        ),
        pytest.param(
            "SageMaker.ListModelPackages",
            b'{"CreationTimeAfter":"yesterday"}',
            "POST",
            "SerializationException",
            id="string-for-timestamp",
        ),
        pytest.param(
            "SageMaker.CreateCompilationJob",
            b'{"OutputConfig":"s3://x"}',
            "POST",
            "SerializationException",
            id="string-for-structure",
        ),
        pytest.param(
            "SageMaker.CreateTrainingJob",
            b"{}",
            "POST",
            "UnknownOperationException",
            id="not-emulated",
        ),
        pytest.param(
            "Other.ListCompilationJobs",
            b"{}",
            "POST",
            "UnknownOperationException",
            id="other-prefix",
        ),
        pytest.param(None, b"{}", "POST", "UnknownOperationException", id="no-target"),
        pytest.param(
            "SageMaker.ListCompilationJobs", b"{}", "GET", "UnknownOperationException", id="get"
        ),
    ],
)
def test_malformed_requests_are_400_and_change_nothing(
    world: World, sm: SageMakerEmulator, target: str | None, body: bytes, method: str, code: str
) -> None:
    """Bytes botocore would never send get a 400 with an error code (never a 500), and
    nothing changes."""
    response = raw(world, target, body, method)
    assert response.status == 400
    assert json.loads(response.body)["__type"] == code
    assert sm.jobs() == []


def test_raw_valid_request_is_accepted(world: World, sm: SageMakerEmulator) -> None:
    """The raw-request helper is sound: a well-formed JSON 1.1 request is answered 200
    with the JSON 1.1 content type."""
    response = raw(world, "SageMaker.ListCompilationJobs", b"{}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert json.loads(response.body) == {"CompilationJobSummaries": []}


def test_denied_operation_is_access_denied(world: World, sm: SageMakerEmulator, api: Any) -> None:
    """An operation in ``denied_operations`` is AccessDeniedException naming the IAM
    action, before any validation; other operations still work."""
    sm.denied_operations = {"CreateCompilationJob"}
    with pytest.raises(ClientError) as caught:
        api.create_compilation_job(**job_kwargs(world, CompilationJobName="-invalid"))
    code, status, message = error_of(caught)
    assert (code, status) == ("AccessDeniedException", 400)
    assert "sagemaker:CreateCompilationJob" in message
    assert api.list_compilation_jobs()["CompilationJobSummaries"] == []


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        pytest.param(None, "not allowed s3:GetObject", id="no-policy"),
        pytest.param(
            {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]},
            "not allowed s3:PutObject on arn:aws:s3:::neo-output/neo/defects/",
            id="read-only",
        ),
        pytest.param(
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                    {
                        "Effect": "Deny",
                        "Action": "s3:putobject",
                        "Resource": "arn:aws:s3:::neo-output/*",
                    },
                ]
            },
            "is denied s3:PutObject",
            id="explicit-deny",
        ),
        pytest.param(
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:PutObject"],
                        "Resource": "*",
                        "Condition": {"Bool": {"aws:SecureTransport": "true"}},
                    }
                ]
            },
            "not allowed s3:GetObject",
            id="conditional-allow",
        ),
    ],
)
def test_neo_role_without_s3_access_fails_the_job(
    world: World, sm: SageMakerEmulator, api: Any, clock: VirtualClock, policy: Any, fragment: str
) -> None:
    """Neo reads the model data and writes the artifact as the role: a role whose policies
    (read from IAM) do not allow s3:GetObject on the model data and s3:PutObject on the
    output key, or deny them, makes the job FAIL with an access-denied reason; conditional
    grants count for nothing (the emulator does not evaluate conditions)."""
    sm.add_model_package(GROUP, approval="Approved")
    iam = world.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    arn = iam.create_role(RoleName="Restricted", AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"
    ]["Arn"]
    if policy is not None:
        iam.put_role_policy(
            RoleName="Restricted",
            PolicyName="p",
            PolicyDocument=json.dumps({"Version": "2012-10-17", **policy}),
        )
    api.create_compilation_job(**job_kwargs(world, RoleArn=arn))
    clock.advance(sm.compile_seconds)
    described = api.describe_compilation_job(CompilationJobName="defects-v1-xavier")
    assert described["CompilationJobStatus"] == "FAILED"
    assert fragment in described["FailureReason"]


def test_role_check_can_be_turned_off(world: World, sm: SageMakerEmulator, api: Any) -> None:
    """With ``check_roles = False`` a role that does not exist is accepted (for worlds that
    do not model IAM); by default it is refused."""
    sm.add_model_package(GROUP, approval="Approved")
    kwargs = job_kwargs(world, RoleArn=f"arn:aws:iam::{world.account_id}:role/Elsewhere")
    with pytest.raises(ClientError):
        api.create_compilation_job(**copy.deepcopy(kwargs))
    sm.check_roles = False
    api.create_compilation_job(**kwargs)
    assert [j.name for j in sm.jobs()] == [kwargs["CompilationJobName"]]


def test_http_front_end_and_admin_api_serve_sagemaker(world: World) -> None:
    """Over the world's HTTP endpoint, a boto3 client reaches the emulator (JSON 1.1 routed
    by the SigV4 scope), and the admin API registers versions, approves them, makes the
    Neo role, sets the compilation time and injects a failure; bad admin bodies are 400,
    unknown SageMaker admin actions 404."""
    import urllib.error
    import urllib.request

    import boto3

    from localcloud.server import WorldServer
    from localcloud.transport import TEST_CREDENTIALS

    def admin(action: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{server.url}/_localcloud/sagemaker/{action}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    world.client("s3").create_bucket(Bucket=BUCKET)
    with WorldServer(world) as server:
        status, added = admin("model-packages", {"group": GROUP, "approval": "Approved"})
        assert (status, added["version"]) == (200, 1)
        assert admin("model-packages", {"group": GROUP})[1]["version"] == 2
        assert admin("approval", {"group": GROUP, "version": 2, "approval": "Approved"})[0] == 200
        role = admin("role", {})[1]["arn"]
        assert admin("compilation", {"seconds": 60, "startingSeconds": 5})[0] == 200
        assert admin("fail-jobs", {"times": 1, "reason": "ClientError: injected"})[0] == 200
        assert admin("approval", {"group": GROUP})[0] == 400
        assert admin("nothing", {})[0] == 404
        api = boto3.Session(region_name=world.region, **TEST_CREDENTIALS).client(
            "sagemaker", endpoint_url=server.url
        )
        [newest] = api.list_model_packages(
            ModelPackageGroupName=GROUP,
            ModelApprovalStatus="Approved",
            SortBy="CreationTime",
            SortOrder="Descending",
            MaxResults=1,
        )["ModelPackageSummaryList"]
        assert newest["ModelPackageVersion"] == 2
        kwargs = job_kwargs(world, RoleArn=role, ModelPackageVersionArn=newest["ModelPackageArn"])
        api.create_compilation_job(**kwargs)
        world.clock.advance(60)  # type: ignore[attr-defined]
        described = api.describe_compilation_job(CompilationJobName=kwargs["CompilationJobName"])
        assert (described["CompilationJobStatus"], described["FailureReason"]) == (
            "FAILED",
            "ClientError: injected",
        )


@pytest.mark.parametrize(
    "tree",
    [
        "jetson-agx-xavier-jetpack46",
        "jetson-nano-jetpack461",
        "jetson-tx2-jetpack46",
        "raspberry-pi-4-armhf",
        "raspberry-pi-3-armhf",
        "raspberry-pi-4",
        "armv7l-board",
        "jetson-agx-orin-jetpack512",
        "x86-64-t4",
        "x86-64-a10g",
        "x86-64-cpu-server",
    ],
)
def test_every_detected_neo_target_is_accepted(
    world: World, sm: SageMakerEmulator, api: Any, tree: str, clock: VirtualClock
) -> None:
    """The OutputConfig the agent's Neo detection builds for each fixture device, sent by
    a real botocore client, passes the emulator's model and Neo checks and compiles."""
    from pathlib import Path

    from agent.platform.neo import detect_neo_platform

    fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "platforms"
    detected = detect_neo_platform(fixtures / tree)
    sm.add_model_package(GROUP, approval="Approved")
    kwargs = job_kwargs(world, CompilationJobName=f"defects-v1-{detected.key}")
    kwargs["OutputConfig"] = detected.output_config(f"s3://{BUCKET}/neo/{detected.key}")
    api.create_compilation_job(**kwargs)
    clock.advance(sm.compile_seconds)
    described = api.describe_compilation_job(CompilationJobName=kwargs["CompilationJobName"])
    assert described["CompilationJobStatus"] == "COMPLETED"
    assert described["OutputConfig"] == kwargs["OutputConfig"]
