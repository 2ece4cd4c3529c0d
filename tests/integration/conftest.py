"""Fixtures for tests against real services started on 127.0.0.1 (Mosquitto)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mosquitto import (
    Credentials,
    MessageCollector,
    MosquittoBroker,
    Pki,
)

_ids = itertools.count(1)


@pytest.fixture
def mosquitto_factory(
    mosquitto_binary: str, pki: Pki, tmp_path: Path
) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start brokers (optionally with an ACL); all are stopped after the test."""
    brokers: list[MosquittoBroker] = []

    def start(*, acl: str | None = None, identity_as_username: bool = True) -> MosquittoBroker:
        broker = MosquittoBroker(
            mosquitto_binary,
            pki,
            tmp_path / f"broker-{len(brokers)}",
            acl=acl,
            identity_as_username=identity_as_username,
        )
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A fresh mutual-TLS Mosquitto for this test (function scope: tests may stop it)."""
    return mosquitto_factory()


@pytest.fixture
def collector_factory(
    pki: Pki,
) -> Iterator[Callable[..., MessageCollector]]:
    """Start independent subscribers; all are stopped after the test."""
    collectors: list[MessageCollector] = []

    def start(
        broker: MosquittoBroker,
        topic_filter: str = "#",
        *,
        name: str = "collector",
        credentials: Credentials | None = None,
    ) -> MessageCollector:
        collector = MessageCollector(
            broker,
            credentials or pki.client(name),
            client_id=f"{name}-{next(_ids)}",
            topic_filter=topic_filter,
        )
        collector.start()
        collectors.append(collector)
        return collector

    yield start
    for collector in collectors:
        collector.stop()


@pytest.fixture
def transport_factory(pki: Pki) -> Iterator[Callable[..., Any]]:
    """Build DirectMqttTransports for a broker (short back-off); all are closed after the test."""
    from agent.reporting.mqtt import DirectMqttConfig, DirectMqttTransport

    transports: list[DirectMqttTransport] = []

    def build(broker: MosquittoBroker, name: str = "agent-1", **overrides: Any) -> Any:
        credentials = pki.client(name)
        settings: dict[str, Any] = {
            "endpoint": broker.host,
            "port": broker.port,
            "client_id": f"{name}-{next(_ids)}",
            "cert_path": credentials.cert_path,
            "key_path": credentials.key_path,
            "ca_path": pki.ca_path,
            "reconnect_min_seconds": 0.05,
            "reconnect_max_seconds": 0.5,
            "connect_timeout": 3.0,
            "ack_timeout": 5,
        }
        settings.update(overrides)
        transport = DirectMqttTransport(DirectMqttConfig(**settings))
        transports.append(transport)
        return transport

    yield build
    for transport in transports:
        transport.close()
