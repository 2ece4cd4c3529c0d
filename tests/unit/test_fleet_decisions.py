"""Fleet coordination on in-memory ports: several devices share one fake cloud and hear
each other's announcements through a bus that parses every message as a broker delivers
it (``FleetBoard.receive``).

The scenarios: one packaging job and one poller per platform, followers that make no
call, a late joiner served by retained news, canary waves with a halt and its lift, hints
that are verified before anything is written, and deployments the nucleus reports.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import FleetSettings, load_config
from agent.coordination import FleetBoard, FleetTopics, Ready, Released, stamp
from agent.platform import DetectedPlatform, detect_platform
from agent.ports import DeploymentSpec
from agent.reconciler import Reconciler, settings_from_config
from agent.rollout import Phase, Rollout
from tests.support.fakes import THING_ARN, FakeClock, FakeDeployments, FakePackaging, MemoryStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "platforms"
AGENT = "l4v.edge.Agent"
PREFIX = FleetSettings().topic_prefix


@pytest.fixture(scope="module")
def platform() -> DetectedPlatform:
    return detect_platform(FIXTURES / "x86-64-cpu-server")


@dataclass
class Nucleus:
    """What the nucleus reported applied on one device."""

    applied: set[str] = field(default_factory=set)

    def completed(self) -> frozenset[str]:
        return frozenset(self.applied)

    def available(self) -> bool:
        return True


class Fleet:
    """Devices on one fake cloud and clock; announcements reach every board at once."""

    def __init__(self, platform: DetectedPlatform, count: int, **fleet: Any) -> None:
        self.clock = FakeClock()
        self.packaging = FakePackaging()
        self.gg = FakeDeployments()
        self.platform = platform
        self.fleet_settings: dict[str, Any] = {"enabled": True, "suppressionSeconds": 30, **fleet}
        self.devices: list[Member] = []
        self.due: dict[str, float] = {}
        self.published: list[tuple[str, bytes]] = []
        for index in range(count):
            self.join(f"dev-{index + 1}")

    def join(self, thing: str) -> Member:
        member = Member(self, thing)
        self.devices.append(member)
        # A late joiner subscribes and gets every retained announcement.
        for topic, payload in self._retained().items():
            member.board.receive(topic, payload)
        self.due[thing] = self.clock.now()
        return member

    def _retained(self) -> dict[str, bytes]:
        retained: dict[str, bytes] = {}
        for topic, payload in self.published:
            retained[topic] = payload
        return retained

    def deliver(self, member: Member) -> None:
        for _, message in member.store.outbox[member.delivered:]:
            if message.kind == "announcement":
                payload = message.render(0, "")
                self.published.append((message.topic, payload))
                for other in self.devices:
                    if other.board.receive(message.topic, payload):
                        self.due[other.thing] = min(self.due[other.thing], self.clock.now())
        member.delivered = len(member.store.outbox)

    def run(self, until: Any, limit: float = 6 * 3600) -> None:
        """Step devices in time order until ``until()`` or ``limit`` seconds pass."""
        end = self.clock.now() + limit
        while not until():
            thing, due = min(self.due.items(), key=lambda item: item[1])
            assert due <= end, f"not done within {limit} s"
            if due > self.clock.now():
                self.clock.advance(due - self.clock.now())
            member = next(d for d in self.devices if d.thing == thing)
            delay = member.reconciler.step()
            self.deliver(member)
            self.due[thing] = self.clock.now() + max(delay, 0.05)

    def calls(self, method: str) -> int:
        return self.packaging.script.count(method) + self.gg.script.count(method)


class Member:
    def __init__(self, fleet: Fleet, thing: str) -> None:
        self.thing = thing
        self.config = load_config(overrides={
            "thingName": thing, "region": "us-east-1", "projectName": "widgets",
            "s3Bucket": "l4v-models", "stateDir": "/nonexistent-state", "fleet": fleet.fleet_settings,
        })
        self.store = MemoryStore()
        self.nucleus = Nucleus()
        self.board = FleetBoard(FleetTopics(PREFIX, "widgets"), fleet.platform.key, fleet.clock.now)
        arn = THING_ARN.replace("dev-1", thing)
        fleet.gg.deployments.setdefault(arn, [DeploymentSpec("d-agent", f"agent-{thing}", {AGENT: {"componentVersion": "0.1.0"}})])
        self.reconciler = Reconciler(
            settings=settings_from_config(self.config), platform=fleet.platform, packaging=fleet.packaging,
            deployments=fleet.gg, ledger=self.store, clock=fleet.clock, rng=random.Random(thing),
            fleet_board=self.board, local_deployments=self.nucleus,
        )
        self.delivered = 0

    @property
    def rollout(self) -> Rollout | None:
        found = self.store.rollouts(limit=1)
        return found[0] if found else None

    def phase(self) -> Phase | None:
        return None if self.rollout is None else self.rollout.phase


def phases(fleet: Fleet, *wanted: Phase) -> bool:
    return all(d.phase() in wanted for d in fleet.devices)


def finish_job(fleet: Fleet) -> Rollout:
    """The platform's one job SUCCEEDED and its component exists."""
    (name,) = fleet.packaging.jobs
    fleet.packaging.set_job(name, "SUCCEEDED")
    rollout = next(d.rollout for d in fleet.devices if d.rollout is not None)
    fleet.gg.components.add((rollout.component_name or "", rollout.component_version or ""))
    return rollout


def apply_everywhere(fleet: Fleet, state: str = "RUNNING") -> None:
    """Greengrass applied every created deployment; nuclei report it."""
    for specs in fleet.gg.deployments.values():
        for spec in specs:
            if spec.deployment_id == "d-agent":
                continue
            version = next(iter(v["componentVersion"] for k, v in spec.components.items() if k != AGENT))
            fleet.gg.set_progress(spec.deployment_id, "SUCCEEDED", deployment="COMPLETED", installed=version, state=state)
            for device in fleet.devices:
                device.nucleus.applied.add(spec.deployment_id)


def test_one_device_starts_and_polls_the_job_and_the_others_make_no_packaging_call(platform: DetectedPlatform) -> None:
    """Ten devices of one platform find a release: one StartPackaging, one job poller; the
    followers move to PACKAGING on the announcement and to deploying on 'ready'."""
    fleet = Fleet(platform, 10)
    fleet.run(lambda: phases(fleet, Phase.PACKAGING))
    assert fleet.packaging.script.count("start_packaging") == 1
    assert len(fleet.packaging.jobs) == 1
    fleet.clock.advance(900)
    finish_job(fleet)
    fleet.run(lambda: phases(fleet, Phase.DEPLOYING, Phase.SUCCEEDED), limit=3600)
    assert fleet.packaging.script.count("packaging_status") <= 3
    # Only the poller watched Greengrass for the component while the job ran.
    assert fleet.gg.script.count("component_version_exists") <= 30
    apply_everywhere(fleet)
    fleet.run(lambda: phases(fleet, Phase.SUCCEEDED), limit=3600)
    assert all(d.store.facts().deployed_version == 1 for d in fleet.devices)


def test_a_late_joiner_follows_the_retained_news_without_a_packaging_call(platform: DetectedPlatform) -> None:
    """A device that starts after the job succeeded learns 'released' and 'ready' from the
    retained announcements and deploys without asking Lookout for Vision anything."""
    fleet = Fleet(platform, 3)
    fleet.run(lambda: phases(fleet, Phase.PACKAGING))
    finish_job(fleet)
    fleet.run(lambda: phases(fleet, Phase.DEPLOYING), limit=3600)
    before = fleet.packaging.script.count("latest_version") + fleet.packaging.script.count("start_packaging")
    late = fleet.join("dev-late")
    fleet.run(lambda: late.phase() is Phase.DEPLOYING, limit=3600)
    after = fleet.packaging.script.count("latest_version") + fleet.packaging.script.count("start_packaging")
    assert after == before


def test_an_announced_component_that_does_not_exist_is_never_deployed(platform: DetectedPlatform) -> None:
    """A lying device announces 'released' and 'ready' for a component that is not there:
    a device verifies with DescribeComponent before CreateDeployment and creates nothing."""
    fleet = Fleet(platform, 1)
    device = fleet.devices[0]
    topics = FleetTopics(PREFIX, "widgets")
    liar = "dev-liar"
    for message in (
        Released(thing_name=liar, sent_at=stamp(0), model_version=7),
        Ready(thing_name=liar, sent_at=stamp(0), model_version=7, platform=platform.key,
              component_name=f"widgets.{platform.key}", component_version="7.0.0"),
    ):
        assert device.board.receive(topics.topic_of(message), message.to_json())
    fleet.packaging.versions[7] = "TRAINED"
    fleet.run(lambda: fleet.gg.script.count("component_version_exists") >= 2, limit=3600)
    assert fleet.gg.script.count("create_deployment") == 0


def test_a_bad_version_halts_later_waves_and_a_deploy_version_command_lifts_the_halt(platform: DetectedPlatform) -> None:
    """Canary waves [30, 100] with haltFailures 2: the first wave's deployments fail and
    are announced; devices of the second wave end HALTED without deploying; a
    deploy-version command on one of them deploys it anyway."""
    fleet = Fleet(platform, 12, waves=[30, 100], waveDelaySeconds=900, haltFailures=2,
                  deploymentWatchSeconds=60)
    first = [d for d in fleet.devices if d.config.fleet.wave_of(d.thing) == 0]
    later = [d for d in fleet.devices if d.config.fleet.wave_of(d.thing) == 1]
    assert len(first) >= 2 and later
    fleet.run(lambda: phases(fleet, Phase.PACKAGING))
    finish_job(fleet)

    def first_wave_failed() -> bool:
        for specs in fleet.gg.deployments.values():
            for spec in specs[1:]:
                fleet.gg.set_progress(spec.deployment_id, "FAILED", deployment="ACTIVE", reason="install failed")
        return all(d.phase() is Phase.FAILED for d in first)

    fleet.run(first_wave_failed, limit=3600)
    fleet.run(lambda: all(d.phase() is Phase.HALTED for d in later), limit=3600)
    created = {t for t, specs in fleet.gg.deployments.items() if len(specs) > 1}
    assert created == {THING_ARN.replace("dev-1", d.thing) for d in first}
    assert "HALTED" in later[0].store.events()
    lifted = later[0]
    lifted.reconciler.request_check(1)
    fleet.due[lifted.thing] = fleet.clock.now()
    fleet.run(lambda: lifted.phase() is Phase.DEPLOYING, limit=3600)


def test_the_nucleus_report_replaces_polling_and_one_confirmation_follows(platform: DetectedPlatform) -> None:
    """With a nucleus that reports applied deployments, a deploying device makes no
    progress call until the report, then one confirmation (ListInstalledComponents)
    within the fleet's spread."""
    fleet = Fleet(platform, 1, size=30, deploymentWatchSeconds=3600)
    fleet.run(lambda: phases(fleet, Phase.PACKAGING))
    finish_job(fleet)
    fleet.run(lambda: phases(fleet, Phase.DEPLOYING), limit=3600)
    device = fleet.devices[0]
    fleet.clock.advance(1800)
    assert device.reconciler.step() > 1000
    assert fleet.gg.script.count("progress") == 0
    apply_everywhere(fleet)
    fleet.due[device.thing] = fleet.clock.now()
    fleet.run(lambda: phases(fleet, Phase.SUCCEEDED), limit=3600)
    assert fleet.gg.script.count("progress") == 0
    assert fleet.gg.script.count("installed_component") == 1


def test_thing_group_waves_create_one_deployment_per_wave(platform: DetectedPlatform) -> None:
    """With groupNameTemplate, one device per wave reads and creates the group's
    deployment and announces it; the others adopt it from the announcement."""
    fleet = Fleet(platform, 8, groupNameTemplate="{project}-{platform}-w{wave}", waves=[50, 100],
                  waveDelaySeconds=600)
    fleet.run(lambda: phases(fleet, Phase.PACKAGING))
    finish_job(fleet)
    fleet.run(lambda: phases(fleet, Phase.DEPLOYING), limit=3600)
    groups = {t: specs for t, specs in fleet.gg.deployments.items() if ":thinggroup/" in t}
    waves = {d.config.fleet.wave_of(d.thing) for d in fleet.devices}
    assert len(groups) == len(waves)
    assert fleet.gg.script.count("create_deployment") == len(waves)


def test_when_the_poller_goes_quiet_one_follower_takes_over_polling(platform: DetectedPlatform) -> None:
    """The device that started the job disappears; after pollerFallbackSeconds without
    news a follower polls the job itself, announces it, and the others keep waiting."""
    fleet = Fleet(platform, 6, pollerFallbackSeconds=600)
    fleet.run(lambda: phases(fleet, Phase.PACKAGING))
    poller = next(d for d in fleet.devices if fleet.packaging.script.count("start_packaging") and
                  any(m.kind == "announcement" and m.topic.endswith("/job") for _, m in d.store.outbox))
    fleet.devices.remove(poller)
    del fleet.due[poller.thing]
    polls_before = fleet.packaging.script.count("packaging_status")
    start = fleet.clock.now()
    fleet.run(lambda: fleet.packaging.script.count("packaging_status") > polls_before, limit=3600)
    assert fleet.clock.now() - start >= 600 - 60
    # One follower polled; its news keeps the others from polling for another interval.
    fleet.run(lambda: fleet.clock.now() >= start + 1100, limit=3600)
    assert fleet.packaging.script.count("packaging_status") - polls_before <= 2


def test_a_failed_job_announced_by_its_poller_ends_every_follower_without_a_call(platform: DetectedPlatform) -> None:
    """The job FAILED: its poller announces it and every follower ends its rollout
    PACKAGING_FAILED on the announcement alone (the next attempt follows after
    failureRetrySeconds)."""
    fleet = Fleet(platform, 5)
    fleet.run(lambda: phases(fleet, Phase.PACKAGING))
    (name,) = fleet.packaging.jobs
    fleet.packaging.set_job(name, "FAILED", status_message="compilation failed")
    fleet.run(lambda: phases(fleet, Phase.FAILED), limit=3600)
    assert fleet.packaging.script.count("packaging_status") <= 2
    assert all("PACKAGING_FAILED" in d.store.events() for d in fleet.devices)


def test_release_hints_start_at_most_one_rollout_per_hint_interval(platform: DetectedPlatform) -> None:
    """An idle device hears 'released v5': it starts a rollout without asking Lookout for
    Vision. When that rollout has ended, a 'released v6' heard at once starts nothing;
    the same hint after hintMinIntervalSeconds does."""
    from agent.ports import FactChanges

    fleet = Fleet(platform, 1, hintMinIntervalSeconds=600)
    device = fleet.devices[0]
    device.store.update_facts(FactChanges(deployed_version=1, next_check_at=fleet.clock.now() + 86_400))
    topics = FleetTopics(PREFIX, "widgets")

    def hear(version: int) -> None:
        message = Released(thing_name="dev-noisy", sent_at=stamp(0), model_version=version)
        assert device.board.receive(topics.topic_of(message), message.to_json())

    hear(5)
    device.reconciler.step()
    assert device.rollout is not None and device.rollout.model_version == 5
    ended = device.rollout.model_copy(update={"phase": Phase.HALTED, "ended_at": fleet.clock.now()})
    device.store.save(ended)
    hear(6)
    fleet.clock.advance(10)
    device.reconciler.step()
    assert device.rollout is not None and device.rollout.model_version == 5
    fleet.clock.advance(600)
    device.reconciler.step()
    assert device.rollout is not None and device.rollout.model_version == 6
    assert fleet.packaging.script.count("latest_version") == 0


def test_a_claimers_failing_calls_keep_the_others_waiting(platform: DetectedPlatform) -> None:
    """The first device claims the job (STARTING) before calling; its StartPackaging is
    throttled three times and answers 5xx once. The nine others hear the claim and make no
    packaging call of their own; the claimer's retries renew it until the job starts."""
    from agent import errors

    fleet = Fleet(platform, 10)
    throttle = errors.ThrottledError("Rate exceeded", code="ThrottlingException")
    fleet.packaging.script.fail("start_packaging", throttle, throttle, throttle,
                                errors.ServiceUnavailableError("InternalServerException"))
    fleet.run(lambda: phases(fleet, Phase.PACKAGING), limit=3 * 3600)
    assert fleet.packaging.script.count("start_packaging") == 5
    assert len(fleet.packaging.jobs) == 1
    claims = [m for d in fleet.devices for _, m in d.store.outbox
              if m.kind == "announcement" and b'"STARTING"' in m.render(0, "")]
    assert claims and len({m.topic for m in claims}) == 1


def test_a_deployment_the_nucleus_applied_but_rolled_back_is_a_failure(platform: DetectedPlatform) -> None:
    """The nucleus reports the deployment applied (it does so for a failed one too); the
    one confirming call finds the previous version installed: the rollout ends
    ROLLED_BACK and the device announces its failure."""
    fleet = Fleet(platform, 1, deploymentWatchSeconds=3600)
    fleet.run(lambda: phases(fleet, Phase.PACKAGING))
    finish_job(fleet)
    fleet.run(lambda: phases(fleet, Phase.DEPLOYING), limit=3600)
    device = fleet.devices[0]
    fleet.gg.installed_of[device.thing] = ("0.9.0", "RUNNING")
    apply_everywhere(fleet)
    fleet.due[device.thing] = fleet.clock.now()
    fleet.run(lambda: phases(fleet, Phase.FAILED), limit=3600)
    assert "ROLLED_BACK" in device.store.events()
    assert any(m.topic.endswith(f"/failed/{device.thing}") for _, m in device.store.outbox)
