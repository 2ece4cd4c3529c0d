"""Reading the agent's own component configuration from the Greengrass nucleus (IPC)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent import errors


def read_component_configuration(env: Mapping[str, str], timeout: float = 10.0) -> dict[str, Any] | None:
    """GetConfiguration of the calling component, or None outside Greengrass."""
    from agent.reporting.ipc import nucleus_available

    if not nucleus_available(env):
        return None
    try:
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    except ImportError as exc:  # pragma: no cover - awsiotsdk is a dependency
        raise errors.ConfigurationError("awsiotsdk is not installed") from exc
    client = None
    try:
        client = GreengrassCoreIPCClientV2(
            socket_path=env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
            auth_token=env["SVCUID"],
        )
        answer = client.get_configuration(key_path=[])
        value = answer.value if answer is not None else None
        return dict(value or {})
    except Exception as exc:  # awscrt/awsiot raise many unrelated types
        raise errors.ConfigurationError(
            f"cannot read the component configuration from the nucleus: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if client is not None:
            client.close()
