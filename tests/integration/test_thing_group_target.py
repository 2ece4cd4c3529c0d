"""A thing-group deploymentTargetArn: safe for one platform, refused for a mixed group."""

from __future__ import annotations

from pathlib import Path

from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.integration.test_rollout import components, drive
from tests.support import agentworld as aw

GROUP = "line-1"


def group_arn(world: World) -> str:
    return world.arn("iot", f"thinggroup/{GROUP}")


def test_one_platform_group_target_rolls_out_to_every_device(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """Two x86_64 CPU devices in one group with the group as target: the first deploys
    v1 to the group, the second finds the group's deployment already holding it and
    adopts it; both run v1 from one deployment."""
    aw.seed(world)
    devices = [aw.add_device(world, t, groups=(GROUP,)) for t in ("dev-1", "dev-2")]
    first, second = (
        aw.reconciler(world, t, tmp_path, deploymentTargetArn=group_arn(world)) for t in ("dev-1", "dev-2")
    )
    assert drive(first, clock) == "SUCCEEDED"
    assert drive(second, clock) == "SUCCEEDED"
    for device in devices:
        assert components(device)["widgets.x86-64-cpu"][0] == "1.0.0"
        assert components(device)["l4v.edge.Agent"][1] == "RUNNING"  # from its thing's deployment
    creates = [c for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300]
    assert len(creates) == 1  # one deployment, to the group


def test_a_group_that_mixes_platforms_is_refused_with_a_clear_error(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    """An x86_64 device deploys its model component to the group; an ARM64 device of the
    same group must not add its own platform's component to that deployment (each
    device would get both): its rollout fails with a ConflictError naming the target,
    the other platform's component and what to do, and it creates no deployment."""
    aw.seed(world)
    aw.add_device(world, "dev-1", groups=(GROUP,))
    aw.add_device(world, "dev-2", groups=(GROUP,))
    x86 = aw.reconciler(world, "dev-1", tmp_path, deploymentTargetArn=group_arn(world))
    arm = aw.reconciler(world, "dev-2", tmp_path, "arm64-cpu", deploymentTargetArn=group_arn(world))
    assert drive(x86, clock) == "SUCCEEDED"
    creates_before = sum(1 for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300)
    assert drive(arm, clock) == "FAILED"
    failed = arm.ledger.rollouts(limit=1)[0]
    assert failed.error_type == "ConflictError"
    message = failed.error_message or ""
    assert message.startswith(f"deploymentTargetArn: thing group {group_arn(world)} already deploys widgets.x86-64-cpu")
    assert "widgets.arm64-cpu" in message and "one platform" in message
    creates_after = sum(1 for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300)
    assert creates_after == creates_before
