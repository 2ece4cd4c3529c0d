"""Typed configuration, validated once at start.

Sources, later wins: defaults < JSON file (``--config``) < Greengrass component
configuration (IPC GetConfiguration) < environment (``AWS_IOT_THING_NAME``,
``AWS_REGION`` fill the identity when not configured). Keys are camelCase as in the
recipe's DefaultConfiguration. Numbers may arrive as strings or floats (Greengrass turns
some numbers into floats); both are accepted, and a pinned ``modelVersion`` may be a
number. Any bad value stops the agent with one line per field naming the field and the
rule, quoting at most ~200 characters of the value. :func:`check_before_start` then
checks what the values point at (transport files, directories); ``run`` and
``config check`` both call it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from agent import naming
from agent.clock import Backoff, CheckBudget, JitteredInterval
from agent.errors import ConfigurationError
from agent.platform import PlatformOverrides
from agent.platform.model import KEY_MAX_LENGTH
from agent.request import MAX_TAGS, NamingTemplates, TagKey, TagValue
from agent.text import clip, excerpt

_PROJECT = r"^[a-zA-Z0-9][a-zA-Z0-9_\-]{0,254}$"
#: Which naming rule each template setting follows.
_TEMPLATE_RULES = {
    "component_name_template": naming.COMPONENT_NAME,
    "component_version_template": naming.COMPONENT_VERSION,
    "job_name_template": naming.JOB_NAME,
    "s3_prefix": naming.S3_PREFIX,
}
_ARN_TARGET = r"^arn:[^:]+:iot:[^:]+:[0-9]{12}:(thing|thinggroup)/[a-zA-Z0-9:_-]+$"


class _Settings(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )


class Topics(_Settings):
    """MQTT topics; ``{thingName}`` is replaced by the device's thing name."""

    platform: str = "l4v-edge/{thingName}/platform"
    status: str = "l4v-edge/{thingName}/status"
    health: str = "l4v-edge/{thingName}/health"
    commands: str = "l4v-edge/{thingName}/commands"
    command_responses: str = "l4v-edge/{thingName}/commands/responses"

    @field_validator("*")
    @classmethod
    def _topic_rules(cls, value: str) -> str:
        if not value or len(value) > 256 or "#" in value or "+" in value:
            raise ValueError("must be 1-256 characters without MQTT wildcards (# +)")
        if value.startswith("$") and not value.startswith("$aws/things/{thingName}/"):
            raise ValueError("reserved $ topics are not allowed")
        unknown = set(re.findall(r"{(\w*)}", value)) - {"thingName"}
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; only {{thingName}}")
        return value

    def render(self, thing_name: str) -> dict[str, str]:
        return {k: str(v).replace("{thingName}", thing_name) for k, v in self.model_dump().items()}


class MqttSettings(_Settings):
    """Direct MQTT5 with mutual TLS (outside Greengrass)."""

    endpoint: str | None = None
    port: int = Field(default=8883, ge=1, le=65535)
    cert_path: Path | None = None
    key_path: Path | None = None
    ca_path: Path | None = None
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    reconnect_min_seconds: float = Field(default=1.0, gt=0, le=3600)
    reconnect_max_seconds: float = Field(default=120.0, gt=0, le=3600)


class ReportingSettings(_Settings):
    transport: Literal["auto", "ipc", "mqtt", "none"] = "auto"
    topics: Topics = Topics()
    mqtt: MqttSettings = MqttSettings()
    health_interval_seconds: float = Field(default=300.0, ge=5, le=86_400)
    health_jitter: float = Field(default=0.1, ge=0, lt=1)
    outbox_max_messages: int = Field(default=1000, ge=10, le=1_000_000)
    publish_timeout_seconds: float = Field(default=10.0, gt=0, le=300)


    def resolved_transport(self, under_greengrass: bool) -> Literal["ipc", "mqtt", "none"]:
        """The transport ``run`` uses (``auto``: IPC under Greengrass, else MQTT when an
        endpoint is configured, else the log)."""
        if self.transport != "auto":
            return self.transport
        if under_greengrass:
            return "ipc"
        return "mqtt" if self.mqtt.endpoint else "none"


class CommandSettings(_Settings):
    enabled: bool = True
    allow_deploy_version: bool = False
    max_payload_bytes: int = Field(default=4096, ge=256, le=131_072)
    #: at most one command-requested check (check-now, deploy-version) per this many
    #: seconds; 0 turns the limit off (benchmarks)
    min_check_interval_seconds: float = Field(default=60.0, ge=0, le=86_400)


#: A cumulative share of the fleet, in percent.
WavePercent = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]
_THING_GROUP_NAME_MAX = 128
_THING_GROUP_NAME = re.compile(rf"^[a-zA-Z0-9:_-]{{1,{_THING_GROUP_NAME_MAX}}}$")


class FleetSettings(_Settings):
    """How the devices of one project share the account's quotas (issue 13): the check
    budget, announcements, one actor per fleet action, canary waves."""

    #: announcements, suppression and waves; the check budget applies either way
    enabled: bool = False
    #: Topics are ``{topicPrefix}/{project}/...``. The recipe's accessControl (and
    #: iam/iot-policy-fleet.json) grant the default prefix: change them with it. Apart
    #: from ``l4v-edge/{thingName}/...`` so no thing name can collide with it.
    topic_prefix: str = "l4v-fleet"
    #: about how many devices of this project share the account
    size: int = Field(default=1, ge=1, le=10_000_000)
    #: idle checks per second the whole fleet may spend
    check_budget_per_second: float = Field(default=0.5, gt=0, le=5, allow_inf_nan=False)
    hint_min_interval_seconds: float = Field(default=60.0, ge=1, le=86_400, allow_inf_nan=False)
    suppression_seconds: float = Field(default=30.0, ge=0, le=3600, allow_inf_nan=False)
    poller_fallback_seconds: float = Field(default=1800.0, ge=60, le=86_400, allow_inf_nan=False)
    #: cumulative percents of the fleet per canary wave; the last is 100
    waves: tuple[WavePercent, ...] = Field(default=(100.0,), min_length=1, max_length=10)
    wave_delay_seconds: float = Field(default=900.0, ge=0, le=7 * 86_400, allow_inf_nan=False)
    halt_failures: int = Field(default=3, ge=1, le=100_000)
    #: ... or this share of the canary waves' announced outcomes (a small platform's first
    #: wave may hold fewer devices than haltFailures)
    halt_share: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    group_name_template: str | None = None
    #: how long a deploying device waits for its nucleus to report the deployment
    #: applied before it asks the cloud (a canary whose install fails reports nothing)
    deployment_watch_seconds: float = Field(default=300.0, ge=10, le=86_400, allow_inf_nan=False)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_rules(cls, value: str) -> str:
        if not 1 <= len(value) <= 200:
            raise ValueError("must be 1-200 characters")
        if "#" in value or "+" in value or "\x00" in value or re.search(r"\s", value):
            raise ValueError("must not hold MQTT wildcards (# +), NUL or white space")
        if "$" in value:
            raise ValueError("must not hold $ (reserved topics)")
        if "{" in value or "}" in value:
            raise ValueError("must not hold placeholders or braces: the project and platform are appended")
        if value.startswith("/") or value.endswith("/") or "//" in value:
            raise ValueError("must not start or end with / nor hold an empty level (//)")
        return value

    @field_validator("waves")
    @classmethod
    def _cumulative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(later <= earlier for earlier, later in itertools.pairwise(value)):
            raise ValueError("must be cumulative percents, strictly increasing (e.g. [1, 10, 100])")
        if value[-1] != 100:
            raise ValueError("the last wave must be 100 (every device belongs to a wave)")
        return value

    @field_validator("group_name_template")
    @classmethod
    def _group_template(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        pieces = naming.parse(naming.THING_GROUP_NAME, value)
        waves = info.data.get("waves") or ()
        if len(waves) > 1 and naming.WAVE not in {name for _, name in pieces}:
            raise ValueError("must contain {wave} when there is more than one wave (one group per wave)")
        return value

    def wave_of(self, thing_name: str) -> int:
        """The canary wave (0 first) of ``thing_name``: a stable point in [0, 100) from
        SHA-256 of the name, in the first wave whose cumulative percent is above it."""
        digest = hashlib.sha256(thing_name.encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * 100
        return next(
            (wave for wave, percent in enumerate(self.waves) if percent > point), len(self.waves) - 1
        )

    def group_name(self, project: str, platform_key: str, wave: int) -> str | None:
        """The thing group of ``platform_key``'s devices in ``wave`` (None: no template,
        each device deploys to its own thing). ValueError when the name breaks the IoT
        thing-group name rule."""
        if self.group_name_template is None:
            return None
        name = self.render_group_name(project, platform_key, wave)
        if not _THING_GROUP_NAME.match(name):
            raise ValueError(
                f"fleet.groupNameTemplate: renders {clip(name, 40)!r} ({len(name)} characters), "
                "not a thing group name ([a-zA-Z0-9:_-], 1-128 characters)"
            )
        return name

    def render_group_name(self, project: str, platform_key: str, wave: int) -> str:
        """``groupNameTemplate`` rendered as it is (no check of the result)."""
        values = {naming.PROJECT: project, naming.PLATFORM: platform_key, naming.WAVE: str(wave)}
        return naming.render(naming.THING_GROUP_NAME, self.group_name_template or "", values)

    def group_arn(self, thing_arn: str, project: str, platform_key: str, wave: int) -> str | None:
        """The ARN of :meth:`group_name`'s group, in the partition, Region and account of
        ``thing_arn`` (None without a template)."""
        name = self.group_name(project, platform_key, wave)
        if name is None:
            return None
        parts = thing_arn.split(":")
        partition, region, account = parts[1], parts[3], parts[4]
        return f"arn:{partition}:iot:{region}:{account}:thinggroup/{name}"


_S3_URI = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[a-zA-Z0-9!_.*'()/\-]*)?$"
_ROLE_ARN = r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$"
_ENTITY_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
#: What the SageMaker backend cannot start without.
_SAGEMAKER_REQUIRED = ("modelPackageGroupName", "roleArn", "s3OutputLocation")


class PackagingSettings(_Settings):
    """Which service packages a model version for this device."""

    backend: Literal["lookoutvision", "sagemaker"] = "lookoutvision"


class StoppingCondition(_Settings):
    """CreateCompilationJob's StoppingCondition (Neo stops a job that runs longer)."""

    max_runtime_in_seconds: int = Field(default=900, ge=1, le=2_419_200)


class RuntimeComponent(_Settings):
    """A Greengrass component the model component depends on (e.g. a DLR runtime);
    none when ``name`` is unset."""

    name: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9\-_.]+$")
    version_requirement: str = Field(default="*", min_length=1, max_length=64)
    dependency_type: Literal["HARD", "SOFT"] = "HARD"


class SageMakerSettings(_Settings):
    """The SageMaker backend: Model Registry + Neo + Greengrass CreateComponentVersion.
    The first three are required when ``packaging.backend`` is ``sagemaker``."""

    model_package_group_name: str | None = Field(default=None, pattern=_ENTITY_NAME)
    role_arn: str | None = Field(default=None, max_length=2048, pattern=_ROLE_ARN)
    s3_output_location: str | None = Field(default=None, max_length=1024, pattern=_S3_URI)
    approval_status: Literal["Approved", "PendingManualApproval", "Rejected"] = "Approved"
    stopping_condition: StoppingCondition = StoppingCondition()
    runtime_component: RuntimeComponent = RuntimeComponent()

    @property
    def output_bucket(self) -> str:
        """The bucket of ``s3OutputLocation``."""
        return (self.s3_output_location or "").removeprefix("s3://").split("/", 1)[0]


class AgentConfig(_Settings):
    """Everything the agent needs; see the README's configuration reference."""

    thing_name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9:_-]+$")
    region: str = Field(min_length=1, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    project_name: str = Field(pattern=_PROJECT)
    model_version: str = Field(default="latest", pattern=r"^(latest|[1-9][0-9]{0,5})$")
    s3_bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
    s3_prefix: str = Field(default="l4v-edge-agent/{project}/{platform}/", max_length=512)
    component_name_template: str = "{project}.{platform}"
    component_version_template: str = "{version}.0.0"
    job_name_template: str = "{project}-{platform}-v{version}-{attempt}"
    component_tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=MAX_TAGS)
    deployment_target_arn: str | None = Field(default=None, pattern=_ARN_TARGET)
    failure_handling_policy: Literal["ROLLBACK", "DO_NOTHING"] = "ROLLBACK"
    check_interval_seconds: float = Field(default=900.0, ge=10, le=7 * 86_400)
    check_jitter: float = Field(default=0.2, ge=0, lt=1)
    poll_initial_seconds: float = Field(default=15.0, ge=1, le=3600)
    poll_max_seconds: float = Field(default=60.0, ge=1, le=3600)
    job_poll_max_seconds: float = Field(default=600.0, ge=1, le=7200)
    failure_retry_seconds: float = Field(default=3600.0, ge=1, le=7 * 86_400)
    endpoints: dict[Literal["lookoutvision", "sagemaker", "greengrassv2", "iot"], str] = Field(
        default_factory=dict
    )
    aws_max_attempts: int = Field(default=3, ge=1, le=10)
    aws_retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    state_dir: Path = Path("state")
    platform_root: Path = Path("/")
    prefer_target_device: bool = True
    platform: PlatformOverrides | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    reporting: ReportingSettings = ReportingSettings()
    commands: CommandSettings = CommandSettings()
    packaging: PackagingSettings = PackagingSettings()
    fleet: FleetSettings = FleetSettings()
    sagemaker: SageMakerSettings = SageMakerSettings()

    @model_validator(mode="before")
    @classmethod
    def _sagemaker_names(cls, data: Any) -> Any:
        """With the SageMaker backend the model package group is the project and the
        output bucket is the one of ``sagemaker.s3OutputLocation`` (names derive from both)."""
        if not isinstance(data, dict):
            return data
        packaging = data.get("packaging")
        sagemaker = data.get("sagemaker")
        if not (isinstance(packaging, dict) and packaging.get("backend") == "sagemaker"):
            return data
        given = sagemaker if isinstance(sagemaker, dict) else {}
        missing = [f"sagemaker.{key}" for key in _SAGEMAKER_REQUIRED if not given.get(key)]
        if missing:
            raise ValueError(f"{', '.join(missing)}: required when packaging.backend is sagemaker")
        filled = dict(data)
        group = given["modelPackageGroupName"]
        if "projectName" not in filled and isinstance(group, str):
            filled["projectName"] = group
        location = given["s3OutputLocation"]
        if "s3Bucket" not in filled and isinstance(location, str) and location.startswith("s3://"):
            filled["s3Bucket"] = location.removeprefix("s3://").split("/", 1)[0]
        return filled

    @field_validator("model_version", mode="before")
    @classmethod
    def _version_as_number(cls, value: Any) -> Any:
        # A pinned version may be written as a number; Greengrass may turn it into a float.
        if isinstance(value, bool):
            return value
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return str(int(value))
        return value

    @field_validator(*_TEMPLATE_RULES)
    @classmethod
    def _template_rules(cls, value: str, info: ValidationInfo) -> str:
        naming.parse(_TEMPLATE_RULES[str(info.field_name)], value)
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoint_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not re.match(r"^https?://[^\s/]+", url):
                raise ValueError(f"{name}: must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _poll_bounds(self) -> AgentConfig:
        if self.poll_initial_seconds > self.poll_max_seconds:
            raise ValueError("pollInitialSeconds must not exceed pollMaxSeconds")
        return self

    @model_validator(mode="after")
    def _backend_settings(self) -> AgentConfig:
        if self.packaging.backend != "sagemaker":
            return self
        group = self.sagemaker.model_package_group_name
        if self.project_name != group:
            raise ValueError(
                f"projectName: must be the model package group ({group}) or unset when "
                "packaging.backend is sagemaker"
            )
        if self.s3_bucket != self.sagemaker.output_bucket:
            raise ValueError(
                f"s3Bucket: must be the bucket of sagemaker.s3OutputLocation "
                f"({self.sagemaker.output_bucket}) or unset when packaging.backend is sagemaker"
            )
        return self

    @model_validator(mode="after")
    def _group_names_fit(self) -> AgentConfig:
        fleet = self.fleet
        if fleet.group_name_template is None:
            return self
        if self.deployment_target_arn is not None:
            raise ValueError(
                "fleet.groupNameTemplate: give it or deploymentTargetArn, not both (each names the target)"
            )
        # Platform keys are [a-z0-9-] and at most KEY_MAX_LENGTH long, so the longest
        # key and the last wave give the longest name this device can render.
        longest = len(fleet.render_group_name(self.project_name, "k" * KEY_MAX_LENGTH, len(fleet.waves) - 1))
        if longest > _THING_GROUP_NAME_MAX:
            raise ValueError(
                f"fleet.groupNameTemplate: renders up to {longest} characters with this projectName "
                f"and a {KEY_MAX_LENGTH}-character platform key; a thing group name has at most "
                f"{_THING_GROUP_NAME_MAX}"
            )
        return self

    # -- value objects derived from settings ------------------------------------------
    @property
    def naming(self) -> NamingTemplates:
        return NamingTemplates(
            component_name=self.component_name_template,
            component_version=self.component_version_template,
            job_name=self.job_name_template,
        )

    @property
    def check_budget(self) -> CheckBudget:
        """``checkIntervalSeconds`` stretched to the fleet's share of the check budget."""
        return CheckBudget(
            self.check_interval_seconds,
            self.check_jitter,
            fleet_size=self.fleet.size,
            per_second=self.fleet.check_budget_per_second,
        )

    @property
    def check_interval(self) -> JitteredInterval:
        """The idle-check interval: ``max(checkIntervalSeconds, fleet.size /
        fleet.checkBudgetPerSecond)``, jittered."""
        return self.check_budget.interval

    @property
    def poll_backoff(self) -> Backoff:
        """Greengrass polls (component appeared, deployment progress)."""
        return Backoff(self.poll_initial_seconds, self.poll_max_seconds, floor=1.0)

    @property
    def job_poll_backoff(self) -> Backoff:
        """Lookout for Vision DescribeModelPackagingJob polls (5 requests/s per account)."""
        base = max(self.poll_initial_seconds, 30.0)
        return Backoff(min(base, self.job_poll_max_seconds), self.job_poll_max_seconds, floor=5.0)

    @property
    def pinned_version(self) -> int | None:
        return None if self.model_version == "latest" else int(self.model_version)


def format_problems(error: ValidationError) -> list[str]:
    """One readable line per invalid field: ``field.path: rule (got value)``."""
    lines = []
    for item in error.errors():
        path = ".".join(_loc_part(part) for part in item["loc"]) or "(config)"
        got = item.get("input")
        shown = "" if isinstance(got, (dict, list)) else f" (got {excerpt(got)})"
        lines.append(f"{path}: {clip(item['msg'])}{shown}")
    return lines


def check_before_start(config: AgentConfig, env: Mapping[str, str]) -> None:
    """What ``run`` needs beyond valid values: the transport's settings and files, a usable
    ``stateDir`` and ``platformRoot``. Creates nothing and contacts nothing.

    Raises ConfigurationError with one line per problem, naming the key.
    """
    from agent.reporting.ipc import nucleus_available

    problems = _transport_problems(config.reporting, nucleus_available(env))
    problems += _directory_problems(config)
    if problems:
        raise ConfigurationError(
            "invalid configuration:\n  " + "\n  ".join(problems), problems=problems
        )


def _transport_problems(reporting: ReportingSettings, under_greengrass: bool) -> list[str]:
    choice = reporting.resolved_transport(under_greengrass)
    if choice == "ipc" and not under_greengrass:
        return [
            "reporting.transport: ipc needs the Greengrass nucleus (no IPC socket and "
            "SVCUID in this environment); use mqtt or none outside Greengrass"
        ]
    if choice != "mqtt":
        return []
    why = "reporting.transport is mqtt" if reporting.transport == "mqtt" else (
        "reporting.transport auto uses mqtt outside Greengrass when an endpoint is set"
    )
    mqtt = reporting.mqtt
    problems = []
    if not mqtt.endpoint:
        problems.append(f"reporting.mqtt.endpoint: required ({why})")
    for key, path in (("certPath", mqtt.cert_path), ("keyPath", mqtt.key_path), ("caPath", mqtt.ca_path)):
        if path is None:
            problems.append(f"reporting.mqtt.{key}: required ({why})")
        elif not (path.is_file() and os.access(path, os.R_OK)):
            problems.append(f"reporting.mqtt.{key}: no readable file at {excerpt(str(path))}")
    return problems


def _directory_problems(config: AgentConfig) -> list[str]:
    problems = []
    state_dir = Path(config.state_dir)
    existing = next((p for p in (state_dir, *state_dir.absolute().parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        problems.append(
            f"stateDir: {excerpt(str(state_dir))} cannot hold the ledger: it is not a directory "
            f"and cannot be created ({excerpt(str(existing))} is not a directory)"
        )
    elif not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"stateDir: {excerpt(str(state_dir))} cannot hold the ledger: {excerpt(str(existing))} is not writable")
    if not Path(config.platform_root).is_dir():
        problems.append(f"platformRoot: {excerpt(str(config.platform_root))} is not a directory")
    return problems


def effective_configuration(config: AgentConfig) -> dict[str, Any]:
    """The configuration as JSON-ready camelCase data, without secrets.

    The configuration holds no credentials of its own; an endpoint URL may carry them
    (``https://user:password@host``), so user information in URLs is masked.
    """
    data = config.model_dump(mode="json", by_alias=True)
    data["endpoints"] = {name: _mask_userinfo(url) for name, url in data["endpoints"].items()}
    return data


def _mask_userinfo(url: str) -> str:
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", url)


def _loc_part(part: str | int) -> str:
    # Keys come from the operator's data (tag keys, unknown keys): quote odd ones, briefly.
    text = str(part)
    return clip(text, 60) if re.fullmatch(r"[\w\[\]-]+", text, re.ASCII) else excerpt(text, 60)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    *,
    file: Path | None = None,
    component_configuration: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Build and validate the configuration, or raise ConfigurationError listing every problem."""
    env = env or {}
    data: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = json.loads(Path(file).read_text())
        except OSError as exc:
            raise ConfigurationError(f"config file {file}: cannot read: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigurationError(f"config file {file}: not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigurationError(f"config file {file}: must hold a JSON object")
        data = deep_merge(data, loaded)
    if component_configuration:
        # accessControl belongs to the nucleus, not to the agent.
        data = deep_merge(data, {k: v for k, v in component_configuration.items() if k != "accessControl"})
    if overrides:
        data = deep_merge(data, overrides)
    if not data.get("thingName") and env.get("AWS_IOT_THING_NAME"):
        data["thingName"] = env["AWS_IOT_THING_NAME"]
    if not data.get("region") and (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
        data["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    data = _drop_empty(data)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = format_problems(exc)
        raise ConfigurationError(
            "invalid configuration:\n  " + "\n  ".join(problems), problems=problems
        ) from exc


def _drop_empty(data: dict[str, Any]) -> dict[str, Any]:
    """Greengrass configuration cannot hold null; an empty string means "not set"."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "componentTags":
            out[key] = _drop_empty(value)
        elif value != "":
            out[key] = value
    return out
