"""The agent's Greengrass recipe agrees with the code it ships.

The recipe is hand-written JSON; these tests tie it to ``agent.config`` so that a new
setting or topic cannot be added to the agent without the recipe (and so the
``accessControl`` the nucleus enforces) following.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import agent
from agent.config import AgentConfig, FleetSettings, Topics, load_config
from agent.coordination import FleetTopics

ROOT = Path(__file__).resolve().parents[2]
RECIPE_PATH = ROOT / "recipes" / "l4v.edge.Agent.json"
GDK_CONFIG_PATH = ROOT / "gdk-config.json"

#: What the nucleus supplies through the environment, so the recipe leaves it out.
FROM_ENVIRONMENT = {"thingName", "region"}
#: Per-device values without a sensible default; the recipe must carry them empty.
REQUIRED_AT_DEPLOYMENT = {"projectName": "widgets", "s3Bucket": "l4v-models"}
IDENTITY = {"thingName": "dev-1", "region": "us-east-1"}
#: Objects whose keys are free-form or all optional overrides (no key is required).
FREE_FORM = {"componentTags", "endpoints", "platform"}
MQTT_PROXY = "aws.greengrass.ipc.mqttproxy"
PUBLISH = "aws.greengrass#PublishToIoTCore"
SUBSCRIBE = "aws.greengrass#SubscribeToIoTCore"


@pytest.fixture(scope="module")
def recipe() -> dict[str, Any]:
    loaded = json.loads(RECIPE_PATH.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def defaults(recipe: dict[str, Any]) -> dict[str, Any]:
    default = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert isinstance(default, dict)
    return default


def _settings_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X`` or ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _settings_model(arg)
            if found is not None:
                return found
    return None


def _aliases(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """camelCase key -> nested settings model (None for a leaf), as the model accepts them."""
    keys: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        keys[alias if isinstance(alias, str) else name] = _settings_model(field.annotation)
    return keys


def _key_problems(model: type[BaseModel], values: dict[str, Any], path: str = "") -> Iterator[str]:
    """Unknown keys, and model keys missing from the recipe (both recursively)."""
    known = _aliases(model)
    for key, value in values.items():
        where = f"{path}{key}"
        if key not in known:
            yield f"{where}: not a setting of {model.__name__}"
        elif known[key] is not None and isinstance(value, dict) and key not in FREE_FORM:
            yield from _key_problems(known[key], value, f"{where}.")  # type: ignore[arg-type]
    for key in known:
        if f"{path}{key}" in FROM_ENVIRONMENT:
            continue
        if key not in values:
            yield f"{path}{key}: missing from DefaultConfiguration"


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def test_recipe_identity_and_format(recipe: dict[str, Any]) -> None:
    """The recipe uses format 2020-01-25 and names the component and version the wheel
    and the GDK configuration use."""
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentName"] == "l4v.edge.Agent"
    assert recipe["ComponentVersion"] == agent.__version__
    gdk = json.loads(GDK_CONFIG_PATH.read_text())
    assert set(gdk["component"]) == {recipe["ComponentName"]}
    assert gdk["component"][recipe["ComponentName"]]["version"] == recipe["ComponentVersion"]


def test_credentials_come_from_a_hard_token_exchange_dependency(recipe: dict[str, Any]) -> None:
    """The agent cannot call AWS without the token exchange service, so the dependency
    is HARD (the agent restarts with it) and pinned to major version 2."""
    dependency = recipe["ComponentDependencies"]["aws.greengrass.TokenExchangeService"]
    assert dependency["DependencyType"] == "HARD"
    assert dependency["VersionRequirement"].startswith(">=2.")
    assert "<3" in dependency["VersionRequirement"]


@pytest.mark.parametrize(
    ("architecture", "wheelhouse_arch"), [("aarch64", "aarch64"), ("amd64", "x86_64")]
)
def test_linux_manifest_installs_its_wheelhouse_offline_and_runs_the_venv(
    recipe: dict[str, Any], architecture: str, wheelhouse_arch: str
) -> None:
    """For each supported Linux architecture: the one artifact is that platform's
    wheelhouse zip (ARTIFACT_BUCKET placeholder), unpacked by Greengrass; Install runs the
    wheelhouse's own install.py with the component's work path (it installs with
    --no-index into a venv there); Run starts the daemon from that venv; no step asks for
    root and none names a package index or another platform's wheelhouse."""
    matching = [
        m
        for m in recipe["Manifests"]
        if m["Platform"] == {"os": "linux", "architecture": architecture}
    ]
    assert len(matching) == 1, f"exactly one manifest for linux/{architecture}"
    manifest = matching[0]
    assert set(manifest["Lifecycle"]) >= {"Install", "Run"}
    for name, step in manifest["Lifecycle"].items():
        if isinstance(step, dict):
            assert not step.get("RequiresPrivilege", False), f"{name} must not run as root"
    stem = f"l4v-edge-agent-{agent.__version__}-linux-{wheelhouse_arch}"
    artifacts = manifest["Artifacts"]
    assert artifacts == [
        {
            "URI": f"s3://ARTIFACT_BUCKET/l4v-edge-agent/{agent.__version__}/{stem}.zip",
            "Unarchive": "ZIP",
        }
    ]
    install = manifest["Lifecycle"]["Install"]["Script"]
    assert install.split() == [
        "python3",
        f"{{artifacts:decompressedPath}}/{stem}/install.py",
        "{work:path}",
    ]
    assert manifest["Lifecycle"]["Install"]["Timeout"] >= 300
    run = manifest["Lifecycle"]["Run"]["Script"]
    assert run.split() == ["exec", "{work:path}/venv/bin/python", "-m", "agent", "run"]
    text = json.dumps(manifest)
    assert "pip install" not in text
    other = {"aarch64": "x86_64", "x86_64": "aarch64"}[wheelhouse_arch]
    assert f"linux-{other}" not in text


def test_every_default_key_is_a_setting_and_every_setting_has_a_default(
    defaults: dict[str, Any],
) -> None:
    """DefaultConfiguration and AgentConfig have the same camelCase keys at every level
    (apart from the identity the nucleus supplies and accessControl), so adding a
    setting without updating the recipe fails here."""
    values = {k: v for k, v in defaults.items() if k != "accessControl"}
    problems = list(_key_problems(AgentConfig, values))
    assert problems == []


def test_defaults_are_valid_and_equal_to_the_code_defaults(defaults: dict[str, Any]) -> None:
    """With project, bucket and the device identity supplied, the recipe's defaults
    validate and give exactly the configuration the code's own defaults give (the
    recipe's empty ``platform`` object is an override that overrides nothing)."""
    required = {**IDENTITY, **REQUIRED_AT_DEPLOYMENT}
    for key in REQUIRED_AT_DEPLOYMENT:
        assert defaults[key] == "", f"{key} is per deployment; the recipe leaves it empty"
    from_recipe = load_config(component_configuration=defaults, overrides=required)
    from_code = load_config(overrides=required)
    assert from_recipe.platform is None or from_recipe.platform.model_fields_set == set()
    assert from_recipe.model_dump(exclude={"platform"}) == from_code.model_dump(
        exclude={"platform"}
    )


def test_numbers_are_kept_as_strings(defaults: dict[str, Any]) -> None:
    """Greengrass may hand integers back as floats; the recipe therefore writes every
    number as a string (booleans stay booleans)."""
    numbers = [
        path
        for path, value in _leaves(defaults)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    assert numbers == []


def test_access_control_grants_exactly_the_agents_topics(defaults: dict[str, Any]) -> None:
    """The mqttproxy policies allow publishing to the agent's outgoing topics and
    subscribing to its command topic, with {iot:thingName} in place of the agent's
    {thingName}, plus the fleet announcement topics (below), nothing else: a new topic
    in agent.config.Topics fails this test."""
    topics = {
        name: str(field.default).replace("{thingName}", "{iot:thingName}")
        for name, field in Topics.model_fields.items()
    }
    expected = {
        PUBLISH: {topics[name] for name in topics if name != "commands"} | FLEET_PUBLISH,
        SUBSCRIBE: {topics["commands"]} | FLEET_SUBSCRIBE,
    }
    assert set(topics) == {"platform", "status", "health", "commands", "command_responses"}

    access = defaults["accessControl"]
    assert set(access) == {MQTT_PROXY}
    granted: dict[str, set[str]] = {}
    for policy_id, policy in access[MQTT_PROXY].items():
        assert policy_id.startswith("l4v.edge.Agent:")
        assert policy["policyDescription"]
        for operation in policy["operations"]:
            granted.setdefault(operation, set()).update(policy["resources"])
    assert granted == expected
    for resources in granted.values():
        wide = {r for r in resources if "#" in r or "+" in r or r == "*"}
        assert wide <= FLEET_PUBLISH | FLEET_SUBSCRIBE


#: The fleet topics of agent.coordination with the default prefix: project and platform
#: are one level each (``+``): Greengrass interpolates only system variables such as
#: {iot:thingName} in a component's configuration, never {configuration:/...}.
_FLEET = FleetTopics(FleetSettings().topic_prefix, "+")
FLEET_PUBLISH = {
    _FLEET.released(),
    _FLEET.job("+"),
    _FLEET.ready("+"),
    _FLEET.base + "/+/wave/+/deployed",
    _FLEET.failed("+", "{iot:thingName}"),
    _FLEET.succeeded("+", "{iot:thingName}"),
}
FLEET_SUBSCRIBE = set(_FLEET.subscriptions("+"))

