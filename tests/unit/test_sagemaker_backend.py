"""The SageMaker backend's pure parts: configuration rules, the derived request (names
within Neo's limits, deterministic), the component recipe, and decider platforms for Neo
targets Lookout for Vision cannot express."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from agent.aws.sagemaker import (
    CompilationRequest,
    SageMakerRequests,
    decider_platform,
    model_component_recipe,
    neo_job_name,
    neo_report,
    recipe_bytes,
)
from agent.config import load_config
from agent.errors import ConfigurationError
from agent.platform.neo import NeoPlatform
from agent.reconciler import settings_from_config
from localcloud.sagemaker import service_model

ROLE = "arn:aws:iam::123456789012:role/Neo"
BASE = {"thingName": "dev-1", "region": "us-east-1"}
RASP4B = NeoPlatform(target_device="rasp4b", description="Raspberry Pi 4")
X86 = NeoPlatform(os="LINUX", arch="X86_64", compiler_options={"mcpu": "core-avx2"}, description="x86")


def sagemaker(**block: Any) -> dict[str, Any]:
    values = {"modelPackageGroupName": "defects", "roleArn": ROLE, "s3OutputLocation": "s3://neo-out/m"}
    values.update(block)
    return {**BASE, "packaging": {"backend": "sagemaker"}, "sagemaker": values}


def test_group_and_output_bucket_fill_project_and_bucket() -> None:
    """With the SageMaker backend projectName and s3Bucket may be left out: they are the
    group and the bucket of s3OutputLocation; approval and stopping condition default."""
    config = load_config(overrides=sagemaker())
    assert (config.project_name, config.s3_bucket) == ("defects", "neo-out")
    assert config.sagemaker.approval_status == "Approved"
    assert config.sagemaker.stopping_condition.max_runtime_in_seconds == 900
    assert config.packaging.backend == "sagemaker"
    assert load_config(overrides={**BASE, "projectName": "p", "s3Bucket": "bkt"}).packaging.backend == (
        "lookoutvision"
    )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({**BASE, "packaging": {"backend": "sagemaker"}}, "sagemaker.modelPackageGroupName"),
        (sagemaker(roleArn=""), "sagemaker.roleArn"),
        (sagemaker(roleArn="Neo"), "sagemaker.roleArn"),
        (sagemaker(s3OutputLocation="neo-out/m"), "sagemaker.s3OutputLocation"),
        (sagemaker(modelPackageGroupName="bad_name"), "sagemaker.modelPackageGroupName"),
        (sagemaker(approvalStatus="Yes"), "sagemaker.approvalStatus"),
        (sagemaker(stoppingCondition={"maxRuntimeInSeconds": 0}), "sagemaker.stoppingCondition"),
        ({**sagemaker(), "projectName": "other"}, "projectName"),
        ({**sagemaker(), "s3Bucket": "other-bucket"}, "s3Bucket"),
        ({**BASE, "projectName": "p", "s3Bucket": "bkt", "packaging": {"backend": "neo"}}, "packaging.backend"),
    ],
)
def test_bad_sagemaker_settings_name_the_field(overrides: dict[str, Any], named: str) -> None:
    """Each invalid or missing SageMaker setting stops the start with a line naming it."""
    with pytest.raises(ConfigurationError) as error:
        load_config(overrides=overrides)
    assert named in str(error.value)


def test_request_is_deterministic_and_fits_neo() -> None:
    """Two devices derive the same request (job name, token, component); a long group
    name still gives a job name within Neo's pattern and 63 characters, distinct per
    attempt; the output is s3OutputLocation + the rendered s3Prefix."""
    config = load_config(overrides=sagemaker(modelPackageGroupName="g" * 63))
    settings = settings_from_config(config)
    derive = SageMakerRequests(config.sagemaker, X86)
    platform = decider_platform(X86)
    first = derive(settings, platform, 3, 1)
    assert first == derive(settings, platform, 3, 1)
    second = derive(settings, platform, 3, 2)
    pattern = service_model().shape_for("EntityName").metadata["pattern"]
    for request in (first, second):
        assert re.fullmatch(pattern, request.job_name) and len(request.job_name) <= 63
    assert first.job_name != second.job_name
    assert first.component_name == second.component_name == "g" * 63 + ".x86-64-cpu"
    assert first.component_version == "3.0.0"
    assert first.output_config["S3OutputLocation"] == (
        f"s3://neo-out/m/l4v-edge-agent/{'g' * 63}/x86-64-cpu"
    )
    assert first.api_kwargs()["ModelPackageVersionArn"] == f"<{'g' * 63}/3>"


def test_same_target_adopts_only_the_same_version_and_target() -> None:
    """A job for this version and target is adoptable; another version, another target or
    other compiler options are not."""
    config = load_config(overrides=sagemaker())
    request = SageMakerRequests(config.sagemaker, X86)(
        settings_from_config(config), decider_platform(X86), 1, 1
    )
    ours = {"SageMaker": {"OutputConfig": dict(request.output_config)}}
    assert request.same_target(ours, "1")
    assert not request.same_target(ours, "2")
    other = {"SageMaker": {"OutputConfig": {**request.output_config, "TargetDevice": "rasp4b"}}}
    assert not request.same_target(other, "1")
    options = {"SageMaker": {"OutputConfig": {**request.output_config, "CompilerOptions": "{}"}}}
    assert not request.same_target(options, "1")
    assert not request.same_target({"Greengrass": {}}, "1")


def test_neo_only_targets_keep_their_key_for_the_core() -> None:
    """A Raspberry Pi 4 (TargetDevice rasp4b) is named rasp4b in components and jobs even
    though Lookout for Vision has no such target, the platform report shows the Neo
    target, and its recipe is for linux/arm."""
    config = load_config(overrides=sagemaker())
    platform = decider_platform(RASP4B)
    assert platform.key == "rasp4b"
    report = neo_report(RASP4B)
    assert report["targetDevice"] == "rasp4b" and "targetPlatform" not in report
    assert report["packagingBackend"] == "sagemaker"
    request = SageMakerRequests(config.sagemaker, RASP4B)(settings_from_config(config), platform, 1, 1)
    assert request.component_name == "defects.rasp4b"
    assert request.output_config["TargetDevice"] == "rasp4b"
    recipe = model_component_recipe(
        request=request,
        package_arn="arn:aws:sagemaker:us-east-1:123456789012:model-package/defects/1",
        artifact_uri="s3://neo-out/m/model-rasp4b.tar.gz",
        platform=RASP4B,
    )
    assert recipe["Manifests"][0]["Platform"] == {"os": "linux", "architecture": "arm"}


def test_recipe_installs_the_tar_gz_and_is_stable() -> None:
    """The recipe is byte-identical for the same inputs, installs the artifact unarchived
    (Greengrass cannot unpack .tar.gz) and extracts it in Install, exposes ModelPath and
    carries the optional runtime dependency."""
    config = load_config(overrides=sagemaker())
    request: CompilationRequest = SageMakerRequests(config.sagemaker, X86)(
        settings_from_config(config), decider_platform(X86), 1, 1
    )
    arguments: dict[str, Any] = {
        "request": request,
        "package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/defects/1",
        "artifact_uri": "s3://neo-out/m/model-LINUX_X86_64.tar.gz",
        "platform": X86,
        "runtime": {"aws.greengrass.DLRRuntime": {"VersionRequirement": ">=1.6.0", "DependencyType": "HARD"}},
    }
    recipe = model_component_recipe(**arguments)
    assert recipe_bytes(recipe) == recipe_bytes(model_component_recipe(**arguments))
    [manifest] = recipe["Manifests"]
    assert manifest["Artifacts"][0]["Unarchive"] == "NONE"
    assert "tar -xzf '{artifacts:path}/model-LINUX_X86_64.tar.gz'" in manifest["Lifecycle"]["Install"]["Script"]
    model_path = recipe["ComponentConfiguration"]["DefaultConfiguration"]["ModelPath"]
    assert model_path == "work/defects.x86-64-cpu/model"
    assert recipe["ComponentDependencies"]["aws.greengrass.DLRRuntime"]["DependencyType"] == "HARD"
    json.loads(recipe_bytes(recipe))


def test_neo_job_name_keeps_fitting_names() -> None:
    """A name already within Neo's rules is kept; a long one is cut with a digest."""
    assert neo_job_name("widgets-x86-64-cpu-v1-1") == "widgets-x86-64-cpu-v1-1"
    long = neo_job_name("a" * 64)
    assert len(long) == 63 and long != "a" * 63
