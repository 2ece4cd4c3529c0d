"""Work out which Lookout for Vision packaging target fits this device.

Order of decisions (each one recorded in ``evidence``):

1. Machine architecture: the ``machine`` argument, else ``/proc/sys/kernel/arch``, else
   (only for the real ``/``) :func:`platform.machine`. x86_64/amd64 → X86_64,
   aarch64/arm64 → ARM64, anything else is unsupported unless ``overrides.arch`` says.
2. A Jetson Xavier on JetPack 4 (L4T R32) → TargetDevice ``jetson_xavier`` (unless
   ``prefer_target_device`` is False or an override shapes a TargetPlatform). Xavier on
   a later JetPack gets a TargetPlatform: AWS documents ``jetson_xavier`` for the
   JetPack 4 stack (CUDA 10.2), and an artifact built for it would not load on another.
3. Other Jetsons, and discrete NVIDIA GPUs → TargetPlatform + ``Accelerator: NVIDIA``
   with ``gpu-code`` / ``cuda-ver`` / ``trt-ver`` read from the system.
4. Otherwise a CPU TargetPlatform with ``mcpu`` / ``mattr``.

Overrides replace any detected value (see :class:`PlatformOverrides`).
"""

from __future__ import annotations

import platform as host_platform
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from agent.errors import UnsupportedPlatformError
from agent.platform import probes
from agent.platform.model import (
    ARM64_DEFAULT_MATTR,
    X86_DEFAULT_MCPU,
    Arch,
    DetectedPlatform,
    PlatformOverrides,
    compact_json,
)
from agent.platform.rootfs import RootFS

#: Runs a command (``argv[0]`` is a program name such as ``nvidia-smi``) and returns its
#: standard output. Signals failure by raising :class:`OSError` (not found, not
#: executable) or :class:`subprocess.SubprocessError` (non-zero exit, timeout).
CommandRunner = Callable[[list[str]], str]

NVIDIA_SMI_COMPUTE_CAP = ("nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader")
KERNEL_ARCH = "/proc/sys/kernel/arch"

SUPPORTED = (
    "Linux on x86_64 or aarch64, with a CPU target, a discrete NVIDIA GPU (CUDA and "
    "TensorRT installed) or an NVIDIA Jetson; Jetson Xavier as TargetDevice jetson_xavier"
)

_ARCHES: dict[str, Arch] = {
    "x86_64": "X86_64",
    "amd64": "X86_64",
    "aarch64": "ARM64",
    "arm64": "ARM64",
}

#: Compute capability → gpu-code, where it is not simply ``sm_<major><minor>``.
#: 8.6 (A10G on g5, A10, RTX 30xx) → sm_80: AWS's tested configuration for g5 is
#: sm_80, and sm_80 device code runs on every 8.x GPU (CUDA binary compatibility within
#: a major version), whereas sm_86 was never tested with the packaging service.
PACKAGING_GPU_CODE = {"8.6": "sm_80"}

#: CPU features that ``mcpu=core-avx2`` (Haswell) code may use, as /proc/cpuinfo names.
CORE_AVX2_FLAGS = frozenset({"avx", "avx2", "fma", "bmi1", "bmi2", "f16c"})


def default_runner(root: Path = Path("/"), *, timeout: float = 5.0) -> CommandRunner:
    """A runner that executes ``{root}/usr/bin/<program>`` if it is executable, else
    (only when ``root`` is ``/``) the program found on ``PATH``; ``timeout`` seconds."""
    fs = RootFS(root)

    def run(argv: list[str]) -> str:
        if not argv or "/" in argv[0]:
            raise FileNotFoundError(f"not a program name: {argv[:1]}")
        program = fs.executable(f"/usr/bin/{argv[0]}")
        if program is None and fs.is_host:
            found = shutil.which(argv[0])
            program = Path(found) if found else None
        if program is None:
            raise FileNotFoundError(f"{argv[0]} not found")
        done = subprocess.run(
            [str(program), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout

    return run


def detect_platform(
    root: Path = Path("/"),
    *,
    overrides: PlatformOverrides | None = None,
    run: CommandRunner | None = None,
    machine: str | None = None,
    prefer_target_device: bool = True,
) -> DetectedPlatform:
    """The packaging target for the system at ``root`` (every file is read under it).

    Raises :class:`agent.errors.UnsupportedPlatformError` when the hardware cannot be
    targeted (and no override makes up for it).
    """
    ov = overrides if overrides is not None else PlatformOverrides()
    fs = RootFS(root)
    runner = run if run is not None else default_runner(root)
    evidence: dict[str, str] = {}
    board = probes.device_tree_model(fs, evidence)
    raw_machine, source, arch = _machine(fs, machine, evidence)

    if ov.target_device is not None:
        evidence["override:target_device"] = ov.target_device
        where = f" on {board}" if board else ""
        return DetectedPlatform(
            target_device=ov.target_device,
            description=f"TargetDevice {ov.target_device} (set by override){where}",
            evidence=evidence,
        )
    if ov.arch is not None:
        evidence["override:arch"] = f"{ov.arch} (detected {raw_machine or 'nothing'})"
        arch = ov.arch
    if arch is None:
        if raw_machine is None:
            found = f"no machine architecture (nothing at {KERNEL_ARCH} under {fs.root})"
        else:
            found = f"machine architecture {raw_machine} (from {source})"
        if board:
            found += f" on {board}"
        raise UnsupportedPlatformError(found=found, supported=SUPPORTED)
    if ov.os is not None:
        evidence["override:os"] = ov.os

    jetson = probes.detect_jetson(fs, board, evidence) if arch == "ARM64" else None
    if jetson is not None and jetson.family == "xavier" and prefer_target_device:
        if ov.shapes_target_platform():
            evidence["decision"] = "overrides shape a TargetPlatform: not using jetson_xavier"
        elif jetson.l4t_major in (None, 32):
            # Not needed by the service with a TargetDevice; read for the record.
            probes.cuda_version(fs, evidence)
            probes.tensorrt_version(fs, arch, evidence)
            evidence["decision"] = "Jetson Xavier on JetPack 4: TargetDevice jetson_xavier"
            return DetectedPlatform(
                target_device="jetson_xavier", description=jetson.describe(), evidence=evidence
            )
        else:
            evidence["decision"] = (
                f"jetson_xavier is for JetPack 4 (L4T R32), found L4T R{jetson.l4t}: TargetPlatform"
            )

    driver = probes.nvidia_driver(fs, evidence) if jetson is None else None
    wanted = ov.wants_nvidia()
    if ov.accelerator is not None:
        evidence["override:accelerator"] = ov.accelerator
    nvidia = wanted if wanted is not None else (jetson is not None or driver is not None)
    if nvidia:
        options, description = _nvidia_options(fs, arch, ov, jetson, driver, runner, evidence)
    else:
        label = board or (jetson.describe() if jetson else None)
        options, description = _cpu_options(fs, arch, ov, label, evidence)
    return DetectedPlatform(
        os=ov.os or "LINUX",
        arch=arch,
        accelerator="NVIDIA" if nvidia else None,
        compiler_options=options,
        description=description,
        evidence=evidence,
    )


def _machine(
    fs: RootFS, machine: str | None, evidence: dict[str, str]
) -> tuple[str | None, str, Arch | None]:
    """(raw machine name, where it came from, supported architecture or None)."""
    raw: str | None = None
    source = "nowhere"
    if machine is not None:
        raw, source = machine.strip(), "machine argument"
    else:
        text = fs.read_text(KERNEL_ARCH)
        if text is not None and text.strip():
            raw, source = text.strip(), KERNEL_ARCH
        elif fs.is_host:
            raw, source = host_platform.machine(), "platform.machine()"
    if raw is None:
        return None, source, None
    evidence[source] = raw
    return raw, source, _ARCHES.get(raw.lower())


# -- NVIDIA ------------------------------------------------------------------------------


def _nvidia_options(
    fs: RootFS,
    arch: Arch,
    ov: PlatformOverrides,
    jetson: probes.JetsonInfo | None,
    driver: probes.NvidiaDriver | None,
    runner: CommandRunner,
    evidence: dict[str, str],
) -> tuple[dict[str, str], str]:
    base = dict(ov.compiler_options) if ov.compiler_options is not None else {}
    if ov.compiler_options is not None:
        evidence["override:compiler_options"] = compact_json(base)

    def pick(override: str | None, option: str, detect: Callable[[], str | None]) -> str | None:
        if override is not None:
            evidence[f"override:{option}"] = override
            return override
        if option in base:
            return base[option]
        return detect()

    gpu_code = pick(ov.gpu_code, "gpu-code", lambda: _gpu_code(jetson, driver, runner, evidence))
    cuda = pick(ov.cuda_ver, "cuda-ver", lambda: probes.cuda_version(fs, evidence))
    trt = pick(ov.trt_ver, "trt-ver", lambda: probes.tensorrt_version(fs, arch, evidence))

    if jetson is not None:
        what = jetson.describe()
    elif driver is not None and driver.models:
        what = f"{_gpu_names(driver.models)} on {arch}"
    elif driver is not None:
        what = f"NVIDIA driver without a listed GPU on {arch}"
    else:
        what = f"NVIDIA GPU (set by override) on {arch}"
    missing = []
    if gpu_code is None:
        missing.append("a known GPU compute capability (override: gpu_code)")
    if cuda is None:
        missing.append(
            f"CUDA ({probes.CUDA_VERSION_JSON} or {probes.CUDA_VERSION_TXT}; override: cuda_ver)"
        )
    if trt is None:
        dirs = " or ".join(probes.TENSORRT_LIB_DIRS[arch])
        missing.append(
            f"TensorRT (libnvinfer.so.X.Y.Z in {dirs}, or a libnvinfer/tensorrt package in "
            f"{probes.DPKG_STATUS}; override: trt_ver)"
        )
    if gpu_code is None or cuda is None or trt is None:
        raise UnsupportedPlatformError(
            found=f"{what} without {', '.join(missing)}", supported=SUPPORTED
        )
    options = {**base, "gpu-code": gpu_code, "cuda-ver": cuda, "trt-ver": trt}
    _apply_cpu_overrides(options, ov, evidence)
    return options, f"{what}, {gpu_code}, CUDA {cuda}, TensorRT {trt}"


def _gpu_names(models: tuple[str, ...]) -> str:
    def full(model: str) -> str:
        return model if model.upper().startswith("NVIDIA") else f"NVIDIA {model}"

    counts = Counter(models)
    return ", ".join(full(m) if n == 1 else f"{n}x {full(m)}" for m, n in counts.items())


def _gpu_code(
    jetson: probes.JetsonInfo | None,
    driver: probes.NvidiaDriver | None,
    runner: CommandRunner,
    evidence: dict[str, str],
) -> str | None:
    if jetson is not None:
        if jetson.gpu_code is not None:
            evidence["rule:gpu-code"] = f"{jetson.gpu_code} (GPU of Jetson {jetson.family})"
        return jetson.gpu_code
    capability = _compute_capability(driver, runner, evidence)
    if capability is None:
        return None
    major, minor = capability.split(".")
    plain = f"sm_{major}{minor}"
    code = PACKAGING_GPU_CODE.get(capability, plain)
    why = "" if code == plain else f"; {code} is what AWS tested for this GPU class"
    evidence["rule:gpu-code"] = f"{code} (compute capability {capability}{why})"
    return code


def _compute_capability(
    driver: probes.NvidiaDriver | None, runner: CommandRunner, evidence: dict[str, str]
) -> str | None:
    command = " ".join(NVIDIA_SMI_COMPUTE_CAP)
    try:
        output = runner(list(NVIDIA_SMI_COMPUTE_CAP))
    except (OSError, subprocess.SubprocessError) as exc:
        evidence[command] = probes.clip(f"failed: {_failure(exc)}")
    else:
        values = [line.strip() for line in output.splitlines() if line.strip()]
        if values and all(re.fullmatch(r"\d+\.\d+", v) for v in values):
            evidence[command] = ", ".join(values)
            return _one_capability(values)
        evidence[command] = probes.clip(f"unexpected output: {output!r}")
    models = driver.models if driver is not None else ()
    if not models:
        return None
    table = {model: probes.gpu_compute_capability(model) for model in models}
    evidence["table:gpu-model"] = ", ".join(f"{m} -> {c or 'unknown'}" for m, c in table.items())
    capabilities = [c for c in table.values() if c is not None]
    if len(capabilities) != len(table):
        return None
    return _one_capability(capabilities)


def _failure(exc: OSError | subprocess.SubprocessError) -> str:
    """A short reason, without the (machine-specific) command path."""
    if isinstance(exc, subprocess.CalledProcessError):
        stderr = exc.stderr if isinstance(exc.stderr, str) else ""
        first = stderr.strip().splitlines()[0] if stderr.strip() else ""
        return f"exit status {exc.returncode}" + (f": {first}" if first else "")
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"no answer within {exc.timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def _one_capability(values: list[str]) -> str:
    distinct = sorted(set(values))
    if len(distinct) > 1:
        raise UnsupportedPlatformError(
            found=f"NVIDIA GPUs of different compute capabilities ({', '.join(distinct)})",
            supported="one GPU generation per device (one artifact per device), "
            "or choose one with the gpu_code override",
        )
    return distinct[0]


# -- CPU ---------------------------------------------------------------------------------


def _cpu_options(
    fs: RootFS,
    arch: Arch,
    ov: PlatformOverrides,
    label: str | None,
    evidence: dict[str, str],
) -> tuple[dict[str, str], str]:
    cpu = probes.read_cpuinfo(fs)
    detected: dict[str, str]
    if arch == "X86_64":
        detected = {"mcpu": X86_DEFAULT_MCPU}
        if cpu is not None and cpu.model_name:
            evidence[f"{probes.CPUINFO} model name"] = probes.clip(cpu.model_name)
            label = label or cpu.model_name
    else:
        detected = {"mattr": ARM64_DEFAULT_MATTR}
        mcpu, why = probes.arm_mcpu(cpu.arm_cores if cpu is not None else ())
        evidence[f"{probes.CPUINFO} cores"] = why
        if mcpu is not None:
            detected["mcpu"] = mcpu
    if ov.compiler_options is not None:
        options = dict(ov.compiler_options)
        evidence["override:compiler_options"] = compact_json(options)
    else:
        options = detected
    _apply_cpu_overrides(options, ov, evidence)
    if arch == "X86_64" and ov.compiler_options is None and ov.mcpu is None:
        _require_core_avx2(cpu, label, evidence)
    text = ", ".join(f"{k} {v}" for k, v in sorted(options.items()))
    return options, f"{label or 'machine'}, {arch} CPU" + (f" ({text})" if text else "")


def _apply_cpu_overrides(
    options: dict[str, str], ov: PlatformOverrides, evidence: dict[str, str]
) -> None:
    for option, value in (("mcpu", ov.mcpu), ("mattr", ov.mattr)):
        if value is not None:
            options[option] = value
            evidence[f"override:{option}"] = value


def _require_core_avx2(
    cpu: probes.CpuInfo | None, label: str | None, evidence: dict[str, str]
) -> None:
    """``core-avx2`` code stops with SIGILL on CPUs without AVX2: refuse them early."""
    key = f"{probes.CPUINFO} flags"
    if cpu is None or cpu.flags is None:
        evidence[key] = "unavailable: assuming AVX2 (core-avx2)"
        return
    missing = sorted(CORE_AVX2_FLAGS - cpu.flags)
    if missing:
        raise UnsupportedPlatformError(
            found=f"x86_64 CPU {label or ''} without {', '.join(missing)}".replace("  ", " "),
            supported="x86_64 CPUs with AVX2/FMA/BMI2 (mcpu core-avx2), or set the mcpu override",
        )
    evidence[key] = f"has {', '.join(sorted(CORE_AVX2_FLAGS))}" + (
        "; avx512f present, not used (AWS tested core-avx2)" if "avx512f" in cpu.flags else ""
    )
