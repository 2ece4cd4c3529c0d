"""Configuration: every field validated once, one clear line per problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config
from agent.errors import ConfigurationError

BASE = {
    "thingName": "dev-1",
    "region": "us-east-1",
    "projectName": "widgets",
    "s3Bucket": "l4v-models",
}


def test_minimal_configuration_is_valid_with_documented_defaults() -> None:
    """A config with only identity, project and bucket gets the documented defaults."""
    config = load_config(overrides=BASE)
    assert config.model_version == "latest"
    assert config.check_interval_seconds == 900
    assert config.reporting.topics.render("dev-1")["status"] == "l4v-edge/dev-1/status"


def test_numbers_as_strings_and_floats_are_accepted() -> None:
    """Greengrass may hand numbers back as strings or floats; both validate."""
    config = load_config(
        overrides={
            **BASE,
            "checkIntervalSeconds": "600",
            "awsMaxAttempts": 5.0,
            "reporting": {"outboxMaxMessages": "500"},
        }
    )
    assert config.check_interval_seconds == 600.0
    assert config.aws_max_attempts == 5
    assert config.reporting.outbox_max_messages == 500


def test_identity_comes_from_the_greengrass_environment() -> None:
    """AWS_IOT_THING_NAME and AWS_REGION fill the identity when not configured."""
    overrides = {k: v for k, v in BASE.items() if k not in ("thingName", "region")}
    config = load_config(
        overrides=overrides, env={"AWS_IOT_THING_NAME": "gg-core", "AWS_REGION": "eu-west-1"}
    )
    assert (config.thing_name, config.region) == ("gg-core", "eu-west-1")


def test_empty_strings_mean_not_set() -> None:
    """Greengrass configuration cannot hold null: "" leaves a setting at its default."""
    config = load_config(
        overrides={**BASE, "deploymentTargetArn": "", "reporting": {"mqtt": {"endpoint": ""}}}
    )
    assert config.deployment_target_arn is None
    assert config.reporting.mqtt.endpoint is None


INVALID = [
    ("projectName", "-bad", "projectName"),
    ("projectName", "x" * 256, "projectName"),
    ("modelVersion", "0", "modelVersion"),
    ("modelVersion", "v2", "modelVersion"),
    ("s3Bucket", "UPPER", "s3Bucket"),
    ("region", "moon", "region"),
    ("thingName", "bad name", "thingName"),
    ("checkIntervalSeconds", "1", "checkIntervalSeconds"),
    ("checkIntervalSeconds", "soon", "checkIntervalSeconds"),
    ("checkJitter", "1.5", "checkJitter"),
    ("pollInitialSeconds", "0", "pollInitialSeconds"),
    ("pollMaxSeconds", "99999", "pollMaxSeconds"),
    ("jobPollMaxSeconds", "0", "jobPollMaxSeconds"),
    ("failureRetrySeconds", "-1", "failureRetrySeconds"),
    ("failureHandlingPolicy", "PANIC", "failureHandlingPolicy"),
    ("deploymentTargetArn", "arn:aws:s3:::bucket", "deploymentTargetArn"),
    ("awsMaxAttempts", "0", "awsMaxAttempts"),
    ("awsRetryMode", "yolo", "awsRetryMode"),
    ("logLevel", "LOUD", "logLevel"),
    ("logFormat", "xml", "logFormat"),
    ("endpoints", {"lookoutvision": "ftp://x"}, "endpoints"),
    ("endpoints", {"s3": "http://x"}, "endpoints"),
    ("componentNameTemplate", "{project}-{nope}", "componentNameTemplate"),
    ("componentVersionTemplate", "1.0.0", "componentVersionTemplate"),
    ("jobNameTemplate", "{project}", "jobNameTemplate"),
    ("unknownKey", "x", "unknownKey"),
    ("reporting", {"transport": "carrier-pigeon"}, "reporting.transport"),
    ("reporting", {"healthIntervalSeconds": "1"}, "reporting.healthIntervalSeconds"),
    ("reporting", {"topics": {"status": "a/#"}}, "reporting.topics.status"),
    ("reporting", {"topics": {"status": "a/{thing}"}}, "reporting.topics.status"),
    ("reporting", {"mqtt": {"port": "70000"}}, "reporting.mqtt.port"),
    ("reporting", {"outboxMaxMessages": "1"}, "reporting.outboxMaxMessages"),
    ("commands", {"maxPayloadBytes": "10"}, "commands.maxPayloadBytes"),
    ("commands", {"allowDeployVersion": "maybe"}, "commands.allowDeployVersion"),
]


@pytest.mark.parametrize(
    ("key", "value", "field"), INVALID, ids=[f"{k}={v!r}"[:40] for k, v, _ in INVALID]
)
def test_every_invalid_field_is_named_in_the_error(key: str, value: object, field: str) -> None:
    """A bad value stops the agent with a message naming the field and the rule."""
    with pytest.raises(ConfigurationError) as caught:
        load_config(overrides={**BASE, key: value})
    assert any(field in problem for problem in caught.value.problems), caught.value.problems


def test_missing_required_fields_are_all_listed_at_once() -> None:
    """Every missing required setting is reported in one go, not one per restart."""
    with pytest.raises(ConfigurationError) as caught:
        load_config(overrides={})
    joined = "\n".join(caught.value.problems)
    for field in ("thingName", "region", "projectName", "s3Bucket"):
        assert field in joined


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    """An unreadable or malformed file is a configuration error naming the file."""
    broken = tmp_path / "agent.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"agent\.json"):
        load_config(file=broken)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_config(file=tmp_path / "missing.json")


def test_component_configuration_overrides_the_file_and_drops_access_control(
    tmp_path: Path,
) -> None:
    """The Greengrass component configuration wins over the file; accessControl is ignored."""
    file = tmp_path / "agent.json"
    file.write_text(json.dumps({**BASE, "modelVersion": "3"}))
    config = load_config(
        file=file,
        component_configuration={
            "modelVersion": "4",
            "accessControl": {"aws.greengrass.ipc.mqttproxy": {}},
        },
    )
    assert config.model_version == "4"
    assert isinstance(config, AgentConfig)
