"""A simulated fleet that publishes what its devices report, for ``fleet watch``.

The devices are the benchmark's fleet (``localcloud.bench.fleet``): real agent code
(Reconciler, botocore adapters, one ledger per device) on the world's virtual clock,
answered in-process by the World. Every message is made by the agent's own code: status
events by the reconciler, health reports by :class:`~agent.health.HealthReporter`
(periodically and after every state change, as the daemon does) and the platform report
from the detected platform. They queue in each device's ledger outbox and, after each
event of that device, go to ``publish`` in sequence order with the agent's retain flags;
a failed publish leaves them queued for the device's next event (at least once, as the
agent's publisher does).

``pace`` ties virtual time to wall time (60: one real second is a simulated minute) so
a person can watch; without it the fleet runs as fast as it can (tests).
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.clock import JitteredInterval
from agent.health import HealthReporter
from agent.ledger import Ledger, OutgoingMessage
from agent.platform import DetectedPlatform, platform_report
from agent.reconciler import Reconciler
from agent.reporting.events import PlatformReport, utc_iso
from agent.reporting.outbox import CONNECTED_FACT, Outbox
from localcloud.bench.fleet import Scenario, agent_config, build_stage, scaled_mix
from localcloud.clock import VirtualClock
from localcloud.fleet import agent_clients, make_reconciler
from localcloud.stage import PROJECT

#: Called with (topic, payload, retain) for every message a device sends; raises when
#: the broker did not acknowledge it.
Publish = Callable[[str, bytes, bool], None]

_STEP, _HEALTH = 0, 1


@dataclass
class LiveDevice:
    thing: str
    platform: DetectedPlatform
    reconciler: Reconciler
    ledger: Ledger
    health: HealthReporter
    health_every: JitteredInterval
    rng: random.Random
    silent: bool = False
    #: the link state last recorded in the ledger (None: not yet)
    link_up: bool | None = None


class PublishingFleet:
    """``devices`` simulated agents (the benchmark's platform mix) and their releases."""

    def __init__(
        self,
        devices: int,
        publish: Publish,
        *,
        state_dir: Path,
        seed: int = 1,
        packaging_seconds: float = 900.0,
        health_interval: float = 300.0,
        start: float | None = None,
        pace: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        scenario = Scenario(
            mix=scaled_mix(devices), packaging_seconds=packaging_seconds, error_rate=0.0, seed=seed
        )
        clock = VirtualClock(time.time() if start is None else start)
        stage = build_stage(scenario, clock)  # seeds the world and releases v1
        self.world, self.clock, self.version = stage.world, clock, stage.version
        self.publish = publish
        self.pace = pace
        self.stop = stop or threading.Event()
        self.published = 0
        #: Whether the last publish went through (what a device's health says of its link).
        self.connected = True
        rng = random.Random(seed)
        self.devices: list[LiveDevice] = []
        #: Each device's deployed version as its ledger says, and devices per version.
        self._deployed: list[int | None] = [None] * devices
        self._deployed_counts: Counter[str] = Counter({"None": devices})
        self._queue: list[tuple[float, int, int, int]] = []
        self._order = 0
        shared = None
        for thing, platform in scenario.platforms():
            config = agent_config(thing, state_dir)
            config = config.model_copy(update={"reporting": config.reporting.model_copy(
                update={"health_interval_seconds": health_interval})})
            shared = shared or agent_clients(self.world, config)
            ledger = Ledger(":memory:")
            device_rng = random.Random(rng.random())
            reconciler = make_reconciler(
                self.world, config, platform, ledger, clients=shared, rng=device_rng
            )
            topics = config.reporting.topics.render(thing)
            health = HealthReporter(
                ledger, thing_name=thing, topic=topics["health"], clock=clock,
                started_at=clock.now(), state_provider=lambda: "RUNNING",
                lifecycle_provider=self._lifecycle(thing), state_dir=state_dir,
            )
            device = LiveDevice(
                thing, platform, reconciler, ledger, health,
                JitteredInterval(health_interval, config.reporting.health_jitter), device_rng,
            )
            self.devices.append(device)
            self._note_link(device, self.connected)
            # As the daemon starts: platform report and health at once.
            self._send(device, [_platform_message(thing, topics["platform"], platform, clock.now()),
                                health.message()])
            self._drain(device)
            index = len(self.devices) - 1
            self._schedule(clock.now() + rng.uniform(0, config.check_interval_seconds), index, _STEP)
            self._schedule(clock.now() + max(1.0, device.health_every.next(device_rng)), index, _HEALTH)

    # -- control -----------------------------------------------------------------------
    def release(self) -> int:
        """A new TRAINED model version in the project: the fleet's next rollout."""
        self.version = self.world.lookoutvision.add_model(PROJECT, "TRAINED")
        return self.version

    def fail_installs(self, count: int, *, version: int | None = None) -> str:
        """The next ``count`` installs of one platform's model component fail (ROLLED_BACK)."""
        key = self.devices[0].platform.key
        component = f"{PROJECT}.{key}"
        self.world.greengrass.fail_install(
            component, f"{version or self.version}.0.0", times=count,
            message="Install script exited with code 1: model file checksum mismatch",
        )
        return key

    def silence(self, count: int) -> list[str]:
        """The last ``count`` devices lose power: no steps, no messages from now on."""
        chosen = self.devices[len(self.devices) - count:] if count else []
        for device in chosen:
            device.silent = True
        return [d.thing for d in chosen]

    def running(self, version: int | None = None) -> int:
        """How many devices run ``version`` (default: the newest release)."""
        return self._deployed_counts[str(version or self.version)]

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Run for ``seconds`` of simulated time, or until ``until()``; False if stopped."""
        deadline = self.clock.now() + seconds
        real_origin, virtual_origin = time.monotonic(), self.clock.now()
        while self._queue and not self.stop.is_set():
            due, _, index, kind = self._queue[0]
            if due > deadline:
                break
            if self.pace is not None:
                wait = real_origin + (due - virtual_origin) / self.pace - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    return False
            heapq.heappop(self._queue)
            if due > self.clock.now():
                self.clock.set(due)
            device = self.devices[index]
            if device.silent:
                continue
            self._event(device, index, kind)
            if until is not None and until():
                return True
        if not self.stop.is_set() and self.clock.now() < deadline:
            self.clock.set(deadline)
        return not self.stop.is_set()

    # -- internals ---------------------------------------------------------------------
    def _event(self, device: LiveDevice, index: int, kind: int) -> None:
        now = self.clock.now()
        if kind == _STEP:
            delay = device.reconciler.step()
            self._schedule(now + max(delay, 0.05), index, _STEP)
            deployed = device.ledger.facts().deployed_version
            if deployed != self._deployed[index]:
                self._deployed_counts[str(self._deployed[index])] -= 1
                self._deployed_counts[str(deployed)] += 1
                self._deployed[index] = deployed
            if any(m.kind == "status" for m in device.ledger.pending(20)):
                # The daemon reports health right after every state change.
                self._send(device, [device.health.message()])
        else:
            self._send(device, [device.health.message()])
            self._schedule(now + max(1.0, device.health_every.next(device.rng)), index, _HEALTH)
        self._drain(device)

    def _schedule(self, due: float, index: int, kind: int) -> None:
        self._order += 1
        heapq.heappush(self._queue, (due, self._order, index, kind))

    def _send(self, device: LiveDevice, messages: list[OutgoingMessage]) -> None:
        Outbox(device.ledger, self.clock, max_messages=1000).send(messages)

    def _drain(self, device: LiveDevice) -> None:
        for message in device.ledger.pending(100):
            try:
                self.publish(message.topic, message.payload, message.retain)
            except Exception:
                self._note_link(device, False)
                return  # stays queued; sent again after the device's next event
            self._note_link(device, True)
            device.ledger.ack(message.sequence)
            self.published += 1

    def _note_link(self, device: LiveDevice, connected: bool) -> None:
        """Record the link state in the device's ledger, as its publisher would (health
        reads it from there)."""
        self.connected = connected
        if device.link_up is not connected:
            device.link_up = connected
            device.ledger.put({CONNECTED_FACT: "true" if connected else "false"})

    def _lifecycle(self, thing: str) -> Callable[[str], str | None]:
        def state(component: str) -> str | None:
            info = self.world.greengrass.devices[thing].component(component)
            return None if info is None else info.state

        return state

    def close(self) -> None:
        for device in self.devices:
            device.ledger.close()


def _platform_message(thing: str, topic: str, platform: DetectedPlatform, now: float) -> OutgoingMessage:
    report = platform_report(platform)

    def render(sequence: int, epoch: str) -> bytes:
        return PlatformReport(
            thing_name=thing, sequence=sequence, epoch=epoch, timestamp=utc_iso(now), supported=True,
            platform=report,
        ).to_json()

    return OutgoingMessage("platform", topic, render, retain=True)


def _at_least(fleet: PublishingFleet, count: int) -> Callable[[], bool]:
    """A stop condition: ``count`` devices run the current version."""
    return lambda: fleet.running() >= count


def serve_fleet(
    devices: int,
    workdir: Path,
    *,
    mosquitto: str,
    stop: threading.Event,
    pace: float = 60.0,
    releases: int = 2,
    failing_installs: int = 3,
    silent: int = 2,
    announce: Callable[[dict[str, object]], None],
    note: Callable[[str], None],
) -> None:
    """Serve a fleet on a new mutual-TLS Mosquitto until ``stop``: model releases one
    after another, with ``failing_installs`` failed installs in the last one and
    ``silent`` devices powered off during it. ``announce`` gets the broker's address and
    the operator's credentials once the broker is up."""
    from agent.reporting.mqtt import DirectMqttConfig, DirectMqttTransport
    from localcloud.bench.fleet import quiet_agent_logs
    from localcloud.mosquitto import HOST, MosquittoBroker, Pki

    pki = Pki(workdir / "pki")
    operator, publisher = pki.client("operator"), pki.client("localcloud-fleet")
    with MosquittoBroker(mosquitto, pki, workdir / "broker") as broker:
        transport = DirectMqttTransport(DirectMqttConfig(
            endpoint=HOST, port=broker.port, client_id="localcloud-fleet",
            cert_path=publisher.cert_path, key_path=publisher.key_path, ca_path=pki.ca_path,
        ))
        transport.connect(10.0)
        announce({
            "endpoint": HOST, "port": broker.port, "cert": str(operator.cert_path),
            "key": str(operator.key_path), "ca": str(pki.ca_path), "devices": devices,
        })

        def publish(topic: str, payload: bytes, retain: bool) -> None:
            transport.publish(topic, payload, retain=retain, timeout=10.0)

        try:
            with quiet_agent_logs(workdir / "agents.log"):
                fleet = PublishingFleet(
                    devices, publish, state_dir=workdir, pace=pace, stop=stop
                )
                for number in range(1, releases + 1):
                    if number > 1:
                        fleet.run(600)  # a quiet stretch between releases
                        note(f"released model v{fleet.release()}")
                    else:
                        note(f"released model v{fleet.version}")
                    if number == releases:
                        if failing_installs:
                            key = fleet.fail_installs(failing_installs)
                            note(f"{failing_installs} installs on {key} will fail")
                        if silent:
                            note(f"powered off: {', '.join(fleet.silence(silent))}")
                    live = devices - (silent if number == releases else 0) - (
                        failing_installs if number == releases else 0)
                    fleet.run(3 * 3600, until=_at_least(fleet, live))
                    note(f"v{fleet.version} runs on {fleet.running()} of {devices} devices")
                while fleet.run(3600):
                    pass  # health keeps coming until stopped
                fleet.close()
        finally:
            transport.close()
