"""The agent's component-update watcher (``agent.reporting.ipc_component_updates``)
against the simulated nucleus of a simulated core device: the unmodified awsiotsdk IPC
client on a Unix socket, deployments from the Greengrass emulator on the world clock."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from agent.daemon import MainLoop
from agent.errors import TransportError
from agent.reporting.ipc import SOCKET_ENV, TOKEN_ENV
from agent.reporting.ipc_component_updates import ComponentUpdateWatcher
from localcloud.clock import VirtualClock
from localcloud.device import CoreDevice
from localcloud.nucleus import Nucleus
from localcloud.world import World
from tests.support import agentworld as aw
from tests.support.nucleus import short_socket_dir

AGENT = "l4v.edge.Agent"
MODEL = "com.example.Model"
THING = "edge-watch-1"
TIMEOUT = 5.0
POLICY_TIMEOUT = 300


def _recipe(name: str, version: str) -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "run"}}],
    }


class Wakes:
    """Counts wake calls; a test waits on a count with a timeout."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= count, TIMEOUT)


@pytest.fixture
def device(world: World, clock: VirtualClock) -> CoreDevice:
    """A core device running the agent component; model versions 1.0.0-3.0.0 exist."""
    for name, version in ((AGENT, "0.1.0"), (MODEL, "1.0.0"), (MODEL, "2.0.0"), (MODEL, "3.0.0")):
        world.greengrass.register_component_version(_recipe(name, version))
    found = world.greengrass.add_core_device(THING)
    world.client("greengrassv2").create_deployment(
        targetArn=world.arn("iot", f"thing/{THING}"),
        components={AGENT: {"componentVersion": "0.1.0"}},
    )
    clock.advance(world.greengrass.install_seconds + 1)
    world.tick()
    return found


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    with short_socket_dir(tmp_path) as directory:
        yield directory


@pytest.fixture
def nucleus(device: CoreDevice, world: World, sock_dir: Path) -> Iterator[Nucleus]:
    server = Nucleus(device, world.iotcore, sock_dir / "ipc.sock").start()
    yield server
    server.stop()


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def watcher(nucleus: Nucleus, wakes: Wakes) -> Iterator[ComponentUpdateWatcher]:
    """The agent's watcher, built from the environment the nucleus gives the agent."""
    built = ComponentUpdateWatcher.from_env(nucleus.component_env(AGENT), wake=wakes)
    yield built
    built.stop()


def _deploy(world: World, version: str) -> str:
    answer = world.client("greengrassv2").create_deployment(
        targetArn=world.arn("iot", f"thing/{THING}"),
        components={AGENT: {"componentVersion": "0.1.0"}, MODEL: {"componentVersion": version}},
        deploymentPolicies={"componentUpdatePolicy": {"timeoutInSeconds": POLICY_TIMEOUT}},
    )
    world.tick()
    return str(answer["deploymentId"])


def _install(world: World, clock: VirtualClock, device: CoreDevice, deployment_id: str) -> str:
    """The agent answered the pre-update event (the install started): let it finish."""
    assert device.wait_for_update_stage(deployment_id, "install", TIMEOUT)
    clock.advance(world.greengrass.install_seconds)
    world.tick()
    effective = device.effective(deployment_id)
    assert effective is not None
    return effective.status


def test_pre_update_is_answered_at_once_and_the_post_update_recorded(
    world: World, clock: VirtualClock, device: CoreDevice, watcher: ComponentUpdateWatcher,
    wakes: Wakes,
) -> None:
    """The watcher answers the pre-update event with recheckAfterMs 0, so the install
    starts without waiting the 300 s policy timeout; the post-update event's deployment id
    is then in completed() and the main loop was woken."""
    watcher.start()
    assert watcher.available() and watcher.problem() is None
    deployment_id = _deploy(world, "1.0.0")
    assert _install(world, clock, device, deployment_id) == "SUCCEEDED"
    assert wakes.wait_for(1)
    assert watcher.completed() == {deployment_id}


def test_a_dropped_connection_is_renewed_and_events_flow_again(
    world: World, clock: VirtualClock, device: CoreDevice, nucleus: Nucleus,
    watcher: ComponentUpdateWatcher, wakes: Wakes,
) -> None:
    """The nucleus goes away: the watcher wakes the main loop and says it is unavailable.
    Once the nucleus is back, the next completed() subscribes again, and the next
    deployment's events are answered and recorded."""
    watcher.start()
    nucleus.stop()
    assert wakes.wait_for(1)
    assert not watcher.available()
    assert watcher.problem() is not None
    nucleus.start()
    watcher.completed()  # the main loop's observe: a retry is due at once after a drop
    assert watcher.available() and watcher.problem() is None
    deployment_id = _deploy(world, "2.0.0")
    assert _install(world, clock, device, deployment_id) == "SUCCEEDED"
    assert wakes.wait_for(2)
    assert deployment_id in watcher.completed()


def test_a_restarted_agent_releases_the_update_its_killed_predecessor_was_asked_about(
    world: World, clock: VirtualClock, device: CoreDevice, nucleus: Nucleus,
    monkeypatch: pytest.MonkeyPatch, wakes: Wakes,
) -> None:
    """kill -9 between a pre-update event and its answer: the nucleus keeps awaiting the
    agent's answer until the policy timeout. The next agent process subscribes and
    answers for the deployment its ledger has in flight, so the install starts at once."""
    env = nucleus.component_env(AGENT)
    for name in (SOCKET_ENV, TOKEN_ENV):
        monkeypatch.setenv(name, env[name])
    predecessor = GreengrassCoreIPCClientV2()
    asked = threading.Event()
    predecessor.subscribe_to_component_updates(on_stream_event=lambda _event: asked.set())
    deployment_id = _deploy(world, "3.0.0")
    assert asked.wait(TIMEOUT)
    predecessor.close()  # dies without answering
    assert nucleus.wait_for_connections(0)
    assert device.update_stage(deployment_id) == "notify"

    successor = ComponentUpdateWatcher.from_env(
        env, wake=wakes, in_flight=lambda: [deployment_id]
    )
    try:
        successor.start()
        assert _install(world, clock, device, deployment_id) == "SUCCEEDED"
    finally:
        successor.stop()


def test_no_nucleus_is_a_transport_error_and_a_problem_retried_later(
    sock_dir: Path, wakes: Wakes
) -> None:
    """A socket nobody serves: start raises TransportError, problem() says why, and
    completed() still answers (empty), so the agent keeps polling the cloud."""
    dead = sock_dir / "dead.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(dead))  # a socket file, but nobody accepts
    try:
        watcher = ComponentUpdateWatcher.from_env(
            {SOCKET_ENV: str(dead), TOKEN_ENV: "token"}, wake=wakes
        )
        with pytest.raises(TransportError):
            watcher.start()
        assert not watcher.available()
        assert watcher.problem()
        assert watcher.completed() == frozenset()
        watcher.stop()
    finally:
        listener.close()


def test_the_agent_starts_without_the_subscription_and_health_says_so(
    world: World, sock_dir: Path, tmp_path: Path
) -> None:
    """Fail-soft start: under a nucleus that does not answer, the agent starts anyway,
    its health report is DEGRADED and names the problem, and the reconciler sees no
    locally completed deployment (it asks the cloud)."""
    dead = sock_dir / "dead.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(dead))
    env = {SOCKET_ENV: str(dead), TOKEN_ENV: "token"}
    agent = aw.daemon_agent(world, "dev-1", tmp_path / "dev-1", env=env)
    loop = MainLoop(agent)
    try:
        loop.start()
        assert isinstance(agent.local_deployments, ComponentUpdateWatcher)
        report = agent.health.build()
        assert report.status == "DEGRADED"
        assert report.deployment_events_problem
        assert agent.reconciler.observe(world.clock.now()).locally_completed == frozenset()
    finally:
        loop.stop(1.0)
        listener.close()
