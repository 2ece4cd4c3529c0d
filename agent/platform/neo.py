"""Which SageMaker Neo target fits this device (``OutputConfig`` of CreateCompilationJob).

Neo's enums are wider than Lookout for Vision's: it has named edge devices
(``TargetDevice``) and 32-bit ARM platforms. :func:`detect_neo_platform` decides:

1. An operator-chosen ``target_device`` wins.
2. With ``prefer_target_device`` (and no override shaping a TargetPlatform), hardware
   that matches a Neo device gets it: a Jetson on JetPack 4 (L4T R32, the stack the
   Jetson devices are built for) → ``jetson_xavier``, ``jetson_tx2``, ``jetson_nano``
   or ``jetson_tx1``; a Raspberry Pi 4 or 3 with a 32-bit hard-float userland →
   ``rasp4b`` or ``rasp3b`` (Neo builds both for ``arm*-linux-gnueabihf``).
3. A 32-bit ARM userland otherwise → TargetPlatform ``LINUX``/``ARM_EABIHF`` (or
   ``ARM_EABI`` for soft-float) with ``mattr ["+neon"]`` when the CPU has NEON.
4. Anything else is what :func:`agent.platform.detect_platform` finds (its Lookout for
   Vision mapping is unchanged), with ``mattr`` given as a list, as Neo documents it.

The userland is read from the ELF header of ``/bin/sh``: a Raspberry Pi OS 32-bit image
runs a 64-bit kernel on a Pi 4, so the kernel's architecture is not what the compiled
model must match.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.platform import probes
from agent.platform.detect import CommandRunner, _machine, detect_platform
from agent.platform.model import (
    KEY_MAX_LENGTH,
    NVIDIA_OPTIONS,
    DetectedPlatform,
    PlatformOverrides,
    platform_key,
)
from agent.platform.rootfs import RootFS

#: The Neo TargetDevice values detection can choose (all in the ``sagemaker`` enum).
NeoTargetDevice = Literal[
    "jetson_tx1", "jetson_tx2", "jetson_nano", "jetson_xavier", "rasp3b", "rasp4b"
]
NeoOs = Literal["LINUX"]
NeoArch = Literal["X86_64", "X86", "ARM64", "ARM_EABI", "ARM_EABIHF"]
NeoAccelerator = Literal["NVIDIA", "INTEL_GRAPHICS", "MALI", "NNA"]
OptionValue = str | list[str]

#: The program whose ELF header tells the userland architecture.
USERLAND_PROBE = "/bin/sh"
#: Jetson family (from :data:`probes.JETSON_SOCS`) → Neo TargetDevice, on JetPack 4.
JETSON_DEVICES: dict[str, NeoTargetDevice] = {
    "xavier": "jetson_xavier",
    "tx2": "jetson_tx2",
    "nano": "jetson_nano",
}
#: Raspberry Pi SoC (device-tree ``compatible``) → Neo TargetDevice, on a 32-bit userland.
RASPBERRY_PI_DEVICES: dict[str, NeoTargetDevice] = {
    "brcm,bcm2711": "rasp4b",
    "brcm,bcm2837": "rasp3b",
}
_RASPBERRY_PI_BOARDS: dict[str, NeoTargetDevice] = {
    "Raspberry Pi 4": "rasp4b",
    "Raspberry Pi 400": "rasp4b",
    "Raspberry Pi Compute Module 4": "rasp4b",
    "Raspberry Pi 3 Model B": "rasp3b",
}
_COMPILER_OPTIONS_MAX = 1024
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}
_EF_ARM_ABI_FLOAT_SOFT = 0x200


class NeoPlatform(BaseModel):
    """The Neo target of one device: ``target_device`` *or* ``os`` + ``arch`` (+
    ``accelerator``) with ``compiler_options``, a ``key`` naming it, and evidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_device: NeoTargetDevice | None = None
    os: NeoOs | None = None
    arch: NeoArch | None = None
    accelerator: NeoAccelerator | None = None
    compiler_options: dict[str, OptionValue] = Field(default_factory=dict)
    key: str = Field(default="", max_length=KEY_MAX_LENGTH)
    description: str
    evidence: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("key"):
            return {**data, "key": neo_key(data)}
        return data

    @model_validator(mode="after")
    def _target_rules(self) -> NeoPlatform:
        if self.target_device is not None:
            if self.os is not None or self.arch is not None or self.accelerator is not None:
                raise ValueError("target_device excludes os, arch and accelerator")
        elif self.os is None or self.arch is None:
            raise ValueError("set either target_device, or os and arch")
        if self.accelerator == "NVIDIA":
            missing = [k for k in NVIDIA_OPTIONS if not self.compiler_options.get(k)]
            if missing:
                raise ValueError(f"accelerator NVIDIA needs compiler options {', '.join(missing)}")
        options = self.compiler_options_json()
        if options is not None and not 3 <= len(options) <= _COMPILER_OPTIONS_MAX:
            raise ValueError(
                f"compiler options must be 3-{_COMPILER_OPTIONS_MAX} characters as JSON"
            )
        return self

    def compiler_options_json(self) -> str | None:
        """``CompilerOptions`` for CreateCompilationJob: compact, sorted JSON, or None."""
        if not self.compiler_options:
            return None
        return json.dumps(self.compiler_options, sort_keys=True, separators=(",", ":"))

    def output_config(self, s3_output_location: str) -> dict[str, Any]:
        """The ``OutputConfig`` of CreateCompilationJob for this target."""
        config: dict[str, Any] = {"S3OutputLocation": s3_output_location}
        if self.target_device is not None:
            config["TargetDevice"] = self.target_device
        else:
            platform: dict[str, str] = {"Os": self.os or "LINUX", "Arch": self.arch or ""}
            if self.accelerator is not None:
                platform["Accelerator"] = self.accelerator
            config["TargetPlatform"] = platform
        options = self.compiler_options_json()
        if options is not None:
            config["CompilerOptions"] = options
        return config


def neo_key(fields: dict[str, Any]) -> str:
    """The short slug naming a Neo target (``[a-z0-9-]``, at most 24 characters).

    A TargetDevice is its name with ``-`` (``jetson-nano``, ``rasp4b``). A platform
    Lookout for Vision can also express gets the same key as there
    (:func:`agent.platform.platform_key`); 32-bit ARM with only ``mattr ["+neon"]`` is
    ``armhf-cpu``; anything else is ``<arch>-<8 hex digits of SHA-256>``.
    """
    device = fields.get("target_device")
    options = dict(fields.get("compiler_options") or {})
    arch = fields.get("arch")
    accelerator = fields.get("accelerator")
    if device is not None and not options:
        return str(device).replace("_", "-")
    if device is None and arch in ("ARM64", "X86_64") and accelerator in (None, "NVIDIA"):
        flat = {k: ",".join(v) if isinstance(v, list) else v for k, v in options.items()}
        if all(isinstance(v, str) for v in flat.values()):
            return platform_key(
                target_device=None,
                os="LINUX",
                arch=arch,
                accelerator=accelerator,
                compiler_options=flat,
            )
    if device is None and arch == "ARM_EABIHF" and options in ({"mattr": ["+neon"]}, {}):
        return "armhf-cpu" if options else "armhf-cpu-plain"
    canonical = json.dumps(
        {
            "TargetDevice": device,
            "TargetPlatform": {"Os": fields.get("os"), "Arch": arch, "Accelerator": accelerator},
            "CompilerOptions": options,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    prefix = str(device or arch or "unknown").lower().replace("_", "-")
    return f"{prefix[:14]}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def detect_neo_platform(
    root: Path = Path("/"),
    *,
    overrides: PlatformOverrides | None = None,
    run: CommandRunner | None = None,
    machine: str | None = None,
    prefer_target_device: bool = True,
    target_device: NeoTargetDevice | None = None,
) -> NeoPlatform:
    """The Neo target for the system at ``root`` (every file is read under it).

    ``target_device`` is an operator's choice of any Neo device detection knows; the
    other arguments work as for :func:`agent.platform.detect_platform`. Raises
    :class:`agent.errors.UnsupportedPlatformError` when nothing fits.
    """
    ov = overrides if overrides is not None else PlatformOverrides()
    if target_device is not None:
        return NeoPlatform(
            target_device=target_device,
            description=f"TargetDevice {target_device} (set by override)",
            evidence={"override:target_device": target_device},
        )
    fs = RootFS(root)
    evidence: dict[str, str] = {}
    board = probes.device_tree_model(fs, evidence)
    raw_machine, _, kernel_arch = _machine(fs, machine, evidence)
    userland = _userland(fs, evidence)
    wants_device = prefer_target_device and ov.target_device is None
    if wants_device and ov.shapes_target_platform():
        evidence["decision"] = "overrides shape a TargetPlatform: no Neo TargetDevice"
        wants_device = False
    if wants_device:
        found = _neo_device(fs, board, kernel_arch, userland, evidence)
        if found is not None:
            device, description = found
            return NeoPlatform(target_device=device, description=description, evidence=evidence)
    if userland in ("ARM_EABIHF", "ARM_EABI") and ov.arch is None and machine is None:
        return _arm32_platform(fs, board, userland, ov, evidence)
    if userland is None and ov.arch is None and (raw_machine or "").lower().startswith("armv7"):
        # No ELF to read: a 32-bit ARM kernel runs a 32-bit userland, hard-float on
        # every current distribution.
        evidence["decision"] = f"32-bit ARM kernel ({raw_machine}): assuming a hard-float userland"
        return _arm32_platform(fs, board, "ARM_EABIHF", ov, evidence)
    detected = detect_platform(
        root,
        overrides=ov,
        run=run,
        machine=machine,
        prefer_target_device=prefer_target_device,
    )
    return from_detected(detected, extra_evidence=evidence)


def from_detected(
    detected: DetectedPlatform, *, extra_evidence: dict[str, str] | None = None
) -> NeoPlatform:
    """The same target in Neo's terms (``mattr`` as a list of flags)."""
    options: dict[str, OptionValue] = dict(detected.compiler_options)
    mattr = options.get("mattr")
    if isinstance(mattr, str):
        options["mattr"] = [flag for flag in mattr.split(",") if flag]
    return NeoPlatform(
        target_device=detected.target_device,
        os=detected.os,
        arch=detected.arch,
        accelerator=detected.accelerator,
        compiler_options=options,
        description=detected.description,
        evidence={**(extra_evidence or {}), **detected.evidence},
    )


def _userland(fs: RootFS, evidence: dict[str, str]) -> NeoArch | None:
    """The architecture of the programs (not the kernel), from ``/bin/sh``'s ELF header."""
    header = fs.read_bytes(USERLAND_PROBE, 52)
    if header is None or len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    little = header[5] == 1
    (e_machine,) = struct.unpack("<H" if little else ">H", header[18:20])
    name = _ELF_MACHINES.get(e_machine)
    bits = {1: 32, 2: 64}.get(header[4])
    arch: NeoArch | None = None
    if name == "arm" and bits == 32 and len(header) >= 40:
        (flags,) = struct.unpack("<I" if little else ">I", header[36:40])
        arch = "ARM_EABI" if flags & _EF_ARM_ABI_FLOAT_SOFT else "ARM_EABIHF"
    elif name == "aarch64" and bits == 64:
        arch = "ARM64"
    elif name == "x86_64" and bits == 64:
        arch = "X86_64"
    elif name == "x86" and bits == 32:
        arch = "X86"
    evidence[f"{USERLAND_PROBE} ELF"] = f"{bits}-bit {name or f'machine {e_machine}'}" + (
        f" ({arch})" if arch else ""
    )
    return arch


def _neo_device(
    fs: RootFS,
    board: str | None,
    kernel_arch: str | None,
    userland: NeoArch | None,
    evidence: dict[str, str],
) -> tuple[NeoTargetDevice, str] | None:
    if kernel_arch == "ARM64" and userland in (None, "ARM64"):
        jetson = probes.detect_jetson(fs, board, evidence)
        if jetson is not None and jetson.family in JETSON_DEVICES:
            if jetson.l4t_major not in (None, 32):
                evidence["decision"] = (
                    f"Neo's Jetson devices are built for JetPack 4 (L4T R32), found "
                    f"L4T R{jetson.l4t}: TargetPlatform"
                )
                return None
            device = JETSON_DEVICES[jetson.family]
            if device == "jetson_nano" and "tx1" in (board or "").lower():
                device = "jetson_tx1"
            evidence["decision"] = f"Jetson {jetson.family} on JetPack 4: TargetDevice {device}"
            return device, jetson.describe()
    pi = _raspberry_pi(fs, board)
    if pi is not None:
        if userland == "ARM_EABIHF":
            evidence["decision"] = (
                f"Raspberry Pi with a 32-bit hard-float userland: TargetDevice {pi}"
            )
            return pi, f"{board or pi}, 32-bit userland"
        evidence["decision"] = (
            f"{pi} is built for a 32-bit hard-float userland, found "
            f"{userland or 'no /bin/sh ELF (kernel architecture decides)'}: TargetPlatform"
        )
    return None


def _raspberry_pi(fs: RootFS, board: str | None) -> NeoTargetDevice | None:
    raw = fs.read_text(probes.DEVICE_TREE_COMPATIBLE) or ""
    for entry in (c.strip() for c in raw.split("\0")):
        if entry in RASPBERRY_PI_DEVICES:
            return RASPBERRY_PI_DEVICES[entry]
    for prefix, device in _RASPBERRY_PI_BOARDS.items():
        if board is not None and board.startswith(prefix):
            return device
    return None


def _arm32_platform(
    fs: RootFS,
    board: str | None,
    arch: NeoArch,
    ov: PlatformOverrides,
    evidence: dict[str, str],
) -> NeoPlatform:
    cpu = probes.read_cpuinfo(fs)
    options: dict[str, OptionValue] = {}
    if ov.compiler_options is not None:
        options.update(ov.compiler_options)
        evidence["override:compiler_options"] = json.dumps(ov.compiler_options, sort_keys=True)
    elif cpu is not None and cpu.flags is not None and "neon" in cpu.flags:
        options["mattr"] = ["+neon"]
        evidence[f"{probes.CPUINFO} features"] = "has neon"
    if ov.mattr is not None:
        options["mattr"] = ov.mattr.split(",")
        evidence["override:mattr"] = ov.mattr
    if ov.mcpu is not None:
        options["mcpu"] = ov.mcpu
        evidence["override:mcpu"] = ov.mcpu
    label = board or (cpu.model_name if cpu is not None else None) or "machine"
    flags = ", ".join(f"{k} {v}" for k, v in sorted(options.items()))
    return NeoPlatform(
        os="LINUX",
        arch=arch,
        compiler_options=options,
        description=f"{label}, {arch} CPU" + (f" ({flags})" if flags else ""),
        evidence=evidence,
    )
