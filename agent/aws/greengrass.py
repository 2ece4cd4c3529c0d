"""DeploymentPort adapter for AWS IoT Greengrass V2 (and IoT DescribeThing)."""

from __future__ import annotations

from typing import Any

from agent import errors
from agent.aws.session import AwsClients
from agent.aws.translate import call
from agent.ports import DeploymentProgress, DeploymentSpec


class GreengrassDeployments:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    @property
    def _gg(self) -> Any:
        return self._clients.client("greengrassv2")

    def thing_arn(self, thing_name: str) -> str:
        iot = self._clients.client("iot")
        answer = call("DescribeThing", lambda: iot.describe_thing(thingName=thing_name))
        return str(answer["thingArn"])

    def component_version_exists(self, arn_prefix: str, name: str, version: str) -> bool:
        arn = f"{arn_prefix}:components:{name}:versions:{version}"
        try:
            answer = call("DescribeComponent", lambda: self._gg.describe_component(arn=arn))
        except errors.NotFoundError:
            return False
        state = (answer.get("status") or {}).get("componentState")
        return state in (None, "DEPLOYABLE")

    def latest_deployment(self, target_arn: str) -> DeploymentSpec | None:
        listed = call(
            "ListDeployments",
            lambda: self._gg.list_deployments(targetArn=target_arn, historyFilter="LATEST_ONLY"),
        )
        items = [d for d in listed.get("deployments", []) if d.get("deploymentStatus") != "CANCELED"]
        if not items:
            return None
        latest = max(items, key=lambda d: str(d.get("creationTimestamp", "")))
        deployment_id = str(latest["deploymentId"])
        full = call("GetDeployment", lambda: self._gg.get_deployment(deploymentId=deployment_id))
        return DeploymentSpec(
            deployment_id=deployment_id,
            name=full.get("deploymentName"),
            components=dict(full.get("components") or {}),
            policies=full.get("deploymentPolicies"),
            iot_job_configuration=full.get("iotJobConfiguration"),
            tags=dict(full.get("tags") or {}),
        )

    def create_deployment(self, target_arn: str, spec: DeploymentSpec, client_token: str) -> str:
        kwargs: dict[str, Any] = {
            "targetArn": target_arn,
            "components": spec.components,
            "clientToken": client_token,
        }
        if spec.name:
            kwargs["deploymentName"] = spec.name
        if spec.policies:
            kwargs["deploymentPolicies"] = spec.policies
        if spec.iot_job_configuration:
            kwargs["iotJobConfiguration"] = spec.iot_job_configuration
        if spec.tags:
            kwargs["tags"] = spec.tags
        answer = call("CreateDeployment", lambda: self._gg.create_deployment(**kwargs))
        return str(answer["deploymentId"])

    def progress(self, thing_name: str, deployment_id: str, component_name: str) -> DeploymentProgress:
        """The device's execution and installed component; the deployment's own status
        (GetDeployment) only while the device has no execution of it, which saves a
        call per poll against Greengrass's control-plane rate quota (30 requests/s shared by
        the account's calls in a Region)."""
        execution: dict[str, Any] | None = None
        kwargs: dict[str, Any] = {"coreDeviceThingName": thing_name}
        while execution is None:
            page = call(
                "ListEffectiveDeployments", lambda: self._gg.list_effective_deployments(**kwargs)
            )
            for item in page.get("effectiveDeployments", []):
                if item.get("deploymentId") == deployment_id:
                    execution = item
                    break
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        installed = self.installed_component(thing_name, component_name)
        deployment: dict[str, Any] = {}
        if execution is None:
            deployment = call(
                "GetDeployment", lambda: self._gg.get_deployment(deploymentId=deployment_id)
            )
        reason = None
        if execution is not None:
            reason = execution.get("reason")
            details = execution.get("statusDetails") or {}
            if details.get("errorStack"):
                reason = f"{reason or ''} {details.get('errorStack')}".strip()
        return DeploymentProgress(
            deployment_status=deployment.get("deploymentStatus"),
            execution_status=None if execution is None else execution.get("coreDeviceExecutionStatus"),
            reason=reason,
            installed_version=None if installed is None else installed[0],
            lifecycle_state=None if installed is None else installed[1],
        )

    def installed_component(self, thing_name: str, component_name: str) -> tuple[str, str] | None:
        kwargs: dict[str, Any] = {"coreDeviceThingName": thing_name, "topologyFilter": "ALL"}
        while True:
            page = call(
                "ListInstalledComponents", lambda: self._gg.list_installed_components(**kwargs)
            )
            for item in page.get("installedComponents", []):
                if item.get("componentName") == component_name:
                    return str(item.get("componentVersion")), str(item.get("lifecycleState"))
            if not page.get("nextToken"):
                return None
            kwargs["nextToken"] = page["nextToken"]
