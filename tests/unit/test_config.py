"""Configuration: every field validated once, one clear line per problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import AgentConfig, check_before_start, effective_configuration, load_config
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
    ("fleet", {"enabled": "maybe"}, "fleet.enabled"),
    ("fleet", {"topicPrefix": "x" * 201}, "fleet.topicPrefix"),
    ("fleet", {"topicPrefix": "fleet/#"}, "fleet.topicPrefix"),
    ("fleet", {"topicPrefix": "fleet/+/x"}, "fleet.topicPrefix"),
    ("fleet", {"topicPrefix": "$aws/fleet"}, "fleet.topicPrefix"),
    ("fleet", {"topicPrefix": "fleet/{thingName}"}, "fleet.topicPrefix"),
    ("fleet", {"topicPrefix": "fleet/"}, "fleet.topicPrefix"),
    ("fleet", {"topicPrefix": "a//b"}, "fleet.topicPrefix"),
    ("fleet", {"size": "0"}, "fleet.size"),
    ("fleet", {"size": "10000001"}, "fleet.size"),
    ("fleet", {"size": "lots"}, "fleet.size"),
    ("fleet", {"checkBudgetPerSecond": "0"}, "fleet.checkBudgetPerSecond"),
    ("fleet", {"checkBudgetPerSecond": "5.1"}, "fleet.checkBudgetPerSecond"),
    ("fleet", {"checkBudgetPerSecond": "nan"}, "fleet.checkBudgetPerSecond"),
    ("fleet", {"hintMinIntervalSeconds": "0.5"}, "fleet.hintMinIntervalSeconds"),
    ("fleet", {"hintMinIntervalSeconds": "86401"}, "fleet.hintMinIntervalSeconds"),
    ("fleet", {"suppressionSeconds": "-1"}, "fleet.suppressionSeconds"),
    ("fleet", {"suppressionSeconds": "3601"}, "fleet.suppressionSeconds"),
    ("fleet", {"pollerFallbackSeconds": "59"}, "fleet.pollerFallbackSeconds"),
    ("fleet", {"pollerFallbackSeconds": "86401"}, "fleet.pollerFallbackSeconds"),
    ("fleet", {"waves": []}, "fleet.waves"),
    ("fleet", {"waves": [10, 5, 100]}, "fleet.waves"),
    ("fleet", {"waves": [10, 10, 100]}, "fleet.waves"),
    ("fleet", {"waves": [1, 10]}, "fleet.waves"),
    ("fleet", {"waves": [0, 100]}, "fleet.waves"),
    ("fleet", {"waves": [1, 150]}, "fleet.waves"),
    ("fleet", {"waves": [*range(1, 11), 100]}, "fleet.waves"),
    ("fleet", {"waves": "100"}, "fleet.waves"),
    ("fleet", {"waveDelaySeconds": "-1"}, "fleet.waveDelaySeconds"),
    ("fleet", {"waveDelaySeconds": str(7 * 86_400 + 1)}, "fleet.waveDelaySeconds"),
    ("fleet", {"haltFailures": "0"}, "fleet.haltFailures"),
    ("fleet", {"haltFailures": "100001"}, "fleet.haltFailures"),
    ("fleet", {"groupNameTemplate": "{project}-{wave}"}, "fleet.groupNameTemplate"),
    ("fleet", {"groupNameTemplate": "{platform}-{version}"}, "fleet.groupNameTemplate"),
    ("fleet", {"groupNameTemplate": "{platform.__class__}"}, "fleet.groupNameTemplate"),
    ("fleet", {"groupNameTemplate": "{platform!r}"}, "fleet.groupNameTemplate"),
    ("fleet", {"groupNameTemplate": "cams/{platform}"}, "fleet.groupNameTemplate"),
    ("fleet", {"groupNameTemplate": "{platform"}, "fleet.groupNameTemplate"),
    ("fleet", {"groupNameTemplate": "{platform}", "waves": [1, 100]}, "fleet.groupNameTemplate"),
    ("fleet", {"unknown": "1"}, "fleet.unknown"),
    ("fleet", {"topicPrefix": "/fleet"}, "fleet.topicPrefix"),
    ("fleet", {"topicPrefix": "my fleet"}, "fleet.topicPrefix"),
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


def test_pinned_model_version_may_be_a_number() -> None:
    """`modelVersion: 3` (a JSON number, or 3.0 as Greengrass may hand it back) pins
    version 3 like "3"; a boolean or a fraction is still refused."""
    assert load_config(overrides={**BASE, "modelVersion": 3}).pinned_version == 3
    assert load_config(overrides={**BASE, "modelVersion": 3.0}).model_version == "3"
    for bad in (True, 2.5, 0, 1_000_000):
        with pytest.raises(ConfigurationError, match="modelVersion"):
            load_config(overrides={**BASE, "modelVersion": bad})


@pytest.mark.parametrize(
    ("tags", "where"),
    [
        ({"team\t": "a"}, "componentTags"),
        ({"owner": "line\nbreak"}, "componentTags.owner"),
        ({"caf\u0065\u0301": "x"}, "componentTags"),
        ({"k" * 129: "x"}, "componentTags"),
        ({"": "x"}, "componentTags"),
        ({"owner": "v" * 257}, "componentTags.owner"),
        ({f"k{i}": "v" for i in range(201)}, "componentTags"),
    ],
)
def test_bad_component_tags_are_refused_at_start(tags: dict[str, str], where: str) -> None:
    """A tag StartModelPackagingJob would refuse (characters outside letters, numbers,
    separators and _.:/=+-@, key 1-128 or value 0-256 characters, more than 200 tags)
    stops the agent at start, naming componentTags."""
    with pytest.raises(ConfigurationError) as caught:
        load_config(overrides={**BASE, "componentTags": tags})
    assert any(problem.startswith(where) for problem in caught.value.problems), caught.value


def test_valid_unicode_tags_are_accepted() -> None:
    """Letters and numbers of any script, such as '½', are valid tag text; an empty
    value is allowed."""
    tags = {"½": "ß", "部署": "東京 1", "cost-center": "", "a:b/c=d+e@f_g.h": "x"}
    assert load_config(overrides={**BASE, "componentTags": tags}).component_tags == tags


def test_a_huge_value_is_quoted_briefly() -> None:
    """A 10 MB value (or key) in the configuration is quoted with at most ~200 of its
    characters; the error still names the field."""
    huge = "x" * 10_000_000
    with pytest.raises(ConfigurationError) as caught:
        load_config(overrides={**BASE, "projectName": huge, huge: 1, "componentTags": {huge: "v"}})
    problems = caught.value.problems
    assert len(problems) == 3
    assert all(len(line) < 500 for line in problems), [len(line) for line in problems]
    assert any(p.startswith("projectName:") for p in problems)
    assert len(caught.value.message) < 2000


MQTT_BASE = {**BASE, "reporting": {"transport": "mqtt"}}


def _start_problems(config: AgentConfig, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        check_before_start(config, env or {})
    return caught.value.problems


def test_mqtt_transport_without_endpoint_or_files_is_refused_at_start(tmp_path: Path) -> None:
    """`reporting.transport: mqtt` without an endpoint, or with a certPath/keyPath/caPath
    that is not a readable file, is a configuration error naming each key."""
    config = load_config(overrides={**MQTT_BASE, "stateDir": str(tmp_path / "state")})
    problems = _start_problems(config)
    for key in ("endpoint", "certPath", "keyPath", "caPath"):
        assert any(p.startswith(f"reporting.mqtt.{key}: required") for p in problems), problems
    cert = tmp_path / "device.pem.crt"
    cert.write_text("cert")
    config = load_config(
        overrides={
            **BASE,
            "stateDir": str(tmp_path / "state"),
            "reporting": {"transport": "mqtt", "mqtt": {
                "endpoint": "127.0.0.1", "certPath": str(cert),
                "keyPath": str(tmp_path / "missing.key"), "caPath": str(tmp_path),
            }},
        }
    )
    problems = _start_problems(config)
    assert [p.split(":")[0] for p in problems] == ["reporting.mqtt.keyPath", "reporting.mqtt.caPath"]


def test_auto_transport_with_an_endpoint_needs_the_files_outside_greengrass(tmp_path: Path) -> None:
    """`auto` picks mqtt outside Greengrass when an endpoint is set, so the files are
    required then too; `ipc` outside Greengrass is refused."""
    config = load_config(
        overrides={**BASE, "stateDir": str(tmp_path), "reporting": {"mqtt": {"endpoint": "h"}}}
    )
    assert any("reporting.mqtt.certPath" in p for p in _start_problems(config))
    config = load_config(overrides={**BASE, "stateDir": str(tmp_path), "reporting": {"transport": "ipc"}})
    assert any(p.startswith("reporting.transport: ipc") for p in _start_problems(config))


def test_state_dir_and_platform_root_must_be_usable(tmp_path: Path) -> None:
    """A stateDir that is (or lies under) a file, or a platformRoot that is not a
    directory, is named at start; nothing is created by the check."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    for state_dir in (blocker, blocker / "state"):
        config = load_config(overrides={**BASE, "stateDir": str(state_dir),
                                        "platformRoot": str(tmp_path / "nowhere")})
        problems = _start_problems(config)
        assert [p.split(":")[0] for p in problems] == ["stateDir", "platformRoot"], problems
    config = load_config(overrides={**BASE, "stateDir": str(tmp_path / "new" / "state")})
    check_before_start(config, {})
    assert not (tmp_path / "new").exists()


def test_effective_configuration_masks_credentials_in_urls() -> None:
    """The printed configuration is camelCase JSON data with user information in
    endpoint URLs masked."""
    config = load_config(overrides={**BASE, "endpoints": {"iot": "https://user:pw@iot.example:8443/x"}})
    data = effective_configuration(config)
    assert data["endpoints"] == {"iot": "https://***@iot.example:8443/x"}
    assert data["projectName"] == "widgets" and data["reporting"]["mqtt"]["port"] == 8883
    assert "pw" not in json.dumps(data)


def test_fleet_defaults_are_a_single_device_without_coordination() -> None:
    """Unset, the fleet section is off, one device, one wave (no canary), no groups; the
    check interval is checkIntervalSeconds itself."""
    config = load_config(overrides=BASE)
    fleet = config.fleet
    assert (fleet.enabled, fleet.topic_prefix, fleet.size, fleet.check_budget_per_second) == (
        False, "l4v-fleet", 1, 0.5
    )
    assert (fleet.hint_min_interval_seconds, fleet.suppression_seconds, fleet.poller_fallback_seconds) == (
        60, 30, 1800
    )
    assert (fleet.waves, fleet.wave_delay_seconds, fleet.halt_failures) == ((100,), 900, 3)
    assert fleet.group_name_template is None and fleet.group_name("widgets", "x86-64-cpu", 0) is None
    assert config.check_interval.seconds == 900


def test_fleet_numbers_may_be_strings_as_greengrass_keeps_them() -> None:
    config = load_config(overrides={**BASE, "fleet": {
        "enabled": True, "size": "20000", "checkBudgetPerSecond": "2.5", "waves": ["1", "10.5", "100"],
    }})
    assert (config.fleet.size, config.fleet.check_budget_per_second, config.fleet.waves) == (
        20_000, 2.5, (1, 10.5, 100)
    )


@pytest.mark.parametrize(
    ("interval", "size", "budget", "expected"),
    [(900, 1, 0.5, 900), (900, 1000, 0.5, 2000), (900, 100_000, 0.5, 200_000), (3600, 1000, 0.5, 3600)],
)
def test_the_check_interval_is_the_fleets_share_of_the_budget(
    interval: int, size: int, budget: float, expected: float
) -> None:
    """max(checkIntervalSeconds, fleet.size / fleet.checkBudgetPerSecond), whether fleet
    coordination is on or off: a big fleet without announcements must not exceed the
    budget either."""
    for enabled in (False, True):
        config = load_config(overrides={
            **BASE, "checkIntervalSeconds": interval,
            "fleet": {"enabled": enabled, "size": size, "checkBudgetPerSecond": budget},
        })
        assert config.check_interval.seconds == expected
        assert config.check_interval.jitter == config.check_jitter


def test_wave_of_spreads_thing_names_by_the_configured_shares() -> None:
    """10,000 thing names land in waves [1, 10, 100] within half a point of 1 %, 9 % and
    90 %; a name's wave never changes."""
    fleet = load_config(overrides={**BASE, "fleet": {"waves": [1, 10, 100]}}).fleet
    names = [f"cam-{index:05d}" for index in range(10_000)]
    waves = [fleet.wave_of(name) for name in names]
    shares = [100 * waves.count(wave) / len(names) for wave in range(3)]
    for share, expected in zip(shares, (1, 9, 90), strict=True):
        assert abs(share - expected) <= 0.5, shares
    assert [fleet.wave_of(name) for name in names[:50]] == waves[:50]
    single = load_config(overrides=BASE).fleet
    assert {single.wave_of(name) for name in names[:500]} == {0}


def test_wave_of_is_sha256_of_the_name_against_cumulative_percents() -> None:
    """The first 8 bytes of SHA-256 as a fraction of 100: the wave is the first whose
    cumulative percent is above it."""
    import hashlib

    fleet = load_config(overrides={**BASE, "fleet": {"waves": [1, 10, 100]}}).fleet
    for name in ("dev-1", "cam-00042", "line-7:station-3"):
        point = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64 * 100
        expected = 0 if point < 1 else 1 if point < 10 else 2
        assert fleet.wave_of(name) == expected


def test_group_names_render_per_platform_and_wave() -> None:
    """groupNameTemplate gives one thing group per platform and wave, and its ARN in the
    thing's partition, Region and account."""
    config = load_config(overrides={**BASE, "fleet": {
        "enabled": True, "waves": [5, 100], "groupNameTemplate": "l4v-{project}-{platform}-w{wave}",
    }})
    fleet = config.fleet
    assert fleet.group_name("widgets", "x86-64-cpu", 1) == "l4v-widgets-x86-64-cpu-w1"
    assert fleet.group_arn(
        "arn:aws-cn:iot:cn-north-1:123456789012:thing/dev-1", "widgets", "jetson-xavier", 0
    ) == "arn:aws-cn:iot:cn-north-1:123456789012:thinggroup/l4v-widgets-jetson-xavier-w0"


def test_a_group_name_that_cannot_fit_is_refused_at_start() -> None:
    """Checked at start with this project and the longest platform key a device can
    have: a name over 128 characters names the field and the rule."""
    with pytest.raises(ConfigurationError) as caught:
        load_config(overrides={**BASE, "projectName": "p" * 110, "fleet": {"groupNameTemplate": "{project}-{platform}"}})
    assert any("fleet.groupNameTemplate: renders up to 135 characters" in p for p in caught.value.problems), caught.value.problems
    fits = load_config(overrides={**BASE, "projectName": "p" * 100, "fleet": {"groupNameTemplate": "{platform}"}})
    assert fits.fleet.group_name("p" * 100, "x86-64-cpu", 0) == "x86-64-cpu"


def test_group_template_and_a_target_arn_are_exclusive() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_config(overrides={
            **BASE, "deploymentTargetArn": "arn:aws:iot:us-east-1:123456789012:thinggroup/cams",
            "fleet": {"groupNameTemplate": "{platform}"},
        })
    assert any("fleet.groupNameTemplate" in p and "deploymentTargetArn" in p for p in caught.value.problems)
