"""What connects simulated devices besides the cloud: the fleet's MQTT announcements and
each device's nucleus reporting applied deployments.

:class:`FleetNetwork` plays the MQTT broker for a simulated fleet (``localcloud.fleet``):
after each device step it takes the messages the device queued (what its publisher would
send), keeps the retained ones, and delivers announcements to every subscribed device at
once. Devices of one platform subscribe to the same topics and, with delivery at the
instant of publishing, hear exactly the same messages at the same time, so they share one
:class:`~agent.coordination.FleetBoard` (the same code a device runs, one copy per
platform instead of 25,000 identical ones). Every message is parsed and checked against
its topic as a device's board does it. Devices whose next decision an announcement can
change are woken (``released`` wakes all, ``job`` started/failed and ``ready`` wake the
platform); the rest read the news at their next step.

:class:`SimNucleus` is one device's ``LocalDeployments`` port, fed by the Greengrass
emulator's ``on_post_update`` hook (the post-update event a real nucleus sends).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.coordination import FleetBoard, FleetTopics, HintRejected, JobNews, Ready, Released
from agent.ledger import Ledger
from localcloud.memorystore import MemoryStore


@dataclass
class SimNucleus:
    """The deployments a simulated device's nucleus reported applied (post-update)."""

    applied: set[str] = field(default_factory=set)

    def completed(self) -> frozenset[str]:
        return frozenset(self.applied)

    def available(self) -> bool:
        return True


def drain(store: Ledger | MemoryStore) -> list[tuple[str, str, bytes]]:
    """(kind, topic, payload) of every message ``store`` queued, removed from it (the
    simulation is the publisher and the broker acknowledges at once)."""
    if isinstance(store, MemoryStore):
        taken = [(m.kind, m.topic, m.render(sequence, store.epoch)) for sequence, m in store.outbox]
        store.outbox.clear()
        return taken
    taken = []
    while True:
        batch = store.pending(limit=100)
        if not batch:
            return taken
        for message in batch:
            taken.append((message.kind, message.topic, message.payload))
            store.ack(message.sequence)


class FleetNetwork:
    """The broker of a simulated fleet: boards per platform, retained messages, counts."""

    def __init__(self, topics: FleetTopics, now: Callable[[], float]) -> None:
        self.topics = topics
        self._now = now
        self.boards: dict[str, FleetBoard] = {}
        self.members: dict[str, list[int]] = {}
        self.retained: dict[str, bytes] = {}
        #: messages published per device index, and deliveries to devices (per message,
        #: every subscribed device counts once)
        self.published: Counter[int] = Counter()
        self.delivered = 0
        self.rejected = 0
        self.by_kind: Counter[str] = Counter()

    def board(self, platform_key: str, index: int) -> FleetBoard:
        """The board device ``index`` of ``platform_key`` reads (shared by its platform)."""
        board = self.boards.get(platform_key)
        if board is None:
            board = self.boards[platform_key] = FleetBoard(self.topics, platform_key, self._now)
        self.members.setdefault(platform_key, []).append(index)
        return board

    def after_step(self, index: int, store: Ledger | MemoryStore) -> list[int]:
        """Publish what device ``index`` queued; the devices to wake."""
        wake: list[int] = []
        for kind, topic, payload in drain(store):
            self.published[index] += 1
            if kind == "announcement":
                wake.extend(self.publish(topic, payload))
        return wake

    def publish(self, topic: str, payload: bytes) -> list[int]:
        """Deliver one announcement; the devices whose decision it may change."""
        self.retained[topic] = payload
        try:
            message: Any = self.topics.parse(topic, payload)
        except HintRejected:
            self.rejected += 1
            return []
        self.by_kind[message.kind] += 1
        if isinstance(message, Released):
            platforms = list(self.boards)
        else:
            platforms = [message.platform] if message.platform in self.boards else []
        wake: list[int] = []
        for key in platforms:
            self.boards[key].add(message)
            members = self.members[key]
            self.delivered += len(members)
            if isinstance(message, Released | Ready) or (
                isinstance(message, JobNews) and message.status in ("STARTED", "FAILED")
            ):
                wake.extend(members)
        return wake


@dataclass
class Member:
    """One simulated device of a coordinated fleet."""

    index: int
    thing: str
    platform_key: str
    reconciler: Any
    store: Ledger | MemoryStore
    nucleus: SimNucleus
    #: when the world first ran each (component, version) on the device
    running_since: dict[tuple[str, str], float] = field(default_factory=dict)


class CoordinatedFleet:
    """Real agents with fleet coordination on, stepping on the world's clock: the
    simulated broker (:class:`FleetNetwork`) carries their announcements and each one's
    nucleus reports applied deployments (``GreengrassEmulator.on_post_update``)."""

    def __init__(self, world: Any, clock: Any, topics: FleetTopics) -> None:
        from localcloud.fleet import Fleet

        self.world = world
        self.clock = clock
        self.fleet = Fleet(world, clock)
        self.network = FleetNetwork(topics, clock.now)
        self.members: list[Member] = []
        self._by_thing: dict[str, Member] = {}
        #: (thing, component, version) -> first time it ran, for whoever watches
        self.on_running: Callable[[Member, str, str, float], None] | None = None
        world.greengrass.on_post_update = self._post_update

    def add(
        self,
        thing: str,
        platform_key: str,
        build: Callable[[Any, SimNucleus], Any],
        store: Ledger | MemoryStore,
        first_step_at: float,
    ) -> Member:
        """Add a device; ``build(board, nucleus)`` makes its reconciler."""
        from localcloud.fleet import SimDevice

        index = len(self.members)
        nucleus = SimNucleus()
        board = self.network.board(platform_key, index)
        reconciler = build(board, nucleus)
        member = Member(index, thing, platform_key, reconciler, store, nucleus)
        self.members.append(member)
        self._by_thing[thing] = member
        self.fleet.add(SimDevice(thing, reconciler.platform, reconciler, store), first_step_at)
        return member

    def run_until(self, done: Callable[[], bool], *, deadline: float,
                  on_step: Callable[[Member, float], Any] | None = None) -> bool:
        """Step devices in time order, publishing what each queued, until ``done()``."""
        members = self.members

        def stepped(device: Any, now: float) -> None:
            member = self._by_thing[device.thing_name]
            for index in self.network.after_step(member.index, member.store):
                if members[index] is not member:
                    self.fleet.wake(index)
            if on_step is not None:
                on_step(member, now)

        # The world moves only when asked: tick it whenever a device's install is due,
        # so nucleus reports arrive on time even while no device calls the cloud.
        while True:
            self.world.tick()
            now = self.clock.now()
            if done():
                return True
            if now >= deadline:
                return False
            upcoming = self.world.greengrass.next_due()
            stop = deadline if upcoming <= now else min(deadline, upcoming)
            if self.fleet.run_until(done, deadline=stop, on_step=stepped):
                return True
            if self.clock.now() < stop:
                self.clock.set(stop)

    def _post_update(self, thing: str, deployment_id: str) -> None:
        member = self._by_thing.get(thing)
        if member is None:
            return
        member.nucleus.applied.add(deployment_id)
        device = self.world.greengrass.devices[thing]
        now = self.clock.now()
        for component in device.installed():
            key = (component.name, component.version)
            if component.state in ("RUNNING", "FINISHED") and key not in member.running_since:
                member.running_since[key] = now
                if self.on_running is not None:
                    self.on_running(member, component.name, component.version, now)
        self.fleet.wake(member.index)
