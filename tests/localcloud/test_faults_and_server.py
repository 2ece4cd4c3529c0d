"""Faults as boto3 sees them, the HTTP front end with its admin API, and the clocks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from localcloud.clock import ScaledClock, VirtualClock
from localcloud.server import WorldServer
from localcloud.transport import TEST_CREDENTIALS, world_client
from localcloud.world import World

NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture
def server(world: World) -> Iterator[WorldServer]:
    with WorldServer(world) as running:
        yield running


def http_client(server: WorldServer, service: str, **kwargs: Any) -> Any:
    return boto3.Session(region_name="us-east-1", **TEST_CREDENTIALS).client(
        service, endpoint_url=server.url, **kwargs
    )


def admin(server: WorldServer, method: str, action: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}/_localcloud/{action}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_dropped_connection_is_a_connection_error_over_http(world: World, server: WorldServer) -> None:
    """A `drop` fault closes the socket without an answer: boto3 raises its connection
    error when it may not retry, and succeeds when its own retry reaches the next call."""
    gg = http_client(server, "greengrassv2", config=NO_RETRY)
    world.faults.inject("greengrass", "ListDeployments", "drop", times=1)
    with pytest.raises(ConnectionClosedError):
        gg.list_deployments()
    retrying = http_client(server, "greengrassv2", config=Config(retries={"total_max_attempts": 3}))
    world.faults.inject("greengrass", "ListDeployments", "drop", times=1)
    assert retrying.list_deployments()["deployments"] == []


def test_dropped_connection_in_process_is_the_same_error(world: World) -> None:
    """The in-process transport turns a `drop` into the same botocore exception."""
    gg = world_client(world, "greengrassv2", config=NO_RETRY)
    world.faults.inject("greengrass", "*", "drop", times=1)
    with pytest.raises(ConnectionClosedError):
        gg.list_deployments()


def test_added_latency_delays_the_answer(world: World) -> None:
    """A `latency` fault makes the call take at least the injected time."""
    gg = world_client(world, "greengrassv2")
    world.faults.inject("greengrass", "ListDeployments", "latency", times=1, latency_seconds=0.2)
    started = time.perf_counter()
    gg.list_deployments()
    assert time.perf_counter() - started >= 0.2


def test_5xx_is_the_service_exception_after_botocore_retries(world: World) -> None:
    """Persistent 500s surface as InternalServerException once botocore's retries are spent."""
    gg = world_client(world, "greengrassv2", config=Config(retries={"total_max_attempts": 2}))
    world.faults.inject("greengrass", "ListDeployments", "5xx", times=5)
    with pytest.raises(ClientError) as caught:
        gg.list_deployments()
    assert caught.value.response["Error"]["Code"] == "InternalServerException"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 1


def test_fault_rules_reject_bad_arguments(world: World) -> None:
    """Fault injection refuses unknown kinds and contradictory counts."""
    with pytest.raises(ValueError, match="kind"):
        world.faults.inject("greengrass", "*", "gremlins")
    with pytest.raises(ValueError, match="not both"):
        world.faults.inject("greengrass", "*", "5xx", times=1, probability=0.5)
    with pytest.raises(ValueError, match="probability"):
        world.faults.inject("greengrass", "*", "5xx", probability=1.5)


def test_one_http_endpoint_serves_every_service(world: World, server: WorldServer) -> None:
    """Greengrass (emulator), S3 and IoT (moto) answer on the same URL, routed by the
    service in each request's signature."""
    s3 = http_client(server, "s3")
    s3.create_bucket(Bucket="bucket-one")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["bucket-one"]
    iot = http_client(server, "iot")
    iot.create_thing(thingName="thing-one")
    assert iot.describe_thing(thingName="thing-one")["thingName"] == "thing-one"
    assert http_client(server, "greengrassv2").list_deployments()["deployments"] == []


def test_unsigned_and_unknown_requests_get_errors_not_500(server: WorldServer) -> None:
    """No signature → 403 MissingAuthenticationToken; no route → 404; never a 500."""
    request = urllib.request.Request(f"{server.url}/greengrass/v2/deployments", method="GET")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 403
    status, body = admin(server, "GET", "nothing-here")
    assert status == 404 and "no admin endpoint" in body["error"]


def test_admin_api_seeds_models_faults_quota_and_reports_calls(world: World, server: WorldServer) -> None:
    """Out-of-process control: add a model, set packaging time, inject a fault, set a
    quota, read the call counts; a malformed admin body is a 400."""
    world.lookoutvision.create_project("widgets")
    assert admin(server, "POST", "models", {"project": "widgets"}) == (200, {"version": 1})
    assert admin(server, "POST", "packaging", {"seconds": 12})[0] == 200
    assert world.lookoutvision.packaging_seconds == 12
    assert admin(server, "POST", "faults", {"service": "greengrass", "kind": "throttle", "times": 1})[0] == 200
    gg = http_client(server, "greengrassv2", config=NO_RETRY)
    with pytest.raises(ClientError, match="Throttling"):
        gg.list_deployments()
    assert admin(server, "POST", "quota", {"service": "lookoutvision", "rate": 5})[0] == 200
    status, counts = admin(server, "GET", "calls")
    assert status == 200 and counts["greengrass:ListDeployments"] == 1
    assert admin(server, "POST", "models", {"nope": 1})[0] == 400
    assert admin(server, "POST", "advance", {"seconds": 60})[1]["now"] == world.clock.now()


def test_clocks() -> None:
    """The virtual clock moves only when told and never backwards; a scaled clock runs
    faster than real time."""
    clock = VirtualClock(start=100.0)
    assert clock.advance(20 * 60) == 1300.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(50.0)
    scaled = ScaledClock(60.0, origin=0.0)
    first = scaled.now()
    deadline = time.monotonic() + 5
    while scaled.now() - first < 1.0 and time.monotonic() < deadline:
        pass  # spin on the condition: a real-time clock has to be watched
    assert scaled.now() - first >= 1.0
    with pytest.raises(ValueError):
        ScaledClock(0)
