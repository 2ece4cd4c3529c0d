"""``python -m agent plan``: what the agent would do now, using read-only calls only.

It writes nothing: the ledger is opened read-only (or, when there is none yet, an empty
one in memory), and the thing's ARN is not cached.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agent import errors

if TYPE_CHECKING:
    from agent.daemon import Agent


def plan(agent: Agent) -> int:
    """Print the plan as JSON; returns the exit code."""
    if agent.reconciler is None:
        print(json.dumps({"supported": False, "error": str(agent.platform_error)}, indent=2))
        return 3
    reconciler = agent.reconciler
    settings = reconciler.settings
    out: dict[str, Any] = {"thingName": settings.thing_name, "platformKey": reconciler.platform.key}
    try:
        deployed = int(agent.ledger.get("deployed_version", "0") or 0)
        if settings.pinned_version is not None:
            desired = settings.pinned_version
        else:
            models = reconciler.packaging.list_models(settings.project)
            ready = [m.version for m in models if m.status in ("TRAINED", "HOSTED")]
            if not ready:
                raise errors.NoTrainedModelError(f"project {settings.project} has no trained model")
            desired = max(ready)
        out.update(deployedVersion=deployed or None, desiredVersion=desired)
        active = agent.ledger.active_rollout()
        if active is not None:
            out["action"] = f"continue rollout {active.id} ({active.phase.value})"
        elif desired <= deployed and settings.pinned_version is None:
            out["action"] = "nothing: up to date"
        else:
            request = reconciler.request_for(desired, 1)
            name = request.greengrass.component_name
            version = request.greengrass.component_version or ""
            exists = reconciler.deployments.component_version_exists(
                reconciler.arn_prefix(remember=False), name, version
            )
            target = settings.target_arn or reconciler.thing_arn(remember=False)
            latest = reconciler.deployments.latest_deployment(target)
            merged = reconciler.merged_deployment(latest, name, version)
            out["action"] = "deploy existing component" if exists else "package, then deploy"
            out["packagingRequest"] = None if exists else request.api_kwargs()
            out["deployment"] = {
                "targetArn": target,
                "replaces": latest.deployment_id if latest else None,
                "components": merged.components,
            }
    except errors.AgentError as exc:
        out["error"] = {"type": exc.kind, "message": exc.message}
        print(json.dumps(out, indent=2, default=str))
        return 1
    print(json.dumps(out, indent=2, default=str))
    return 0
