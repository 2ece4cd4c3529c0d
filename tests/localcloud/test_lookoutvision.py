"""Conformance tests of the Lookout for Vision emulator.

Every call goes through a current-botocore client built from the OFFICIAL 2020-11-20
model (botocore 1.40.60's data, see ``tests.support.oracle``), so serialization,
parsing and error classes are botocore's own. Validation cases use a client with
``parameter_validation=False`` so the bad values reach the emulator. A few cases need
bytes botocore cannot produce (bad JSON, wrong JSON types, unknown paths): those are
sent as raw requests through ``World.dispatch``. Time only moves with the virtual clock.
"""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localcloud.clock import VirtualClock
from localcloud.http import Headers, Request, Response
from localcloud.lookoutvision import LookoutVisionEmulator
from localcloud.transport import TEST_CREDENTIALS, attach
from localcloud.world import INTERNAL_ENDPOINT, World
from tests.support.oracle import official_lookoutvision_client, project_lookoutvision_client

PROJECT = "casting-inspection"
OTHER_PROJECT = "other_project"
BUCKET = "l4v-packages"
COMPONENT = "com.example.CastingDefects"
HOUR = 3600.0
MISSING = object()
G = "Configuration.Greengrass."
AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDLOCALCLOUD/20260101/us-east-1/lookoutvision/"
    "aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
)
JOBS_PATH = f"/2020-11-20/projects/{PROJECT}/modelpackagingjobs"


# -- fixtures and helpers -----------------------------------------------------------------


_S3_SESSION: list[Any] = []


@pytest.fixture
def world(world: World) -> World:
    """The conftest world, with its internal S3 client taken from one boto3 session
    shared by this module (speed only: a fresh session re-parses the S3 model and the
    endpoint data, ~0.2 s per test). Wired as ``World.client`` does it: in-process,
    internal, path-style."""
    import boto3

    if not _S3_SESSION:
        _S3_SESSION.append(boto3.Session(region_name=world.region, **TEST_CREDENTIALS))
    s3 = _S3_SESSION[0].client(
        "s3", endpoint_url=INTERNAL_ENDPOINT, config=Config(s3={"addressing_style": "path"})
    )
    world._internal_clients["s3"] = attach(s3, world, internal=True)
    return world


@pytest.fixture
def lv(world: World) -> LookoutVisionEmulator:
    """The emulator with one project, model 1 TRAINED and the output bucket."""
    emulator: LookoutVisionEmulator = world.lookoutvision
    emulator.create_project(PROJECT)
    emulator.add_model(PROJECT)
    world.client("s3").create_bucket(Bucket=BUCKET)
    return emulator


@pytest.fixture
def client(world: World, lv: LookoutVisionEmulator) -> Any:
    """Official-model client; a single attempt so each error is seen exactly once."""
    return official_lookoutvision_client(
        world, config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
    )


@pytest.fixture
def loose_client(world: World, lv: LookoutVisionEmulator) -> Any:
    """Official-model client that skips botocore's own parameter validation, so the
    emulator is the one that must reject bad values."""
    return official_lookoutvision_client(
        world,
        config=Config(
            parameter_validation=False, retries={"total_max_attempts": 1, "mode": "standard"}
        ),
    )


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """botocore's standard retry mode waits up to 1 s before a retry; make it 0 s."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    yield


def start_kwargs(**overrides: Any) -> dict[str, Any]:
    """A valid StartModelPackagingJob request (CPU x86_64 target)."""
    kwargs: dict[str, Any] = {
        "ProjectName": PROJECT,
        "ModelVersion": "1",
        "JobName": "nightly-1",
        "Description": "Nightly build (x86): ok",
        "ClientToken": "token-1",
        "Configuration": {
            "Greengrass": {
                "ComponentName": COMPONENT,
                "ComponentVersion": "1.0.0",
                "ComponentDescription": "Casting defect model",
                "S3OutputLocation": {"Bucket": BUCKET, "Prefix": "components/"},
                "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
                "Tags": [{"Key": "team", "Value": "vision"}],
            }
        },
    }
    kwargs.update(overrides)
    return kwargs


def with_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """start_kwargs() with dotted-path members replaced (``MISSING`` removes one)."""
    kwargs = start_kwargs()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = kwargs
        for part in parents:
            node = node[part]
        if value is MISSING:
            node.pop(leaf, None)
        else:
            node[leaf] = copy.deepcopy(value)
    return kwargs


def raw(
    world: World,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Send one hand-made request with a signed-looking Authorization header."""
    all_headers = Headers({"Authorization": AUTH, "Content-Type": "application/json"})
    for key, value in (headers or {}).items():
        all_headers[key] = value
    return world.dispatch(Request(method, path, query or {}, all_headers, body))


def error_of(response: Response) -> str:
    return str(json.loads(response.body)["__type"])


def advance(clock: VirtualClock, world: World, seconds: float) -> None:
    clock.advance(seconds)
    world.tick()


# -- happy paths --------------------------------------------------------------------------


def test_list_and_describe_projects_parse(client: Any, lv: LookoutVisionEmulator) -> None:
    """ListProjects and DescribeProject answer with the official shapes (ARN, name,
    creation time as a timestamp, datasets list)."""
    lv.create_project(OTHER_PROJECT)
    projects = client.list_projects()["Projects"]
    assert [p["ProjectName"] for p in projects] == [PROJECT, OTHER_PROJECT]
    assert projects[0]["ProjectArn"] == (
        f"arn:aws:lookoutvision:us-east-1:123456789012:project/{PROJECT}"
    )
    described = client.describe_project(ProjectName=PROJECT)["ProjectDescription"]
    assert described["ProjectName"] == PROJECT
    assert described["CreationTimestamp"].timestamp() == pytest.approx(1_790_000_000.0)
    assert described["Datasets"] == []


def test_list_and_describe_models_parse(client: Any, lv: LookoutVisionEmulator) -> None:
    """ListModels and DescribeModel return every documented field with the right types;
    ModelVersion is a string; performance is present once a model is trained."""
    lv.add_model(PROJECT, "TRAINING", description="retrain-2")
    models = client.list_models(ProjectName=PROJECT)["Models"]
    assert [(m["ModelVersion"], m["Status"]) for m in models] == [
        ("1", "TRAINED"),
        ("2", "TRAINING"),
    ]
    assert set(models[0]["Performance"]) == {"F1Score", "Recall", "Precision"}
    assert "Performance" not in models[1]
    assert models[1]["Description"] == "retrain-2"
    model = client.describe_model(ProjectName=PROJECT, ModelVersion="1")["ModelDescription"]
    assert model["ModelArn"].endswith(f":model/{PROJECT}/1")
    assert model["Status"] == "TRAINED"
    assert model["OutputConfig"]["S3Location"]["Bucket"]
    assert model["EvaluationEndTimestamp"].timestamp() == pytest.approx(1_790_000_000.0)
    latest = client.describe_model(ProjectName=PROJECT, ModelVersion="latest")
    assert latest["ModelDescription"]["ModelVersion"] == "2"


def test_start_describe_and_list_job_parse(client: Any, lv: LookoutVisionEmulator) -> None:
    """StartModelPackagingJob returns the JobName; DescribeModelPackagingJob and
    ListModelPackagingJobs return the job with the documented fields."""
    assert client.start_model_packaging_job(**start_kwargs())["JobName"] == "nightly-1"
    job = client.describe_model_packaging_job(ProjectName=PROJECT, JobName="nightly-1")[
        "ModelPackagingDescription"
    ]
    assert job["JobName"] == "nightly-1"
    assert job["ProjectName"] == PROJECT
    assert job["ModelVersion"] == "1"
    assert job["Status"] == "CREATED"
    assert job["ModelPackagingMethod"] == "Greengrass"
    assert job["ModelPackagingJobDescription"] == "Nightly build (x86): ok"
    assert job["ModelPackagingConfiguration"] == start_kwargs()["Configuration"]
    assert job["CreationTimestamp"] == job["LastUpdatedTimestamp"]
    assert "ModelPackagingOutputDetails" not in job
    listed = client.list_model_packaging_jobs(ProjectName=PROJECT)["ModelPackagingJobs"]
    assert [(j["JobName"], j["Status"], j["ModelVersion"]) for j in listed] == [
        ("nightly-1", "CREATED", "1")
    ]


def test_timestamps_are_epoch_seconds_on_the_wire(world: World, lv: LookoutVisionEmulator) -> None:
    """The REST-JSON wire format carries timestamps as epoch-second numbers."""
    response = raw(world, "GET", f"/2020-11-20/projects/{PROJECT}/models/1")
    assert response.status == 200
    created = json.loads(response.body)["ModelDescription"]["CreationTimestamp"]
    assert isinstance(created, (int, float))
    assert created == pytest.approx(1_790_000_000.0)


# -- job lifecycle on the virtual clock ----------------------------------------------------


def test_twenty_minute_job_completes_with_clock_advance(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """A 20-minute packaging job goes CREATED -> RUNNING (after 30 s) -> SUCCEEDED
    (after 20 min) purely by advancing the virtual clock; timestamps follow it."""
    lv.packaging_seconds = 20 * 60
    client.start_model_packaging_job(**start_kwargs())
    describe = lambda: client.describe_model_packaging_job(  # noqa: E731
        ProjectName=PROJECT, JobName="nightly-1"
    )["ModelPackagingDescription"]
    created = describe()["CreationTimestamp"]
    clock.advance(29)
    assert describe()["Status"] == "CREATED"
    clock.advance(1)
    running = describe()
    assert running["Status"] == "RUNNING"
    assert (running["LastUpdatedTimestamp"] - created).total_seconds() == 30
    advance(clock, world, 20 * 60 - 31)
    assert lv.jobs(PROJECT)[0].status == "RUNNING"
    advance(clock, world, 1)
    assert lv.jobs(PROJECT)[0].status == "SUCCEEDED"
    done = describe()
    assert done["Status"] == "SUCCEEDED"
    assert (done["LastUpdatedTimestamp"] - created).total_seconds() == 20 * 60
    output = done["ModelPackagingOutputDetails"]["Greengrass"]
    assert output == {
        "ComponentVersionArn": (
            f"arn:aws:greengrass:us-east-1:123456789012:components:{COMPONENT}:versions:1.0.0"
        ),
        "ComponentName": COMPONENT,
        "ComponentVersion": "1.0.0",
    }


def test_success_uploads_artifact_and_registers_component(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """On SUCCEEDED the model artifact (a zip with a JSON manifest) is in the S3 output
    location and the component version is registered with a recipe that depends on
    the Lookout for Vision edge agent (HARD) and points at the artifact."""
    client.start_model_packaging_job(**start_kwargs())
    advance(clock, world, lv.packaging_seconds)
    key = f"components/{COMPONENT}/1.0.0/model.zip"
    body = world.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(body)).read("manifest.json"))
    assert manifest["project"] == PROJECT
    assert manifest["modelVersion"] == "1"
    assert manifest["componentVersion"] == "1.0.0"
    job = lv.jobs(PROJECT)[0]
    assert job.artifact_uri == f"s3://{BUCKET}/{key}"
    recipe = job.recipe
    assert recipe is not None
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert (recipe["ComponentName"], recipe["ComponentVersion"]) == (COMPONENT, "1.0.0")
    assert recipe["ComponentDescription"] == "Casting defect model"
    assert recipe["ComponentDependencies"] == {
        "aws.iot.lookoutvision.EdgeAgent": {
            "VersionRequirement": ">=0.1.0",
            "DependencyType": "HARD",
        }
    }
    [manifest_entry] = recipe["Manifests"]
    assert manifest_entry["Platform"] == {"os": "linux", "architecture": "amd64"}
    assert manifest_entry["Artifacts"][0]["Uri"] == f"s3://{BUCKET}/{key}"
    greengrass = world.greengrass
    if hasattr(greengrass, "component_version_exists"):
        assert greengrass.component_version_exists(COMPONENT, "1.0.0")
    described = client.describe_model_packaging_job(ProjectName=PROJECT, JobName="nightly-1")
    output = described["ModelPackagingDescription"]["ModelPackagingOutputDetails"]["Greengrass"]
    assert output["ComponentVersionArn"] == job.component_version_arn


@pytest.mark.parametrize(
    ("target", "architecture"),
    [
        ({"TargetDevice": "jetson_xavier"}, "aarch64"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}, "aarch64"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}, "amd64"),
        (
            {
                "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"},
                "CompilerOptions": '{"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"}',
            },
            "amd64",
        ),
    ],
    ids=["jetson", "arm64", "x86_64", "x86_64-nvidia"],
)
def test_recipe_platform_follows_target(
    target: dict[str, Any],
    architecture: str,
    client: Any,
    lv: LookoutVisionEmulator,
    clock: VirtualClock,
    world: World,
) -> None:
    """The component's manifest platform is linux with aarch64 for Jetson/ARM64 and
    amd64 for X86_64."""
    kwargs = start_kwargs()
    greengrass = kwargs["Configuration"]["Greengrass"]
    del greengrass["TargetPlatform"]
    greengrass.update(target)
    client.start_model_packaging_job(**kwargs)
    advance(clock, world, lv.packaging_seconds)
    job = lv.jobs(PROJECT)[0]
    assert job.status == "SUCCEEDED"
    assert job.recipe is not None
    assert job.recipe["Manifests"][0]["Platform"] == {"os": "linux", "architecture": architecture}


def test_component_version_defaults_to_model_version(
    client: Any, lv: LookoutVisionEmulator
) -> None:
    """Without ComponentVersion the component version is ``<ModelVersion>.0.0``."""
    lv.add_model(PROJECT)
    client.start_model_packaging_job(
        **with_changes({"ModelVersion": "2", G + "ComponentVersion": MISSING})
    )
    job = client.describe_model_packaging_job(ProjectName=PROJECT, JobName="nightly-1")
    configuration = job["ModelPackagingDescription"]["ModelPackagingConfiguration"]
    assert configuration["Greengrass"]["ComponentVersion"] == "2.0.0"


def test_latest_resolves_to_highest_trained_version(client: Any, lv: LookoutVisionEmulator) -> None:
    """ModelVersion ``latest`` packages the highest version that is TRAINED or HOSTED,
    skipping newer versions still training or failed."""
    lv.add_model(PROJECT, "HOSTED")  # 2
    lv.add_model(PROJECT, "TRAINING")  # 3
    lv.add_model(PROJECT, "TRAINING_FAILED")  # 4
    client.start_model_packaging_job(**start_kwargs(ModelVersion="latest"))
    job = client.describe_model_packaging_job(ProjectName=PROJECT, JobName="nightly-1")
    assert job["ModelPackagingDescription"]["ModelVersion"] == "2"


def test_job_name_is_generated_when_omitted(client: Any, lv: LookoutVisionEmulator) -> None:
    """Without JobName the service invents one that satisfies the JobName constraints."""
    name = client.start_model_packaging_job(**with_changes({"JobName": MISSING}))["JobName"]
    assert re.fullmatch(r"[a-zA-Z0-9-]{1,64}", name)
    assert [j.name for j in lv.jobs(PROJECT)] == [name]


@pytest.mark.parametrize(
    "changes",
    [
        {G + "Tags": [{"Key": "Équipe 1", "Value": "ligne:3/été=@+"}]},
        {G + "Tags": []},
        {G + "Tags": MISSING, G + "ComponentDescription": MISSING, "Description": MISSING},
        {
            G + "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
            G + "CompilerOptions": '{"mcpu": "core-avx2"}',
        },
        {G + "CompilerOptions": '{"mcpu": "cortex-a72", "mattr": ["+neon"]}'},
        {
            G + "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
            G + "CompilerOptions": '{"gpu-code": "sm_72", "trt-ver": "8.2.1", "cuda-ver": "10.2"}',
        },
        {G + "TargetPlatform": MISSING, G + "TargetDevice": "jetson_xavier"},
        {G + "S3OutputLocation": {"Bucket": BUCKET}},
        {G + "S3OutputLocation": {"Bucket": BUCKET, "Prefix": ""}},
        {G + "S3OutputLocation": {"Bucket": BUCKET, "Prefix": "a/b-c_d.e!*'()/"}},
        {"Description": "Build (v2): it's ok; really, fine?", "JobName": "A-1"},
        {G + "ComponentVersion": "999999.0.123456", G + "ComponentName": "a-b_c.D"},
        {"ModelVersion": "latest", "ClientToken": "t" * 64},
    ],
    ids=[
        "unicode-tag",
        "empty-tags",
        "optional-members-omitted",
        "cpu-mcpu",
        "cpu-mattr-list",
        "nvidia-jetson-options",
        "target-device",
        "no-prefix",
        "empty-prefix",
        "prefix-punctuation",
        "description-punctuation",
        "version-limits",
        "latest-and-long-token",
    ],
)
def test_valid_requests_are_accepted(
    changes: dict[str, Any], loose_client: Any, lv: LookoutVisionEmulator
) -> None:
    """Values at the edges of the documented constraints are accepted (no false
    rejections from the strict validation)."""
    loose_client.start_model_packaging_job(**with_changes(changes))
    assert len(lv.jobs(PROJECT)) == 1


# -- validation table ---------------------------------------------------------------------

VALIDATION_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("project-name-leading-dash", {"ProjectName": "-casting"}, "projectName"),
    ("project-name-dot", {"ProjectName": "casting.v2"}, "regular expression pattern"),
    ("project-name-too-long", {"ProjectName": "p" * 256}, "less than or equal to 255"),
    ("model-version-zero", {"ModelVersion": "0"}, "modelVersion"),
    ("model-version-leading-zero", {"ModelVersion": "01"}, "modelVersion"),
    ("model-version-word", {"ModelVersion": "newest"}, "modelVersion"),
    ("model-version-too-long", {"ModelVersion": "12345678901"}, "less than or equal to 10"),
    ("model-version-missing", {"ModelVersion": MISSING}, "must not be null"),
    ("model-version-number", {"ModelVersion": 1}, "must be a string"),
    ("job-name-underscore", {"JobName": "nightly_1"}, "jobName"),
    ("job-name-empty", {"JobName": ""}, "greater than or equal to 1"),
    ("job-name-too-long", {"JobName": "j" * 65}, "less than or equal to 64"),
    ("job-name-boolean", {"JobName": True}, "must be a string"),
    ("description-empty", {"Description": ""}, "description"),
    ("description-too-long", {"Description": "d" * 257}, "less than or equal to 256"),
    ("description-bad-char", {"Description": "a<b>"}, "regular expression pattern"),
    ("client-token-space", {"ClientToken": "token 1"}, "clientToken"),
    ("client-token-too-long", {"ClientToken": "t" * 65}, "less than or equal to 64"),
    ("configuration-missing", {"Configuration": MISSING}, "'configuration'"),
    ("greengrass-missing", {"Configuration": {}}, "'configuration.greengrass'"),
    ("component-name-missing", {G + "ComponentName": MISSING}, "componentName"),
    ("component-name-empty", {G + "ComponentName": ""}, "greater than or equal to 1"),
    ("component-name-too-long", {G + "ComponentName": "c" * 129}, "less than or equal to 128"),
    ("component-name-space", {G + "ComponentName": "my component"}, "componentName"),
    ("component-name-list", {G + "ComponentName": ["x"]}, "must be a string"),
    ("component-version-two-parts", {G + "ComponentVersion": "1.0"}, "componentVersion"),
    ("component-version-four-parts", {G + "ComponentVersion": "1.0.0.0"}, "componentVersion"),
    ("component-version-seven-digits", {G + "ComponentVersion": "1234567.0.0"}, "componentVersion"),
    ("component-version-prefix", {G + "ComponentVersion": "v1.0.0"}, "componentVersion"),
    ("component-version-prerelease", {G + "ComponentVersion": "1.0.0-rc1"}, "componentVersion"),
    ("component-description-empty", {G + "ComponentDescription": ""}, "componentDescription"),
    ("component-description-long", {G + "ComponentDescription": "d" * 257}, "256"),
    ("component-description-tab", {G + "ComponentDescription": "a\tb"}, "componentDescription"),
    ("s3-location-missing", {G + "S3OutputLocation": MISSING}, "s3OutputLocation"),
    ("bucket-missing", {G + "S3OutputLocation": {"Prefix": "x"}}, "s3OutputLocation.bucket"),
    ("bucket-too-short", {G + "S3OutputLocation": {"Bucket": "ab"}}, "greater than or equal to 3"),
    ("bucket-too-long", {G + "S3OutputLocation": {"Bucket": "b" * 64}}, "less than or equal to 63"),
    ("bucket-slash", {G + "S3OutputLocation": {"Bucket": "a/b"}}, "s3OutputLocation.bucket"),
    (
        "prefix-leading-slash",
        {G + "S3OutputLocation": {"Bucket": BUCKET, "Prefix": "/x"}},
        "prefix",
    ),
    ("prefix-space", {G + "S3OutputLocation": {"Bucket": BUCKET, "Prefix": "a b"}}, "prefix"),
    ("prefix-too-long", {G + "S3OutputLocation": {"Bucket": BUCKET, "Prefix": "p" * 1025}}, "1024"),
    (
        "target-device-unknown",
        {G + "TargetPlatform": MISSING, G + "TargetDevice": "jetson_nano"},
        "enum value set: [jetson_xavier]",
    ),
    (
        "os-unknown",
        {G + "TargetPlatform": {"Os": "WINDOWS", "Arch": "X86_64"}},
        "targetPlatform.os",
    ),
    (
        "os-lowercase",
        {G + "TargetPlatform": {"Os": "linux", "Arch": "X86_64"}},
        "targetPlatform.os",
    ),
    (
        "arch-unknown",
        {G + "TargetPlatform": {"Os": "LINUX", "Arch": "ARM32"}},
        "targetPlatform.arch",
    ),
    (
        "accelerator-unknown",
        {G + "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "AMD"}},
        "targetPlatform.accelerator",
    ),
    ("os-missing", {G + "TargetPlatform": {"Arch": "X86_64"}}, "targetPlatform.os"),
    ("arch-missing", {G + "TargetPlatform": {"Os": "LINUX"}}, "targetPlatform.arch"),
    ("device-and-platform", {G + "TargetDevice": "jetson_xavier"}, "exactly one"),
    ("neither-device-nor-platform", {G + "TargetPlatform": MISSING}, "exactly one"),
    (
        "device-with-compiler-options",
        {
            G + "TargetPlatform": MISSING,
            G + "TargetDevice": "jetson_xavier",
            G + "CompilerOptions": '{"mcpu": "x"}',
        },
        "TargetDevice",
    ),
    (
        "nvidia-without-options",
        {G + "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}},
        "gpu-code",
    ),
    (
        "nvidia-without-cuda-ver",
        {
            G + "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
            G + "CompilerOptions": '{"gpu-code": "sm_72", "trt-ver": "7.1.3"}',
        },
        "cuda-ver",
    ),
    (
        "nvidia-empty-gpu-code",
        {
            G + "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
            G + "CompilerOptions": '{"gpu-code": "", "trt-ver": "7.1.3", "cuda-ver": "10.2"}',
        },
        "gpu-code",
    ),
    (
        "nvidia-options-not-json",
        {
            G + "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
            G + "CompilerOptions": "gpu-code=sm_72",
        },
        "JSON object",
    ),
    ("options-json-list", {G + "CompilerOptions": '["mcpu"]'}, "JSON object"),
    ("cpu-with-gpu-code", {G + "CompilerOptions": '{"gpu-code": "sm_75"}'}, "not valid"),
    ("compiler-options-too-short", {G + "CompilerOptions": "{}"}, "greater than or equal to 3"),
    (
        "compiler-options-too-long",
        {G + "CompilerOptions": '{"mcpu": "' + "x" * 1020 + '"}'},
        "less than or equal to 1024",
    ),
    (
        "tags-too-many",
        {G + "Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(201)]},
        "less than or equal to 200",
    ),
    ("tag-value-missing", {G + "Tags": [{"Key": "team"}]}, "tags.1.member.value"),
    ("tag-key-empty", {G + "Tags": [{"Key": "", "Value": "v"}]}, "tags.1.member.key"),
    ("tag-key-hash", {G + "Tags": [{"Key": "a#b", "Value": "v"}]}, "tags.1.member.key"),
    (
        "tag-key-too-long",
        {G + "Tags": [{"Key": "k" * 129, "Value": "v"}]},
        "less than or equal to 128",
    ),
    (
        "tag-value-too-long",
        {G + "Tags": [{"Key": "k", "Value": "v" * 257}]},
        "less than or equal to 256",
    ),
    (
        "bucket-does-not-exist",
        {G + "S3OutputLocation": {"Bucket": "no-such-bucket"}},
        "does not exist",
    ),
]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [pytest.param(c, f, id=i) for i, c, f in VALIDATION_CASES],
)
def test_start_job_validation(
    changes: dict[str, Any], fragment: str, loose_client: Any, lv: LookoutVisionEmulator
) -> None:
    """Each constraint of StartModelPackagingJob (lengths, patterns, enums, required
    members, JSON types, target/compiler-option rules, bucket existence) is enforced by
    the emulator with ValidationException (HTTP 400), and no job is created."""
    with pytest.raises(loose_client.exceptions.ValidationException) as caught:
        loose_client.start_model_packaging_job(**with_changes(changes))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert fragment in caught.value.response["Error"]["Message"]
    assert lv.jobs() == []


@pytest.mark.parametrize(
    "status",
    [
        "TRAINING",
        "TRAINING_FAILED",
        "STARTING_HOSTING",
        "HOSTING_FAILED",
        "STOPPING_HOSTING",
        "SYSTEM_UPDATING",
        "DELETING",
    ],
)
def test_only_trained_or_hosted_models_can_be_packaged(
    status: str, client: Any, lv: LookoutVisionEmulator
) -> None:
    """Packaging a model whose status is neither TRAINED nor HOSTED is a ValidationException."""
    lv.set_model_status(PROJECT, 1, status)
    with pytest.raises(client.exceptions.ValidationException, match=status):
        client.start_model_packaging_job(**start_kwargs())
    assert lv.jobs() == []


def test_latest_without_packageable_model(client: Any, lv: LookoutVisionEmulator) -> None:
    """``latest`` with models but none trained is a ValidationException; with no model
    at all it is ResourceNotFoundException (ResourceType MODEL)."""
    lv.set_model_status(PROJECT, 1, "TRAINING")
    with pytest.raises(client.exceptions.ValidationException):
        client.start_model_packaging_job(**start_kwargs(ModelVersion="latest"))
    lv.create_project(OTHER_PROJECT)
    with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
        client.start_model_packaging_job(
            **start_kwargs(ProjectName=OTHER_PROJECT, ModelVersion="latest")
        )
    assert caught.value.response["ResourceType"] == "MODEL"


@pytest.mark.parametrize(
    ("operation", "kwargs", "fragment"),
    [
        ("list_models", {"ProjectName": "bad.name"}, "projectName"),
        ("describe_model", {"ProjectName": PROJECT, "ModelVersion": "v1"}, "modelVersion"),
        ("describe_model_packaging_job", {"ProjectName": PROJECT, "JobName": "a_b"}, "jobName"),
        ("list_model_packaging_jobs", {"ProjectName": "p" * 256}, "255"),
        ("describe_project", {"ProjectName": "_x"}, "projectName"),
        ("list_models", {"ProjectName": PROJECT, "MaxResults": 0}, "greater than or equal to 1"),
        ("list_models", {"ProjectName": PROJECT, "MaxResults": 101}, "less than or equal to 100"),
        ("list_model_packaging_jobs", {"ProjectName": PROJECT, "MaxResults": 0}, "maxResults"),
        ("list_projects", {"MaxResults": 101}, "maxResults"),
        ("list_models", {"ProjectName": PROJECT, "NextToken": "not*a*token"}, "nextToken"),
        ("list_models", {"ProjectName": PROJECT, "NextToken": "t" * 2049}, "2048"),
        ("list_models", {"ProjectName": PROJECT, "NextToken": "AAAA"}, "pagination token"),
        (
            "list_model_packaging_jobs",
            {"ProjectName": PROJECT, "NextToken": "abc"},
            "pagination token",
        ),
    ],
    ids=[
        "list-models-project",
        "describe-model-version",
        "describe-job-name",
        "list-jobs-project-length",
        "describe-project-name",
        "list-models-max-0",
        "list-models-max-101",
        "list-jobs-max-0",
        "list-projects-max-101",
        "next-token-pattern",
        "next-token-length",
        "next-token-forged",
        "next-token-not-base64",
    ],
)
def test_read_operation_validation(
    operation: str, kwargs: dict[str, Any], fragment: str, loose_client: Any
) -> None:
    """Path parameters, MaxResults (1-100) and NextToken of the read operations are
    validated: ValidationException, HTTP 400."""
    with pytest.raises(loose_client.exceptions.ValidationException) as caught:
        getattr(loose_client, operation)(**kwargs)
    assert fragment in caught.value.response["Error"]["Message"]


# -- not found / conflicts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "kwargs"),
    [
        ("describe_project", {}),
        ("list_models", {}),
        ("describe_model", {"ModelVersion": "1"}),
        ("list_model_packaging_jobs", {}),
        ("describe_model_packaging_job", {"JobName": "nightly-1"}),
        (
            "start_model_packaging_job",
            {k: v for k, v in start_kwargs().items() if k != "ProjectName"},
        ),
    ],
)
def test_unknown_project_is_resource_not_found(
    operation: str, kwargs: dict[str, Any], client: Any
) -> None:
    """Every project-scoped operation answers ResourceNotFoundException (404) with
    ResourceId = project and ResourceType PROJECT for a project that does not exist."""
    with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
        getattr(client, operation)(ProjectName="no-such-project", **kwargs)
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert (response["ResourceId"], response["ResourceType"]) == ("no-such-project", "PROJECT")


def test_missing_model_and_job_are_resource_not_found(
    client: Any, lv: LookoutVisionEmulator
) -> None:
    """A missing model version (DescribeModel, StartModelPackagingJob) and a missing or
    other-project job (DescribeModelPackagingJob) are ResourceNotFoundException with
    ResourceType MODEL / MODEL_PACKAGE_JOB."""
    for call in (
        lambda: client.describe_model(ProjectName=PROJECT, ModelVersion="9"),
        lambda: client.start_model_packaging_job(**start_kwargs(ModelVersion="9")),
    ):
        with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
            call()
        assert caught.value.response["ResourceType"] == "MODEL"
    client.start_model_packaging_job(**start_kwargs())
    lv.create_project(OTHER_PROJECT)
    with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
        client.describe_model_packaging_job(ProjectName=OTHER_PROJECT, JobName="nightly-1")
    assert caught.value.response["ResourceType"] == "MODEL_PACKAGE_JOB"
    assert caught.value.response["ResourceId"] == "nightly-1"


def test_job_name_reuse_is_conflict(client: Any, lv: LookoutVisionEmulator) -> None:
    """A JobName already used (with another ClientToken) is ConflictException (409)."""
    client.start_model_packaging_job(**start_kwargs())
    with pytest.raises(client.exceptions.ConflictException) as caught:
        client.start_model_packaging_job(
            **with_changes({"ClientToken": "token-2", G + "ComponentVersion": "1.0.1"})
        )
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert (response["ResourceId"], response["ResourceType"]) == ("nightly-1", "MODEL_PACKAGE_JOB")
    assert len(lv.jobs()) == 1


def test_existing_component_version_is_conflict(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """A ComponentName + ComponentVersion already registered in Greengrass (here by an
    earlier packaging job) cannot be reused: ConflictException. A new version can."""
    client.start_model_packaging_job(**start_kwargs())
    advance(clock, world, lv.packaging_seconds)
    with pytest.raises(client.exceptions.ConflictException, match="already exists"):
        client.start_model_packaging_job(**start_kwargs(JobName="nightly-2", ClientToken="token-2"))
    client.start_model_packaging_job(
        **with_changes(
            {"JobName": "nightly-2", "ClientToken": "token-2", G + "ComponentVersion": "1.0.1"}
        )
    )
    assert [j.name for j in lv.jobs()] == ["nightly-1", "nightly-2"]


def test_component_registered_directly_in_greengrass_is_conflict(
    client: Any, lv: LookoutVisionEmulator, world: World
) -> None:
    """A component version created in Greengrass by someone else blocks packaging to
    that name+version."""
    greengrass = world.greengrass
    greengrass.register_component_version(
        {
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": COMPONENT,
            "ComponentVersion": "1.0.0",
            "Manifests": [{"Platform": {"os": "linux"}}],
        }
    )
    with pytest.raises(client.exceptions.ConflictException):
        client.start_model_packaging_job(**start_kwargs())


# -- ClientToken idempotency ------------------------------------------------------------


def test_client_token_same_input_returns_same_job(client: Any, lv: LookoutVisionEmulator) -> None:
    """Retrying with the same ClientToken and the same input returns the same JobName
    (even when the service generated it) and creates no second job."""
    kwargs = with_changes({"JobName": MISSING})
    first = client.start_model_packaging_job(**kwargs)["JobName"]
    second = client.start_model_packaging_job(**kwargs)["JobName"]
    assert first == second
    assert len(lv.jobs()) == 1


def test_client_token_different_input_is_conflict(client: Any, lv: LookoutVisionEmulator) -> None:
    """Reusing a ClientToken with different input is ConflictException; nothing changes."""
    client.start_model_packaging_job(**start_kwargs())
    with pytest.raises(client.exceptions.ConflictException) as caught:
        client.start_model_packaging_job(**start_kwargs(Description="something else"))
    assert caught.value.response["ResourceType"] == "MODEL_PACKAGE_JOB"
    with pytest.raises(client.exceptions.ConflictException):
        client.start_model_packaging_job(**start_kwargs(ProjectName=PROJECT, ModelVersion="latest"))
    assert len(lv.jobs()) == 1


def test_client_token_expires_after_eight_hours(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock
) -> None:
    """A ClientToken is active for 8 hours of (virtual) time: just before, different
    input still conflicts; after, the token is forgotten and the call is a new job."""
    kwargs = with_changes({"JobName": MISSING})
    first = client.start_model_packaging_job(**kwargs)["JobName"]
    changed = with_changes({"JobName": MISSING, G + "ComponentVersion": "1.0.1"})
    clock.advance(8 * HOUR - 1)
    with pytest.raises(client.exceptions.ConflictException):
        client.start_model_packaging_job(**changed)
    assert client.start_model_packaging_job(**kwargs)["JobName"] == first
    clock.advance(2)
    second = client.start_model_packaging_job(**changed)["JobName"]
    assert second != first
    assert [j.name for j in lv.jobs()] == [first, second]


def test_client_token_is_filled_in_by_botocore(client: Any, lv: LookoutVisionEmulator) -> None:
    """Without ClientToken botocore generates one per call (idempotencyToken), so two
    calls are two jobs."""
    first = client.start_model_packaging_job(
        **with_changes({"ClientToken": MISSING, "JobName": MISSING})
    )
    second = client.start_model_packaging_job(
        **with_changes(
            {"ClientToken": MISSING, "JobName": MISSING, G + "ComponentVersion": "1.0.1"}
        )
    )
    assert first["JobName"] != second["JobName"]
    assert len(lv.jobs()) == 2


# -- failures -------------------------------------------------------------------------------


def test_fail_jobs_makes_next_job_fail(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """``fail_jobs`` makes the next job end FAILED with the given StatusMessage and no
    output; the job after it succeeds (the component version is free again)."""
    lv.fail_jobs(times=1, message="Compilation failed: unsupported layer")
    client.start_model_packaging_job(**start_kwargs())
    advance(clock, world, lv.packaging_seconds)
    job = client.describe_model_packaging_job(ProjectName=PROJECT, JobName="nightly-1")[
        "ModelPackagingDescription"
    ]
    assert job["Status"] == "FAILED"
    assert job["StatusMessage"] == "Compilation failed: unsupported layer"
    assert "ModelPackagingOutputDetails" not in job
    listed = client.list_model_packaging_jobs(ProjectName=PROJECT)["ModelPackagingJobs"]
    assert listed[0]["StatusMessage"] == "Compilation failed: unsupported layer"
    assert "Contents" not in world.client("s3").list_objects_v2(Bucket=BUCKET)
    client.start_model_packaging_job(**start_kwargs(JobName="nightly-2", ClientToken="token-2"))
    advance(clock, world, lv.packaging_seconds)
    assert [j.status for j in lv.jobs()] == ["FAILED", "SUCCEEDED"]


def test_fail_jobs_scoped_to_a_project(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """``fail_jobs(project, times=2)`` fails the next two jobs of that project only."""
    lv.create_project(OTHER_PROJECT)
    lv.add_model(OTHER_PROJECT)
    lv.fail_jobs(OTHER_PROJECT, times=2, message="boom")
    client.start_model_packaging_job(**start_kwargs())
    for index in (1, 2, 3):
        client.start_model_packaging_job(
            **with_changes(
                {
                    "ProjectName": OTHER_PROJECT,
                    "JobName": f"other-{index}",
                    "ClientToken": f"other-{index}",
                    G + "ComponentName": "com.example.Other",
                    G + "ComponentVersion": f"{index}.0.0",
                }
            )
        )
    advance(clock, world, lv.packaging_seconds)
    assert [j.status for j in lv.jobs(PROJECT)] == ["SUCCEEDED"]
    assert [(j.status, j.status_message) for j in lv.jobs(OTHER_PROJECT)] == [
        ("FAILED", "boom"),
        ("FAILED", "boom"),
        ("SUCCEEDED", None),
    ]


def test_bucket_deleted_before_completion_fails_job(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """If the S3 output bucket is gone when packaging finishes, the job is FAILED with a
    StatusMessage naming the bucket."""
    client.start_model_packaging_job(**start_kwargs())
    world.client("s3").delete_bucket(Bucket=BUCKET)
    advance(clock, world, lv.packaging_seconds)
    job = client.describe_model_packaging_job(ProjectName=PROJECT, JobName="nightly-1")
    assert job["ModelPackagingDescription"]["Status"] == "FAILED"
    assert BUCKET in job["ModelPackagingDescription"]["StatusMessage"]


def test_model_deleted_before_completion_fails_job(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """A model version deleted while it is being packaged makes the job FAILED."""
    client.start_model_packaging_job(**start_kwargs())
    lv.delete_model(PROJECT, 1)
    advance(clock, world, lv.packaging_seconds)
    [job] = lv.jobs(PROJECT)
    assert job.status == "FAILED"
    assert job.status_message is not None and "no longer exists" in job.status_message


# -- every documented error is reachable ------------------------------------------------------


def _deny(world: World, lv: LookoutVisionEmulator, client: Any) -> None:
    lv.denied_operations.add("StartModelPackagingJob")


def _conflict(world: World, lv: LookoutVisionEmulator, client: Any) -> None:
    client.start_model_packaging_job(**start_kwargs(Description="first"))


def _internal(world: World, lv: LookoutVisionEmulator, client: Any) -> None:
    world.faults.inject("lookoutvision", "StartModelPackagingJob", "5xx", times=1)


def _not_found(world: World, lv: LookoutVisionEmulator, client: Any) -> None:
    lv.delete_model(PROJECT, 1)


def _quota(world: World, lv: LookoutVisionEmulator, client: Any) -> None:
    lv.max_active_jobs = 1
    client.start_model_packaging_job(
        **with_changes(
            {"JobName": "other", "ClientToken": "other", G + "ComponentVersion": "2.0.0"}
        )
    )


def _throttle(world: World, lv: LookoutVisionEmulator, client: Any) -> None:
    world.faults.inject("lookoutvision", "StartModelPackagingJob", "throttle", times=1)


def _invalid(world: World, lv: LookoutVisionEmulator, client: Any) -> None:
    world.client("s3").delete_bucket(Bucket=BUCKET)


@pytest.mark.parametrize(
    ("error", "status", "arrange"),
    [
        ("AccessDeniedException", 403, _deny),
        ("ConflictException", 409, _conflict),
        ("InternalServerException", 500, _internal),
        ("ResourceNotFoundException", 404, _not_found),
        ("ServiceQuotaExceededException", 402, _quota),
        ("ThrottlingException", 429, _throttle),
        ("ValidationException", 400, _invalid),
    ],
)
def test_every_documented_error_is_reachable(
    error: str,
    status: int,
    arrange: Callable[[World, LookoutVisionEmulator, Any], None],
    world: World,
    lv: LookoutVisionEmulator,
    client: Any,
) -> None:
    """Each error StartModelPackagingJob documents can be produced, reaches boto3 with
    its HTTP status and is raised as the modelled exception class."""
    arrange(world, lv, client)
    jobs_before = len(lv.jobs())
    with pytest.raises(getattr(client.exceptions, error)) as caught:
        client.start_model_packaging_job(**start_kwargs())
    response = caught.value.response
    assert response["Error"]["Code"] == error
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    if error == "ServiceQuotaExceededException":
        assert response["QuotaCode"] and response["ServiceCode"] == "lookoutvision"
    assert len(lv.jobs()) == jobs_before


def test_denied_read_operation_is_access_denied(client: Any, lv: LookoutVisionEmulator) -> None:
    """``denied_operations`` applies to any operation, e.g. ListModels -> 403."""
    lv.denied_operations.add("ListModels")
    with pytest.raises(client.exceptions.AccessDeniedException, match="lookoutvision:ListModels"):
        client.list_models(ProjectName=PROJECT)
    client.describe_model(ProjectName=PROJECT, ModelVersion="1")


# -- pagination ----------------------------------------------------------------------------


def test_list_models_pages_with_next_token(client: Any, lv: LookoutVisionEmulator) -> None:
    """ListModels honours MaxResults and NextToken; the official paginator walks all
    pages in version order."""
    for _ in range(6):
        lv.add_model(PROJECT)
    first = client.list_models(ProjectName=PROJECT, MaxResults=3)
    assert [m["ModelVersion"] for m in first["Models"]] == ["1", "2", "3"]
    second = client.list_models(ProjectName=PROJECT, MaxResults=3, NextToken=first["NextToken"])
    assert [m["ModelVersion"] for m in second["Models"]] == ["4", "5", "6"]
    third = client.list_models(ProjectName=PROJECT, MaxResults=3, NextToken=second["NextToken"])
    assert [m["ModelVersion"] for m in third["Models"]] == ["7"]
    assert "NextToken" not in third
    pages = client.get_paginator("list_models").paginate(
        ProjectName=PROJECT, PaginationConfig={"PageSize": 2}
    )
    assert [m["ModelVersion"] for page in pages for m in page["Models"]] == [
        str(v) for v in range(1, 8)
    ]


def test_list_jobs_paginator_and_token_scope(client: Any, lv: LookoutVisionEmulator) -> None:
    """ListModelPackagingJobs pages in creation order; a NextToken only works for the
    operation and project that issued it (else ValidationException)."""
    for index in range(5):
        client.start_model_packaging_job(
            **with_changes(
                {
                    "JobName": f"job-{index}",
                    "ClientToken": f"t-{index}",
                    G + "ComponentVersion": f"1.0.{index}",
                }
            )
        )
    pages = list(
        client.get_paginator("list_model_packaging_jobs").paginate(
            ProjectName=PROJECT, PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(p["ModelPackagingJobs"]) for p in pages] == [2, 2, 1]
    assert [j["JobName"] for p in pages for j in p["ModelPackagingJobs"]] == [
        f"job-{i}" for i in range(5)
    ]
    token = pages[0]["NextToken"]
    with pytest.raises(client.exceptions.ValidationException):
        client.list_models(ProjectName=PROJECT, NextToken=token)
    lv.create_project(OTHER_PROJECT)
    with pytest.raises(client.exceptions.ValidationException):
        client.list_model_packaging_jobs(ProjectName=OTHER_PROJECT, NextToken=token)


def test_list_projects_pages(client: Any, lv: LookoutVisionEmulator) -> None:
    """ListProjects pages with MaxResults/NextToken."""
    for index in range(4):
        lv.create_project(f"p{index}")
    first = client.list_projects(MaxResults=4)
    rest = client.list_projects(MaxResults=4, NextToken=first["NextToken"])
    names = [p["ProjectName"] for p in first["Projects"] + rest["Projects"]]
    assert names == [PROJECT, "p0", "p1", "p2", "p3"]
    assert "NextToken" not in rest


def test_list_models_is_eventually_consistent_when_configured(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock
) -> None:
    """With ``list_models_lag_seconds`` a new model is missing from ListModels for that
    long while DescribeModel already sees it."""
    lv.list_models_lag_seconds = 5
    clock.advance(10)
    lv.add_model(PROJECT)
    assert [m["ModelVersion"] for m in client.list_models(ProjectName=PROJECT)["Models"]] == ["1"]
    client.describe_model(ProjectName=PROJECT, ModelVersion="2")
    clock.advance(5)
    assert [m["ModelVersion"] for m in client.list_models(ProjectName=PROJECT)["Models"]] == [
        "1",
        "2",
    ]


# -- faults and quota ------------------------------------------------------------------------


def test_injected_throttling_survives_botocore_retries(
    world: World, lv: LookoutVisionEmulator, client: Any, no_backoff: None
) -> None:
    """``faults.inject(..., "throttle", times=10)`` on DescribeModelPackagingJob is seen
    by boto3 as ThrottlingException after its own retries (standard mode,
    ``max_attempts=2`` = two retries, so three requests reach the world)."""
    client.start_model_packaging_job(**start_kwargs())
    retrying = official_lookoutvision_client(
        world, config=Config(retries={"max_attempts": 2, "mode": "standard"})
    )
    world.faults.inject("lookoutvision", "DescribeModelPackagingJob", "throttle", times=10)
    world.calls.clear()
    with pytest.raises(retrying.exceptions.ThrottlingException) as caught:
        retrying.describe_model_packaging_job(ProjectName=PROJECT, JobName="nightly-1")
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert world.calls.counts("lookoutvision")["DescribeModelPackagingJob"] == 3


def test_account_quota_throttles_sixth_call_in_a_second(
    world: World, lv: LookoutVisionEmulator, client: Any, clock: VirtualClock
) -> None:
    """With ``faults.set_quota("lookoutvision", 5)`` five calls in one virtual second
    pass, the sixth is ThrottlingException (429), and a second later calls pass again."""
    world.faults.set_quota("lookoutvision", 5)
    for _ in range(5):
        client.list_models(ProjectName=PROJECT)
    with pytest.raises(client.exceptions.ThrottlingException) as caught:
        client.describe_model(ProjectName=PROJECT, ModelVersion="1")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    clock.advance(1)
    client.describe_model(ProjectName=PROJECT, ModelVersion="1")


# -- raw requests: bad bytes, unknown paths -----------------------------------------------------

_GOOD_BODY = {k: v for k, v in start_kwargs().items() if k not in ("ProjectName", "ClientToken")}


def _body(**changes: Any) -> bytes:
    body = copy.deepcopy(_GOOD_BODY)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = body
        for part in parents:
            node = node[part]
        node[leaf] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "status", "code"),
    [
        ("POST", JOBS_PATH, b'{"ModelVersion": "1",', {}, 400, "ValidationException"),
        ("POST", JOBS_PATH, b"\xff\xfe\x00garbage", {}, 400, "ValidationException"),
        ("POST", JOBS_PATH, b"[1, 2]", {}, 400, "ValidationException"),
        ("POST", JOBS_PATH, b"", {}, 400, "ValidationException"),
        ("POST", JOBS_PATH, b"null", {}, 400, "ValidationException"),
        ("POST", JOBS_PATH, _body(Configuration="greengrass"), {}, 400, "ValidationException"),
        ("POST", JOBS_PATH, _body(Configuration__Greengrass=[1]), {}, 400, "ValidationException"),
        (
            "POST",
            JOBS_PATH,
            _body(Configuration__Greengrass__Tags={"k": "v"}),
            {},
            400,
            "ValidationException",
        ),
        (
            "POST",
            JOBS_PATH,
            _body(Configuration__Greengrass__Tags=[None]),
            {},
            400,
            "ValidationException",
        ),
        (
            "POST",
            JOBS_PATH,
            _body(Configuration__Greengrass__Tags=["team"]),
            {},
            400,
            "ValidationException",
        ),
        (
            "POST",
            JOBS_PATH,
            _body(Configuration__Greengrass__S3OutputLocation=7),
            {},
            400,
            "ValidationException",
        ),
        (
            "POST",
            JOBS_PATH,
            _body(Configuration__Greengrass__TargetPlatform__Arch=64),
            {},
            400,
            "ValidationException",
        ),
        (
            "POST",
            JOBS_PATH,
            _body(Configuration__Greengrass__CompilerOptions={"mcpu": "x"}),
            {},
            400,
            "ValidationException",
        ),
        (
            "GET",
            f"/2020-11-20/projects/{PROJECT}/models",
            b"",
            {"maxResults": ["ten"]},
            400,
            "ValidationException",
        ),
        (
            "GET",
            f"/2020-11-20/projects/{PROJECT}/models",
            b"",
            {"maxResults": ["1e3"]},
            400,
            "ValidationException",
        ),
        (
            "GET",
            f"/2020-11-20/projects/{PROJECT}/models/%E2%9C%93",
            b"",
            {},
            400,
            "ValidationException",
        ),
        ("GET", "/2020-11-20/projects/a%2Fb/models", b"", {}, 400, "ValidationException"),
        ("GET", "/2020-11-20/nothing-here", b"", {}, 404, "UnknownOperationException"),
        ("DELETE", JOBS_PATH + "/nightly-1", b"", {}, 404, "UnknownOperationException"),
        ("PUT", JOBS_PATH, _body(), {}, 404, "UnknownOperationException"),
        ("GET", "/2019-01-01/projects", b"", {}, 404, "UnknownOperationException"),
    ],
    ids=[
        "truncated-json",
        "not-utf8",
        "json-array",
        "empty-body",
        "json-null",
        "configuration-string",
        "greengrass-list",
        "tags-object",
        "tags-null-member",
        "tags-string-member",
        "s3-location-number",
        "arch-number",
        "compiler-options-object",
        "max-results-word",
        "max-results-float",
        "model-version-unicode",
        "project-name-encoded-slash",
        "unknown-path",
        "unknown-method",
        "put-on-jobs",
        "other-api-version",
    ],
)
def test_malformed_requests_get_documented_errors(
    method: str,
    path: str,
    body: bytes,
    query: dict[str, list[str]],
    status: int,
    code: str,
    world: World,
    lv: LookoutVisionEmulator,
) -> None:
    """Malformed bytes, wrong JSON types and unknown paths/methods get a 400 or 404
    with an error code (never a 500) and change no state."""
    response = raw(world, method, path, body, query=query, headers={"X-Amzn-Client-Token": "raw-1"})
    assert (response.status, error_of(response)) == (status, code)
    assert response.headers["x-amzn-ErrorType"] == code
    assert lv.jobs() == []


def test_raw_valid_request_is_accepted(world: World, lv: LookoutVisionEmulator) -> None:
    """The raw-request helper itself is sound: the well-formed body of the table above
    is accepted (so the 400s there come from the one broken part)."""
    response = raw(world, "POST", JOBS_PATH, _body(), headers={"X-Amzn-Client-Token": "raw-1"})
    assert response.status == 200
    assert json.loads(response.body) == {"JobName": "nightly-1"}


# -- the project's own model serializes like the official one -----------------------------------


def _capture(client: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    def record(request: Any, **_: Any) -> None:
        body = request.body
        sent.append(
            {
                "method": request.method,
                "url": request.url,
                "headers": {
                    k.lower(): (v.decode() if isinstance(v, bytes) else v)
                    for k, v in request.headers.items()
                },
                "body": json.loads(body) if body else None,
            }
        )

    client.meta.events.register("before-send", record)
    return sent


def test_project_model_serializes_like_official(world: World, lv: LookoutVisionEmulator) -> None:
    """StartModelPackagingJob built from OUR model (agent/aws/data) sends the same
    method, URL, X-Amzn-Client-Token header, content type and JSON body as the official
    model, and both parse the Describe response identically."""
    official = official_lookoutvision_client(world)
    ours = project_lookoutvision_client(world)
    official_sent, our_sent = _capture(official), _capture(ours)
    kwargs = start_kwargs()
    assert official.start_model_packaging_job(**kwargs)["JobName"] == "nightly-1"
    assert ours.start_model_packaging_job(**kwargs)["JobName"] == "nightly-1"  # idempotent replay
    mine, theirs = our_sent[0], official_sent[0]
    assert mine["method"] == theirs["method"] == "POST"
    assert mine["url"] == theirs["url"]
    assert mine["url"].endswith(JOBS_PATH)
    assert (
        mine["headers"]["x-amzn-client-token"]
        == theirs["headers"]["x-amzn-client-token"]
        == "token-1"
    )
    assert mine["headers"]["content-type"] == theirs["headers"]["content-type"]
    assert mine["body"] == theirs["body"]
    assert "ClientToken" not in mine["body"] and "ProjectName" not in mine["body"]
    for name in ("describe_model_packaging_job", "list_model_packaging_jobs", "list_models"):
        args: dict[str, Any] = {"ProjectName": PROJECT}
        if name == "describe_model_packaging_job":
            args["JobName"] = "nightly-1"
        left = getattr(ours, name)(**args)
        right = getattr(official, name)(**args)
        left.pop("ResponseMetadata")
        right.pop("ResponseMetadata")
        assert left == right, name


def test_project_model_fills_in_client_token(world: World, lv: LookoutVisionEmulator) -> None:
    """Our model keeps the idempotencyToken trait: botocore sends a generated
    X-Amzn-Client-Token that satisfies the ClientToken pattern."""
    ours = project_lookoutvision_client(world)
    sent = _capture(ours)
    ours.start_model_packaging_job(**with_changes({"ClientToken": MISSING}))
    token = sent[0]["headers"]["x-amzn-client-token"]
    assert re.fullmatch(r"[a-zA-Z0-9-]{1,64}", token)


# -- control API ------------------------------------------------------------------------------


def test_control_api_models(client: Any, lv: LookoutVisionEmulator) -> None:
    """add_model auto-increments and never reuses a deleted version; an explicit
    version is honoured; set_model_status makes a model packageable; bad input raises."""
    assert lv.add_model(PROJECT, "TRAINING") == 2
    lv.delete_model(PROJECT, 2)
    assert lv.add_model(PROJECT) == 3
    assert lv.add_model(PROJECT, version=10, description="hand-picked") == 10
    assert lv.add_model(PROJECT) == 11
    listed = [m["ModelVersion"] for m in client.list_models(ProjectName=PROJECT)["Models"]]
    assert listed == ["1", "3", "10", "11"]
    lv.set_model_status(PROJECT, 11, "TRAINING")
    with pytest.raises(client.exceptions.ValidationException):
        client.start_model_packaging_job(**start_kwargs(ModelVersion="11"))
    lv.set_model_status(PROJECT, 11, "HOSTED")
    client.start_model_packaging_job(**start_kwargs(ModelVersion="11"))
    with pytest.raises(ValueError):
        lv.add_model(PROJECT, "READY")
    with pytest.raises(ValueError):
        lv.add_model(PROJECT, version=3)
    with pytest.raises(KeyError):
        lv.add_model("no-such-project")
    with pytest.raises(KeyError):
        lv.delete_model(PROJECT, 2)
    with pytest.raises(ValueError):
        lv.create_project(PROJECT)
    with pytest.raises(ValueError):
        lv.create_project("bad name")


def test_jobs_view_is_a_snapshot(client: Any, lv: LookoutVisionEmulator) -> None:
    """``jobs()`` returns copies: mutating them does not touch the emulator's state."""
    client.start_model_packaging_job(**start_kwargs())
    view = lv.jobs(PROJECT)[0]
    view.configuration["Greengrass"]["ComponentName"] = "changed"
    with pytest.raises(AttributeError):
        view.status = "SUCCEEDED"  # type: ignore[misc]
    assert lv.jobs(PROJECT)[0].component_name == COMPONENT
    assert lv.jobs("no-such-project") == []


def test_config_change_does_not_affect_started_jobs(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """A job keeps the durations it started with; later jobs use the new settings."""
    lv.packaging_seconds = 60
    lv.running_after_seconds = 10
    client.start_model_packaging_job(**start_kwargs())
    lv.packaging_seconds = 600
    advance(clock, world, 60)
    assert lv.jobs(PROJECT)[0].status == "SUCCEEDED"


def test_errors_are_parsed_with_modelled_fields(client: Any) -> None:
    """Modelled error members (ResourceId, ResourceType) reach boto3's error response;
    the ClientError carries the Code and Message."""
    with pytest.raises(ClientError) as caught:
        client.describe_model(ProjectName="ghost", ModelVersion="1")
    response = caught.value.response
    assert response["Error"]["Code"] == "ResourceNotFoundException"
    assert "ghost" in response["Error"]["Message"]
    assert response["ResourceType"] == "PROJECT"


def test_component_created_in_greengrass_during_packaging_fails_job(
    client: Any, lv: LookoutVisionEmulator, clock: VirtualClock, world: World
) -> None:
    """If the same component version appears in Greengrass while the job runs, the job
    ends FAILED instead of overwriting it."""
    greengrass = world.greengrass
    client.start_model_packaging_job(**start_kwargs())
    greengrass.register_component_version(
        {
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": COMPONENT,
            "ComponentVersion": "1.0.0",
        }
    )
    advance(clock, world, lv.packaging_seconds)
    [job] = lv.jobs(PROJECT)
    assert job.status == "FAILED"
    assert job.status_message is not None and "already exists" in job.status_message


def test_emulator_serves_and_validates_by_its_own_model(lv: LookoutVisionEmulator) -> None:
    """Every route of the emulator is an operation of the local world's own model
    (``localcloud/data``, checked shape by shape against the official one in
    tests/unit/test_service_model.py) with the same HTTP method and URI, and the
    model has no operation the emulator does not serve."""
    from localcloud import lookoutvision as emulator
    from localcloud.validation import service_model

    model = service_model("lookoutvision")
    routes = {route.operation: route for route in lv.router.routes}
    assert sorted(routes) == sorted(model.operation_names)
    for name, route in routes.items():
        http = model.operation_model(name).http
        assert (route.method, route.template) == (http["method"], http["requestUri"]), name
    assert tuple(model.shape_for("ModelStatus").enum) == emulator.MODEL_STATUSES
    assert tuple(model.shape_for("ModelPackagingJobStatus").enum) == emulator.JOB_STATUSES
