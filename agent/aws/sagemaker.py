"""PackagingPort adapter for SageMaker: Model Registry + Neo + Greengrass components.

* **Latest version**: the newest package (by creation time) of the model package group
  with the configured ``ModelApprovalStatus`` and status Completed (ListModelPackages).
* **Start packaging**: the package must give Neo what it needs (framework, framework
  version, input shape, model data), else a terminal error naming the missing member;
  then CreateCompilationJob with a job name derived from the request's deterministic job
  name, so a fleet of identical devices shares one job. Neo has no client token: a
  ``ResourceInUse`` is adopted when the existing job compiles the same package for the
  same target, and is a ConflictError otherwise.
* **Status**: Neo's STARTING/INPROGRESS/STOPPING are CREATED/RUNNING; FAILED and
  STOPPED are FAILED with Neo's FailureReason. On COMPLETED this backend makes the
  Greengrass component itself (CreateComponentVersion with an inline recipe whose
  clientToken is derived from the recipe, so the fleet creates it once; a
  ConflictException for the identical recipe is adopted) and only then reports
  SUCCEEDED.

The core derives this backend's request with :class:`SageMakerRequests` (its
``RequestDeriver``): a :class:`CompilationRequest` naming the job, the component, the
output location and the tags, with the Neo target of
:class:`agent.platform.neo.NeoPlatform`, which can express targets Lookout for Vision
cannot (``rasp4b``, ``jetson_nano``, 32-bit ARM).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent import errors, naming
from agent.aws.session import AwsClients
from agent.aws.translate import call
from agent.config import SageMakerSettings
from agent.decide import RolloutSettings
from agent.platform import DetectedPlatform
from agent.platform.neo import NeoPlatform
from agent.ports import PackagingJob, PackagingRequest

BACKEND = "sagemaker"
#: Neo's CompilationJobName: ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$``.
NEO_JOB_NAME_LIMIT = 63
#: Neo status -> the port's job status.
_STATUSES = {
    "STARTING": "CREATED",
    "INPROGRESS": "RUNNING",
    "STOPPING": "RUNNING",
    "COMPLETED": "SUCCEEDED",
    "FAILED": "FAILED",
    "STOPPED": "FAILED",
}
#: Greengrass recipe ``architecture`` of each Neo target.
_GREENGRASS_ARCH = {
    "X86_64": "amd64",
    "X86": "x86",
    "ARM64": "aarch64",
    "ARM_EABIHF": "arm",
    "ARM_EABI": "arm",
    "jetson_tx1": "aarch64",
    "jetson_tx2": "aarch64",
    "jetson_nano": "aarch64",
    "jetson_xavier": "aarch64",
    "rasp3b": "arm",
    "rasp4b": "arm",
}
#: Where the install step extracts the model, relative to the component's work folder.
MODEL_DIRECTORY = "model"
PUBLISHER = "l4v-edge-agent"


def neo_job_name(job_name: str) -> str:
    """The request's deterministic job name within Neo's pattern and length (a name that
    already fits is kept as it is)."""
    name = naming.fit(job_name, r"a-zA-Z0-9\-", NEO_JOB_NAME_LIMIT).strip("-")
    return name or "job"


def decider_platform(neo: NeoPlatform) -> DetectedPlatform:
    """The platform the (backend-neutral) decision code names things after: the Neo
    target's own key.

    The decision code derives a Lookout for Vision-shaped request, whose target fields
    this backend does not send (it sends ``neo``'s). A Neo target Lookout for Vision
    cannot express is carried with a placeholder Os/Arch and the Neo key.
    """
    flat = {k: ",".join(v) if isinstance(v, list) else v for k, v in neo.compiler_options.items()}
    fields: dict[str, Any] = {
        "target_device": neo.target_device,
        "os": neo.os,
        "arch": neo.arch,
        "accelerator": neo.accelerator,
        "compiler_options": flat,
        "key": neo.key,
        "description": neo.description,
        "evidence": neo.evidence,
    }
    try:
        return DetectedPlatform.model_validate(fields)
    except ValueError:
        arch = "X86_64" if (neo.arch or "").startswith("X86") else "ARM64"
        return DetectedPlatform(
            os="LINUX", arch=arch, key=neo.key, description=neo.description, evidence=neo.evidence
        )



def neo_report(neo: NeoPlatform) -> dict[str, object]:
    """The platform report of a Neo target (as ``platform_report``, Neo's field names)."""
    output = neo.output_config("")
    report: dict[str, object] = {
        key: output[field_name]
        for key, field_name in (("targetDevice", "TargetDevice"), ("targetPlatform", "TargetPlatform"))
        if field_name in output
    }
    report["compilerOptions"] = neo.compiler_options_json()
    report["key"] = neo.key
    report["description"] = neo.description
    report["evidence"] = dict(neo.evidence)
    report["packagingBackend"] = BACKEND
    return report


@dataclass(frozen=True)
class CompilationRequest:
    """One CreateCompilationJob for a package version of the group, and the component it
    becomes (the core's PackagingRequest protocol). ``kwargs`` lacks the package's ARN,
    which the adapter looks up in the registry."""

    project_name: str
    model_version: str
    job_name: str
    client_token: str
    component_name: str
    component_version: str
    kwargs: dict[str, Any] = field(hash=False)
    tags: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def output_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.kwargs["OutputConfig"]
        return config

    def api_kwargs(self) -> dict[str, Any]:
        """CreateCompilationJob's arguments, the package named by group and version."""
        return {
            **self.kwargs,
            "ModelPackageVersionArn": f"<{self.project_name}/{self.model_version}>",
        }

    def same_target(self, configuration: dict[str, Any], model_version: str) -> bool:
        """Whether a compilation job (``{"SageMaker": {ModelPackageVersionArn,
        OutputConfig}}``, ``model_version`` only when its package is in the group)
        compiles this version for this target."""
        theirs = (configuration.get("SageMaker") or {}) if isinstance(configuration, dict) else {}
        return str(model_version) == self.model_version and not _target_differences(
            theirs.get("OutputConfig") or {}, self.output_config
        )


class SageMakerRequests:
    """The request deriver of this backend: names from the core's templates and the
    platform key, the target from ``neo``, the output under ``s3OutputLocation`` + the
    rendered ``s3Prefix``."""

    def __init__(self, settings: SageMakerSettings, neo: NeoPlatform) -> None:
        self.settings = settings
        self.neo = neo

    def __call__(
        self, rollout: RolloutSettings, platform: DetectedPlatform, version: int, attempt: int
    ) -> CompilationRequest:
        values = {
            "project": rollout.project,
            "version": str(version),
            "platform": platform.key,
            "attempt": str(attempt),
        }
        templates = rollout.naming
        job_name = neo_job_name(naming.render(naming.JOB_NAME, templates.job_name, values))
        prefix = naming.render(naming.S3_PREFIX, rollout.prefix, values).strip("/")
        base = (self.settings.s3_output_location or "").rstrip("/")
        kwargs: dict[str, Any] = {
            "CompilationJobName": job_name,
            "RoleArn": self.settings.role_arn or "",
            "OutputConfig": self.neo.output_config(f"{base}/{prefix}" if prefix else base),
            "StoppingCondition": {
                "MaxRuntimeInSeconds": self.settings.stopping_condition.max_runtime_in_seconds
            },
        }
        component_name = naming.render(naming.COMPONENT_NAME, templates.component_name, values)
        component_version = naming.render(
            naming.COMPONENT_VERSION, templates.component_version, values
        )
        tags = dict(sorted((rollout.component_tags or {}).items()))
        source = json.dumps(
            {"kwargs": kwargs, "component": [component_name, component_version], "tags": tags},
            sort_keys=True,
        )
        return CompilationRequest(
            project_name=rollout.project,
            model_version=str(version),
            job_name=job_name,
            client_token=hashlib.sha256(source.encode()).hexdigest()[:48],
            component_name=component_name,
            component_version=component_version,
            kwargs=kwargs,
            tags=tags,
        )


def model_component_recipe(
    *,
    request: CompilationRequest,
    package_arn: str,
    artifact_uri: str,
    platform: NeoPlatform,
    runtime: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The inline recipe of the compiled model's component: the same for the same inputs.

    Greengrass unarchives only ZIP, so the Neo ``.tar.gz`` is installed as is and
    extracted by the install step into ``<work folder>/model``. The configuration's
    ``ModelPath`` is that folder relative to the Greengrass root: a dependent reads
    ``{kernel:rootPath}/{<name>:configuration:/ModelPath}``.
    """
    name, version = request.component_name, request.component_version
    file_name = posixpath.basename(artifact_uri)
    target = platform.target_device or "/".join(
        part for part in (platform.os, platform.arch, platform.accelerator) if part
    )
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDescription": (
            f"SageMaker Neo model {request.project_name} v{request.model_version} "
            f"for {platform.key}"
        )[:256],
        "ComponentPublisher": PUBLISHER,
        "ComponentConfiguration": {
            "DefaultConfiguration": {
                "ModelPath": f"work/{name}/{MODEL_DIRECTORY}",
                "ModelPackageVersionArn": package_arn,
                "CompilationJobName": request.job_name,
                "NeoTarget": target,
            }
        },
        "Manifests": [
            {
                "Platform": {
                    "os": "linux",
                    "architecture": _GREENGRASS_ARCH[platform.target_device or platform.arch or ""],
                },
                "Artifacts": [
                    {"URI": artifact_uri, "Unarchive": "NONE", "Permission": {"Read": "OWNER"}}
                ],
                "Lifecycle": {
                    "Install": {
                        "Script": (
                            f"rm -rf '{{work:path}}/{MODEL_DIRECTORY}' && "
                            f"mkdir -p '{{work:path}}/{MODEL_DIRECTORY}' && "
                            f"tar -xzf '{{artifacts:path}}/{file_name}' "
                            f"-C '{{work:path}}/{MODEL_DIRECTORY}'"
                        ),
                    }
                },
            }
        ],
    }
    if runtime:
        recipe["ComponentDependencies"] = runtime
    return recipe


def recipe_bytes(recipe: dict[str, Any]) -> bytes:
    """The canonical JSON of ``recipe`` (what is sent and what the token is made from)."""
    return json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()


class SageMakerPackaging:
    """The packaging port over SageMaker Model Registry, Neo and Greengrass.

    ``request_for(version)`` gives the core's request for a model version (the component
    to make after COMPLETED); it is bound once the reconciler exists (:meth:`bind`).
    """

    backend = BACKEND

    def __init__(self, clients: AwsClients, settings: SageMakerSettings, platform: NeoPlatform) -> None:
        self._clients = clients
        self.settings = settings
        self.platform = platform
        self._request_for: Callable[[int], PackagingRequest] | None = None
        # (group, version) -> the package's ARN, once its inference specification passed
        # the Neo check: a package version's specification does not change, so a retry
        # (throttled, or a job name in use) costs one call less.
        self._checked: dict[tuple[str, int], str] = {}

    def bind(self, request_for: Callable[[int], PackagingRequest]) -> None:
        """Give the adapter the core's request derivation (component names and tags)."""
        self._request_for = request_for

    @property
    def _sm(self) -> Any:
        return self._clients.client("sagemaker")

    @property
    def _gg(self) -> Any:
        return self._clients.client("greengrassv2")

    # -- latest version --------------------------------------------------------------------
    def latest_version(self, project: str) -> int:
        """The newest Completed package of the group ``project`` with the configured
        approval status (ListModelPackages by creation time, newest first);
        NoTrainedModelError if none. (The core's project is the group: it is validated so,
        and a live change of the group reaches the adapter this way.)"""
        for summary in self._packages(
            project,
            ModelApprovalStatus=self.settings.approval_status,
            SortBy="CreationTime",
            SortOrder="Descending",
        ):
            if summary.get("ModelPackageStatus") == "Completed" and summary.get("ModelPackageVersion"):
                return int(summary["ModelPackageVersion"])
        raise errors.NoTrainedModelError(
            f"SageMaker model package group {project} has no Completed model package with "
            f"ModelApprovalStatus {self.settings.approval_status}"
        )

    def _packages(self, group: str, **query: Any) -> Iterator[dict[str, Any]]:
        """Every summary of the group's packages for ``query``, page by page."""
        kwargs: dict[str, Any] = {"ModelPackageGroupName": group, **query}
        while True:
            page = call("ListModelPackages", lambda: self._sm.list_model_packages(**kwargs))
            yield from page.get("ModelPackageSummaryList", [])
            token = page.get("NextToken")
            if not token:
                return
            kwargs["NextToken"] = token

    # -- packaging -------------------------------------------------------------------------
    def start_packaging(self, request: PackagingRequest) -> str:
        """CreateCompilationJob for the request's package version, after checking that the
        package gives Neo what it needs; returns the job name. ``ResourceInUse`` (a job
        of that name exists) is a ConflictError: the core adopts the job if its
        ``same_target`` agrees."""
        kwargs = self.request_arguments(request)
        call("CreateCompilationJob", lambda: self._sm.create_compilation_job(**kwargs))
        return request.job_name

    def request_arguments(self, request: PackagingRequest) -> dict[str, Any]:
        """CreateCompilationJob's arguments with the package's real ARN
        (DescribeModelPackage, read-only; the Neo check applies as for a start)."""
        if not isinstance(request, CompilationRequest):
            raise TypeError(f"the SageMaker backend cannot send {type(request).__name__}")
        version, group = int(request.model_version), request.project_name
        package_arn = self._checked.get((group, version)) or self._checked_package(group, version)
        return {**request.kwargs, "ModelPackageVersionArn": package_arn}

    def _checked_package(self, group: str, version: int) -> str:
        """DescribeModelPackage and the Neo check; returns (and remembers) the ARN."""
        # A versioned package is named ``group/version`` (the API's VersionedArnOrName):
        # one call gives its ARN and what Neo needs. The whole fleet shares the account's
        # request quota, so every call saved here counts.
        try:
            described = call(
                "DescribeModelPackage",
                lambda: self._sm.describe_model_package(ModelPackageName=f"{group}/{version}"),
            )
        except errors.InvalidRequestError as missing:
            raise errors.NotFoundError(
                f"SageMaker model package group {group} has no model package version "
                f"{version}: {missing.message}",
                code=missing.code,
            ) from missing
        _check_neo_inputs(f"{group}/{version}", described)
        package_arn = self._checked[(group, version)] = str(described["ModelPackageArn"])
        return package_arn

    def packaging_status(self, project: str, job_name: str) -> PackagingJob:
        """DescribeCompilationJob; on COMPLETED the component is made (or found) first,
        when the job compiles a package of the group for this device's target."""
        job: dict[str, Any] = call(
            "DescribeCompilationJob",
            lambda: self._sm.describe_compilation_job(CompilationJobName=job_name),
        )
        package_arn = str(job.get("ModelPackageVersionArn") or "")
        version = _version_in_group(package_arn, project)
        output = job.get("OutputConfig") or {}
        neo_status = str(job.get("CompilationJobStatus", ""))
        status = _STATUSES.get(neo_status, "RUNNING")
        message: str | None = None
        if status == "FAILED":
            message = (
                f"SageMaker Neo compilation job {job_name} {neo_status}: "
                f"{job.get('FailureReason') or 'no FailureReason given'}"
            )
        name = component_version = None
        ours = version is not None and not _target_differences(
            output, self.platform.output_config("")
        )
        if status == "SUCCEEDED" and ours and version is not None:
            request = self._request(version)
            name, component_version = self._make_component(request, package_arn, job_name, job)
        elif status == "SUCCEEDED":
            status = "RUNNING"  # not ours to finish: the core's adoption check refuses it
        return PackagingJob(
            name=job_name,
            model_version=str(version) if version is not None else package_arn,
            status=status,
            status_message=message,
            configuration={"SageMaker": {"ModelPackageVersionArn": package_arn, "OutputConfig": output}},
            component_name=name,
            component_version=component_version,
        )

    def _request(self, version: int) -> CompilationRequest:
        if self._request_for is None:
            raise AssertionError("SageMakerPackaging.bind was not called")
        request = self._request_for(version)
        if not isinstance(request, CompilationRequest):
            raise TypeError(f"the SageMaker backend cannot use {type(request).__name__}")
        return request

    # -- the component -----------------------------------------------------------------------
    def _make_component(
        self, request: CompilationRequest, package_arn: str, job_name: str, job: dict[str, Any]
    ) -> tuple[str, str]:
        """CreateComponentVersion for the compiled model (idempotent: the clientToken is
        the recipe's digest); returns (name, version)."""
        artifact = str((job.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or "")
        if not artifact.endswith(".tar.gz"):
            raise errors.PackagingFailedError(
                f"SageMaker Neo compilation job {job_name} COMPLETED without a .tar.gz "
                f"artifact (ModelArtifacts.S3ModelArtifacts: {artifact or 'none'})"
            )
        runtime = self.settings.runtime_component
        recipe = model_component_recipe(
            request=request,
            package_arn=package_arn,
            artifact_uri=artifact,
            platform=self.platform,
            runtime=(
                {
                    runtime.name: {
                        "VersionRequirement": runtime.version_requirement,
                        "DependencyType": runtime.dependency_type,
                    }
                }
                if runtime.name
                else None
            ),
        )
        body = recipe_bytes(recipe)
        kwargs: dict[str, Any] = {
            "inlineRecipe": body,
            "clientToken": hashlib.sha256(body).hexdigest()[:64],
        }
        if request.tags:
            kwargs["tags"] = request.tags
        try:
            call("CreateComponentVersion", lambda: self._gg.create_component_version(**kwargs))
        except errors.ConflictError as conflict:
            self._adopt_component(package_arn, recipe, conflict)
        return request.component_name, request.component_version

    def _adopt_component(
        self, package_arn: str, recipe: dict[str, Any], conflict: errors.ConflictError
    ) -> None:
        """After a ConflictException: the existing version is adopted when it is the one
        this recipe makes (same description and publisher: the description names the
        group, version and target)."""
        name, version = recipe["ComponentName"], recipe["ComponentVersion"]
        parts = package_arn.split(":")
        arn = f"arn:{parts[1]}:greengrass:{parts[3]}:{parts[4]}:components:{name}:versions:{version}"
        try:
            found = call("DescribeComponent", lambda: self._gg.describe_component(arn=arn))
        except errors.NotFoundError:
            raise errors.TransientError(
                f"component {name} {version} is being created elsewhere: {conflict.message}",
                code=conflict.code,
            ) from conflict
        if (
            found.get("description") != recipe["ComponentDescription"]
            or found.get("publisher") != recipe["ComponentPublisher"]
        ):
            raise errors.ConflictError(
                f"component {name} {version} exists with another recipe "
                f"({found.get('publisher')}: {found.get('description')}); "
                "change componentVersionTemplate or componentNameTemplate",
                code=conflict.code,
            ) from conflict


def _check_neo_inputs(package: str, described: dict[str, Any]) -> None:
    """Raise InvalidRequestError naming the first member Neo needs that the package lacks."""
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or []
    if not containers:
        field_name = "InferenceSpecification.Containers"
    else:
        container = containers[0]
        needed = (
            ("Framework", container.get("Framework")),
            ("FrameworkVersion", container.get("FrameworkVersion")),
            ("ModelInput.DataInputConfig", (container.get("ModelInput") or {}).get("DataInputConfig")),
            ("ModelDataUrl", container.get("ModelDataUrl")),
        )
        missing = [name for name, value in needed if not value]
        if not missing:
            return
        field_name = f"InferenceSpecification.Containers[0].{missing[0]}"
    raise errors.InvalidRequestError(
        f"SageMaker model package {package}: {field_name} is missing; Neo needs the framework, "
        "its version, the input shape and the model data to compile it"
    )


def _version_in_group(package_arn: str, group: str) -> int | None:
    """The version of ``package_arn`` when it belongs to ``group`` (ARNs are lower-case)."""
    resource = package_arn.split(":", 5)[-1] if package_arn.count(":") >= 5 else ""
    kind, _, rest = resource.partition("/")
    found_group, _, version = rest.rpartition("/")
    if kind != "model-package" or found_group != group.lower() or not version.isdigit():
        return None
    return int(version)


def _target_differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """How a job's OutputConfig differs from ours in target (empty: the same)."""
    found = [
        f"{key} {theirs.get(key)}, not {ours.get(key)}"
        for key in ("TargetDevice", "TargetPlatform")
        if theirs.get(key) != ours.get(key)
    ]
    if _options(theirs.get("CompilerOptions")) != _options(ours.get("CompilerOptions")):
        found.append(f"CompilerOptions {theirs.get('CompilerOptions')}, not {ours.get('CompilerOptions')}")
    return found


def _options(text: Any) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text
