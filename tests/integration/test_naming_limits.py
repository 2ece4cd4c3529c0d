"""Generated names at their limits, packaged and deployed in the local world."""

from __future__ import annotations

from pathlib import Path

from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.integration.test_rollout import components, drive
from tests.support import agentworld as aw


def test_longest_project_name_and_unicode_tags_roll_out(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """A project name of 255 characters (the API's maximum) and tags such as '½' are
    packaged and deployed: the job name, component name and ComponentDescription are
    fitted to their limits and the emulator, as strict as the service, accepts them."""
    project = "w" + "-x" * 127
    assert len(project) == 255
    aw.seed(world)
    world.lookoutvision.create_project(project)
    world.lookoutvision.add_model(project, "TRAINED")
    device = aw.add_device(world, "dev-1")
    clock.advance(60)
    world.tick()
    reconciler = aw.reconciler(
        world, "dev-1", tmp_path, projectName=project, componentTags={"½": "東京 1", "team": ""}
    )
    assert drive(reconciler, clock) == "SUCCEEDED"
    [rollout] = reconciler.ledger.rollouts(limit=5)
    assert rollout.job_name is not None and len(rollout.job_name) <= 64
    [name] = [n for n in components(device) if n.startswith("w-x")]
    assert len(name) <= 128
    assert components(device)[name][0] == "1.0.0"
