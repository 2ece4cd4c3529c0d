"""``python -m agent plan``: what the agent would do now, using read-only calls only.

It runs the same decision code as the daemon (``agent.decide``): read-only calls are
performed, records are applied to an in-memory view only, and it stops at the first call
that would change the cloud, printing every action on the way. It writes nothing: the
ledger is opened read-only (or, when there is none yet, an empty one in memory), and the
thing's ARN is not cached. Waits are not waited for: it shows what happens when the next
step is due.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agent import errors
from agent.decide import (
    Answers,
    Call,
    CreateDeployment,
    FindLatestVersion,
    LookUpThingArn,
    Observation,
    ReadLatestDeployment,
    Record,
    StartPackaging,
    Wait,
)
from agent.rollout import Phase

if TYPE_CHECKING:
    from agent.daemon import Agent
    from agent.reconciler import Reconciler

#: Decisions followed at most (a rollout has four phases before it ends).
MAX_DECISIONS = 8


def plan(agent: Agent) -> int:
    """Print the plan as JSON; returns the exit code."""
    if agent.reconciler is None:
        print(json.dumps({"supported": False, "error": str(agent.platform_error)}, indent=2))
        return 3
    out = plan_of(agent.reconciler, agent.clock.now())
    print(json.dumps(out, indent=2, default=str))
    return 1 if "error" in out else 0


def plan_of(reconciler: Reconciler, now: float) -> dict[str, Any]:
    """What ``reconciler`` would do at ``now`` if its next step were due: a summary
    (``action``, versions, the packaging request and deployment it would send), every
    action on the way (``actions``) and ``error`` when a read failed."""
    settings = reconciler.settings
    out: dict[str, Any] = {"thingName": settings.thing_name, "platformKey": reconciler.platform.key}
    observation = reconciler.observe(now, check_requested=True)
    out.update(deployedVersion=observation.facts.deployed_version, desiredVersion=settings.pinned_version)
    active = observation.rollout
    if active is not None:
        out.update(action=f"continue rollout {active.id} ({active.phase.value})", desiredVersion=active.model_version)
    try:
        out["actions"] = _follow(reconciler, observation, out)
    except errors.AgentError as exc:
        out["error"] = {"type": exc.kind, "message": exc.message}
    out.setdefault("action", "nothing: up to date")  # the rollout in progress ends
    return out


def _follow(reconciler: Reconciler, observation: Observation, out: dict[str, Any]) -> list[dict[str, Any]]:
    """Decide, perform read-only calls and apply records in memory until a call would
    write; fills ``out``'s summary and returns the actions."""
    actions: list[dict[str, Any]] = []
    known = observation.facts
    for _ in range(MAX_DECISIONS):
        answers = Answers()
        while True:
            action = reconciler.decider.decide(observation, answers)
            actions.append(action.describe())
            if not isinstance(action, Call) or action.writes:
                break
            answer = reconciler.perform(action, remember=False)
            if isinstance(answer, bool | int | str):
                actions[-1]["answer"] = answer
            if isinstance(action, LookUpThingArn) and isinstance(answer, str):
                known = replace(known, thing_arn=answer)  # for the next decisions
            if isinstance(action, FindLatestVersion) and isinstance(answer, int):
                out["desiredVersion"] = answer
            if isinstance(action, ReadLatestDeployment) and not isinstance(answer, errors.AgentError):
                out["replaces"] = None if answer is None else answer.deployment_id
            if isinstance(answer, errors.AgentError) and not isinstance(action, FindLatestVersion):
                actions[-1]["answer"] = {"type": answer.kind, "message": answer.message}
            answers.add(action, answer)
        if isinstance(action, StartPackaging):
            out.setdefault("action", "package, then deploy")
            try:
                # The backend fills in what reading calls tell (e.g. a package's ARN).
                out["packagingRequest"] = reconciler.packaging.request_arguments(action.request)
            except errors.AgentError as exc:
                out["packagingRequest"] = action.request.api_kwargs()
                actions[-1]["answer"] = {"type": exc.kind, "message": exc.message}
                out["error"] = {"type": exc.kind, "message": exc.message}
                return actions
            # What follows once the job has made the component: the deployment.
            rollout = observation.rollout
            assert rollout is not None
            observation = Observation(
                now=observation.now,
                rollout=rollout.model_copy(update={"phase": Phase.DEPLOY_REQUESTED}),
                facts=known,
                check_requested=True,
            )
            continue
        if isinstance(action, CreateDeployment):
            out.setdefault("action", "deploy existing component")
            out.setdefault("packagingRequest", None)
            out["deployment"] = {
                "targetArn": action.target_arn,
                "replaces": out.pop("replaces", None),
                "components": action.spec.components,
            }
            return actions
        if isinstance(action, Wait):
            out.setdefault("action", f"wait {action.seconds:.0f} s")
            return actions
        if not isinstance(action, Record):
            return actions
        if action.rollout is None or action.rollout.phase.ended:
            if action.error is not None:
                out["error"] = {"type": action.error.type, "message": action.error.message}
            ended = action.event.value if action.event is not None else None
            out.setdefault("action", f"nothing: {ended or action.detail or 'up to date'}")
            return actions
        if out.get("desiredVersion") is None:
            out["desiredVersion"] = action.rollout.model_version
        known = known.changed(action.facts) if action.facts else known
        observation = Observation(
            now=observation.now,
            rollout=action.rollout,
            facts=known.changed(action.facts) if action.facts else known,
            check_requested=True,
        )
    return actions

