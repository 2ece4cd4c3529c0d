"""MQTT through the Greengrass nucleus: PublishToIoTCore / SubscribeToIoTCore over IPC.

The nucleus holds the device's own MQTT connection; the component reaches it over a
Unix socket (``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT``) and authenticates
with ``SVCUID``. Both come from the nucleus in the component's environment.

Errors:

* ``AccessDeniedError`` (a TerminalError) when the nucleus refuses: the CONNECT was
  rejected (wrong SVCUID) or an operation hit ``UnauthorizedError`` because the topic is
  outside the recipe's ``accessControl`` for ``aws.greengrass.ipc.mqttproxy``. Retrying
  cannot help; the recipe (or its deployment) must change.
* ``TransportError`` for everything that may pass: no socket yet, nucleus restarting,
  closed connection, ServiceError, no answer within the timeout.

``retain`` is passed on (``PublishToIoTCore.retain``): nucleus 2.10 and later publish
it retained (they speak MQTT 5 to AWS IoT Core; an older nucleus ignores the field, and
the message is then delivered but not kept).
After the connection to the nucleus dropped, the next publish/subscribe reconnects once
(bounded by its timeout) and renews every subscription.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

from awscrt import io as crt_io
from awsiot import eventstreamrpc
from awsiot.greengrasscoreipc import model
from awsiot.greengrasscoreipc.client import GreengrassCoreIPCClient
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from agent.errors import AccessDeniedError, ConfigurationError, TransportError
from agent.reporting.transport import MessageHandler

_log = logging.getLogger(__name__)

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"


def nucleus_available(env: Mapping[str, str]) -> bool:
    """Whether ``env`` is a Greengrass component's environment with a reachable IPC socket."""
    path = env.get(SOCKET_ENV, "")
    if not env.get(TOKEN_ENV) or not path:
        return False
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"


class _Lifecycle(eventstreamrpc.LifecycleHandler):  # type: ignore[misc]
    """Tells the transport when the connection to the nucleus ends."""

    def __init__(self, transport: IpcTransport, generation: int) -> None:
        self._transport = transport
        self._generation = generation

    def on_connect(self) -> None:
        pass

    def on_disconnect(self, reason: Exception | None) -> None:
        self._transport._on_disconnect(self._generation, reason)

    def on_error(self, error: Exception) -> bool:
        _log.warning("ipc connection error: %s", _describe(error))
        return True  # close; the next operation reconnects

    def on_ping(self, headers: Any, payload: bytes) -> None:
        pass


class IpcTransport:
    """The nucleus' MQTT connection, used through Greengrass IPC."""

    supports_retain = True

    def __init__(self, socket_path: str | None = None, auth_token: str | None = None) -> None:
        """Use the given socket and token; each defaults to the process environment.

        Raises ConfigurationError when either is missing (not started by a nucleus).
        """
        socket_path = socket_path or os.environ.get(SOCKET_ENV)
        auth_token = auth_token or os.environ.get(TOKEN_ENV)
        missing = [
            name
            for name, value in ((TOKEN_ENV, auth_token), (SOCKET_ENV, socket_path))
            if not value
        ]
        if missing or socket_path is None or auth_token is None:
            raise ConfigurationError(
                "not running as a Greengrass component: environment lacks " + ", ".join(missing)
            )
        self._socket_path = socket_path
        self._auth_token = auth_token
        self._lock = threading.Lock()
        #: Serializes connect/reconnect/close.
        self._connecting = threading.Lock()
        self._client: Any = None
        self._generation = 0
        self._connected = False
        self._closed = False
        self._subscriptions: dict[str, MessageHandler] = {}
        self._operations: dict[str, Any] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IpcTransport:
        """Build from a component environment (SVCUID and the socket path) only."""
        missing = [name for name in (TOKEN_ENV, SOCKET_ENV) if not env.get(name)]
        if missing:
            raise ConfigurationError(
                "not running as a Greengrass component: environment lacks " + ", ".join(missing)
            )
        return cls(env[SOCKET_ENV], env[TOKEN_ENV])

    # -- Transport --------------------------------------------------------------------

    def connect(self, timeout: float) -> None:
        """Connect to the nucleus; AccessDeniedError if it rejects the SVCUID."""
        with self._connecting:
            with self._lock:
                self._closed = False
                if self._connected:
                    return
            self._open(timeout)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        """PublishToIoTCore at QoS 1 (retained if ``retain``); returns once the nucleus
        accepted the message."""
        deadline = time.monotonic() + timeout
        client = self._ensure_connected(timeout, "publish")
        try:
            future = client.publish_to_iot_core_async(
                topic_name=topic, qos=model.QOS.AT_LEAST_ONCE, payload=payload, retain=retain
            )
            future.result(max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            raise self._translate(exc, f"publish to {topic}", timeout) from exc

    def subscribe(self, topic: str, handler: MessageHandler, *, timeout: float) -> None:
        """SubscribeToIoTCore at QoS 1; ``handler`` runs on one worker thread, in order."""
        client = self._ensure_connected(timeout, "subscribe")
        self._subscribe(client, topic, handler, timeout)
        with self._lock:
            self._subscriptions[topic] = handler

    def is_connected(self) -> bool:
        with self._lock:
            return self._connected

    def close(self) -> None:
        """Close the IPC connection; idempotent. Do not call it from a message handler."""
        with self._connecting:
            with self._lock:
                self._closed = True
            self._drop()

    def __enter__(self) -> IpcTransport:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _open(self, timeout: float) -> None:
        """Open a new connection (the caller holds ``_connecting``)."""
        self._drop()
        with self._lock:
            self._generation += 1
            generation = self._generation
        connection = self._new_connection()
        try:
            connection.connect(_Lifecycle(self, generation)).result(timeout)
        except Exception as exc:
            connection.close()
            if isinstance(exc, eventstreamrpc.AccessDeniedError):
                raise AccessDeniedError(
                    f"the nucleus rejected the IPC connection (check {TOKEN_ENV}): {_describe(exc)}"
                ) from exc
            if isinstance(exc, FutureTimeoutError):
                raise TransportError(
                    f"no IPC connection to the nucleus within {timeout:g} s"
                ) from exc
            raise TransportError(
                f"IPC connection to {self._socket_path} failed: {_describe(exc)}"
            ) from exc
        # One worker keeps subscription callbacks in arrival order and off the network thread.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipc-events")
        # Start its one thread now rather than on the first received command, so the
        # process has its full set of threads from the moment it is connected.
        executor.submit(int)
        client = GreengrassCoreIPCClientV2(
            client=GreengrassCoreIPCClient(connection), executor=executor
        )
        with self._lock:
            self._client = client
            self._connected = True

    def _new_connection(self) -> Any:
        event_loop = crt_io.EventLoopGroup(num_threads=1)
        bootstrap = crt_io.ClientBootstrap(event_loop, crt_io.DefaultHostResolver(event_loop))
        socket_options = crt_io.SocketOptions()
        socket_options.domain = crt_io.SocketDomain.Local
        return eventstreamrpc.Connection(
            host_name=self._socket_path,
            port=0,  # unused for a Unix socket
            bootstrap=bootstrap,
            socket_options=socket_options,
            connect_message_amender=eventstreamrpc.MessageAmendment.create_static_authtoken_amender(
                self._auth_token
            ),
        )

    def _drop(self) -> None:
        """Close the current client, if any (the caller holds ``_connecting``)."""
        with self._lock:
            client, self._client = self._client, None
            self._connected = False
            self._generation += 1
            self._operations.clear()
        if client is None:
            return
        try:
            closed: Future[Any] = client.close(executor_wait=False)
            closed.result(5.0)
        except Exception as exc:  # closing is best effort
            _log.debug("ipc close: %s", _describe(exc))

    def _ensure_connected(self, timeout: float, operation: str) -> Any:
        with self._lock:
            if self._connected and self._client is not None:
                return self._client
            if self._closed or self._generation == 0:
                raise TransportError(f"cannot {operation}: IPC not connected")
        with self._connecting:
            with self._lock:
                if self._connected and self._client is not None:
                    return self._client
            self._open(timeout)
            with self._lock:
                client = self._client
                subscriptions = dict(self._subscriptions)
            for topic, handler in subscriptions.items():
                self._subscribe(client, topic, handler, timeout)
            _log.info("ipc reconnected; %d subscription(s) renewed", len(subscriptions))
            return client

    def _subscribe(self, client: Any, topic: str, handler: MessageHandler, timeout: float) -> None:
        def on_event(event: Any) -> None:
            message = getattr(event, "message", None)
            if message is None:
                return
            try:
                handler(str(message.topic_name), bytes(message.payload or b""))
            except Exception:
                _log.exception("ipc message handler failed for %s", topic)

        def on_error(error: Exception) -> bool:
            _log.warning("ipc subscription %s error: %s", topic, _describe(error))
            return True

        try:
            future, operation = client.subscribe_to_iot_core_async(
                topic_name=topic,
                qos=model.QOS.AT_LEAST_ONCE,
                on_stream_event=on_event,
                on_stream_error=on_error,
            )
            future.result(timeout)
        except Exception as exc:
            raise self._translate(exc, f"subscribe to {topic}", timeout) from exc
        with self._lock:
            self._operations[topic] = operation

    def _translate(self, exc: Exception, what: str, timeout: float) -> Exception:
        if isinstance(exc, model.UnauthorizedError):
            return AccessDeniedError(
                f"{what} denied by the nucleus: the recipe's accessControl for "
                f"aws.greengrass.ipc.mqttproxy does not allow it ({_describe(exc)})",
                code="UnauthorizedError",
            )
        if isinstance(exc, FutureTimeoutError):
            return TransportError(f"{what}: no answer from the nucleus within {timeout:g} s")
        if isinstance(exc, (eventstreamrpc.ConnectionClosedError, eventstreamrpc.EventStreamError)):
            with self._lock:
                self._connected = False
        return TransportError(f"{what} failed: {_describe(exc)}")

    def _on_disconnect(self, generation: int, reason: Exception | None) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self._connected = False
        if reason is not None:
            _log.warning("ipc connection to the nucleus lost: %s", _describe(reason))
