"""Fleet rollout benchmark: 1,000 real agents against the 5 requests/s account quota.

One process, the local world's virtual clock. Three runs on identical fresh worlds:

* **agent** - the real agent code (``Reconciler`` + boto3 adapters + its own SQLite
  ledger, identity and random source per device), stepped by
  :class:`localcloud.fleet.Fleet`;
* **naive baseline** - an agent written here: a fixed 60-second tick per device (no
  jitter), one packaging job per device (``naive-<thing>``, its own ClientToken and
  component ``<project>.<thing>``), DescribeModelPackagingJob on every tick, then the
  same merge-and-CreateDeployment rule as the agent; a throttled or failed call is
  simply tried again on the next tick;
* **per-platform baseline** - the stronger hand-written agent: one packaging job per
  platform (a JobName and ClientToken derived from platform and version, so every
  device of a platform starts or replays the same job), ListModels every 900 s (first
  checks spread over 900 s), DescribeModelPackagingJob every 300 s, then the same
  merge-and-CreateDeployment rule and a 60-second deployment watch.

All face the same world: one model release, packaging taking ``packaging_seconds``,
the Lookout for Vision account quota enforced by the emulator, the Greengrass
control-plane quotas as the world emulates them, and a share of random 5xx answers
from Lookout for Vision and Greengrass. The figures go to ``<out>/fleet.json`` and a
plot to ``<out>/fleet.png``; :func:`main` prints a table and returns 1 when the agent
misses a target.

botocore's own retries sleep in real time and would not move the virtual clock, so
every client here uses ``awsMaxAttempts=1``: the agent's own back-off (on the virtual
clock) and the baselines' next tick do the retrying.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import os
import platform as pyplatform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent.config import AgentConfig, load_config
from agent.ledger import Ledger
from agent.platform import DetectedPlatform
from agent.platform.neo import from_detected
from agent.rollout import Phase
from localcloud.clock import VirtualClock
from localcloud.faults import THROTTLING_CODES
from localcloud.fleet import Fleet, SimDevice, agent_clients, make_reconciler
from localcloud.memorystore import MemoryStore
from localcloud.stage import AGENT_COMPONENT, AGENT_RECIPE, AGENT_VERSION, BUCKET, PROJECT
from localcloud.world import World

#: The packaging targets of the benchmark fleet (what ``agent detect`` reports on each).
PLATFORMS: dict[str, DetectedPlatform] = {
    "jetson-xavier": DetectedPlatform(
        target_device="jetson_xavier", key="jetson-xavier", description="Jetson AGX Xavier"
    ),
    "x86-64-nvidia-sm75": DetectedPlatform(
        os="LINUX", arch="X86_64", accelerator="NVIDIA", key="x86-64-nvidia-sm75",
        description="x86_64 + NVIDIA T4",
        compiler_options={"gpu-code": "sm_75", "trt-ver": "7.1.3", "cuda-ver": "10.2"},
    ),
    "arm64-cpu": DetectedPlatform(
        os="LINUX", arch="ARM64", key="arm64-cpu", description="ARM64 CPU",
        compiler_options={"mcpu": "cortex-a72", "mattr": "+neon"},
    ),
    "x86-64-cpu": DetectedPlatform(
        os="LINUX", arch="X86_64", key="x86-64-cpu", description="x86_64 CPU",
        compiler_options={"mcpu": "core-avx2"},
    ),
}

#: The 1,000-device mix of the issue: 40 % Jetson Xavier, 30 % x86_64+T4, 20 % ARM64
#: CPU, 10 % x86_64 CPU.
FULL_MIX: tuple[tuple[str, int], ...] = (
    ("jetson-xavier", 400),
    ("x86-64-nvidia-sm75", 300),
    ("arm64-cpu", 200),
    ("x86-64-cpu", 100),
)

RUNNING_STATES = ("RUNNING", "FINISHED")
LFV = "lookoutvision"
SM = "sagemaker"
GG = "greengrass"
#: The packaging backends the bench runs (``--backend``); call-log service names.
BACKENDS = (LFV, SM)
#: How the table names each packaging service.
SHORT_NAMES = {LFV: "L4V", SM: "SageMaker"}
SERVICE_TITLES = {LFV: "Lookout for Vision", SM: "SageMaker"}
#: Why the SageMaker bench runs the agent alone.
BASELINES_SKIPPED = (
    "baselines skipped for the SageMaker backend: the hand-written baselines speak "
    "Lookout for Vision only"
)
#: The SageMaker request quota the bench assumes by default (requests/s per account and
#: Region, shared by every SageMaker operation the agent calls). AWS publishes no rate for
#: ListModelPackages, DescribeModelPackage, CreateCompilationJob or
#: DescribeCompilationJob: its SageMaker quota pages say only that the management APIs
#: are throttled and that those limits are not adjustable, and the one per-operation rate
#: they state is 1 request/s for CreateTrainingJob. 2 requests/s for all four operations
#: together is a deliberately low assumption (``--sagemaker-quota`` changes it).
DEFAULT_SAGEMAKER_QUOTA = 2
#: Where Neo writes in the SageMaker bench (the bucket is the Lookout for Vision one).
NEO_OUTPUT = f"s3://{BUCKET}/neo"

#: Above this many devices the agents keep their rollout state in ``MemoryStore`` rather
#: than SQLite (``--ledger auto``): an in-memory SQLite ledger costs ~90 KB per device, so
#: 100,000 of them would take ~9 GB of this machine's memory on their own.
MEMORY_STORE_ABOVE = 20_000
#: How the output names each rollout store.
STORE_NOTES = {
    "sqlite": "sqlite (the agent's SQLite ledger, in memory, one per device)",
    "memory": "memory (MemoryStore, not the agent's SQLite ledger: same contract, "
    "no SQLite; the decisions and AWS calls are the agent's own)",
}
#: The ``--ledger`` choices.
LEDGER_STORES = ("auto", "sqlite", "memory")
BASELINES_OFF = "baselines skipped (--agent-only)"

#: What a fleet operator sets on top of the agent's defaults for this benchmark.
AGENT_OVERRIDES: dict[str, Any] = {
    # botocore's retry sleeps are real time; the agent's back-off runs on the virtual clock.
    "awsMaxAttempts": 1,
}


def scaled_mix(devices: int) -> tuple[tuple[str, int], ...]:
    """The full mix scaled to ``devices`` (at least one device per platform)."""
    total = sum(n for _, n in FULL_MIX)
    if devices < len(FULL_MIX):
        raise ValueError(f"need at least {len(FULL_MIX)} devices (one per platform)")
    counts = [max(1, round(devices * n / total)) for _, n in FULL_MIX]
    counts[0] += devices - sum(counts)
    return tuple((key, n) for (key, _), n in zip(FULL_MIX, counts, strict=True))


@dataclass(frozen=True)
class Scenario:
    """The world both contenders face."""

    mix: tuple[tuple[str, int], ...] = FULL_MIX
    packaging_seconds: float = 900.0
    quota_per_second: int = 5
    #: the packaging backend (``lookoutvision`` or ``sagemaker``) and SageMaker's quota
    backend: str = LFV
    sagemaker_quota_per_second: int = DEFAULT_SAGEMAKER_QUOTA
    error_rate: float = 0.05
    seed: int = 1
    baseline_tick_seconds: float = 60.0
    #: The per-platform baseline's paces: ListModels, DescribeModelPackagingJob, and the
    #: deployment watch (a throttled or failed call waits for the phase's next tick).
    platform_check_seconds: float = 900.0
    platform_job_poll_seconds: float = 300.0
    platform_watch_seconds: float = 60.0
    #: ... and how soon it retries a throttled or 5xx call (jittered 50-150 %).
    platform_retry_seconds: float = 30.0
    agent_deadline_seconds: float = 3 * 3600.0
    baseline_deadline_seconds: float = 8 * 3600.0
    #: Where each simulated agent keeps its rollout state: ``sqlite`` (its own in-memory
    #: SQLite ledger, the agent's real store), ``memory`` (``MemoryStore``: same contract,
    #: ~10 times less memory) or ``auto`` (SQLite up to ``MEMORY_STORE_ABOVE`` devices).
    ledger: str = "auto"
    #: whether the hand-written baselines run too (Lookout for Vision only)
    baselines: bool = True

    @property
    def store(self) -> str:
        """The rollout store the agents run on (``ledger`` with ``auto`` resolved)."""
        if self.ledger != "auto":
            return self.ledger
        return "memory" if self.devices > MEMORY_STORE_ABOVE else "sqlite"

    @property
    def devices(self) -> int:
        return sum(n for _, n in self.mix)

    @property
    def service(self) -> str:
        """The packaging service's call-log name (the backend's)."""
        return self.backend

    @property
    def services(self) -> tuple[str, str]:
        """The services whose throttled share the bench reports."""
        return (self.service, GG)

    @property
    def packaging_quota(self) -> int:
        """The request quota of the packaging service (requests/s)."""
        return self.sagemaker_quota_per_second if self.backend == SM else self.quota_per_second

    def platforms(self) -> list[tuple[str, DetectedPlatform]]:
        """(thing name, platform) of every device, in a fixed order."""
        keys = [key for key, n in self.mix for _ in range(n)]
        return [(f"dev-{i:04d}", PLATFORMS[key]) for i, key in enumerate(keys)]

    def describe(self) -> dict[str, Any]:
        quota: dict[str, Any] = {"lookoutvisionQuotaPerSecond": self.quota_per_second}
        if self.backend == SM:
            quota = {
                "sagemakerQuotaPerSecond": self.sagemaker_quota_per_second,
                "sagemakerQuotaNote": "assumed: AWS publishes no request rate for the "
                "SageMaker operations the agent calls; one quota shared by all of them",
            }
        return {
            "backend": self.backend,
            "devices": self.devices,
            "agentRolloutStore": STORE_NOTES[self.store],
            "mix": {key: n for key, n in self.mix},
            "packagingSeconds": self.packaging_seconds,
            **quota,
            "random5xxShare": {self.service: self.error_rate, "greengrass": self.error_rate},
            "greengrassRateQuotasPerSecond": greengrass_quotas(),
            "seed": self.seed,
            "baselineTickSeconds": self.baseline_tick_seconds,
            "platformBaselineSeconds": {
                "check": self.platform_check_seconds,
                "jobPoll": self.platform_job_poll_seconds,
                "deploymentWatch": self.platform_watch_seconds,
                "retryAfterThrottlingOr5xx": self.platform_retry_seconds,
            },
            "deadlineSeconds": {
                "agent": self.agent_deadline_seconds,
                "baseline": self.baseline_deadline_seconds,
            },
        }


def greengrass_quotas() -> dict[str, float | None]:
    """The world's default Greengrass request-rate quotas (requests/s), readable names."""
    from localcloud.greengrass import DEFAULT_RATE_QUOTAS, OTHER_OPERATIONS

    return {
        ("other operations, combined" if key == OTHER_OPERATIONS else key): rate
        for key, rate in DEFAULT_RATE_QUOTAS.items()
    }


#: The thing group of every bench device (the agent component is deployed to it).
FLEET_GROUP = "bench-fleet"


def _architecture(platform: DetectedPlatform) -> str:
    """The Greengrass architecture of a device of ``platform``."""
    arm = platform.target_device is not None or platform.arch == "ARM64"
    return "aarch64" if arm else "amd64"


@dataclass
class Stage:
    """A fresh world with the fleet seeded and the release made."""

    world: World
    clock: VirtualClock
    release_at: float
    version: int
    #: the packaging service (call-log name) and, for SageMaker, the Neo role
    service: str = LFV
    role_arn: str | None = None

    @property
    def component_version(self) -> str:
        return f"{self.version}.0.0"


def build_stage(scenario: Scenario, clock: VirtualClock | None = None) -> Stage:
    """Seed a new World (this resets moto), add the fleet, turn faults on, release v1.

    Every device already runs the agent component, deployed to the fleet's thing group
    (the devices are seeded in bulk, not through an API call each). The rest of the
    setup goes through the world's internal clients: no faults, no call log. ``clock``
    (default: a new VirtualClock) lets a live fleet start at the wall clock's time. With
    the SageMaker backend the project is a model package group, Neo compiles in
    ``packaging_seconds`` and the release is a new Approved package version.
    """
    clock = clock or VirtualClock()
    world = World(clock, seed=scenario.seed)
    world.client("s3").create_bucket(Bucket=BUCKET)
    world.lookoutvision.create_project(PROJECT)
    world.lookoutvision.packaging_seconds = scenario.packaging_seconds
    role_arn = None
    if scenario.backend == SM:
        world.sagemaker.create_model_package_group(PROJECT)
        world.sagemaker.compile_seconds = scenario.packaging_seconds
        role_arn = world.sagemaker.create_execution_role()
    world.greengrass.register_component_version(json.loads(AGENT_RECIPE.read_text()))
    # Seeded in bulk (the setup is not what is measured): the things join one thing group
    # and the agent component reaches them all through one thing-group deployment.
    world.greengrass.add_core_devices(
        ((thing, _architecture(platform)) for thing, platform in scenario.platforms()),
        thing_group=FLEET_GROUP,
    )
    world.client("greengrassv2").create_deployment(
        targetArn=world.arn("iot", f"thinggroup/{FLEET_GROUP}"),
        deploymentName=f"{FLEET_GROUP}-agent",
        components={AGENT_COMPONENT: {"componentVersion": AGENT_VERSION}},
    )
    clock.advance(300)
    world.tick()
    world.faults.set_quota(scenario.service, scenario.packaging_quota)
    world.faults.inject(scenario.service, "*", "5xx", probability=scenario.error_rate)
    world.faults.inject("greengrass", "*", "5xx", probability=scenario.error_rate)
    release_at = clock.now()
    if scenario.backend == SM:
        version = world.sagemaker.add_model_package(PROJECT, approval="Approved")
    else:
        version = world.lookoutvision.add_model(PROJECT, "TRAINED")
    world.calls.clear()
    return Stage(world, clock, release_at, version, scenario.service, role_arn)


@dataclass
class Track:
    """What the benchmark saw of one device."""

    thing: str
    component: str | None = None
    #: the device's platform key (what its packaging job is shared by)
    platform: str = ""
    packaging_calls: int = 0
    greengrass_calls: int = 0
    deployed_at: float | None = None  # the step that created its deployment
    confirmed_at: float | None = None  # the step that saw the new version RUNNING
    failed: bool = False


@dataclass
class Outcome:
    """One contender's run, before it is turned into figures."""

    name: str
    stage: Stage
    tracks: list[Track]
    end_at: float
    wall_seconds: float


class _CallMeter:
    """Attributes the world's new call-log entries to the device that just stepped."""

    def __init__(self, world: World, service: str) -> None:
        self._calls = world.calls.calls
        self._mark = len(self._calls)
        self._service = service

    def take(self, track: Track) -> None:
        """Count the new calls for ``track`` while its rollout is on (the agent's later
        periodic checks are not part of the rollout)."""
        calls = self._calls
        end = len(calls)
        if track.confirmed_at is None:
            for i in range(self._mark, end):
                service = calls[i].service
                if service == self._service:
                    track.packaging_calls += 1
                elif service == GG:
                    track.greengrass_calls += 1
        self._mark = end


# -- the agent -------------------------------------------------------------------------


def agent_config(thing: str, state_dir: Path, role_arn: str | None = None) -> AgentConfig:
    """The agent's defaults plus identity, project and ``AGENT_OVERRIDES``; with
    ``role_arn`` the SageMaker backend (the project is the model package group)."""
    values: dict[str, Any] = {
        "thingName": thing,
        "region": "us-east-1",
        "projectName": PROJECT,
        "s3Bucket": BUCKET,
        "stateDir": str(state_dir / thing),
        **AGENT_OVERRIDES,
    }
    if role_arn is not None:
        values["packaging"] = {"backend": SM}
        values["sagemaker"] = {
            "modelPackageGroupName": PROJECT,
            "roleArn": role_arn,
            "s3OutputLocation": NEO_OUTPUT,
        }
    return load_config(overrides=values)


def run_agent(scenario: Scenario, state_dir: Path | None = None) -> Outcome:
    """The real agents through one release; each device first checks somewhere within
    one check interval after the release (a fleet that has been running a while).

    Each device has its own ledger: an in-memory SQLite database by default (the same
    code and schema; the bench measures simulated time, not 1,000 devices' fsyncs on one
    disk), a file under ``state_dir/<thing>/`` when given, or a ``MemoryStore`` when the
    scenario says so (``Scenario.store``).
    """
    started = time.perf_counter()
    stage = build_stage(scenario)
    world, clock = stage.world, stage.clock
    rng = random.Random(scenario.seed)
    fleet = Fleet(world, clock)
    tracks: dict[str, Track] = {}
    shared = None
    for thing, platform in scenario.platforms():
        config = agent_config(thing, state_dir or Path("state"), stage.role_arn)
        shared = shared or agent_clients(world, config)
        ledger: Ledger | MemoryStore
        if scenario.store == "memory" and state_dir is None:
            ledger = MemoryStore()
        else:
            ledger = Ledger(":memory:" if state_dir is None else Path(config.state_dir) / "agent.sqlite")
        reconciler = make_reconciler(
            world, config, platform, ledger, clients=shared, rng=random.Random(rng.random())
        )
        first = stage.release_at + rng.uniform(0, config.check_interval_seconds)
        fleet.add(SimDevice(thing, platform, reconciler, ledger), first)
        tracks[thing] = Track(thing, platform=platform.key)
    meter = _CallMeter(world, stage.service)
    confirmed = 0

    def on_step(device: SimDevice, now: float) -> None:
        nonlocal confirmed
        track = tracks[device.thing_name]
        meter.take(track)
        if track.confirmed_at is not None:
            return
        newest = device.ledger.rollouts(limit=1)
        if not newest:
            return
        rollout = newest[0]
        if rollout.phase is Phase.FAILED:
            track.failed = True
        if track.deployed_at is None and rollout.phase in (Phase.DEPLOYING, Phase.SUCCEEDED):
            track.deployed_at, track.component = now, rollout.component_name
        if rollout.phase is Phase.SUCCEEDED and rollout.model_version == stage.version:
            track.confirmed_at = now
            confirmed += 1

    fleet.run_until(
        lambda: confirmed == len(tracks),
        deadline=stage.release_at + scenario.agent_deadline_seconds,
        on_step=on_step,
    )
    for device in fleet.devices:
        if isinstance(device.ledger, Ledger):
            device.ledger.close()
    return Outcome("agent", stage, list(tracks.values()), clock.now(), time.perf_counter() - started)


# -- the hand-written baselines ----------------------------------------------------------


@dataclass(frozen=True)
class BaselineDesign:
    """How a hand-written baseline agent behaves: its paces per phase, how soon it
    retries a throttled or 5xx call (``retry_jitter`` 0: exactly then; 0.5: 50-150 % of
    it), and whether a packaging job is per device or shared by every device of a
    platform."""

    name: str
    check_seconds: float
    job_poll_seconds: float
    watch_seconds: float
    retry_seconds: float
    retry_jitter: float
    job_per_platform: bool

    @classmethod
    def naive(cls, scenario: Scenario) -> BaselineDesign:
        tick = scenario.baseline_tick_seconds
        return cls("naive", tick, tick, tick, tick, 0.0, job_per_platform=False)

    @classmethod
    def per_platform(cls, scenario: Scenario) -> BaselineDesign:
        return cls(
            "per-platform",
            scenario.platform_check_seconds,
            scenario.platform_job_poll_seconds,
            scenario.platform_watch_seconds,
            scenario.platform_retry_seconds,
            0.5,
            job_per_platform=True,
        )


class BaselineDevice:
    """A hand-written agent of one device: on every tick, do what the phase says.

    CHECK (ListModels) -> START (StartModelPackagingJob) -> WAIT
    (DescribeModelPackagingJob each tick) -> DEPLOY (ListDeployments, GetDeployment,
    CreateDeployment with the same merge rule as the agent) -> DEPLOYING
    (ListEffectiveDeployments, ListInstalledComponents each tick) -> DONE. Any throttled
    or 5xx answer: try again after the design's retry delay. Any other error: FAILED. The
    naive design starts its own job (``naive-<thing>``); the per-platform design derives
    JobName and ClientToken from platform and version, so the first device of a
    platform starts the job and the others' identical requests replay it.
    """

    def __init__(
        self,
        thing: str,
        platform: DetectedPlatform,
        clients: Any,
        design: BaselineDesign,
        rng: random.Random,
    ) -> None:
        self.thing = thing
        self.platform = platform
        self.design = design
        self.rng = rng
        self.retrying = False
        self.lv = clients.client(LFV)
        self.gg = clients.client("greengrassv2")
        self.iot = clients.client("iot")
        self.phase = "CHECK"
        self.deployed = 0
        self.version = 0
        self.thing_arn: str | None = None
        self.deployment_id: str | None = None
        self.error: str | None = None

    @property
    def owner(self) -> str:
        """Who the job and component belong to: the device, or its platform."""
        return self.platform.key if self.design.job_per_platform else self.thing

    @property
    def component(self) -> str:
        return f"{PROJECT}.{self.owner}"

    @property
    def job_name(self) -> str:
        return f"{self.design.name}-{self.owner}-v{self.version}"

    def next_tick_seconds(self) -> float:
        """Seconds to the next tick: the retry delay after a throttled or 5xx answer,
        else the pace of the phase the device is in now."""
        design = self.design
        if self.retrying:
            jitter = design.retry_jitter
            return design.retry_seconds * self.rng.uniform(1 - jitter, 1 + jitter)
        if self.phase == "CHECK":
            return design.check_seconds
        if self.phase in ("START", "WAIT"):
            return design.job_poll_seconds
        return design.watch_seconds

    def tick(self) -> None:
        from botocore.exceptions import ClientError

        self.retrying = False
        try:
            self._tick()
        except ClientError as error:
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            code = str(error.response.get("Error", {}).get("Code", ""))
            if status == 429 or code in THROTTLING_CODES or status >= 500:
                self.retrying = True
                return
            self.phase, self.error = "FAILED", str(error)

    def _tick(self) -> None:
        if self.phase == "CHECK":
            if self.thing_arn is None:
                self.thing_arn = self.iot.describe_thing(thingName=self.thing)["thingArn"]
            models = self.lv.list_models(ProjectName=PROJECT).get("Models", [])
            ready = [int(m["ModelVersion"]) for m in models if m.get("Status") in ("TRAINED", "HOSTED")]
            if not ready or max(ready) <= self.deployed:
                return
            self.version, self.phase = max(ready), "START"
        if self.phase == "START":
            self.lv.start_model_packaging_job(
                ProjectName=PROJECT,
                ModelVersion=str(self.version),
                JobName=self.job_name,
                ClientToken=self.job_name,
                Configuration={"Greengrass": self._packaging_target()},
            )
            self.phase = "WAIT"
            return
        if self.phase == "WAIT":
            job = self.lv.describe_model_packaging_job(ProjectName=PROJECT, JobName=self.job_name)
            status = job["ModelPackagingDescription"]["Status"]
            if status == "FAILED":
                self.phase, self.error = "FAILED", "packaging job FAILED"
                return
            if status != "SUCCEEDED":
                return
            self.phase = "DEPLOY"
        if self.phase == "DEPLOY":
            self.deployment_id = self._deploy()
            self.phase = "DEPLOYING"
            return
        if self.phase == "DEPLOYING":
            effective = self.gg.list_effective_deployments(coreDeviceThingName=self.thing)
            for item in effective.get("effectiveDeployments", []):
                if item.get("deploymentId") == self.deployment_id and item.get(
                    "coreDeviceExecutionStatus"
                ) in ("FAILED", "TIMED_OUT", "REJECTED", "CANCELED"):
                    self.phase, self.error = "FAILED", str(item.get("reason"))
                    return
            installed = self.gg.list_installed_components(
                coreDeviceThingName=self.thing, topologyFilter="ALL"
            )
            for item in installed.get("installedComponents", []):
                if (
                    item.get("componentName") == self.component
                    and item.get("componentVersion") == f"{self.version}.0.0"
                    and item.get("lifecycleState") in RUNNING_STATES
                ):
                    self.deployed, self.phase = self.version, "DONE"

    def _packaging_target(self) -> dict[str, Any]:
        target: dict[str, Any] = {
            "ComponentName": self.component,
            "ComponentVersion": f"{self.version}.0.0",
            "S3OutputLocation": {"Bucket": BUCKET, "Prefix": f"{self.design.name}/{self.owner}/"},
        }
        return target | self.target_of(self.platform)

    @staticmethod
    def target_of(platform: DetectedPlatform) -> dict[str, Any]:
        """The target members of a Lookout for Vision packaging configuration."""
        if platform.target_device is not None:
            return {"TargetDevice": platform.target_device}
        target: dict[str, Any] = {"TargetPlatform": {"Os": platform.os, "Arch": platform.arch}}
        if platform.accelerator is not None:
            target["TargetPlatform"]["Accelerator"] = platform.accelerator
        if platform.compiler_options:
            target["CompilerOptions"] = json.dumps(platform.compiler_options)
        return target

    def _deploy(self) -> str:
        """The target's latest deployment with our component added (same rule as the agent)."""
        listed = self.gg.list_deployments(targetArn=self.thing_arn, historyFilter="LATEST_ONLY")
        items = [d for d in listed.get("deployments", []) if d.get("deploymentStatus") != "CANCELED"]
        request: dict[str, Any] = {"targetArn": self.thing_arn, "components": {}}
        if items:
            latest = max(items, key=lambda d: str(d.get("creationTimestamp", "")))
            full = self.gg.get_deployment(deploymentId=latest["deploymentId"])
            request["components"] = dict(full.get("components") or {})
            for key in ("deploymentName", "deploymentPolicies", "iotJobConfiguration", "tags"):
                if full.get(key):
                    request[key] = full[key]
        request["components"][self.component] = {"componentVersion": f"{self.version}.0.0"}
        request["clientToken"] = f"{self.thing}-{self.job_name}"
        return str(self.gg.create_deployment(**request)["deploymentId"])


def run_baseline(scenario: Scenario, design: BaselineDesign | None = None) -> Outcome:
    """A hand-written baseline (default: the naive one) through the same release on a
    fresh, identical world."""
    if scenario.backend != LFV:
        raise ValueError("the hand-written baselines speak Lookout for Vision only")
    design = design or BaselineDesign.naive(scenario)
    started = time.perf_counter()
    stage = build_stage(scenario)
    world, clock = stage.world, stage.clock
    # The same shared boto3 clients as the agents get (awsMaxAttempts 1, in-process).
    clients = agent_clients(world, agent_config(design.name, Path(tempfile.gettempdir())))
    rng = random.Random(scenario.seed)
    # Retry jitter from its own stream: the first ticks stay where they were without it.
    seeds = random.Random(scenario.seed + 1)
    devices = [
        BaselineDevice(thing, platform, clients, design, random.Random(seeds.random()))
        for thing, platform in scenario.platforms()
    ]
    tracks = [Track(d.thing, component=d.component, platform=d.platform.key) for d in devices]
    # Each device's timer phase is where it happened to start (boot time), so its first
    # check after the release falls within one check period.
    queue = [
        (stage.release_at + rng.uniform(0, design.check_seconds), i) for i in range(len(devices))
    ]
    heapq.heapify(queue)
    meter = _CallMeter(world, stage.service)
    deadline = stage.release_at + scenario.baseline_deadline_seconds
    while queue:
        due, index = heapq.heappop(queue)
        if due > deadline:
            clock.set(max(clock.now(), deadline))
            break
        clock.set(max(due, clock.now()))
        device, track = devices[index], tracks[index]
        device.tick()
        meter.take(track)
        if track.deployed_at is None and device.phase in ("DEPLOYING", "DONE"):
            track.deployed_at = clock.now()
        if device.phase == "DONE":
            track.confirmed_at = clock.now()
        elif device.phase == "FAILED":
            track.failed = True
        else:
            heapq.heappush(queue, (due + device.next_tick_seconds(), index))
    return Outcome(design.name, stage, tracks, clock.now(), time.perf_counter() - started)


# -- figures ---------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0-100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _seconds_to_share(times: list[float], devices: int, share: float) -> float | None:
    needed = max(1, math.ceil(share * devices))
    return sorted(times)[needed - 1] if len(times) >= needed else None


def _target(config: dict[str, Any]) -> tuple[Any, ...]:
    """What a packaging job compiles for (TargetDevice, TargetPlatform, CompilerOptions),
    comparable across requests of one backend."""
    options = config.get("CompilerOptions")
    return (
        config.get("TargetDevice"),
        json.dumps(config.get("TargetPlatform"), sort_keys=True),
        json.dumps(json.loads(options) if options else {}, sort_keys=True),
    )


def _platform_targets(backend: str) -> dict[tuple[Any, ...], str]:
    """The bench platforms by the target their jobs carry, in ``backend``'s terms."""
    if backend == SM:
        return {_target(from_detected(p).output_config("")): key for key, p in PLATFORMS.items()}
    return {_target(BaselineDevice.target_of(p)): key for key, p in PLATFORMS.items()}


@dataclass(frozen=True)
class _Job:
    """A packaging job as the figures see it, either backend."""

    platform: str | None
    #: when it ended successfully (None: not, or not yet)
    succeeded_at: float | None
    component: tuple[str, str] | None = None


def packaging_jobs(stage: Stage) -> list[_Job]:
    """Every packaging job of the run with its platform (by target) and its end."""
    world = stage.world
    if stage.service == SM:
        by_target = _platform_targets(SM)
        return [
            _Job(by_target.get(_target(j.output_config)),
                 j.ended if j.status == "COMPLETED" else None)
            for j in world.sagemaker.jobs()
        ]
    by_target = _platform_targets(LFV)
    return [
        _Job(
            by_target.get(_target(j.configuration.get("Greengrass") or {})),
            j.updated if j.status == "SUCCEEDED" else None,
            (j.component_name, j.component_version),
        )
        for j in world.lookoutvision.jobs()
    ]


def _succeeded_at(outcome: Outcome, jobs: list[_Job]) -> dict[str, float]:
    """Per device, when the packaging job that made its component succeeded: by component
    for Lookout for Vision (which makes it), by platform for SageMaker (the agent makes
    the component from the job's output, one platform one job)."""
    stage = outcome.stage
    found: dict[str, float] = {}
    if stage.service == SM:
        ended = {j.platform: j.succeeded_at for j in jobs if j.succeeded_at is not None}
        for track in outcome.tracks:
            if track.platform in ended:
                found[track.thing] = ended[track.platform]
        return found
    made = {j.component: j.succeeded_at for j in jobs if j.succeeded_at is not None}
    for track in outcome.tracks:
        key = (track.component, stage.component_version)
        if track.component is not None and key in made:
            found[track.thing] = made[key]
    return found


def figures(outcome: Outcome) -> dict[str, Any]:
    """The numbers of one run (times in simulated seconds from the release). The
    packaging service's figures are named after it (``lookoutvisionCalls``,
    ``sagemakerCalls``, ...)."""
    stage = outcome.stage
    world, release, service = stage.world, stage.release_at, stage.service
    world.tick()  # bring jobs and devices up to the end of the run
    calls = world.calls.calls
    per_operation = Counter(f"{c.service}:{c.operation}" for c in calls)
    throttled = Counter(f"{c.service}:{c.operation}" for c in calls if c.throttled)
    pkg_per_second = Counter(int(c.time - release) for c in calls if c.service == service)
    pkg_served = Counter(
        int(c.time - release) for c in calls if c.service == service and c.status < 400
    )
    jobs = packaging_jobs(stage)
    succeeded_at = _succeeded_at(outcome, jobs)
    delays = [
        t.deployed_at - succeeded_at[t.thing]
        for t in outcome.tracks
        if t.deployed_at is not None and t.thing in succeeded_at
    ]
    running = running_times(outcome)
    devices = len(outcome.tracks)
    pkg_counts = [float(t.packaging_calls) for t in outcome.tracks]
    gg_counts = [float(t.greengrass_calls) for t in outcome.tracks]
    gg_per_second = Counter(int(c.time - release) for c in calls if c.service == GG)
    total = len(calls)
    service_calls = Counter(c.service for c in calls)
    service_throttled = Counter(c.service for c in calls if c.throttled)
    per_platform = Counter(j.platform or "unknown target" for j in jobs)
    name = "Sagemaker" if service == SM else "Lookoutvision"
    return {
        "backend": service,
        "devices": devices,
        "packagingJobs": len(jobs),
        "packagingJobsPerPlatform": {
            key: per_platform[key] for key in dict.fromkeys(t.platform for t in outcome.tracks)
        } | dict(per_platform),
        "packagingJobsSucceeded": sum(1 for j in jobs if j.succeeded_at is not None),
        "deploymentsCreated": sum(
            1 for c in calls if c.operation == "CreateDeployment" and c.status < 300
        ),
        "calls": total,
        "callsPerOperation": dict(sorted(per_operation.items())),
        "throttledCalls": sum(throttled.values()),
        "throttledPerOperation": dict(sorted(throttled.items())),
        "throttledShare": (sum(throttled.values()) / total) if total else 0.0,
        "throttledShareByService": {
            service: _share(service_throttled[service], service_calls[service])
            for service in (stage.service, GG)
        },
        "throttledSharePerOperation": {
            key: _share(throttled[key], per_operation[key]) for key in sorted(throttled)
        },
        "serverErrors": sum(1 for c in calls if c.status >= 500),
        f"{service}Calls": sum(pkg_per_second.values()),
        f"peak{name}RequestsPerSecond": max(pkg_per_second.values(), default=0),
        f"peak{name}ServedPerSecond": max(pkg_served.values(), default=0),
        "greengrassCalls": service_calls[GG],
        "peakGreengrassRequestsPerSecond": max(gg_per_second.values(), default=0),
        "failedRollouts": sum(1 for t in outcome.tracks if t.failed),
        "devicesRunning": len(running),
        "notRunningAtEnd": devices - len(running),
        "secondsToRunning": {
            "p50": _seconds_to_share(running, devices, 0.50),
            "p95": _seconds_to_share(running, devices, 0.95),
            "p100": _seconds_to_share(running, devices, 1.00),
        },
        "secondsToAllConfirmed": _seconds_to_share(
            [t.confirmed_at - release for t in outcome.tracks if t.confirmed_at is not None],
            devices,
            1.0,
        ),
        "deployDelayAfterSucceeded": {
            "p50": percentile(delays, 50),
            "p95": percentile(delays, 95),
            "max": max(delays, default=None),
            "devices": len(delays),
        },
        f"{service}CallsPerDevice": per_device(pkg_counts),
        "greengrassCallsPerDevice": per_device(gg_counts),
        "simulatedSeconds": outcome.end_at - release,
        "wallSeconds": round(outcome.wall_seconds, 1),
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def per_device(counts: list[float]) -> dict[str, float | None]:
    """Median, mean, p95 and max of one figure per device."""
    return {
        "median": percentile(counts, 50),
        "mean": round(sum(counts) / len(counts), 2) if counts else None,
        "p95": percentile(counts, 95),
        "max": max(counts, default=None),
    }


def running_times(outcome: Outcome) -> list[float]:
    """Per device, when its new model component first ran (the simulated device's own
    lifecycle history), in seconds from the release."""
    stage = outcome.stage
    out: list[float] = []
    for track in outcome.tracks:
        device = stage.world.greengrass.devices[track.thing]
        for at, name, version, state in device.history:
            if (
                name == track.component
                and version == stage.component_version
                and state in RUNNING_STATES
                and at >= stage.release_at
            ):
                out.append(at - stage.release_at)
                break
    return out


def request_series(outcome: Outcome, service: str) -> list[int]:
    """Requests to ``service`` (throttled ones included) per simulated second."""
    release = outcome.stage.release_at
    per_second = Counter(
        int(c.time - release) for c in outcome.stage.world.calls.calls if c.service == service
    )
    length = max(per_second, default=-1) + 1
    return [per_second.get(i, 0) for i in range(length)]


# -- targets, ratios, report -----------------------------------------------------------

#: (key, label, getter, target text, check) for the agent's figures.
Target = tuple[str, str, Callable[[dict[str, Any]], Any], str, Callable[[Any, Scenario], bool]]

#: The prefix of each packaging service's target keys.
_TARGET_PREFIX = {LFV: "lfv", SM: "sm"}


def _one_each(value: Any, scenario: Scenario) -> bool:
    return isinstance(value, dict) and all(value.get(key) == 1 for key, _ in scenario.mix) and (
        sum(value.values()) == len(scenario.mix)
    )


def targets(service: str = LFV) -> list[Target]:
    """The agent's targets with ``service`` (a call-log name) packaging."""
    short, prefix = SHORT_NAMES[service], _TARGET_PREFIX[service]
    return [
        ("packagingJobs", "packaging jobs started", lambda f: f["packagingJobs"],
         "= platforms", lambda v, s: v == len(s.mix)),
        ("jobsPerPlatform", "packaging jobs per platform", lambda f: f["packagingJobsPerPlatform"],
         "1 each", _one_each),
        ("failedRollouts", "failed rollouts", lambda f: f["failedRollouts"],
         "0", lambda v, s: v == 0),
        (f"{prefix}ThrottledShare", f"throttled share, {short} calls",
         lambda f: f["throttledShareByService"][service], "< 1 %", lambda v, s: v < 0.01),
        ("ggThrottledShare", "throttled share, Greengrass calls",
         lambda f: f["throttledShareByService"][GG], "< 1 %", lambda v, s: v < 0.01),
        ("deployDelayP95", "SUCCEEDED -> deployment p95 (s)",
         lambda f: f["deployDelayAfterSucceeded"]["p95"],
         "<= 90 s", lambda v, s: v is not None and v <= 90),
        ("secondsTo100", "release -> 100 % RUNNING (s)", lambda f: f["secondsToRunning"]["p100"],
         "<= 1800 s", lambda v, s: v is not None and v <= 1800),
        (f"{prefix}CallsMedian", f"{short} calls/device/rollout, median",
         lambda f: f[f"{service}CallsPerDevice"]["median"],
         "<= 10", lambda v, s: v is not None and v <= 10),
    ]


def rows(service: str = LFV) -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    """Rows of the printed table, (label, getter), with ``service`` packaging."""
    short = SHORT_NAMES[service]
    name = "Sagemaker" if service == SM else "Lookoutvision"
    return [
        ("packaging jobs started", lambda f: f["packagingJobs"]),
        ("packaging jobs per platform", lambda f: f["packagingJobsPerPlatform"]),
        ("calls, all services", lambda f: f["calls"]),
        (f"{short} calls", lambda f: f[f"{service}Calls"]),
        ("Greengrass calls", lambda f: f["greengrassCalls"]),
        ("throttled calls", lambda f: f["throttledCalls"]),
        ("throttled share, all calls", lambda f: f["throttledShare"]),
        (f"throttled share, {short} calls", lambda f: f["throttledShareByService"][service]),
        ("throttled share, Greengrass calls", lambda f: f["throttledShareByService"][GG]),
        (f"peak {short} requests/s", lambda f: f[f"peak{name}RequestsPerSecond"]),
        ("peak Greengrass requests/s", lambda f: f["peakGreengrassRequestsPerSecond"]),
        ("failed rollouts", lambda f: f["failedRollouts"]),
        ("not RUNNING at the end", lambda f: f["notRunningAtEnd"]),
        ("release -> 50 % RUNNING (s)", lambda f: f["secondsToRunning"]["p50"]),
        ("release -> 95 % RUNNING (s)", lambda f: f["secondsToRunning"]["p95"]),
        ("release -> 100 % RUNNING (s)", lambda f: f["secondsToRunning"]["p100"]),
        ("SUCCEEDED -> deployment p50 (s)", lambda f: f["deployDelayAfterSucceeded"]["p50"]),
        ("SUCCEEDED -> deployment p95 (s)", lambda f: f["deployDelayAfterSucceeded"]["p95"]),
        (f"{short} calls/device/rollout, median",
         lambda f: f[f"{service}CallsPerDevice"]["median"]),
        (f"{short} calls/device/rollout, mean", lambda f: f[f"{service}CallsPerDevice"]["mean"]),
        ("GG calls/device/rollout, median", lambda f: f["greengrassCallsPerDevice"]["median"]),
    ]


TARGETS: list[Target] = targets(LFV)
ROWS = rows(LFV)

#: The contenders in the order of the table and the JSON keys of their figures.
CONTENDERS: tuple[tuple[str, str], ...] = (
    ("agent", "agent"),
    ("naive", "baseline"),
    ("per-platform", "platformBaseline"),
)


def ratio(agent: Any, baseline: Any) -> float | None:
    if not isinstance(agent, (int, float)) or not isinstance(baseline, (int, float)) or not baseline:
        return None
    return agent / baseline


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": pyplatform.python_version(),
        "system": f"{pyplatform.system()} {pyplatform.machine()}",
    }


def _show(value: Any, label: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):  # per platform, in the mix's order
        return "/".join(str(n) for n in value.values())
    if "share" in label:
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(result: dict[str, Any], scenario: Scenario) -> str:
    """The printed comparison: the agent, both baselines, the agent's ratio to each (the
    agent alone when the baselines were skipped)."""
    checks = {label: (target, check) for _, label, _, target, check in targets(scenario.service)}
    alone = result.get("baseline") is None
    lines = [
        f"{'figure':34} {'agent':>9}  target (agent)" if alone else
        f"{'figure':34} {'agent':>9} {'naive':>9} {'per-plat.':>9} {'a/naive':>8} "
        f"{'a/per-pl.':>9}  target (agent)"
    ]
    for label, get in rows(scenario.service):
        a = get(result["agent"])
        mark = ""
        if label in checks:
            target, check = checks[label]
            mark = f"{target:9} {'ok' if check(a, scenario) else 'MISSED'}"
        if alone:
            lines.append(f"{label:34} {_show(a, label):>9}  {mark}".rstrip())
            continue
        naive, strong = get(result["baseline"]), get(result["platformBaseline"])
        shown = ["-" if r is None else f"{r:.3g}" for r in (ratio(a, naive), ratio(a, strong))]
        lines.append(
            f"{label:34} {_show(a, label):>9} {_show(naive, label):>9} {_show(strong, label):>9} "
            f"{shown[0]:>8} {shown[1]:>9}  {mark}".rstrip()
        )
    return "\n".join(lines)


@contextmanager
def quiet_agent_logs(path: Path) -> Iterator[Counter[str]]:
    """Drop the agent's log events below WARNING; write the rest to ``path``, counted."""
    import structlog

    counts: Counter[str] = Counter()

    def tally(_: Any, method: str, event: Any) -> Any:
        counts[f"{method}: {event.get('event')}"] += 1
        return event

    saved = structlog.get_config()
    with path.open("w") as sink:
        structlog.configure(
            processors=[structlog.processors.add_log_level, tally, structlog.processors.JSONRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(file=sink),
            cache_logger_on_first_use=False,
        )
        try:
            yield counts
        finally:
            structlog.configure(**saved)


def plot(outcomes: list[Outcome], scenario: Scenario, path: Path) -> None:
    """Devices RUNNING, the packaging service's and Greengrass requests/s over simulated
    minutes, every contender (the agent drawn last, on top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from localcloud.greengrass import DEFAULT_RATE_QUOTAS, OTHER_OPERATIONS

    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 9.5), sharex=True)
    colours = {"agent": "tab:blue", "naive": "tab:orange", "per-platform": "tab:green"}
    end = 0.0
    for outcome in sorted(outcomes, key=lambda o: o.name == "agent"):
        colour, on_top = colours.get(outcome.name, "tab:grey"), outcome.name == "agent"
        times = sorted(running_times(outcome))
        xs = [0.0] + [t / 60 for t in times]
        ys = list(range(len(times) + 1))
        top.step(xs, ys, where="post", color=colour, label=outcome.name)
        end = max(end, xs[-1])
        for axis, service in ((middle, scenario.service), (bottom, GG)):
            series = request_series(outcome, service)
            axis.plot(
                [i / 60 for i in range(len(series))], series, color=colour, linewidth=0.6,
                alpha=0.8, label=outcome.name, zorder=3 if on_top else 2,
            )
            end = max(end, len(series) / 60)
    top.axhline(scenario.devices, color="grey", linewidth=0.5)
    top.set_ylabel("devices RUNNING the release")
    top.set_title(
        f"{scenario.devices} devices, {len(scenario.mix)} platforms, packaging "
        f"({SERVICE_TITLES[scenario.service]}) "
        f"{scenario.packaging_seconds / 60:.0f} min, {scenario.error_rate:.0%} random 5xx"
    )
    top.legend(loc="lower right")
    assumed = " (assumed)" if scenario.backend == SM else ""
    middle.axhline(
        scenario.packaging_quota, color="red", linestyle="--", linewidth=1,
        label=f"quota {scenario.packaging_quota} req/s{assumed}",
    )
    middle.set_ylabel(f"{SERVICE_TITLES[scenario.service]} requests/s")
    middle.legend(loc="upper right")
    shared = DEFAULT_RATE_QUOTAS[OTHER_OPERATIONS]
    bottom.axhline(
        shared, color="red", linestyle="--", linewidth=1,
        label=f"quota {shared:g} req/s (all but CreateComponentVersion)",
    )
    bottom.set_ylabel("Greengrass requests/s")
    bottom.set_xlabel("simulated minutes since the release")
    bottom.set_xlim(0, end * 1.02 if end else 1)
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_megabytes() -> float:
    """The peak resident memory of this process so far, MB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def output_stem(scenario: Scenario) -> str:
    """The name of the result files: ``fleet`` (Lookout for Vision), ``fleet-sagemaker``."""
    return "fleet" if scenario.backend == LFV else f"fleet-{scenario.backend}"


def run(scenario: Scenario, out: Path, *, state_dir: Path | None = None) -> dict[str, Any]:
    """Run the agent and both baselines (the agent alone with the SageMaker backend),
    write ``<stem>.json`` and ``<stem>.png`` into ``out`` (see :func:`output_stem`)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(scenario)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    with quiet_agent_logs(out / f"{stem}-agent.log") as log_counts:
        agent = run_agent(scenario, state_dir)
        agent_figures = figures(agent)
    outcomes = [agent]
    compared: dict[str, Any] = {
        "baselinesSkipped": BASELINES_SKIPPED if scenario.backend != LFV else BASELINES_OFF
    }
    if scenario.backend == LFV and scenario.baselines:
        # Each baseline gets a new World (moto is reset; the previous run's figures are taken).
        naive = run_baseline(scenario, BaselineDesign.naive(scenario))
        naive_figures = figures(naive)
        strong = run_baseline(scenario, BaselineDesign.per_platform(scenario))
        strong_figures = figures(strong)
        outcomes += [naive, strong]
        compared = {
            "baseline": naive_figures,
            "platformBaseline": strong_figures,
            "ratioAgentToBaseline": {
                label: ratio(get(agent_figures), get(naive_figures)) for label, get in ROWS
            },
            "ratioAgentToPlatformBaseline": {
                label: ratio(get(agent_figures), get(strong_figures)) for label, get in ROWS
            },
        }
    plot(outcomes, scenario, out / f"{stem}.png")
    met = []
    for key, label, get, target, check in targets(scenario.service):
        value = get(agent_figures)
        met.append({"key": key, "figure": label, "target": target, "value": value,
                    "met": bool(check(value, scenario))})
    result: dict[str, Any] = {
        "scenario": scenario.describe(),
        "agentConfiguration": {
            "overrides": AGENT_OVERRIDES,
            "note": "agent defaults otherwise; awsMaxAttempts 1 because botocore's retry "
            "sleeps are real time, while the agent's back-off runs on the virtual clock",
        },
        "agent": agent_figures,
        "baseline": None,
        "platformBaseline": None,
        **compared,
        "targets": met,
        "agentLogAtWarningOrAbove": dict(log_counts),
        "machine": machine(),
        "wallSeconds": round(time.perf_counter() - started, 1),
        # CPU time says what the run cost on a machine shared with other work.
        "cpuSeconds": round(cpu_seconds() - cpu_started, 1),
        "peakRssMegabytes": peak_rss_megabytes(),
    }
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def main(argv: list[str] | None = None, stdout: IO[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_fleet",
        description="Fleet rollout benchmark: the agent vs a naive and a per-platform "
        "hand-written baseline on the local world's virtual clock (the agent alone with "
        "--backend sagemaker).",
    )
    parser.add_argument("--devices", type=int, default=sum(n for _, n in FULL_MIX),
                        help="fleet size (default 1000; the 40/30/20/10 platform mix is scaled)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="directory for fleet.json and fleet.png (default bench-results)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=BACKENDS, default=LFV,
                        help="the agent's packaging backend (default lookoutvision); "
                        "sagemaker runs the agent alone and writes fleet-sagemaker.*")
    parser.add_argument("--sagemaker-quota", type=_positive, default=DEFAULT_SAGEMAKER_QUOTA,
                        metavar="N", help="SageMaker requests/s per account, all operations "
                        f"(default {DEFAULT_SAGEMAKER_QUOTA}: assumed, AWS publishes none)")
    parser.add_argument("--agent-deadline-minutes", type=_positive, default=180, metavar="N",
                        help="simulated minutes the agents get after the release (default 180)")
    parser.add_argument("--agent-only", action="store_true",
                        help="run the agent alone (skip both hand-written baselines)")
    parser.add_argument("--ledger", choices=LEDGER_STORES, default="auto",
                        help="the agents' rollout store: their SQLite ledger, MemoryStore, or "
                        f"auto (SQLite up to {MEMORY_STORE_ABOVE:,} devices; default)")
    args = parser.parse_args(argv)
    stdout = stdout or sys.stdout
    scenario = Scenario(
        mix=scaled_mix(args.devices), seed=args.seed, backend=args.backend,
        sagemaker_quota_per_second=args.sagemaker_quota, ledger=args.ledger,
        baselines=not args.agent_only, agent_deadline_seconds=args.agent_deadline_minutes * 60.0,
    )
    short = SHORT_NAMES[scenario.service]
    assumed = " (assumed)" if scenario.backend == SM else ""
    print(
        f"bench_fleet: {scenario.devices} devices "
        f"({', '.join(f'{n} {k}' for k, n in scenario.mix)}), one release, packaging "
        f"({SERVICE_TITLES[scenario.service]}) "
        f"{scenario.packaging_seconds / 60:.0f} simulated min, {short} quota "
        f"{scenario.packaging_quota} req/s{assumed}, Greengrass quotas "
        f"{', '.join(f'{k} {v:g}/s' for k, v in greengrass_quotas().items() if v is not None)}, "
        f"{scenario.error_rate:.0%} random 5xx ({short}, Greengrass)",
        file=stdout,
    )
    print(
        "agent: defaults + awsMaxAttempts=1 (botocore's retry sleeps are real time; the "
        "agent's back-off runs on the virtual clock)",
        file=stdout,
    )
    if scenario.backend != LFV:
        print(BASELINES_SKIPPED, file=stdout)
    elif not scenario.baselines:
        print(BASELINES_OFF, file=stdout)
    print(f"agent rollout store: {STORE_NOTES[scenario.store]}", file=stdout)
    result = run(scenario, args.out)
    print(table(result, scenario), file=stdout)
    missed = [t for t in result["targets"] if not t["met"]]
    stem = output_stem(scenario)
    walls = f"agent {result['agent']['wallSeconds']} s"
    if result["baseline"] is not None:
        walls += (
            f", naive {result['baseline']['wallSeconds']} s, per-platform "
            f"{result['platformBaseline']['wallSeconds']} s"
        )
    print(
        f"wall {result['wallSeconds']} s ({walls}), CPU {result['cpuSeconds']} s, "
        f"peak RSS {result['peakRssMegabytes']:,.0f} MB; "
        f"wrote {args.out / f'{stem}.json'}, "
        f"{args.out / f'{stem}.png'}",
        file=stdout,
    )
    if missed:
        print("MISSED: " + "; ".join(f"{t['figure']} = {_show(t['value'], t['figure'])} (target {t['target']})"
                                     for t in missed), file=stdout)
        return 1
    print("all agent targets met", file=stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "BACKENDS",
    "DEFAULT_SAGEMAKER_QUOTA",
    "FULL_MIX",
    "PLATFORMS",
    "BaselineDesign",
    "BaselineDevice",
    "Outcome",
    "Scenario",
    "main",
    "run",
    "run_agent",
    "run_baseline",
    "scaled_mix",
]
