"""A simulated fleet of real agents sharing one packaging job per platform."""

from __future__ import annotations

from pathlib import Path

from localcloud.clock import VirtualClock
from localcloud.fleet import simulate_release
from localcloud.world import World
from tests.support import agentworld as aw


def test_two_hundred_agents_on_four_platforms_share_four_jobs(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """200 agents (4 platforms) and one model release: 4 packaging jobs, no duplicate
    deployment, every device RUNNING the new version; the figures are printed."""
    aw.seed(world, models=0)
    mix = [
        (aw.PLATFORMS["jetson-xavier"], 80),
        (aw.PLATFORMS["x86-64-nvidia-sm75"], 60),
        (aw.PLATFORMS["arm64-cpu"], 40),
        (aw.PLATFORMS["x86-64-cpu"], 20),
    ]
    figures = simulate_release(
        world, clock, tmp_path, mix, config_for=lambda thing: aw.config(thing, tmp_path / thing)
    )
    print(
        f"\nfleet: {figures.devices} devices, {figures.packaging_jobs} jobs, "
        f"{figures.deployments_created} deployments, {figures.duplicate_deployments} duplicates, "
        f"100% RUNNING after {figures.seconds_to_all_running} simulated s; calls {figures.calls}"
    )
    assert figures.running == figures.devices == 200
    assert figures.packaging_jobs == 4
    assert figures.duplicate_deployments == 0
    assert figures.deployments_created == 200


def test_two_hundred_sagemaker_agents_share_one_neo_job_per_platform(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """The same fleet with the SageMaker backend under a SageMaker request quota of
    2 requests/s: one Neo compilation job and one component per platform, one deployment
    per device, every device RUNNING the new version; the figures are printed."""
    role = aw.seed_sagemaker(world, versions=0)
    world.faults.set_quota("sagemaker", 2.0)
    mix = [
        (aw.PLATFORMS["jetson-xavier"], 80),
        (aw.PLATFORMS["x86-64-nvidia-sm75"], 60),
        (aw.PLATFORMS["arm64-cpu"], 40),
        (aw.PLATFORMS["x86-64-cpu"], 20),
    ]
    figures = simulate_release(
        world,
        clock,
        tmp_path,
        mix,
        config_for=lambda thing: aw.config(
            thing, tmp_path / thing, **aw.sagemaker_settings(role)
        ),
    )
    print(
        f"\nfleet (sagemaker): {figures.devices} devices, {figures.packaging_jobs} Neo jobs, "
        f"{figures.deployments_created} deployments, {figures.duplicate_deployments} duplicates, "
        f"100% RUNNING after {figures.seconds_to_all_running} simulated s; "
        f"{figures.packaging_calls_per_device_mean:.1f} SageMaker calls per device; "
        f"{figures.throttled_calls} throttled; calls {figures.calls}"
    )
    assert figures.packaging_backend == "sagemaker"
    assert figures.running == figures.devices == 200
    assert figures.packaging_jobs == 4
    # One job per platform: the names differ only in the platform key (attempt 1, v1).
    names = [j.name for j in world.sagemaker.jobs()]
    assert len(set(names)) == 4 and all(n.endswith("-v1-1") for n in names)
    made = figures.calls.get("greengrass:CreateComponentVersion", 0)
    assert made >= 4
    assert figures.duplicate_deployments == 0
    assert figures.deployments_created == 200
