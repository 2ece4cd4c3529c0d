"""The Greengrass V2 control-plane emulator, through the real current boto3 client.

Every request goes through botocore's serializer, signer, retry logic and parser (the
in-process transport only skips the socket), so these tests pin what the agent sees.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import botocore.retries.standard
import botocore.session
import pytest
from botocore.config import Config

from localcloud.clock import VirtualClock
from localcloud.http import Headers, Request, ServiceError
from localcloud.transport import world_client
from localcloud.world import World

EDGE_AGENT = "aws.iot.lookoutvision.EdgeAgent"
NUCLEUS = "aws.greengrass.Nucleus"
TES = "aws.greengrass.TokenExchangeService"
AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/greengrass/aws4_request, "
    "SignedHeaders=host, Signature=00"
)


#: One botocore session for every client here: it caches the service model between tests.
SESSION = botocore.session.get_session()


def client(world: World, **kwargs: Any) -> Any:
    """A real boto3 ``greengrassv2`` client answered in-process by ``world``."""
    return world_client(world, "greengrassv2", botocore_session=SESSION, **kwargs)


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
    return client(world)


@pytest.fixture
def raw_gg(world: World) -> Any:
    """A client that skips botocore's parameter validation, to send what the server must reject."""
    return client(world, config=Config(parameter_validation=False))


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """botocore retries without waiting (its backoff is real time; ours is a test)."""
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda *_: 0)
    yield


def _next_second(world: World) -> None:
    """Move the world clock past CreateComponentVersion's 1 request/s quota."""
    clock = world.clock
    assert isinstance(clock, VirtualClock)
    clock.advance(1.0)


def recipe(name: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDescription": f"{name} for tests",
        "ComponentPublisher": "tests",
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "sleep 1"}}],
    }
    body.update(extra)
    return body


def thing_arn(world: World, name: str) -> str:
    return world.arn("iot", f"thing/{name}")


def group_arn(world: World, name: str) -> str:
    return world.arn("iot", f"thinggroup/{name}")


def deployment_count(gg: Any) -> int:
    return sum(
        len(page["deployments"])
        for page in gg.get_paginator("list_deployments").paginate(historyFilter="ALL")
    )


def raw(
    world: World, method: str, path: str, body: bytes = b"", **query: str
) -> tuple[int, dict[str, Any]]:
    """One request straight into World.dispatch (for bodies botocore would never send)."""
    request = Request(
        method,
        path,
        {k: [v] for k, v in query.items()},
        Headers({"Authorization": AUTH, "Content-Type": "application/json"}),
        body,
    )
    response = world.dispatch(request)
    return response.status, json.loads(response.body or b"{}")


# -- components -------------------------------------------------------------------------------


def test_create_component_version_from_json_recipe_and_describe_it(world: World, gg: Any) -> None:
    """A JSON inline recipe registers a DEPLOYABLE private component; DescribeComponent shows it."""
    created = gg.create_component_version(inlineRecipe=json.dumps(recipe("com.example.A")).encode())
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["arn"] == (
        f"arn:aws:greengrass:{world.region}:{world.account_id}:components:com.example.A:versions:1.0.0"
    )
    assert created["status"]["componentState"] == "DEPLOYABLE"
    described = gg.describe_component(arn=created["arn"])
    assert described["componentName"] == "com.example.A"
    assert described["componentVersion"] == "1.0.0"
    assert described["publisher"] == "tests"
    assert described["platforms"] == [{"name": "linux", "attributes": {"os": "linux"}}]
    assert described["creationTimestamp"].timestamp() == pytest.approx(world.clock.now())


def test_create_component_version_from_yaml_recipe(gg: Any) -> None:
    """PyYAML is installed, so a YAML recipe (unquoted date included) is accepted like JSON."""
    yaml_recipe = (
        "RecipeFormatVersion: 2020-01-25\n"
        "ComponentName: com.example.Yaml\n"
        "ComponentVersion: 2.1.0\n"
        "ComponentConfiguration:\n  DefaultConfiguration:\n    Threshold: '0.5'\n"
        "Manifests:\n  - Platform:\n      os: linux\n"
    )
    created = gg.create_component_version(inlineRecipe=yaml_recipe.encode())
    assert created["componentVersion"] == "2.1.0"
    got = gg.get_component(arn=created["arn"], recipeOutputFormat="JSON")
    assert json.loads(got["recipe"])["ComponentConfiguration"]["DefaultConfiguration"] == {
        "Threshold": "0.5"
    }


def test_existing_component_version_is_a_conflict(world: World, gg: Any) -> None:
    """Creating a name+version that exists raises ConflictException (409) (a second
    later: CreateComponentVersion's quota is 1 request/s)."""
    body = json.dumps(recipe("com.example.Dup")).encode()
    gg.create_component_version(inlineRecipe=body)
    _next_second(world)
    with pytest.raises(gg.exceptions.ConflictException) as caught:
        gg.create_component_version(inlineRecipe=body)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_create_component_version_replays_same_client_token(world: World, gg: Any) -> None:
    """The same clientToken and recipe within 8 hours returns the first answer, not a conflict."""
    body = json.dumps(recipe("com.example.Token")).encode()
    first = gg.create_component_version(inlineRecipe=body, clientToken="tok-1")
    _next_second(world)
    again = gg.create_component_version(inlineRecipe=body, clientToken="tok-1")
    assert again["arn"] == first["arn"]
    assert again["creationTimestamp"] == first["creationTimestamp"]


def test_python_api_registers_and_reports_component_versions(world: World, gg: Any) -> None:
    """register_component_version returns the ARN, refuses duplicates; component_version_exists agrees."""
    emulator = world.greengrass
    arn = emulator.register_component_version(recipe("com.example.Py", "3.0.0"))
    assert arn.endswith(":components:com.example.Py:versions:3.0.0")
    assert emulator.component_version_exists("com.example.Py", "3.0.0")
    assert not emulator.component_version_exists("com.example.Py", "3.0.1")
    with pytest.raises(ServiceError) as caught:
        emulator.register_component_version(recipe("com.example.Py", "3.0.0"))
    assert caught.value.code == "ConflictException"
    with pytest.raises(ServiceError) as invalid:
        emulator.register_component_version({"ComponentName": "x"})
    assert invalid.value.code == "ValidationException"
    assert gg.describe_component(arn=arn)["componentVersion"] == "3.0.0"


def test_public_components_are_registered_at_start(world: World, gg: Any) -> None:
    """EdgeAgent, Nucleus and TokenExchangeService exist as AWS-owned components."""
    for name in (EDGE_AGENT, NUCLEUS, TES):
        arn = f"arn:aws:greengrass:{world.region}:aws:components:{name}"
        versions = gg.list_component_versions(arn=arn)["componentVersions"]
        assert versions, name
        described = gg.describe_component(arn=versions[0]["arn"])
        assert described["publisher"] == "AWS"
    edge = gg.list_component_versions(
        arn=f"arn:aws:greengrass:{world.region}:aws:components:{EDGE_AGENT}"
    )
    assert [v["componentVersion"] for v in edge["componentVersions"]] == ["1.1.0", "1.0.0"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (recipe("com.example.Bad", RecipeFormatVersion="2019-01-01"), "wrong RecipeFormatVersion"),
        ({"RecipeFormatVersion": "2020-01-25", "ComponentVersion": "1.0.0"}, "no ComponentName"),
        (recipe("com.example.Bad", "1.0"), "version is not major.minor.patch"),
        (recipe("bad name!"), "ComponentName has illegal characters"),
        (
            recipe("com.example.Bad", ComponentDependencies={"x": {"VersionRequirement": ">>1"}}),
            "unparseable VersionRequirement",
        ),
        (
            recipe("com.example.Bad", ComponentDependencies={"x": {"DependencyType": "MAYBE"}}),
            "DependencyType not HARD/SOFT",
        ),
        (
            recipe("com.example.Bad", ComponentConfiguration={"DefaultConfiguration": [1]}),
            "DefaultConfiguration not an object",
        ),
        (recipe("com.example.Bad", Manifests={"os": "linux"}), "Manifests not a list"),
        ("[1, 2]", "recipe is a list"),
        ("key: [unclosed", "neither JSON nor YAML"),
    ],
)
def test_invalid_recipes_are_rejected(gg: Any, body: Any, why: str) -> None:
    """Each broken recipe is a ValidationException and registers nothing."""
    text = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(gg.exceptions.ValidationException):
        gg.create_component_version(inlineRecipe=text.encode())
    with pytest.raises(gg.exceptions.ResourceNotFoundException):
        gg.list_component_versions(
            arn="arn:aws:greengrass:us-east-1:123456789012:components:com.example.Bad"
        )


def test_create_component_version_needs_inline_recipe(world: World, raw_gg: Any) -> None:
    """Neither source given, or a lambdaFunction source (not emulated), is a ValidationException."""
    with pytest.raises(raw_gg.exceptions.ValidationException):
        raw_gg.create_component_version()
    _next_second(world)
    with pytest.raises(raw_gg.exceptions.ValidationException):
        raw_gg.create_component_version(
            lambdaFunction={"lambdaArn": "arn:aws:lambda:us-east-1:1:function:f:1"}
        )


def test_describe_component_errors(gg: Any, raw_gg: Any) -> None:
    """An unknown version ARN is ResourceNotFoundException; a malformed ARN is ValidationException."""
    missing = "arn:aws:greengrass:us-east-1:123456789012:components:com.example.None:versions:1.0.0"
    with pytest.raises(gg.exceptions.ResourceNotFoundException) as caught:
        gg.describe_component(arn=missing)
    assert caught.value.response["resourceId"] == missing
    with pytest.raises(raw_gg.exceptions.ValidationException):
        raw_gg.describe_component(arn="not-an-arn")


def test_list_component_versions_paginates_newest_first(world: World, gg: Any) -> None:
    """Five versions come back newest first, two per page, in three pages."""
    for version in ("1.0.0", "1.10.0", "1.2.0", "2.0.0", "1.2.1"):
        world.greengrass.register_component_version(recipe("com.example.Paged", version))
    arn = f"arn:aws:greengrass:us-east-1:{world.account_id}:components:com.example.Paged"
    pages = list(
        gg.get_paginator("list_component_versions").paginate(
            arn=arn, PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(p["componentVersions"]) for p in pages] == [2, 2, 1]
    versions = [v["componentVersion"] for p in pages for v in p["componentVersions"]]
    assert versions == ["2.0.0", "1.10.0", "1.2.1", "1.2.0", "1.0.0"]


# -- deployments: validation -----------------------------------------------------------------


def _valid_deployment(world: World) -> dict[str, Any]:
    return {
        "targetArn": thing_arn(world, "core-1"),
        "deploymentName": "d",
        "components": {EDGE_AGENT: {"componentVersion": "1.1.0"}},
    }


def _with(path: str, value: Any) -> Any:
    def change(request: dict[str, Any]) -> None:
        keys = path.split(".")
        node = request
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return change


ROLL = "iotJobConfiguration.jobExecutionsRolloutConfig"
BAD_DEPLOYMENTS = [
    (
        "targetArn",
        _with("targetArn", "arn:aws:iot:us-east-1:123456789012:widget/x"),
        "ValidationException",
    ),
    ("targetArn type", _with("targetArn", 12), "ValidationException"),
    (
        "thing missing",
        _with("targetArn", "arn:aws:iot:us-east-1:123456789012:thing/nope"),
        "ResourceNotFoundException",
    ),
    (
        "group missing",
        _with("targetArn", "arn:aws:iot:us-east-1:123456789012:thinggroup/nope"),
        "ResourceNotFoundException",
    ),
    (
        "other account",
        _with("targetArn", "arn:aws:iot:us-east-1:999999999999:thing/core-1"),
        "ResourceNotFoundException",
    ),
    (
        "other region",
        _with("targetArn", "arn:aws:iot:eu-west-1:123456789012:thing/core-1"),
        "ResourceNotFoundException",
    ),
    ("deploymentName empty", _with("deploymentName", ""), "ValidationException"),
    ("componentVersion missing", _with("components", {EDGE_AGENT: {}}), "ValidationException"),
    (
        "component unknown",
        _with("components", {"com.example.None": {"componentVersion": "1.0.0"}}),
        "ResourceNotFoundException",
    ),
    (
        "version unknown",
        _with("components", {EDGE_AGENT: {"componentVersion": "9.9.9"}}),
        "ResourceNotFoundException",
    ),
    (
        "merge not JSON",
        _with(
            "components",
            {EDGE_AGENT: {"componentVersion": "1.1.0", "configurationUpdate": {"merge": "{nope"}}},
        ),
        "ValidationException",
    ),
    (
        "merge not an object",
        _with(
            "components",
            {EDGE_AGENT: {"componentVersion": "1.1.0", "configurationUpdate": {"merge": "[1]"}}},
        ),
        "ValidationException",
    ),
    (
        "reset not a pointer",
        _with(
            "components",
            {
                EDGE_AGENT: {
                    "componentVersion": "1.1.0",
                    "configurationUpdate": {"reset": ["Socket"]},
                }
            },
        ),
        "ValidationException",
    ),
    (
        "runWith memory < 0",
        _with(
            "components",
            {
                EDGE_AGENT: {
                    "componentVersion": "1.1.0",
                    "runWith": {"systemResourceLimits": {"memory": -1}},
                }
            },
        ),
        "ValidationException",
    ),
    (
        "failureHandlingPolicy",
        _with("deploymentPolicies.failureHandlingPolicy", "SOMETIMES"),
        "ValidationException",
    ),
    (
        "componentUpdatePolicy.action",
        _with("deploymentPolicies.componentUpdatePolicy.action", "NOTIFY"),
        "ValidationException",
    ),
    (
        "componentUpdatePolicy.timeout type",
        _with("deploymentPolicies.componentUpdatePolicy.timeoutInSeconds", "60"),
        "ValidationException",
    ),
    (
        "configurationValidationPolicy type",
        _with("deploymentPolicies.configurationValidationPolicy.timeoutInSeconds", 1.5),
        "ValidationException",
    ),
    ("maximumPerMinute 0", _with(f"{ROLL}.maximumPerMinute", 0), "ValidationException"),
    ("maximumPerMinute 1001", _with(f"{ROLL}.maximumPerMinute", 1001), "ValidationException"),
    (
        "exponentialRate incomplete",
        _with(f"{ROLL}.exponentialRate", {"baseRatePerMinute": 5}),
        "ValidationException",
    ),
    (
        "incrementFactor 6",
        _with(
            f"{ROLL}.exponentialRate",
            {
                "baseRatePerMinute": 5,
                "incrementFactor": 6,
                "rateIncreaseCriteria": {"numberOfNotifiedThings": 1},
            },
        ),
        "ValidationException",
    ),
    (
        "rate criteria both",
        _with(
            f"{ROLL}.exponentialRate",
            {
                "baseRatePerMinute": 5,
                "incrementFactor": 2,
                "rateIncreaseCriteria": {"numberOfNotifiedThings": 1, "numberOfSucceededThings": 1},
            },
        ),
        "ValidationException",
    ),
    (
        "rate criteria none",
        _with(
            f"{ROLL}.exponentialRate",
            {"baseRatePerMinute": 5, "incrementFactor": 2, "rateIncreaseCriteria": {}},
        ),
        "ValidationException",
    ),
    (
        "abort criteria empty",
        _with("iotJobConfiguration.abortConfig", {"criteriaList": []}),
        "ValidationException",
    ),
    (
        "abort action",
        _with(
            "iotJobConfiguration.abortConfig",
            {
                "criteriaList": [
                    {
                        "failureType": "FAILED",
                        "action": "PAUSE",
                        "thresholdPercentage": 10,
                        "minNumberOfExecutedThings": 1,
                    }
                ]
            },
        ),
        "ValidationException",
    ),
    (
        "abort failureType",
        _with(
            "iotJobConfiguration.abortConfig",
            {
                "criteriaList": [
                    {
                        "failureType": "SAD",
                        "action": "CANCEL",
                        "thresholdPercentage": 10,
                        "minNumberOfExecutedThings": 1,
                    }
                ]
            },
        ),
        "ValidationException",
    ),
    (
        "abort threshold > 100",
        _with(
            "iotJobConfiguration.abortConfig",
            {
                "criteriaList": [
                    {
                        "failureType": "ALL",
                        "action": "CANCEL",
                        "thresholdPercentage": 101,
                        "minNumberOfExecutedThings": 1,
                    }
                ]
            },
        ),
        "ValidationException",
    ),
    (
        "timeout 0 minutes",
        _with("iotJobConfiguration.timeoutConfig.inProgressTimeoutInMinutes", 0),
        "ValidationException",
    ),
    ("tag key empty", _with("tags", {"": "v"}), "ValidationException"),
    ("tag value too long", _with("tags", {"k": "v" * 257}), "ValidationException"),
    ("tags empty map", _with("tags", {}), "ValidationException"),
    ("clientToken pattern", _with("clientToken", "not ok!"), "ValidationException"),
    ("clientToken too long", _with("clientToken", "a" * 65), "ValidationException"),
    (
        "parentTargetArn is a thing",
        _with("parentTargetArn", "arn:aws:iot:us-east-1:123456789012:thing/core-1"),
        "ValidationException",
    ),
    (
        "parentTargetArn missing",
        _with("parentTargetArn", "arn:aws:iot:us-east-1:123456789012:thinggroup/nope"),
        "ResourceNotFoundException",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "error"), BAD_DEPLOYMENTS, ids=[c[0] for c in BAD_DEPLOYMENTS]
)
def test_create_deployment_rejects_invalid_input(
    world: World, gg: Any, raw_gg: Any, case: str, change: Any, error: str
) -> None:
    """Each invalid CreateDeployment raises the documented error and creates no deployment."""
    world.greengrass.add_core_device("core-1")
    request = _valid_deployment(world)
    change(request)
    with pytest.raises(getattr(raw_gg.exceptions, error)) as caught:
        raw_gg.create_deployment(**request)
    assert caught.value.response["Error"]["Code"] == error
    assert deployment_count(gg) == 0
    assert world.greengrass.devices["core-1"].effective_deployments() == []


def test_create_deployment_accepts_full_valid_input_and_get_deployment_echoes_it(
    world: World, gg: Any
) -> None:
    """A deployment with every optional member is created (201) and GetDeployment returns it all."""
    world.greengrass.add_core_device("core-1", thing_groups=["parent"])
    job = {
        "jobExecutionsRolloutConfig": {
            "exponentialRate": {
                "baseRatePerMinute": 5,
                "incrementFactor": 1.5,
                "rateIncreaseCriteria": {"numberOfSucceededThings": 2},
            },
            "maximumPerMinute": 100,
        },
        "abortConfig": {
            "criteriaList": [
                {
                    "failureType": "ALL",
                    "action": "CANCEL",
                    "thresholdPercentage": 50.0,
                    "minNumberOfExecutedThings": 1,
                }
            ]
        },
        "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
    }
    components = {
        EDGE_AGENT: {
            "componentVersion": "1.1.0",
            "configurationUpdate": {"merge": '{"Socket": "unix:///tmp/x.sock"}', "reset": [""]},
            "runWith": {
                "posixUser": "ggc_user",
                "systemResourceLimits": {"memory": 1024, "cpus": 0.5},
            },
        }
    }
    created = gg.create_deployment(
        targetArn=thing_arn(world, "core-1"),
        deploymentName="full",
        components=components,
        deploymentPolicies={"failureHandlingPolicy": "DO_NOTHING"},
        iotJobConfiguration=job,
        parentTargetArn=group_arn(world, "parent"),
        tags={"team": "vision"},
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["iotJobArn"] == world.arn("iot", f"job/{created['iotJobId']}")
    got = gg.get_deployment(deploymentId=created["deploymentId"])
    assert got["deploymentName"] == "full"
    assert got["components"] == components
    assert got["iotJobConfiguration"] == job
    assert got["tags"] == {"team": "vision"}
    assert got["parentTargetArn"] == group_arn(world, "parent")
    assert got["deploymentStatus"] == "ACTIVE"
    assert got["isLatestForTarget"] is True
    assert got["revisionId"] == "1"
    # Unspecified policies are filled with the service defaults.
    assert got["deploymentPolicies"] == {
        "failureHandlingPolicy": "DO_NOTHING",
        "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
        "configurationValidationPolicy": {"timeoutInSeconds": 30},
    }


def test_get_deployment_unknown_is_not_found(gg: Any) -> None:
    """GetDeployment of an unknown id raises ResourceNotFoundException (404)."""
    with pytest.raises(gg.exceptions.ResourceNotFoundException) as caught:
        gg.get_deployment(deploymentId="nope")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# -- deployments: idempotency ------------------------------------------------------------------


def test_client_token_replays_same_deployment(world: World, gg: Any) -> None:
    """Same clientToken + same input returns the same deploymentId and creates one deployment."""
    world.greengrass.add_core_device("core-1")
    request = {**_valid_deployment(world), "clientToken": "retry-1"}
    first = gg.create_deployment(**request)
    world.clock.advance(3600)
    second = gg.create_deployment(**request)
    assert second["deploymentId"] == first["deploymentId"]
    assert second["iotJobId"] == first["iotJobId"]
    assert deployment_count(gg) == 1


def test_client_token_with_different_input_is_a_conflict(world: World, gg: Any) -> None:
    """Reusing a clientToken with different input within 8 hours raises ConflictException."""
    world.greengrass.add_core_device("core-1")
    gg.create_deployment(**_valid_deployment(world), clientToken="retry-2")
    changed = {**_valid_deployment(world), "deploymentName": "other"}
    with pytest.raises(gg.exceptions.ConflictException) as caught:
        gg.create_deployment(**changed, clientToken="retry-2")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert deployment_count(gg) == 1


def test_client_token_expires_after_eight_hours(world: World, clock: VirtualClock, gg: Any) -> None:
    """Just before 8 h the token still replays; at 8 h it is forgotten and creates anew."""
    world.greengrass.add_core_device("core-1")
    request = {**_valid_deployment(world), "clientToken": "retry-3"}
    first = gg.create_deployment(**request)["deploymentId"]
    clock.advance(8 * 3600 - 1)
    assert gg.create_deployment(**request)["deploymentId"] == first
    clock.advance(1)
    second = gg.create_deployment(**request)["deploymentId"]
    assert second != first
    changed = {**request, "deploymentName": "different"}
    clock.advance(8 * 3600)
    assert gg.create_deployment(**changed)["deploymentId"] not in (first, second)


# -- deployments: listing, cancel ---------------------------------------------------------------


def test_list_deployments_filters_history_and_target(world: World, gg: Any) -> None:
    """LATEST_ONLY (the default) shows one per target; ALL shows revisions; targetArn filters."""
    world.greengrass.add_core_device("core-1")
    world.greengrass.add_core_device("core-2")
    one = thing_arn(world, "core-1")
    first = gg.create_deployment(**_valid_deployment(world))["deploymentId"]
    second = gg.create_deployment(**_valid_deployment(world))["deploymentId"]
    other = gg.create_deployment(
        **{**_valid_deployment(world), "targetArn": thing_arn(world, "core-2")}
    )
    latest = gg.list_deployments()["deployments"]
    assert {d["deploymentId"] for d in latest} == {second, other["deploymentId"]}
    everything = gg.list_deployments(historyFilter="ALL")["deployments"]
    assert [d["deploymentId"] for d in everything] == [other["deploymentId"], second, first]
    mine = gg.list_deployments(targetArn=one, historyFilter="ALL")["deployments"]
    assert [(d["deploymentId"], d["revisionId"], d["isLatestForTarget"]) for d in mine] == [
        (second, "2", True),
        (first, "1", False),
    ]
    assert gg.get_deployment(deploymentId=first)["deploymentStatus"] == "INACTIVE"
    only = gg.list_deployments(targetArn=one, historyFilter="LATEST_ONLY")["deployments"]
    assert [d["deploymentId"] for d in only] == [second]


def test_list_deployments_paginates(world: World, gg: Any) -> None:
    """Seven deployments list in pages of three through the boto3 paginator."""
    for index in range(7):
        world.greengrass.add_core_device(f"core-{index}")
        gg.create_deployment(
            **{**_valid_deployment(world), "targetArn": thing_arn(world, f"core-{index}")}
        )
    pages = list(gg.get_paginator("list_deployments").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["deployments"]) for p in pages] == [3, 3, 1]
    assert len({d["deploymentId"] for p in pages for d in p["deployments"]}) == 7


def test_list_operations_reject_bad_pagination(world: World, raw_gg: Any) -> None:
    """maxResults outside 1..100 and a forged nextToken are ValidationException."""
    world.greengrass.add_core_device("core-1")
    for kwargs in ({"maxResults": 101}, {"maxResults": 0}, {"nextToken": "forged"}):
        with pytest.raises(raw_gg.exceptions.ValidationException):
            raw_gg.list_deployments(**kwargs)
        with pytest.raises(raw_gg.exceptions.ValidationException):
            raw_gg.list_installed_components(coreDeviceThingName="core-1", **kwargs)
    with pytest.raises(raw_gg.exceptions.ValidationException):
        raw_gg.list_deployments(historyFilter="SOME")
    with pytest.raises(raw_gg.exceptions.ValidationException):
        raw_gg.list_installed_components(coreDeviceThingName="core-1", topologyFilter="LEAVES")


def test_cancel_deployment(world: World, gg: Any) -> None:
    """CancelDeployment makes an ACTIVE deployment CANCELED; again is a conflict; unknown is 404."""
    world.greengrass.add_core_device("core-1")
    deployment_id = gg.create_deployment(**_valid_deployment(world))["deploymentId"]
    answer = gg.cancel_deployment(deploymentId=deployment_id)
    assert "message" in answer
    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "CANCELED"
    with pytest.raises(gg.exceptions.ConflictException):
        gg.cancel_deployment(deploymentId=deployment_id)
    with pytest.raises(gg.exceptions.ResourceNotFoundException):
        gg.cancel_deployment(deploymentId="nope")


# -- core devices ------------------------------------------------------------------------------


def test_core_device_operations_on_unknown_device_are_not_found(world: World, gg: Any) -> None:
    """A thing that is not a core device: GetCoreDevice, ListEffective/InstalledComponents are 404."""
    world.client("iot").create_thing(thingName="plain-thing")
    for call in (
        gg.get_core_device,
        gg.list_effective_deployments,
        gg.list_installed_components,
    ):
        with pytest.raises(gg.exceptions.ResourceNotFoundException):
            call(coreDeviceThingName="plain-thing")


def test_add_core_device_creates_thing_groups_and_reports_healthy(world: World, gg: Any) -> None:
    """add_core_device creates the IoT thing and groups; GetCoreDevice reports a HEALTHY nucleus."""
    device = world.greengrass.add_core_device(
        "core-9", thing_groups=["line-a"], architecture="aarch64"
    )
    assert world.greengrass.devices["core-9"] is device
    iot = world.client("iot")
    assert iot.describe_thing(thingName="core-9")["thingName"] == "core-9"
    groups = iot.list_thing_groups_for_thing(thingName="core-9")["thingGroups"]
    assert [g["groupName"] for g in groups] == ["line-a"]
    got = gg.get_core_device(coreDeviceThingName="core-9")
    assert got["status"] == "HEALTHY"
    assert got["architecture"] == "aarch64"
    assert got["platform"] == "linux"
    assert got["coreVersion"] == "2.14.3"
    assert got["runtime"] == "aws_nucleus_classic"
    listed = gg.list_core_devices(thingGroupArn=group_arn(world, "line-a"))["coreDevices"]
    assert [d["coreDeviceThingName"] for d in listed] == ["core-9"]
    assert world.greengrass.add_core_device("core-9") is device


def test_add_core_devices_seeds_things_group_and_existing_group_deployments(
    world: World, gg: Any
) -> None:
    """Bulk-added core devices are real IoT things in the group (through the API), receive
    the group's active deployment like one-at-a-time devices, and a thing deployment to
    one of them finds its thing."""
    world.greengrass.register_component_version(recipe("com.example.Bulk"))
    world.greengrass.add_core_devices([("early-1", "amd64")], thing_group="bulk")
    gg.create_deployment(
        targetArn=group_arn(world, "bulk"),
        components={"com.example.Bulk": {"componentVersion": "1.0.0"}},
    )
    added = world.greengrass.add_core_devices(
        [("bulk-1", "aarch64"), ("bulk-2", "amd64")], thing_group="bulk"
    )
    assert [d.thing_name for d in added] == ["bulk-1", "bulk-2"]
    iot = world.client("iot")
    assert iot.describe_thing(thingName="bulk-1")["thingArn"] == thing_arn(world, "bulk-1")
    members = iot.list_things_in_thing_group(thingGroupName="bulk")["things"]
    assert sorted(members) == ["bulk-1", "bulk-2", "early-1"]
    world.clock.advance(60)
    world.tick()
    for name in ("early-1", "bulk-1", "bulk-2"):
        installed = gg.list_installed_components(coreDeviceThingName=name)["installedComponents"]
        assert [c["componentName"] for c in installed] == ["com.example.Bulk"]
    assert gg.get_core_device(coreDeviceThingName="bulk-1")["architecture"] == "aarch64"
    mine = gg.create_deployment(
        targetArn=thing_arn(world, "bulk-2"),
        components={"com.example.Bulk": {"componentVersion": "1.0.0"}},
    )["deploymentId"]
    listed = gg.list_deployments(targetArn=thing_arn(world, "bulk-2"))["deployments"]
    assert [d["deploymentId"] for d in listed] == [mine]
    with pytest.raises(gg.exceptions.ResourceNotFoundException):
        gg.create_deployment(
            targetArn=thing_arn(world, "never-added"),
            components={"com.example.Bulk": {"componentVersion": "1.0.0"}},
        )
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName="never-added")


def test_staggered_device_steps_each_run_once_in_time_order(world: World, gg: Any) -> None:
    """Devices whose installs finish at different times each finish when their own time
    comes: a tick at the first one's time finishes only that one."""
    world.greengrass.register_component_version(recipe("com.example.Staggered"))
    for name in ("core-a", "core-b"):
        world.greengrass.add_core_device(name)
    spec = {"com.example.Staggered": {"componentVersion": "1.0.0"}}
    gg.create_deployment(targetArn=thing_arn(world, "core-a"), components=spec)
    world.clock.advance(5)
    gg.create_deployment(targetArn=thing_arn(world, "core-b"), components=spec)
    install = world.greengrass.install_seconds
    world.clock.advance(install - 5)
    world.tick()

    def states() -> list[str]:
        return [
            gg.list_effective_deployments(coreDeviceThingName=name)["effectiveDeployments"][0][
                "coreDeviceExecutionStatus"
            ]
            for name in ("core-a", "core-b")
        ]

    assert states() == ["SUCCEEDED", "IN_PROGRESS"]
    world.clock.advance(5)
    world.tick()
    assert states() == ["SUCCEEDED", "SUCCEEDED"]


# -- wire-level errors --------------------------------------------------------------------------


def test_injected_server_errors_surface_after_boto3_retries(world: World, no_backoff: None) -> None:
    """Five injected 5xx on CreateDeployment: boto3 retries, then raises InternalServerException."""
    world.greengrass.add_core_device("core-1")
    retrying = client(world, config=Config(retries={"mode": "standard", "total_max_attempts": 5}))
    world.faults.inject("greengrass", "CreateDeployment", "5xx", times=5)
    with pytest.raises(retrying.exceptions.InternalServerException) as caught:
        retrying.create_deployment(**_valid_deployment(world))
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 4
    assert world.calls.counts("greengrass")["CreateDeployment"] == 5
    assert deployment_count(retrying) == 0
    # The fault is spent: the next call succeeds.
    assert retrying.create_deployment(**_valid_deployment(world))["deploymentId"]


def test_injected_throttling_is_retried_then_succeeds(world: World, no_backoff: None) -> None:
    """Two throttles then success: boto3 retries ThrottlingException and returns the answer."""
    retrying = client(world, config=Config(retries={"mode": "standard", "total_max_attempts": 3}))
    world.faults.inject("greengrass", "ListDeployments", "throttle", times=2)
    answer = retrying.list_deployments()
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    world.faults.inject("greengrass", "ListDeployments", "throttle", times=3)
    with pytest.raises(retrying.exceptions.ThrottlingException):
        retrying.list_deployments()


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    [
        ("POST", "/greengrass/v2/deployments", b"{not json", "CANNOT_PARSE"),
        ("POST", "/greengrass/v2/deployments", b"[1, 2]", "CANNOT_PARSE"),
        ("POST", "/greengrass/v2/deployments", b"", "FIELD_VALIDATION_FAILED"),
        ("POST", "/greengrass/v2/deployments", b'{"targetArn": 5}', "FIELD_VALIDATION_FAILED"),
        ("POST", "/greengrass/v2/deployments", b'{"targetArn": null}', "FIELD_VALIDATION_FAILED"),
        (
            "POST",
            "/greengrass/v2/deployments",
            b'{"targetArn": "arn:aws:iot:us-east-1:123456789012:thing/core-1", "components": ["x"]}',
            "FIELD_VALIDATION_FAILED",
        ),
        (
            "POST",
            "/greengrass/v2/deployments",
            b'{"targetArn": "arn:aws:iot:us-east-1:123456789012:thing/core-1", "tags": {"k": 1}}',
            "FIELD_VALIDATION_FAILED",
        ),
        (
            "POST",
            "/greengrass/v2/createComponentVersion",
            b'{"inlineRecipe": "%%%"}',
            "FIELD_VALIDATION_FAILED",
        ),
        ("POST", "/greengrass/v2/createComponentVersion", b"\xff\xfe", "CANNOT_PARSE"),
        ("GET", "/greengrass/v2/nothing/here", b"", "UNKNOWN_OPERATION"),
        ("DELETE", "/greengrass/v2/deployments", b"", "UNKNOWN_OPERATION"),
    ],
)
def test_malformed_requests_are_400_and_change_nothing(
    world: World, gg: Any, method: str, path: str, body: bytes, reason: str
) -> None:
    """Bad JSON, wrong types and unknown paths: 400 ValidationException with a reason, no state change."""
    status, payload = raw(world, method, path, body)
    assert status == 400
    assert payload["__type"] == "ValidationException"
    assert payload["reason"] == reason
    assert deployment_count(gg) == 0


def test_malformed_query_values_are_400(world: World) -> None:
    """A non-integer maxResults in the query string is a 400, not a 500."""
    world.greengrass.add_core_device("core-1")
    status, payload = raw(world, "GET", "/greengrass/v2/deployments", maxResults="many")
    assert status == 400
    assert payload["fields"][0]["name"] == "maxResults"
    status, _ = raw(
        world, "GET", "/greengrass/v2/coreDevices/core-1/installedComponents", topologyFilter="x"
    )
    assert status == 400


def test_recipe_blob_must_be_base64(world: World) -> None:
    """inlineRecipe is a blob: a JSON string that is not base64 is rejected before parsing."""
    good = base64.b64encode(json.dumps(recipe("com.example.B64")).encode()).decode()
    status, _ = raw(
        world,
        "POST",
        "/greengrass/v2/createComponentVersion",
        json.dumps({"inlineRecipe": good}).encode(),
    )
    assert status == 201
    _next_second(world)
    status, payload = raw(
        world, "POST", "/greengrass/v2/createComponentVersion", b'{"inlineRecipe": 7}'
    )
    assert (status, payload["__type"]) == (400, "ValidationException")
