"""SageMaker Neo targets from the same fixture trees as Lookout for Vision detection.

Each tree under ``tests/fixtures/platforms/<name>`` holds only the files detection
reads (``/bin/sh`` is just an ELF header: the userland architecture). Every target is
checked against botocore's official ``sagemaker`` model, and the Lookout for Vision
result of every tree is checked to be what it was before Neo existed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from pydantic import ValidationError

from agent.errors import UnsupportedPlatformError
from agent.platform import PlatformOverrides, detect_platform
from agent.platform.neo import NeoPlatform, detect_neo_platform, from_detected, neo_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "platforms"
KEY_RULE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


def fixture(name: str) -> Path:
    return FIXTURES / name


def copy_fixture(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(fixture(name), target, symlinks=True)
    return target


@pytest.fixture(scope="module")
def output_config_shape() -> Any:
    """The official OutputConfig shape of CreateCompilationJob."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    return model.operation_model("CreateCompilationJob").input_shape.members["OutputConfig"]


NEO_EXPECTED = [
    pytest.param(
        "jetson-agx-xavier-jetpack46",
        {"target_device": "jetson_xavier", "compiler_options": {}, "key": "jetson-xavier"},
        id="jetson-agx-xavier-jetpack46",
    ),
    pytest.param(
        "jetson-nano-jetpack461",
        {"target_device": "jetson_nano", "compiler_options": {}, "key": "jetson-nano"},
        id="jetson-nano-jetpack461",
    ),
    pytest.param(
        "jetson-tx2-jetpack46",
        {"target_device": "jetson_tx2", "compiler_options": {}, "key": "jetson-tx2"},
        id="jetson-tx2-jetpack46",
    ),
    pytest.param(
        "raspberry-pi-4-armhf",
        {"target_device": "rasp4b", "compiler_options": {}, "key": "rasp4b"},
        id="raspberry-pi-4-armhf",
    ),
    pytest.param(
        "raspberry-pi-3-armhf",
        {"target_device": "rasp3b", "compiler_options": {}, "key": "rasp3b"},
        id="raspberry-pi-3-armhf",
    ),
    pytest.param(
        "raspberry-pi-4",
        {
            "target_device": None,
            "os": "LINUX",
            "arch": "ARM64",
            "compiler_options": {"mcpu": "cortex-a72", "mattr": ["+neon"]},
            "key": "arm64-cpu-cortex-a72",
        },
        id="raspberry-pi-4-64bit",
    ),
    pytest.param(
        "armv7l-board",
        {
            "target_device": None,
            "os": "LINUX",
            "arch": "ARM_EABIHF",
            "accelerator": None,
            "compiler_options": {"mattr": ["+neon"]},
            "key": "armhf-cpu",
        },
        id="armv7l-board",
    ),
    pytest.param(
        "jetson-agx-orin-jetpack512",
        {
            "target_device": None,
            "arch": "ARM64",
            "accelerator": "NVIDIA",
            "compiler_options": {"gpu-code": "sm_87", "trt-ver": "8.5.2", "cuda-ver": "11.4"},
            "key": "arm64-sm87-trt852-cu114",
        },
        id="jetson-agx-orin-jetpack512",
    ),
    pytest.param(
        "x86-64-t4",
        {
            "target_device": None,
            "arch": "X86_64",
            "accelerator": "NVIDIA",
            "compiler_options": {"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"},
            "key": "x86-64-sm75-trt713-cu102",
        },
        id="x86-64-t4",
    ),
    pytest.param(
        "x86-64-cpu-server",
        {
            "target_device": None,
            "arch": "X86_64",
            "compiler_options": {"mcpu": "core-avx2"},
            "key": "x86-64-cpu",
        },
        id="x86-64-cpu-server",
    ),
]
NEO_FIXTURES = [p.values[0] for p in NEO_EXPECTED]


@pytest.mark.parametrize(("name", "expected"), NEO_EXPECTED)
def test_fixture_detects_expected_neo_target(name: str, expected: dict[str, object]) -> None:
    """Each fixture tree yields its Neo target: a TargetDevice where the hardware and
    software stack match one, else the TargetPlatform with Neo's option forms."""
    detected = detect_neo_platform(fixture(name))
    assert detected.model_dump(include=set(expected)) == expected


@pytest.mark.parametrize("name", NEO_FIXTURES)
def test_neo_targets_fit_the_official_model(name: str, output_config_shape: Any) -> None:
    """Every detected target's OutputConfig uses the official enums (TargetDevice, Os,
    Arch, Accelerator) and CompilerOptions is 3-1024 characters of JSON; the key is a
    short slug equal to neo_key() of the fields."""
    detected = detect_neo_platform(fixture(name))
    config = detected.output_config("s3://bucket/prefix")
    members = output_config_shape.members
    if "TargetDevice" in config:
        assert config["TargetDevice"] in members["TargetDevice"].enum
        assert "TargetPlatform" not in config
    else:
        platform = members["TargetPlatform"].members
        assert config["TargetPlatform"]["Os"] in platform["Os"].enum
        assert config["TargetPlatform"]["Arch"] in platform["Arch"].enum
        if "Accelerator" in config["TargetPlatform"]:
            assert config["TargetPlatform"]["Accelerator"] in platform["Accelerator"].enum
    if "CompilerOptions" in config:
        assert 3 <= len(config["CompilerOptions"]) <= 1024
        assert isinstance(json.loads(config["CompilerOptions"]), dict)
    assert KEY_RULE.fullmatch(detected.key) and len(detected.key) <= 24
    assert detected.key == neo_key(detected.model_dump())
    assert NeoPlatform.model_validate_json(detected.model_dump_json()) == detected


def test_every_detectable_device_is_in_the_official_enum(output_config_shape: Any) -> None:
    """The TargetDevice values detection may choose all exist in botocore's enum."""
    from typing import get_args

    from agent.platform.neo import NeoTargetDevice

    assert set(get_args(NeoTargetDevice)) <= set(output_config_shape.members["TargetDevice"].enum)


LOOKOUT_FOR_VISION_BEFORE = {
    "jetson-agx-xavier-jetpack46": ("jetson-xavier", None),
    "jetson-agx-orin-jetpack512": ("arm64-sm87-trt852-cu114", None),
    "x86-64-t4": ("x86-64-sm75-trt713-cu102", None),
    "x86-64-a10g": ("x86-64-sm80-trt820-cu112", None),
    "raspberry-pi-4": ("arm64-cpu-cortex-a72", None),
    "x86-64-cpu-server": ("x86-64-cpu", None),
    "jetson-nano-jetpack461": ("arm64-sm53-trt821-cu102", None),
    "jetson-tx2-jetpack46": ("arm64-sm62-trt801-cu102", None),
    "raspberry-pi-4-armhf": ("arm64-cpu-cortex-a72", None),
    "armv7l-board": (None, "armv7l"),
    "raspberry-pi-3-armhf": (None, "armv7l"),
}


@pytest.mark.parametrize(("name", "outcome"), list(LOOKOUT_FOR_VISION_BEFORE.items()))
def test_lookout_for_vision_mapping_is_unchanged(
    name: str, outcome: tuple[str | None, str | None]
) -> None:
    """The Lookout for Vision detector gives every tree (old and new) the key it gave
    before Neo existed, and still refuses 32-bit ARM machines."""
    key, refused = outcome
    if refused is not None:
        with pytest.raises(UnsupportedPlatformError, match=refused):
            detect_platform(fixture(name))
    else:
        assert detect_platform(fixture(name)).key == key


def test_prefer_target_device_false_gives_target_platforms() -> None:
    """With prefer_target_device=False a Nano is ARM64 + NVIDIA sm_53 with its CUDA and
    TensorRT, and a Pi 3 on a 32-bit userland is ARM_EABIHF with mattr +neon."""
    nano = detect_neo_platform(fixture("jetson-nano-jetpack461"), prefer_target_device=False)
    assert (nano.target_device, nano.arch, nano.accelerator) == (None, "ARM64", "NVIDIA")
    assert nano.compiler_options == {"gpu-code": "sm_53", "trt-ver": "8.2.1", "cuda-ver": "10.2"}
    pi3 = detect_neo_platform(fixture("raspberry-pi-3-armhf"), prefer_target_device=False)
    assert (pi3.target_device, pi3.arch) == (None, "ARM_EABIHF")
    assert pi3.compiler_options_json() == '{"mattr":["+neon"]}'
    assert pi3.evidence["/bin/sh ELF"] == "32-bit arm (ARM_EABIHF)"


def test_jetson_on_jetpack5_is_not_a_neo_device(tmp_path: Path) -> None:
    """Neo's Jetson devices are for JetPack 4: a TX2 tree claiming L4T R35 gets a
    TargetPlatform, and the evidence says why."""
    root = copy_fixture("jetson-tx2-jetpack46", tmp_path)
    (root / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 1\n")
    detected = detect_neo_platform(root)
    assert detected.target_device is None
    assert detected.compiler_options["gpu-code"] == "sm_62"
    assert "found L4T R35.4.1" in detected.evidence["decision"]


def test_tx1_is_told_from_the_nano_by_its_board_name(tmp_path: Path) -> None:
    """Nano and TX1 share the tegra210 SoC; a board named TX1 gets jetson_tx1."""
    root = copy_fixture("jetson-nano-jetpack461", tmp_path)
    (root / "proc/device-tree/model").write_text("NVIDIA Jetson TX1 Developer Kit\0")
    assert detect_neo_platform(root).target_device == "jetson_tx1"


def test_soft_float_userland_is_arm_eabi(tmp_path: Path) -> None:
    """A 32-bit ARM userland whose ELF says soft-float is ARM_EABI, not a Pi device."""
    root = copy_fixture("raspberry-pi-3-armhf", tmp_path)
    sh = bytearray((root / "bin/sh").read_bytes())
    sh[36:40] = (0x05000200).to_bytes(4, "little")
    (root / "bin/sh").write_bytes(bytes(sh))
    detected = detect_neo_platform(root)
    assert (detected.target_device, detected.arch) == (None, "ARM_EABI")
    assert "found ARM_EABI" in detected.evidence["decision"]


def test_overrides_apply_to_neo_targets() -> None:
    """An operator's Neo target_device wins; a TargetPlatform-shaping override turns the
    Pi 4 device off; mattr/mcpu overrides reach a 32-bit ARM platform; the Lookout for
    Vision target_device override is honoured."""
    chosen = detect_neo_platform(fixture("x86-64-cpu-server"), target_device="rasp3b")
    assert chosen.target_device == "rasp3b"
    assert chosen.evidence == {"override:target_device": "rasp3b"}
    shaped = detect_neo_platform(
        fixture("raspberry-pi-3-armhf"),
        overrides=PlatformOverrides(mcpu="cortex-a53", mattr="+neon,+vfpv4"),
    )
    assert shaped.target_device is None
    assert shaped.compiler_options == {"mcpu": "cortex-a53", "mattr": ["+neon", "+vfpv4"]}
    xavier = detect_neo_platform(
        fixture("jetson-agx-orin-jetpack512"),
        overrides=PlatformOverrides(target_device="jetson_xavier"),
    )
    assert xavier.target_device == "jetson_xavier"


def test_model_rules() -> None:
    """NeoPlatform refuses a device with platform fields, a platform without arch, and
    NVIDIA without its three options; from_detected turns mattr into a list."""
    with pytest.raises(ValidationError, match="excludes"):
        NeoPlatform(target_device="rasp4b", arch="ARM64", description="x")
    with pytest.raises(ValidationError, match="os and arch"):
        NeoPlatform(os="LINUX", description="x")
    with pytest.raises(ValidationError, match="cuda-ver"):
        NeoPlatform(
            os="LINUX",
            arch="ARM64",
            accelerator="NVIDIA",
            compiler_options={"gpu-code": "sm_53", "trt-ver": "8.2.1"},
            description="x",
        )
    converted = from_detected(detect_platform(fixture("raspberry-pi-4")))
    assert converted.compiler_options["mattr"] == ["+neon"]
    assert converted.output_config("s3://b/p") == {
        "S3OutputLocation": "s3://b/p",
        "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"},
        "CompilerOptions": '{"mattr":["+neon"],"mcpu":"cortex-a72"}',
    }
