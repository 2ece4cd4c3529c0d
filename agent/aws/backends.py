"""Choosing the packaging backend (``packaging.backend``) and the platform it targets."""

from __future__ import annotations

from collections.abc import Callable

from agent.aws.lookoutvision import LookoutVisionPackaging
from agent.aws.sagemaker import SageMakerPackaging, decider_platform
from agent.aws.session import AwsClients
from agent.config import AgentConfig
from agent.model import PackagingRequest
from agent.platform import DetectedPlatform, detect_platform
from agent.platform.neo import detect_neo_platform
from agent.ports import PackagingPort

#: How status messages and logs name each backend.
BACKEND_NAMES = {"lookoutvision": "Amazon Lookout for Vision", "sagemaker": "Amazon SageMaker Neo"}


def packaging_backend(
    config: AgentConfig, clients: AwsClients
) -> tuple[DetectedPlatform, PackagingPort]:
    """The platform the decision code names things after and the configured backend's
    adapter. Raises UnsupportedPlatformError when the backend has no target for this
    device (detection reads files under ``platformRoot`` only)."""
    if config.packaging.backend == "sagemaker":
        neo = detect_neo_platform(
            config.platform_root,
            overrides=config.platform,
            prefer_target_device=config.prefer_target_device,
        )
        return decider_platform(neo), SageMakerPackaging(clients, config.sagemaker, neo)
    platform = detect_platform(
        config.platform_root,
        overrides=config.platform,
        prefer_target_device=config.prefer_target_device,
    )
    return platform, LookoutVisionPackaging(clients)


def bind(packaging: PackagingPort, request_for: Callable[[int, int], PackagingRequest]) -> None:
    """Give a backend that makes the component itself the core's request derivation."""
    if isinstance(packaging, SageMakerPackaging):
        packaging.bind(lambda version: request_for(version, 1))
