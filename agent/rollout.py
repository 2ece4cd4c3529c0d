"""The rollout: one attempt to get one model version running on this device, and the
phases it goes through (stored in the ledger, acted on by ``agent.decide``)."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict


class Phase(str, Enum):
    """Where a rollout is. The ledger stores the value; the reconciler acts on it."""

    PACKAGING_REQUESTED = "PACKAGING_REQUESTED"  # about to call StartModelPackagingJob
    PACKAGING = "PACKAGING"  # job known, waiting for SUCCEEDED
    DEPLOY_REQUESTED = "DEPLOY_REQUESTED"  # component exists, about to CreateDeployment
    DEPLOYING = "DEPLOYING"  # deployment created, waiting for RUNNING
    SUCCEEDED = "SUCCEEDED"  # the component runs on the device
    FAILED = "FAILED"  # ended; a later attempt may follow after back-off
    #: ended: canary failures of this version and platform reached the halt threshold
    #: before this device's wave deployed it; lifted by a newer version or a
    #: deploy-version command for it
    HALTED = "HALTED"

    @property
    def ended(self) -> bool:
        return self in ENDED_PHASES


#: The phases a rollout ends in (the ledger's "active rollout" is one not in these).
ENDED_PHASES = (Phase.SUCCEEDED, Phase.FAILED, Phase.HALTED)


class Rollout(BaseModel):
    """One attempt to get one model version running on this device (a ledger row)."""

    model_config = ConfigDict(validate_assignment=False)

    id: int | None = None
    model_version: int
    platform_key: str
    attempt: int = 1
    phase: Phase
    job_name: str | None = None
    client_token: str | None = None
    component_name: str | None = None
    component_version: str | None = None
    target_arn: str | None = None
    deployment_id: str | None = None
    deployment_token: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: polls made in the current phase (drives the back-off)
    polls: int = 0
    #: consecutive throttled calls (slows polling further)
    throttles: int = 0
    #: last status reported for this phase (to report changes only)
    last_reported: str | None = None
    next_action_at: float = 0.0
    started_at: float = 0.0
    updated_at: float = 0.0
    ended_at: float | None = None
