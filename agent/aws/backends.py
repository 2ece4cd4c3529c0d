"""Choosing the packaging backend (``packaging.backend``) and the platform it targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.aws.lookoutvision import LookoutVisionPackaging
from agent.aws.sagemaker import (
    SageMakerPackaging,
    SageMakerRequests,
    decider_platform,
    neo_report,
)
from agent.aws.session import AwsClients
from agent.config import AgentConfig
from agent.decide import RequestDeriver, lookout_for_vision_request
from agent.platform import DetectedPlatform, PlatformOverrides, detect_platform, platform_report
from agent.platform.neo import NeoPlatform, detect_neo_platform
from agent.ports import PackagingPort, PackagingRequest

#: How status messages and logs name each backend.
BACKEND_NAMES = {"lookoutvision": "Amazon Lookout for Vision", "sagemaker": "Amazon SageMaker Neo"}


@dataclass(frozen=True)
class Backend:
    """A packaging backend as the core is wired with it."""

    #: the platform the decision code names things after
    platform: DetectedPlatform
    packaging: PackagingPort
    derive: RequestDeriver
    #: what the platform report shows of the target (None: ``platform``'s own report)
    report: dict[str, object] | None = None


def packaging_backend(config: AgentConfig, clients: AwsClients) -> Backend:
    """The configured backend for this device. Raises UnsupportedPlatformError when the
    backend has no target for it (detection reads files under ``platformRoot`` only)."""
    if config.packaging.backend == "sagemaker":
        neo = detect_neo_platform(
            config.platform_root,
            overrides=config.platform,
            prefer_target_device=config.prefer_target_device,
        )
        return sagemaker_backend(config, clients, neo)
    platform = detect_platform(
        config.platform_root,
        overrides=config.platform,
        prefer_target_device=config.prefer_target_device,
    )
    return Backend(platform, LookoutVisionPackaging(clients), lookout_for_vision_request)


def detected_target(
    backend: str,
    root: Path,
    *,
    overrides: PlatformOverrides | None = None,
    prefer_target_device: bool = True,
) -> dict[str, object]:
    """The target ``backend`` would package for on the system at ``root``, as a report
    (``python -m agent detect``): Lookout for Vision's platform, or SageMaker Neo's
    TargetDevice or TargetPlatform with CompilerOptions. Raises UnsupportedPlatformError
    when the backend has no target for it."""
    if backend == "sagemaker":
        neo = detect_neo_platform(
            root, overrides=overrides, prefer_target_device=prefer_target_device
        )
        return neo_report(neo)
    detected = detect_platform(
        root, overrides=overrides or PlatformOverrides(), prefer_target_device=prefer_target_device
    )
    return {**platform_report(detected), "packagingBackend": backend}


def sagemaker_backend(config: AgentConfig, clients: AwsClients, neo: NeoPlatform) -> Backend:
    """The SageMaker backend for the Neo target ``neo``."""
    return Backend(
        decider_platform(neo),
        SageMakerPackaging(clients, config.sagemaker, neo),
        SageMakerRequests(config.sagemaker, neo),
        neo_report(neo),
    )


def bind(packaging: PackagingPort, request_for: Callable[[int, int], PackagingRequest]) -> None:
    """Give a backend that makes the component itself the core's request derivation."""
    if isinstance(packaging, SageMakerPackaging):
        packaging.bind(lambda version: request_for(version, 1))
