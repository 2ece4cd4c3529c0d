"""Platform detection against small fixture trees of real devices' files.

Each tree under ``tests/fixtures/platforms/<name>`` holds only the files detection
reads. Trees that need a variation are copied to ``tmp_path`` and edited there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.errors import UnsupportedPlatformError
from agent.platform import (
    NVIDIA_SMI_COMPUTE_CAP,
    SUPPORTED,
    Arch,
    DetectedPlatform,
    PlatformOverrides,
    default_runner,
    detect_platform,
    platform_key,
    platform_report,
)
from agent.platform.rootfs import RootFS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "platforms"
KEY_RULE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
NVIDIA_SMI_SCRIPTS = ("x86-64-t4/usr/bin/nvidia-smi", "x86-64-a10g/usr/bin/nvidia-smi")


def fixture(name: str) -> Path:
    return FIXTURES / name


def copy_fixture(name: str, tmp_path: Path) -> Path:
    """A writable copy of a fixture tree (symbolic links kept as links)."""
    target = tmp_path / name
    shutil.copytree(fixture(name), target, symlinks=True)
    return target


def write(root: Path, relative: str, content: str, *, mode: int | None = None) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    if mode is not None:
        path.chmod(mode)


def failing_nvidia_smi(argv: list[str]) -> str:
    """A runner whose nvidia-smi exits 9, like one that does not know ``compute_cap``."""
    raise subprocess.CalledProcessError(9, argv, output="", stderr="Field not valid\n")


class Answering:
    """A runner that answers every command with ``text`` and records the commands."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> str:
        self.calls.append(list(argv))
        return self.text


# -- every fixture -------------------------------------------------------------------------

EXPECTED = [
    pytest.param(
        "jetson-agx-xavier-jetpack46",
        {
            "target_device": "jetson_xavier",
            "os": None,
            "arch": None,
            "accelerator": None,
            "compiler_options": {},
            "key": "jetson-xavier",
            "description": "NVIDIA Jetson AGX Xavier, JetPack 4.6 (L4T R32.6.1)",
        },
        id="jetson-agx-xavier-jetpack46",
    ),
    pytest.param(
        "jetson-agx-orin-jetpack512",
        {
            "target_device": None,
            "os": "LINUX",
            "arch": "ARM64",
            "accelerator": "NVIDIA",
            "compiler_options": {"gpu-code": "sm_87", "trt-ver": "8.5.2", "cuda-ver": "11.4"},
            "key": "arm64-sm87-trt852-cu114",
            "description": "NVIDIA Jetson AGX Orin, JetPack 5.1.2 (L4T R35.4.1), sm_87, "
            "CUDA 11.4, TensorRT 8.5.2",
        },
        id="jetson-agx-orin-jetpack512",
    ),
    pytest.param(
        "x86-64-t4",
        {
            "target_device": None,
            "os": "LINUX",
            "arch": "X86_64",
            "accelerator": "NVIDIA",
            "compiler_options": {"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"},
            "key": "x86-64-sm75-trt713-cu102",
            "description": "NVIDIA Tesla T4 on X86_64, sm_75, CUDA 10.2, TensorRT 7.1.3",
        },
        id="x86-64-t4",
    ),
    pytest.param(
        "x86-64-a10g",
        {
            "target_device": None,
            "os": "LINUX",
            "arch": "X86_64",
            "accelerator": "NVIDIA",
            "compiler_options": {"gpu-code": "sm_80", "trt-ver": "8.2.0", "cuda-ver": "11.2"},
            "key": "x86-64-sm80-trt820-cu112",
            "description": "NVIDIA A10G on X86_64, sm_80, CUDA 11.2, TensorRT 8.2.0",
        },
        id="x86-64-a10g",
    ),
    pytest.param(
        "raspberry-pi-4",
        {
            "target_device": None,
            "os": "LINUX",
            "arch": "ARM64",
            "accelerator": None,
            "compiler_options": {"mcpu": "cortex-a72", "mattr": "+neon"},
            "key": "arm64-cpu-cortex-a72",
            "description": "Raspberry Pi 4 Model B Rev 1.4, ARM64 CPU "
            "(mattr +neon, mcpu cortex-a72)",
        },
        id="raspberry-pi-4",
    ),
    pytest.param(
        "x86-64-cpu-server",
        {
            "target_device": None,
            "os": "LINUX",
            "arch": "X86_64",
            "accelerator": None,
            "compiler_options": {"mcpu": "core-avx2"},
            "key": "x86-64-cpu",
            "description": "Intel(R) Xeon(R) Platinum 8275CL CPU @ 3.00GHz, X86_64 CPU "
            "(mcpu core-avx2)",
        },
        id="x86-64-cpu-server",
    ),
]
SUPPORTED_FIXTURES = [p.values[0] for p in EXPECTED]


@pytest.mark.parametrize(("name", "expected"), EXPECTED)
def test_fixture_detects_expected_target(name: str, expected: dict[str, object]) -> None:
    """Each supported fixture tree yields its known target, compiler options and key
    (with the default runner, i.e. the tree's own nvidia-smi script where it has one)."""
    detected = detect_platform(fixture(name))
    actual = detected.model_dump(include=set(expected))
    assert actual == expected


@pytest.mark.parametrize("name", SUPPORTED_FIXTURES)
def test_keys_are_short_slugs_and_evidence_is_recorded(name: str) -> None:
    """Every detected key is lowercase [a-z0-9-], at most 24 characters, equal to
    platform_key() of the target fields, and the evidence names the files read."""
    detected = detect_platform(fixture(name))
    assert KEY_RULE.fullmatch(detected.key) and len(detected.key) <= 24
    assert detected.key == platform_key(
        target_device=detected.target_device,
        os=detected.os,
        arch=detected.arch,
        accelerator=detected.accelerator,
        compiler_options=detected.compiler_options,
    )
    assert detected.evidence["/proc/sys/kernel/arch"] in ("aarch64", "x86_64")
    assert all(isinstance(v, str) and v for v in detected.evidence.values())


@pytest.mark.parametrize("name", SUPPORTED_FIXTURES)
def test_json_round_trip(name: str) -> None:
    """A detected platform survives model_dump_json/model_validate_json unchanged, and
    its report is plain JSON."""
    detected = detect_platform(fixture(name))
    again = DetectedPlatform.model_validate_json(detected.model_dump_json())
    assert again == detected
    assert again.compiler_options_json() == detected.compiler_options_json()
    json.dumps(platform_report(detected))


def test_fixture_scripts_are_executable() -> None:
    """The fixtures' nvidia-smi scripts keep their exec bit (the detector only runs
    executable files), so a checkout that lost it fails here, not obscurely later."""
    for relative in NVIDIA_SMI_SCRIPTS:
        assert os.access(FIXTURES / relative, os.X_OK), relative


# -- unsupported machines ------------------------------------------------------------------


def test_armv7l_is_unsupported_with_what_was_found_and_what_is_supported() -> None:
    """A 32-bit ARM board is refused; the message names armv7l, where it was read, the
    board, and the supported architectures."""
    with pytest.raises(UnsupportedPlatformError) as caught:
        detect_platform(fixture("armv7l-board"))
    error = caught.value
    assert "armv7l" in error.found
    assert "/proc/sys/kernel/arch" in error.found
    assert "BeagleBone Black" in error.found
    assert error.supported == SUPPORTED
    assert "x86_64" in error.message and "aarch64" in error.message
    assert error.message.startswith("unsupported platform: found machine architecture armv7l")


@pytest.mark.parametrize("machine", ["i686", "riscv64", "armv6l", "s390x"])
def test_other_machines_are_unsupported(machine: str) -> None:
    """Machine names other than x86_64/amd64/aarch64/arm64 are refused by name."""
    with pytest.raises(UnsupportedPlatformError, match=machine):
        detect_platform(fixture("x86-64-cpu-server"), machine=machine)


@pytest.mark.parametrize(
    ("machine", "arch"), [("amd64", "X86_64"), ("x86_64", "X86_64"), ("arm64", "ARM64")]
)
def test_machine_argument_wins_over_the_tree(tmp_path: Path, machine: str, arch: str) -> None:
    """The ``machine`` argument replaces /proc/sys/kernel/arch, aliases included."""
    write(tmp_path, "proc/sys/kernel/arch", "armv7l\n")
    detected = detect_platform(tmp_path, machine=machine)
    assert detected.arch == arch
    assert detected.evidence["machine argument"] == machine


def test_tree_without_kernel_arch_is_not_guessed_from_the_host(tmp_path: Path) -> None:
    """Under a root other than /, a missing /proc/sys/kernel/arch is an error, never
    this machine's own architecture."""
    with pytest.raises(UnsupportedPlatformError, match="no machine architecture"):
        detect_platform(tmp_path)


# -- Jetson variations ---------------------------------------------------------------------


def test_xavier_as_target_platform_when_target_device_is_not_preferred() -> None:
    """With prefer_target_device=False a Xavier is ARM64 + NVIDIA with sm_72 and the
    CUDA/TensorRT versions of the tree (read through /usr/local/cuda's absolute link)."""
    detected = detect_platform(fixture("jetson-agx-xavier-jetpack46"), prefer_target_device=False)
    assert detected.target_device is None
    assert (detected.os, detected.arch, detected.accelerator) == ("LINUX", "ARM64", "NVIDIA")
    assert detected.compiler_options == {
        "gpu-code": "sm_72",
        "cuda-ver": "10.2",
        "trt-ver": "8.0.1",
    }
    assert detected.key == "arm64-sm72-trt801-cu102"
    assert detected.evidence["/usr/local/cuda/version.txt"] == "10.2.300"


def test_xavier_on_jetpack5_gets_a_target_platform(tmp_path: Path) -> None:
    """jetson_xavier is for the JetPack 4 stack; a Xavier on L4T R35 is packaged as a
    TargetPlatform for its own CUDA/TensorRT, and the evidence says why."""
    root = copy_fixture("jetson-agx-xavier-jetpack46", tmp_path)
    write(root, "etc/nv_tegra_release", "# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref\n")
    detected = detect_platform(root)
    assert detected.target_device is None
    assert detected.compiler_options["gpu-code"] == "sm_72"
    assert "L4T R35.4.1" in detected.evidence["decision"]
    assert detected.description.startswith("NVIDIA Jetson AGX Xavier, JetPack 5.1.2 (L4T R35.4.1)")


@pytest.mark.parametrize(
    ("model", "gpu_code"),
    [
        ("NVIDIA Jetson Orin Nano Developer Kit", "sm_87"),
        ("NVIDIA Jetson Nano Developer Kit", "sm_53"),
        ("quill", "sm_62"),
    ],
)
def test_other_jetsons_by_board_name_or_soc(tmp_path: Path, model: str, gpu_code: str) -> None:
    """Without a Tegra ``compatible`` entry the board name decides the GPU ("Orin Nano"
    is an Orin); a TX2 whose board name says nothing is found by its tegra186 SoC."""
    write(tmp_path, "proc/sys/kernel/arch", "aarch64\n")
    write(tmp_path, "proc/device-tree/model", model + "\0")
    if model == "quill":
        write(tmp_path, "proc/device-tree/compatible", "nvidia,quill\0nvidia,tegra186\0")
    write(tmp_path, "usr/local/cuda/version.txt", "CUDA Version 10.2.89\n")
    write(tmp_path, "usr/lib/aarch64-linux-gnu/libnvinfer.so.8.2.1", "")
    detected = detect_platform(tmp_path)
    assert detected.accelerator == "NVIDIA"
    assert detected.compiler_options["gpu-code"] == gpu_code
    assert detected.key == f"arm64-sm{gpu_code[3:]}-trt821-cu102"


# -- overrides, field by field -------------------------------------------------------------


def test_override_target_device() -> None:
    """overrides.target_device forces that TargetDevice, without compiler options."""
    detected = detect_platform(
        fixture("x86-64-cpu-server"), overrides=PlatformOverrides(target_device="jetson_xavier")
    )
    assert detected.target_device == "jetson_xavier"
    assert detected.compiler_options == {} and detected.key == "jetson-xavier"
    assert detected.evidence["override:target_device"] == "jetson_xavier"


def test_override_os_turns_a_xavier_into_a_target_platform() -> None:
    """overrides.os is recorded and, being a TargetPlatform field, replaces the Xavier
    TargetDevice (which could not carry it)."""
    detected = detect_platform(
        fixture("jetson-agx-xavier-jetpack46"), overrides=PlatformOverrides(os="LINUX")
    )
    assert detected.target_device is None and detected.os == "LINUX"
    assert detected.evidence["override:os"] == "LINUX"
    assert detected.key == "arm64-sm72-trt801-cu102"


def test_override_arch_lets_an_armv7l_board_through() -> None:
    """overrides.arch=ARM64 on an armv7l board is allowed; the evidence keeps what was
    really found. Its Cortex-A8 is not an AArch64 core, so no mcpu is given."""
    detected = detect_platform(fixture("armv7l-board"), overrides=PlatformOverrides(arch="ARM64"))
    assert detected.arch == "ARM64"
    assert detected.compiler_options == {"mattr": "+neon"}
    assert detected.key == "arm64-cpu"
    assert detected.evidence["override:arch"] == "ARM64 (detected armv7l)"


def test_override_accelerator_none_ignores_the_gpu() -> None:
    """overrides.accelerator=NONE packages for the CPU of a GPU machine (no cpuinfo in
    the tree: AVX2 is assumed and the evidence says so)."""
    detected = detect_platform(
        fixture("x86-64-t4"), overrides=PlatformOverrides(accelerator="NONE")
    )
    assert detected.accelerator is None
    assert detected.compiler_options == {"mcpu": "core-avx2"}
    assert detected.key == "x86-64-cpu"
    assert "assuming AVX2" in detected.evidence["/proc/cpuinfo flags"]


def test_override_accelerator_nvidia_needs_the_nvidia_options() -> None:
    """overrides.accelerator=NVIDIA on a machine without GPU, CUDA or TensorRT fails and
    names every missing piece; supplying them as overrides makes it work."""
    with pytest.raises(UnsupportedPlatformError) as caught:
        detect_platform(
            fixture("x86-64-cpu-server"),
            overrides=PlatformOverrides(accelerator="NVIDIA"),
            run=failing_nvidia_smi,
        )
    message = caught.value.message
    assert "gpu_code" in message and "CUDA" in message and "TensorRT" in message
    detected = detect_platform(
        fixture("x86-64-cpu-server"),
        overrides=PlatformOverrides(
            accelerator="NVIDIA", gpu_code="sm_75", cuda_ver="11.4", trt_ver="8.4.1"
        ),
        run=failing_nvidia_smi,
    )
    assert detected.compiler_options == {
        "gpu-code": "sm_75",
        "cuda-ver": "11.4",
        "trt-ver": "8.4.1",
    }
    assert detected.key == "x86-64-sm75-trt841-cu114"


def test_override_compiler_options_replace_the_detected_ones() -> None:
    """overrides.compiler_options replaces the detected options as a whole; a mcpu the
    key cannot spell out makes the key fall back to a digest."""
    detected = detect_platform(
        fixture("x86-64-cpu-server"),
        overrides=PlatformOverrides(compiler_options={"mcpu": "skylake-avx512"}),
    )
    assert detected.compiler_options == {"mcpu": "skylake-avx512"}
    assert re.fullmatch(r"x86-64-cpu-[0-9a-f]{8}", detected.key)
    assert detected.key != detect_platform(fixture("x86-64-cpu-server")).key


def test_override_compiler_options_can_supply_nvidia_versions(tmp_path: Path) -> None:
    """On a GPU machine without CUDA files, cuda-ver given in overrides.compiler_options
    is used instead of failing."""
    root = copy_fixture("x86-64-t4", tmp_path)
    shutil.rmtree(root / "usr/local/cuda")
    detected = detect_platform(
        root, overrides=PlatformOverrides(compiler_options={"cuda-ver": "10.2"})
    )
    assert detected.compiler_options == {
        "gpu-code": "sm_75",
        "cuda-ver": "10.2",
        "trt-ver": "7.1.3",
    }


def test_override_gpu_code() -> None:
    """overrides.gpu_code replaces the compute capability rule (here sm_86 on an A10G
    instead of the AWS-tested sm_80) and changes the key."""
    detected = detect_platform(
        fixture("x86-64-a10g"), overrides=PlatformOverrides(gpu_code="sm_86")
    )
    assert detected.compiler_options["gpu-code"] == "sm_86"
    assert detected.key == "x86-64-sm86-trt820-cu112"
    assert detected.evidence["override:gpu-code"] == "sm_86"


def test_override_cuda_ver_and_trt_ver() -> None:
    """overrides.cuda_ver and trt_ver replace the versions read from the tree."""
    detected = detect_platform(
        fixture("x86-64-t4"), overrides=PlatformOverrides(cuda_ver="11.4", trt_ver="8.2.1")
    )
    assert detected.compiler_options == {
        "gpu-code": "sm_75",
        "cuda-ver": "11.4",
        "trt-ver": "8.2.1",
    }
    assert detected.key == "x86-64-sm75-trt821-cu114"


def test_override_gpu_code_implies_nvidia() -> None:
    """An NVIDIA option override alone makes the target NVIDIA on a machine the
    detector sees as CPU-only (the rest must then be supplied too)."""
    detected = detect_platform(
        fixture("raspberry-pi-4"),
        overrides=PlatformOverrides(gpu_code="sm_53", cuda_ver="10.2", trt_ver="8.2.1"),
        run=failing_nvidia_smi,
    )
    assert detected.accelerator == "NVIDIA"
    assert detected.key == "arm64-sm53-trt821-cu102"


def test_override_mcpu_and_mattr() -> None:
    """overrides.mcpu and mattr replace the per-core choices; a non-default mattr is not
    spelled out in the key, so the key becomes a digest."""
    detected = detect_platform(
        fixture("raspberry-pi-4"), overrides=PlatformOverrides(mcpu="cortex-a53")
    )
    assert detected.compiler_options == {"mcpu": "cortex-a53", "mattr": "+neon"}
    assert detected.key == "arm64-cpu-cortex-a53"
    detected = detect_platform(
        fixture("raspberry-pi-4"), overrides=PlatformOverrides(mattr="+neon,+crc")
    )
    assert detected.compiler_options == {"mcpu": "cortex-a72", "mattr": "+neon,+crc"}
    assert re.fullmatch(r"arm64-cpu-[0-9a-f]{8}", detected.key)


def test_override_mcpu_skips_the_avx2_check(tmp_path: Path) -> None:
    """An x86 CPU without AVX2 is refused for core-avx2, naming the missing flags, but
    accepted once the operator picks an mcpu."""
    write(tmp_path, "proc/sys/kernel/arch", "x86_64\n")
    write(
        tmp_path, "proc/cpuinfo", "model name\t: Intel Atom C2750\nflags\t\t: fpu sse4_2 popcnt\n"
    )
    with pytest.raises(UnsupportedPlatformError, match="without avx, avx2, bmi1"):
        detect_platform(tmp_path)
    detected = detect_platform(tmp_path, overrides=PlatformOverrides(mcpu="silvermont"))
    assert detected.compiler_options == {"mcpu": "silvermont"}


def test_overrides_accept_camel_case_and_reject_contradictions() -> None:
    """PlatformOverrides takes camelCase names like the rest of the configuration, and
    refuses combinations that cannot both hold or malformed values."""
    parsed = PlatformOverrides.model_validate(
        {"gpuCode": "sm_75", "cudaVer": "10.2", "trtVer": "7.1.3", "compilerOptions": {}}
    )
    assert (parsed.gpu_code, parsed.cuda_ver, parsed.trt_ver) == ("sm_75", "10.2", "7.1.3")
    with pytest.raises(ValidationError, match="target_device cannot be combined"):
        PlatformOverrides(target_device="jetson_xavier", arch="ARM64")
    with pytest.raises(ValidationError, match="accelerator NONE contradicts gpu_code"):
        PlatformOverrides(accelerator="NONE", gpu_code="sm_75")
    for bad in ({"gpuCode": "75"}, {"cudaVer": 10.2}, {"trtVer": "8.2"}, {"arch": "armv7l"}):
        with pytest.raises(ValidationError):
            PlatformOverrides.model_validate(bad)


# -- NVIDIA: missing pieces and nvidia-smi -------------------------------------------------


def test_nvidia_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    """A T4 machine without the CUDA toolkit is refused with the GPU, what is missing,
    where it was looked for and the override that would help."""
    root = copy_fixture("x86-64-t4", tmp_path)
    shutil.rmtree(root / "usr/local/cuda")
    with pytest.raises(UnsupportedPlatformError) as caught:
        detect_platform(root)
    found = caught.value.found
    assert found.startswith("NVIDIA Tesla T4 on X86_64 without CUDA")
    assert "/usr/local/cuda/version.json" in found and "cuda_ver" in found
    assert "TensorRT" not in found


def test_nvidia_without_tensorrt_is_a_clear_error(tmp_path: Path) -> None:
    """An A10G machine whose TensorRT package was removed (dpkg: deinstall) is refused
    naming TensorRT and where it was looked for."""
    root = copy_fixture("x86-64-a10g", tmp_path)
    status = (root / "var/lib/dpkg/status").read_text()
    (root / "var/lib/dpkg/status").write_text(
        status.replace("install ok installed", "deinstall ok config-files")
    )
    with pytest.raises(UnsupportedPlatformError, match=r"without TensorRT \(libnvinfer"):
        detect_platform(root)


def test_nvidia_smi_failure_falls_back_to_the_model_table() -> None:
    """When nvidia-smi fails, the GPU model from /proc decides the compute capability,
    giving the same target and key as when nvidia-smi answers."""
    with_smi = detect_platform(fixture("x86-64-t4"))
    without = detect_platform(fixture("x86-64-t4"), run=failing_nvidia_smi)
    assert without.compiler_options == with_smi.compiler_options
    assert without.key == with_smi.key
    assert without.evidence[" ".join(NVIDIA_SMI_COMPUTE_CAP)].startswith("failed: exit status 9")
    assert without.evidence["table:gpu-model"] == "Tesla T4 -> 7.5"


def test_a10g_maps_to_sm80_whether_nvidia_smi_answers_or_not() -> None:
    """An A10G (compute capability 8.6) gets sm_80, AWS's tested value for g5, both from
    nvidia-smi's answer and from the table, so all g5 devices share one key."""
    answered = detect_platform(fixture("x86-64-a10g"), run=Answering("8.6\n"))
    table = detect_platform(fixture("x86-64-a10g"))
    assert answered.compiler_options["gpu-code"] == table.compiler_options["gpu-code"] == "sm_80"
    assert answered.key == table.key
    assert "8.6" in answered.evidence["rule:gpu-code"]


def test_nvidia_smi_garbage_falls_back_and_unknown_model_fails(tmp_path: Path) -> None:
    """Unparsable nvidia-smi output is ignored; with a GPU model the table does not know,
    detection fails and suggests the gpu_code override."""
    root = copy_fixture("x86-64-t4", tmp_path)
    info = root / "proc/driver/nvidia/gpus/0000:00:1e.0/information"
    info.write_text(info.read_text().replace("Tesla T4", "NVIDIA Quadro Mystery"))
    with pytest.raises(UnsupportedPlatformError, match="gpu_code"):
        detect_platform(root, run=Answering("[N/A]\n"))


def test_mixed_gpus_are_refused() -> None:
    """Two GPUs of different compute capabilities cannot share one artifact."""
    with pytest.raises(
        UnsupportedPlatformError, match=r"different compute capabilities \(7\.5, 8\.0\)"
    ):
        detect_platform(fixture("x86-64-t4"), run=Answering("7.5\n8.0\n"))


def test_injected_runner_is_asked_for_compute_cap_only() -> None:
    """The runner is called with exactly nvidia-smi's compute_cap query."""
    run = Answering("7.5\n")
    detect_platform(fixture("x86-64-t4"), run=run)
    assert run.calls == [list(NVIDIA_SMI_COMPUTE_CAP)]


def test_default_runner_never_uses_path_for_another_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a root other than /, the default runner runs only {root}/usr/bin/<program>,
    even if the program is on PATH; non-executable files are not run either."""
    bin_dir = tmp_path / "bin"
    write(bin_dir, "nvidia-smi", "#!/bin/sh\necho 9.9\n", mode=0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    root = tmp_path / "root"
    write(root, "usr/bin/nvidia-smi", "#!/bin/sh\necho 7.5\n", mode=0o644)
    with pytest.raises(FileNotFoundError):
        default_runner(root)(list(NVIDIA_SMI_COMPUTE_CAP))
    (root / "usr/bin/nvidia-smi").chmod(0o755)
    assert default_runner(root)(list(NVIDIA_SMI_COMPUTE_CAP)).strip() == "7.5"


def test_default_runner_times_out(tmp_path: Path) -> None:
    """A hanging nvidia-smi is abandoned after the timeout; detection then uses the
    model table."""
    write(tmp_path, "usr/bin/nvidia-smi", "#!/bin/sh\nexec sleep 5\n", mode=0o755)
    with pytest.raises(subprocess.TimeoutExpired):
        default_runner(tmp_path, timeout=0.2)(list(NVIDIA_SMI_COMPUTE_CAP))


# -- ARM cores -----------------------------------------------------------------------------


def test_big_little_uses_the_lowest_architecture_core(tmp_path: Path) -> None:
    """On a Cortex-A55 + Cortex-A76 SoC the artifact must run on both clusters, so the
    ARMv8.2 core listed first (A55) is the mcpu."""
    write(tmp_path, "proc/sys/kernel/arch", "aarch64\n")
    cores = [("0xd05", i) for i in range(4)] + [("0xd0b", i) for i in range(4, 8)]
    write(
        tmp_path,
        "proc/cpuinfo",
        "".join(
            f"processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: {p}\n\n" for p, i in cores
        ),
    )
    detected = detect_platform(tmp_path)
    assert detected.compiler_options == {"mcpu": "cortex-a55", "mattr": "+neon"}
    assert "mixed cortex-a55, cortex-a76" in detected.evidence["/proc/cpuinfo cores"]


# -- the model -----------------------------------------------------------------------------


def test_validators_enforce_the_packaging_rules() -> None:
    """DetectedPlatform refuses: both or neither of target device and platform, options
    with a target device, NVIDIA without its three options, and malformed keys."""
    nvidia = {"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"}
    cases: list[dict[str, Any]] = [
        {"target_device": "jetson_xavier", "os": "LINUX", "arch": "ARM64"},
        {"os": "LINUX"},
        {"target_device": "jetson_xavier", "compiler_options": {"mcpu": "x"}},
        {"os": "LINUX", "arch": "X86_64", "accelerator": "NVIDIA",
         "compiler_options": {"gpu-code": "sm_75", "cuda-ver": "10.2"}},
        {"os": "LINUX", "arch": "X86_64", "key": "X86_64"},
        {"os": "LINUX", "arch": "X86_64", "key": "x" * 25},
        {"os": "LINUX", "arch": "X86_64", "compiler_options": {"mcpu": "a" * 1100}},
    ]  # fmt: skip
    for case in cases:
        with pytest.raises(ValidationError):
            DetectedPlatform(description="case", **case)
    ok = DetectedPlatform(
        os="LINUX", arch="X86_64", accelerator="NVIDIA", compiler_options=nvidia, description="T4"
    )
    assert ok.key == "x86-64-sm75-trt713-cu102"


def test_key_is_derived_when_omitted_and_kept_when_given() -> None:
    """Without a key the target's key is computed; an explicit well-formed key is kept."""
    derived = DetectedPlatform(target_device="jetson_xavier", description="x")
    assert derived.key == "jetson-xavier"
    given = DetectedPlatform(
        os="LINUX", arch="X86_64", compiler_options={"mcpu": "core-avx2"}, key="c5", description="x"
    )
    assert given.key == "c5"


def test_key_separates_every_option_that_changes_the_artifact() -> None:
    """Targets differing in any option get different keys; the same target (options in
    any order) gets the same key; unusual versions get a stable digest key."""

    def key(options: dict[str, str], arch: Arch = "X86_64") -> str:
        return platform_key(
            target_device=None,
            os="LINUX",
            arch=arch,
            accelerator="NVIDIA" if "gpu-code" in options else None,
            compiler_options=options,
        )

    t4 = {"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"}
    keys = {
        key(t4),
        key({**t4, "trt-ver": "8.2.0"}),
        key({**t4, "cuda-ver": "11.2"}),
        key({**t4, "gpu-code": "sm_80"}),
        key(t4, "ARM64"),
        key({**t4, "trt-ver": "10.3.0"}),
        key({**t4, "trt-ver": "10.3.1"}),
        key({**t4, "mcpu": "core-avx2"}),
    }
    assert len(keys) == 8
    assert key(dict(reversed(list(t4.items())))) == key(t4) == "x86-64-sm75-trt713-cu102"
    assert key({**t4, "trt-ver": "10.3.0"}) == key({**t4, "trt-ver": "10.3.0"})
    assert all(KEY_RULE.fullmatch(k) and len(k) <= 24 for k in keys)
    assert key({"mcpu": "core-avx2"}) == "x86-64-cpu"
    assert key({}) != key({"mcpu": "core-avx2"})  # {} and the default differ on the wire


def test_compiler_options_json_is_compact_and_sorted() -> None:
    """compiler_options_json() is the exact CompilerOptions string: sorted keys, no
    spaces; None when there are no options."""
    t4 = detect_platform(fixture("x86-64-t4"))
    assert t4.compiler_options_json() == '{"cuda-ver":"10.2","gpu-code":"sm_75","trt-ver":"7.1.3"}'
    xavier = detect_platform(fixture("jetson-agx-xavier-jetpack46"))
    assert xavier.compiler_options_json() is None


def test_platform_report_uses_the_service_field_names() -> None:
    """The detect report carries targetDevice, or targetPlatform with Os/Arch and
    Accelerator only for NVIDIA, and the CompilerOptions string."""
    xavier = platform_report(detect_platform(fixture("jetson-agx-xavier-jetpack46")))
    assert xavier["targetDevice"] == "jetson_xavier" and "targetPlatform" not in xavier
    assert xavier["compilerOptions"] is None and xavier["key"] == "jetson-xavier"
    t4 = platform_report(detect_platform(fixture("x86-64-t4")))
    assert t4["targetPlatform"] == {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"}
    assert t4["compilerOptions"] == '{"cuda-ver":"10.2","gpu-code":"sm_75","trt-ver":"7.1.3"}'
    assert set(t4) == {"targetPlatform", "compilerOptions", "key", "description", "evidence"}
    cpu = platform_report(detect_platform(fixture("x86-64-cpu-server")))
    assert cpu["targetPlatform"] == {"Os": "LINUX", "Arch": "X86_64"}


# -- reading under the root ----------------------------------------------------------------


def test_rootfs_keeps_links_and_dotdot_inside_the_root(tmp_path: Path) -> None:
    """Absolute link targets are re-anchored at the root and '..' stops at it, so a
    tree's links cannot make detection read this machine's files."""
    root = tmp_path / "root"
    write(root, "etc/hostname", "inside\n")
    (root / "abs").symlink_to("/etc/hostname")
    (root / "up").symlink_to("../../../../../../etc/hostname")
    (root / "loop").symlink_to("loop")
    fs = RootFS(root)
    assert fs.read_text("/abs") == "inside\n"
    assert fs.read_text("/up") == "inside\n"
    assert fs.read_text("/../../etc/hostname") == "inside\n"
    assert fs.read_text("/loop") is None
    assert fs.read_text("/missing") is None
