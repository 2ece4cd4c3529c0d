"""Component update events of the simulated nucleus (SubscribeToComponentUpdates and
DeferComponentUpdate) while the simulated core device applies deployments.

Driven with the unmodified awsiotsdk ``GreengrassCoreIPCClientV2``; deployments come
through the Greengrass emulator and time moves on the world's virtual clock only.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import (
    ComponentUpdatePolicyEvents,
    InvalidArgumentsError,
    ResourceNotFoundError,
    ServiceError,
)

from localcloud.clock import VirtualClock
from localcloud.device import CoreDevice
from localcloud.nucleus import Nucleus
from localcloud.transport import world_client
from localcloud.world import World
from tests.support.nucleus import short_socket_dir

THING = "edge-updates-1"
APP = "com.example.Listener"
MODEL = "com.example.Model"
WAIT = 5.0
POLICY_TIMEOUT = 120


def _recipe(name: str, version: str) -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "run"}}],
    }


class Events:
    """ComponentUpdatePolicyEvents as the SDK delivers them, waited on with a timeout."""

    def __init__(self) -> None:
        self.received: queue.Queue[ComponentUpdatePolicyEvents] = queue.Queue()

    def next(self) -> ComponentUpdatePolicyEvents:
        return self.received.get(timeout=WAIT)

    def none_within(self, seconds: float) -> bool:
        try:
            self.received.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    with short_socket_dir(tmp_path) as directory:
        yield directory


@pytest.fixture
def device(world: World, clock: VirtualClock) -> CoreDevice:
    """A core device running APP (the subscriber); MODEL 1.0.0 and 2.0.0 are registered."""
    gg = world_client(world, "greengrassv2")
    for name, version in ((APP, "1.0.0"), (MODEL, "1.0.0"), (MODEL, "2.0.0")):
        world.greengrass.register_component_version(_recipe(name, version))
    found = world.greengrass.add_core_device(THING)
    gg.create_deployment(targetArn=_target(world), components={APP: {"componentVersion": "1.0.0"}})
    clock.advance(world.greengrass.install_seconds + 1)
    world.tick()
    assert found.states([APP]) == {APP: "RUNNING"}
    return found


@pytest.fixture
def nucleus(device: CoreDevice, world: World, sock_dir: Path) -> Iterator[Nucleus]:
    with Nucleus(device, world.iotcore, sock_dir / "ipc.sock") as server:
        yield server


@pytest.fixture
def ipc(
    nucleus: Nucleus, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], GreengrassCoreIPCClientV2]]:
    clients: list[GreengrassCoreIPCClientV2] = []

    def connect(component: str) -> GreengrassCoreIPCClientV2:
        env = nucleus.component_env(component)
        for name in ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID"):
            monkeypatch.setenv(name, env[name])
        client = GreengrassCoreIPCClientV2()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def _target(world: World) -> str:
    return world.arn("iot", f"thing/{THING}")


def _deploy(world: World, version: str, **policies: Any) -> str:
    gg = world_client(world, "greengrassv2")
    answer = gg.create_deployment(
        targetArn=_target(world),
        components={APP: {"componentVersion": "1.0.0"}, MODEL: {"componentVersion": version}},
        deploymentPolicies={
            "componentUpdatePolicy": {"timeoutInSeconds": POLICY_TIMEOUT, **policies},
            "failureHandlingPolicy": "ROLLBACK",
        },
    )
    return str(answer["deploymentId"])


def _status(device: CoreDevice, deployment_id: str) -> str:
    effective = device.effective(deployment_id)
    assert effective is not None
    return effective.status


def _subscribe(client: GreengrassCoreIPCClientV2) -> Events:
    events = Events()
    client.subscribe_to_component_updates(on_stream_event=events.received.put)
    return events


def test_answered_pre_update_lets_the_deployment_proceed_without_the_timeout(
    world: World, clock: VirtualClock, device: CoreDevice,
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """A subscriber answers the pre-update event with recheckAfterMs 0: the install
    starts at once (install_seconds later the deployment SUCCEEDED, long before the
    policy timeout), and the post-update event carries the deployment id."""
    client = ipc(APP)
    events = _subscribe(client)
    deployment_id = _deploy(world, "1.0.0")
    world.tick()
    pre = events.next().pre_update_event
    assert pre is not None
    assert (pre.deployment_id, pre.is_ggc_restarting) == (deployment_id, False)
    client.defer_component_update(deployment_id=deployment_id, recheck_after_ms=0)

    clock.advance(world.greengrass.install_seconds + 1)
    world.tick()
    assert _status(device, deployment_id) == "SUCCEEDED"
    post = events.next().post_update_event
    assert post is not None and post.deployment_id == deployment_id


def test_silent_subscriber_holds_the_update_until_the_policy_timeout(
    world: World, clock: VirtualClock, device: CoreDevice,
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """Nobody answers the pre-update event: nothing is installed until the policy's
    timeoutInSeconds passed on the world clock; then the install runs, and an answer that
    comes after the timeout is refused with ServiceError."""
    client = ipc(APP)
    events = _subscribe(client)
    deployment_id = _deploy(world, "1.0.0")
    world.tick()
    assert events.next().pre_update_event is not None

    clock.advance(POLICY_TIMEOUT - 1)
    world.tick()
    assert _status(device, deployment_id) == "IN_PROGRESS"
    assert MODEL not in device.states() or device.states([MODEL])[MODEL] == "NEW"

    clock.advance(1)  # the timeout: the install starts now
    world.tick()
    with pytest.raises(ServiceError) as late:
        client.defer_component_update(deployment_id=deployment_id, recheck_after_ms=0)
    assert "Time limit" in late.value.message
    clock.advance(world.greengrass.install_seconds - 1)
    world.tick()
    assert _status(device, deployment_id) == "IN_PROGRESS"
    clock.advance(1)
    world.tick()
    assert _status(device, deployment_id) == "SUCCEEDED"
    assert device.states([MODEL]) == {MODEL: "RUNNING"}


def test_an_answer_without_recheck_after_ms_does_not_count(
    world: World, clock: VirtualClock, device: CoreDevice,
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """DeferComponentUpdate without recheckAfterMs is accepted but ignored (as the real
    nucleus does): the update still waits for the policy timeout."""
    client = ipc(APP)
    events = _subscribe(client)
    deployment_id = _deploy(world, "1.0.0")
    world.tick()
    assert events.next().pre_update_event is not None
    client.defer_component_update(deployment_id=deployment_id, message="no value")

    clock.advance(world.greengrass.install_seconds + 1)
    world.tick()
    assert _status(device, deployment_id) == "IN_PROGRESS"


def test_a_deferral_sends_a_new_round_after_recheck_after_ms(
    world: World, clock: VirtualClock, device: CoreDevice,
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """recheckAfterMs 30000 defers the update 30 s of world time; then a new pre-update
    event comes for the same deployment, and answering 0 lets it go ahead."""
    client = ipc(APP)
    events = _subscribe(client)
    deployment_id = _deploy(world, "1.0.0")
    world.tick()
    assert events.next().pre_update_event is not None
    client.defer_component_update(
        deployment_id=deployment_id, message="busy", recheck_after_ms=30_000
    )
    clock.advance(29)
    world.tick()
    assert events.none_within(0.2)
    clock.advance(1)
    world.tick()
    again = events.next().pre_update_event
    assert again is not None and again.deployment_id == deployment_id
    client.defer_component_update(deployment_id=deployment_id, recheck_after_ms=0)
    clock.advance(world.greengrass.install_seconds)
    world.tick()
    assert _status(device, deployment_id) == "SUCCEEDED"


def test_post_update_follows_a_failed_and_rolled_back_deployment(
    world: World, clock: VirtualClock, device: CoreDevice,
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """The post-update event says the update ran, not that it worked: a deployment whose
    install fails (ROLLBACK) still ends with a post-update event for its id."""
    client = ipc(APP)
    events = _subscribe(client)
    world.greengrass.fail_install(MODEL, "2.0.0")
    deployment_id = _deploy(world, "2.0.0")
    world.tick()
    assert events.next().pre_update_event is not None
    client.defer_component_update(deployment_id=deployment_id, recheck_after_ms=0)
    clock.advance(world.greengrass.install_seconds + 1)
    world.tick()
    assert _status(device, deployment_id) == "FAILED"
    post = events.next().post_update_event
    assert post is not None and post.deployment_id == deployment_id


def test_skip_notify_components_sends_no_events(
    world: World, clock: VirtualClock, device: CoreDevice,
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """With SKIP_NOTIFY_COMPONENTS the device neither asks nor tells: no pre-update and
    no post-update event, and the install does not wait."""
    client = ipc(APP)
    events = _subscribe(client)
    deployment_id = _deploy(world, "1.0.0", action="SKIP_NOTIFY_COMPONENTS")
    clock.advance(world.greengrass.install_seconds + 1)
    world.tick()
    assert _status(device, deployment_id) == "SUCCEEDED"
    assert events.none_within(0.3)


def test_defer_needs_a_subscription_a_deployment_id_and_a_pending_event(
    world: World, ipc: Callable[[str], GreengrassCoreIPCClientV2]
) -> None:
    """DeferComponentUpdate is refused as the real nucleus refuses it: not subscribed,
    or no deploymentId (InvalidArgumentsError); no pre-update event awaiting this
    component's answer for that deployment (ServiceError)."""
    client = ipc(APP)
    with pytest.raises(InvalidArgumentsError) as unsubscribed:
        client.defer_component_update(deployment_id="d-1", recheck_after_ms=0)
    assert "not subscribed" in unsubscribed.value.message
    _subscribe(client)
    with pytest.raises(InvalidArgumentsError) as no_id:
        client.defer_component_update(recheck_after_ms=0)
    assert "deployment ID" in no_id.value.message
    with pytest.raises(ServiceError) as not_asked:
        client.defer_component_update(deployment_id="d-1", recheck_after_ms=0)
    assert "Time limit" in not_asked.value.message


def test_subscribing_needs_no_policy_but_a_known_component(
    ipc: Callable[[str], GreengrassCoreIPCClientV2],
) -> None:
    """No accessControl is needed to subscribe (APP has none); a caller the device does
    not run is ResourceNotFoundError."""
    _subscribe(ipc(APP))
    with pytest.raises(ResourceNotFoundError):
        ipc("com.example.NotInstalled").subscribe_to_component_updates(
            on_stream_event=lambda _event: None
        )


def test_emulator_reports_post_updates_to_its_hook(
    world: World, clock: VirtualClock, device: CoreDevice
) -> None:
    """Without any nucleus, GreengrassEmulator.on_post_update hears (thing, deployment id)
    whenever the device's nucleus would send a post-update event, and not for a
    SKIP_NOTIFY_COMPONENTS deployment."""
    heard: list[tuple[str, str]] = []
    world.greengrass.on_post_update = lambda thing, deployment: heard.append((thing, deployment))
    first = _deploy(world, "1.0.0")
    clock.advance(world.greengrass.install_seconds + 1)
    world.tick()
    assert _status(device, first) == "SUCCEEDED"
    skipped = _deploy(world, "2.0.0", action="SKIP_NOTIFY_COMPONENTS")
    clock.advance(world.greengrass.install_seconds + 1)
    world.tick()
    assert _status(device, skipped) == "SUCCEEDED"
    assert heard == [(THING, first)]
