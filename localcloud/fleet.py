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

from agent.aws.backends import Backend, bind, sagemaker_backend
from agent.aws.greengrass import GreengrassDeployments
from agent.aws.lookoutvision import LookoutVisionPackaging
from agent.aws.session import AwsClients
from agent.config import AgentConfig
from agent.coordination import FleetBoard
from agent.decide import lookout_for_vision_request
from agent.ledger import Ledger
from agent.platform import DetectedPlatform
from agent.platform.neo import from_detected
from agent.ports import LocalDeployments
from agent.reconciler import Reconciler, settings_from_config
from localcloud.clock import VirtualClock
from localcloud.memorystore import MemoryStore
from localcloud.transport import TEST_CREDENTIALS, attach
from localcloud.world import INTERNAL_ENDPOINT, World


@dataclass
class SimDevice:
    thing_name: str
    platform: DetectedPlatform
    reconciler: Reconciler
    #: the agent's SQLite ledger, or a MemoryStore in fleets too large for SQLite each
    ledger: Ledger | MemoryStore
    #: (time, model_version) when the device first ran each version
    running_since: dict[int, float] = field(default_factory=dict)


def agent_clients(
    world: World, config: AgentConfig, *, credentials: tuple[str, str] | None = None
) -> AwsClients:
    """AwsClients whose every client is answered in-process by ``world``.

    They sign for the agent's configured Region (a wrong one finds nothing, as on AWS)
    with ``credentials`` (default: the world's test keys).
    """
    endpoints: dict[str, str | None] = {
        s: INTERNAL_ENDPOINT for s in ("lookoutvision", "sagemaker", "greengrassv2", "iot")
    }
    return AwsClients(
        region=config.region,
        endpoints=endpoints,
        max_attempts=config.aws_max_attempts,
        retry_mode=config.aws_retry_mode,
        customize=lambda client: attach(client, world),
        credentials=credentials
        or (TEST_CREDENTIALS["aws_access_key_id"], TEST_CREDENTIALS["aws_secret_access_key"]),
    )


def make_reconciler(
    world: World,
    config: AgentConfig,
    platform: DetectedPlatform,
    ledger: Ledger | MemoryStore,
    *,
    clients: AwsClients | None = None,
    credentials: tuple[str, str] | None = None,
    rng: random.Random | None = None,
    fleet_board: FleetBoard | None = None,
    local_deployments: LocalDeployments | None = None,
) -> Reconciler:
    """The agent's reconciler for ``config`` (its packaging backend, ``platform``'s
    target), wired to ``world`` in-process; ``fleet_board`` and ``local_deployments``
    are what a fleet-coordinated device hears (see ``localcloud.fleetnet``)."""
    clients = clients or agent_clients(world, config, credentials=credentials)
    backend = Backend(platform, LookoutVisionPackaging(clients), lookout_for_vision_request)
    if config.packaging.backend == "sagemaker":
        backend = sagemaker_backend(config, clients, from_detected(platform))
    reconciler = Reconciler(
        settings=settings_from_config(config),
        platform=backend.platform,
        packaging=backend.packaging,
        deployments=GreengrassDeployments(clients),
        ledger=ledger,
        clock=world.clock,
        rng=rng,
        derive=backend.derive,
        fleet_board=fleet_board,
        local_deployments=local_deployments,
    )
    bind(backend.packaging, reconciler.request_for)
    return reconciler


class Fleet:
    """A set of simulated devices stepping on one virtual clock."""

    def __init__(self, world: World, clock: VirtualClock) -> None:
        self.world = world
        self.clock = clock
        self.devices: list[SimDevice] = []
        self._queue: list[tuple[float, int]] = []
        #: each device's current due-time (queue entries with another time are stale)
        self._due: list[float] = []

    def add(self, device: SimDevice, first_step_at: float) -> None:
        self.devices.append(device)
        self._due.append(first_step_at)
        heapq.heappush(self._queue, (first_step_at, len(self.devices) - 1))

    def wake(self, index: int) -> None:
        """Step device ``index`` now rather than at its due-time (news arrived for it, as
        the daemon's main loop is woken by an announcement or a nucleus event)."""
        now = self.clock.now()
        if self._due[index] > now:
            self._due[index] = now
            heapq.heappush(self._queue, (now, index))

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
            if due != self._due[index]:
                continue  # superseded by a wake
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
            next_due = self.clock.now() + max(delay, min_delay)
            self._due[index] = next_due
            heapq.heappush(self._queue, (next_due, index))
            if done():
                return True
        return done()


def new_ledger(directory: Path, thing_name: str) -> Ledger:
    return Ledger(directory / f"{thing_name}.sqlite")


@dataclass
class ReleaseFigures:
    """What a simulated fleet release produced."""

    devices: int
    running: int
    packaging_jobs: int
    deployments_created: int
    duplicate_deployments: int
    calls: dict[str, int]
    throttled_calls: int
    seconds_to_all_running: float | None
    lookoutvision_calls_per_device_mean: float
    #: the configured backend and its service's calls per device (either backend)
    packaging_backend: str = "lookoutvision"
    packaging_calls_per_device_mean: float = 0.0


def simulate_release(
    world: World,
    clock: VirtualClock,
    directory: Path,
    mix: list[tuple[DetectedPlatform, int]],
    *,
    config_for: Callable[[str], AgentConfig],
    project: str = "widgets",
    deadline_seconds: float = 3 * 3600,
    seed: int = 1,
) -> ReleaseFigures:
    """Add devices per ``mix``, release one model version, run until all run it.

    The world must already hold the project, bucket and agent component (see
    ``tests/support/agentworld.seed``); a new TRAINED model version is the release. With
    the SageMaker backend (``config_for``'s ``packaging.backend``) the world holds the
    model package group, Neo role and bucket (``seed_sagemaker``) and the release is a
    new Approved package version.
    Devices share boto3 clients (identical and stateless); each has its own ledger,
    identity and random source.
    """
    from localcloud.transport import world_client

    rng = random.Random(seed)
    fleet = Fleet(world, clock)
    shared: AwsClients | None = None
    things: list[str] = []
    platforms = [p for p, n in mix for _ in range(n)]
    gg = world_client(world, "greengrassv2", internal=True)
    iot = world.client("iot")
    for index, platform in enumerate(platforms):
        thing = f"dev-{index:04d}"
        things.append(thing)
        arm = platform.arch == "ARM64" or platform.target_device is not None
        world.greengrass.add_core_device(thing, architecture="aarch64" if arm else "amd64")
        arn = iot.describe_thing(thingName=thing)["thingArn"]
        gg.create_deployment(
            targetArn=arn,
            deploymentName=f"agent-{thing}",
            components={"l4v.edge.Agent": {"componentVersion": "0.1.0"}},
        )
    clock.advance(300)
    world.tick()
    release_at = clock.now()
    backend = config_for(things[0]).packaging.backend
    if backend == "sagemaker":
        version = world.sagemaker.add_model_package(project, approval="Approved")
        service = "sagemaker"
    else:
        version = world.lookoutvision.add_model(project, "TRAINED")
        service = "lookoutvision"
    for thing, platform in zip(things, platforms, strict=True):
        cfg = config_for(thing)
        shared = shared or agent_clients(world, cfg)
        ledger = new_ledger(directory, thing)
        reconciler = make_reconciler(
            world, cfg, platform, ledger, clients=shared, rng=random.Random(rng.random())
        )
        # A running fleet: each device's next check falls anywhere in one interval.
        first = release_at + rng.uniform(0, cfg.check_interval_seconds)
        fleet.add(SimDevice(thing, platform, reconciler, ledger), first)
    world.calls.clear()
    # A device's ledger changes only when it steps: count each device once, when it first
    # runs the release, instead of asking every ledger after every step.
    running: set[str] = set()

    def count_running(device: SimDevice, _now: float) -> None:
        if device.thing_name not in running and device.ledger.facts().deployed_version == version:
            running.add(device.thing_name)

    def all_running() -> bool:
        return len(running) == len(fleet.devices)

    fleet.run_until(all_running, deadline=release_at + deadline_seconds, on_step=count_running)
    done_at = clock.now() if all_running() else None
    creates = [c for c in world.calls.calls if c.operation == "CreateDeployment" and c.status < 300]
    deployments = world.client("greengrassv2")
    created_per_target: dict[str, int] = {}
    for thing in things:
        arn = iot.describe_thing(thingName=thing)["thingArn"]
        listed = deployments.list_deployments(targetArn=arn, historyFilter="ALL")["deployments"]
        created_per_target[thing] = sum(1 for _ in listed) - 1  # minus the agent's own
    counts = dict(world.calls.counts())
    l4v_per_device = sum(1 for c in world.calls.calls if c.service == "lookoutvision") / max(
        1, len(things)
    )
    packaging_per_device = sum(1 for c in world.calls.calls if c.service == service) / max(
        1, len(things)
    )
    jobs = len(world.sagemaker.jobs() if backend == "sagemaker" else world.lookoutvision.jobs())
    return ReleaseFigures(
        devices=len(things),
        running=sum(1 for d in fleet.devices if d.ledger.facts().deployed_version == version),
        packaging_jobs=jobs,
        deployments_created=len(creates),
        duplicate_deployments=sum(max(0, n - 1) for n in created_per_target.values()),
        calls=counts,
        throttled_calls=sum(1 for c in world.calls.calls if c.throttled),
        seconds_to_all_running=None if done_at is None else done_at - release_at,
        lookoutvision_calls_per_device_mean=l4v_per_device,
        packaging_backend=backend,
        packaging_calls_per_device_mean=packaging_per_device,
    )
