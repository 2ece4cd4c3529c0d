"""PackagingPort adapter for Amazon Lookout for Vision (boto3, the project's own model).

Lookout for Vision creates the Greengrass component itself when a packaging job
SUCCEEDS, so this backend has nothing to do after the job; its job statuses (CREATED,
RUNNING, SUCCEEDED, FAILED) are already the port's words.
"""

from __future__ import annotations

from typing import Any

from agent import errors
from agent.aws.session import AwsClients
from agent.aws.translate import call
from agent.ports import PackagingJob, PackagingRequest

#: Model statuses that can be packaged.
PACKAGEABLE = frozenset({"TRAINED", "HOSTED"})


class LookoutVisionPackaging:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    @property
    def _client(self) -> Any:
        return self._clients.client("lookoutvision")

    def latest_version(self, project: str) -> int:
        """The newest model version of ``project`` that can be packaged (ListModels, all
        pages); NoTrainedModelError when there is none."""
        models = self._models(project)
        ready = [version for version, status in models if status in PACKAGEABLE]
        if not ready:
            raise errors.NoTrainedModelError(
                f"project {project} has no model version in "
                f"{sorted(PACKAGEABLE)} (found {len(models)} version(s))"
            )
        return max(ready)

    def _models(self, project: str) -> list[tuple[int, str]]:
        """(version, status) of every model version of ``project``."""
        models: list[tuple[int, str]] = []
        kwargs: dict[str, Any] = {"ProjectName": project}
        while True:
            page = call("ListModels", lambda: self._client.list_models(**kwargs))
            for item in page.get("Models", []):
                version = str(item.get("ModelVersion", ""))
                if version.isdigit():
                    models.append((int(version), str(item.get("Status", ""))))
            token = page.get("NextToken")
            if not token:
                return models
            kwargs["NextToken"] = token

    def start_packaging(self, request: PackagingRequest) -> str:
        """StartModelPackagingJob; returns the JobName."""
        answer = call(
            "StartModelPackagingJob",
            lambda: self._client.start_model_packaging_job(**request.api_kwargs()),
        )
        return str(answer["JobName"])

    def request_arguments(self, request: PackagingRequest) -> dict[str, Any]:
        """StartModelPackagingJob's arguments: the request has them all."""
        return request.api_kwargs()

    def packaging_status(self, project: str, job_name: str) -> PackagingJob:
        """DescribeModelPackagingJob."""
        answer = call(
            "DescribeModelPackagingJob",
            lambda: self._client.describe_model_packaging_job(ProjectName=project, JobName=job_name),
        )
        job = answer.get("ModelPackagingDescription", {})
        output = job.get("ModelPackagingOutputDetails", {}).get("Greengrass", {}) or {}
        return PackagingJob(
            name=str(job.get("JobName", job_name)),
            model_version=str(job.get("ModelVersion", "")),
            status=str(job.get("Status", "")),
            status_message=job.get("StatusMessage"),
            configuration=job.get("ModelPackagingConfiguration", {}) or {},
            component_name=output.get("ComponentName"),
            component_version=output.get("ComponentVersion"),
        )
