"""What the packaging service must target for this device, as a value.

:class:`DetectedPlatform` carries exactly the Lookout for Vision target fields
(``TargetDevice`` *or* ``TargetPlatform`` + ``CompilerOptions``) plus a ``key`` naming
that target. Devices with equal keys share one packaging job, so the key is a function
of the target fields and of nothing else (:func:`platform_key`).

:class:`PlatformOverrides` lets an operator replace any detected value.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

TargetDevice = Literal["jetson_xavier"]
Os = Literal["LINUX"]
Arch = Literal["ARM64", "X86_64"]
Accelerator = Literal["NVIDIA"]

#: Compiler options Lookout for Vision requires with ``Accelerator: NVIDIA``.
NVIDIA_OPTIONS = ("gpu-code", "trt-ver", "cuda-ver")
#: The default ``mcpu`` for x86-64 CPU targets (AWS tested it on c5 instances).
X86_DEFAULT_MCPU = "core-avx2"
#: The ``mattr`` this project gives every ARM64 CPU target.
ARM64_DEFAULT_MATTR = "+neon"
#: ``mcpu`` values spelled out in keys. Other values are covered by the key's digest.
KNOWN_MCPUS = frozenset(
    {
        X86_DEFAULT_MCPU,
        "cortex-a35",
        "cortex-a53",
        "cortex-a55",
        "cortex-a57",
        "cortex-a72",
        "cortex-a73",
        "cortex-a75",
        "cortex-a76",
        "cortex-a77",
        "cortex-a78",
        "cortex-x1",
        "cortex-a510",
        "cortex-a710",
        "neoverse-n1",
        "neoverse-n2",
        "neoverse-v1",
        "neoverse-v2",
    }
)

KEY_MAX_LENGTH = 24
_KEY_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_COMPILER_OPTIONS_MAX = 1024  # CompilerOptions: 3-1024 characters

GpuCode = Annotated[str, StringConstraints(pattern=r"^sm_[0-9]{2,3}$")]
CudaVersion = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,3}\.[0-9]{1,3}$")]
TensorRtVersion = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,3}\.[0-9]{1,4}\.[0-9]{1,4}$")]
Mcpu = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.+-]{0,63}$")]
Mattr = Annotated[
    str, StringConstraints(pattern=r"^[+-][A-Za-z0-9_.-]{1,63}(,[+-][A-Za-z0-9_.-]{1,63}){0,31}$")
]
OptionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def compact_json(options: dict[str, str]) -> str:
    """``options`` as compact JSON with sorted keys (the ``CompilerOptions`` string)."""
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def platform_key(
    *,
    target_device: TargetDevice | None,
    os: Os | None,
    arch: Arch | None,
    accelerator: Accelerator | None,
    compiler_options: dict[str, str],
) -> str:
    """The short slug naming this packaging target (``[a-z0-9-]``, at most 24 characters).

    Two targets get the same key only if they send the same TargetDevice /
    TargetPlatform / CompilerOptions to the service. Readable forms:

    ============================================  ==============================
    target                                        key
    ============================================  ==============================
    TargetDevice jetson_xavier                    ``jetson-xavier``
    NVIDIA, gpu-code sm_XY, trt A.B.C, cuda M.N   ``<arch>-smXY-trtABC-cuMN``
    CPU x86-64, ``{"mcpu": "core-avx2"}``         ``x86-64-cpu``
    CPU ARM64, ``{"mattr": "+neon"}``             ``arm64-cpu``
    CPU, plus a known ``mcpu`` (not the default)  ``<arch>-cpu-<mcpu>``
    ============================================  ==============================

    The readable forms are only used when they can be read back unambiguously (one-
    digit TensorRT components, a CUDA minor of one digit, known ``mcpu`` names, no other
    options) and fit; anything else becomes ``<arch>-nvidia-<digest>`` or
    ``<arch>-cpu-<digest>``, with 8 hex digits of SHA-256 over the target fields.
    """
    if target_device is not None:
        readable: str | None = target_device.replace("_", "-") if not compiler_options else None
        prefix = "device"
    else:
        arch_slug = {"X86_64": "x86-64", "ARM64": "arm64", None: "unknown"}[arch]
        if accelerator == "NVIDIA":
            readable = _nvidia_slug(arch_slug, compiler_options)
            prefix = f"{arch_slug}-nvidia"
        else:
            readable = _cpu_slug(arch_slug, compiler_options)
            prefix = f"{arch_slug}-cpu"
    if readable is not None and len(readable) <= KEY_MAX_LENGTH:
        return readable
    canonical = json.dumps(
        {
            "TargetDevice": target_device,
            "TargetPlatform": {"Os": os, "Arch": arch, "Accelerator": accelerator},
            "CompilerOptions": compiler_options,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{prefix}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def _nvidia_slug(arch_slug: str, options: dict[str, str]) -> str | None:
    if set(options) != set(NVIDIA_OPTIONS):
        return None
    gpu = re.fullmatch(r"sm_([0-9]{2,3})", options["gpu-code"])
    trt = re.fullmatch(r"([0-9])\.([0-9])\.([0-9])", options["trt-ver"])
    cuda = re.fullmatch(r"([0-9]{1,2})\.([0-9])", options["cuda-ver"])
    if gpu is None or trt is None or cuda is None:
        return None
    return f"{arch_slug}-sm{gpu[1]}-trt{''.join(trt.groups())}-cu{''.join(cuda.groups())}"


def _cpu_slug(arch_slug: str, options: dict[str, str]) -> str | None:
    rest = dict(options)
    mcpu = rest.pop("mcpu", None)
    if arch_slug == "arm64":
        if rest.pop("mattr", None) != ARM64_DEFAULT_MATTR:
            return None
        default_mcpu = None
    elif arch_slug == "x86-64":
        if mcpu is None:
            return None
        default_mcpu = X86_DEFAULT_MCPU
    else:
        return None
    if rest:
        return None
    if mcpu == default_mcpu:
        return f"{arch_slug}-cpu"
    if mcpu in KNOWN_MCPUS:
        return f"{arch_slug}-cpu-{mcpu}"
    return None


class _TargetFields(BaseModel):
    """The fields the key is computed from (used before full validation)."""

    model_config = ConfigDict(frozen=True)

    target_device: TargetDevice | None = None
    os: Os | None = None
    arch: Arch | None = None
    accelerator: Accelerator | None = None
    compiler_options: dict[str, str] = Field(default_factory=dict)

    def key(self) -> str:
        return platform_key(
            target_device=self.target_device,
            os=self.os,
            arch=self.arch,
            accelerator=self.accelerator,
            compiler_options=self.compiler_options,
        )


class DetectedPlatform(BaseModel):
    """The packaging target of one device, plus what it was concluded from.

    Exactly one of ``target_device`` and (``os`` + ``arch``) is set. ``key`` may be
    omitted: it is then computed with :func:`platform_key` (which is what
    :func:`agent.platform.detect_platform` always does).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_device: TargetDevice | None = None
    os: Os | None = None
    arch: Arch | None = None
    accelerator: Accelerator | None = None
    compiler_options: dict[str, str] = Field(default_factory=dict)
    key: str = Field(default="", max_length=KEY_MAX_LENGTH)
    description: str
    evidence: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("key"):
            fields = {k: data[k] for k in _TargetFields.model_fields if k in data}
            try:
                key = _TargetFields.model_validate(fields).key()
            except ValidationError:
                return data  # the field validators report what is wrong
            return {**data, "key": key}
        return data

    @model_validator(mode="after")
    def _target_rules(self) -> DetectedPlatform:
        if self.target_device is not None:
            if self.os is not None or self.arch is not None or self.accelerator is not None:
                raise ValueError("target_device excludes os, arch and accelerator")
            if self.compiler_options:
                raise ValueError("target_device takes no compiler options")
        elif self.os is None or self.arch is None:
            raise ValueError("set either target_device, or os and arch")
        if self.accelerator == "NVIDIA":
            missing = [k for k in NVIDIA_OPTIONS if not self.compiler_options.get(k)]
            if missing:
                raise ValueError(f"accelerator NVIDIA needs compiler options {', '.join(missing)}")
        if (
            self.compiler_options
            and len(self.compiler_options_json() or "") > _COMPILER_OPTIONS_MAX
        ):
            raise ValueError(f"compiler options exceed {_COMPILER_OPTIONS_MAX} characters as JSON")
        if not _KEY_PATTERN.fullmatch(self.key):
            raise ValueError(f"key {self.key!r} must match [a-z0-9-] without leading/trailing '-'")
        return self

    def compiler_options_json(self) -> str | None:
        """``CompilerOptions`` for StartModelPackagingJob: compact, sorted JSON, or None."""
        return compact_json(self.compiler_options) if self.compiler_options else None


def platform_report(p: DetectedPlatform) -> dict[str, object]:
    """The JSON object ``python -m agent detect`` prints for ``p``.

    ``targetDevice`` (a string) or ``targetPlatform`` (``{Os, Arch[, Accelerator]}``, the
    Lookout for Vision field names), then ``compilerOptions`` (the exact string that
    will be sent, or None), ``key``, ``description`` and ``evidence``.
    """
    report: dict[str, object] = {}
    if p.target_device is not None:
        report["targetDevice"] = p.target_device
    else:
        target: dict[str, str] = {"Os": p.os or "LINUX", "Arch": p.arch or ""}
        if p.accelerator is not None:
            target["Accelerator"] = p.accelerator
        report["targetPlatform"] = target
    report["compilerOptions"] = p.compiler_options_json()
    report["key"] = p.key
    report["description"] = p.description
    report["evidence"] = dict(p.evidence)
    return report


class PlatformOverrides(BaseModel):
    """Operator-supplied values that replace what detection finds (all optional).

    Accepts snake_case or camelCase names (``gpu_code`` / ``gpuCode``), like the rest of
    the agent's configuration. How each one applies:

    * ``target_device``: the result is that TargetDevice; excludes every other field.
    * ``os``, ``arch``: replace the detected values (``arch`` also lets the agent run
      on a machine whose own architecture is not supported, e.g. armv7l).
    * ``accelerator``: ``"NVIDIA"`` or ``"NONE"`` (CPU) regardless of the GPU found.
    * ``compiler_options``: replaces the detected options as a whole; the single-option
      fields below are then applied on top of it.
    * ``gpu_code``, ``cuda_ver``, ``trt_ver``: NVIDIA options; giving one implies
      ``accelerator="NVIDIA"`` unless ``accelerator`` says otherwise.
    * ``mcpu``, ``mattr``: CPU options.

    Any field that shapes a TargetPlatform also turns off the Jetson Xavier
    TargetDevice, which takes no options (the override would otherwise be ignored).
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )

    target_device: TargetDevice | None = None
    os: Os | None = None
    arch: Arch | None = None
    accelerator: Literal["NVIDIA", "NONE"] | None = None
    compiler_options: dict[OptionName, str] | None = None
    gpu_code: GpuCode | None = None
    cuda_ver: CudaVersion | None = None
    trt_ver: TensorRtVersion | None = None
    mcpu: Mcpu | None = None
    mattr: Mattr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PlatformOverrides:
        if self.target_device is not None and self.shapes_target_platform():
            raise ValueError(
                "target_device cannot be combined with os, arch, accelerator or compiler options"
            )
        nvidia_fields = [
            name for name in ("gpu_code", "cuda_ver", "trt_ver") if getattr(self, name) is not None
        ]
        if self.accelerator == "NONE" and nvidia_fields:
            raise ValueError(f"accelerator NONE contradicts {', '.join(nvidia_fields)}")
        return self

    def shapes_target_platform(self) -> bool:
        """Whether any field given here belongs to a TargetPlatform."""
        fields = (self.os, self.arch, self.accelerator, self.compiler_options, self.gpu_code)
        more = (self.cuda_ver, self.trt_ver, self.mcpu, self.mattr)
        return any(value is not None for value in (*fields, *more))

    def wants_nvidia(self) -> bool | None:
        """True/False when the overrides decide the accelerator, None when they do not."""
        if self.accelerator is not None:
            return self.accelerator == "NVIDIA"
        if self.gpu_code or self.cuda_ver or self.trt_ver:
            return True
        return None
