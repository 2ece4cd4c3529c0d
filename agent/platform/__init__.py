"""Platform detection: which Lookout for Vision packaging target fits this device.

:func:`detect_platform` reads a few files (under a configurable root) and returns a
:class:`DetectedPlatform`: either TargetDevice ``jetson_xavier``, or a TargetPlatform
(Os, Arch, optional Accelerator NVIDIA) with its CompilerOptions, plus a ``key`` that
names the packaging target, a description and the evidence it was concluded from.
"""

from __future__ import annotations

from agent.platform.detect import (
    NVIDIA_SMI_COMPUTE_CAP,
    PACKAGING_GPU_CODE,
    SUPPORTED,
    CommandRunner,
    default_runner,
    detect_platform,
)
from agent.platform.model import (
    Accelerator,
    Arch,
    DetectedPlatform,
    Os,
    PlatformOverrides,
    TargetDevice,
    platform_key,
    platform_report,
)

__all__ = [
    "NVIDIA_SMI_COMPUTE_CAP",
    "PACKAGING_GPU_CODE",
    "SUPPORTED",
    "Accelerator",
    "Arch",
    "CommandRunner",
    "DetectedPlatform",
    "Os",
    "PlatformOverrides",
    "TargetDevice",
    "default_runner",
    "detect_platform",
    "platform_key",
    "platform_report",
]
