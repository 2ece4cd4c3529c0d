"""Many agents in one process on the world's virtual clock (simulations, benchmarks).

Each simulated device runs the real agent code (Reconciler + boto3 adapters + its own
SQLite ledger), with its clients answered in-process by the World. The loop is a
discrete-event simulation: the device whose next step is due first runs next, and the
clock jumps to that moment.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.aws.greengrass import GreengrassDeployments
from agent.aws.lookoutvision import LookoutVisionPackaging
from agent.aws.session import AwsClients
from agent.config import AgentConfig
from agent.ledger import Ledger
from agent.platform import DetectedPlatform
from agent.reconciler import Reconciler, RolloutSettings
from localcloud.clock import VirtualClock
from localcloud.transport import TEST_CREDENTIALS, attach
from localcloud.world import INTERNAL_ENDPOINT, World


@dataclass
class SimDevice:
    thing_name: str
    platform: DetectedPlatform
    reconciler: Reconciler
    ledger: Ledger
    #: (time, model_version) when the device first ran each version
    running_since: dict[int, float] = field(default_factory=dict)


def agent_clients(world: World, config: AgentConfig) -> AwsClients:
    """AwsClients whose every client is answered in-process by ``world``."""
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
    endpoints: dict[str, str | None] = {s: INTERNAL_ENDPOINT for s in ("lookoutvision", "greengrassv2", "iot")}
    return AwsClients(
        region=world.region,
        endpoints=endpoints,
        max_attempts=config.aws_max_attempts,
        retry_mode=config.aws_retry_mode,
        customize=lambda client: attach(client, world),
    )


def make_reconciler(
    world: World,
    config: AgentConfig,
    platform: DetectedPlatform,
    ledger: Ledger,
    *,
    clients: AwsClients | None = None,
    rng: random.Random | None = None,
) -> Reconciler:
    """The agent's reconciler for ``config``, wired to ``world`` in-process."""
    clients = clients or agent_clients(world, config)
    topics = config.reporting.topics.render(config.thing_name)
    return Reconciler(
        settings=RolloutSettings(
            thing_name=config.thing_name,
            project=config.project_name,
            bucket=config.s3_bucket,
            prefix=config.s3_prefix,
            naming=config.naming,
            status_topic=topics["status"],
            check_interval=config.check_interval,
            poll_backoff=config.poll_backoff,
            job_poll_backoff=config.job_poll_backoff,
            failure_retry_seconds=config.failure_retry_seconds,
            pinned_version=config.pinned_version,
            target_arn=config.deployment_target_arn,
            failure_handling_policy=config.failure_handling_policy,
        ),
        platform=platform,
        packaging=LookoutVisionPackaging(clients),
        deployments=GreengrassDeployments(clients),
        ledger=ledger,
        clock=world.clock,
        rng=rng,
    )


class Fleet:
    """A set of simulated devices stepping on one virtual clock."""

    def __init__(self, world: World, clock: VirtualClock) -> None:
        self.world = world
        self.clock = clock
        self.devices: list[SimDevice] = []
        self._queue: list[tuple[float, int]] = []

    def add(self, device: SimDevice, first_step_at: float) -> None:
        self.devices.append(device)
        heapq.heappush(self._queue, (first_step_at, len(self.devices) - 1))

    def run_until(
        self,
        done: Callable[[], bool],
        *,
        deadline: float,
        on_step: Callable[[SimDevice, float], Any] | None = None,
        min_delay: float = 0.05,
    ) -> bool:
        """Step devices in time order until ``done()`` or the clock passes ``deadline``."""
        while self._queue:
            due, index = heapq.heappop(self._queue)
            if due > deadline:
                heapq.heappush(self._queue, (due, index))
                self.clock.set(max(self.clock.now(), deadline))
                return done()
            if due > self.clock.now():
                self.clock.set(due)
            device = self.devices[index]
            delay = device.reconciler.step()
            if on_step is not None:
                on_step(device, self.clock.now())
            heapq.heappush(self._queue, (self.clock.now() + max(delay, min_delay), index))
            if done():
                return True
        return done()


def new_ledger(directory: Path, thing_name: str) -> Ledger:
    return Ledger(directory / f"{thing_name}.sqlite")
