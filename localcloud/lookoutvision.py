"""Amazon Lookout for Vision emulator (API 2020-11-20, REST-JSON).

Serves the operations the edge agent and its tests need: ListProjects, DescribeProject,
ListModels, DescribeModel, StartModelPackagingJob, DescribeModelPackagingJob and
ListModelPackagingJobs. Requests are validated by :mod:`localcloud.validation` against
the world's own 2020-11-20 model in ``localcloud/data`` (lengths, full-match patterns,
enums, required members, JSON types), then against the documented semantic rules of
StartModelPackagingJob; every rejection is a modelled error and leaves no trace in the
state.

Packaging jobs run on the world clock: CREATED, then RUNNING after
``running_after_seconds``, then SUCCEEDED or FAILED after ``packaging_seconds``. On
success the emulator writes a small model artifact to the job's S3 output location
(moto, through ``world.client("s3")``) and registers a Greengrass component version
with ``world.greengrass.register_component_version(recipe)``.

Tests, the demo and benchmarks drive the service side through the Python control API:
:meth:`LookoutVisionEmulator.create_project`, :meth:`~LookoutVisionEmulator.add_model`,
:meth:`~LookoutVisionEmulator.set_model_status`, :meth:`~LookoutVisionEmulator.delete_model`,
:meth:`~LookoutVisionEmulator.fail_jobs` and the read-only :meth:`~LookoutVisionEmulator.jobs`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import heapq
import io
import json
import random
import threading
import zipfile
from dataclasses import dataclass, field
from typing import Any

from localcloud.http import Request, Response, Router, ServiceError, parse_json_body
from localcloud.validation import (
    FieldPath,
    Member,
    constraint_message,
    rest_input,
    service_model,
    summary,
    violations,
)

API_PREFIX = "/2020-11-20"

MODEL_STATUSES = (
    "TRAINING",
    "TRAINED",
    "TRAINING_FAILED",
    "STARTING_HOSTING",
    "HOSTED",
    "HOSTING_FAILED",
    "STOPPING_HOSTING",
    "SYSTEM_UPDATING",
    "DELETING",
)
#: Model statuses whose model can be packaged.
PACKAGEABLE_STATUSES = frozenset({"TRAINED", "HOSTED"})
JOB_STATUSES = ("CREATED", "RUNNING", "SUCCEEDED", "FAILED")

#: How long a ClientToken of StartModelPackagingJob is remembered.
CLIENT_TOKEN_TTL_SECONDS = 8 * 3600.0
#: The Greengrass component every packaged model component depends on.
EDGE_AGENT_COMPONENT = "aws.iot.lookoutvision.EdgeAgent"
EDGE_AGENT_VERSION_REQUIREMENT = ">=0.1.0"
PACKAGING_METHOD = "Greengrass"

_NVIDIA_OPTIONS = frozenset({"gpu-code", "trt-ver", "cuda-ver"})
_CPU_OPTIONS = frozenset({"mcpu", "mattr"})


# ---------------------------------------------------------------------------------------
# Request validation: the project's own 2020-11-20 model (localcloud/data), checked by
# the shared model-driven validator.
# ---------------------------------------------------------------------------------------

SERVICE = "lookoutvision"


def _shape(name: str) -> Any:
    return service_model(SERVICE).shape_for(name)


def _messages(shape: Any, value: Any, path: FieldPath = ()) -> list[str]:
    return [constraint_message(v) for v in violations(shape, value, path)]


def _raise_if(errors: list[str]) -> None:
    if errors:
        raise ServiceError("ValidationException", summary(errors))


def _validated_input(
    operation: str,
    request: Request,
    params: dict[str, str],
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The members of ``operation``'s input, checked against the model (ValidationException)."""
    shape = service_model(SERVICE).operation_model(operation).input_shape
    values = rest_input(shape, params, request.query_value, request.headers.get, lambda: body or {})
    _raise_if(_messages(shape, values))
    return values


def _validation(message: str) -> ServiceError:
    return ServiceError("ValidationException", message, 400)


def _not_found(message: str, resource_id: str, resource_type: str) -> ServiceError:
    return ServiceError(
        "ResourceNotFoundException",
        message,
        404,
        ResourceId=resource_id,
        ResourceType=resource_type,
    )


def _conflict(message: str, resource_id: str, resource_type: str) -> ServiceError:
    return ServiceError(
        "ConflictException", message, 409, ResourceId=resource_id, ResourceType=resource_type
    )


# ---------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------


@dataclass
class _Model:
    version: int
    status: str
    created: float
    description: str | None
    updated: float


@dataclass
class _Project:
    name: str
    arn: str
    created: float
    models: dict[int, _Model] = field(default_factory=dict)
    next_version: int = 1


@dataclass
class _Job:
    name: str
    project: str
    model_version: str
    configuration: dict[str, Any]
    description: str | None
    created: float
    running_at: float
    done_at: float
    status: str = "CREATED"
    status_message: str | None = None
    updated: float = 0.0
    component_version_arn: str | None = None
    artifact_uri: str | None = None
    recipe: dict[str, Any] | None = None
    #: Configuration.Greengrass.Tags, attached to the Greengrass component it registers.
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def greengrass(self) -> dict[str, Any]:
        return self.configuration["Greengrass"]  # type: ignore[no-any-return]


@dataclass
class _TokenRecord:
    fingerprint: str
    job_name: str
    expires: float


@dataclass
class _FailurePlan:
    project: str | None
    remaining: int
    message: str


@dataclass(frozen=True)
class JobView:
    """A read-only snapshot of one packaging job (for tests and benchmarks)."""

    name: str
    project: str
    model_version: str
    status: str
    status_message: str | None
    configuration: dict[str, Any]
    description: str | None
    created: float
    updated: float
    component_name: str
    component_version: str
    component_version_arn: str | None
    artifact_uri: str | None
    recipe: dict[str, Any] | None


# ---------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------


class LookoutVisionEmulator:
    """Lookout for Vision on the world clock. See the module docstring.

    Configuration attributes (change them at any time; a job keeps the durations it
    started with):

    * ``packaging_seconds`` (900): from job creation to SUCCEEDED/FAILED.
    * ``running_after_seconds`` (30): from job creation to RUNNING.
    * ``client_token_ttl_seconds`` (8 h): how long a ClientToken is remembered.
    * ``default_page_size`` (100): page size of List* calls without MaxResults.
    * ``max_active_jobs`` (None = unlimited): more CREATED/RUNNING jobs in the account
      than this and StartModelPackagingJob fails with ServiceQuotaExceededException.
    * ``denied_operations``: operation names answered with AccessDeniedException.
    * ``list_models_lag_seconds`` (0): ListModels (eventually consistent) omits models
      added less than this many seconds ago; DescribeModel sees them at once.
    """

    def __init__(self, world: Any) -> None:
        self.world = world
        self.router = Router()
        self.packaging_seconds: float = 900.0
        self.running_after_seconds: float = 30.0
        self.client_token_ttl_seconds: float = CLIENT_TOKEN_TTL_SECONDS
        self.default_page_size: int = 100
        self.max_active_jobs: int | None = None
        self.denied_operations: set[str] = set()
        self.list_models_lag_seconds: float = 0.0
        self._lock = threading.RLock()
        self._projects: dict[str, _Project] = {}
        #: Jobs by (project, JobName): a job name is unique within its project.
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._tokens: dict[str, _TokenRecord] = {}
        # What tick has to look at, by time (heaps; entries already handled are skipped):
        # each job's transitions (due, creation order, key) and each token's expiry. A
        # naive fleet of 10,000 devices has 10,000 jobs: tick must not visit them all.
        self._job_events: list[tuple[float, int, tuple[str, str]]] = []
        self._token_expiries: list[tuple[float, str]] = []
        #: Jobs by the component (name, version) they make.
        self._by_component: dict[tuple[str, str], list[_Job]] = {}
        self._failures: list[_FailurePlan] = []
        self._random = random.Random(0x4C34)
        self._ticking = False
        self._register_routes()

    def _register_routes(self) -> None:
        add = self.router.add
        projects = f"{API_PREFIX}/projects"
        add("GET", projects, "ListProjects", self._list_projects)
        add("GET", projects + "/{projectName}", "DescribeProject", self._describe_project)
        add("GET", projects + "/{projectName}/models", "ListModels", self._list_models)
        add(
            "GET",
            projects + "/{projectName}/models/{modelVersion}",
            "DescribeModel",
            self._describe_model,
        )
        jobs = projects + "/{projectName}/modelpackagingjobs"
        add("POST", jobs, "StartModelPackagingJob", self._start_job)
        add("GET", jobs, "ListModelPackagingJobs", self._list_jobs)
        add("GET", jobs + "/{jobName}", "DescribeModelPackagingJob", self._describe_job)

    # -- control API --------------------------------------------------------------------
    def create_project(self, name: str) -> str:
        """Create project ``name`` (as if made in the console) and return its ARN.

        Raises ValueError for a name the service would reject or that already exists.
        """
        errors = _messages(_shape("ProjectName"), name, (Member("ProjectName"),))
        if errors:
            raise ValueError("; ".join(errors))
        with self._lock:
            if name in self._projects:
                raise ValueError(f"project {name!r} already exists")
            arn = str(self.world.arn("lookoutvision", f"project/{name}"))
            self._projects[name] = _Project(name, arn, self.world.clock.now())
            return arn

    def add_model(
        self,
        project: str,
        status: str = "TRAINED",
        *,
        version: int | None = None,
        description: str | None = None,
    ) -> int:
        """Add a model version to ``project`` and return its version number.

        Versions auto-increment from the highest ever used in the project (a deleted
        version is never reused); pass ``version`` to choose one that is free and higher
        than 0. ``status`` is any ModelStatus. Raises KeyError for an unknown project and
        ValueError for a bad status, version or description.
        """
        _require_status(status)
        if description is not None:
            errors = _messages(
                _shape("ModelDescriptionMessage"), description, (Member("Description"),)
            )
            if errors:
                raise ValueError("; ".join(errors))
        with self._lock:
            proj = self._project_or_keyerror(project)
            if version is None:
                version = proj.next_version
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(f"version must be a positive int, got {version!r}")
            if version > 9_999_999_999:  # ModelVersion is at most 10 characters
                raise ValueError(f"version {version} is too large")
            if version in proj.models:
                raise ValueError(f"model version {version} already exists in {project!r}")
            now = self.world.clock.now()
            proj.models[version] = _Model(version, status, now, description, now)
            proj.next_version = max(proj.next_version, version + 1)
            return version

    def set_model_status(self, project: str, version: int, status: str) -> None:
        """Set the ModelStatus of an existing model version (KeyError if it is missing)."""
        _require_status(status)
        with self._lock:
            model = self._model_or_keyerror(project, version)
            model.status = status
            model.updated = self.world.clock.now()

    def delete_model(self, project: str, version: int) -> None:
        """Delete a model version (KeyError if it is missing). Jobs already packaging it
        end FAILED."""
        with self._lock:
            self._model_or_keyerror(project, version)
            del self._projects[project].models[version]

    def fail_jobs(
        self,
        project: str | None = None,
        *,
        times: int = 1,
        message: str = "Model packaging failed: injected failure",
    ) -> None:
        """Make the next ``times`` packaging jobs that finish (in ``project``, or in any
        project when None) end FAILED with StatusMessage ``message``.

        Jobs already running are included: the decision is taken when a job finishes.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._failures.append(_FailurePlan(project, times, message))

    def jobs(self, project: str | None = None) -> list[JobView]:
        """Snapshots of the packaging jobs of ``project`` (all when None), oldest first.

        State advances only in ``tick``: call ``world.tick()`` after moving a virtual
        clock to see the current status here.
        """
        with self._lock:
            return [
                _job_view(job)
                for job in self._jobs.values()
                if project is None or job.project == project
            ]

    # -- time ---------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Advance every job whose next transition is due at ``now``; forget expired tokens."""
        with self._lock:
            if self._ticking:
                return
            self._ticking = True
            try:
                expiries = self._token_expiries
                while expiries and expiries[0][0] <= now:
                    _, token = heapq.heappop(expiries)
                    record = self._tokens.get(token)
                    if record is not None and record.expires <= now:
                        del self._tokens[token]
                events = self._job_events
                while events and events[0][0] <= now:
                    job = self._jobs[heapq.heappop(events)[2]]
                    if (
                        job.status == "CREATED"
                        and now >= job.running_at
                        and job.running_at < job.done_at
                    ):
                        job.status = "RUNNING"
                        job.updated = job.running_at
                    if job.status in ("CREATED", "RUNNING") and now >= job.done_at:
                        self._finish(job)
            finally:
                self._ticking = False

    def _finish(self, job: _Job) -> None:
        job.updated = job.done_at
        gg = job.greengrass
        plan = self._take_failure(job.project)
        if plan is not None:
            self._fail(job, plan)
            return
        project = self._projects.get(job.project)
        if project is None or int(job.model_version) not in project.models:
            self._fail(
                job, f"Model version {job.model_version} of project {job.project} no longer exists"
            )
            return
        location = gg["S3OutputLocation"]
        bucket = location["Bucket"]
        if not self._bucket_exists(bucket):
            self._fail(job, f"The S3 output bucket {bucket} does not exist or is not accessible")
            return
        key = _artifact_key(location.get("Prefix"), gg["ComponentName"], gg["ComponentVersion"])
        try:
            self.world.client("s3").put_object(
                Bucket=bucket, Key=key, Body=_artifact_bytes(job), ContentType="application/zip"
            )
        except Exception as exc:  # moto answered an error: the job fails like on AWS
            self._fail(job, f"Could not write the model artifact to s3://{bucket}/{key}: {exc}")
            return
        job.artifact_uri = f"s3://{bucket}/{key}"
        job.recipe = self._recipe(job)
        gg_emulator: Any = getattr(self.world, "greengrass", None)
        if _has(gg_emulator, "component_version_exists") and gg_emulator.component_version_exists(
            gg["ComponentName"], gg["ComponentVersion"]
        ):
            self._fail(
                job,
                f"Component {gg['ComponentName']} version {gg['ComponentVersion']} already exists",
            )
            return
        if _has(gg_emulator, "register_component_version"):
            try:
                job.component_version_arn = str(
                    gg_emulator.register_component_version(
                        job.recipe, tags=job.tags, created_at=job.done_at
                    )
                )
            except Exception as exc:  # Greengrass refused the recipe: the job fails
                self._fail(job, f"Could not create the Greengrass component version: {exc}")
                return
        else:  # Greengrass emulator not available yet: the ARN it would return
            job.component_version_arn = self.world.arn(
                "greengrass",
                f"components:{gg['ComponentName']}:versions:{gg['ComponentVersion']}",
            )
        job.status = "SUCCEEDED"
        job.status_message = None

    def _fail(self, job: _Job, reason: _FailurePlan | str) -> None:
        job.status = "FAILED"
        job.status_message = reason if isinstance(reason, str) else reason.message

    def _take_failure(self, project: str) -> _FailurePlan | None:
        for plan in self._failures:
            if plan.project in (None, project):
                plan.remaining -= 1
                if plan.remaining <= 0:
                    self._failures.remove(plan)
                return plan
        return None

    def _bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket exists in this account and in this region (AWS requires both)."""
        try:
            answer = self.world.client("s3").head_bucket(Bucket=bucket)
        except Exception:  # 404/403 from moto, or a name moto refuses
            return False
        return answer.get("BucketRegion") in (None, self.world.region)

    def _recipe(self, job: _Job) -> dict[str, Any]:
        gg = job.greengrass
        description = gg.get("ComponentDescription") or (
            f"Lookout for Vision model {job.model_version} of project {job.project}"
        )
        return {
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": gg["ComponentName"],
            "ComponentVersion": gg["ComponentVersion"],
            "ComponentDescription": description,
            "ComponentPublisher": "Amazon Lookout for Vision (local emulator)",
            "ComponentDependencies": {
                EDGE_AGENT_COMPONENT: {
                    "VersionRequirement": EDGE_AGENT_VERSION_REQUIREMENT,
                    "DependencyType": "HARD",
                }
            },
            "ComponentConfiguration": {
                "DefaultConfiguration": {
                    "ProjectName": job.project,
                    "ModelVersion": job.model_version,
                    "PackagingJobName": job.name,
                }
            },
            "Manifests": [
                {
                    "Platform": {"os": "linux", "architecture": _architecture(gg)},
                    "Artifacts": [{"Uri": job.artifact_uri, "Unarchive": "ZIP"}],
                }
            ],
        }

    # -- handlers -----------------------------------------------------------------------
    def _list_projects(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize("ListProjects")
        values = _validated_input("ListProjects", request, params)
        page_size, offset = self._page_args(values, "ListProjects", "")
        with self._lock:
            items = [
                {"ProjectArn": p.arn, "ProjectName": p.name, "CreationTimestamp": p.created}
                for p in self._projects.values()
            ]
        return Response.json(
            200, self._page(items, "Projects", "ListProjects", "", page_size, offset)
        )

    def _describe_project(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize("DescribeProject")
        _validated_input("DescribeProject", request, params)
        project = self._project(params)
        return Response.json(
            200,
            {
                "ProjectDescription": {
                    "ProjectArn": project.arn,
                    "ProjectName": project.name,
                    "CreationTimestamp": project.created,
                    "Datasets": [],
                }
            },
        )

    def _list_models(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize("ListModels")
        values = _validated_input("ListModels", request, params)
        name = values["ProjectName"]
        page_size, offset = self._page_args(values, "ListModels", name)
        project = self._project(params)
        visible_before = self.world.clock.now() - self.list_models_lag_seconds
        with self._lock:
            items = [
                self._model_metadata(project, model)
                for _, model in sorted(project.models.items())
                if self.list_models_lag_seconds <= 0 or model.created <= visible_before
            ]
        return Response.json(
            200, self._page(items, "Models", "ListModels", name, page_size, offset)
        )

    def _describe_model(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize("DescribeModel")
        _validated_input("DescribeModel", request, params)
        name = params["projectName"]
        project = self._project(params)
        with self._lock:
            wanted = params["modelVersion"]
            if wanted == "latest":
                if not project.models:
                    raise _not_found(f"Project {name} has no models", f"{name}/latest", "MODEL")
                model = project.models[max(project.models)]
            else:
                found = project.models.get(int(wanted))
                if found is None:
                    raise _not_found(
                        f"Model version {wanted} does not exist in project {name}",
                        f"{name}/{wanted}",
                        "MODEL",
                    )
                model = found
            description = self._model_metadata(project, model)
            description.update(self._model_details(project, model))
        return Response.json(200, {"ModelDescription": description})

    def _start_job(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize("StartModelPackagingJob")
        body = parse_json_body(request, allow_empty=False)
        values = _validated_input("StartModelPackagingJob", request, params, body)
        name = values["ProjectName"]
        token: str | None = values.get("ClientToken")
        gg = body["Configuration"]["Greengrass"]
        _check_target(gg)
        now = self.world.clock.now()
        fingerprint = json.dumps({"project": name, "body": body}, sort_keys=True)
        with self._lock:
            if token is not None:
                record = self._tokens.get(token)
                if record is not None and record.expires > now:
                    if record.fingerprint == fingerprint:
                        return Response.json(200, {"JobName": record.job_name})
                    raise _conflict(
                        f"Client token {token} was already used with different parameters",
                        token,
                        "MODEL_PACKAGE_JOB",
                    )
            project = self._project(params)
            model = self._packageable_model(project, body["ModelVersion"])
            job_name = body.get("JobName")
            if job_name is not None and (name, job_name) in self._jobs:
                raise _conflict(
                    f"A model packaging job named {job_name} already exists in project {name}",
                    job_name,
                    "MODEL_PACKAGE_JOB",
                )
            component = gg["ComponentName"]
            version = gg.get("ComponentVersion") or f"{model.version}.0.0"
            if self._component_taken(component, version):
                raise _conflict(
                    f"Component {component} version {version} already exists",
                    f"{component}:{version}",
                    "MODEL_PACKAGE_JOB",
                )
            bucket = gg["S3OutputLocation"]["Bucket"]
            if not self._bucket_exists(bucket):
                raise _validation(
                    f"The S3 bucket {bucket} does not exist in {self.world.region} or is not "
                    "accessible"
                )
            active = (
                0
                if self.max_active_jobs is None
                else sum(1 for j in self._jobs.values() if j.status in ("CREATED", "RUNNING"))
            )
            if self.max_active_jobs is not None and active >= self.max_active_jobs:
                raise ServiceError(
                    "ServiceQuotaExceededException",
                    f"The account already has {active} active model packaging jobs",
                    402,
                    QuotaCode="concurrent-model-packaging-jobs",
                    ServiceCode="lookoutvision",
                    ResourceId=name,
                    ResourceType="PROJECT",
                )
            if job_name is None:
                job_name = self._new_job_name(name)
            configuration = copy.deepcopy(body["Configuration"])
            configuration["Greengrass"]["ComponentVersion"] = version
            job = _Job(
                name=job_name,
                project=name,
                model_version=str(model.version),
                configuration=configuration,
                description=body.get("Description"),
                created=now,
                running_at=now + self.running_after_seconds,
                done_at=now + self.packaging_seconds,
                updated=now,
                tags={tag["Key"]: tag["Value"] for tag in gg.get("Tags") or []},
            )
            self._jobs[(name, job_name)] = job
            order = len(self._jobs)
            for due in (job.running_at, job.done_at):
                heapq.heappush(self._job_events, (due, order, (name, job_name)))
            made = (job.greengrass["ComponentName"], job.greengrass["ComponentVersion"])
            self._by_component.setdefault(made, []).append(job)
            if token is not None:
                expires = now + self.client_token_ttl_seconds
                self._tokens[token] = _TokenRecord(fingerprint, job_name, expires)
                heapq.heappush(self._token_expiries, (expires, token))
        return Response.json(200, {"JobName": job_name})

    def _describe_job(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize("DescribeModelPackagingJob")
        _validated_input("DescribeModelPackagingJob", request, params)
        name, job_name = params["projectName"], params["jobName"]
        self._project(params)
        with self._lock:
            job = self._jobs.get((name, job_name))
            if job is None:
                raise _not_found(
                    f"Model packaging job {job_name} does not exist in project {name}",
                    job_name,
                    "MODEL_PACKAGE_JOB",
                )
            description = self._job_metadata(job)
            description["ModelPackagingConfiguration"] = copy.deepcopy(job.configuration)
            if job.status == "SUCCEEDED":
                gg = job.greengrass
                description["ModelPackagingOutputDetails"] = {
                    "Greengrass": {
                        "ComponentVersionArn": job.component_version_arn,
                        "ComponentName": gg["ComponentName"],
                        "ComponentVersion": gg["ComponentVersion"],
                    }
                }
        return Response.json(200, {"ModelPackagingDescription": description})

    def _list_jobs(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize("ListModelPackagingJobs")
        values = _validated_input("ListModelPackagingJobs", request, params)
        name = values["ProjectName"]
        page_size, offset = self._page_args(values, "ListModelPackagingJobs", name)
        self._project(params)
        with self._lock:
            items = [self._job_metadata(j) for j in self._jobs.values() if j.project == name]
        page = self._page(
            items, "ModelPackagingJobs", "ListModelPackagingJobs", name, page_size, offset
        )
        return Response.json(200, page)

    # -- handler helpers ------------------------------------------------------------------
    def _authorize(self, operation: str) -> None:
        if operation in self.denied_operations:
            raise ServiceError(
                "AccessDeniedException",
                f"User is not authorized to perform: lookoutvision:{operation}",
                403,
            )

    def _project(self, params: dict[str, str]) -> _Project:
        """The project of a request whose input is already validated."""
        name = params["projectName"]
        with self._lock:
            project = self._projects.get(name)
        if project is None:
            raise _not_found(f"Project {name} does not exist", name, "PROJECT")
        return project

    def _packageable_model(self, project: _Project, wanted: str) -> _Model:
        if wanted == "latest":
            candidates = [m for m in project.models.values() if m.status in PACKAGEABLE_STATUSES]
            if not candidates:
                if not project.models:
                    raise _not_found(
                        f"Project {project.name} has no models", f"{project.name}/latest", "MODEL"
                    )
                raise _validation(
                    f"Project {project.name} has no model in status TRAINED or HOSTED"
                )
            return max(candidates, key=lambda m: m.version)
        model = project.models.get(int(wanted))
        if model is None:
            raise _not_found(
                f"Model version {wanted} does not exist in project {project.name}",
                f"{project.name}/{wanted}",
                "MODEL",
            )
        if model.status not in PACKAGEABLE_STATUSES:
            raise _validation(
                f"Model version {wanted} is in status {model.status}; only a TRAINED or HOSTED "
                "model can be packaged"
            )
        return model

    def _component_taken(self, name: str, version: str) -> bool:
        gg_emulator: Any = getattr(self.world, "greengrass", None)
        if _has(gg_emulator, "component_version_exists") and gg_emulator.component_version_exists(
            name, version
        ):
            return True
        return any(j.status != "FAILED" for j in self._by_component.get((name, version), []))

    def _new_job_name(self, project: str) -> str:
        stem = project.replace("_", "-").strip("-")[:40] or "job"
        while True:
            candidate = f"{stem}-{self._random.getrandbits(48):012x}"
            if (project, candidate) not in self._jobs:
                return candidate

    def _page_args(self, values: dict[str, Any], operation: str, scope: str) -> tuple[int, int]:
        """(page size, start offset) of validated ``MaxResults``/``NextToken``."""
        page_size: int = values.get("MaxResults", self.default_page_size)
        token: str | None = values.get("NextToken")
        offset = 0 if token is None else _decode_token(token, operation, scope)
        return page_size, offset

    @staticmethod
    def _page(
        items: list[dict[str, Any]],
        key: str,
        operation: str,
        scope: str,
        page_size: int,
        offset: int,
    ) -> dict[str, Any]:
        page: dict[str, Any] = {key: items[offset : offset + page_size]}
        if offset + page_size < len(items):
            page["NextToken"] = _encode_token(operation, scope, offset + page_size)
        return page

    def _model_metadata(self, project: _Project, model: _Model) -> dict[str, Any]:
        out: dict[str, Any] = {
            "CreationTimestamp": model.created,
            "ModelVersion": str(model.version),
            "ModelArn": self.world.arn("lookoutvision", f"model/{project.name}/{model.version}"),
            "Status": model.status,
            "StatusMessage": _STATUS_MESSAGES[model.status],
        }
        if model.description is not None:
            out["Description"] = model.description
        if _has_performance(model.status):
            out["Performance"] = {"F1Score": 0.95, "Recall": 0.94, "Precision": 0.96}
        return out

    def _model_details(self, project: _Project, model: _Model) -> dict[str, Any]:
        bucket = f"lookoutvision-{self.world.region}-{self.world.account_id}"
        prefix = f"{project.name}/model-{model.version}/"
        out: dict[str, Any] = {"OutputConfig": {"S3Location": {"Bucket": bucket, "Prefix": prefix}}}
        if _has_performance(model.status):
            out["EvaluationManifest"] = {
                "Bucket": bucket,
                "Key": prefix + "evaluation-manifest.json",
            }
            out["EvaluationResult"] = {"Bucket": bucket, "Key": prefix + "evaluation-result.json"}
            out["EvaluationEndTimestamp"] = model.created
        if model.status == "HOSTED":
            out["MinInferenceUnits"] = 1
            out["MaxInferenceUnits"] = 1
        return out

    @staticmethod
    def _job_metadata(job: _Job) -> dict[str, Any]:
        out: dict[str, Any] = {
            "JobName": job.name,
            "ProjectName": job.project,
            "ModelVersion": job.model_version,
            "ModelPackagingMethod": PACKAGING_METHOD,
            "Status": job.status,
            "CreationTimestamp": job.created,
            "LastUpdatedTimestamp": job.updated,
        }
        if job.description is not None:
            out["ModelPackagingJobDescription"] = job.description
        if job.status_message is not None:
            out["StatusMessage"] = job.status_message
        return out

    def _project_or_keyerror(self, project: str) -> _Project:
        found = self._projects.get(project)
        if found is None:
            raise KeyError(f"no project {project!r}")
        return found

    def _model_or_keyerror(self, project: str, version: int) -> _Model:
        found = self._project_or_keyerror(project).models.get(version)
        if found is None:
            raise KeyError(f"no model version {version} in project {project!r}")
        return found


# ---------------------------------------------------------------------------------------
# Module helpers
# ---------------------------------------------------------------------------------------

_STATUS_MESSAGES = {
    "TRAINING": "Training in progress.",
    "TRAINED": "Training completed successfully.",
    "TRAINING_FAILED": "Training failed.",
    "STARTING_HOSTING": "Hosting starting.",
    "HOSTED": "Model is hosted.",
    "HOSTING_FAILED": "Hosting failed.",
    "STOPPING_HOSTING": "Hosting stopping.",
    "SYSTEM_UPDATING": "System update in progress.",
    "DELETING": "Model is being deleted.",
}


def _require_status(status: str) -> None:
    if status not in MODEL_STATUSES:
        raise ValueError(f"status must be one of {MODEL_STATUSES}, got {status!r}")


def _has_performance(status: str) -> bool:
    return status not in ("TRAINING", "TRAINING_FAILED")


def _has(obj: Any, method: str) -> bool:
    return obj is not None and callable(getattr(obj, method, None))


def _check_target(gg: dict[str, Any]) -> None:
    """The rules on TargetDevice, TargetPlatform and CompilerOptions."""
    device = gg.get("TargetDevice")
    platform: Any = gg.get("TargetPlatform")
    options = gg.get("CompilerOptions")
    if (device is None) == (platform is None):
        raise _validation("Specify exactly one of TargetDevice and TargetPlatform")
    if device is not None:
        if options is not None:
            raise _validation("CompilerOptions cannot be specified with TargetDevice")
        return
    nvidia = platform.get("Accelerator") == "NVIDIA"
    if options is None:
        if nvidia:
            raise _validation(
                "CompilerOptions with gpu-code, trt-ver and cuda-ver are required for "
                "TargetPlatform Accelerator NVIDIA"
            )
        return
    try:
        parsed = json.loads(options)
    except ValueError:
        raise _validation("CompilerOptions must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise _validation("CompilerOptions must be a JSON object")
    allowed = _NVIDIA_OPTIONS if nvidia else _CPU_OPTIONS
    unknown = sorted(set(parsed) - allowed)
    if unknown:
        target = "an NVIDIA" if nvidia else "a CPU"
        raise _validation(f"CompilerOptions keys {unknown} are not valid for {target} target")
    if nvidia:
        missing = sorted(k for k in _NVIDIA_OPTIONS if not _nonempty_str(parsed.get(k)))
        if missing:
            raise _validation(
                f"CompilerOptions for an NVIDIA accelerator must give {', '.join(missing)}"
            )
        return
    if "mcpu" in parsed and not _nonempty_str(parsed["mcpu"]):
        raise _validation("CompilerOptions mcpu must be a non-empty string")
    mattr = parsed.get("mattr")
    if mattr is not None and not (
        _nonempty_str(mattr)
        or (isinstance(mattr, list) and mattr and all(_nonempty_str(a) for a in mattr))
    ):
        raise _validation("CompilerOptions mattr must be a string or a list of strings")


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _architecture(gg: dict[str, Any]) -> str:
    """Greengrass platform architecture of a packaging target."""
    if gg.get("TargetDevice") is not None:
        return "aarch64"  # jetson_xavier
    return "aarch64" if gg["TargetPlatform"]["Arch"] == "ARM64" else "amd64"


def _artifact_key(prefix: str | None, component: str, version: str) -> str:
    leaf = f"{component}/{version}/model.zip"
    if not prefix:
        return leaf
    return f"{prefix.rstrip('/')}/{leaf}"


def _artifact_bytes(job: _Job) -> bytes:
    """A small, deterministic zip holding a JSON manifest of the packaged model."""
    gg = job.greengrass
    manifest = {
        "format": "localcloud-l4v-model/1",
        "project": job.project,
        "modelVersion": job.model_version,
        "jobName": job.name,
        "componentName": gg["ComponentName"],
        "componentVersion": gg["ComponentVersion"],
        "targetDevice": gg.get("TargetDevice"),
        "targetPlatform": gg.get("TargetPlatform"),
        "compilerOptions": gg.get("CompilerOptions"),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("manifest.json", date_time=(2020, 11, 20, 0, 0, 0))
        archive.writestr(info, json.dumps(manifest, indent=2, sort_keys=True))
    return buffer.getvalue()


def _encode_token(operation: str, scope: str, offset: int) -> str:
    raw = json.dumps({"op": operation, "scope": scope, "offset": offset}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def _decode_token(token: str, operation: str, scope: str) -> int:
    """The offset a NextToken we issued stands for, or ValidationException."""
    invalid = _validation("The pagination token is invalid")
    try:
        data = json.loads(base64.b64decode(token.encode(), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(data, dict) or data.get("op") != operation or data.get("scope") != scope:
        raise invalid
    offset = data.get("offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 1:
        raise invalid
    return offset


def _job_view(job: _Job) -> JobView:
    gg = job.greengrass
    return JobView(
        name=job.name,
        project=job.project,
        model_version=job.model_version,
        status=job.status,
        status_message=job.status_message,
        configuration=copy.deepcopy(job.configuration),
        description=job.description,
        created=job.created,
        updated=job.updated,
        component_name=gg["ComponentName"],
        component_version=gg["ComponentVersion"],
        component_version_arn=job.component_version_arn,
        artifact_uri=job.artifact_uri,
        recipe=copy.deepcopy(job.recipe),
    )
