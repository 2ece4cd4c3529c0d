"""The packaging request: valid by construction and the same on every device of a platform."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.platform import DetectedPlatform
from agent.request import (
    GreengrassConfiguration,
    NamingTemplates,
    PackagingRequest,
    deployment_token,
    derive_request,
)

XAVIER = DetectedPlatform(
    target_device="jetson_xavier",
    key="jetson-xavier",
    description="Jetson AGX Xavier",
    compiler_options={},
    evidence={},
)
T4 = DetectedPlatform(
    os="LINUX",
    arch="X86_64",
    accelerator="NVIDIA",
    key="x86-64-nvidia-sm75",
    description="T4",
    compiler_options={"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"},
    evidence={},
)


def derive(
    platform: DetectedPlatform, version: int = 3, attempt: int = 1, **kw: object
) -> PackagingRequest:
    args = {
        "project": "widgets_line-1",
        "model_version": version,
        "platform": platform,
        "attempt": attempt,
        "bucket": "l4v-models",
        "prefix": "edge/{project}/{platform}/",
        "templates": NamingTemplates(),
    }
    args.update(kw)
    return derive_request(**args)  # type: ignore[arg-type]


def test_same_inputs_give_the_same_request_on_every_device() -> None:
    """Two devices of one platform compute the same job name, component and token."""
    assert derive(T4) == derive(T4)
    request = derive(T4)
    assert request.job_name == "widgets-line-1-x86-64-nvidia-sm75-v3-1"
    assert request.greengrass.component_name == "widgets_line-1.x86-64-nvidia-sm75"
    assert request.greengrass.component_version == "3.0.0"


def test_platform_version_and_attempt_each_change_the_identity() -> None:
    """A different platform, version or attempt is a different job with a different token."""
    base = derive(T4)
    for other in (derive(XAVIER), derive(T4, version=4), derive(T4, attempt=2)):
        assert other.client_token != base.client_token
        assert other.job_name != base.job_name


def test_target_device_request_carries_no_compiler_options() -> None:
    """Jetson Xavier is requested by TargetDevice, without CompilerOptions."""
    greengrass = derive(XAVIER).api_kwargs()["Configuration"]["Greengrass"]
    assert greengrass["TargetDevice"] == "jetson_xavier"
    assert "CompilerOptions" not in greengrass and "TargetPlatform" not in greengrass


def test_nvidia_platform_request_has_the_three_required_options() -> None:
    """An NVIDIA TargetPlatform request gives gpu-code, trt-ver and cuda-ver."""
    greengrass = derive(T4).api_kwargs()["Configuration"]["Greengrass"]
    assert greengrass["TargetPlatform"] == {
        "Os": "LINUX",
        "Arch": "X86_64",
        "Accelerator": "NVIDIA",
    }
    assert '"gpu-code":"sm_75"' in greengrass["CompilerOptions"]


def test_long_names_are_shortened_deterministically_within_limits() -> None:
    """A long project name still yields a JobName of at most 64 characters, stably."""
    long_project = "p" * 200
    first = derive(T4, project=long_project)
    assert len(first.job_name) <= 64 and first.job_name == derive(T4, project=long_project).job_name


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"TargetDevice": "jetson_xavier"}, "exactly one of TargetDevice and TargetPlatform"),
        ({"TargetPlatform": None}, "exactly one of TargetDevice and TargetPlatform"),
        ({"CompilerOptions": '{"gpu-code": "sm_75"}'}, "trt-ver"),
        ({"ComponentVersion": "1.0"}, "ComponentVersion"),
        ({"ComponentName": "bad name!"}, "ComponentName"),
        ({"CompilerOptions": "{}"[:1]}, "CompilerOptions"),
        ({"S3OutputLocation": {"Bucket": "ab"}}, "Bucket"),
    ],
)
def test_invalid_requests_cannot_be_built(change: dict[str, object], rule: str) -> None:
    """Each API rule is enforced before anything is sent."""
    fields = derive(T4).greengrass.model_dump(by_alias=True, exclude_none=True)
    fields.update(change)
    fields = {k: v for k, v in fields.items() if v is not None}
    with pytest.raises(ValidationError, match=rule):
        GreengrassConfiguration.model_validate(fields)


def test_same_target_detects_a_foreign_job() -> None:
    """Adoption is refused for a job packaging another version or platform."""
    request = derive(T4)
    configuration = {"Greengrass": request.greengrass.model_dump(by_alias=True, exclude_none=True)}
    assert request.same_target(configuration, "3")
    assert not request.same_target(configuration, "4")
    other = {"Greengrass": derive(XAVIER).greengrass.model_dump(by_alias=True, exclude_none=True)}
    assert not request.same_target(other, "3")


def test_deployment_token_is_stable_and_valid() -> None:
    """The CreateDeployment clientToken depends on target, component version and attempt:
    the same rollout always sends the same token, a retry (next attempt) a new one."""
    arn = "arn:aws:iot:us-east-1:123456789012:thing/a"
    token = deployment_token(arn, "c", "1.0.0", 1)
    assert token == deployment_token(arn, "c", "1.0.0", 1)
    assert token != deployment_token(arn, "c", "2.0.0", 1)
    assert token != deployment_token(arn, "c", "1.0.0", 2)
    assert len(token) <= 64 and token.isalnum()
