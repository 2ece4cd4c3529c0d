"""Shared fixtures: a local world on a virtual clock, and in-process boto3 clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def oracle_data_path() -> Path:
    """botocore 1.40.60's data directory (installed once into .cache): the official
    Lookout for Vision 2020-11-20 model, used as the conformance oracle."""
    from tests.support.oracle import official_data_path

    return official_data_path()
