"""Fleet rollout benchmark: 1,000 real agents against the 5 requests/s account quota.

One process, the local world's virtual clock. Two runs on identical fresh worlds:

* **agent** - the real agent code (``Reconciler`` + boto3 adapters + its own SQLite
  ledger, identity and random source per device), stepped by
  :class:`localcloud.fleet.Fleet`;
* **baseline** - a naive agent written here: a fixed 60-second tick per device (no
  jitter), one packaging job per device (``naive-<thing>``, its own ClientToken and
  component ``<project>.<thing>``), DescribeModelPackagingJob on every tick, then the
  same merge-and-CreateDeployment rule as the agent; a throttled or failed call is
  simply tried again on the next tick.

Both face the same world: one model release, packaging taking ``packaging_seconds``,
the Lookout for Vision account quota enforced by the emulator and a share of random
5xx answers from Lookout for Vision and Greengrass. The figures go to
``<out>/fleet.json`` and a plot to ``<out>/fleet.png``; :func:`main` prints a table and
returns 1 when the agent misses a target.

botocore's own retries sleep in real time and would not move the virtual clock, so
every client here uses ``awsMaxAttempts=1``: the agent's own back-off (on the virtual
clock) and the baseline's next tick do the retrying.
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
from agent.rollout import Phase
from localcloud.clock import VirtualClock
from localcloud.fleet import Fleet, SimDevice, agent_clients, make_reconciler
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
    error_rate: float = 0.05
    seed: int = 1
    baseline_tick_seconds: float = 60.0
    agent_deadline_seconds: float = 3 * 3600.0
    baseline_deadline_seconds: float = 8 * 3600.0

    @property
    def devices(self) -> int:
        return sum(n for _, n in self.mix)

    def platforms(self) -> list[tuple[str, DetectedPlatform]]:
        """(thing name, platform) of every device, in a fixed order."""
        keys = [key for key, n in self.mix for _ in range(n)]
        return [(f"dev-{i:04d}", PLATFORMS[key]) for i, key in enumerate(keys)]

    def describe(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "mix": {key: n for key, n in self.mix},
            "packagingSeconds": self.packaging_seconds,
            "lookoutvisionQuotaPerSecond": self.quota_per_second,
            "random5xxShare": {"lookoutvision": self.error_rate, "greengrass": self.error_rate},
            "seed": self.seed,
            "baselineTickSeconds": self.baseline_tick_seconds,
            "deadlineSeconds": {
                "agent": self.agent_deadline_seconds,
                "baseline": self.baseline_deadline_seconds,
            },
        }


@dataclass
class Stage:
    """A fresh world with the fleet seeded and the release made."""

    world: World
    clock: VirtualClock
    release_at: float
    version: int

    @property
    def component_version(self) -> str:
        return f"{self.version}.0.0"


def build_stage(scenario: Scenario) -> Stage:
    """Seed a new World (this resets moto), add the fleet, turn faults on, release v1.

    Every device already runs the agent component, deployed to its own thing. The
    setup goes through the world's internal clients: no faults, no call log.
    """
    clock = VirtualClock()
    world = World(clock, seed=scenario.seed)
    world.client("s3").create_bucket(Bucket=BUCKET)
    world.lookoutvision.create_project(PROJECT)
    world.lookoutvision.packaging_seconds = scenario.packaging_seconds
    world.greengrass.register_component_version(json.loads(AGENT_RECIPE.read_text()))
    gg, iot = world.client("greengrassv2"), world.client("iot")
    for thing, platform in scenario.platforms():
        arm = platform.target_device is not None or platform.arch == "ARM64"
        world.greengrass.add_core_device(thing, architecture="aarch64" if arm else "amd64")
        gg.create_deployment(
            targetArn=iot.describe_thing(thingName=thing)["thingArn"],
            deploymentName=f"fleet-{thing}",
            components={AGENT_COMPONENT: {"componentVersion": AGENT_VERSION}},
        )
    clock.advance(300)
    world.tick()
    world.faults.set_quota(LFV, scenario.quota_per_second)
    world.faults.inject(LFV, "*", "5xx", probability=scenario.error_rate)
    world.faults.inject("greengrass", "*", "5xx", probability=scenario.error_rate)
    release_at = clock.now()
    version = world.lookoutvision.add_model(PROJECT, "TRAINED")
    world.calls.clear()
    return Stage(world, clock, release_at, version)


@dataclass
class Track:
    """What the benchmark saw of one device."""

    thing: str
    component: str | None = None
    lookoutvision_calls: int = 0
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

    def __init__(self, world: World) -> None:
        self._calls = world.calls.calls
        self._mark = len(self._calls)

    def take(self, track: Track) -> None:
        """Count the new calls for ``track`` while its rollout is on (the agent's later
        periodic checks are not part of the rollout)."""
        calls = self._calls
        end = len(calls)
        if track.confirmed_at is None:
            track.lookoutvision_calls += sum(
                1 for i in range(self._mark, end) if calls[i].service == LFV
            )
        self._mark = end


# -- the agent -------------------------------------------------------------------------


def agent_config(thing: str, state_dir: Path) -> AgentConfig:
    """The agent's defaults plus identity, project and ``AGENT_OVERRIDES``."""
    values: dict[str, Any] = {
        "thingName": thing,
        "region": "us-east-1",
        "projectName": PROJECT,
        "s3Bucket": BUCKET,
        "stateDir": str(state_dir / thing),
        **AGENT_OVERRIDES,
    }
    return load_config(overrides=values)


def run_agent(scenario: Scenario, state_dir: Path | None = None) -> Outcome:
    """The real agents through one release; each device first checks somewhere within
    one check interval after the release (a fleet that has been running a while).

    Each device has its own ledger: an in-memory SQLite database by default (the same
    code and schema; the bench measures simulated time, not 1,000 devices' fsyncs on one
    disk), or a file under ``state_dir/<thing>/`` when given.
    """
    started = time.perf_counter()
    stage = build_stage(scenario)
    world, clock = stage.world, stage.clock
    rng = random.Random(scenario.seed)
    fleet = Fleet(world, clock)
    tracks: dict[str, Track] = {}
    shared = None
    for thing, platform in scenario.platforms():
        config = agent_config(thing, state_dir or Path("state"))
        shared = shared or agent_clients(world, config)
        ledger = Ledger(":memory:" if state_dir is None else Path(config.state_dir) / "agent.sqlite")
        reconciler = make_reconciler(
            world, config, platform, ledger, clients=shared, rng=random.Random(rng.random())
        )
        first = stage.release_at + rng.uniform(0, config.check_interval_seconds)
        fleet.add(SimDevice(thing, platform, reconciler, ledger), first)
        tracks[thing] = Track(thing)
    meter = _CallMeter(world)
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
        device.ledger.close()
    return Outcome("agent", stage, list(tracks.values()), clock.now(), time.perf_counter() - started)


# -- the naive baseline ----------------------------------------------------------------


class NaiveDevice:
    """The naive agent of one device: on every fixed tick, do what the phase says.

    CHECK (ListModels) -> START (StartModelPackagingJob, its own job) -> WAIT
    (DescribeModelPackagingJob each tick) -> DEPLOY (ListDeployments, GetDeployment,
    CreateDeployment with the same merge rule as the agent) -> DEPLOYING
    (ListEffectiveDeployments, ListInstalledComponents each tick) -> DONE. Any throttled
    or 5xx answer: try again on the next tick. Any other error: FAILED.
    """

    def __init__(self, thing: str, platform: DetectedPlatform, clients: Any) -> None:
        self.thing = thing
        self.platform = platform
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
    def component(self) -> str:
        return f"{PROJECT}.{self.thing}"

    @property
    def job_name(self) -> str:
        return f"naive-{self.thing}-v{self.version}"

    def tick(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._tick()
        except ClientError as error:
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status == 429 or status >= 500:
                return  # next tick
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
            "S3OutputLocation": {"Bucket": BUCKET, "Prefix": f"naive/{self.thing}/"},
        }
        platform = self.platform
        if platform.target_device is not None:
            target["TargetDevice"] = platform.target_device
            return target
        target["TargetPlatform"] = {"Os": platform.os, "Arch": platform.arch}
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
        request["clientToken"] = self.job_name
        return str(self.gg.create_deployment(**request)["deploymentId"])


def run_baseline(scenario: Scenario) -> Outcome:
    """The naive agents through the same release on a fresh, identical world."""
    started = time.perf_counter()
    stage = build_stage(scenario)
    world, clock = stage.world, stage.clock
    # The same shared boto3 clients as the agents get (awsMaxAttempts 1, in-process).
    clients = agent_clients(world, agent_config("naive", Path(tempfile.gettempdir())))
    rng = random.Random(scenario.seed)
    devices = [NaiveDevice(thing, platform, clients) for thing, platform in scenario.platforms()]
    tracks = [Track(d.thing, component=d.component) for d in devices]
    tick = scenario.baseline_tick_seconds
    # Fixed ticks, no jitter; each device's tick phase is where its timer happened to
    # start (boot time), so the first tick after the release is within one period.
    queue = [(stage.release_at + rng.uniform(0, tick), i) for i in range(len(devices))]
    heapq.heapify(queue)
    meter = _CallMeter(world)
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
            heapq.heappush(queue, (due + tick, index))
    return Outcome("baseline", stage, tracks, clock.now(), time.perf_counter() - started)


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


def figures(outcome: Outcome) -> dict[str, Any]:
    """The numbers of one run (times in simulated seconds from the release)."""
    stage = outcome.stage
    world, release = stage.world, stage.release_at
    world.tick()  # bring jobs and devices up to the end of the run
    calls = world.calls.calls
    per_operation = Counter(f"{c.service}:{c.operation}" for c in calls)
    throttled = Counter(f"{c.service}:{c.operation}" for c in calls if c.status == 429)
    lfv_per_second = Counter(int(c.time - release) for c in calls if c.service == LFV)
    lfv_served = Counter(
        int(c.time - release) for c in calls if c.service == LFV and c.status < 400
    )
    jobs = world.lookoutvision.jobs()
    succeeded_at = {
        (j.component_name, j.component_version): j.updated for j in jobs if j.status == "SUCCEEDED"
    }
    delays = [
        t.deployed_at - succeeded_at[(t.component, stage.component_version)]
        for t in outcome.tracks
        if t.deployed_at is not None
        and t.component is not None
        and (t.component, stage.component_version) in succeeded_at
    ]
    running = running_times(outcome)
    devices = len(outcome.tracks)
    lfv_counts = [float(t.lookoutvision_calls) for t in outcome.tracks]
    total = len(calls)
    return {
        "devices": devices,
        "packagingJobs": len(jobs),
        "packagingJobsSucceeded": len(succeeded_at),
        "deploymentsCreated": sum(
            1 for c in calls if c.operation == "CreateDeployment" and c.status < 300
        ),
        "calls": total,
        "callsPerOperation": dict(sorted(per_operation.items())),
        "throttledCalls": sum(throttled.values()),
        "throttledPerOperation": dict(sorted(throttled.items())),
        "throttledShare": (sum(throttled.values()) / total) if total else 0.0,
        "serverErrors": sum(1 for c in calls if c.status >= 500),
        "lookoutvisionCalls": sum(lfv_per_second.values()),
        "peakLookoutvisionRequestsPerSecond": max(lfv_per_second.values(), default=0),
        "peakLookoutvisionServedPerSecond": max(lfv_served.values(), default=0),
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
        "lookoutvisionCallsPerDevice": {
            "median": percentile(lfv_counts, 50),
            "p95": percentile(lfv_counts, 95),
            "max": max(lfv_counts, default=None),
        },
        "simulatedSeconds": outcome.end_at - release,
        "wallSeconds": round(outcome.wall_seconds, 1),
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


def lfv_series(outcome: Outcome) -> list[int]:
    """Lookout for Vision requests (throttled ones included) per simulated second."""
    release = outcome.stage.release_at
    per_second = Counter(
        int(c.time - release) for c in outcome.stage.world.calls.calls if c.service == LFV
    )
    length = max(per_second, default=-1) + 1
    return [per_second.get(i, 0) for i in range(length)]


# -- targets, ratios, report -----------------------------------------------------------

#: (key, label, getter, target text, check) for the agent's figures.
Target = tuple[str, str, Callable[[dict[str, Any]], Any], str, Callable[[Any, Scenario], bool]]

TARGETS: list[Target] = [
    ("packagingJobs", "packaging jobs started", lambda f: f["packagingJobs"],
     "= platforms", lambda v, s: v == len(s.mix)),
    ("failedRollouts", "failed rollouts", lambda f: f["failedRollouts"],
     "0", lambda v, s: v == 0),
    ("throttledShare", "throttled calls (429), share", lambda f: f["throttledShare"],
     "< 1 %", lambda v, s: v < 0.01),
    ("deployDelayP95", "SUCCEEDED -> deployment p95 (s)",
     lambda f: f["deployDelayAfterSucceeded"]["p95"],
     "<= 90 s", lambda v, s: v is not None and v <= 90),
    ("secondsTo100", "release -> 100 % RUNNING (s)", lambda f: f["secondsToRunning"]["p100"],
     "<= 1800 s", lambda v, s: v is not None and v <= 1800),
    ("lfvCallsMedian", "L4V calls/device/rollout, median",
     lambda f: f["lookoutvisionCallsPerDevice"]["median"],
     "<= 10", lambda v, s: v is not None and v <= 10),
]

#: Rows of the printed table: (label, getter).
ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("packaging jobs started", lambda f: f["packagingJobs"]),
    ("calls, all services", lambda f: f["calls"]),
    ("L4V calls", lambda f: f["lookoutvisionCalls"]),
    ("throttled calls (429)", lambda f: f["throttledCalls"]),
    ("throttled calls, share", lambda f: f["throttledShare"]),
    ("peak L4V requests/s", lambda f: f["peakLookoutvisionRequestsPerSecond"]),
    ("failed rollouts", lambda f: f["failedRollouts"]),
    ("not RUNNING at the end", lambda f: f["notRunningAtEnd"]),
    ("release -> 50 % RUNNING (s)", lambda f: f["secondsToRunning"]["p50"]),
    ("release -> 95 % RUNNING (s)", lambda f: f["secondsToRunning"]["p95"]),
    ("release -> 100 % RUNNING (s)", lambda f: f["secondsToRunning"]["p100"]),
    ("SUCCEEDED -> deployment p50 (s)", lambda f: f["deployDelayAfterSucceeded"]["p50"]),
    ("SUCCEEDED -> deployment p95 (s)", lambda f: f["deployDelayAfterSucceeded"]["p95"]),
    ("L4V calls/device/rollout, median", lambda f: f["lookoutvisionCallsPerDevice"]["median"]),
]


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
    if "share" in label:
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(result: dict[str, Any], scenario: Scenario) -> str:
    agent, baseline = result["agent"], result["baseline"]
    checks = {label: (target, check) for _, label, _, target, check in TARGETS}
    lines = [f"{'figure':34} {'agent':>9} {'baseline':>9} {'a/b':>8}  target (agent)"]
    for label, get in ROWS:
        a, b = get(agent), get(baseline)
        r = ratio(a, b)
        mark = ""
        if label in checks:
            target, check = checks[label]
            mark = f"{target:9} {'ok' if check(a, scenario) else 'MISSED'}"
        shown = "-" if r is None else f"{r:.3g}"
        lines.append(
            f"{label:34} {_show(a, label):>9} {_show(b, label):>9} {shown:>8}  {mark}".rstrip()
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


def plot(agent: Outcome, baseline: Outcome, scenario: Scenario, path: Path) -> None:
    """Devices RUNNING and L4V requests/s over simulated minutes, both contenders."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    colours = {"agent": "tab:blue", "baseline": "tab:orange"}
    end = 0.0
    for outcome in (baseline, agent):  # the agent drawn last, on top
        times = sorted(running_times(outcome))
        xs = [0.0] + [t / 60 for t in times]
        ys = list(range(len(times) + 1))
        top.step(xs, ys, where="post", color=colours[outcome.name], label=outcome.name)
        series = lfv_series(outcome)
        bottom.plot(
            [i / 60 for i in range(len(series))], series, color=colours[outcome.name],
            linewidth=0.6, alpha=0.8, label=outcome.name, zorder=3 if outcome is agent else 2,
        )
        end = max(end, xs[-1], len(series) / 60)
    top.axhline(scenario.devices, color="grey", linewidth=0.5)
    top.set_ylabel("devices RUNNING the release")
    top.set_title(
        f"{scenario.devices} devices, {len(scenario.mix)} platforms, packaging "
        f"{scenario.packaging_seconds / 60:.0f} min, {scenario.error_rate:.0%} random 5xx"
    )
    top.legend(loc="lower right")
    bottom.axhline(
        scenario.quota_per_second, color="red", linestyle="--", linewidth=1,
        label=f"quota {scenario.quota_per_second} req/s",
    )
    bottom.set_ylabel("Lookout for Vision requests/s")
    bottom.set_xlabel("simulated minutes since the release")
    bottom.set_xlim(0, end * 1.02 if end else 1)
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(scenario: Scenario, out: Path, *, state_dir: Path | None = None) -> dict[str, Any]:
    """Run both contenders, write ``fleet.json`` and ``fleet.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with quiet_agent_logs(out / "fleet-agent.log") as log_counts:
        agent = run_agent(scenario, state_dir)
        agent_figures = figures(agent)
    baseline = run_baseline(scenario)  # a new World: moto is reset, the agent's is done
    baseline_figures = figures(baseline)
    plot(agent, baseline, scenario, out / "fleet.png")
    targets = []
    for key, label, get, target, check in TARGETS:
        value = get(agent_figures)
        targets.append({"key": key, "figure": label, "target": target, "value": value,
                        "met": bool(check(value, scenario))})
    result: dict[str, Any] = {
        "scenario": scenario.describe(),
        "agentConfiguration": {
            "overrides": AGENT_OVERRIDES,
            "note": "agent defaults otherwise; awsMaxAttempts 1 because botocore's retry "
            "sleeps are real time, while the agent's back-off runs on the virtual clock",
        },
        "baseline": {},
        "agent": agent_figures,
        "ratioAgentToBaseline": {},
        "targets": targets,
        "agentLogAtWarningOrAbove": dict(log_counts),
        "machine": machine(),
        "wallSeconds": 0.0,
    }
    result["baseline"] = baseline_figures
    result["ratioAgentToBaseline"] = {
        label: ratio(get(agent_figures), get(baseline_figures)) for label, get in ROWS
    }
    result["wallSeconds"] = round(time.perf_counter() - started, 1)
    (out / "fleet.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None, stdout: IO[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_fleet",
        description="Fleet rollout benchmark: the agent vs a naive baseline on the "
        "local world's virtual clock.",
    )
    parser.add_argument("--devices", type=int, default=sum(n for _, n in FULL_MIX),
                        help="fleet size (default 1000; the 40/30/20/10 platform mix is scaled)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="directory for fleet.json and fleet.png (default bench-results)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    stdout = stdout or sys.stdout
    scenario = Scenario(mix=scaled_mix(args.devices), seed=args.seed)
    print(
        f"bench_fleet: {scenario.devices} devices "
        f"({', '.join(f'{n} {k}' for k, n in scenario.mix)}), one release, packaging "
        f"{scenario.packaging_seconds / 60:.0f} simulated min, L4V quota "
        f"{scenario.quota_per_second} req/s, {scenario.error_rate:.0%} random 5xx "
        "(L4V, Greengrass)",
        file=stdout,
    )
    print(
        "agent: defaults + awsMaxAttempts=1 (botocore's retry sleeps are real time; the "
        "agent's back-off runs on the virtual clock)",
        file=stdout,
    )
    result = run(scenario, args.out)
    print(table(result, scenario), file=stdout)
    missed = [t for t in result["targets"] if not t["met"]]
    print(
        f"wall {result['wallSeconds']} s (agent {result['agent']['wallSeconds']} s, baseline "
        f"{result['baseline']['wallSeconds']} s); wrote {args.out / 'fleet.json'}, "
        f"{args.out / 'fleet.png'}",
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
    "FULL_MIX",
    "PLATFORMS",
    "NaiveDevice",
    "Outcome",
    "Scenario",
    "main",
    "run",
    "run_agent",
    "run_baseline",
    "scaled_mix",
]
