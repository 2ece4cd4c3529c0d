"""Shared fixtures: a local world on a virtual clock, and in-process boto3 clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcloud.clock import VirtualClock
from localcloud.world import World
from tests.support.mosquitto import Pki, find_mosquitto


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


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    """Path of the mosquitto binary; skips (or fails under CI) when it is missing."""
    binary = find_mosquitto()
    if binary is None:
        message = (
            "the mosquitto broker is not installed: run `apt-get install mosquitto` "
            "(scripts/test installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """CA, broker and client certificates, made once per test session."""
    return Pki(tmp_path_factory.mktemp("pki"))
