"""A stage for running the real agent process against the local world, as Greengrass would.

:class:`Stage` builds a :class:`~localcloud.world.World`, serves it on 127.0.0.1,
seeds a bucket and the project ``widgets`` with model v1 TRAINED, registers the agent's
recipe, adds a core device for this machine's architecture and deploys the agent
component to it with the agent configuration as the deployment's
``configurationUpdate.merge``. It then starts the simulated nucleus (IPC socket) and
the token exchange service, so that ``python -m agent run`` started with
:meth:`Stage.agent_env` finds exactly what a Greengrass component finds: the IPC socket
and SVCUID, its thing name and region, TES credentials, and its configuration over
IPC GetConfiguration. Only the service endpoints are extra
(``AWS_ENDPOINT_URL_<SERVICE>`` pointing at the world's HTTP front).

Used by ``python -m localcloud serve``, ``scripts/demo.py`` and the end-to-end tests.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from localcloud.clock import Clock, RealClock
from localcloud.nucleus import Nucleus
from localcloud.nucleus.tes import TokenExchangeService
from localcloud.server import WorldServer
from localcloud.world import World

REPO_ROOT = Path(__file__).resolve().parents[1]
AGENT_RECIPE = REPO_ROOT / "recipes" / "l4v.edge.Agent.json"
AGENT_COMPONENT = "l4v.edge.Agent"
AGENT_VERSION = "0.1.0"
PROJECT = "widgets"
BUCKET = "l4v-models"
DISTRIBUTION = "l4v-edge-agent"

#: Short intervals so a rollout takes seconds. Keys as in the recipe's DefaultConfiguration.
DEFAULT_AGENT_CONFIG: dict[str, Any] = {
    "projectName": PROJECT,
    "s3Bucket": BUCKET,
    "checkIntervalSeconds": "10",
    "pollInitialSeconds": "1",
    "pollMaxSeconds": "2",
    "jobPollMaxSeconds": "5",
    "awsMaxAttempts": "2",
    "logFormat": "json",
    "reporting": {"healthIntervalSeconds": "5"},
}

#: With ``backend="sagemaker"``: the model package group is the project and Neo writes
#: under the same bucket, so the default projectName and s3Bucket stay valid.
NEO_OUTPUT = f"s3://{BUCKET}/neo"
BACKENDS = ("lookoutvision", "sagemaker")

#: Environment variables that would give the agent credentials or endpoints other than
#: the ones Greengrass gives a component (TES) and the stage sets.
_AWS_PREFIX = "AWS_"

ENDPOINT_VARIABLES = (
    "AWS_ENDPOINT_URL_LOOKOUTVISION",
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_ENDPOINT_URL_GREENGRASSV2",
    "AWS_ENDPOINT_URL_IOT",
)


def machine_architecture() -> str:
    """Greengrass' name for this machine's architecture (``amd64``, ``aarch64``...)."""
    machine = platform.machine().lower()
    return {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "aarch64",
        "arm64": "aarch64",
        "armv7l": "arm",
    }.get(machine, machine)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _package_installed() -> bool:
    try:
        importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class StageError(RuntimeError):
    """The stage could not be set up."""


class Stage:
    """The local world plus one simulated Greengrass core device that runs the agent."""

    def __init__(
        self,
        workdir: Path,
        *,
        clock: Clock | None = None,
        thing: str = "demo-core",
        packaging_seconds: float = 6.0,
        running_after_seconds: float = 1.0,
        install_seconds: float = 2.0,
        agent_config: dict[str, Any] | None = None,
        setup_timeout: float = 30.0,
        backend: str = "lookoutvision",
    ) -> None:
        if backend not in BACKENDS:
            raise StageError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.backend = backend
        self.workdir = Path(workdir)
        self.clock: Clock = clock or RealClock()
        self.thing = thing
        self.packaging_seconds = packaging_seconds
        self.running_after_seconds = running_after_seconds
        self.install_seconds = install_seconds
        self.agent_config = _merge(DEFAULT_AGENT_CONFIG, agent_config or {})
        self.setup_timeout = setup_timeout
        self.world: World | None = None
        self.server: WorldServer | None = None
        self.nucleus: Nucleus | None = None
        self.tes: TokenExchangeService | None = None
        self.device: Any = None
        self.agent_deployment_id: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "agent.log"
        self._log_file: IO[bytes] | None = None
        self._socket_dir: Path | None = None

    # -- properties -------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.server is None:
            raise StageError("the stage is not started")
        return self.server.url

    @property
    def topics(self) -> dict[str, str]:
        base = f"l4v-edge/{self.thing}"
        return {
            "platform": f"{base}/platform",
            "status": f"{base}/status",
            "health": f"{base}/health",
            "commands": f"{base}/commands",
            "commandResponses": f"{base}/commands/responses",
        }

    def _world(self) -> World:
        if self.world is None:
            raise StageError("the stage is not started")
        return self.world

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> Stage:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        world = self.world = World(self.clock)
        self.server = WorldServer(world).start()
        world.client("s3").create_bucket(Bucket=BUCKET)
        l4v = world.lookoutvision
        l4v.create_project(PROJECT)
        l4v.add_model(PROJECT, "TRAINED")
        l4v.packaging_seconds = self.packaging_seconds
        l4v.running_after_seconds = self.running_after_seconds
        if self.backend == "sagemaker":
            self._seed_sagemaker(world)
        gg = world.greengrass
        gg.register_component_version(json.loads(AGENT_RECIPE.read_text()))
        self.device = gg.add_core_device(self.thing, architecture=machine_architecture())
        self._deploy_agent()
        self._socket_dir = Path(tempfile.mkdtemp(prefix="l4vgg-"))
        self.tes = TokenExchangeService(world).start()
        self.nucleus = Nucleus(
            self.device, world.iotcore, self._socket_dir / "ipc.sock", region=world.region
        )
        self.nucleus.attach_tes(self.tes)
        self.nucleus.start()

    def _seed_sagemaker(self, world: World) -> None:
        """Model package group ``widgets`` with v1 Approved, a Neo role, and the agent
        configured for the SageMaker backend (Neo compiles in ``packaging_seconds``)."""
        sm = world.sagemaker
        sm.create_model_package_group(PROJECT)
        sm.add_model_package(PROJECT, approval="Approved")
        sm.starting_seconds = min(1.0, self.packaging_seconds / 2)
        sm.compile_seconds = self.packaging_seconds
        role = sm.create_execution_role()
        self.agent_config = _merge(
            self.agent_config,
            {
                "packaging": {"backend": "sagemaker"},
                "sagemaker": {
                    "modelPackageGroupName": PROJECT,
                    "roleArn": role,
                    "s3OutputLocation": NEO_OUTPUT,
                },
            },
        )

    def _deploy_agent(self) -> None:
        """Deploy the agent component (with its configuration) and wait until RUNNING.

        This is the device's history before the stage begins, so the install is instant;
        ``install_seconds`` applies to every later deployment (the agent's own).
        """
        world = self._world()
        gg = world.greengrass
        thing_arn = world.client("iot").describe_thing(thingName=self.thing)["thingArn"]
        gg.install_seconds = 0.0
        answer = world.client("greengrassv2").create_deployment(
            targetArn=thing_arn,
            deploymentName=f"agent-{self.thing}",
            components={
                AGENT_COMPONENT: {
                    "componentVersion": AGENT_VERSION,
                    "configurationUpdate": {"merge": json.dumps(self.agent_config)},
                }
            },
            deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"},
        )
        self.agent_deployment_id = answer["deploymentId"]
        deadline = time.monotonic() + self.setup_timeout
        pause = threading.Event()
        while self.component_state(AGENT_COMPONENT) != "RUNNING":
            if time.monotonic() > deadline:
                raise StageError(
                    f"{AGENT_COMPONENT} did not reach RUNNING on {self.thing}: "
                    f"{self.device.states()}"
                )
            world.tick()
            pause.wait(0.02)
        gg.install_seconds = self.install_seconds

    def close(self) -> None:
        """Stop the agent (if running), the nucleus, TES and the HTTP front."""
        if self.process is not None and self.process.poll() is None:
            self.stop_agent(timeout=10.0)
        if self.nucleus is not None:
            self.nucleus.stop()
            self.nucleus = None
        if self.tes is not None:
            self.tes.stop()
            self.tes = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def __enter__(self) -> Stage:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the agent process ----------------------------------------------------------------
    def agent_env(self) -> dict[str, str]:
        """The environment of the agent's Run script, as the nucleus would set it."""
        if self.nucleus is None:
            raise StageError("the stage is not started")
        env = {k: v for k, v in os.environ.items() if not k.startswith(_AWS_PREFIX)}
        # No shared files either: a component gets its credentials from TES only.
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(self.workdir / "no-aws-credentials")
        env["AWS_CONFIG_FILE"] = str(self.workdir / "no-aws-config")
        env.update(self.nucleus.component_env(AGENT_COMPONENT))
        for name in ENDPOINT_VARIABLES:
            env[name] = self.url
        if not _package_installed():
            parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            if str(REPO_ROOT) not in parts:
                env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *parts])
        env.pop("L4V_AGENT_CONFIG", None)
        return env

    def agent_command(self) -> list[str]:
        return [sys.executable, "-m", "agent", "run"]

    def start_agent(self) -> subprocess.Popen[bytes]:
        """Start ``python -m agent run`` in the work dir; its output goes to ``agent.log``."""
        if self.process is not None and self.process.poll() is None:
            raise StageError("the agent is already running")
        if self._log_file is None:
            self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.agent_command(),
            cwd=self.workdir,
            env=self.agent_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        return self.process

    def stop_agent(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
        return process.returncode

    def kill_agent(self) -> int | None:
        """SIGKILL (kill -9) the agent, as a power cut or OOM kill would."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        return process.wait(5.0)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- the service side ---------------------------------------------------------------
    def release(self, version_status: str = "TRAINED") -> int:
        """A new model version: trained in the project (Lookout for Vision), or registered
        and approved in the model package group (SageMaker)."""
        if self.backend == "sagemaker":
            return int(self._world().sagemaker.add_model_package(PROJECT, approval="Approved"))
        return int(self._world().lookoutvision.add_model(PROJECT, version_status))

    def component_state(self, name: str) -> str | None:
        """The lifecycle state of ``name`` on the device now (None: not installed)."""
        info = self.device.component(name)
        return None if info is None else str(info.state)

    def component_version(self, name: str) -> str | None:
        info = self.device.component(name)
        return None if info is None else str(info.version)

    def environment_report(self) -> dict[str, Any]:
        """What ``python -m localcloud serve`` prints."""
        return {
            "endpoint": self.url,
            "thingName": self.thing,
            "workdir": str(self.workdir),
            "topics": self.topics,
            "agentConfiguration": self.agent_config,
            "command": " ".join(["python", "-m", "agent", "run"]),
            "environment": {
                k: v
                for k, v in self.agent_env().items()
                if k.startswith(_AWS_PREFIX) or k in ("SVCUID", "GGC_VERSION", "PYTHONPATH")
            },
        }
