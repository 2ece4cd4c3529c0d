"""Typed configuration, validated once at start.

Sources, later wins: defaults < JSON file (``--config``) < Greengrass component
configuration (IPC GetConfiguration) < environment (``AWS_IOT_THING_NAME``,
``AWS_REGION`` fill the identity when not configured). Keys are camelCase as in the
recipe's DefaultConfiguration. Numbers may arrive as strings or floats (Greengrass turns
some numbers into floats); both are accepted. Any bad value stops the agent with one
line per field naming the field and the rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from agent.clock import Backoff, JitteredInterval
from agent.errors import ConfigurationError
from agent.model import NamingTemplates
from agent.platform import PlatformOverrides

_PROJECT = r"^[a-zA-Z0-9][a-zA-Z0-9_\-]{0,254}$"
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


class CommandSettings(_Settings):
    enabled: bool = True
    allow_deploy_version: bool = False
    max_payload_bytes: int = Field(default=4096, ge=256, le=131_072)
    #: at most one command-requested check (check-now, deploy-version) per this many
    #: seconds; 0 turns the limit off (benchmarks)
    min_check_interval_seconds: float = Field(default=60.0, ge=0, le=86_400)


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
    component_tags: dict[str, str] = Field(default_factory=dict)
    deployment_target_arn: str | None = Field(default=None, pattern=_ARN_TARGET)
    failure_handling_policy: Literal["ROLLBACK", "DO_NOTHING"] = "ROLLBACK"
    check_interval_seconds: float = Field(default=900.0, ge=10, le=7 * 86_400)
    check_jitter: float = Field(default=0.2, ge=0, lt=1)
    poll_initial_seconds: float = Field(default=15.0, ge=1, le=3600)
    poll_max_seconds: float = Field(default=60.0, ge=1, le=3600)
    job_poll_max_seconds: float = Field(default=600.0, ge=1, le=7200)
    failure_retry_seconds: float = Field(default=3600.0, ge=1, le=7 * 86_400)
    endpoints: dict[Literal["lookoutvision", "greengrassv2", "iot"], str] = Field(
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

    @field_validator("endpoints")
    @classmethod
    def _endpoint_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not re.match(r"^https?://[^\s/]+", url):
                raise ValueError(f"{name}: must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _templates(self) -> AgentConfig:
        sample = {"project": "p", "version": "1", "platform": "x86-64-cpu", "attempt": "1"}
        for name in ("component_name_template", "component_version_template", "job_name_template", "s3_prefix"):
            template = getattr(self, name)
            try:
                template.format(**sample)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{to_camel(name)}: unknown placeholder {exc}; use {{project}} {{version}} "
                    "{platform} {attempt}"
                ) from exc
        if "{version}" not in self.component_version_template:
            raise ValueError("componentVersionTemplate must contain {version}")
        if "{version}" not in self.job_name_template or "{attempt}" not in self.job_name_template:
            raise ValueError("jobNameTemplate must contain {version} and {attempt}")
        if self.poll_initial_seconds > self.poll_max_seconds:
            raise ValueError("pollInitialSeconds must not exceed pollMaxSeconds")
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
    def check_interval(self) -> JitteredInterval:
        return JitteredInterval(self.check_interval_seconds, self.check_jitter)

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
        path = ".".join(str(p) for p in item["loc"]) or "(config)"
        got = item.get("input")
        shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        lines.append(f"{path}: {item['msg']}{shown}")
    return lines


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
