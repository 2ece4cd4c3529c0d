"""Small readers, one per fact the detector needs. Each records what it read in
``evidence`` (source → value) and returns None when the fact is not there.

Paths are those of a Linux system, read through :class:`RootFS` (so under the root).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from agent.platform.rootfs import RootFS

Evidence = dict[str, str]

DEVICE_TREE_MODEL = "/proc/device-tree/model"
DEVICE_TREE_COMPATIBLE = "/proc/device-tree/compatible"
TEGRA_RELEASE = "/etc/nv_tegra_release"
CPUINFO = "/proc/cpuinfo"
CUDA_VERSION_JSON = "/usr/local/cuda/version.json"
CUDA_VERSION_TXT = "/usr/local/cuda/version.txt"
DPKG_STATUS = "/var/lib/dpkg/status"
NVIDIA_DRIVER_VERSION = "/proc/driver/nvidia/version"
NVIDIA_GPUS = "/proc/driver/nvidia/gpus"

#: Where TensorRT's runtime library lives, per architecture (Debian multiarch + RPM).
TENSORRT_LIB_DIRS = {
    "ARM64": ("/usr/lib/aarch64-linux-gnu", "/usr/lib64"),
    "X86_64": ("/usr/lib/x86_64-linux-gnu", "/usr/lib64"),
}


def clip(text: str, limit: int = 160) -> str:
    """One line of at most ``limit`` characters, for evidence values."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- device tree ---------------------------------------------------------------------------


def device_tree_model(fs: RootFS, evidence: Evidence) -> str | None:
    """The board name from the device tree (a NUL-terminated string), if any."""
    raw = fs.read_text(DEVICE_TREE_MODEL)
    if raw is None:
        return None
    model = raw.split("\0", 1)[0].strip()
    if not model:
        return None
    evidence[DEVICE_TREE_MODEL] = clip(model)
    return model


# -- NVIDIA Jetson -------------------------------------------------------------------------

#: Tegra SoC → (family, gpu-code). The gpu-code is the SoC's GPU compute capability.
JETSON_SOCS = {
    "tegra194": ("xavier", "sm_72"),  # AGX Xavier, Xavier NX (Volta)
    "tegra234": ("orin", "sm_87"),  # AGX Orin, Orin NX, Orin Nano (Ampere)
    "tegra186": ("tx2", "sm_62"),  # TX2, TX2 NX (Pascal)
    "tegra210": ("nano", "sm_53"),  # Nano, TX1 (Maxwell)
}
#: Board-name words → SoC, for device trees without a ``compatible`` entry. Order
#: matters: "Jetson Orin Nano" is an Orin.
_JETSON_NAME_WORDS = (
    ("orin", "tegra234"),
    ("xavier", "tegra194"),
    ("tx2", "tegra186"),
    ("nano", "tegra210"),
    ("tx1", "tegra210"),
)
#: L4T release → JetPack release (for descriptions only).
L4T_TO_JETPACK = {
    "32.4.3": "4.4",
    "32.4.4": "4.4.1",
    "32.5.0": "4.5",
    "32.5.1": "4.5.1",
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
}


@dataclass(frozen=True)
class JetsonInfo:
    """An NVIDIA Jetson module and its Linux for Tegra release."""

    family: str | None  # "xavier", "orin", "tx2", "nano"; None if the SoC is unknown
    gpu_code: str | None
    board: str | None  # device-tree model, e.g. "NVIDIA Jetson AGX Xavier Developer Kit"
    l4t: str | None  # e.g. "32.6.1"

    @property
    def l4t_major(self) -> int | None:
        return int(self.l4t.split(".", 1)[0]) if self.l4t else None

    def describe(self) -> str:
        """E.g. ``NVIDIA Jetson AGX Xavier, JetPack 4.6 (L4T R32.6.1)``."""
        if self.board:
            name = re.sub(r"\s+Developer Kit$", "", self.board.strip())
        else:
            name = f"NVIDIA Jetson ({self.family or 'unknown module'})"
        if self.l4t is None:
            return name
        jetpack = L4T_TO_JETPACK.get(self.l4t)
        if jetpack is None:
            return f"{name}, L4T R{self.l4t}"
        return f"{name}, JetPack {jetpack} (L4T R{self.l4t})"


def detect_jetson(fs: RootFS, board: str | None, evidence: Evidence) -> JetsonInfo | None:
    """A Jetson if the device tree or ``/etc/nv_tegra_release`` says this is one."""
    raw = fs.read_text(DEVICE_TREE_COMPATIBLE)
    compatible = [c.strip() for c in raw.split("\0") if c.strip()] if raw else []
    release = fs.read_text(TEGRA_RELEASE)
    tegra = [c.split(",", 1)[1] for c in compatible if c.startswith("nvidia,tegra")]
    is_jetson = (
        bool(tegra) or release is not None or (board is not None and "jetson" in board.lower())
    )
    if not is_jetson:
        return None
    if compatible:
        evidence[DEVICE_TREE_COMPATIBLE] = clip(", ".join(compatible))
    l4t = None
    if release is not None:
        first = release.strip().splitlines()[0] if release.strip() else ""
        evidence[TEGRA_RELEASE] = clip(first.lstrip("# "))
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)", first)
        if match:
            l4t = f"{match[1]}.{match[2]}"
    soc = next((s for s in tegra if s in JETSON_SOCS), None)
    if soc is None and board is not None:
        lowered = board.lower()
        soc = next((s for word, s in _JETSON_NAME_WORDS if word in lowered), None)
    family, gpu_code = JETSON_SOCS.get(soc or "", (None, None))
    return JetsonInfo(family=family, gpu_code=gpu_code, board=board, l4t=l4t)


# -- CUDA and TensorRT ---------------------------------------------------------------------


def cuda_version(fs: RootFS, evidence: Evidence) -> str | None:
    """The CUDA toolkit version as ``major.minor`` (what ``cuda-ver`` wants)."""
    text = fs.read_text(CUDA_VERSION_JSON)
    if text is not None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        cuda = data.get("cuda") if isinstance(data, dict) else None
        full = cuda.get("version") if isinstance(cuda, dict) else None
        if isinstance(full, str) and (match := re.match(r"(\d+)\.(\d+)", full)):
            evidence[CUDA_VERSION_JSON] = clip(full)
            return f"{match[1]}.{match[2]}"
        evidence[CUDA_VERSION_JSON] = "unreadable: no cuda.version"
    text = fs.read_text(CUDA_VERSION_TXT)
    if text is not None:
        match = re.search(r"CUDA Version\s+((\d+)\.(\d+)\S*)", text)
        if match:
            evidence[CUDA_VERSION_TXT] = clip(match[1])
            return f"{match[2]}.{match[3]}"
        evidence[CUDA_VERSION_TXT] = "unreadable: no 'CUDA Version'"
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def tensorrt_version(fs: RootFS, arch: str, evidence: Evidence) -> str | None:
    """TensorRT as ``X.Y.Z`` (what ``trt-ver`` wants).

    First from the runtime library's file name (``libnvinfer.so.8.2.0``), which is what
    the model will be loaded with; then from the Debian package database.
    """
    for directory in TENSORRT_LIB_DIRS.get(arch, ()):
        found = [
            m[1]
            for name in fs.list_dir(directory)
            if (m := re.fullmatch(r"libnvinfer\.so\.(\d+\.\d+\.\d+)", name))
        ]
        if found:
            best = max(found, key=_version_tuple)
            evidence[f"{directory}/libnvinfer.so.*"] = ", ".join(sorted(found, key=_version_tuple))
            return best
    status = fs.read_text(DPKG_STATUS)
    if status is None:
        return None
    packages = dpkg_installed(
        status, lambda name: bool(re.fullmatch(r"libnvinfer\d+|tensorrt", name))
    )
    if not packages:
        return None
    evidence[DPKG_STATUS] = clip(", ".join(f"{n} {v}" for n, v in sorted(packages.items())))
    # The runtime library package first (what is loaded), the meta-package second.
    runtime = sorted(
        (n for n in packages if n != "tensorrt"), key=lambda n: int(n[len("libnvinfer") :])
    )
    for name in [*reversed(runtime), "tensorrt"]:
        version = packages.get(name)
        upstream = re.match(r"(?:\d+:)?(\d+\.\d+\.\d+)", version or "")
        if upstream:
            return upstream[1]
    return None


def dpkg_installed(status: str, wanted: Callable[[str], bool]) -> dict[str, str]:
    """Installed packages (name → version) of a dpkg status file whose name is wanted."""
    installed: dict[str, str] = {}
    for stanza in re.split(r"\n\s*\n", status):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        package = fields.get("package", "")
        if (
            package
            and wanted(package)
            and fields.get("status", "").endswith(" installed")
            and fields.get("version")
        ):
            installed[package] = fields["version"]
    return installed


# -- discrete NVIDIA GPUs ------------------------------------------------------------------


@dataclass(frozen=True)
class NvidiaDriver:
    """The loaded NVIDIA kernel driver and the GPU models it reports."""

    version: str | None
    models: tuple[str, ...]


def nvidia_driver(fs: RootFS, evidence: Evidence) -> NvidiaDriver | None:
    """The NVIDIA driver's view from ``/proc/driver/nvidia`` (None if not loaded)."""
    text = fs.read_text(NVIDIA_DRIVER_VERSION)
    version = None
    if text is not None:
        evidence[NVIDIA_DRIVER_VERSION] = clip(text.splitlines()[0] if text.strip() else "")
        match = re.search(r"Kernel Module\s+(\S+)", text)
        version = match[1] if match else None
    models: list[str] = []
    for bus in fs.list_dir(NVIDIA_GPUS):
        path = f"{NVIDIA_GPUS}/{bus}/information"
        info = fs.read_text(path)
        match = re.search(r"^Model:\s*(.+?)\s*$", info or "", re.MULTILINE)
        if match:
            evidence[path] = clip(match[1])
            models.append(match[1])
    if text is None and not models:
        return None
    return NvidiaDriver(version=version, models=tuple(models))


#: GPU model name → compute capability, for when nvidia-smi cannot say (drivers older
#: than R510 do not know ``compute_cap``). The GPUs of EC2 GPU instances plus a few.
GPU_COMPUTE_CAPABILITY = {
    "K80": "3.7",  # p2
    "M60": "5.2",  # g3
    "V100": "7.0",  # p3
    "T4": "7.5",  # g4dn
    "T4G": "7.5",  # g5g
    "A10": "8.6",
    "A10G": "8.6",  # g5
    "A100": "8.0",  # p4d
    "L4": "8.9",  # g6
    "L40S": "8.9",  # g6e
    "H100": "9.0",  # p5
}


def gpu_compute_capability(model: str) -> str | None:
    """Compute capability of a GPU model name such as ``Tesla T4`` or ``NVIDIA A10G``."""
    upper = model.upper()
    for name, capability in GPU_COMPUTE_CAPABILITY.items():
        if re.search(rf"(?<![A-Z0-9]){re.escape(name)}(?![A-Z0-9])", upper):
            return capability
    return None


# -- CPU -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """The parts of ``/proc/cpuinfo`` detection uses."""

    model_name: str | None  # x86: "model name"
    flags: frozenset[str] | None  # x86: "flags" of the first processor
    arm_cores: tuple[tuple[str, str], ...]  # ARM: (CPU implementer, CPU part) per processor


def read_cpuinfo(fs: RootFS) -> CpuInfo | None:
    text = fs.read_text(CPUINFO)
    if text is None:
        return None
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.append((name.strip().lower(), value.strip()))
    model_name = next((v for n, v in fields if n == "model name"), None)
    flag_text = next((v for n, v in fields if n in ("flags", "features")), None)
    implementers = [v.lower() for n, v in fields if n == "cpu implementer"]
    parts = [v.lower() for n, v in fields if n == "cpu part"]
    return CpuInfo(
        model_name=model_name,
        flags=frozenset(flag_text.split()) if flag_text is not None else None,
        arm_cores=tuple(zip(implementers, parts, strict=False)),
    )


#: (CPU implementer, CPU part) → (LLVM ``mcpu``, architecture level times 10). Arm Ltd cores.
ARM_CORES = {
    ("0x41", "0xd03"): ("cortex-a53", 80),
    ("0x41", "0xd04"): ("cortex-a35", 80),
    ("0x41", "0xd05"): ("cortex-a55", 82),
    ("0x41", "0xd07"): ("cortex-a57", 80),
    ("0x41", "0xd08"): ("cortex-a72", 80),
    ("0x41", "0xd09"): ("cortex-a73", 80),
    ("0x41", "0xd0a"): ("cortex-a75", 82),
    ("0x41", "0xd0b"): ("cortex-a76", 82),
    ("0x41", "0xd0c"): ("neoverse-n1", 82),
    ("0x41", "0xd0d"): ("cortex-a77", 82),
    ("0x41", "0xd40"): ("neoverse-v1", 84),
    ("0x41", "0xd41"): ("cortex-a78", 82),
    ("0x41", "0xd44"): ("cortex-x1", 82),
    ("0x41", "0xd46"): ("cortex-a510", 90),
    ("0x41", "0xd47"): ("cortex-a710", 90),
    ("0x41", "0xd49"): ("neoverse-n2", 90),
    ("0x41", "0xd4f"): ("neoverse-v2", 90),
}


def arm_mcpu(cores: tuple[tuple[str, str], ...]) -> tuple[str | None, str]:
    """The ``mcpu`` for these ARM cores, and why.

    The artifact must run on every core (the scheduler moves processes between big and
    LITTLE clusters), so with mixed cores the one of the lowest architecture level wins,
    and among equals the first listed (cpu0, normally a LITTLE core). If any core is not
    in :data:`ARM_CORES` no ``mcpu`` is given (the compiler's generic ARMv8-A).
    """
    if not cores:
        return None, "no CPU implementer/part in /proc/cpuinfo"
    known = [ARM_CORES.get(core) for core in cores]
    names = sorted({f"{impl}/{part}" for impl, part in cores})
    if any(entry is None for entry in known):
        return None, f"unknown core {', '.join(names)}: generic ARMv8-A"
    entries = [entry for entry in known if entry is not None]
    lowest = min(level for _, level in entries)
    chosen = next(name for name, level in entries if level == lowest)
    distinct = sorted({name for name, _ in entries})
    if len(distinct) == 1:
        return chosen, f"{len(cores)}x {chosen}"
    return chosen, f"mixed {', '.join(distinct)}: {chosen} (lowest architecture level)"
