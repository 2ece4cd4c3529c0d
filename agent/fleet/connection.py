"""The operator's MQTT connection: subscribe to the whole fleet's topics.

Two ways in, as AWS IoT Core offers them: MQTT5 over WebSocket signed with SigV4 from
the usual AWS credential chain (an operator's laptop or a CI runner with a role), or
MQTT5 with mutual TLS and a certificate (also how the local world's Mosquitto is
reached). Both reuse the agent's :class:`~agent.reporting.mqtt.DirectMqttTransport`
(reconnect with back-off, re-subscribe when the broker lost the session); the watcher
asks for no persistent session, since retained messages give the current state again
on every subscribe.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, model_validator

from agent.config import Topics
from agent.errors import ConfigurationError
from agent.reporting.mqtt import DirectMqttConfig, DirectMqttTransport
from agent.reporting.transport import MessageHandler

#: The topics an operator reads, by message kind.
KINDS: tuple[str, ...] = ("platform", "status", "health")


class BrokerSettings(BaseModel):
    """Where the fleet publishes and how to get in; validated once at start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = Field(min_length=1, max_length=253)
    auth: Literal["mtls", "sigv4"]
    port: int = Field(ge=1, le=65535)
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    cert: FilePath | None = None
    key: FilePath | None = None
    ca: FilePath | None = None
    client_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9:_.-]+$")
    topics: Topics = Topics()
    connect_timeout: float = Field(default=15.0, gt=0, le=300)

    @model_validator(mode="after")
    def _auth_needs(self) -> BrokerSettings:
        if self.auth == "mtls":
            missing = [n for n in ("cert", "key", "ca") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"mTLS needs --{', --'.join(missing)}")
        elif self.region is None:
            raise ValueError("SigV4 needs --region (or $AWS_REGION)")
        for kind in KINDS:
            template = getattr(self.topics, kind)
            if not any(level == "{thingName}" for level in template.split("/")):
                raise ValueError(
                    f"topics.{kind}: {{thingName}} must be a whole topic level to subscribe "
                    f"to every device (got {template!r})"
                )
        return self

    def filters(self) -> dict[str, str]:
        """The MQTT topic filter per kind, one ``+`` in place of the thing name."""
        return {kind: getattr(self.topics, kind).replace("{thingName}", "+") for kind in KINDS}


def broker_settings(
    *,
    endpoint: str | None,
    port: int | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    region: str | None,
    client_id: str | None,
    topics_file: Path | None,
    env: dict[str, str] | os._Environ[str],
) -> BrokerSettings:
    """Validate the command line into settings; ConfigurationError naming each bad option."""
    auth: Literal["mtls", "sigv4"] = "mtls" if cert is not None or key is not None else "sigv4"
    topics: dict[str, Any] = {}
    if topics_file is not None:
        try:
            loaded = _json_file(topics_file)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"--config: cannot read {topics_file}: {exc}") from exc
        reporting = loaded.get("reporting") if isinstance(loaded, dict) else None
        found = reporting.get("topics") if isinstance(reporting, dict) else None
        topics = found if isinstance(found, dict) else {}
    values: dict[str, Any] = {
        "endpoint": endpoint or env.get("L4V_FLEET_ENDPOINT") or "",
        "auth": auth,
        "port": port if port is not None else (8883 if auth == "mtls" else 443),
        "region": region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        "cert": cert,
        "key": key,
        "ca": ca,
        "client_id": client_id or f"l4v-fleet-{uuid.uuid4().hex[:12]}",
        "topics": topics,
    }
    try:
        return BrokerSettings.model_validate(values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "options"
            lines.append(f"{where}: {error['msg']}")
        raise ConfigurationError("; ".join(lines)) from exc


def _json_file(path: Path) -> Any:
    import json

    return json.loads(path.read_text())


class SigV4WebSocketTransport(DirectMqttTransport):
    """MQTT5 over WebSocket, signed with SigV4 credentials from the default chain."""

    def __init__(self, config: DirectMqttConfig, region: str) -> None:
        super().__init__(config)
        self._region = region

    def _new_client(self, options: dict[str, Any]) -> Any:
        from awscrt import auth
        from awsiot import mqtt5_client_builder

        ca = os.fspath(self._config.ca_path) or None
        try:
            return mqtt5_client_builder.websockets_with_default_aws_signing(
                region=self._region,
                credentials_provider=auth.AwsCredentialsProvider.new_default_chain(),
                ca_filepath=ca,
                **options,
            )
        except Exception as exc:
            raise ConfigurationError(f"--region/credentials: cannot sign for IoT: {exc}") from exc


def open_subscription(
    settings: BrokerSettings, handler: MessageHandler
) -> DirectMqttTransport:
    """Connect and subscribe to every device's platform, status and health topics.

    Raises TransportError when the broker cannot be reached or refuses a subscription,
    ConfigurationError when the certificate material is unusable.
    """
    config = DirectMqttConfig(
        endpoint=settings.endpoint,
        client_id=settings.client_id,
        cert_path=settings.cert or "",
        key_path=settings.key or "",
        ca_path=settings.ca or "",
        port=settings.port,
        session_expiry=0,  # nothing to keep: retained messages bring the state back
        connect_timeout=settings.connect_timeout,
        reconnect_max_seconds=30.0,
        setting_prefix="fleet",
    )
    transport: DirectMqttTransport
    if settings.auth == "sigv4":
        assert settings.region is not None  # checked by BrokerSettings
        transport = SigV4WebSocketTransport(config, settings.region)
    else:
        transport = DirectMqttTransport(config)
    transport.connect(settings.connect_timeout)
    try:
        for topic_filter in settings.filters().values():
            transport.subscribe(topic_filter, handler, timeout=settings.connect_timeout)
    except Exception:
        transport.close()
        raise
    return transport
