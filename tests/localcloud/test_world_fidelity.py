"""What AWS does that a lax local world would not: request ids, region and account
scoping, tags, timestamps, job-name scope, Greengrass rate quotas, and the IoT job
configuration of thing-group deployments.

Lookout for Vision is called through current botocore loaded with the OFFICIAL
2020-11-20 model (``tests.support.oracle``); Greengrass, IoT and STS through current
boto3. Time only moves with the virtual clock.
"""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localcloud.clock import VirtualClock
from localcloud.transport import world_client
from localcloud.world import World
from tests.support.oracle import official_lookoutvision_client

PROJECT = "casting-inspection"
BUCKET = "l4v-packages"
COMPONENT = "com.example.CastingDefects"
OTHER_REGION = "us-west-2"
OTHER_ACCOUNT = "111122223333"
ONE_ATTEMPT = Config(retries={"total_max_attempts": 1, "mode": "standard"})
SESSION = botocore.session.get_session()


@pytest.fixture(autouse=True)
def fresh_moto() -> None:
    """Empty moto's backends (things, groups, buckets, assumed roles) before each test."""
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()


def gg_client(world: World, **kwargs: Any) -> Any:
    """A real boto3 ``greengrassv2`` client answered in-process by ``world``."""
    return world_client(world, "greengrassv2", botocore_session=SESSION, **kwargs)


def lv_client(world: World, **kwargs: Any) -> Any:
    """The official-model Lookout for Vision client, one attempt per call."""
    kwargs.setdefault("config", ONE_ATTEMPT)
    return official_lookoutvision_client(world, **kwargs)


def seed_project(world: World) -> None:
    """A project with one TRAINED model and the output bucket, in the home region."""
    world.lookoutvision.create_project(PROJECT)
    world.lookoutvision.add_model(PROJECT)
    world.client("s3").create_bucket(Bucket=BUCKET)


def start_job(client: Any, **overrides: Any) -> str:
    kwargs: dict[str, Any] = {
        "ProjectName": PROJECT,
        "ModelVersion": "1",
        "JobName": "nightly-1",
        "Configuration": {
            "Greengrass": {
                "ComponentName": COMPONENT,
                "ComponentVersion": "1.0.0",
                "S3OutputLocation": {"Bucket": BUCKET, "Prefix": "models"},
                "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
            }
        },
    }
    kwargs.update(overrides)
    return str(client.start_model_packaging_job(**kwargs)["JobName"])


def other_account_credentials(world: World) -> dict[str, str]:
    """Keys of an STS session in another account (moto maps them to that account)."""
    answer = world_client(world, "sts").assume_role(
        RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/operator", RoleSessionName="operator"
    )["Credentials"]
    return {
        "aws_access_key_id": answer["AccessKeyId"],
        "aws_secret_access_key": answer["SecretAccessKey"],
        "aws_session_token": answer["SessionToken"],
    }


# -- 1: request ids -------------------------------------------------------------------------


def test_every_answer_carries_a_request_id(world: World) -> None:
    """Successes and errors of both emulators and of moto carry ``x-amzn-RequestId``, so
    botocore fills ``ResponseMetadata.RequestId`` (what a user gives AWS support); each
    id is new and the call log records the one the caller saw."""
    seed_project(world)
    lv = lv_client(world)
    gg = gg_client(world)
    seen = [
        lv.list_projects()["ResponseMetadata"]["RequestId"],
        gg.list_core_devices()["ResponseMetadata"]["RequestId"],
        world_client(world, "iot").list_things()["ResponseMetadata"]["RequestId"],
    ]
    with pytest.raises(ClientError) as lv_error:
        lv.describe_project(ProjectName="missing")
    with pytest.raises(ClientError) as gg_error:
        gg.get_deployment(deploymentId="missing")
    seen += [
        lv_error.value.response["ResponseMetadata"]["RequestId"],
        gg_error.value.response["ResponseMetadata"]["RequestId"],
    ]
    assert all(seen) and len(set(seen)) == len(seen)
    logged = {call.request_id for call in world.calls.calls}
    assert set(seen) <= logged


def test_unsigned_and_refused_requests_carry_a_request_id(world: World) -> None:
    """Even the front end's own refusals (no signature, unknown temporary key) carry one."""
    from localcloud.http import Headers, Request

    unsigned = world.dispatch(Request("GET", "/2020-11-20/projects", headers=Headers()))
    auth = (
        "AWS4-HMAC-SHA256 Credential=ASIAUNKNOWNKEY000000/20260101/us-east-1/greengrass/"
        "aws4_request, SignedHeaders=host, Signature=00"
    )
    refused = world.dispatch(
        Request("GET", "/greengrass/v2/coreDevices", headers=Headers({"authorization": auth}))
    )
    assert (unsigned.status, refused.status) == (403, 403)
    assert unsigned.headers["x-amzn-RequestId"] != refused.headers["x-amzn-RequestId"]


def test_agent_errors_carry_the_request_id(world: World) -> None:
    """The agent's translation of an AWS error keeps the request id, in ``request_id``
    and in the message that its logs and status events carry."""
    from agent import errors
    from agent.aws.translate import call

    seed_project(world)
    lv = lv_client(world)
    with pytest.raises(errors.NotFoundError) as caught:
        call("DescribeProject", lambda: lv.describe_project(ProjectName="missing"))
    request_id = caught.value.request_id
    assert request_id and request_id == world.calls.calls[-1].request_id
    assert f"(RequestId: {request_id})" in caught.value.message
    assert caught.value.code == "ResourceNotFoundException"


# -- 2: region and account scoping -------------------------------------------------------------


def test_resources_belong_to_the_region_of_the_request(world: World) -> None:
    """A project, model and component made in us-east-1 do not exist for a client in
    us-west-2 (404 like moto's IoT says for the thing), and what is made in us-west-2
    has us-west-2 ARNs and stays invisible from us-east-1."""
    seed_project(world)
    world.greengrass.add_core_device("edge-1")
    west_lv = lv_client(world, region_name=OTHER_REGION)
    west_gg = gg_client(world, region_name=OTHER_REGION)
    with pytest.raises(ClientError) as missing:
        west_lv.describe_project(ProjectName=PROJECT)
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert west_lv.list_projects()["Projects"] == []
    with pytest.raises(ClientError) as no_device:
        west_gg.get_core_device(coreDeviceThingName="edge-1")
    assert no_device.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as no_thing:
        world_client(world, "iot", region_name=OTHER_REGION).describe_thing(thingName="edge-1")
    assert no_thing.value.response["Error"]["Code"] == "ResourceNotFoundException"

    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.West",
        "ComponentVersion": "1.0.0",
    }
    created = west_gg.create_component_version(inlineRecipe=json.dumps(recipe).encode())
    assert created["arn"].startswith(f"arn:aws:greengrass:{OTHER_REGION}:{world.account_id}:")
    assert not world.greengrass.component_version_exists("com.example.West", "1.0.0")
    world.scope(world.account_id, OTHER_REGION).lookoutvision.create_project("west-project")
    west = west_lv.describe_project(ProjectName="west-project")["ProjectDescription"]
    assert west["ProjectArn"].startswith(f"arn:aws:lookoutvision:{OTHER_REGION}:")
    assert [p["ProjectName"] for p in lv_client(world).list_projects()["Projects"]] == [PROJECT]
    # Public components exist in every region, with that region in their ARN.
    nucleus = "aws.greengrass.Nucleus"
    listed = west_gg.list_component_versions(
        arn=f"arn:aws:greengrass:{OTHER_REGION}:aws:components:{nucleus}"
    )["componentVersions"]
    assert listed and listed[0]["arn"].startswith(f"arn:aws:greengrass:{OTHER_REGION}:aws:")


def test_resources_belong_to_the_account_of_the_access_key(world: World) -> None:
    """Keys moto issued in another account (an STS session) see that account's state:
    not the home account's project or devices, and their own ARNs carry their account."""
    seed_project(world)
    world.greengrass.add_core_device("edge-1")
    keys = other_account_credentials(world)
    other_lv = lv_client(world, **keys)
    other_gg = gg_client(world, **keys)
    assert other_lv.list_projects()["Projects"] == []
    assert other_gg.list_core_devices()["coreDevices"] == []
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Other",
        "ComponentVersion": "1.0.0",
    }
    created = other_gg.create_component_version(inlineRecipe=json.dumps(recipe).encode())
    assert f":{OTHER_ACCOUNT}:components:" in created["arn"]
    assert not world.greengrass.component_version_exists("com.example.Other", "1.0.0")
    # A home-account thing ARN is another account's resource for these keys.
    thing_arn = world.client("iot").describe_thing(thingName="edge-1")["thingArn"]
    with pytest.raises(ClientError) as foreign:
        other_gg.create_deployment(
            targetArn=thing_arn, components={"com.example.Other": {"componentVersion": "1.0.0"}}
        )
    assert foreign.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_agent_configured_for_another_region_finds_nothing(world: World, tmp_path: Any) -> None:
    """An agent whose configuration names us-west-2 while its project lives in us-east-1
    fails its check with NotFoundError (as it would on AWS) and starts no rollout; the
    error it records carries the RequestId."""
    from tests.support import agentworld as aw

    aw.seed(world)
    aw.add_device(world, "dev-1")
    wrong = aw.reconciler(world, "dev-1", tmp_path, region=OTHER_REGION)
    wrong.step()
    error = wrong.ledger.facts().last_error
    assert error is not None and error.type == "NotFoundError"
    assert "(RequestId: " in error.message
    assert wrong.ledger.active_rollout() is None
    assert world.lookoutvision.jobs() == []
    right = aw.reconciler(world, "dev-1", tmp_path / "right")
    right.step()
    assert right.ledger.facts().last_error is None
    assert right.ledger.active_rollout() is not None


def test_packaging_in_another_region_registers_the_component_there(world: World) -> None:
    """A job in us-west-2 needs an output bucket in us-west-2 (a us-east-1 bucket is a
    ValidationException), and registers its component in us-west-2: the component's ARN
    names that region and us-east-1's registry does not have it."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    west = world.scope(world.account_id, OTHER_REGION)
    west.lookoutvision.create_project(PROJECT)
    west.lookoutvision.add_model(PROJECT)
    world.client("s3").create_bucket(Bucket=BUCKET)
    west_lv = lv_client(world, region_name=OTHER_REGION)
    with pytest.raises(ClientError) as wrong_region:
        start_job(west_lv)
    assert wrong_region.value.response["Error"]["Code"] == "ValidationException"
    assert "us-west-2" in wrong_region.value.response["Error"]["Message"]
    west.client("s3").create_bucket(
        Bucket="l4v-packages-west", CreateBucketConfiguration={"LocationConstraint": OTHER_REGION}
    )
    location = {"Bucket": "l4v-packages-west", "Prefix": "models"}
    configuration = {
        "Greengrass": {
            "ComponentName": COMPONENT,
            "ComponentVersion": "1.0.0",
            "S3OutputLocation": location,
            "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
        }
    }
    name = start_job(west_lv, Configuration=configuration)
    clock.advance(west.lookoutvision.packaging_seconds)
    described = west_lv.describe_model_packaging_job(ProjectName=PROJECT, JobName=name)
    output = described["ModelPackagingDescription"]["ModelPackagingOutputDetails"]["Greengrass"]
    assert output["ComponentVersionArn"].startswith(f"arn:aws:greengrass:{OTHER_REGION}:")
    assert west.greengrass.component_version_exists(COMPONENT, "1.0.0")
    assert not world.greengrass.component_version_exists(COMPONENT, "1.0.0")



def sm_client(world: World, **kwargs: Any) -> Any:
    """A real boto3 ``sagemaker`` client answered in-process by ``world``, one attempt."""
    kwargs.setdefault("config", ONE_ATTEMPT)
    return world_client(world, "sagemaker", botocore_session=SESSION, **kwargs)


def test_sagemaker_registry_and_jobs_belong_to_the_region_and_account(world: World) -> None:
    """A model package group made in us-west-2 has us-west-2 ARNs and is empty for a
    us-east-1 client and for another account's keys; a compilation job made in us-west-2
    (with a us-west-2 bucket) has a us-west-2 ARN, completes there and is not found from
    us-east-1."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    west = world.scope(world.account_id, OTHER_REGION)
    west.sagemaker.create_model_package_group("defects")
    version = west.sagemaker.add_model_package("defects", approval="Approved")
    west_arn = west.sagemaker.package_arn("defects", version)
    assert west_arn.startswith(f"arn:aws:sagemaker:{OTHER_REGION}:{world.account_id}:")
    query = {"ModelPackageGroupName": "defects", "ModelApprovalStatus": "Approved"}
    west_sm = sm_client(world, region_name=OTHER_REGION)
    listed = west_sm.list_model_packages(**query)["ModelPackageSummaryList"]
    assert [p["ModelPackageArn"] for p in listed] == [west_arn]
    assert sm_client(world).list_model_packages(**query)["ModelPackageSummaryList"] == []
    other = sm_client(world, **other_account_credentials(world))
    assert other.list_model_packages(**query)["ModelPackageSummaryList"] == []
    with pytest.raises(ClientError) as foreign:
        other.describe_model_package(ModelPackageName=west_arn)
    assert foreign.value.response["Error"]["Code"] == "ValidationException"

    role = west.sagemaker.create_execution_role()
    west.client("s3").create_bucket(
        Bucket="neo-west", CreateBucketConfiguration={"LocationConstraint": OTHER_REGION}
    )
    job = {
        "CompilationJobName": "defects-1-x86",
        "RoleArn": role,
        "ModelPackageVersionArn": west_arn,
        "OutputConfig": {
            "S3OutputLocation": "s3://neo-west/neo",
            "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }
    created = west_sm.create_compilation_job(**job)["CompilationJobArn"]
    assert created.startswith(f"arn:aws:sagemaker:{OTHER_REGION}:")
    clock.advance(west.sagemaker.compile_seconds)
    done = west_sm.describe_compilation_job(CompilationJobName="defects-1-x86")
    assert done["CompilationJobStatus"] == "COMPLETED"
    with pytest.raises(ClientError) as elsewhere:
        sm_client(world).describe_compilation_job(CompilationJobName="defects-1-x86")
    assert elsewhere.value.response["Error"]["Code"] == "ResourceNotFound"
    assert world.sagemaker.jobs() == []


# -- 3 and 8: the registered component: tags and creation time -------------------------------


def test_job_tags_and_completion_time_reach_the_component(world: World) -> None:
    """The Tags of StartModelPackagingJob (Configuration.Greengrass.Tags) are attached to the Greengrass component the
    job registers, and the component is created when the job completed on the world
    clock, even when nobody asks until an hour later: its creationTimestamp equals the
    job's LastUpdatedTimestamp, not the time of the first request afterwards."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    seed_project(world)
    lv = lv_client(world)
    configuration = {
        "Greengrass": {
            "ComponentName": COMPONENT,
            "S3OutputLocation": {"Bucket": BUCKET},
            "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
            "Tags": [{"Key": "team", "Value": "vision"}, {"Key": "line", "Value": "casting-3"}],
        }
    }
    name = start_job(lv, Configuration=configuration)
    clock.advance(world.lookoutvision.packaging_seconds + 3600)
    job = lv.describe_model_packaging_job(ProjectName=PROJECT, JobName=name)
    description = job["ModelPackagingDescription"]
    arn = description["ModelPackagingOutputDetails"]["Greengrass"]["ComponentVersionArn"]
    component = gg_client(world).describe_component(arn=arn)
    assert component["tags"] == {"team": "vision", "line": "casting-3"}
    assert component["creationTimestamp"] == description["LastUpdatedTimestamp"]
    assert description["CreationTimestamp"] < component["creationTimestamp"]


def test_job_without_tags_registers_an_untagged_component(world: World) -> None:
    """No Tags in the request: the component has none either (no empty map on the wire)."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    seed_project(world)
    lv = lv_client(world)
    name = start_job(lv)
    clock.advance(world.lookoutvision.packaging_seconds)
    job = lv.describe_model_packaging_job(ProjectName=PROJECT, JobName=name)
    arn = job["ModelPackagingDescription"]["ModelPackagingOutputDetails"]["Greengrass"][
        "ComponentVersionArn"
    ]
    assert "tags" not in gg_client(world).describe_component(arn=arn)


# -- job names: unique per project -----------------------------------------------------------


def test_job_names_are_unique_per_project(world: World) -> None:
    """A JobName used in one project can be used in another, and each project describes
    and lists its own job under that name; reusing it in the same project is a conflict."""
    seed_project(world)
    world.lookoutvision.create_project("second-line")
    world.lookoutvision.add_model("second-line")
    lv = lv_client(world)
    start_job(lv)
    second = {
        "Greengrass": {
            "ComponentName": "com.example.SecondLine",
            "S3OutputLocation": {"Bucket": BUCKET},
            "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"},
        }
    }
    assert start_job(lv, ProjectName="second-line", Configuration=second) == "nightly-1"
    for project, component in ((PROJECT, COMPONENT), ("second-line", "com.example.SecondLine")):
        described = lv.describe_model_packaging_job(ProjectName=project, JobName="nightly-1")
        configuration = described["ModelPackagingDescription"]["ModelPackagingConfiguration"]
        assert configuration["Greengrass"]["ComponentName"] == component
        listed = lv.list_model_packaging_jobs(ProjectName=project)["ModelPackagingJobs"]
        assert [(j["JobName"], j["ProjectName"]) for j in listed] == [("nightly-1", project)]
    with pytest.raises(ClientError) as again:
        start_job(lv, Configuration=second, ProjectName="second-line")
    assert again.value.response["Error"]["Code"] == "ConflictException"
    assert again.value.response["ResourceId"] == "nightly-1"


# -- 7: one nucleus version -------------------------------------------------------------------


def test_component_environment_and_core_device_agree_on_the_nucleus_version(
    world: World, tmp_path: Any
) -> None:
    """GGC_VERSION given to components is the version of the Nucleus the core device runs:
    the same as GetCoreDevice's coreVersion and the public Nucleus component's version."""
    from localcloud.nucleus import Nucleus

    device = world.greengrass.add_core_device("edge-1")
    nucleus = Nucleus(device, world.iotcore, tmp_path / "ipc.sock")
    env = nucleus.component_env("com.example.App")
    core = gg_client(world).get_core_device(coreDeviceThingName="edge-1")
    listed = gg_client(world).list_component_versions(
        arn=f"arn:aws:greengrass:{world.region}:aws:components:aws.greengrass.Nucleus"
    )["componentVersions"]
    assert env["GGC_VERSION"] == core["coreVersion"] == listed[0]["componentVersion"]


# -- 5: Greengrass request-rate quotas ---------------------------------------------------------


def test_greengrass_control_plane_quota_is_shared_by_operations_per_account(world: World) -> None:
    """The documented quota: 30 control-plane requests/s per account and Region, all
    operations but CreateComponentVersion combined. After 20 DescribeComponent and 10
    ListCoreDevices within one second of world time, a GetCoreDevice is
    ThrottlingException (429) with the quota's label, serviceCode and retryAfterSeconds,
    while another Region and another account still pass; a second later it passes."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    world.greengrass.add_core_device("edge-1")
    gg = gg_client(world, config=ONE_ATTEMPT)
    arn = f"arn:aws:greengrass:{world.region}:aws:components:aws.greengrass.Nucleus:versions:2.14.3"
    for _ in range(20):
        gg.describe_component(arn=arn)
    for _ in range(10):
        gg.list_core_devices()
    with pytest.raises(gg.exceptions.ThrottlingException) as throttled:
        gg.get_core_device(coreDeviceThingName="edge-1")
    answer = throttled.value.response
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert answer["quotaCode"] == "control-plane-requests-per-second"
    assert answer["serviceCode"] == "greengrass"
    assert answer["retryAfterSeconds"] == 1
    assert answer["ResponseMetadata"]["RequestId"]
    west_arn = arn.replace(world.region, OTHER_REGION)
    gg_client(world, config=ONE_ATTEMPT, region_name=OTHER_REGION).describe_component(arn=west_arn)
    gg_client(world, config=ONE_ATTEMPT, **other_account_credentials(world)).describe_component(
        arn=arn
    )
    clock.advance(1.0)
    gg.get_core_device(coreDeviceThingName="edge-1")


def test_create_component_version_has_its_own_one_per_second_quota(world: World) -> None:
    """CreateComponentVersion: 1 request/s per account and Region, outside the shared
    30/s. The second one within a second is throttled with its own quota label while
    reads still pass; a second later it passes."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    gg = gg_client(world, config=ONE_ATTEMPT)

    def recipe(version: str) -> bytes:
        return json.dumps({
            "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Quota",
            "ComponentVersion": version,
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"run": "true"}}],
        }).encode()

    gg.create_component_version(inlineRecipe=recipe("1.0.0"))
    with pytest.raises(gg.exceptions.ThrottlingException) as throttled:
        gg.create_component_version(inlineRecipe=recipe("1.0.1"))
    assert throttled.value.response["quotaCode"] == "CreateComponentVersion-requests-per-second"
    gg.list_core_devices()  # the shared quota is another bucket
    clock.advance(1.0)
    gg.create_component_version(inlineRecipe=recipe("1.0.1"))


def test_greengrass_rate_quotas_are_configurable(world: World) -> None:
    """``rate_quotas`` gives an operation its own requests/s (None: unlimited) for one
    account and Region, outside the shared quota; botocore's retries at the same instant
    of world time are throttled too."""
    gg = gg_client(world, config=ONE_ATTEMPT)
    world.greengrass.rate_quotas["ListCoreDevices"] = 2
    world.greengrass.rate_quotas["DescribeComponent"] = None
    gg.list_core_devices()
    gg.list_core_devices()
    with pytest.raises(gg.exceptions.ThrottlingException):
        gg.list_core_devices()
    arn = f"arn:aws:greengrass:{world.region}:aws:components:aws.greengrass.Nucleus:versions:2.14.3"
    for _ in range(100):
        gg.describe_component(arn=arn)
    retrying = gg_client(world, config=Config(retries={"total_max_attempts": 3, "mode": "standard"}))
    from botocore.retries import standard

    original = standard.ExponentialBackoff.delay_amount
    standard.ExponentialBackoff.delay_amount = lambda self, context: 0.0  # type: ignore[method-assign]
    try:
        with pytest.raises(retrying.exceptions.ThrottlingException) as caught:
            retrying.list_core_devices()
    finally:
        standard.ExponentialBackoff.delay_amount = original  # type: ignore[method-assign]
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2


# -- 6: iotJobConfiguration of thing-group deployments ------------------------------------------


APP = "com.example.App"


def _group_of_devices(world: World, count: int, group: str = "line-3") -> tuple[Any, str]:
    """``count`` core devices in one thing group and a deployable component; the client
    and the group's ARN."""
    gg = gg_client(world, config=ONE_ATTEMPT)
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": APP,
        "ComponentVersion": "1.0.0",
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "app"}}],
    }
    gg.create_component_version(inlineRecipe=json.dumps(recipe).encode())
    for index in range(count):
        world.greengrass.add_core_device(f"dev-{index:02d}", thing_groups=[group])
    arn = world.client("iot").describe_thing_group(thingGroupName=group)["thingGroupArn"]
    return gg, arn


def _execution_statuses(gg: Any, count: int, deployment_id: str) -> list[str | None]:
    """Each device's execution status of ``deployment_id`` (None: never notified)."""
    out: list[str | None] = []
    for index in range(count):
        found = [
            e["coreDeviceExecutionStatus"]
            for e in gg.list_effective_deployments(coreDeviceThingName=f"dev-{index:02d}")[
                "effectiveDeployments"
            ]
            if e["deploymentId"] == deployment_id
        ]
        out.append(found[0] if found else None)
    return out


def test_staged_rollout_aborts_after_failures(world: World) -> None:
    """A thing-group deployment with maximumPerMinute 2 reaches two devices a minute on the
    world clock; when 3 executions have finished and at least 50 % of them FAILED, the
    abortConfig cancels the deployment: it is CANCELED, the device still applying it is
    CANCELED with the abort reason, and the devices not yet notified never receive it."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    gg, group_arn = _group_of_devices(world, 8)
    world.greengrass.fail_install(APP, times=100)
    deployment_id = gg.create_deployment(
        targetArn=group_arn,
        components={APP: {"componentVersion": "1.0.0"}},
        iotJobConfiguration={
            "jobExecutionsRolloutConfig": {"maximumPerMinute": 2},
            "abortConfig": {
                "criteriaList": [
                    {
                        "failureType": "FAILED",
                        "action": "CANCEL",
                        "thresholdPercentage": 50.0,
                        "minNumberOfExecutedThings": 3,
                    }
                ]
            },
        },
    )["deploymentId"]
    clock.advance(30)  # first batch installed (20 s) and failed; 2 of 3 needed to judge
    statuses = _execution_statuses(gg, 8, deployment_id)
    assert sorted(s or "-" for s in statuses) == ["-"] * 6 + ["FAILED", "FAILED"]
    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "ACTIVE"
    clock.advance(60)  # second batch at 60 s, finished at 80 s: the third failure aborts
    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "CANCELED"
    statuses = _execution_statuses(gg, 8, deployment_id)
    assert sorted(s or "-" for s in statuses) == ["-"] * 4 + ["CANCELED"] + ["FAILED"] * 3
    clock.advance(600)
    assert _execution_statuses(gg, 8, deployment_id).count(None) == 4
    canceled = [
        e
        for index in range(8)
        for e in gg.list_effective_deployments(coreDeviceThingName=f"dev-{index:02d}")[
            "effectiveDeployments"
        ]
        if e["coreDeviceExecutionStatus"] == "CANCELED"
    ]
    assert canceled[0]["reason"].startswith("Deployment aborted: 3 of 3 executions FAILED")


def test_exponential_rollout_grows_the_batches(world: World) -> None:
    """exponentialRate: base 1 thing a minute, doubled each time a batch's notified
    things reach the criterion; devices that join the group during the rollout wait for
    their turn; every device ends up RUNNING the component."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    gg, group_arn = _group_of_devices(world, 6)
    deployment_id = gg.create_deployment(
        targetArn=group_arn,
        components={APP: {"componentVersion": "1.0.0"}},
        iotJobConfiguration={
            "jobExecutionsRolloutConfig": {
                "exponentialRate": {
                    "baseRatePerMinute": 1,
                    "incrementFactor": 2.0,
                    "rateIncreaseCriteria": {"numberOfNotifiedThings": 1},
                }
            }
        },
    )["deploymentId"]
    notified = []
    for _ in range(4):
        notified.append(sum(s is not None for s in _execution_statuses(gg, 6, deployment_id)))
        clock.advance(60)
    assert notified == [1, 3, 6, 6]  # batches of 1, 2, 4 (capped by what is left)
    world.greengrass.add_core_device("dev-06", thing_groups=["line-3"])
    clock.advance(60)
    assert _execution_statuses(gg, 7, deployment_id) == ["SUCCEEDED"] * 7
    assert all(d.states([APP]) == {APP: "RUNNING"} for d in world.greengrass.devices.values())


def test_execution_times_out_after_the_job_timeout(world: World) -> None:
    """timeoutConfig: an execution still IN_PROGRESS after inProgressTimeoutInMinutes is
    TIMED_OUT and applies nothing; a thing deployment then FAILED."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    gg, _group_arn = _group_of_devices(world, 1)
    world.greengrass.install_seconds = 900.0
    thing_arn = world.client("iot").describe_thing(thingName="dev-00")["thingArn"]
    deployment_id = gg.create_deployment(
        targetArn=thing_arn,
        components={APP: {"componentVersion": "1.0.0"}},
        iotJobConfiguration={"timeoutConfig": {"inProgressTimeoutInMinutes": 5}},
    )["deploymentId"]
    clock.advance(299)
    assert _execution_statuses(gg, 1, deployment_id) == ["IN_PROGRESS"]
    clock.advance(1)
    assert _execution_statuses(gg, 1, deployment_id) == ["TIMED_OUT"]
    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "FAILED"
    assert APP not in world.greengrass.devices["dev-00"].states()


def test_lookout_for_vision_account_quota_is_per_account_with_modelled_fields(
    world: World,
) -> None:
    """The Lookout for Vision requests/s quota counts each account separately, and its
    ThrottlingException carries the official model's QuotaCode, ServiceCode and
    RetryAfterSeconds."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    seed_project(world)
    world.faults.set_quota("lookoutvision", 5)
    lv = lv_client(world)
    for _ in range(5):
        lv.list_projects()
    with pytest.raises(lv.exceptions.ThrottlingException) as caught:
        lv.list_projects()
    answer = caught.value.response
    assert (answer["QuotaCode"], answer["ServiceCode"], answer["RetryAfterSeconds"]) == (
        "account-requests-per-second",
        "lookoutvision",
        1,
    )
    assert lv_client(world, **other_account_credentials(world)).list_projects()["Projects"] == []
    clock.advance(1)
    lv.list_projects()
