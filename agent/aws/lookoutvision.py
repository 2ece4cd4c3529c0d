"""PackagingPort adapter for Amazon Lookout for Vision (boto3, the project's own model)."""

from __future__ import annotations

from typing import Any

from agent.aws.session import AwsClients
from agent.aws.translate import call
from agent.model import PackagingRequest
from agent.ports import ModelInfo, PackagingJob


class LookoutVisionPackaging:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    @property
    def _client(self) -> Any:
        return self._clients.client("lookoutvision")

    def list_models(self, project: str) -> list[ModelInfo]:
        """Every model version of ``project`` (all pages)."""
        models: list[ModelInfo] = []
        kwargs: dict[str, Any] = {"ProjectName": project}
        while True:
            page = call("ListModels", lambda: self._client.list_models(**kwargs))
            for item in page.get("Models", []):
                version = str(item.get("ModelVersion", ""))
                if version.isdigit():
                    models.append(ModelInfo(int(version), str(item.get("Status", ""))))
            token = page.get("NextToken")
            if not token:
                return models
            kwargs["NextToken"] = token

    def start_job(self, request: PackagingRequest) -> str:
        answer = call(
            "StartModelPackagingJob",
            lambda: self._client.start_model_packaging_job(**request.api_kwargs()),
        )
        return str(answer["JobName"])

    def describe_job(self, project: str, job_name: str) -> PackagingJob:
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
