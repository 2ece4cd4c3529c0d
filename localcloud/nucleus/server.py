"""The simulated nucleus's IPC server: Greengrass IPC over a Unix socket.

Speaks the event-stream RPC protocol the awsiotsdk client uses (see
``localcloud.nucleus.eventstream``): a CONNECT carrying the component's auth token
(SVCUID), then one stream per operation. Served operations (JSON member names as in
the Greengrass IPC model):

* ``PublishToIoTCore`` / ``SubscribeToIoTCore`` -- through an :class:`IoTCoreBus`,
  authorized per the caller's ``accessControl`` for ``aws.greengrass.ipc.mqttproxy``;
  ``retain`` is passed on (nucleus 2.10+); a subscription covered by one already open
  on the device gets no retained messages (the nucleus does not subscribe again);
* ``GetConfiguration`` / ``SubscribeToConfigurationUpdate`` -- another component's
  configuration needs an ``aws.greengrass.ipc.config`` policy whose resources name
  that component (or ``*``);
* ``UpdateState``;
* ``SubscribeToComponentUpdates`` / ``DeferComponentUpdate`` -- no authorization policy
  (the real nucleus checks none for them); the device (:class:`UpdatePolicyNotifier`)
  asks for pre- and post-update events while it applies a deployment. As the real
  nucleus: subscribing needs the caller to be a component the device knows
  (``ResourceNotFoundError``); deferring needs a subscription and a ``deploymentId``
  (``InvalidArgumentsError``) and a pre-update event still awaiting this component's
  answer for that deployment (``ServiceError`` otherwise: too late, or never asked). An
  answer without ``recheckAfterMs`` is ignored, so the update waits for the policy
  timeout. Only the latest subscription of a component is awaited by its answer: a
  component with two subscriptions holds every update until the timeout;
* ``GetComponentDetails`` and ``ListComponents``, which belong to the Greengrass CLI
  (``aws.greengrass.Cli``), as do ``RestartComponent``, ``StopComponent`` and the local
  deployment operations: like the real nucleus, the caller first needs an
  ``accessControl`` policy under ``aws.greengrass.Cli`` for the operation
  (``UnauthorizedError``), and then the CLI component must be on the device
  (``ServiceError``).

Anything else is answered with ``ServiceError``. One thread accepts, one thread per
connection reads; every thread is joined on :meth:`Nucleus.stop`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import secrets
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from localcloud.componenthost import ComponentHost, ComponentInfo, RoundAnswered
from localcloud.device import NUCLEUS_NAME, NUCLEUS_VERSION, recipe_get
from localcloud.iotcore import IoTCoreBus, SubscriptionHandle, validate_filter, validate_topic
from localcloud.nucleus.eventstream import EventStreamError, FrameDecoder, Header, Message, encode

if TYPE_CHECKING:
    from localcloud.nucleus.tes import TokenExchangeService

logger = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
MQTT_PROXY_SERVICE = "aws.greengrass.ipc.mqttproxy"
CONFIG_SERVICE = "aws.greengrass.ipc.config"
#: The Greengrass CLI component: it serves these IPC operations, not the nucleus.
CLI_COMPONENT = "aws.greengrass.Cli"
#: CLI operations and whether their policy resource is the named component (else ``*``).
CLI_OPERATIONS: dict[str, bool] = {
    "GetComponentDetails": True,
    "RestartComponent": True,
    "StopComponent": True,
    "ListComponents": False,
    "CreateLocalDeployment": False,
    "GetLocalDeploymentStatus": False,
    "ListLocalDeployments": False,
    "CreateDebugPassword": False,
}
NAMESPACE = "aws.greengrass#"
RPC_VERSION = "0.1.0"
#: AF_UNIX sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
STOP_TIMEOUT_SECONDS = 5.0
SEND_TIMEOUT_SECONDS = 5.0
REJECTED_LINGER_SECONDS = 5.0
ACCEPT_BACKOFF_SECONDS = 0.1


class MessageType:
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


class MessageFlag:
    NONE = 0
    CONNECTION_ACCEPTED = 1
    TERMINATE_STREAM = 2


class Published(NamedTuple):
    """One PublishToIoTCore the nucleus accepted."""

    component: str
    topic: str
    payload: bytes
    qos: int


class Deferral(NamedTuple):
    """One DeferComponentUpdate the nucleus accepted."""

    component: str
    deployment_id: str
    recheck_after_ms: int | None


class IpcError(Exception):
    """An operation failure answered as APPLICATION_ERROR with model ``shape``."""

    def __init__(self, shape: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.shape = shape
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        return {"message": self.message, **self.fields}


def _unauthorized(component: str, operation: str, resource: str) -> IpcError:
    return IpcError(
        "UnauthorizedError",
        f"Principal {component} is not authorized to perform {NAMESPACE}{operation} "
        f"on resource {resource}",
    )


def _invalid(message: str) -> IpcError:
    return IpcError("InvalidArgumentsError", message)


class _ProtocolViolation(Exception):
    """The peer broke the RPC protocol: answer PROTOCOL_ERROR and close."""


# -- authorization ---------------------------------------------------------------------
def mqtt_resource_matches(resource: str, requested: str) -> bool:
    """Whether a policy ``resource`` (MQTT filter syntax, or ``*``) covers ``requested``.

    ``requested`` is a topic (publish) or a topic filter (subscribe). ``#`` in the
    resource covers the rest, including requested wildcards; ``+`` covers exactly one
    level (a requested ``+`` too, but not a requested ``#``); any other level must be
    equal. So resource ``a/#`` authorizes subscribing to ``a/+/c`` but resource ``a/+``
    does not authorize ``a/#``.
    """
    if resource == "*":
        return True
    resource_levels = resource.split("/")
    requested_levels = requested.split("/")
    for index, level in enumerate(resource_levels):
        if level == "#" and index == len(resource_levels) - 1:
            return True
        if index >= len(requested_levels):
            return False
        if level == "+":
            if requested_levels[index] == "#":
                return False
            continue
        if level != requested_levels[index]:
            return False
    return len(resource_levels) == len(requested_levels)


def access_control(info: ComponentInfo) -> dict[str, Any]:
    """The component's accessControl: from its configuration, else its recipe defaults."""
    acl: Any = None
    if isinstance(info.configuration, dict) and "accessControl" in info.configuration:
        acl = info.configuration["accessControl"]
    else:
        defaults = recipe_get(recipe_get(info.recipe, "ComponentConfiguration"), "DefaultConfiguration")
        acl = recipe_get(defaults, "accessControl")
    if isinstance(acl, str):
        try:
            acl = json.loads(acl)
        except ValueError:
            return {}
    return acl if isinstance(acl, dict) else {}


# -- connection state ------------------------------------------------------------------
@dataclass
class _Stream:
    id: int
    operation: str
    open: bool = True
    cleanups: list[Callable[[], object]] = field(default_factory=list)
    #: Events wait here until the initial response of a streaming operation is sent.
    responded: bool = False
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        self.open = False
        cleanups, self.cleanups = self.cleanups, []
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception:
                logger.exception("IPC stream cleanup failed")


@dataclass
class _UpdateSubscription:
    connection: _Connection
    stream: _Stream
    component: str


@dataclass
class _AwaitedAnswer:
    """One subscription's pending answer to a pre-update event (a DeferComponentUpdate)."""

    component: str
    deployment_id: str
    answered: bool = False
    recheck_ms: int = 0


@dataclass
class _ConfigSubscription:
    connection: _Connection
    stream: _Stream
    component: str
    key_path: list[str]


class _Connection:
    """One client connection: a reader thread and a locked writer."""

    def __init__(self, nucleus: Nucleus, sock: socket.socket) -> None:
        self.nucleus = nucleus
        self.sock = sock
        self.component: str | None = None
        self.rejected = False
        self.streams: dict[int, _Stream] = {}
        self.last_stream_id = 0
        self._send_lock = threading.Lock()
        self._decoder = FrameDecoder()
        self._dead = False

    # -- writing --------------------------------------------------------------------
    def send(
        self,
        message_type: int,
        flags: int = MessageFlag.NONE,
        stream_id: int = 0,
        headers: list[Header] | None = None,
        payload: bytes = b"",
    ) -> bool:
        """Write one frame; False (and the connection shut down) if it could not be sent."""
        frame = encode(
            [
                Header.int32(":message-type", message_type),
                Header.int32(":message-flags", flags),
                Header.int32(":stream-id", stream_id),
                *(headers or []),
            ],
            payload,
        )
        with self._send_lock:
            if self._dead:
                return False
            try:
                self.sock.sendall(frame)
                return True
            except OSError:
                self._dead = True
        self.shutdown()
        return False

    def send_shape(
        self, stream: _Stream, model: str, body: dict[str, Any], *, flags: int, error: bool = False
    ) -> bool:
        if not stream.open:
            return False
        return self.send(
            MessageType.APPLICATION_ERROR if error else MessageType.APPLICATION_MESSAGE,
            flags,
            stream.id,
            [
                Header.string(":content-type", "application/json"),
                Header.string("service-model-type", NAMESPACE + model),
            ],
            json.dumps(body, separators=(",", ":")).encode(),
        )

    def respond_open(self, stream: _Stream, model: str, body: dict[str, Any]) -> None:
        """Send a streaming operation's initial response, then any events held back."""
        with stream.lock:
            self.send_shape(stream, model, body, flags=MessageFlag.NONE)
            stream.responded = True
            pending, stream.pending = stream.pending, []
            for event_model, event_body in pending:
                self.send_shape(stream, event_model, event_body, flags=MessageFlag.NONE)

    def send_event(self, stream: _Stream, model: str, body: dict[str, Any]) -> bool:
        """A stream event; held back until the initial response went out. False if the
        stream is closed or the event could not be written."""
        with stream.lock:
            if not stream.open:
                return False
            if not stream.responded:
                stream.pending.append((model, body))
                return True
            return self.send_shape(stream, model, body, flags=MessageFlag.NONE)

    def shutdown(self) -> None:
        """Wake the reader (it then closes everything); safe from any thread."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # -- reading --------------------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except (TimeoutError, OSError):
                    break
                if not data:
                    break
                if self.rejected:
                    continue
                try:
                    messages = self._decoder.feed(data)
                except EventStreamError as exc:
                    logger.info("IPC: closing connection on malformed frame: %s", exc)
                    break
                try:
                    for message in messages:
                        self._handle(message)
                except _ProtocolViolation as exc:
                    logger.info("IPC: protocol error: %s", exc)
                    self.send(MessageType.PROTOCOL_ERROR, payload=str(exc).encode())
                    break
        except Exception:
            logger.exception("IPC connection failed")
        finally:
            self._close()

    def _close(self) -> None:
        with self._send_lock:
            self._dead = True
        streams, self.streams = list(self.streams.values()), {}
        for stream in streams:
            stream.close()
        self.shutdown()
        self.sock.close()

    def _handle(self, message: Message) -> None:
        message_type = message.get(":message-type")
        flags = message.get(":message-flags", 0)
        stream_id = message.get(":stream-id", 0)
        if not all(isinstance(v, int) for v in (message_type, flags, stream_id)):
            raise _ProtocolViolation("missing or mistyped :message-type/:message-flags/:stream-id")
        if self.component is None:
            if message_type != MessageType.CONNECT:
                raise _ProtocolViolation("the first message must be CONNECT")
            self._connect(message)
            return
        if message_type == MessageType.PING:
            self.send(MessageType.PING_RESPONSE, payload=message.payload)
        elif message_type == MessageType.APPLICATION_MESSAGE:
            self._application_message(message, flags, stream_id)
        elif message_type == MessageType.APPLICATION_ERROR:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                stream.close()
        elif message_type == MessageType.CONNECT:
            raise _ProtocolViolation("CONNECT sent twice")
        elif message_type in (MessageType.PROTOCOL_ERROR, MessageType.INTERNAL_ERROR):
            raise _ProtocolViolation("peer reported an error")
        # PING_RESPONSE and CONNECT_ACK from a client carry nothing for us.

    def _connect(self, message: Message) -> None:
        if message.get(":version") != RPC_VERSION:
            raise _ProtocolViolation(f"unsupported :version {message.get(':version')!r}")
        token: Any = None
        try:
            body = json.loads(message.payload or b"{}")
            token = body.get("authToken") if isinstance(body, dict) else None
        except ValueError:
            token = None
        component = self.nucleus.component_for_token(token) if isinstance(token, str) else None
        if component is None:
            logger.info("IPC: rejected CONNECT with an unknown auth token")
            self.rejected = True
            self.send(MessageType.CONNECT_ACK, MessageFlag.NONE)
            # Let the client read the refusal and close; do not wait forever for it.
            self.sock.settimeout(REJECTED_LINGER_SECONDS)
            return
        self.component = component
        self.send(MessageType.CONNECT_ACK, MessageFlag.CONNECTION_ACCEPTED)

    def _application_message(self, message: Message, flags: int, stream_id: int) -> None:
        if stream_id <= 0:
            raise _ProtocolViolation("APPLICATION_MESSAGE without a stream id")
        existing = self.streams.get(stream_id)
        if existing is not None:
            if flags & MessageFlag.TERMINATE_STREAM:
                del self.streams[stream_id]
                existing.close()
            return  # No operation here takes client stream events.
        if stream_id <= self.last_stream_id:
            return  # A late message on a stream that is already closed.
        self.last_stream_id = stream_id
        operation = message.get("operation")
        if not isinstance(operation, str):
            raise _ProtocolViolation("a new stream needs an 'operation' header")
        stream = _Stream(stream_id, operation)
        self.streams[stream_id] = stream
        self.nucleus._serve(self, stream, message)

    def finish(self, stream: _Stream, model: str, body: dict[str, Any], *, error: bool) -> None:
        """Answer and terminate a stream."""
        self.send_shape(stream, model, body, flags=MessageFlag.TERMINATE_STREAM, error=error)
        self.streams.pop(stream.id, None)
        stream.close()


# -- the nucleus -----------------------------------------------------------------------
class Nucleus:
    """Greengrass IPC for the components of one simulated core device."""

    def __init__(
        self,
        host: ComponentHost,
        bus: IoTCoreBus,
        socket_path: str | Path,
        *,
        tes: TokenExchangeService | None = None,
        region: str = DEFAULT_REGION,
        ggc_version: str | None = None,
        root_ca_path: str | None = None,
    ) -> None:
        self.host = host
        self.bus = bus
        self.socket_path = Path(socket_path)
        if len(os.fsencode(str(self.socket_path))) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(f"socket path longer than {MAX_SOCKET_PATH_BYTES} bytes")
        self.region = region
        self._ggc_version = ggc_version
        self.root_ca_path = root_ca_path
        self.tes: TokenExchangeService | None = None
        self._lock = threading.Condition()
        self._tokens: dict[str, str] = {}  # token -> component
        self._by_component: dict[str, str] = {}  # component -> token
        self._published: list[Published] = []
        #: the topic filter of every open SubscribeToIoTCore stream (all components)
        self._iot_filters: list[str] = []
        self._config_subscriptions: list[_ConfigSubscription] = []
        self._update_subscriptions: list[_UpdateSubscription] = []
        #: (component, deployment id) -> the answer awaited from it (its latest only).
        self._awaited: dict[tuple[str, str], _AwaitedAnswer] = {}
        #: every answer the current pre-update round waits for, and who to tell
        self._round: list[_AwaitedAnswer] = []
        self._round_answered: RoundAnswered | None = None
        self._deferrals: list[Deferral] = []
        self._connections: dict[_Connection, threading.Thread] = {}
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._running = False
        self._operations: dict[str, Callable[[_Connection, _Stream, dict[str, Any]], None]] = {
            "PublishToIoTCore": self._publish_to_iot_core,
            "SubscribeToIoTCore": self._subscribe_to_iot_core,
            "GetConfiguration": self._get_configuration,
            "SubscribeToConfigurationUpdate": self._subscribe_to_configuration_update,
            "UpdateState": self._update_state,
            "SubscribeToComponentUpdates": self._subscribe_to_component_updates,
            "DeferComponentUpdate": self._defer_component_update,
            "GetComponentDetails": self._get_component_details,
            "ListComponents": self._list_components,
        }
        host.add_config_listener(self._on_config_changed)
        host.set_update_notifier(self)
        if tes is not None:
            self.attach_tes(tes)

    # -- identities -------------------------------------------------------------------
    def register_component(self, name: str) -> str:
        """The IPC auth token (SVCUID) of component ``name``, created on first call."""
        with self._lock:
            token = self._by_component.get(name)
            if token is None:
                token = secrets.token_urlsafe(24)
                self._by_component[name] = token
                self._tokens[token] = name
            tes = self.tes
        if tes is not None:
            tes.register_token(token)
        return token

    def component_for_token(self, token: str) -> str | None:
        with self._lock:
            return self._tokens.get(token)

    def attach_tes(self, tes: TokenExchangeService) -> None:
        """Serve credentials to every (current and future) component through ``tes``."""
        with self._lock:
            self.tes = tes
            tokens = list(self._tokens)
        for token in tokens:
            tes.register_token(token)

    @property
    def ggc_version(self) -> str:
        """The nucleus version the device runs (given, else its installed Nucleus)."""
        if self._ggc_version is not None:
            return self._ggc_version
        nucleus = self.host.component(NUCLEUS_NAME)
        return nucleus.version if nucleus is not None else NUCLEUS_VERSION

    def component_env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment Greengrass gives component ``name``'s lifecycle scripts."""
        token = self.register_component(name)
        env = {
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(self.socket_path),
            "SVCUID": token,
            "AWS_IOT_THING_NAME": self.host.thing_name,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "GGC_VERSION": self.ggc_version,
        }
        if self.root_ca_path:
            env["GG_ROOT_CA_PATH"] = self.root_ca_path
        if self.tes is not None:
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = self.tes.url
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = token
        env.update(extra or {})
        return env

    @property
    def published(self) -> list[Published]:
        """Every accepted PublishToIoTCore, oldest first (a snapshot)."""
        with self._lock:
            return list(self._published)

    @property
    def deferrals(self) -> list[Deferral]:
        """Every accepted DeferComponentUpdate, oldest first (a snapshot)."""
        with self._lock:
            return list(self._deferrals)

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until exactly ``count`` connections are open; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._connections) == count, timeout)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Nucleus:
        with self._lock:
            if self._running:
                return self
            if self.socket_path.is_socket():
                self.socket_path.unlink()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(str(self.socket_path))
                listener.listen(64)
            except OSError:
                listener.close()
                raise
            self._listener = listener
            self._wake_r, self._wake_w = socket.socketpair()
            self._running = True
            self._accept_thread = threading.Thread(
                target=self._accept_loop, name="nucleus-ipc-accept", daemon=True
            )
            self._accept_thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Close the socket and every connection; join all threads (bounded)."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            accept_thread, wake_w = self._accept_thread, self._wake_w
        if wake_w is not None:
            with contextlib.suppress(OSError):
                wake_w.send(b"x")
        if accept_thread is not None:
            accept_thread.join(timeout)
        with self._lock:
            for sock in (self._listener, self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._listener = self._wake_r = self._wake_w = None
            self._accept_thread = None
            connections = dict(self._connections)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        for connection in connections:
            connection.shutdown()
        for thread in connections.values():
            thread.join(timeout)
        still_alive = [t.name for t in connections.values() if t.is_alive()]
        if still_alive or (accept_thread is not None and accept_thread.is_alive()):
            logger.warning("nucleus IPC threads did not stop: %s", still_alive)

    def __enter__(self) -> Nucleus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        listener, wake_r = self._listener, self._wake_r
        assert listener is not None and wake_r is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if wake_r in ready:
                    return
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as exc:  # e.g. out of file descriptors: back off briefly
                    logger.warning("IPC accept failed: %s", exc)
                    if _readable(wake_r, ACCEPT_BACKOFF_SECONDS):
                        return  # stop() was called meanwhile
                    continue
                with self._lock:
                    if not self._running:
                        sock.close()
                        return
                    _set_send_timeout(sock, SEND_TIMEOUT_SECONDS)
                    connection = _Connection(self, sock)
                    thread = threading.Thread(
                        target=self._run_connection,
                        args=(connection,),
                        name="nucleus-ipc-conn",
                        daemon=True,
                    )
                    self._connections[connection] = thread
                    self._lock.notify_all()
                thread.start()

    def _run_connection(self, connection: _Connection) -> None:
        try:
            connection.run()
        finally:
            with self._lock:
                self._connections.pop(connection, None)
                self._lock.notify_all()

    # -- dispatch -------------------------------------------------------------------
    def _serve(self, connection: _Connection, stream: _Stream, message: Message) -> None:
        assert connection.component is not None
        operation = stream.operation
        short = operation[len(NAMESPACE) :] if operation.startswith(NAMESPACE) else ""
        handler = self._operations.get(short)
        try:
            try:
                request = json.loads(message.payload or b"{}")
            except ValueError as exc:
                raise _invalid(f"request is not JSON: {exc}") from exc
            if not isinstance(request, dict):
                raise _invalid("request must be a JSON object")
            if short in CLI_OPERATIONS:
                self._check_cli(connection.component, short, request)
            if handler is None:
                raise IpcError("ServiceError", f"Operation {operation} is not supported")
            handler(connection, stream, request)
        except IpcError as error:
            connection.finish(stream, error.shape, error.body(), error=True)
        except Exception as exc:
            logger.exception("IPC operation %s failed", operation)
            connection.finish(stream, "ServiceError", {"message": str(exc)}, error=True)

    def _authorize(self, component: str, service: str, operation: str, resource: str) -> None:
        info = self.host.component(component)
        acl = access_control(info) if info is not None else {}
        policies = acl.get(service)
        if isinstance(policies, dict):
            thing = self.host.thing_name
            for policy in policies.values():
                if not isinstance(policy, dict):
                    continue
                operations = policy.get("operations") or []
                if NAMESPACE + operation not in operations and "*" not in operations:
                    continue
                for pattern in policy.get("resources") or []:
                    if not isinstance(pattern, str):
                        continue
                    pattern = pattern.replace("{iot:thingName}", thing)
                    if service == MQTT_PROXY_SERVICE:
                        if mqtt_resource_matches(pattern, resource):
                            return
                    elif pattern in ("*", resource):
                        return
        raise _unauthorized(component, operation, resource)

    def _check_cli(self, caller: str, operation: str, request: dict[str, Any]) -> None:
        """A CLI operation: authorized by a policy under aws.greengrass.Cli, and served only
        when the CLI component is deployed (in that order, as on a real device)."""
        resource = "*"
        if CLI_OPERATIONS[operation]:
            name = request.get("componentName")
            resource = name if isinstance(name, str) and name else "*"
        self._authorize(caller, CLI_COMPONENT, operation, resource)
        if self.host.component(CLI_COMPONENT) is None:
            raise IpcError(
                "ServiceError",
                f"{NAMESPACE}{operation} is served by {CLI_COMPONENT}, which is not deployed",
            )

    def _target_component(self, caller: str, request: dict[str, Any], operation: str) -> str:
        target = request.get("componentName") or caller
        if not isinstance(target, str):
            raise _invalid("componentName must be a string")
        if target != caller:
            self._authorize(caller, CONFIG_SERVICE, operation, target)
        return target

    # -- operations -----------------------------------------------------------------
    def _publish_to_iot_core(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        caller = connection.component or ""
        # The real nucleus's order: topic, authorization, payload, QoS, then retain.
        topic = _topic_name(request, validate_topic)
        self._authorize(caller, MQTT_PROXY_SERVICE, "PublishToIoTCore", topic)
        if request.get("payload") is None:
            raise _invalid("Payload is required")
        try:
            payload = base64.b64decode(request["payload"], validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise _invalid("payload must be base64") from exc
        qos = _parse_qos(request.get("qos"))
        retain = _parse_retain(request.get("retain"))
        with self._lock:
            self._published.append(Published(caller, topic, payload, qos))
        self.bus.publish(topic, payload, qos, retain, source=caller)
        connection.finish(stream, "PublishToIoTCoreResponse", {}, error=False)

    def _subscribe_to_iot_core(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        caller = connection.component or ""
        topic_filter = _topic_name(request, validate_filter)
        self._authorize(caller, MQTT_PROXY_SERVICE, "SubscribeToIoTCore", topic_filter)
        _parse_qos(request.get("qos"))

        def deliver(topic: str, payload: bytes) -> None:
            body = {"message": {"topicName": topic, "payload": base64.b64encode(payload).decode()}}
            connection.send_event(stream, "IoTCoreMessage", body)

        # The nucleus shares one cloud subscription between the components of the device:
        # a filter already covered by an open one is not sent to IoT Core again, so IoT
        # Core hands it no retained messages (MqttClient.findExistingSubscriberForTopic).
        with self._lock:
            covered = any(mqtt_resource_matches(f, topic_filter) for f in self._iot_filters)
            self._iot_filters.append(topic_filter)
        # Subscribed before the response (as the nucleus does); events wait for it.
        handle: SubscriptionHandle = self.bus.subscribe(
            topic_filter, deliver, deliver_retained=not covered
        )

        def unsubscribe() -> None:
            self.bus.unsubscribe(handle)
            with self._lock:
                self._iot_filters.remove(topic_filter)

        stream.cleanups.append(unsubscribe)
        connection.respond_open(stream, "SubscribeToIoTCoreResponse", {})

    def _get_configuration(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        caller = connection.component or ""
        target = self._target_component(caller, request, "GetConfiguration")
        key_path = _key_path(request.get("keyPath"))
        info = self.host.component(target)
        if info is None:
            raise _not_found("Component", target)
        value: Any = info.configuration
        for index, key in enumerate(key_path):
            if not isinstance(value, dict) or key not in value:
                raise _not_found("KeyPath", "/".join(key_path[: index + 1]))
            value = value[key]
        if not isinstance(value, dict):
            value = {key_path[-1]: value} if key_path else {}
        body = {"componentName": target, "value": value}
        connection.finish(stream, "GetConfigurationResponse", body, error=False)

    def _subscribe_to_configuration_update(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        caller = connection.component or ""
        target = self._target_component(caller, request, "SubscribeToConfigurationUpdate")
        key_path = _key_path(request.get("keyPath"))
        subscription = _ConfigSubscription(connection, stream, target, key_path)
        with self._lock:
            self._config_subscriptions.append(subscription)

        def remove() -> None:
            with self._lock:
                if subscription in self._config_subscriptions:
                    self._config_subscriptions.remove(subscription)

        stream.cleanups.append(remove)
        connection.respond_open(stream, "SubscribeToConfigurationUpdateResponse", {})

    def _on_config_changed(self, component: str, key_path: list[str]) -> None:
        changed = [str(k) for k in key_path]
        with self._lock:
            targets = [
                s
                for s in self._config_subscriptions
                if s.component == component
                and changed[: len(s.key_path)] == s.key_path[: len(changed)]
            ]
        for sub in targets:
            body = {"configurationUpdateEvent": {"componentName": component, "keyPath": changed}}
            sub.connection.send_event(sub.stream, "ConfigurationUpdateEvents", body)

    def _update_state(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        state = request.get("state")
        if state not in ("RUNNING", "ERRORED"):
            raise _invalid("state must be RUNNING or ERRORED")
        caller = connection.component or ""
        try:
            self.host.report_state(caller, state)
        except KeyError as exc:
            raise _not_found("Component", caller) from exc
        except ValueError as exc:
            raise _invalid(str(exc)) from exc
        connection.finish(stream, "UpdateStateResponse", {}, error=False)

    def _subscribe_to_component_updates(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        caller = connection.component or ""
        if self.host.component(caller) is None:
            raise _not_found("Component", caller)
        subscription = _UpdateSubscription(connection, stream, caller)
        with self._lock:
            self._update_subscriptions.append(subscription)

        def remove() -> None:
            with self._lock:
                if subscription in self._update_subscriptions:
                    self._update_subscriptions.remove(subscription)

        stream.cleanups.append(remove)
        connection.respond_open(stream, "SubscribeToComponentUpdatesResponse", {})

    def _defer_component_update(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        caller = connection.component or ""
        deployment_id = request.get("deploymentId")
        recheck = request.get("recheckAfterMs")
        message = request.get("message")
        if recheck is not None and (
            isinstance(recheck, bool) or not isinstance(recheck, int) or recheck < 0
        ):
            raise _invalid("recheckAfterMs must be a whole number of milliseconds >= 0")
        if message is not None and not isinstance(message, str):
            raise _invalid("message must be a string")
        notify: RoundAnswered | None = None
        longest = 0
        with self._lock:
            if not any(s.component == caller for s in self._update_subscriptions):
                raise _invalid("Component is not subscribed to component update events")
            if not isinstance(deployment_id, str):
                raise _invalid("Cannot defer the update, the deployment ID provided was null")
            awaited = self._awaited.pop((caller, deployment_id), None)
            if awaited is None:
                raise IpcError(
                    "ServiceError", "Time limit to respond to PreComponentUpdateEvent exceeded"
                )
            self._deferrals.append(Deferral(caller, deployment_id, recheck))
            if recheck is not None:  # the real nucleus ignores an answer without it
                awaited.answered, awaited.recheck_ms = True, recheck
            if self._round and all(a.answered for a in self._round):
                notify, self._round_answered = self._round_answered, None
                longest = max(a.recheck_ms for a in self._round)
        # The device hears the round is over before the caller gets its answer (the real
        # nucleus completes its future first): a caller that got the answer may rely on it.
        if notify is not None:
            notify(longest)
        connection.finish(stream, "DeferComponentUpdateResponse", {}, error=False)

    # -- UpdatePolicyNotifier (called by the device, under the world lock) --------------
    def pre_update(self, deployment_id: str, ggc_restarting: bool, answered: RoundAnswered) -> bool:
        """Send a PreComponentUpdateEvent to every subscription; True if answers are awaited."""
        self.end_round()
        body = {
            "preUpdateEvent": {"deploymentId": deployment_id, "isGgcRestarting": ggc_restarting}
        }
        with self._lock:
            subscriptions = list(self._update_subscriptions)
            for subscription in subscriptions:
                # Keyed per component: a second subscription's slot replaces the first,
                # whose answer then never counts (as in the real nucleus).
                awaited = _AwaitedAnswer(subscription.component, deployment_id)
                self._awaited[(subscription.component, deployment_id)] = awaited
                self._round.append(awaited)
            self._round_answered = answered if self._round else None
        unsent = [
            subscription
            for subscription in subscriptions
            if not subscription.connection.send_event(
                subscription.stream, "ComponentUpdatePolicyEvents", body
            )
        ]
        with self._lock:
            # As the real nucleus: no answer is awaited from a stream the event missed.
            for subscription in unsent:
                missed = self._awaited.pop((subscription.component, deployment_id), None)
                if missed is not None and missed in self._round:
                    self._round.remove(missed)
            awaiting = any(not a.answered for a in self._round)
            if not awaiting:  # nobody left to wait for (answers may have raced the sends)
                self._round, self._round_answered = [], None
            return awaiting

    def end_round(self) -> int:
        """Stop awaiting answers; the longest recheckAfterMs among those that came."""
        with self._lock:
            longest = max((a.recheck_ms for a in self._round if a.answered), default=0)
            self._awaited.clear()
            self._round = []
            self._round_answered = None
            return longest

    def post_update(self, deployment_id: str) -> None:
        """Send a PostComponentUpdateEvent to every subscription."""
        with self._lock:
            subscriptions = list(self._update_subscriptions)
        body = {"postUpdateEvent": {"deploymentId": deployment_id}}
        for subscription in subscriptions:
            subscription.connection.send_event(
                subscription.stream, "ComponentUpdatePolicyEvents", body
            )

    def _get_component_details(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        name = request.get("componentName")
        if not isinstance(name, str) or not name:
            raise _invalid("componentName is required")
        info = self.host.component(name)
        if info is None:
            raise _not_found("Component", name)
        body = {"componentDetails": _details(info)}
        connection.finish(stream, "GetComponentDetailsResponse", body, error=False)

    def _list_components(
        self, connection: _Connection, stream: _Stream, request: dict[str, Any]
    ) -> None:
        body = {"components": [_details(info) for info in self.host.components()]}
        connection.finish(stream, "ListComponentsResponse", body, error=False)


def _details(info: ComponentInfo) -> dict[str, Any]:
    return {
        "componentName": info.name,
        "version": info.version,
        "state": info.state,
        "configuration": info.configuration,
    }


def _not_found(kind: str, name: str) -> IpcError:
    return IpcError(
        "ResourceNotFoundError", f"{kind} {name} not found", resourceType=kind, resourceName=name
    )


def _topic_name(request: dict[str, Any], validate: Callable[[str], object]) -> str:
    """The request's ``topicName``, checked by ``validate`` (topic or filter rules)."""
    topic = request.get("topicName")
    if not isinstance(topic, str):
        raise _invalid("topicName is required")
    try:
        validate(topic)
    except ValueError as exc:
        raise _invalid(str(exc)) from exc
    return topic


def _parse_qos(value: Any) -> int:
    # Required, as the real nucleus requires it (it has no default).
    if value is None:
        raise _invalid("QoS is required")
    if value not in ("0", "1"):
        raise _invalid(f"Invalid QoS value: {value}")
    return int(value)


def _parse_retain(value: Any) -> bool:
    """``PublishToIoTCoreRequest.retain``: a JSON boolean; absent or null is False (the
    nucleus reads it with Coerce.toBoolean). Anything else is refused: the real
    nucleus cannot deserialize a request whose boolean member is not one."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid("retain must be a boolean")
    return value


def _key_path(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise _invalid("keyPath must be a list of strings")
    return list(value)


def _readable(sock: socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def _set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound blocking sends (a client that stops reading) without bounding reads."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
