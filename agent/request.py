"""The packaging request, as a value.

:class:`PackagingRequest` mirrors StartModelPackagingJob field by field with the API's
own constraints, so an invalid request cannot be built, let alone sent.
:func:`derive_request` computes it deterministically from (project, model version,
platform, attempt): every device of the same platform derives the same job name,
component version and client token, so a fleet shares one packaging job.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent import naming
from agent.platform import DetectedPlatform

# Constraints of the Lookout for Vision API (2020-11-20); tests compare them with the
# official service model.
ProjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_\-]*$")
]
ModelVersion = Annotated[
    str, StringConstraints(min_length=1, max_length=10, pattern=r"^([1-9][0-9]*|latest)$")
]
JobName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9-]+$")]
ClientToken = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9-]+$")
]
Description = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[a-zA-Z0-9\-_. ()':,;?]+$")
]
ComponentName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9\-_.]+$")
]
ComponentVersion = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=64, pattern=r"^([0-9]{1,6})\.([0-9]{1,6})\.([0-9]{1,6})$"
    ),
]
CompilerOptions = Annotated[str, StringConstraints(min_length=3, max_length=1024)]
BucketName = Annotated[
    str, StringConstraints(min_length=3, max_length=63, pattern=r"^[0-9A-Za-z.\-_]*$")
]
KeyPrefix = Annotated[
    str, StringConstraints(max_length=1024, pattern=r"^([a-zA-Z0-9!_.*'()-][/a-zA-Z0-9!_.*'()-]*)?$")
]
#: Besides letters, separators and numbers, the tag patterns allow these characters.
TAG_PUNCTUATION = frozenset("_.:/=+-@")


def tag_text_problem(text: str) -> str | None:
    """Why ``text`` does not match the API's tag pattern ``^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$``,
    or None if it does.

    ``\\p{L}``, ``\\p{Z}`` and ``\\p{N}`` are the Unicode general categories L*, Z* and N*,
    which ``unicodedata.category`` gives for every code point: tabs and newlines (Cc),
    combining marks (M*) and symbols (S*) are refused, '½' (No) and 'ß' (Ll) are letters
    or numbers. ``re`` has no ``\\p{..}`` classes; this avoids a regex dependency.
    """
    for position, char in enumerate(text):
        if char in TAG_PUNCTUATION or unicodedata.category(char)[0] in "LZN":
            continue
        return (
            f"character U+{ord(char):04X} ({unicodedata.category(char)}) at position {position} "
            "is not allowed: only letters, numbers, spaces and _.:/=+-@"
        )
    return None


def _tag_text(text: str) -> str:
    problem = tag_text_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


TagKey = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(_tag_text)
]
TagValue = Annotated[
    str, StringConstraints(min_length=0, max_length=256), AfterValidator(_tag_text)
]
#: The API's TagList maximum.
MAX_TAGS = 200


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Tag(_Wire):
    key: TagKey = Field(alias="Key")
    value: TagValue = Field(alias="Value")


class S3Location(_Wire):
    bucket: BucketName = Field(alias="Bucket")
    prefix: KeyPrefix | None = Field(default=None, alias="Prefix")


class TargetPlatform(_Wire):
    os: Literal["LINUX"] = Field(alias="Os")
    arch: Literal["ARM64", "X86_64"] = Field(alias="Arch")
    accelerator: Literal["NVIDIA"] | None = Field(default=None, alias="Accelerator")


class GreengrassConfiguration(_Wire):
    component_name: ComponentName = Field(alias="ComponentName")
    component_version: ComponentVersion | None = Field(default=None, alias="ComponentVersion")
    component_description: Description | None = Field(default=None, alias="ComponentDescription")
    s3_output_location: S3Location = Field(alias="S3OutputLocation")
    target_device: Literal["jetson_xavier"] | None = Field(default=None, alias="TargetDevice")
    target_platform: TargetPlatform | None = Field(default=None, alias="TargetPlatform")
    compiler_options: CompilerOptions | None = Field(default=None, alias="CompilerOptions")
    tags: list[Tag] | None = Field(default=None, alias="Tags", max_length=MAX_TAGS)

    @model_validator(mode="after")
    def _target_rules(self) -> GreengrassConfiguration:
        if (self.target_device is None) == (self.target_platform is None):
            raise ValueError("exactly one of TargetDevice and TargetPlatform must be set")
        if self.target_device is not None and self.compiler_options is not None:
            raise ValueError("CompilerOptions must not be set with TargetDevice")
        if self.target_platform is not None and self.target_platform.accelerator == "NVIDIA":
            options = _json_object(self.compiler_options)
            missing = [k for k in ("gpu-code", "trt-ver", "cuda-ver") if k not in options]
            if missing:
                raise ValueError(f"CompilerOptions for NVIDIA must give {', '.join(missing)}")
        return self


def _json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class PackagingRequest(_Wire):
    """One StartModelPackagingJob call, valid by construction."""

    project_name: ProjectName = Field(alias="ProjectName")
    model_version: ModelVersion = Field(alias="ModelVersion")
    job_name: JobName = Field(alias="JobName")
    client_token: ClientToken = Field(alias="ClientToken")
    description: Description | None = Field(default=None, alias="Description")
    greengrass: GreengrassConfiguration

    @property
    def component_name(self) -> str:
        """The Greengrass component the job makes."""
        return self.greengrass.component_name

    @property
    def component_version(self) -> str:
        return self.greengrass.component_version or ""

    def api_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for boto3's ``start_model_packaging_job``."""
        kwargs: dict[str, Any] = {
            "ProjectName": self.project_name,
            "ModelVersion": self.model_version,
            "JobName": self.job_name,
            "ClientToken": self.client_token,
            "Configuration": {
                "Greengrass": self.greengrass.model_dump(by_alias=True, exclude_none=True)
            },
        }
        if self.description is not None:
            kwargs["Description"] = self.description
        return kwargs

    def same_target(self, configuration: dict[str, Any], model_version: str) -> bool:
        """Whether a job's ModelPackagingConfiguration/ModelVersion is what we would ask for.

        Used before adopting an existing job of the same name.
        """
        theirs = configuration.get("Greengrass", {}) if isinstance(configuration, dict) else {}
        ours = self.greengrass.model_dump(by_alias=True, exclude_none=True)
        keys = ("TargetDevice", "TargetPlatform", "ComponentName", "ComponentVersion")
        if any(theirs.get(k) != ours.get(k) for k in keys):
            return False
        if _json_object(theirs.get("CompilerOptions")) != _json_object(ours.get("CompilerOptions")):
            return False
        return str(model_version) == self.model_version


class NamingTemplates(BaseModel):
    """How names are derived; each template follows its rule in :mod:`agent.naming`."""

    model_config = ConfigDict(frozen=True)

    component_name: str = "{project}.{platform}"
    component_version: str = "{version}.0.0"
    job_name: str = "{project}-{platform}-v{version}-{attempt}"

    @field_validator("component_name", "component_version", "job_name")
    @classmethod
    def _follows_its_rule(cls, value: str, info: ValidationInfo) -> str:
        naming.parse(_TEMPLATE_RULES[str(info.field_name)], value)
        return value


_TEMPLATE_RULES = {
    "component_name": naming.COMPONENT_NAME,
    "component_version": naming.COMPONENT_VERSION,
    "job_name": naming.JOB_NAME,
}


def component_description(project: str, model_version: int, platform_key: str) -> str:
    """The ComponentDescription, within its 256 characters for any project name."""
    suffix = f" v{model_version} for {platform_key}"
    head = "Lookout for Vision model "
    room = 256 - len(head) - len(suffix)
    shown = project if len(project) <= room else naming.fit(project, r"a-zA-Z0-9_\-", room)
    return f"{head}{shown}{suffix}"


def derive_request(
    *,
    project: str,
    model_version: int,
    platform: DetectedPlatform,
    attempt: int,
    bucket: str,
    prefix: str,
    templates: NamingTemplates,
    description: str | None = None,
    tags: dict[str, str] | None = None,
) -> PackagingRequest:
    """The request every device of ``platform`` computes for this model version/attempt.

    Raises pydantic.ValidationError if a template yields a name the API would reject.
    """
    values = {
        "project": project,
        "version": str(model_version),
        "platform": platform.key,
        "attempt": str(attempt),
    }
    component_name = naming.render(naming.COMPONENT_NAME, templates.component_name, values)
    component_version = naming.render(naming.COMPONENT_VERSION, templates.component_version, values)
    job_name = naming.render(naming.JOB_NAME, templates.job_name, values)
    s3_prefix = naming.render(naming.S3_PREFIX, prefix, values)
    greengrass: dict[str, Any] = {
        "ComponentName": component_name,
        "ComponentVersion": component_version,
        "ComponentDescription": component_description(project, model_version, platform.key),
        "S3OutputLocation": {"Bucket": bucket, "Prefix": s3_prefix or None},
        "Tags": [{"Key": k, "Value": v} for k, v in sorted((tags or {}).items())] or None,
    }
    if platform.target_device is not None:
        greengrass["TargetDevice"] = platform.target_device
    else:
        greengrass["TargetPlatform"] = {
            "Os": platform.os,
            "Arch": platform.arch,
            "Accelerator": platform.accelerator,
        }
        greengrass["CompilerOptions"] = platform.compiler_options_json()
    greengrass = {k: v for k, v in greengrass.items() if v is not None}
    if "TargetPlatform" in greengrass:
        greengrass["TargetPlatform"] = {
            k: v for k, v in greengrass["TargetPlatform"].items() if v is not None
        }
    if "S3OutputLocation" in greengrass and greengrass["S3OutputLocation"].get("Prefix") is None:
        greengrass["S3OutputLocation"] = {"Bucket": bucket}
    config = GreengrassConfiguration.model_validate(greengrass)
    token_source = json.dumps(
        {
            "project": project,
            "version": model_version,
            "job": job_name,
            "greengrass": config.model_dump(by_alias=True, exclude_none=True),
            "description": description,
        },
        sort_keys=True,
    )
    token = hashlib.sha256(token_source.encode()).hexdigest()[:48]
    return PackagingRequest.model_validate(
        {
            "ProjectName": project,
            "ModelVersion": str(model_version),
            "JobName": job_name,
            "ClientToken": token,
            "Description": description,
            "greengrass": config,
        }
    )


def deployment_token(
    target_arn: str, component_name: str, component_version: str, attempt: int = 1
) -> str:
    """CreateDeployment's clientToken: the same for the same target + component version +
    rollout attempt, so a retry after a failed install makes a new deployment revision."""
    source = f"{target_arn}|{component_name}|{component_version}|{attempt}"
    return hashlib.sha256(source.encode()).hexdigest()[:48]
