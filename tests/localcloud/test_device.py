"""Simulated core devices applying deployments, observed through the real boto3 client.

Time only moves when a test advances the VirtualClock; the device installs a deployment
in ``install_seconds`` (20 s by default) of world time.
"""

from __future__ import annotations

import json
import time
from typing import Any

import botocore.session
import pytest

from localcloud.clock import VirtualClock
from localcloud.transport import world_client
from localcloud.world import World

EDGE_AGENT = "aws.iot.lookoutvision.EdgeAgent"
NUCLEUS = "aws.greengrass.Nucleus"
SESSION = botocore.session.get_session()


@pytest.fixture(autouse=True)
def fresh_moto() -> None:
    """Empty moto's backends before each test.

    ``World`` calls moto's ``reset_model_data``, which leaves things and thing groups of
    earlier tests in place (and so their group memberships); this clears them.
    """
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()


@pytest.fixture
def gg(world: World) -> Any:
    return world_client(world, "greengrassv2", botocore_session=SESSION)


def register(world: World, name: str, version: str = "1.0.0", **extra: Any) -> str:
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "python3 -u main.py"}}],
    }
    recipe.update(extra)
    return world.greengrass.register_component_version(recipe)


def deploy(world: World, gg: Any, target: str, components: dict[str, Any], **kwargs: Any) -> str:
    """Deploy ``{name: version or spec}`` to ``thing/NAME`` or ``thinggroup/NAME``."""
    specs = {
        n: ({"componentVersion": v} if isinstance(v, str) else v) for n, v in components.items()
    }
    answer = gg.create_deployment(targetArn=world.arn("iot", target), components=specs, **kwargs)
    return str(answer["deploymentId"])


def installed(gg: Any, thing: str, topology: str = "ALL") -> dict[str, dict[str, Any]]:
    pages = gg.get_paginator("list_installed_components").paginate(
        coreDeviceThingName=thing, topologyFilter=topology
    )
    return {c["componentName"]: c for p in pages for c in p["installedComponents"]}


def executions(gg: Any, thing: str) -> dict[str, dict[str, Any]]:
    pages = gg.get_paginator("list_effective_deployments").paginate(coreDeviceThingName=thing)
    return {e["deploymentId"]: e for p in pages for e in p["effectiveDeployments"]}


def status(gg: Any, deployment_id: str) -> str:
    return str(gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"])


def test_thing_deployment_installs_with_dependencies_and_completes(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """A model component depending on EdgeAgent: both install in install_seconds; thing deployment COMPLETED."""
    world.greengrass.add_core_device("core-1")
    register(
        world,
        "com.example.Model",
        ComponentDependencies={
            EDGE_AGENT: {"VersionRequirement": ">=1.0.0 <2.0.0", "DependencyType": "HARD"}
        },
    )
    deployment_id = deploy(world, gg, "thing/core-1", {"com.example.Model": "1.0.0"})
    started = clock.now()
    assert executions(gg, "core-1")[deployment_id]["coreDeviceExecutionStatus"] == "IN_PROGRESS"
    assert status(gg, deployment_id) == "ACTIVE"
    assert installed(gg, "core-1")["com.example.Model"]["lifecycleState"] == "NEW"
    clock.advance(19)
    assert executions(gg, "core-1")[deployment_id]["coreDeviceExecutionStatus"] == "IN_PROGRESS"
    clock.advance(1)
    execution = executions(gg, "core-1")[deployment_id]
    assert execution["coreDeviceExecutionStatus"] == "SUCCEEDED"
    assert execution["modifiedTimestamp"].timestamp() == started + 20
    assert "statusDetails" not in execution
    assert status(gg, deployment_id) == "COMPLETED"
    everything = installed(gg, "core-1")
    assert everything["com.example.Model"]["lifecycleState"] == "RUNNING"
    assert everything["com.example.Model"]["isRoot"] is True
    assert everything["com.example.Model"]["lastInstallationSource"] == deployment_id
    assert everything[EDGE_AGENT]["componentVersion"] == "1.1.0"  # highest that fits
    assert everything[EDGE_AGENT]["isRoot"] is False
    assert everything[NUCLEUS]["lifecycleState"] == "FINISHED"
    assert set(installed(gg, "core-1", "ROOT")) == {"com.example.Model"}
    history = [(n, s) for _, n, _, s in world.greengrass.devices["core-1"].history if n != NUCLEUS]
    assert history == [
        (EDGE_AGENT, "NEW"),
        ("com.example.Model", "NEW"),
        (EDGE_AGENT, "INSTALLED"),
        (EDGE_AGENT, "STARTING"),
        (EDGE_AGENT, "RUNNING"),
        ("com.example.Model", "INSTALLED"),
        ("com.example.Model", "STARTING"),
        ("com.example.Model", "RUNNING"),
    ]


def test_new_deployment_replaces_previous_for_same_target(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """Deploying A+B then only A to the same thing uninstalls B; the first deployment turns INACTIVE."""
    world.greengrass.add_core_device("core-1")
    register(world, "com.example.A")
    register(world, "com.example.B")
    first = deploy(world, gg, "thing/core-1", {"com.example.A": "1.0.0", "com.example.B": "1.0.0"})
    clock.advance(20)
    assert set(installed(gg, "core-1", "ROOT")) == {"com.example.A", "com.example.B"}
    second = deploy(world, gg, "thing/core-1", {"com.example.A": "1.0.0"})
    assert status(gg, first) == "INACTIVE"
    assert gg.get_deployment(deploymentId=first)["isLatestForTarget"] is False
    clock.advance(20)
    assert status(gg, second) == "COMPLETED"
    assert set(installed(gg, "core-1")) == {NUCLEUS, "com.example.A"}
    latest = gg.list_deployments(targetArn=world.arn("iot", "thing/core-1"))["deployments"]
    assert [d["deploymentId"] for d in latest] == [second]


def test_thing_and_group_deployments_combine(world: World, clock: VirtualClock, gg: Any) -> None:
    """A group deployment and a thing deployment both apply; replacing the thing's drops only its part."""
    world.greengrass.add_core_device("core-1", thing_groups=["fleet"])
    world.greengrass.add_core_device("core-2", thing_groups=["fleet"])
    register(world, "com.example.Fleet")
    register(world, "com.example.Own")
    group = deploy(world, gg, "thinggroup/fleet", {"com.example.Fleet": "1.0.0"})
    own = deploy(world, gg, "thing/core-1", {"com.example.Own": "1.0.0"})
    clock.advance(40)  # two queued deployments, one after the other
    assert set(installed(gg, "core-1", "ROOT")) == {"com.example.Fleet", "com.example.Own"}
    assert set(installed(gg, "core-2", "ROOT")) == {"com.example.Fleet"}
    assert status(gg, group) == "ACTIVE"  # thing-group deployments stay ACTIVE
    assert status(gg, own) == "COMPLETED"
    times = {e["deploymentId"]: e["modifiedTimestamp"] for e in executions(gg, "core-1").values()}
    assert (times[own] - times[group]).total_seconds() == 20
    deploy(world, gg, "thing/core-1", {})
    clock.advance(20)
    assert set(installed(gg, "core-1", "ROOT")) == {"com.example.Fleet"}


def test_conflicting_versions_across_targets_fail_the_new_deployment(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """The group pins C 1.0.0, the thing asks for C 2.0.0: the thing deployment FAILS, nothing changes."""
    world.greengrass.add_core_device("core-1", thing_groups=["fleet"])
    register(world, "com.example.C", "1.0.0")
    register(world, "com.example.C", "2.0.0")
    deploy(world, gg, "thinggroup/fleet", {"com.example.C": "1.0.0"})
    clock.advance(20)
    mine = deploy(world, gg, "thing/core-1", {"com.example.C": "2.0.0"})
    clock.advance(20)
    execution = executions(gg, "core-1")[mine]
    assert execution["coreDeviceExecutionStatus"] == "FAILED"
    assert execution["reason"].startswith("FAILED_NO_STATE_CHANGE")
    assert execution["statusDetails"]["errorStack"][-1] == "COMPONENT_VERSION_REQUIREMENTS_NOT_MET"
    assert execution["statusDetails"]["errorTypes"] == ["REQUEST_ERROR"]
    assert status(gg, mine) == "FAILED"
    assert installed(gg, "core-1")["com.example.C"]["componentVersion"] == "1.0.0"


def test_missing_dependency_fails_without_state_change(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """A HARD dependency on a component that does not exist: FAILED at once, nothing installed."""
    world.greengrass.add_core_device("core-1")
    register(
        world,
        "com.example.Needy",
        ComponentDependencies={"com.example.Ghost": {"VersionRequirement": "^1.0.0"}},
    )
    deployment_id = deploy(world, gg, "thing/core-1", {"com.example.Needy": "1.0.0"})
    execution = executions(gg, "core-1")[deployment_id]
    assert execution["coreDeviceExecutionStatus"] == "FAILED"
    assert "com.example.Ghost" in execution["reason"]
    assert execution["statusDetails"]["errorStack"][:2] == [
        "DEPLOYMENT_FAILURE",
        "NO_AVAILABLE_COMPONENT_VERSION",
    ]
    assert set(installed(gg, "core-1")) == {NUCLEUS}
    assert status(gg, deployment_id) == "FAILED"


def test_dependency_resolution_respects_ranges_and_platform(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """Ranges pick the highest fitting version (transitively); an arm-only component fails on amd64."""
    world.greengrass.add_core_device("core-1")
    for version in ("1.0.0", "1.4.0", "2.0.0"):
        register(world, "com.example.Lib", version)
    register(
        world,
        "com.example.Mid",
        ComponentDependencies={"com.example.Lib": {"VersionRequirement": "~1.0 || ^1.2.0"}},
    )
    register(
        world,
        "com.example.Top",
        ComponentDependencies={
            "com.example.Mid": {"VersionRequirement": ">=1.0.0", "DependencyType": "SOFT"}
        },
    )
    register(
        world,
        "com.example.Arm",
        Manifests=[{"Platform": {"os": "linux", "architecture": "aarch64"}}],
    )
    ok = deploy(world, gg, "thing/core-1", {"com.example.Top": "1.0.0"})
    clock.advance(20)
    assert executions(gg, "core-1")[ok]["coreDeviceExecutionStatus"] == "SUCCEEDED"
    versions = {n: c["componentVersion"] for n, c in installed(gg, "core-1").items()}
    assert versions["com.example.Lib"] == "1.4.0"
    assert versions["com.example.Mid"] == "1.0.0"
    bad = deploy(
        world, gg, "thing/core-1", {"com.example.Top": "1.0.0", "com.example.Arm": "1.0.0"}
    )
    clock.advance(20)
    assert executions(gg, "core-1")[bad]["coreDeviceExecutionStatus"] == "FAILED"
    assert "com.example.Arm" not in installed(gg, "core-1")


def test_install_failure_with_rollback_restores_previous_set(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """v2 fails to install under ROLLBACK: deployment FAILED, the device runs v1 again, stays HEALTHY."""
    world.greengrass.add_core_device("core-1")
    register(world, "com.example.App", "1.0.0")
    register(world, "com.example.App", "2.0.0")
    register(world, "com.example.Extra")
    deploy(world, gg, "thing/core-1", {"com.example.App": "1.0.0"})
    clock.advance(20)
    world.greengrass.fail_install("com.example.App", "2.0.0", message="exit 3")
    failing = deploy(
        world,
        gg,
        "thing/core-1",
        {"com.example.App": "2.0.0", "com.example.Extra": "1.0.0"},
        deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"},
    )
    clock.advance(20)
    execution = executions(gg, "core-1")[failing]
    assert execution["coreDeviceExecutionStatus"] == "FAILED"
    assert execution["reason"].startswith("FAILED_ROLLBACK_COMPLETE")
    assert "exit 3" in execution["reason"]
    assert execution["statusDetails"] == {
        "errorStack": ["DEPLOYMENT_FAILURE", "COMPONENT_UPDATE_ERROR", "COMPONENT_BROKEN"],
        "errorTypes": ["USER_COMPONENT_ERROR"],
    }
    assert status(gg, failing) == "FAILED"
    after = installed(gg, "core-1")
    assert set(after) == {NUCLEUS, "com.example.App"}
    assert (
        after["com.example.App"]["componentVersion"],
        after["com.example.App"]["lifecycleState"],
    ) == ("1.0.0", "RUNNING")
    assert gg.get_core_device(coreDeviceThingName="core-1")["status"] == "HEALTHY"


def test_install_failure_with_do_nothing_leaves_broken_until_reinstalled(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """DO_NOTHING: the component is BROKEN and the device UNHEALTHY; the next deployment reinstalls it."""
    world.greengrass.add_core_device("core-1")
    register(world, "com.example.App")
    world.greengrass.fail_install("com.example.App", times=1)
    failing = deploy(
        world,
        gg,
        "thing/core-1",
        {"com.example.App": "1.0.0"},
        deploymentPolicies={"failureHandlingPolicy": "DO_NOTHING"},
    )
    clock.advance(20)
    execution = executions(gg, "core-1")[failing]
    assert execution["coreDeviceExecutionStatus"] == "FAILED"
    assert execution["reason"].startswith("FAILED_ROLLBACK_NOT_REQUESTED")
    app = installed(gg, "core-1")["com.example.App"]
    assert app["lifecycleState"] == "BROKEN"
    assert app["lifecycleStatusCodes"] == ["INSTALL_ERROR"]
    assert "lifecycleStateDetails" in app
    core = gg.get_core_device(coreDeviceThingName="core-1")
    assert core["status"] == "UNHEALTHY"
    assert core["lastStatusUpdateTimestamp"].timestamp() == clock.now()
    retry = deploy(world, gg, "thing/core-1", {"com.example.App": "1.0.0"})
    clock.advance(20)
    assert executions(gg, "core-1")[retry]["coreDeviceExecutionStatus"] == "SUCCEEDED"
    assert installed(gg, "core-1")["com.example.App"]["lifecycleState"] == "RUNNING"
    assert installed(gg, "core-1")["com.example.App"]["lastInstallationSource"] == retry
    assert gg.get_core_device(coreDeviceThingName="core-1")["status"] == "HEALTHY"


def test_cancel_queued_and_in_progress_deployments(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """Canceling a queued deployment drops it; canceling one being installed aborts it cleanly."""
    world.greengrass.add_core_device("core-1", thing_groups=["fleet"])
    register(world, "com.example.G")
    register(world, "com.example.T")
    in_progress = deploy(world, gg, "thinggroup/fleet", {"com.example.G": "1.0.0"})
    queued = deploy(world, gg, "thing/core-1", {"com.example.T": "1.0.0"})
    states = executions(gg, "core-1")
    assert states[in_progress]["coreDeviceExecutionStatus"] == "IN_PROGRESS"
    assert states[queued]["coreDeviceExecutionStatus"] == "QUEUED"
    gg.cancel_deployment(deploymentId=queued)
    clock.advance(5)
    gg.cancel_deployment(deploymentId=in_progress)
    clock.advance(60)
    states = executions(gg, "core-1")
    assert states[queued]["coreDeviceExecutionStatus"] == "CANCELED"
    assert states[in_progress]["coreDeviceExecutionStatus"] == "CANCELED"
    assert set(installed(gg, "core-1")) == {NUCLEUS}
    assert status(gg, queued) == "CANCELED"
    assert status(gg, in_progress) == "CANCELED"


def test_superseded_queued_deployment_is_canceled_on_the_device(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """A queued deployment replaced before it starts never runs: its execution is CANCELED."""
    world.greengrass.add_core_device("core-1", thing_groups=["fleet"])
    register(world, "com.example.G")
    register(world, "com.example.T", "1.0.0")
    register(world, "com.example.T", "1.1.0")
    deploy(world, gg, "thinggroup/fleet", {"com.example.G": "1.0.0"})
    old = deploy(world, gg, "thing/core-1", {"com.example.T": "1.0.0"})
    new = deploy(world, gg, "thing/core-1", {"com.example.T": "1.1.0"})
    clock.advance(40)
    states = executions(gg, "core-1")
    assert states[old]["coreDeviceExecutionStatus"] == "CANCELED"
    assert states[new]["coreDeviceExecutionStatus"] == "SUCCEEDED"
    assert status(gg, old) == "INACTIVE"
    assert installed(gg, "core-1")["com.example.T"]["componentVersion"] == "1.1.0"


def test_configuration_update_merge_reset_and_listeners(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """Default config + merge; later reset and merge again; listeners hear each changed key path."""
    device = world.greengrass.add_core_device("core-1")
    heard: list[tuple[str, list[str]]] = []
    device.add_config_listener(lambda name, path: heard.append((name, path)))
    register(
        world,
        "com.example.Conf",
        ComponentConfiguration={
            "DefaultConfiguration": {"Interval": 30, "Model": {"Name": "m", "Threshold": "0.5"}}
        },
    )
    update = {"merge": json.dumps({"Model": {"Threshold": "0.7"}, "Extra": True})}
    deploy(
        world,
        gg,
        "thing/core-1",
        {"com.example.Conf": {"componentVersion": "1.0.0", "configurationUpdate": update}},
    )
    clock.advance(20)
    info = device.component("com.example.Conf")
    assert info is not None
    # Numbers come back as floats, as from the real nucleus.
    assert info.configuration == {
        "Interval": 30.0,
        "Model": {"Name": "m", "Threshold": "0.7"},
        "Extra": True,
    }
    assert heard == []  # a fresh install is not a change
    update = {"reset": ["/Model/Threshold", "/Extra"], "merge": json.dumps({"Interval": 5})}
    deploy(
        world,
        gg,
        "thing/core-1",
        {"com.example.Conf": {"componentVersion": "1.0.0", "configurationUpdate": update}},
    )
    clock.advance(20)
    info = device.component("com.example.Conf")
    assert info is not None
    assert info.configuration == {"Interval": 5.0, "Model": {"Name": "m", "Threshold": "0.5"}}
    assert sorted(heard) == [
        ("com.example.Conf", ["Extra"]),
        ("com.example.Conf", ["Interval"]),
        ("com.example.Conf", ["Model", "Threshold"]),
    ]
    heard.clear()
    deploy(
        world,
        gg,
        "thing/core-1",
        {"com.example.Conf": {"componentVersion": "1.0.0", "configurationUpdate": {"reset": [""]}}},
    )
    clock.advance(20)
    assert device.component("com.example.Conf").configuration["Interval"] == 30.0  # type: ignore[union-attr]
    assert heard == [("com.example.Conf", ["Interval"])]


def test_component_host_reads_and_report_state(world: World, clock: VirtualClock, gg: Any) -> None:
    """ComponentHost reads follow the clock without any API call; UpdateState drives health."""
    device = world.greengrass.add_core_device("core-1")
    register(world, "com.example.Ipc")
    deploy(world, gg, "thing/core-1", {"com.example.Ipc": "1.0.0"})
    clock.advance(20)
    info = device.component("com.example.Ipc")
    assert info is not None and (info.version, info.state) == ("1.0.0", "RUNNING")
    assert {c.name for c in device.components()} == {NUCLEUS, "com.example.Ipc"}
    assert device.component("com.example.None") is None
    clock.advance(10)
    device.report_state("com.example.Ipc", "ERRORED")
    core = gg.get_core_device(coreDeviceThingName="core-1")
    assert core["status"] == "UNHEALTHY"
    assert core["lastStatusUpdateTimestamp"].timestamp() == clock.now()
    item = installed(gg, "core-1")["com.example.Ipc"]
    assert item["lifecycleState"] == "ERRORED"
    assert item["lastStatusChangeTimestamp"].timestamp() == clock.now()
    device.report_state("com.example.Ipc", "RUNNING")
    assert gg.get_core_device(coreDeviceThingName="core-1")["status"] == "HEALTHY"
    with pytest.raises(ValueError):
        device.report_state("com.example.Ipc", "BROKEN")
    with pytest.raises(KeyError):
        device.report_state("com.example.None", "RUNNING")


def test_devices_added_later_receive_existing_deployments(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """A device joining a group gets the group's deployment; a thing deployment waits for its device."""
    world.greengrass.add_core_device("core-1", thing_groups=["fleet"])
    world.client("iot").create_thing(thingName="core-2")
    register(world, "com.example.G")
    register(world, "com.example.T")
    deploy(world, gg, "thinggroup/fleet", {"com.example.G": "1.0.0"})
    waiting = deploy(world, gg, "thing/core-2", {"com.example.T": "1.0.0"})
    clock.advance(100)
    assert status(gg, waiting) == "ACTIVE"  # no core device yet
    world.greengrass.add_core_device("core-2", thing_groups=["fleet"])
    clock.advance(40)
    assert set(installed(gg, "core-2", "ROOT")) == {"com.example.G", "com.example.T"}
    assert status(gg, waiting) == "COMPLETED"


def test_group_deployment_reaches_nested_groups_and_many_devices(
    world: World, clock: VirtualClock, gg: Any
) -> None:
    """A parent-group deployment reaches 30 devices in a child group; ticking idle devices is cheap."""
    world.client("iot").create_thing_group(thingGroupName="site")
    world.client("iot").create_thing_group(thingGroupName="line", parentGroupName="site")
    for index in range(30):
        world.greengrass.add_core_device(f"core-{index}", thing_groups=["line"])
    register(world, "com.example.Wide")
    world.greengrass.install_seconds = 5
    deploy(world, gg, "thinggroup/site", {"com.example.Wide": "1.0.0"})
    clock.advance(5)
    world.tick()
    assert all(
        d.component("com.example.Wide") is not None
        and d.component("com.example.Wide").state == "RUNNING"  # type: ignore[union-attr]
        for d in world.greengrass.devices.values()
    )
    pages = list(gg.get_paginator("list_core_devices").paginate(PaginationConfig={"PageSize": 7}))
    assert sum(len(p["coreDevices"]) for p in pages) == 30
    started = time.perf_counter()
    for _ in range(20_000):
        world.greengrass.tick(clock.now())
    assert time.perf_counter() - started < 0.5


def test_list_operations_paginate_device_views(world: World, clock: VirtualClock, gg: Any) -> None:
    """ListInstalledComponents and ListEffectiveDeployments page through nextToken."""
    world.greengrass.add_core_device("core-1")
    names = [f"com.example.P{i}" for i in range(5)]
    for name in names:
        register(world, name)
    for count in (1, 3, 5):
        deploy(world, gg, "thing/core-1", {n: "1.0.0" for n in names[:count]})
        clock.advance(20)
    first = gg.list_installed_components(coreDeviceThingName="core-1", maxResults=2)
    assert len(first["installedComponents"]) == 2 and "nextToken" in first
    assert set(installed(gg, "core-1", "ROOT")) == set(names)
    page = gg.list_effective_deployments(coreDeviceThingName="core-1", maxResults=2)
    assert len(page["effectiveDeployments"]) == 2
    assert len(executions(gg, "core-1")) == 3
