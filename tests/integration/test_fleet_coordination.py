"""Fleet coordination against the local world with the real boto3 adapters: devices of
four platforms in thing groups per platform and canary wave, announcements carried by the
simulated broker, nucleus reports from the simulated core devices.

A good release: one packaging job per platform, one group deployment per platform and
wave, every device RUNNING, and far fewer cloud calls than devices. A bad release (its
component fails to install everywhere): the first wave fails, announces it, and the later
waves end HALTED without deploying.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from agent.config import FleetSettings
from agent.coordination import FleetTopics
from agent.ledger import Ledger
from agent.rollout import Phase
from localcloud.clock import VirtualClock
from localcloud.fleet import agent_clients, make_reconciler
from localcloud.fleetnet import CoordinatedFleet
from localcloud.world import World
from tests.support import agentworld as aw

GROUPS = "{project}-{platform}-w{wave}"
FLEET: dict[str, Any] = {
    "enabled": True,
    "waves": [5, 30, 100],
    "waveDelaySeconds": 300,
    "deploymentWatchSeconds": 120,
    "haltFailures": 3,
    "groupNameTemplate": GROUPS,
    "suppressionSeconds": 30,
}
MIX = (("jetson-xavier", 30), ("x86-64-nvidia-sm75", 20), ("arm64-cpu", 20), ("x86-64-cpu", 10))


def release(world: World, clock: VirtualClock, tmp_path: Path, *, bad: bool = False
            ) -> tuple[CoordinatedFleet, list[Any], int, float]:
    """80 devices already running the agent, each in its platform-and-wave thing group,
    then a new model version (``bad``: its component fails to install everywhere). Each
    device's next check falls within its (budget) interval after the release."""
    aw.seed(world, models=0)
    size = sum(n for _, n in MIX)
    devices = []
    index = 0
    for key, count in MIX:
        platform = aw.PLATFORMS[key]
        for _ in range(count):
            thing = f"dev-{index:03d}"
            index += 1
            config = aw.config(thing, tmp_path / thing, fleet={**FLEET, "size": size})
            group = config.fleet.group_name(aw.PROJECT, platform.key, config.fleet.wave_of(thing))
            assert group is not None
            aw.add_device(world, thing, groups=(group,), platform=platform)
            devices.append((thing, platform, config))
    clock.advance(300)
    world.tick()
    world.calls.clear()
    version = world.lookoutvision.add_model(aw.PROJECT, "TRAINED")
    if bad:
        for key, _ in MIX:
            world.greengrass.fail_install(f"{aw.PROJECT}.{aw.PLATFORMS[key].key}", times=1000)
    released = clock.now()
    fleet = CoordinatedFleet(world, clock, FleetTopics(FleetSettings().topic_prefix, aw.PROJECT))
    rng = random.Random(5)
    shared = agent_clients(world, devices[0][2])
    members = []
    for thing, platform, config in devices:
        store = Ledger(Path(config.state_dir) / "agent.sqlite")

        def reconciler(board: Any, nucleus: Any, config: Any = config, platform: Any = platform,
                       store: Ledger = store) -> Any:
            return make_reconciler(world, config, platform, store, clients=shared,
                                   rng=random.Random(rng.random()), fleet_board=board,
                                   local_deployments=nucleus)

        first = released + rng.uniform(0, config.check_interval_seconds)
        members.append(fleet.add(thing, platform.key, reconciler, store, first))
    return fleet, members, version, released


def test_a_release_reaches_eighty_devices_with_one_job_and_one_group_deployment_per_wave(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """One release: 4 packaging jobs, at most 12 group deployments (4 platforms x 3
    waves), every device RUNNING the new component, the fleet's packaging and deployment
    calls a small multiple of the platforms, not of the devices, and every device's
    confirmation once its nucleus reported the deployment."""
    fleet, members, version, released = release(world, clock, tmp_path)

    def running() -> bool:
        return all(any(v == f"{version}.0.0" for _, v in m.running_since) for m in members)

    assert fleet.run_until(running, deadline=released + 6 * 3600)
    took = clock.now() - released
    calls = Counter(c.operation for c in world.calls.calls)
    l4v = sum(1 for c in world.calls.calls if c.service == "lookoutvision")
    print(f"\ncoordinated fleet: 80 devices RUNNING after {took:.0f} s; calls {dict(calls)}; "
          f"announcements {dict(fleet.network.by_kind)}")
    assert len(world.lookoutvision.jobs()) == 4
    assert calls["CreateDeployment"] <= 12
    # Packaging calls per platform, not per device; ListModels is each device's own idle
    # check (its interval, 900 s here, is shorter than this rollout).
    assert calls["StartModelPackagingJob"] <= 8 and calls["DescribeModelPackagingJob"] <= 16
    assert l4v - calls["ListModels"] <= 24 and calls["ListModels"] <= len(members) + 4
    # Every device confirms once with the cloud after its nucleus reported the deployment.
    assert fleet.run_until(lambda: all(m.store.facts().deployed_version == version for m in members),
                           deadline=clock.now() + 3 * 3600)


def test_a_bad_version_is_halted_after_each_platforms_first_wave(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """The new component fails to install on every device: on each platform the devices
    of its first populated wave fail and announce it, every device of a later wave ends
    HALTED, and no later wave's group ever gets a deployment of the bad version."""
    fleet, members, _version, released = release(world, clock, tmp_path, bad=True)
    settings = members[0].reconciler.settings.fleet
    first_wave = {
        key: min(settings.wave_of(m.thing) for m in members if m.platform_key == key)
        for key in {m.platform_key for m in members}
    }

    def phase(member: Any) -> Phase | None:
        newest = member.store.rollouts(limit=1)
        return newest[0].phase if newest else None

    canaries = [m for m in members if settings.wave_of(m.thing) == first_wave[m.platform_key]]
    later = [m for m in members if settings.wave_of(m.thing) > first_wave[m.platform_key]]
    assert later
    assert fleet.run_until(lambda: all(phase(m) is Phase.HALTED for m in later),
                           deadline=released + 6 * 3600)
    assert all(phase(m) is Phase.FAILED for m in canaries)
    gg = world.client("greengrassv2")
    account = world.client("iot").describe_thing(thingName=members[0].thing)["thingArn"].split(":")[4]
    for member in later:
        group = settings.group_name(aw.PROJECT, member.platform_key, settings.wave_of(member.thing))
        arn = f"arn:aws:iot:us-east-1:{account}:thinggroup/{group}"
        assert gg.list_deployments(targetArn=arn, historyFilter="ALL")["deployments"] == []
