"""Fleet coordination at 1,000, 10,000 and 100,000 devices under one account's quotas.

For each size one run of real agents (``Reconciler`` + boto3 adapters, fleet coordination
on) in one process on the world's virtual clock (:class:`localcloud.fleetnet.
CoordinatedFleet`): the simulated broker carries their announcements, each simulated core
device's nucleus reports applied deployments. The run has three parts:

1. **release** of a good model version (packaging takes ``packaging_seconds``), until every
   device runs it (the world's truth: the component RUNNING on the simulated device);
2. **idle hour** after it (the agents' own idle checks and the confirmations still due);
3. **bad release**: a newer version whose component fails to install on every device,
   until every device's rollout of it ended (FAILED or HALTED) or the deadline.

The world: Lookout for Vision's 5 requests/s per account, the Greengrass quotas as the
world emulates them, 5 % random 5xx from both services. The fleet: the 40/30/20/10 mix of
four platforms; one thing group per platform and canary wave (``fleet.groupNameTemplate``)
and the agent component deployed to a fleet-wide group. The naive baseline of
``localcloud.bench.fleet`` (one job per device, a fixed 60-second tick) runs beside it where
its own cost allows (``--baseline-max``).

:func:`main` prints a table, writes ``<out>/fleet-scale.json`` and a plot of devices RUNNING
over time for every size, and exits 1 when the agent misses a target.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.config import FleetSettings, load_config
from agent.coordination import FleetTopics
from agent.ledger import Ledger
from agent.platform import DetectedPlatform
from agent.ports import FactChanges
from agent.rollout import Phase
from localcloud.bench import fleet as base
from localcloud.clock import VirtualClock
from localcloud.fleet import agent_clients, make_reconciler
from localcloud.fleetnet import CoordinatedFleet, Member
from localcloud.memorystore import MemoryStore
from localcloud.stage import AGENT_COMPONENT, AGENT_RECIPE, AGENT_VERSION, BUCKET, PROJECT
from localcloud.world import World

LFV, GG = base.LFV, base.GG
SIZES = (1_000, 10_000, 100_000)
GROUP_TEMPLATE = "{project}-{platform}-w{wave}"
TOPIC_PREFIX = FleetSettings().topic_prefix


@dataclass(frozen=True)
class ScaleScenario:
    """One size's world and fleet settings."""

    devices: int
    packaging_seconds: float = 900.0
    quota_per_second: int = 5
    error_rate: float = 0.05
    seed: int = 1
    waves: tuple[float, ...] = (1.0, 10.0, 100.0)
    wave_delay_seconds: float = 90.0
    deployment_watch_seconds: float = 60.0
    suppression_seconds: float = 30.0
    halt_failures: int = 3
    check_budget_per_second: float = 0.5
    idle_seconds: float = 3600.0
    #: how long after 100 % RUNNING the confirmations may take before the bad release
    confirm_deadline_seconds: float = 6 * 3600.0
    release_deadline_seconds: float = 3 * 3600.0
    bad_deadline_seconds: float = 2 * 3600.0
    #: "memory" or "sqlite" (each device's own in-memory SQLite ledger)
    store: str = "memory"

    @property
    def mix(self) -> tuple[tuple[str, int], ...]:
        return base.scaled_mix(self.devices)

    def fleet_settings(self) -> dict[str, Any]:
        """The ``fleet`` configuration every device gets."""
        return {
            "enabled": True,
            "topicPrefix": TOPIC_PREFIX,
            "size": self.devices,
            "checkBudgetPerSecond": self.check_budget_per_second,
            "suppressionSeconds": self.suppression_seconds,
            "waves": list(self.waves),
            "waveDelaySeconds": self.wave_delay_seconds,
            "deploymentWatchSeconds": self.deployment_watch_seconds,
            "haltFailures": self.halt_failures,
            "groupNameTemplate": GROUP_TEMPLATE,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "mix": dict(self.mix),
            "packagingSeconds": self.packaging_seconds,
            "lookoutvisionQuotaPerSecond": self.quota_per_second,
            "random5xxShare": {LFV: self.error_rate, GG: self.error_rate},
            "greengrassRateQuotasPerSecond": base.greengrass_quotas(),
            "fleet": self.fleet_settings(),
            "store": self.store,
            "seed": self.seed,
        }


@dataclass
class Device:
    """What the benchmark saw of one device."""

    thing: str
    platform: str
    wave: int
    #: calls by "part:service" (parts: release, idle, bad)
    calls: Counter[str] = field(default_factory=Counter)
    #: component version -> when the world first ran it on the device
    running_at: dict[str, float] = field(default_factory=dict)


def build(scenario: ScaleScenario) -> tuple[World, VirtualClock, CoordinatedFleet, list[Device]]:
    """A world with the fleet seeded in bulk and its agents, before any release."""
    clock = VirtualClock()
    world = World(clock, seed=scenario.seed)
    world.client("s3").create_bucket(Bucket=BUCKET)
    world.lookoutvision.create_project(PROJECT)
    world.lookoutvision.packaging_seconds = scenario.packaging_seconds
    world.greengrass.register_component_version(json.loads(AGENT_RECIPE.read_text()))
    fleet_cfg = scenario.fleet_settings()
    probe = load_config(overrides={
        "thingName": "probe", "region": "us-east-1", "projectName": PROJECT, "s3Bucket": BUCKET,
        "fleet": fleet_cfg,
    }).fleet
    things: list[tuple[str, DetectedPlatform, int]] = []
    index = 0
    for key, count in scenario.mix:
        for _ in range(count):
            thing = f"dev-{index:06d}"
            index += 1
            things.append((thing, base.PLATFORMS[key], probe.wave_of(thing)))
    groups: dict[str, list[tuple[str, str]]] = {}
    for thing, platform, wave in things:
        name = probe.group_name(PROJECT, platform.key, wave)
        assert name is not None
        groups.setdefault(name, []).append((thing, base._architecture(platform)))
    for name, members in groups.items():
        world.greengrass.add_core_devices(members, thing_group=name)
    world.greengrass.add_core_devices(
        ((thing, base._architecture(platform)) for thing, platform, _ in things),
        thing_group=base.FLEET_GROUP,
    )
    world.client("greengrassv2").create_deployment(
        targetArn=world.arn("iot", f"thinggroup/{base.FLEET_GROUP}"),
        deploymentName=f"{base.FLEET_GROUP}-agent",
        components={AGENT_COMPONENT: {"componentVersion": AGENT_VERSION}},
    )
    clock.advance(300)
    world.tick()
    world.faults.set_quota(LFV, scenario.quota_per_second)
    world.faults.inject(LFV, "*", "5xx", probability=scenario.error_rate)
    world.faults.inject("greengrass", "*", "5xx", probability=scenario.error_rate)

    fleet = CoordinatedFleet(world, clock, FleetTopics(TOPIC_PREFIX, PROJECT))
    rng = random.Random(scenario.seed)
    devices: list[Device] = []
    now = clock.now()

    def config_of(thing: str) -> Any:
        return load_config(overrides={
            "thingName": thing, "region": "us-east-1", "projectName": PROJECT, "s3Bucket": BUCKET,
            "stateDir": f"state/{thing}", **base.AGENT_OVERRIDES, "fleet": fleet_cfg,
        })

    # Identical and stateless: every simulated device shares one set of boto3 clients.
    shared = agent_clients(world, config_of(things[0][0]))
    for thing, platform, wave in things:
        config = config_of(thing)
        store: Ledger | MemoryStore = MemoryStore() if scenario.store == "memory" else Ledger(":memory:")
        # A fleet that has run for a while: each device's next check is anywhere within
        # its (budget-derived) interval.
        first = now + rng.uniform(0, config.check_interval.seconds)
        store.update_facts(FactChanges(next_check_at=first))
        seed = rng.random()

        def reconciler(board: Any, nucleus: Any, config: Any = config, platform: Any = platform,
                       store: Any = store, seed: float = seed) -> Any:
            return make_reconciler(world, config, platform, store, clients=shared,
                                   rng=random.Random(seed), fleet_board=board, local_deployments=nucleus)

        fleet.add(thing, platform.key, reconciler, store, first)
        devices.append(Device(thing, platform.key, wave))
    return world, clock, fleet, devices


class _Meter:
    """Attributes new call-log entries to the device that just stepped, per part."""

    def __init__(self, world: World, devices: list[Device]) -> None:
        self.calls = world.calls.calls
        self.mark = len(self.calls)
        self.devices = devices
        self.part = "release"

    def take(self, member: Member) -> None:
        end = len(self.calls)
        device = self.devices[member.index]
        for i in range(self.mark, end):
            device.calls[f"{self.part}:{self.calls[i].service}"] += 1
        self.mark = end


def _window(world: World, start: float, end: float) -> tuple[Counter[str], Counter[str]]:
    calls: Counter[str] = Counter()
    throttled: Counter[str] = Counter()
    for call in world.calls.calls:
        if start <= call.time <= end:
            calls[call.service] += 1
            calls[f"{call.service}:{call.operation}"] += 1
            if call.throttled:
                throttled[call.service] += 1
    return calls, throttled


def _share(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 3) if whole else 0.0


def _quantiles(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(base.percentile(values, 50) or 0.0, 1),
        "p95": round(base.percentile(values, 95) or 0.0, 1),
        "max": round(values[-1], 1),
    }


def _median(values: list[int]) -> float:
    values = sorted(values)
    if not values:
        return 0.0
    middle = len(values) // 2
    return float(values[middle]) if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def run(scenario: ScaleScenario, *, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """One size: release, idle hour, bad release. Returns the figures (JSON-ready)."""
    wall, cpu = time.perf_counter(), base.cpu_seconds()
    world, clock, fleet, devices = build(scenario)
    setup_seconds = time.perf_counter() - wall
    log(f"{scenario.devices:,} devices seeded in {setup_seconds:.0f} s")
    meter = _Meter(world, devices)
    running: dict[str, list[float]] = {}

    def on_running(member: Member, component: str, version: str, at: float) -> None:
        if component.startswith(f"{PROJECT}."):
            devices[member.index].running_at.setdefault(version, at)
            running.setdefault(version, []).append(at)

    fleet.on_running = on_running

    confirmed_at: dict[int, float] = {}

    def step(member: Member, now: float) -> None:
        meter.take(member)
        if member.index not in confirmed_at and member.store.facts().deployed_version == good:
            confirmed_at[member.index] = now

    # -- 1. the good release --------------------------------------------------------
    world.calls.clear()
    meter.mark = 0
    released = clock.now()
    good = world.lookoutvision.add_model(PROJECT, "TRAINED")
    good_component = f"{good}.0.0"
    count = scenario.devices
    fleet.run_until(lambda: len(running.get(good_component, ())) >= count,
                    deadline=released + scenario.release_deadline_seconds, on_step=step)
    all_running = clock.now() if len(running.get(good_component, ())) >= count else None
    release_end = clock.now()
    log(f"release: {len(running.get(good_component, ())):,}/{count:,} RUNNING after "
        f"{release_end - released:.0f} simulated s ({time.perf_counter() - wall:.0f} s wall)")
    jobs = world.lookoutvision.jobs()
    succeeded_at = {j.component_name: j.updated for j in jobs if j.status == "SUCCEEDED"}
    deployments = _group_deployments(world, good_component)

    # -- 2. the idle hour, and the confirmations spread beyond it ---------------------
    meter.part = "idle"
    fleet.run_until(lambda: False, deadline=release_end + scenario.idle_seconds, on_step=step)
    idle_end = clock.now()
    confirmed_in_hour = len(confirmed_at)
    # A rollout's confirmations are spread at ~10 Greengrass requests/s: wait for them
    # before the next release, as a fleet would between releases.
    fleet.run_until(lambda: len(confirmed_at) >= count,
                    deadline=release_end + scenario.confirm_deadline_seconds, on_step=step)
    all_confirmed = max(confirmed_at.values()) if len(confirmed_at) >= count else None
    log(f"idle: {confirmed_in_hour:,} devices confirmed v{good} within the hour, all "
        f"{'after ' + format(all_confirmed - released, '.0f') + ' s' if all_confirmed else 'NOT'} "
        f"({time.perf_counter() - wall:.0f} s wall)")

    # -- 3. the bad release -------------------------------------------------------------
    meter.part = "bad"
    bad_released = clock.now()
    bad = world.lookoutvision.add_model(PROJECT, "TRAINED")
    for key, _ in scenario.mix:
        world.greengrass.fail_install(f"{PROJECT}.{base.PLATFORMS[key].key}", f"{bad}.0.0",
                                      times=scenario.devices)

    settled: set[int] = set()

    def bad_step(member: Member, now: float) -> None:
        # Counted as devices step (a scan of the whole fleet after every step would
        # cost O(devices) each time).
        meter.take(member)
        if member.index not in settled and _ended(member, bad):
            settled.add(member.index)

    fleet.run_until(lambda: len(settled) >= count, deadline=bad_released + scenario.bad_deadline_seconds,
                    on_step=bad_step)
    bad_end = clock.now()
    tried = _devices_that_received(world, f"{bad}.0.0")
    phases = Counter(_phase(m, bad) for m in fleet.members)
    log(f"bad release: {tried:,} devices received it; phases {dict(phases)} "
        f"({time.perf_counter() - wall:.0f} s wall)")

    # -- figures ------------------------------------------------------------------------
    release_calls, release_throttled = _window(world, released, release_end)
    idle_calls, idle_throttled = _window(world, release_end, idle_end)
    bad_calls, bad_throttled = _window(world, bad_released, bad_end)
    times = sorted(t - released for t in running.get(good_component, ()))
    per_device_l4v = [d.calls["release:lookoutvision"] for d in devices]
    # A rollout's Greengrass calls include its confirmations, spread beyond the release.
    per_device_gg = [d.calls["release:greengrass"] + d.calls["idle:greengrass"] for d in devices]
    latency, raw = [], []
    for device in devices:
        component = f"{PROJECT}.{device.platform}"
        created = deployments.get((device.platform, device.wave))
        if component in succeeded_at and created is not None:
            raw.append(created - succeeded_at[component])
            latency.append(created - succeeded_at[component] - device.wave * scenario.wave_delay_seconds)
    network = fleet.network
    good_jobs = [j for j in jobs if j.model_version == str(good)]
    return {
        "scenario": scenario.describe(),
        "release": {
            "jobsStarted": len(good_jobs),
            "platforms": len(scenario.mix),
            "calls": {LFV: release_calls[LFV], GG: release_calls[GG]},
            "callsByOperation": {k: v for k, v in sorted(release_calls.items()) if ":" in k},
            "throttledPercent": {
                LFV: _share(release_throttled[LFV], release_calls[LFV]),
                GG: _share(release_throttled[GG], release_calls[GG]),
            },
            "perDevice": {
                LFV: {"median": _median(per_device_l4v), "mean": round(sum(per_device_l4v) / count, 3),
                      "max": max(per_device_l4v)},
                GG: {"median": _median(per_device_gg), "mean": round(sum(per_device_gg) / count, 3),
                     "max": max(per_device_gg)},
            },
            "secondsToRunning": {
                "50%": _at_share(times, count, 0.50),
                "95%": _at_share(times, count, 0.95),
                "100%": None if all_running is None else round(all_running - released, 1),
            },
            "running": len(times),
            "succeededToDeploymentSeconds": _quantiles(latency),
            "succeededToDeploymentSecondsRaw": _quantiles(raw),
            "groupDeployments": len(deployments),
            "confirmedAfterIdleHour": confirmed_in_hour,
            "secondsToAllConfirmed": None if all_confirmed is None else round(all_confirmed - released, 1),
        },
        "idleHour": {
            "calls": {LFV: idle_calls[LFV], GG: idle_calls[GG]},
            "throttledPercent": {
                LFV: _share(idle_throttled[LFV], idle_calls[LFV]),
                GG: _share(idle_throttled[GG], idle_calls[GG]),
            },
        },
        "badRelease": {
            "devicesThatReceivedIt": tried,
            "percentOfFleet": _share(tried, count),
            "phases": {str(k): v for k, v in phases.items()},
            "calls": {LFV: bad_calls[LFV], GG: bad_calls[GG]},
            "throttledPercent": {
                LFV: _share(bad_throttled[LFV], bad_calls[LFV]),
                GG: _share(bad_throttled[GG], bad_calls[GG]),
            },
        },
        "mqtt": {
            "publishedPerDevice": round(sum(network.published.values()) / count, 2),
            "announcementsPublished": dict(network.by_kind),
            "announcementsReceivedPerDevice": round(network.delivered / count, 2),
            "rejected": network.rejected,
        },
        "runningSeries": [round(t, 1) for t in times],
        "wallSeconds": round(time.perf_counter() - wall, 1),
        "setupSeconds": round(setup_seconds, 1),
        "cpuSeconds": round(base.cpu_seconds() - cpu, 1),
        "peakRssMegabytes": round(base.peak_rss_megabytes(), 1),
    }


def _at_share(times: list[float], count: int, share: float) -> float | None:
    needed = max(1, math.ceil(count * share))
    return round(times[needed - 1], 1) if len(times) >= needed else None


def _phase(member: Member, version: int) -> str:
    for rollout in member.store.rollouts(limit=3):
        if rollout.model_version == version:
            return rollout.phase.value
    return "none"


def _ended(member: Member, version: int) -> bool:
    for rollout in member.store.rollouts(limit=3):
        if rollout.model_version == version:
            return rollout.phase in (Phase.FAILED, Phase.HALTED, Phase.SUCCEEDED)
    return False


def _group_deployments(world: World, component_version: str) -> dict[tuple[str, int], float]:
    """(platform, wave) -> when its group deployment holding ``component_version`` was made."""
    found: dict[tuple[str, int], float] = {}
    for deployment in world.greengrass.deployments():
        if deployment.target_kind != "thinggroup" or not deployment.target_name.startswith(f"{PROJECT}-"):
            continue
        if not any(spec.get("componentVersion") == component_version for spec in deployment.components.values()):
            continue
        platform, _, wave = deployment.target_name[len(PROJECT) + 1:].rpartition("-w")
        key = (platform, int(wave))
        found[key] = min(found.get(key, deployment.created), deployment.created)
    return found


def _devices_that_received(world: World, component_version: str) -> int:
    """Devices to which a deployment holding ``component_version`` was delivered."""
    received = 0
    for device in world.greengrass.devices.values():
        if any(
            any(spec.get("componentVersion") == component_version
                for spec in effective.deployment.components.values())
            for effective in device.effective_deployments()
        ):
            received += 1
    return received


# -- targets and report --------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str
    check: Callable[[dict[str, Any]], bool]


def targets(devices: int) -> list[Target]:
    """The agent's targets at ``devices`` (issue 13)."""
    minutes = 20 if devices <= 10_000 else 30
    found = [
        Target("one packaging job per platform", lambda f: f["release"]["jobsStarted"] == f["release"]["platforms"]),
        Target("throttled < 1 % of L4V calls (release, idle hour)",
               lambda f: f["release"]["throttledPercent"][LFV] < 1 and f["idleHour"]["throttledPercent"][LFV] < 1),
        Target("throttled < 1 % of Greengrass calls (release, idle hour)",
               lambda f: f["release"]["throttledPercent"][GG] < 1 and f["idleHour"]["throttledPercent"][GG] < 1),
        Target("Greengrass calls per device per rollout <= 3",
               lambda f: f["release"]["perDevice"][GG]["mean"] <= 3),
        Target(f"release -> 100 % RUNNING <= {minutes} min",
               lambda f: (f["release"]["secondsToRunning"]["100%"] or math.inf) <= minutes * 60),
        Target("SUCCEEDED -> deployment p95 <= 60 s",
               lambda f: (f["release"]["succeededToDeploymentSeconds"]["p95"] or math.inf) <= 60),
        Target("bad version reaches <= 2 % of the fleet before the halt",
               lambda f: f["badRelease"]["percentOfFleet"] <= 2),
    ]
    if devices >= 10_000:
        found.append(Target("median L4V calls per device per rollout <= 1",
                            lambda f: f["release"]["perDevice"][LFV]["median"] <= 1))
    return found


def _minutes(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds / 60:.1f} min"


def table(results: list[dict[str, Any]]) -> str:
    """The figures side by side, one column per size."""
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("packaging jobs (platforms)", lambda f: f"{f['release']['jobsStarted']} ({f['release']['platforms']})"),
        ("group deployments", lambda f: f["release"]["groupDeployments"]),
        ("L4V calls, total / per device median (mean)", lambda f: (
            f"{f['release']['calls'][LFV]:,} / {f['release']['perDevice'][LFV]['median']:g} "
            f"({f['release']['perDevice'][LFV]['mean']:.2f})")),
        ("Greengrass calls: release total / per device per rollout", lambda f: (
            f"{f['release']['calls'][GG]:,} / {f['release']['perDevice'][GG]['mean']:.2f}")),
        ("throttled L4V / GG, release", lambda f: (
            f"{f['release']['throttledPercent'][LFV]:.2f} % / {f['release']['throttledPercent'][GG]:.2f} %")),
        ("throttled L4V / GG, idle hour", lambda f: (
            f"{f['idleHour']['throttledPercent'][LFV]:.2f} % / {f['idleHour']['throttledPercent'][GG]:.2f} %")),
        ("release -> 50 % RUNNING", lambda f: _minutes(f["release"]["secondsToRunning"]["50%"])),
        ("release -> 95 % RUNNING", lambda f: _minutes(f["release"]["secondsToRunning"]["95%"])),
        ("release -> 100 % RUNNING", lambda f: _minutes(f["release"]["secondsToRunning"]["100%"])),
        ("SUCCEEDED -> deployment p50 / p95 (minus wave wait)", lambda f: (
            f"{f['release']['succeededToDeploymentSeconds']['p50']} / "
            f"{f['release']['succeededToDeploymentSeconds']['p95']} s")),
        ("  the same with the wave wait", lambda f: (
            f"{f['release']['succeededToDeploymentSecondsRaw']['p50']} / "
            f"{f['release']['succeededToDeploymentSecondsRaw']['p95']} s")),
        ("release -> every device confirmed", lambda f: _minutes(f["release"]["secondsToAllConfirmed"])),
        ("MQTT published / received per device", lambda f: (
            f"{f['mqtt']['publishedPerDevice']} / {f['mqtt']['announcementsReceivedPerDevice']}")),
        ("bad version: devices that got it", lambda f: (
            f"{f['badRelease']['devicesThatReceivedIt']:,} ({f['badRelease']['percentOfFleet']:.2f} %)")),
        ("bench wall / CPU / peak RSS", lambda f: (
            f"{f['wallSeconds'] / 60:.1f} min / {f['cpuSeconds'] / 60:.1f} min / "
            f"{f['peakRssMegabytes'] / 1024:.1f} GB")),
    ]
    header = ["", *[f"{r['scenario']['devices']:,} devices" for r in results]]
    lines = [header] + [[label, *[str(show(r)) for r in results]] for label, show in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)))
    return "\n".join(out)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Devices RUNNING the release over time, one line per size (share of the fleet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for result in results:
        series = result["runningSeries"]
        count = result["scenario"]["devices"]
        xs = [0.0] + [t / 60 for t in series]
        ys = [0.0] + [100.0 * (i + 1) / count for i in range(len(series))]
        axes.step(xs, ys, where="post", label=f"{count:,} devices")
    axes.axvline(15, color="grey", linestyle=":", linewidth=1)
    axes.text(15.2, 3, "packaging done (15 min)", color="grey", fontsize=8)
    axes.set_xlabel("minutes after the release")
    axes.set_ylabel("devices RUNNING the new version (%)")
    axes.set_title("Fleet coordination: release to RUNNING, 5 L4V requests/s per account")
    axes.set_ylim(0, 101)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def naive_baseline(devices: int, seed: int, deadline_seconds: float) -> dict[str, Any]:
    """The naive baseline of ``localcloud.bench.fleet`` at ``devices`` (its figures)."""
    scenario = base.Scenario(mix=base.scaled_mix(devices), seed=seed,
                             baseline_deadline_seconds=deadline_seconds)
    outcome = base.run_baseline(scenario, base.BaselineDesign.naive(scenario))
    return base.figures(outcome)


def main(argv: list[str] | None = None, stdout: IO[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_fleet_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES),
                        help="comma-separated fleet sizes (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-max", type=int, default=1_000,
                        help="run the naive baseline beside sizes up to this many devices (0: never)")
    parser.add_argument("--baseline-deadline", type=float, default=3 * 3600.0,
                        help="simulated seconds the naive baseline gets (default: %(default)s)")
    args = parser.parse_args(argv)
    out = stdout or sys.stdout
    sizes = [int(s) for s in args.sizes.split(",") if s]
    args.out.mkdir(parents=True, exist_ok=True)
    results, baselines, missed = [], {}, []

    def log(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    with base.quiet_agent_logs(args.out / "fleet-scale-agent.log"):
        for size in sizes:
            print(f"fleet of {size:,}:", file=sys.stderr, flush=True)
            scenario = ScaleScenario(size, seed=args.seed)
            result = run(scenario, log=log)
            result["targets"] = {t.name: t.check(result) for t in targets(size)}
            missed += [f"{size:,}: {name}" for name, ok in result["targets"].items() if not ok]
            results.append(result)
            if size <= args.baseline_max:
                baselines[size] = naive_baseline(size, args.seed, args.baseline_deadline)
                log(f"naive baseline done ({baselines[size].get('wallSeconds', '?')} s wall)")
    document = {"machine": base.machine(), "sizes": results,
                "naiveBaseline": {str(k): v for k, v in baselines.items()}, "missed": missed}
    (args.out / "fleet-scale.json").write_text(json.dumps(document, indent=2))
    plot(results, args.out / "fleet-scale.png")
    print(table(results), file=out)
    for size, figures in baselines.items():
        print(f"\nnaive baseline at {size:,} devices: {json.dumps(_baseline_summary(figures))}", file=out)
    if missed:
        print("\nMISSED: " + "; ".join(missed), file=out)
        return 1
    print("\nall targets met", file=out)
    return 0


def _baseline_summary(figures: dict[str, Any]) -> dict[str, Any]:
    keys = ("packagingJobs", "secondsToAllRunning", "runningShare", "throttledShare", "callsPerDevice")
    return {k: figures[k] for k in keys if k in figures} or figures


__all__ = ["ScaleScenario", "main", "run", "targets"]
