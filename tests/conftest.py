"""Shared fixtures: a local world on a virtual clock, and in-process boto3 clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localcloud.clock import VirtualClock
from localcloud.world import World


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def world(clock: VirtualClock) -> Iterator[World]:
    """A fresh local world (moto reset) whose time only moves when the test says so."""
    yield World(clock, seed=7)
