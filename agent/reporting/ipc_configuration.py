"""The agent's own component configuration from the Greengrass nucleus over IPC: read
once at start, then followed (live configuration updates). Next to the IPC transport
(``agent.reporting.ipc``), whose socket and token it shares.

Component lifecycle states are not read over IPC: the nucleus serves them
(GetComponentDetails) only through the Greengrass CLI component, a development tool;
health takes them from Greengrass instead (see ``agent.health``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from agent import errors
from agent.reporting.ipc import SOCKET_ENV, TOKEN_ENV, nucleus_available


def _connect(env: Mapping[str, str], timeout: float) -> Any:
    """A GreengrassCoreIPCClientV2 on the socket and SVCUID of ``env``."""
    from awsiot.greengrasscoreipc import connect
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    ipc = connect(ipc_socket=env[SOCKET_ENV], authtoken=env[TOKEN_ENV], timeout=timeout)
    return GreengrassCoreIPCClientV2(client=ipc)


def read_component_configuration(
    env: Mapping[str, str], timeout: float = 10.0
) -> dict[str, Any] | None:
    """GetConfiguration of the calling component, or None outside Greengrass."""
    if not nucleus_available(env):
        return None
    try:
        import awsiot.greengrasscoreipc  # noqa: F401
    except ImportError as exc:  # pragma: no cover - awsiotsdk is a dependency
        raise errors.ConfigurationError("awsiotsdk is not installed") from exc
    client = None
    try:
        client = _connect(env, timeout)
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


class ConfigurationWatcher:
    """Follows the component's configuration over IPC (SubscribeToConfigurationUpdate).

    Every update event leads to a fresh GetConfiguration; ``on_change`` receives the
    whole new configuration on the IPC client's thread and must return quickly. Errors
    of the subscription are logged by the caller through ``on_error`` and never raise.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        on_change: Callable[[dict[str, Any]], None],
        on_error: Callable[[str], None],
    ) -> None:
        self._env = env
        self._on_change = on_change
        self._on_error = on_error
        self._client: Any = None
        self._operation: Any = None

    def start(self) -> bool:
        """Subscribe; False (and ``on_error``) when the nucleus refuses or is absent."""
        if not nucleus_available(self._env):
            return False
        try:
            self._client = _connect(self._env, 10.0)
            _, self._operation = self._client.subscribe_to_configuration_update(
                key_path=[],
                on_stream_event=self._event,
                on_stream_error=self._stream_error,
            )
            return True
        except Exception as exc:  # awscrt/awsiot raise many unrelated types
            self._on_error(f"cannot subscribe to configuration updates: {type(exc).__name__}: {exc}")
            self.stop()
            return False

    def _event(self, _event: Any) -> None:
        try:
            answer = self._client.get_configuration(key_path=[])
            self._on_change(dict(answer.value or {}))
        except Exception as exc:  # never let a callback exception reach awscrt
            self._on_error(f"cannot read the updated configuration: {type(exc).__name__}: {exc}")

    def _stream_error(self, exc: Exception) -> bool:
        self._on_error(f"configuration update stream failed: {type(exc).__name__}: {exc}")
        return False  # keep the stream open

    def stop(self) -> None:
        if self._operation is not None:
            with contextlib.suppress(Exception):  # closing a dead stream is fine
                self._operation.close()
            self._operation = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
