"""Amazon SageMaker emulator: the Model Registry reads and SageMaker Neo compilation jobs.

SageMaker speaks the JSON 1.1 protocol: every request is ``POST /`` with
``X-Amz-Target: SageMaker.<Operation>``. This emulator answers ListModelPackages,
DescribeModelPackage, CreateCompilationJob, DescribeCompilationJob, StopCompilationJob
and ListCompilationJobs. Requests are checked by :mod:`localcloud.validation` against
the shapes of botocore's own current ``sagemaker`` model (JSON types, required members,
lengths, ranges, full-match patterns, enums), then against Neo's own rules (see ``localcloud/README.md``, section
"SageMaker"). A rejected request changes nothing.

The registry is ours, not moto's: package CreationTime must follow the world clock
(moto stamps wall-clock time), versions are never reused, and Neo resolves a
ModelPackageVersionArn against the same state. Compilation jobs run on the world
clock: STARTING, INPROGRESS after ``starting_seconds``, then COMPLETED (a ``.tar.gz``
written to the S3 output location in moto's S3) or FAILED after ``compile_seconds``.

Tests and the demo drive the service side through the control API:
:meth:`SageMakerEmulator.create_model_package_group`,
:meth:`~SageMakerEmulator.add_model_package`, :meth:`~SageMakerEmulator.set_approval_status`,
:meth:`~SageMakerEmulator.create_execution_role`, :meth:`~SageMakerEmulator.fail_jobs`
and the read-only :meth:`~SageMakerEmulator.jobs`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from localcloud import validation
from localcloud.http import Request, Response, Route, Router, ServiceError

TARGET_PREFIX = "SageMaker"
CONTENT_TYPE = "application/x-amz-json-1.1"
APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
PACKAGE_STATUSES = ("Pending", "InProgress", "Completed", "Failed", "Deleting")
ACTIVE_JOB_STATUSES = frozenset({"STARTING", "INPROGRESS", "STOPPING"})
#: The service principal a Neo execution role must trust.
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
#: Frameworks whose compilation needs the input shape (DataInputConfig).
NEEDS_INPUT_SHAPE = frozenset({"TENSORFLOW", "KERAS", "MXNET", "PYTORCH", "ONNX", "DARKNET"})
NVIDIA_OPTIONS = ("gpu-code", "trt-ver", "cuda-ver")
_OPTION_VALUE = {
    "gpu-code": re.compile(r"sm_[0-9]{2,3}"),
    "trt-ver": re.compile(r"[0-9]{1,3}\.[0-9]{1,4}(\.[0-9]{1,4})?"),
    "cuda-ver": re.compile(r"[0-9]{1,3}\.[0-9]{1,3}"),
    "mcpu": re.compile(r"[a-z0-9][a-z0-9_.+-]{0,63}"),
    "DTYPE": re.compile(r"float32|float16|int8|uint8"),
}
_MATTR = re.compile(r"[+-][A-Za-z0-9_.-]{1,63}")
_S3_URI = re.compile(r"s3://([^/]+)/?(.*)")
#: The inline policy of :meth:`SageMakerEmulator.create_execution_role` by default.
_S3_READ_WRITE = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": "arn:aws:s3:::*",
        }
    ],
}
_ARN = re.compile(r"arn:(aws[a-z-]*):([a-z0-9-]+):([a-z0-9-]*):([0-9]{12}):(.+)")


# -- the service model as the source of truth for shapes ---------------------------------------


def service_model() -> Any:
    """botocore's current ``sagemaker`` model (loaded once per process)."""
    return validation.service_model("sagemaker")


@functools.cache
def _boto3_session() -> Any:
    """One boto3 session per process for the emulator's internal clients (each client
    gets its own credentials and region)."""
    import boto3

    from localcloud.transport import TEST_CREDENTIALS

    return boto3.Session(**TEST_CREDENTIALS)


def _validation(message: str) -> ServiceError:
    return ServiceError("ValidationException", message, 400)


def _shown(value: Any) -> str:
    return validation.shown(value, _SHOWN_WIDTH)


#: Shown values are cut at this width in validation messages.
_SHOWN_WIDTH = 80


class _Problems:
    """Validation and serialization problems found in one request."""

    def __init__(self, found: Iterable[validation.Violation] = ()) -> None:
        self.constraints: list[str] = []
        self.types: list[str] = []
        for violation in found:
            self.add(violation)

    def add(self, violation: validation.Violation) -> None:
        """File ``violation`` as a wrong JSON type or as a broken constraint."""
        where = validation.aws_path(violation.path)
        if violation.rule in (validation.TYPE, validation.NULL, validation.BASE64):
            self.types.append(
                f"Expected {_TYPE_NOUNS.get(violation.bound, violation.bound)} at "
                f"'{where or 'body'}'"
            )
        else:
            self.constraints.append(validation.constraint_message(violation, _SHOWN_WIDTH))

    def raise_if_any(self) -> None:
        if self.types:
            # JSON protocol services answer wrong JSON types with SerializationException.
            raise ServiceError("SerializationException", "; ".join(self.types), 400)
        if self.constraints:
            raise _validation(validation.summary(self.constraints))

    def raise_value_error(self) -> None:
        """For the control API: ValueError naming every problem."""
        if self.constraints or self.types:
            raise ValueError("; ".join(self.constraints + self.types))


_TYPE_NOUNS = {"integer": "an integer", "long": "an integer", "timestamp": "epoch seconds"}


def _problems(shape: Any, value: Any, member: str | None = None) -> _Problems:
    path = () if member is None else (validation.Member(member),)
    return _Problems(validation.violations(shape, value, path))


def read_input(operation: str, request: Request) -> dict[str, Any]:
    """Decode the JSON body of ``operation`` and check it against the official model."""
    try:
        payload = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError("SerializationException", f"Malformed JSON body: {exc}", 400) from exc
    if not isinstance(payload, dict):
        raise ServiceError("SerializationException", "The request body must be a JSON object", 400)
    shape = service_model().operation_model(operation).input_shape
    values = {name: payload[name] for name in shape.members if payload.get(name) is not None}
    _problems(shape, values).raise_if_any()
    return values


class _TargetRouter(Router):
    """Routes JSON 1.1 requests by ``X-Amz-Target``; anything else is an unknown operation."""

    def __init__(self, fallback: Callable[[Request, dict[str, str]], Response]) -> None:
        super().__init__()
        self._fallback = Route("*", "*", "Unknown", fallback, re.compile(".*"))

    def add_operation(
        self, operation: str, handler: Callable[[Request, dict[str, str]], Response]
    ) -> None:
        self.routes.append(Route("POST", "/", operation, handler, re.compile("^/$")))

    def match(self, request: Request) -> tuple[Route, dict[str, str]] | None:
        prefix, _, operation = str(request.headers.get("x-amz-target") or "").partition(".")
        if request.method == "POST" and request.path in ("", "/") and prefix == TARGET_PREFIX:
            for route in self.routes:
                if route.operation == operation:
                    return route, {}
        return self._fallback, {}


def _ok(payload: Mapping[str, Any]) -> Response:
    return Response.json(200, payload, {"Content-Type": CONTENT_TYPE})


# -- records -----------------------------------------------------------------------------------


@dataclass
class _Package:
    group: str
    version: int
    arn: str
    created: float
    modified: float
    approval: str
    status: str
    description: str | None
    inference_specification: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        # Versioned packages are listed without ModelPackageName (as AWS does).
        summary: dict[str, Any] = {
            "ModelPackageGroupName": self.group,
            "ModelPackageVersion": self.version,
            "ModelPackageArn": self.arn,
            "CreationTime": self.created,
            "ModelPackageStatus": self.status,
            "ModelApprovalStatus": self.approval,
        }
        if self.description is not None:
            summary["ModelPackageDescription"] = self.description
        return summary

    def describe(self) -> dict[str, Any]:
        described = {
            **self.summary(),
            "ModelPackageName": self.group,
            "InferenceSpecification": json.loads(json.dumps(self.inference_specification)),
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "CertifyForMarketplace": False,
            "LastModifiedTime": self.modified,
        }
        return described


@dataclass
class _Group:
    name: str
    arn: str
    created: float
    description: str | None
    next_version: int = 1
    packages: dict[int, _Package] = field(default_factory=dict)


@dataclass
class _Job:
    name: str
    arn: str
    request: dict[str, Any]
    input_config: dict[str, Any]
    created: float
    starts_at: float
    ends_at: float
    status: str = "STARTING"
    modified: float = 0.0
    started: float | None = None
    ended: float | None = None
    failure_reason: str = ""
    artifact_uri: str | None = None
    artifact_digest: str | None = None
    max_runtime_failure: bool = False

    @property
    def output(self) -> dict[str, Any]:
        return dict(self.request["OutputConfig"])

    def target_label(self) -> str:
        """``jetson_nano``, or ``LINUX_ARM64_NVIDIA`` for a TargetPlatform."""
        output = self.output
        if output.get("TargetDevice"):
            return str(output["TargetDevice"])
        platform = output["TargetPlatform"]
        parts = [platform["Os"], platform["Arch"], platform.get("Accelerator")]
        return "_".join(p for p in parts if p)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "CompilationJobName": self.name,
            "CompilationJobArn": self.arn,
            "CompilationJobStatus": self.status,
            "StoppingCondition": dict(self.request["StoppingCondition"]),
            "CreationTime": self.created,
            "LastModifiedTime": self.modified,
            "FailureReason": self.failure_reason,
            # Before completion AWS has no artifact yet: the output location stands in.
            "ModelArtifacts": {
                "S3ModelArtifacts": self.artifact_uri or self.output["S3OutputLocation"]
            },
            "RoleArn": self.request["RoleArn"],
            "InputConfig": dict(self.input_config),
            "OutputConfig": self.output,
        }
        if self.started is not None:
            described["CompilationStartTime"] = self.started
        if self.ended is not None:
            described["CompilationEndTime"] = self.ended
        if self.request.get("ModelPackageVersionArn"):
            described["ModelPackageVersionArn"] = self.request["ModelPackageVersionArn"]
        if self.request.get("VpcConfig"):
            described["VpcConfig"] = self.request["VpcConfig"]
        if self.artifact_digest is not None:
            described["ModelDigests"] = {"ArtifactDigest": self.artifact_digest}
        return described

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "CompilationJobName": self.name,
            "CompilationJobArn": self.arn,
            "CreationTime": self.created,
            "LastModifiedTime": self.modified,
            "CompilationJobStatus": self.status,
        }
        if self.started is not None:
            summary["CompilationStartTime"] = self.started
        if self.ended is not None:
            summary["CompilationEndTime"] = self.ended
        output = self.output
        if output.get("TargetDevice"):
            summary["CompilationTargetDevice"] = output["TargetDevice"]
        else:
            platform = output["TargetPlatform"]
            summary["CompilationTargetPlatformOs"] = platform["Os"]
            summary["CompilationTargetPlatformArch"] = platform["Arch"]
            if platform.get("Accelerator"):
                summary["CompilationTargetPlatformAccelerator"] = platform["Accelerator"]
        return summary


@dataclass(frozen=True)
class CompilationJobView:
    """A read-only snapshot of one compilation job (for tests and benchmarks)."""

    name: str
    arn: str
    status: str
    failure_reason: str
    model_package_arn: str | None
    output_config: dict[str, Any]
    created: float
    started: float | None
    ended: float | None
    artifact_uri: str | None


@dataclass
class _FailurePlan:
    remaining: int
    reason: str
    name_prefix: str | None


# -- the emulator ------------------------------------------------------------------------------


class SageMakerEmulator:
    """The SageMaker Model Registry and Neo on the world clock. See the module docstring.

    Settings (attributes; a job keeps the durations in force when it was created):

    * ``starting_seconds`` (20): creation → INPROGRESS.
    * ``compile_seconds`` (180): creation → COMPLETED/FAILED.
    * ``stopping_seconds`` (10): StopCompilationJob → STOPPED.
    * ``max_active_jobs`` (None = unlimited): STARTING/INPROGRESS/STOPPING jobs allowed
      in the account; one more is ResourceLimitExceeded.
    * ``default_page_size`` (10): page size of List* calls without MaxResults.
    * ``check_roles`` (True): RoleArn must be a role in (moto's) IAM of this account that
      trusts ``sagemaker.amazonaws.com``.
    * ``models_bucket``: where :meth:`add_model_package` uploads model data by default.
    * ``denied_operations``: operation names answered with AccessDeniedException (as for
      a caller whose policy lacks the action).
    """

    def __init__(self, world: Any) -> None:
        self.world = world
        self.starting_seconds: float = 20.0
        self.compile_seconds: float = 180.0
        self.stopping_seconds: float = 10.0
        self.max_active_jobs: int | None = None
        self.default_page_size: int = 10
        self.check_roles: bool = True
        # Bucket names are global: the Region keeps each scope's registry bucket its own.
        self.models_bucket: str = f"sagemaker-models-{world.region}-{world.account_id}"
        self.denied_operations: set[str] = set()
        self._lock = threading.RLock()
        self._groups: dict[str, _Group] = {}  # lower-cased name -> group
        self._jobs: dict[str, _Job] = {}  # lower-cased name -> job, in creation order
        # Active job keys in creation order (a dict keeps order, a set would not).
        self._active: dict[str, None] = {}
        self._failures: list[_FailurePlan] = []
        self._clients: dict[str, Any] = {}
        router = _TargetRouter(self._unknown_operation)
        for operation, handler in (
            ("ListModelPackages", self._list_model_packages),
            ("DescribeModelPackage", self._describe_model_package),
            ("CreateCompilationJob", self._create_compilation_job),
            ("DescribeCompilationJob", self._describe_compilation_job),
            ("StopCompilationJob", self._stop_compilation_job),
            ("ListCompilationJobs", self._list_compilation_jobs),
        ):
            router.add_operation(operation, self._wrap(operation, handler))
        # Typed as the base class: World's Emulator protocol reads it as a Router.
        self.router: Router = router

    # -- control API ------------------------------------------------------------------------
    def create_model_package_group(self, name: str, description: str | None = None) -> str:
        """Create a model package group and return its ARN (ValueError if invalid/exists)."""
        _problems(
            service_model().shape_for("EntityName"), name, "ModelPackageGroupName"
        ).raise_value_error()
        with self._lock:
            if name.lower() in self._groups:
                raise ValueError(f"model package group {name!r} already exists")
            arn = self.world.arn("sagemaker", f"model-package-group/{name.lower()}")
            self._groups[name.lower()] = _Group(name, arn, self.world.clock.now(), description)
            return str(arn)

    def add_model_package(
        self,
        group: str,
        *,
        approval: str = "PendingManualApproval",
        framework: str | None = "PYTORCH",
        framework_version: str | None = "2.0",
        data_input_config: str | None = '{"input0": [1, 3, 224, 224]}',
        model_data_url: str | None = None,
        status: str = "Completed",
        description: str | None = None,
        inference_specification: dict[str, Any] | None = None,
    ) -> int:
        """Register the next version of ``group`` and return its version number.

        By default the package has one container with ``framework``, ``framework_version``,
        ``data_input_config`` and model data uploaded to ``s3://<models_bucket>/<group>/
        <version>/model.tar.gz`` (pass None to leave a field out, or a whole
        ``inference_specification``). A given ``model_data_url`` is not uploaded.
        Versions are never reused. KeyError for an unknown group, ValueError for bad values.
        """
        _require(approval, APPROVAL_STATUSES, "approval")
        _require(status, PACKAGE_STATUSES, "status")
        with self._lock:
            record = self._group_or_keyerror(group)
            version = record.next_version
            upload = model_data_url is None and inference_specification is None
            if model_data_url is None:
                model_data_url = f"s3://{self.models_bucket}/{record.name}/{version}/model.tar.gz"
            if inference_specification is None:
                container: dict[str, Any] = {
                    "Image": f"{self.world.account_id}.dkr.ecr.{self.world.region}"
                    ".amazonaws.com/inference:latest",
                    "ModelDataUrl": model_data_url,
                }
                if framework is not None:
                    container["Framework"] = framework
                if framework_version is not None:
                    container["FrameworkVersion"] = framework_version
                if data_input_config is not None:
                    container["ModelInput"] = {"DataInputConfig": data_input_config}
                inference_specification = {
                    "Containers": [container],
                    "SupportedContentTypes": ["application/x-image"],
                    "SupportedResponseMIMETypes": ["application/json"],
                }
            problems = _problems(
                service_model().shape_for("InferenceSpecification"),
                inference_specification,
                "InferenceSpecification",
            )
            if description is not None:
                for violation in validation.violations(
                    service_model().shape_for("EntityDescription"),
                    description,
                    (validation.Member("ModelPackageDescription"),),
                ):
                    problems.add(violation)
            problems.raise_value_error()
            if upload:
                self._upload_model_data(model_data_url)
            now = self.world.clock.now()
            arn = self.world.arn("sagemaker", f"model-package/{record.name.lower()}/{version}")
            record.packages[version] = _Package(
                record.name,
                version,
                str(arn),
                now,
                now,
                approval,
                status,
                description,
                json.loads(json.dumps(inference_specification)),
            )
            record.next_version = version + 1
            return version

    def package_arn(self, group: str, version: int) -> str:
        """The ModelPackageArn of ``group`` version ``version`` (KeyError if missing)."""
        with self._lock:
            return self._package_or_keyerror(group, version).arn

    def set_approval_status(self, group: str, version: int, approval: str) -> None:
        """Approve or reject a package version (as UpdateModelPackage would)."""
        _require(approval, APPROVAL_STATUSES, "approval")
        with self._lock:
            package = self._package_or_keyerror(group, version)
            package.approval = approval
            package.modified = self.world.clock.now()

    def set_package_status(self, group: str, version: int, status: str) -> None:
        """Set a package version's ModelPackageStatus."""
        _require(status, PACKAGE_STATUSES, "status")
        with self._lock:
            package = self._package_or_keyerror(group, version)
            package.status = status
            package.modified = self.world.clock.now()

    def delete_model_package(self, group: str, version: int) -> None:
        """Delete a package version; its number is not reused. Jobs compiling it FAIL."""
        with self._lock:
            self._package_or_keyerror(group, version)
            del self._groups[group.lower()].packages[version]

    def create_execution_role(
        self,
        name: str = "SageMakerNeoExecutionRole",
        *,
        trusted_service: str = SAGEMAKER_PRINCIPAL,
        trust_policy: Mapping[str, Any] | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> str:
        """Create an IAM role in moto and return its ARN.

        The trust policy is ``trust_policy``, or one letting ``trusted_service`` assume the
        role. The inline policy ``Neo`` is ``policy``, or one allowing s3:GetObject and
        s3:PutObject on every bucket (Neo needs both when a job finishes).
        """
        trust = trust_policy or {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": trusted_service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        iam = self._client("iam")
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(
            RoleName=name, PolicyName="Neo", PolicyDocument=json.dumps(policy or _S3_READ_WRITE)
        )
        return str(role["Role"]["Arn"])

    def fail_jobs(
        self,
        times: int = 1,
        *,
        reason: str = "ClientError: Compilation failed: injected failure",
        name_prefix: str | None = None,
    ) -> None:
        """Make the next ``times`` compilation jobs that finish (whose name starts with
        ``name_prefix``, when given) end FAILED with FailureReason ``reason``.

        Jobs already running are included: the decision is taken when a job finishes.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._failures.append(_FailurePlan(times, reason, name_prefix))

    def jobs(self) -> list[CompilationJobView]:
        """Snapshots of every compilation job, oldest first (state moves in ``tick``)."""
        with self._lock:
            return [
                CompilationJobView(
                    name=job.name,
                    arn=job.arn,
                    status=job.status,
                    failure_reason=job.failure_reason,
                    model_package_arn=job.request.get("ModelPackageVersionArn"),
                    output_config=json.loads(json.dumps(job.output)),
                    created=job.created,
                    started=job.started,
                    ended=job.ended,
                    artifact_uri=job.artifact_uri,
                )
                for job in self._jobs.values()
            ]

    # -- time -------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Advance every active job whose next transition is due; O(active jobs)."""
        with self._lock:
            for key in list(self._active):
                job = self._jobs[key]
                if job.status == "STARTING" and now >= job.starts_at:
                    job.status = "INPROGRESS"
                    job.started = job.modified = job.starts_at
                if job.status == "INPROGRESS" and now >= job.ends_at:
                    self._finish(job)
                if job.status == "STOPPING" and now >= job.ends_at:
                    job.status = "STOPPED"
                    job.ended = job.modified = job.ends_at
                if job.status not in ACTIVE_JOB_STATUSES:
                    del self._active[key]

    def _finish(self, job: _Job) -> None:
        job.ended = job.modified = job.ends_at
        plan = self._take_failure(job.name)
        if plan is not None:
            return self._fail(job, plan.reason)
        if job.max_runtime_failure:
            limit = job.request["StoppingCondition"]["MaxRuntimeInSeconds"]
            return self._fail(
                job, f"ClientError: Compilation exceeded MaxRuntimeInSeconds ({limit} s)"
            )
        package_arn = job.request.get("ModelPackageVersionArn")
        if package_arn and self._package_by_arn(package_arn) is None:
            return self._fail(job, f"ClientError: ModelPackage {package_arn} no longer exists")
        model_uri = job.input_config["S3Uri"]
        bucket, prefix = _split_s3(job.output["S3OutputLocation"])
        base = model_uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar.gz") or "model"
        key = "/".join(p for p in (prefix.strip("/"), f"{base}-{job.target_label()}.tar.gz") if p)
        if self.check_roles:
            role_arn = job.request["RoleArn"]
            policies = self._role_policies(role_arn.rsplit("/", 1)[-1])
            for action, uri in (
                ("s3:GetObject", model_uri),
                ("s3:PutObject", f"s3://{bucket}/{key}"),
            ):
                denied = _role_denies(role_arn, policies, action, uri)
                if denied is not None:
                    return self._fail(job, denied)
        if not self._object_exists(model_uri):
            return self._fail(
                job,
                f"ClientError: InputConfiguration: Unable to download model data from {model_uri}",
            )
        body = _artifact_bytes(job)
        try:
            self._client("s3").put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/x-gzip"
            )
        except Exception as exc:  # moto refused (bucket gone): the job fails like on AWS
            return self._fail(
                job,
                f"ClientError: OutputConfiguration: Unable to upload to s3://{bucket}/{key}: {exc}",
            )
        job.status = "COMPLETED"
        job.artifact_uri = f"s3://{bucket}/{key}"
        job.artifact_digest = "sha256:" + hashlib.sha256(body).hexdigest()

    def _fail(self, job: _Job, reason: str) -> None:
        job.status = "FAILED"
        job.failure_reason = reason[:1024]

    def _take_failure(self, name: str) -> _FailurePlan | None:
        for plan in self._failures:
            if plan.name_prefix is None or name.startswith(plan.name_prefix):
                plan.remaining -= 1
                if plan.remaining <= 0:
                    self._failures.remove(plan)
                return plan
        return None

    # -- request plumbing -------------------------------------------------------------------
    def _wrap(
        self, operation: str, handler: Callable[[dict[str, Any]], Response]
    ) -> Callable[[Request, dict[str, str]], Response]:
        def run(request: Request, _params: dict[str, str]) -> Response:
            if operation in self.denied_operations:
                raise ServiceError(
                    "AccessDeniedException",
                    f"User is not authorized to perform: sagemaker:{operation}",
                    400,
                )
            values = read_input(operation, request)
            with self._lock:
                return handler(values)

        return run

    def _unknown_operation(self, request: Request, _params: dict[str, str]) -> Response:
        target = request.headers.get("x-amz-target")
        raise ServiceError(
            "UnknownOperationException",
            f"Unknown operation {target!r} at {request.method} {request.path}",
            400,
        )

    # -- model registry ---------------------------------------------------------------------
    def _list_model_packages(self, values: dict[str, Any]) -> Response:
        group_name = values.get("ModelPackageGroupName")
        package_type = values.get("ModelPackageType") or (
            "Versioned" if group_name else "Unversioned"
        )
        packages: list[_Package] = []
        if package_type != "Unversioned":  # every package here is versioned
            groups: Iterable[_Group] = self._groups.values()
            if group_name is not None:
                found = self._group_by_name_or_arn(group_name)
                groups = [found] if found is not None else []
            packages = [p for g in groups for p in g.packages.values()]
        packages = [
            p
            for p in packages
            if _within(p.created, values.get("CreationTimeAfter"), values.get("CreationTimeBefore"))
            and (values.get("ModelApprovalStatus") in (None, p.approval))
            and (values.get("NameContains") is None or values["NameContains"] in p.group)
        ]
        sort_by = values.get("SortBy", "CreationTime")
        packages.sort(
            key=(lambda p: (p.group, p.version))
            if sort_by == "Name"
            else (lambda p: (p.created, p.version)),
            reverse=values.get("SortOrder", "Ascending") == "Descending",
        )
        page, token = self._page("ListModelPackages", packages, values)
        answer: dict[str, Any] = {"ModelPackageSummaryList": [p.summary() for p in page]}
        if token:
            answer["NextToken"] = token
        return _ok(answer)

    def _describe_model_package(self, values: dict[str, Any]) -> Response:
        name = values["ModelPackageName"]
        package = self._package_by_arn(name) if name.startswith("arn:") else None
        if not name.startswith("arn:") and "/" in name:
            group, _, version = name.partition("/")
            found = self._groups.get(group.lower())
            package = found.packages.get(int(version)) if found is not None else None
        if package is None:
            raise _validation(f"ModelPackage {name} does not exist.")
        return _ok(package.describe())

    # -- Neo --------------------------------------------------------------------------------
    def _create_compilation_job(self, values: dict[str, Any]) -> Response:
        name = values["CompilationJobName"]
        output = values["OutputConfig"]
        has_package = values.get("ModelPackageVersionArn") is not None
        if has_package == (values.get("InputConfig") is not None):
            raise _validation(
                "Exactly one of InputConfig and ModelPackageVersionArn must be provided"
                f" ({'both' if has_package else 'neither'} given)."
            )
        _check_target(output)
        if name.lower() in self._jobs:
            raise ServiceError(
                "ResourceInUse", f"Compilation job name {name} already exists in this account.", 400
            )
        self._check_role(values["RoleArn"])
        if has_package:
            input_config = self._input_from_package(values["ModelPackageVersionArn"])
        else:
            input_config = dict(values["InputConfig"])
            _check_input_config(input_config, "InputConfig")
            self._require_bucket(input_config["S3Uri"], "InputConfig.S3Uri")
        self._require_bucket(output["S3OutputLocation"], "OutputConfig.S3OutputLocation")
        active = len(self._active)
        if self.max_active_jobs is not None and active >= self.max_active_jobs:
            raise ServiceError(
                "ResourceLimitExceeded",
                f"The account-level service limit 'Number of concurrent compilation jobs' is "
                f"{self.max_active_jobs} jobs, with current utilization of {active} jobs.",
                400,
            )
        now = self.world.clock.now()
        starts_at = now + min(self.starting_seconds, self.compile_seconds)
        ends_at = now + self.compile_seconds
        max_runtime = values["StoppingCondition"].get("MaxRuntimeInSeconds")
        over_time = max_runtime is not None and ends_at - starts_at > max_runtime
        if over_time:
            ends_at = starts_at + max_runtime
        job = _Job(
            name=name,
            arn=str(self.world.arn("sagemaker", f"compilation-job/{name.lower()}")),
            request=json.loads(json.dumps(values)),
            input_config=input_config,
            created=now,
            starts_at=starts_at,
            ends_at=ends_at,
            modified=now,
            max_runtime_failure=over_time,
        )
        self._jobs[name.lower()] = job
        self._active[name.lower()] = None
        return _ok({"CompilationJobArn": job.arn})

    def _describe_compilation_job(self, values: dict[str, Any]) -> Response:
        return _ok(self._job(values["CompilationJobName"]).describe())

    def _stop_compilation_job(self, values: dict[str, Any]) -> Response:
        job = self._job(values["CompilationJobName"])
        if job.status not in ("STARTING", "INPROGRESS"):
            raise _validation(
                f"The compilation job {job.name} is {job.status} and cannot be stopped."
            )
        now = self.world.clock.now()
        job.status = "STOPPING"
        job.modified = now
        job.ends_at = now + self.stopping_seconds
        return _ok({})

    def _list_compilation_jobs(self, values: dict[str, Any]) -> Response:
        jobs = [
            j
            for j in self._jobs.values()
            if _within(j.created, values.get("CreationTimeAfter"), values.get("CreationTimeBefore"))
            and _within(
                j.modified,
                values.get("LastModifiedTimeAfter"),
                values.get("LastModifiedTimeBefore"),
            )
            and (values.get("NameContains") is None or values["NameContains"] in j.name)
            and values.get("StatusEquals") in (None, j.status)
        ]
        sort_by = values.get("SortBy", "CreationTime")
        order: Callable[[_Job], Any] = {
            "Name": lambda j: j.name,
            "Status": lambda j: (j.status, j.created),
            "CreationTime": lambda j: j.created,
        }[sort_by]
        jobs.sort(key=order, reverse=values.get("SortOrder", "Ascending") == "Descending")
        page, token = self._page("ListCompilationJobs", jobs, values)
        answer: dict[str, Any] = {"CompilationJobSummaries": [j.summary() for j in page]}
        if token:
            answer["NextToken"] = token
        return _ok(answer)

    # -- Neo's checks ------------------------------------------------------------------------
    def _check_role(self, role_arn: str) -> None:
        if not self.check_roles:
            return
        parts = role_arn.split(":")
        role_name = parts[5].rsplit("/", 1)[-1] if len(parts) == 6 else ""
        cannot = f"Could not assume role {role_arn}. Please ensure that the role exists and allows principal '{SAGEMAKER_PRINCIPAL}' to assume the role."
        if parts[4] != self.world.account_id:
            raise _validation(cannot)
        try:
            role = self._client("iam").get_role(RoleName=role_name)["Role"]
        except Exception as exc:  # NoSuchEntity from moto
            raise _validation(cannot) from exc
        if role["Arn"] != role_arn or not _trusts(
            role.get("AssumeRolePolicyDocument"), SAGEMAKER_PRINCIPAL
        ):
            raise _validation(cannot)

    def _role_policies(self, role_name: str) -> list[Any]:
        """The inline and attached policy documents of a role, from (moto's) IAM."""
        iam = self._client("iam")
        documents: list[Any] = []
        try:
            for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
                documents.append(
                    iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
                )
            attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
            for item in attached:
                policy = iam.get_policy(PolicyArn=item["PolicyArn"])["Policy"]
                version = iam.get_policy_version(
                    PolicyArn=item["PolicyArn"], VersionId=policy["DefaultVersionId"]
                )
                documents.append(version["PolicyVersion"]["Document"])
        except Exception:  # the role was deleted meanwhile: it grants nothing
            return []
        return documents

    def _input_from_package(self, arn: str) -> dict[str, Any]:
        package = self._package_by_arn(arn)
        if package is None:
            raise _validation(f"ModelPackage {arn} does not exist.")
        if package.status != "Completed":
            raise _validation(
                f"ModelPackage {arn} is {package.status}; only a Completed model package can be compiled."
            )
        containers = package.inference_specification.get("Containers") or []
        if len(containers) != 1:
            raise _validation(
                f"ModelPackage {arn} has {len(containers)} containers in its InferenceSpecification;"
                " Neo compiles a model package with exactly one container."
            )
        container = containers[0]
        input_config: dict[str, Any] = {}
        where = f"ModelPackage {arn}: InferenceSpecification.Containers[0]"
        if container.get("ModelDataUrl"):
            input_config["S3Uri"] = container["ModelDataUrl"]
        if container.get("Framework"):
            input_config["Framework"] = str(container["Framework"]).upper()
        if container.get("FrameworkVersion"):
            input_config["FrameworkVersion"] = container["FrameworkVersion"]
        shape = (container.get("ModelInput") or {}).get("DataInputConfig")
        if shape:
            input_config["DataInputConfig"] = shape
        for member in ("S3Uri", "Framework", "FrameworkVersion"):
            if member not in input_config:
                label = "ModelDataUrl" if member == "S3Uri" else member
                raise _validation(f"{where}.{label} is required for compilation.")
        _check_input_config(input_config, where)
        self._require_bucket(input_config["S3Uri"], f"{where}.ModelDataUrl")
        return input_config

    def _require_bucket(self, uri: str, member: str) -> None:
        found = _S3_URI.fullmatch(uri)
        if found is None:
            raise _validation(
                f"{member} must be an S3 URI (s3://bucket/prefix), got {_shown(uri)}."
            )
        try:
            location = self._client("s3").get_bucket_location(Bucket=found[1])
        except Exception as exc:  # NoSuchBucket/AccessDenied from moto
            raise _validation(
                f"{member}: the S3 bucket {found[1]} does not exist or is not accessible."
            ) from exc
        region = location.get("LocationConstraint") or "us-east-1"
        if region != self.world.region:
            raise _validation(
                f"{member}: the S3 bucket {found[1]} is in {region}, not in {self.world.region}."
            )

    def _object_exists(self, uri: str) -> bool:
        bucket, key = _split_s3(uri)
        try:
            self._client("s3").head_object(Bucket=bucket, Key=key)
        except Exception:  # 404/403 from moto
            return False
        return True

    def _upload_model_data(self, uri: str) -> None:
        bucket, key = _split_s3(uri)
        s3 = self._client("s3")
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception:  # the registry's bucket is made on first use, in its Region
            where = (
                {}
                if self.world.region == "us-east-1"
                else {"CreateBucketConfiguration": {"LocationConstraint": self.world.region}}
            )
            s3.create_bucket(Bucket=bucket, **where)
        s3.put_object(Bucket=bucket, Key=key, Body=_tar_gz({"model.pth": uri.encode()}))

    def _client(self, service: str) -> Any:
        """Internal moto client (no faults, no call log) for this emulator's account and
        region, from one boto3 session per process: tests create many worlds."""
        if service not in self._clients:
            from botocore.config import Config

            from localcloud.transport import TEST_CREDENTIALS, attach
            from localcloud.world import INTERNAL_ENDPOINT

            # A per-account scope of the world knows its own credentials; a plain World
            # acts in its home account with the test credentials.
            own = getattr(self.world, "client_credentials", None)
            credentials = own() if callable(own) else dict(TEST_CREDENTIALS)
            config = Config(s3={"addressing_style": "path"}) if service == "s3" else None
            made = _boto3_session().client(
                service,
                region_name=self.world.region,
                endpoint_url=INTERNAL_ENDPOINT,
                config=config,
                **credentials,
            )
            self._clients[service] = attach(made, self.world, internal=True)
        return self._clients[service]

    # -- lookups ----------------------------------------------------------------------------
    def _group_or_keyerror(self, group: str) -> _Group:
        found = self._groups.get(group.lower())
        if found is None:
            raise KeyError(f"no model package group {group!r}")
        return found

    def _package_or_keyerror(self, group: str, version: int) -> _Package:
        found = self._group_or_keyerror(group).packages.get(version)
        if found is None:
            raise KeyError(f"no version {version} in model package group {group!r}")
        return found

    def _group_by_name_or_arn(self, value: str) -> _Group | None:
        if value.startswith("arn:"):
            arn = _ARN.fullmatch(value)
            if arn is None or not self._ours(arn) or not arn[5].startswith("model-package-group/"):
                return None
            value = arn[5].split("/", 1)[1]
        return self._groups.get(value.lower())

    def _package_by_arn(self, value: str) -> _Package | None:
        arn = _ARN.fullmatch(value)
        if arn is None or not self._ours(arn):
            return None
        found = re.fullmatch(r"model-package/([^/]+)/([0-9]{1,9})", arn[5])
        if found is None:
            return None
        group = self._groups.get(found[1].lower())
        return group.packages.get(int(found[2])) if group is not None else None

    def _ours(self, arn: re.Match[str]) -> bool:
        return (
            arn[2] == "sagemaker"
            and arn[3] == self.world.region
            and arn[4] == self.world.account_id
        )

    def _job(self, name: str) -> _Job:
        job = self._jobs.get(name.lower())
        if job is None:
            raise ServiceError("ResourceNotFound", f"Could not find compilation job {name}.", 400)
        return job

    def _page(
        self, operation: str, items: list[Any], values: Mapping[str, Any]
    ) -> tuple[list[Any], str | None]:
        """One page of ``items`` and the NextToken bound to this operation and query."""
        query = {k: v for k, v in values.items() if k not in ("NextToken", "MaxResults")}
        binding = hashlib.sha256(
            json.dumps([operation, query], sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        start = 0
        token = values.get("NextToken")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                start = int(decoded["offset"])
                valid = decoded["query"] == binding and 0 <= start <= len(items)
            except (ValueError, KeyError, TypeError, binascii.Error):
                valid = False
            if not valid:
                raise _validation("The NextToken is invalid for this request.")
        size = values.get("MaxResults") or self.default_page_size
        page = items[start : start + size]
        if start + size >= len(items):
            return page, None
        next_token = base64.urlsafe_b64encode(
            json.dumps({"query": binding, "offset": start + size}).encode()
        ).decode()
        return page, next_token


# -- Neo's rules (pure functions) --------------------------------------------------------------


def _check_target(output: Mapping[str, Any]) -> None:
    """TargetDevice xor TargetPlatform, and CompilerOptions that fit the target."""
    device = output.get("TargetDevice")
    platform = output.get("TargetPlatform")
    if (device is None) == (platform is None):
        raise _validation(
            "Exactly one of OutputConfig.TargetDevice and OutputConfig.TargetPlatform must be"
            f" provided ({'both' if device else 'neither'} given)."
        )
    accelerator = platform.get("Accelerator") if platform else None
    nvidia = accelerator == "NVIDIA" or (device or "").startswith("jetson_")
    raw = output.get("CompilerOptions")
    if raw is None:
        if accelerator == "NVIDIA":
            raise _validation(
                "OutputConfig.CompilerOptions is required for Accelerator NVIDIA: give "
                + ", ".join(NVIDIA_OPTIONS)
                + "."
            )
        return
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise _validation(f"OutputConfig.CompilerOptions must be a JSON object: {exc}") from exc
    if not isinstance(options, dict):
        raise _validation("OutputConfig.CompilerOptions must be a JSON object.")
    allowed = {"mcpu", "mattr", "DTYPE"}
    if nvidia:
        allowed |= set(NVIDIA_OPTIONS)
    if platform and platform["Os"] == "ANDROID":
        allowed.add("ANDROID_PLATFORM")
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise _validation(
            f"OutputConfig.CompilerOptions: {', '.join(unknown)} not accepted for this target"
            f" (accepted: {', '.join(sorted(allowed))})."
        )
    if accelerator == "NVIDIA":
        missing = [o for o in NVIDIA_OPTIONS if o not in options]
        if missing:
            raise _validation(
                f"OutputConfig.CompilerOptions for Accelerator NVIDIA must give {', '.join(missing)}."
            )
    for key, value in options.items():
        if key == "mattr":
            flags = value if isinstance(value, list) else [value]
            good = bool(flags) and all(
                isinstance(f, str) and all(_MATTR.fullmatch(x) for x in f.split(",")) for f in flags
            )
        elif key == "ANDROID_PLATFORM":
            good = isinstance(value, int) and not isinstance(value, bool) and 21 <= value <= 29
        else:
            good = isinstance(value, str) and _OPTION_VALUE[key].fullmatch(value) is not None
        if not good:
            raise _validation(
                f"OutputConfig.CompilerOptions: {key} has an invalid value {_shown(value)}."
            )


def _check_input_config(input_config: Mapping[str, Any], where: str) -> None:
    framework = input_config.get("Framework")
    frameworks = service_model().shape_for("Framework").enum  # Neo's InputConfig.Framework
    if framework not in frameworks:
        raise _validation(
            f"{where}: Framework {framework!r} is not one Neo compiles ({', '.join(frameworks)})."
        )
    version = input_config.get("FrameworkVersion")
    if version is not None and re.fullmatch(r"[0-9]\.[A-Za-z0-9.]+", version) is None:
        raise _validation(f"{where}: FrameworkVersion {version!r} is not a version Neo accepts.")
    shape = input_config.get("DataInputConfig")
    if shape is None:
        if framework in NEEDS_INPUT_SHAPE:
            raise _validation(
                f"{where}: DataInputConfig (the input shape) is required for {framework}."
            )
        return
    try:
        parsed = json.loads(shape)
    except ValueError as exc:
        raise _validation(f"{where}: DataInputConfig must be JSON: {exc}") from exc
    if not isinstance(parsed, (dict, list)) or not parsed:
        raise _validation(f"{where}: DataInputConfig must be a non-empty JSON object or list.")


def _trusts(document: Any, principal: str) -> bool:
    """Whether an assume-role policy allows ``principal`` to call sts:AssumeRole."""
    for statement in _statements(document):
        services = (statement.get("Principal") or {}).get("Service")
        if (
            statement.get("Effect") == "Allow"
            and _matches(statement.get("Action"), "sts:AssumeRole", ignore_case=True)
            and principal in (services if isinstance(services, list) else [services])
        ):
            return True
    return False


def _role_denies(role_arn: str, policies: list[Any], action: str, uri: str) -> str | None:
    """Why Neo, running as the role, may not do ``action`` on the S3 object (or None).

    ``policies`` are the role's inline and attached policy documents: an explicit Deny
    wins, else an Allow is needed. Statements with a Condition grant nothing
    here (the emulator does not evaluate conditions): stricter than IAM.
    """
    bucket, key = _split_s3(uri)
    resource = f"arn:aws:s3:::{bucket}/{key}"
    allowed = False
    for document in policies:
        for statement in _statements(document):
            if not (
                _matches(statement.get("Action"), action, ignore_case=True)
                and _matches(statement.get("Resource"), resource)
            ):
                continue
            if statement.get("Effect") == "Deny":
                return f"ClientError: Access denied: {role_arn} is denied {action} on {resource}"
            if statement.get("Effect") == "Allow" and "Condition" not in statement:
                allowed = True
    if allowed:
        return None
    return f"ClientError: Access denied: {role_arn} is not allowed {action} on {resource}"


def _statements(document: Any) -> list[dict[str, Any]]:
    """The statements of a policy document (moto returns it decoded or URL-encoded)."""
    if isinstance(document, str):
        document = json.loads(unquote(document))
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    items = statements if isinstance(statements, list) else [statements]
    return [item for item in items if isinstance(item, dict)]


def _matches(patterns: Any, value: str, *, ignore_case: bool = False) -> bool:
    """IAM wildcard matching (``*`` any run, ``?`` one character) of Action/Resource."""
    items = patterns if isinstance(patterns, list) else [patterns]
    for pattern in items:
        if not isinstance(pattern, str):
            continue
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        if re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0):
            return True
    return False


def _within(value: float, after: float | None, before: float | None) -> bool:
    return (after is None or value > after) and (before is None or value < before)


def _split_s3(uri: str) -> tuple[str, str]:
    found = _S3_URI.fullmatch(uri)
    if found is None:
        raise ValueError(f"not an s3:// URI: {uri}")
    return found[1], found[2]


def _require(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")


def _tar_gz(files: Mapping[str, bytes]) -> bytes:
    """A deterministic .tar.gz (fixed times and owners) of ``files``."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _artifact_bytes(job: _Job) -> bytes:
    """What Neo leaves for the DLR runtime: the compiled library, graph, params and a manifest."""
    manifest = {
        "CompilationJobName": job.name,
        "ModelPackageVersionArn": job.request.get("ModelPackageVersionArn"),
        "InputConfig": job.input_config,
        "Target": job.target_label(),
        "CompilerOptions": job.output.get("CompilerOptions"),
    }
    return _tar_gz(
        {
            "compiled.so": b"\x7fELF emulated " + quote(job.target_label()).encode(),
            "compiled_model.json": json.dumps({"nodes": [], "target": job.target_label()}).encode(),
            "compiled.params": hashlib.sha256(job.input_config["S3Uri"].encode()).digest(),
            "manifest.json": json.dumps(manifest, sort_keys=True).encode(),
        }
    )


# -- out-of-process control (``localcloud.server`` admin API) ------------------------------------


def admin(sm: SageMakerEmulator, action: str, data: Mapping[str, Any]) -> Response:
    """Answer ``POST /_localcloud/sagemaker/<action>`` (see ``localcloud/server.py``).

    KeyError/TypeError/ValueError propagate: the server answers them with a 400.
    """
    if action == "model-packages":
        group = str(data["group"])
        if group.lower() not in sm._groups:
            sm.create_model_package_group(group)
        options = {
            name: data[key]
            for key, name in (
                ("approval", "approval"),
                ("framework", "framework"),
                ("frameworkVersion", "framework_version"),
                ("dataInputConfig", "data_input_config"),
                ("status", "status"),
            )
            if key in data
        }
        version = sm.add_model_package(group, **options)
        return Response.json(200, {"version": version, "arn": sm.package_arn(group, version)})
    if action == "approval":
        sm.set_approval_status(str(data["group"]), int(data["version"]), str(data["approval"]))
        return Response.json(200, {})
    if action == "role":
        return Response.json(
            200,
            {"arn": sm.create_execution_role(str(data.get("name", "SageMakerNeoExecutionRole")))},
        )
    if action == "compilation":
        sm.compile_seconds = float(data["seconds"])
        if "startingSeconds" in data:
            sm.starting_seconds = float(data["startingSeconds"])
        if "maxActiveJobs" in data:
            sm.max_active_jobs = (
                None if data["maxActiveJobs"] is None else int(data["maxActiveJobs"])
            )
        return Response.json(200, {})
    if action == "fail-jobs":
        sm.fail_jobs(
            int(data.get("times", 1)),
            reason=str(data.get("reason", "ClientError: Compilation failed: injected failure")),
            name_prefix=data.get("namePrefix"),
        )
        return Response.json(200, {})
    return Response.json(404, {"error": f"no admin endpoint sagemaker/{action}"})
