"""The LocalDeployments port as the reconciler sees it: what the nucleus reported
finished reaches the decision code's Observation; memory stays bounded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent.config import load_config
from agent.platform import DetectedPlatform, detect_platform
from agent.ports import RECENT_DEPLOYMENTS, RecentIds
from agent.reconciler import Reconciler, settings_from_config
from agent.reporting.ipc_component_updates import NoLocalDeployments
from tests.support.fakes import (
    FakeClock,
    FakeDeployments,
    FakeLocalDeployments,
    FakePackaging,
    MemoryStore,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "platforms"


@pytest.fixture(scope="module")
def platform() -> DetectedPlatform:
    return detect_platform(FIXTURES / "x86-64-cpu-server")


def _reconciler(platform: DetectedPlatform, local: FakeLocalDeployments | None) -> Reconciler:
    config = load_config(
        overrides={
            "thingName": "dev-1", "region": "us-east-1", "projectName": "widgets",
            "s3Bucket": "l4v-models", "stateDir": "/nonexistent-state",
        }
    )
    return Reconciler(
        settings=settings_from_config(config), platform=platform, packaging=FakePackaging(),
        deployments=FakeDeployments(), ledger=MemoryStore(), clock=FakeClock(),
        rng=random.Random(7), local_deployments=local,
    )


def test_observation_carries_the_deployments_the_nucleus_reported(
    platform: DetectedPlatform,
) -> None:
    """Deployment ids the nucleus reported finished appear in the next observation."""
    local = FakeLocalDeployments()
    reconciler = _reconciler(platform, local)
    assert reconciler.observe(0.0).locally_completed == frozenset()
    local.finish("d-1")
    local.finish("d-2")
    assert reconciler.observe(0.0).locally_completed == {"d-1", "d-2"}


def test_without_a_local_source_the_observation_has_none(platform: DetectedPlatform) -> None:
    """No LocalDeployments (the default) and the 'none' adapter both report nothing."""
    assert _reconciler(platform, None).observe(0.0).locally_completed == frozenset()
    none = NoLocalDeployments()
    assert (none.completed(), none.available(), none.problem()) == (frozenset(), False, None)


def test_recent_ids_keep_the_newest_and_ignore_repeats() -> None:
    """Past the bound the oldest id is forgotten; adding a known id changes nothing."""
    recent = RecentIds()
    for number in range(RECENT_DEPLOYMENTS + 5):
        assert recent.add(f"d-{number}")
    assert not recent.add(f"d-{RECENT_DEPLOYMENTS + 4}")
    kept = recent.snapshot()
    assert len(kept) == RECENT_DEPLOYMENTS
    assert "d-0" not in kept and "d-4" not in kept and "d-5" in kept


def test_stopping_the_watcher_does_not_wait_for_a_connection_attempt_in_progress() -> None:
    """Shutdown calls stop() while another thread holds the watcher's connect lock (a
    subscribe to a nucleus that does not answer): stop() returns without it (the daemon's
    shutdown budget is bounded) and marks the watcher closed, so that attempt gives up."""
    import threading

    from agent.reporting.ipc_component_updates import ComponentUpdateWatcher

    watcher = ComponentUpdateWatcher("/nonexistent.sock", "token", wake=lambda: None)
    release = threading.Event()
    holding = threading.Event()

    def connecting() -> None:
        with watcher._connecting:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=connecting, daemon=True)
    holder.start()
    assert holding.wait(10)
    stopper = threading.Thread(target=watcher.stop, daemon=True)
    stopper.start()
    stopper.join(10)
    stopped_while_held = not stopper.is_alive()
    release.set()
    holder.join(10)
    assert stopped_while_held
    assert watcher._closed
