"""Helpers that put agents into a local world: seeding, configs, platforms."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, load_config
from agent.ledger import Ledger
from agent.platform import DetectedPlatform
from agent.reconciler import Reconciler
from localcloud.fleet import make_reconciler
from localcloud.world import World

ROOT = Path(__file__).resolve().parents[2]
AGENT_RECIPE = ROOT / "recipes" / "l4v.edge.Agent.json"
AGENT_COMPONENT = "l4v.edge.Agent"
PROJECT = "widgets"
BUCKET = "l4v-models"

PLATFORMS: dict[str, DetectedPlatform] = {
    "jetson-xavier": DetectedPlatform(
        target_device="jetson_xavier", key="jetson-xavier", description="Jetson AGX Xavier",
        compiler_options={}, evidence={},
    ),
    "x86-64-nvidia-sm75": DetectedPlatform(
        os="LINUX", arch="X86_64", accelerator="NVIDIA", key="x86-64-nvidia-sm75",
        description="x86_64 + T4",
        compiler_options={"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"}, evidence={},
    ),
    "arm64-cpu": DetectedPlatform(
        os="LINUX", arch="ARM64", key="arm64-cpu", description="ARM64 CPU",
        compiler_options={"mcpu": "cortex-a72", "mattr": "+neon"}, evidence={},
    ),
    "x86-64-cpu": DetectedPlatform(
        os="LINUX", arch="X86_64", key="x86-64-cpu", description="x86_64 CPU",
        compiler_options={"mcpu": "core-avx2"}, evidence={},
    ),
}


def seed(world: World, *, models: int = 1, packaging_seconds: float = 900.0) -> None:
    """A bucket, a project with ``models`` trained versions, and the agent's component."""
    world.client("s3").create_bucket(Bucket=BUCKET)
    world.lookoutvision.create_project(PROJECT)
    for _ in range(models):
        world.lookoutvision.add_model(PROJECT, "TRAINED")
    world.lookoutvision.packaging_seconds = packaging_seconds
    world.greengrass.register_component_version(json.loads(AGENT_RECIPE.read_text()))


#: The SageMaker backend's model package group and Neo output bucket.
GROUP = "widgets"
NEO_BUCKET = "neo-models"


def seed_sagemaker(world: World, *, versions: int = 1, compile_seconds: float = 180.0) -> str:
    """A model package group with ``versions`` Approved packages, a Neo execution role,
    the Neo output bucket and the agent's component; returns the role's ARN."""
    sm = world.sagemaker
    sm.create_model_package_group(GROUP)
    for _ in range(versions):
        sm.add_model_package(GROUP, approval="Approved")
    sm.compile_seconds = compile_seconds
    world.client("s3").create_bucket(Bucket=NEO_BUCKET)
    world.greengrass.register_component_version(json.loads(AGENT_RECIPE.read_text()))
    return sm.create_execution_role()


def sagemaker_settings(role_arn: str, **changes: Any) -> dict[str, Any]:
    """Configuration overrides that choose the SageMaker backend (no projectName/s3Bucket:
    they come from the group and the output location)."""
    block: dict[str, Any] = {
        "modelPackageGroupName": GROUP,
        "roleArn": role_arn,
        "s3OutputLocation": f"s3://{NEO_BUCKET}/compiled",
        **changes,
    }
    return {"packaging": {"backend": "sagemaker"}, "sagemaker": block}


def add_device(
    world: World, thing_name: str, *, groups: tuple[str, ...] = (), platform: DetectedPlatform | None = None
) -> Any:
    """A core device that already runs the agent component (deployed to its thing); with
    ``platform``, of that platform's architecture (default amd64)."""
    arm = platform is not None and (platform.target_device is not None or platform.arch == "ARM64")
    device = world.greengrass.add_core_device(
        thing_name, thing_groups=list(groups), architecture="aarch64" if arm else "amd64"
    )
    gg = world.client("greengrassv2")
    thing_arn = world.client("iot").describe_thing(thingName=thing_name)["thingArn"]
    gg.create_deployment(
        targetArn=thing_arn,
        deploymentName=f"agent-{thing_name}",
        components={AGENT_COMPONENT: {"componentVersion": "0.1.0"}},
        deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"},
        tags={"owner": "fleet-team"},
    )
    return device


def config(thing_name: str, state_dir: Path, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "thingName": thing_name,
        "region": "us-east-1",
        "stateDir": str(state_dir),
        "awsMaxAttempts": 1,  # retries happen on the virtual clock, not in botocore's sleeps
    }
    if (overrides.get("packaging") or {}).get("backend") != "sagemaker":
        values.update(projectName=PROJECT, s3Bucket=BUCKET)
    values.update(overrides)
    return load_config(overrides=values)


def reconciler(
    world: World,
    thing_name: str,
    tmp_path: Path,
    platform: str = "x86-64-cpu",
    *,
    credentials: tuple[str, str] | None = None,
    **overrides: Any,
) -> Reconciler:
    cfg = config(thing_name, tmp_path / thing_name, **overrides)
    ledger = Ledger(Path(cfg.state_dir) / "agent.sqlite")
    return make_reconciler(world, cfg, PLATFORMS[platform], ledger, credentials=credentials)


FIXTURES = ROOT / "tests" / "fixtures" / "platforms"


class OfflineTransport:
    """A transport whose broker is never reachable: every message stays in the outbox,
    where a test reads it."""

    supports_retain = False

    def connect(self, timeout: float) -> None:
        from agent.errors import TransportError

        raise TransportError("offline (test)")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        raise AssertionError("never connected")

    def subscribe(self, topic: str, handler: Any, *, timeout: float) -> None:
        raise AssertionError("never connected")

    def is_connected(self) -> bool:
        return False

    def close(self) -> None:
        return None


def daemon_agent(
    world: World,
    thing_name: str,
    state_dir: Path,
    *,
    clock: Any = None,
    hook: Any = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Any:
    """The whole agent (``build_agent``) of an x86_64 CPU device in ``world``: its AWS
    clients answered in-process, its transport offline. ``hook(client)`` may register
    botocore event handlers (to act at the wire while a request is in flight); ``env`` is
    the process environment it sees (default: none, so no nucleus)."""
    import os

    from agent.daemon import build_agent
    from localcloud.transport import TEST_CREDENTIALS, attach
    from localcloud.world import INTERNAL_ENDPOINT

    os.environ.setdefault("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])

    values: dict[str, Any] = {
        "platformRoot": str(FIXTURES / "x86-64-cpu-server"),
        "endpoints": {
            s: INTERNAL_ENDPOINT for s in ("lookoutvision", "sagemaker", "greengrassv2", "iot")
        },
        "reporting": {"transport": "none"},
    }
    values.update(overrides)
    cfg = config(thing_name, state_dir, **values)

    def customize(client: Any) -> None:
        attach(client, world)
        if hook is not None:
            hook(client)

    return build_agent(
        cfg,
        clock=clock or world.clock,
        env=env or {},
        customize_clients=customize,
        transport_factory=OfflineTransport,
    )


def messages(ledger: Ledger, kind: str) -> list[dict[str, Any]]:
    """The payloads of ``kind`` waiting in the outbox, oldest first."""
    return [json.loads(m.payload) for m in ledger.pending(limit=100_000) if m.kind == kind]


class JumpingClock:
    """A device clock on top of the world's virtual clock whose wall time can be set
    wrong (an NTP correction, a dead RTC battery); its monotonic time follows the world's."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.offset = 0.0

    def now(self) -> float:
        return float(self.base.now()) + self.offset

    def monotonic(self) -> float:
        return float(self.base.monotonic())

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        return bool(self.base.wait(seconds, wake))

    def jump(self, seconds: float) -> None:
        """Move the wall clock by ``seconds`` (either way) at once."""
        self.offset += seconds
