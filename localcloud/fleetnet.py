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
