"""The CLI commands as a user runs them on a device (subprocesses under the stage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcloud.iotcore import BusMessage
from localcloud.stage import Stage

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"


def agent(stage: Stage, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=stage.workdir,
        env=stage.agent_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    with Stage(tmp_path / "work") as started:
        yield started


def test_plan_shows_the_request_and_only_reads(stage: Stage) -> None:
    """`plan` on a fresh device prints the packaging request and the merged deployment,
    and makes no call that changes anything in the cloud."""
    assert stage.world is not None
    stage.world.calls.clear()
    result = agent(stage, "plan")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = json.loads(result.stdout[result.stdout.index("{") :])
    assert plan["action"] == "package, then deploy"
    assert plan["desiredVersion"] == 1
    assert plan["packagingRequest"]["ModelVersion"] == "1"
    assert "l4v.edge.Agent" in plan["deployment"]["components"]
    writes = [c for c in stage.world.calls.calls if c.operation.startswith(("Start", "Create"))]
    assert writes == []


def test_once_rolls_out_and_status_shows_the_ledger(stage: Stage) -> None:
    """`once` reconciles until the rollout ends and exits 0 with the component RUNNING;
    `status --json` then shows the SUCCEEDED rollout and the deployed version."""
    result = agent(stage, "once")
    assert result.returncode == 0, result.stdout[-3000:]
    status = agent(stage, "status", "--json")
    assert status.returncode == 0, status.stderr
    ledger = json.loads(status.stdout)
    assert ledger["facts"]["deployed_version"] == 1
    assert ledger["facts"]["check_interval_factor"] == 1.0  # nothing was throttled
    assert ledger["rollouts"][0]["phase"] == "SUCCEEDED"
    table = agent(stage, "status")
    assert "deployed: v1" in table.stdout


def test_once_without_a_trained_model_exits_1(tmp_path: Path) -> None:
    """`once` against a project whose only model is still TRAINING exits 1 and says why."""
    with Stage(tmp_path / "work") as stage:
        assert stage.world is not None
        stage.world.lookoutvision.set_model_status("widgets", 1, "TRAINING")
        result = agent(stage, "once")
        assert result.returncode == 1
        assert "NoTrainedModelError" in result.stdout


@pytest.mark.parametrize(
    ("fixture", "code", "expected"),
    [
        ("jetson-agx-xavier-jetpack46", 0, '"targetDevice": "jetson_xavier"'),
        ("x86-64-t4", 0, '"gpu-code'),
        ("armv7l-board", 3, "armv7l"),
    ],
)
def test_detect_prints_the_platform(fixture: str, code: int, expected: str) -> None:
    """`detect --root` prints what a device with that file system would request."""
    result = subprocess.run(
        [sys.executable, "-m", "agent", "detect", "--root", str(FIXTURES / fixture)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == code, result.stderr
    assert expected in result.stdout


def _detect(*args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "detect", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert not result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_detect_shows_the_target_of_the_configured_backend(tmp_path: Path) -> None:
    """The same Raspberry Pi 4 with a 32-bit userland: by default `detect` shows Lookout
    for Vision's target (a TargetPlatform); with a configuration whose packaging.backend
    is sagemaker it shows the SageMaker Neo target (TargetDevice rasp4b, no
    CompilerOptions), and `--backend lookoutvision` overrides the configuration."""
    root = str(FIXTURES / "raspberry-pi-4-armhf")
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({
        "thingName": "pi-1",
        "region": "us-east-1",
        "packaging": {"backend": "sagemaker"},
        "sagemaker": {
            "modelPackageGroupName": "widgets",
            "roleArn": "arn:aws:iam::111122223333:role/NeoCompiler",
            "s3OutputLocation": "s3://neo-output-bucket/compiled",
        },
    }))

    code, lookout = _detect("--root", root)
    assert code == 0
    assert lookout["packagingBackend"] == "lookoutvision"
    assert "targetDevice" not in lookout and lookout["targetPlatform"]["Arch"] == "ARM64"

    code, neo = _detect("--root", root, "--config", str(config))
    assert code == 0
    assert neo["packagingBackend"] == "sagemaker"
    assert neo["targetDevice"] == "rasp4b"
    assert "targetPlatform" not in neo and neo["compilerOptions"] is None

    code, chosen = _detect("--root", root, "--config", str(config), "--backend", "lookoutvision")
    assert code == 0 and chosen["packagingBackend"] == "lookoutvision"
    assert chosen["targetPlatform"] == lookout["targetPlatform"]


@pytest.mark.parametrize(
    ("fixture", "target_device", "target_platform", "options"),
    [
        ("jetson-nano-jetpack461", "jetson_nano", None, None),
        ("x86-64-t4", None, {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"},
         {"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"}),
        ("raspberry-pi-3-armhf", "rasp3b", None, None),
    ],
)
def test_detect_backend_sagemaker_shows_the_neo_target(
    fixture: str,
    target_device: str | None,
    target_platform: dict[str, str] | None,
    options: dict[str, str] | None,
) -> None:
    """`detect --backend sagemaker` prints what CreateCompilationJob's OutputConfig would
    carry for the device: a Neo TargetDevice, or a TargetPlatform with CompilerOptions."""
    code, neo = _detect("--root", str(FIXTURES / fixture), "--backend", "sagemaker")
    assert code == 0
    assert neo["supported"] is True and neo["packagingBackend"] == "sagemaker"
    assert neo.get("targetDevice") == target_device
    assert neo.get("targetPlatform") == target_platform
    assert (json.loads(neo["compilerOptions"]) if neo["compilerOptions"] else None) == options


def test_unsupported_platform_keeps_reporting_health_without_packaging(tmp_path: Path) -> None:
    """On an armv7l board the daemon stays up: it publishes an unsupported-platform
    report and UNHEALTHY health, never calls Lookout for Vision, and stops cleanly."""
    config = {"platformRoot": str(FIXTURES / "armv7l-board")}
    with Stage(tmp_path / "work", agent_config=config) as stage:
        assert stage.world is not None
        stage.start_agent()

        def on(topic: str) -> Any:
            def match(message: BusMessage) -> bool:
                return message.topic == stage.topics[topic]

            return json.loads(stage.world.iotcore.wait_for(match, 30.0).payload)  # type: ignore[union-attr]

        report = on("platform")
        assert report["supported"] is False
        assert "armv7l" in report["error"]["message"]
        assert on("health")["status"] == "UNHEALTHY"
        assert stage.stop_agent() == 0
        assert not [c for c in stage.world.calls.calls if c.service == "lookoutvision"]


IDENTITY = {"thingName": "dev-1", "region": "us-east-1", "projectName": "widgets",
            "s3Bucket": "l4v-models"}


def agent_outside_greengrass(
    tmp_path: Path, config: dict[str, Any], *args: str
) -> subprocess.CompletedProcess[str]:
    """``python -m agent <args> --config F`` as a user runs it on a device without the
    nucleus; it gets 60 s, far more than a start that fails fast needs."""
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items()
           if k not in ("SVCUID", "L4V_AGENT_CONFIG") and not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "--config", str(path)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, check=False,
    )


@pytest.mark.parametrize("command", [("run",), ("config", "check")])
def test_mqtt_transport_with_a_missing_file_exits_2_naming_the_key(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """`run` (and `config check`) with `reporting.transport: mqtt` whose caPath does not
    exist exits 2 at once with one line naming reporting.mqtt.caPath, instead of
    retrying the connection forever."""
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    config = {**IDENTITY, "stateDir": "state", "reporting": {"transport": "mqtt", "mqtt": {
        "endpoint": "127.0.0.1", "certPath": "cert.pem", "keyPath": "key.pem",
        "caPath": "missing-ca.pem"}}}
    result = agent_outside_greengrass(tmp_path, config, *command)
    assert result.returncode == 2, result
    named = [line for line in result.stderr.splitlines() if "reporting.mqtt.caPath" in line]
    assert len(named) == 1 and "missing-ca.pem" in named[0], result.stderr
    assert result.stdout == ""


def test_config_check_prints_the_effective_configuration(tmp_path: Path) -> None:
    """`config check` on a valid file exits 0 and prints the merged configuration as
    JSON (defaults filled in, a number modelVersion accepted, URL credentials masked);
    it creates no state directory."""
    config = {**IDENTITY, "modelVersion": 3, "stateDir": "state",
              "endpoints": {"lookoutvision": "http://key:secret@127.0.0.1:9"},
              "componentTags": {"½": "東京"}}
    result = agent_outside_greengrass(tmp_path, config, "config", "check")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["modelVersion"] == "3"
    assert printed["checkIntervalSeconds"] == 900
    assert printed["componentTags"] == {"½": "東京"}
    assert "secret" not in result.stdout
    assert not (tmp_path / "state").exists()


def test_config_check_prints_the_devices_canary_wave_when_fleet_coordination_is_on(tmp_path: Path) -> None:
    """With fleet.enabled and waves [1, 10, 100], `config check` prints the device's wave
    (the rule of FleetSettings.wave_of) and how long after 'ready' it deploys."""
    from agent.config import load_config

    fleet = {"enabled": True, "waves": [1, 10, 100], "waveDelaySeconds": 600}
    config = {**IDENTITY, "stateDir": "state", "fleet": fleet}
    result = agent_outside_greengrass(tmp_path, config, "config", "check")
    assert result.returncode == 0, result.stderr
    placement = json.loads(result.stdout)["fleetPlacement"]
    wave = load_config(overrides={**IDENTITY, "fleet": fleet}).fleet.wave_of(IDENTITY["thingName"])
    assert placement == {"wave": wave, "deploysSecondsAfterReady": wave * 600}


def test_config_check_refuses_escaping_templates_and_quotes_huge_values_briefly(
    tmp_path: Path,
) -> None:
    """A format-string escape in a template and a 10 MB value both exit 2 with one short
    line each naming the key."""
    config = {**IDENTITY, "componentNameTemplate": "{project.__class__}",
              "s3Bucket": "b" * 10_000_000}
    result = agent_outside_greengrass(tmp_path, config, "config", "check")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any(line.strip().startswith("componentNameTemplate:") for line in lines), lines
    assert any(line.strip().startswith("s3Bucket:") for line in lines), lines
    assert len(result.stderr) < 2000


def test_config_check_under_greengrass_reads_the_component_configuration(stage: Stage) -> None:
    """Under the nucleus `config check` validates the component configuration read over
    IPC, exactly as `run` would, and calls no AWS service."""
    assert stage.world is not None
    stage.world.calls.clear()
    result = agent(stage, "config", "check")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["projectName"] == "widgets"
    assert printed["reporting"]["transport"] == "auto"
    assert stage.world.calls.calls == []
