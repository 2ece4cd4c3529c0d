"""Deployments finished on this device, as its Greengrass nucleus tells them over IPC
(``SubscribeToComponentUpdates``): the production :class:`agent.ports.LocalDeployments`.
Next to the IPC transport (``agent.reporting.ipc``), whose socket and token it shares.

What the nucleus does (read in its source, ``LifecycleIPCEventStreamAgent`` and
``UpdateSystemPolicyService``): for a deployment whose ``componentUpdatePolicy`` action is
NOTIFY_COMPONENTS (the default), before it changes anything it sends every subscriber a
``preUpdateEvent{deploymentId, isGgcRestarting}`` and waits until each answered with
``DeferComponentUpdate`` or the policy's ``timeoutInSeconds`` passed. An answer with
``recheckAfterMs`` > 0 postpones the update that long (then it asks again); an answer
without ``recheckAfterMs`` is ignored, so it waits the full timeout. After the update ran
-- succeeded, failed or rolled back alike, and also when a pending update is canceled --
every subscriber gets ``postUpdateEvent{deploymentId}``, the id CreateDeployment returned.
SKIP_NOTIFY_COMPONENTS sends neither; a nucleus that restarts itself for the update sends
no post-update. Neither operation needs an ``accessControl`` policy.

So this watcher answers every pre-update event at once with ``recheckAfterMs`` 0 (the
agent never holds a deployment back) and records post-update ids: a hint that the cloud
now knows the outcome, never the outcome itself. It keeps one subscription only: the
nucleus awaits the answer of a component's latest subscription, so a second one would
hold every update until the timeout.

A pre-update event that reached a process killed before it answered stays awaited by
the nucleus (keyed by component and deployment, not by connection) until the policy
timeout. So after each (re)subscription the watcher also answers "go ahead" for the
deployments its caller knows to be in flight (``in_flight``): the nucleus accepts that
answer from the new subscription, or says no event awaits one (ServiceError), which is
fine.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

import structlog

from agent import errors
from agent.clock import Backoff
from agent.ports import RecentIds
from agent.reporting.ipc import SOCKET_ENV, TOKEN_ENV

log = structlog.get_logger("agent.reporting.ipc_component_updates")

#: Seconds to connect and subscribe (the nucleus is on this machine: it answers fast).
SUBSCRIBE_TIMEOUT = 5.0
#: The longest :meth:`ComponentUpdateWatcher.stop` waits, for the lock and for the close.
STOP_WAIT = 0.5
#: Reconnects after the nucleus went away: 1 s doubling up to 1 minute (no jitter: the
#: nucleus is this device's own, no fleet shares it).
RECONNECT_BACKOFF = Backoff(1.0, 60.0, floor=1.0)
DEFER_MESSAGE = "l4v-edge-agent does not defer updates"


class NoLocalDeployments:
    """Not under a nucleus (direct MQTT or the log transport): nothing is ever reported,
    so the agent asks the cloud."""

    def completed(self) -> frozenset[str]:
        return frozenset()

    def available(self) -> bool:
        return False

    def start(self) -> None:
        """Nothing to subscribe to."""

    def stop(self) -> None:
        """Nothing to close."""

    def problem(self) -> str | None:
        return None


class ComponentUpdateWatcher:
    """Follows the nucleus's component update events for this component.

    :meth:`start` subscribes (raising from the error tree); events then arrive on one
    worker thread. When the connection drops, ``wake`` is called and the next
    :meth:`completed` (the main loop's observe) reconnects and subscribes again, spaced by
    a back-off while the nucleus stays away. Thread-safe.
    """

    def __init__(
        self,
        socket_path: str,
        auth_token: str,
        *,
        wake: Callable[[], None],
        in_flight: Callable[[], Iterable[str]] = tuple,
        monotonic: Callable[[], float] = time.monotonic,
        timeout: float = SUBSCRIBE_TIMEOUT,
    ) -> None:
        self._socket_path = socket_path
        self._auth_token = auth_token
        self._wake = wake
        self._in_flight = in_flight
        self._monotonic = monotonic
        self._timeout = timeout
        self._completed = RecentIds()
        self._lock = threading.Lock()
        #: serializes connect/close
        self._connecting = threading.Lock()
        self._client: Any = None
        self._operation: Any = None
        self._generation = 0
        self._subscribed = False
        self._started = False
        self._closed = False
        self._failures = 0
        self._retry_at = 0.0
        self._problem: str | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        wake: Callable[[], None],
        in_flight: Callable[[], Iterable[str]] = tuple,
    ) -> ComponentUpdateWatcher:
        """Built from a component's environment; ConfigurationError outside Greengrass.
        ``in_flight``: ids of deployments to answer "go ahead" for after subscribing."""
        missing = [name for name in (TOKEN_ENV, SOCKET_ENV) if not env.get(name)]
        if missing:
            raise errors.ConfigurationError(
                "not running as a Greengrass component: environment lacks " + ", ".join(missing)
            )
        return cls(env[SOCKET_ENV], env[TOKEN_ENV], wake=wake, in_flight=in_flight)

    # -- LocalDeployments --------------------------------------------------------------
    def completed(self) -> frozenset[str]:
        """Deployment ids the nucleus reported finished (the last 64); renews a dropped
        subscription first when a retry is due."""
        self._renew_if_due()
        return self._completed.snapshot()

    def available(self) -> bool:
        with self._lock:
            return self._subscribed

    def problem(self) -> str | None:
        """Why events cannot arrive now (None while subscribed or not started)."""
        with self._lock:
            return self._problem

    # -- life ------------------------------------------------------------------------
    def start(self) -> None:
        """Connect and subscribe. TransportError when the nucleus cannot be reached,
        AccessDeniedError when it rejects the SVCUID, NotFoundError when it does not
        know this component. A failed start is retried by :meth:`completed` later."""
        with self._lock:
            self._started, self._closed = True, False
        self._subscribe_now()

    def stop(self) -> None:
        """Close the subscription and the connection; idempotent. Bounded (about a
        second): it runs inside the daemon's shutdown budget, and a connection attempt in
        progress sees ``_closed`` and gives up by itself."""
        with self._lock:
            self._closed = True
        if not self._connecting.acquire(timeout=STOP_WAIT):
            return
        try:
            self._drop(close_wait=STOP_WAIT)
        finally:
            self._connecting.release()

    # -- internals -------------------------------------------------------------------
    def _renew_if_due(self) -> None:
        with self._lock:
            due = (
                self._started and not self._closed and not self._subscribed
                and self._monotonic() >= self._retry_at
            )
        if not due:
            return
        with contextlib.suppress(errors.AgentError):  # recorded in problem(); retried later
            self._subscribe_now()

    def _subscribe_now(self) -> None:
        with self._connecting:
            with self._lock:
                if self._closed or self._subscribed:
                    return
            self._drop()
            try:
                self._open()
            except errors.AgentError as exc:
                self._drop()
                with self._lock:
                    first = self._problem is None
                    self._problem = exc.message
                    self._retry_at = self._monotonic() + RECONNECT_BACKOFF.ceiling(self._failures)
                    self._failures += 1
                if first:
                    log.warning("no deployment events from the nucleus", error=exc.kind, message=exc.message)
                raise
            with self._lock:
                recovered = self._problem is not None
                self._subscribed, self._problem, self._failures = True, None, 0
            if recovered:
                log.info("deployment events from the nucleus subscribed again")
            for deployment_id in self._in_flight():
                self._go_ahead(deployment_id, unasked=True)

    def _open(self) -> None:
        """Connect and subscribe (the caller holds ``_connecting``)."""
        from awsiot import eventstreamrpc
        from awsiot.greengrasscoreipc import connect
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        watcher = self

        class Lifecycle(eventstreamrpc.LifecycleHandler):  # type: ignore[misc]
            def __init__(self, generation: int) -> None:
                self.generation = generation

            def on_disconnect(self, reason: Exception | None) -> None:
                watcher._lost(self.generation, reason)

            def on_error(self, error: Exception) -> bool:
                return True  # close; the next observe reconnects

        with self._lock:
            self._generation += 1
            generation = self._generation
        try:
            connection = connect(
                ipc_socket=self._socket_path,
                authtoken=self._auth_token,
                lifecycle_handler=Lifecycle(generation),
                timeout=self._timeout,
            )
            # One worker keeps events in order and off the network thread; started now so
            # the process has its full set of threads from the start, not at the first event.
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipc-updates")
            executor.submit(int)
            client = GreengrassCoreIPCClientV2(client=connection, executor=executor)
            with self._lock:
                self._client = client
            future, operation = client.subscribe_to_component_updates_async(
                on_stream_event=self._event, on_stream_error=self._stream_error
            )
            future.result(self._timeout)
        except Exception as exc:  # awscrt/awsiot raise many unrelated types
            raise _translate(exc, self._timeout) from exc
        with self._lock:
            self._operation = operation

    def _drop(self, close_wait: float | None = None) -> None:
        """Close the current client, if any (the caller holds ``_connecting``), waiting
        at most ``close_wait`` seconds (default: the subscribe timeout) for it to close."""
        with self._lock:
            client, operation = self._client, self._operation
            self._client = self._operation = None
            self._subscribed = False
            self._generation += 1
        if operation is not None:
            with contextlib.suppress(Exception):  # closing a dead stream is fine
                operation.close()
        if client is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                closed: Future[Any] = client.close(executor_wait=False)
                closed.result(self._timeout if close_wait is None else close_wait)

    def _lost(self, generation: int, reason: Exception | None) -> None:
        """The connection dropped (awscrt thread): renew at the next observe."""
        with self._lock:
            if generation != self._generation or self._closed:
                return
            self._subscribed = False
            self._problem = f"IPC connection to the nucleus lost: {_describe(reason)}"
            self._retry_at = self._monotonic()
        log.warning("deployment events from the nucleus interrupted", reason=_describe(reason))
        self._wake()

    def _event(self, event: Any) -> None:
        """One ComponentUpdatePolicyEvents (worker thread); never raises into awscrt."""
        try:
            pre = getattr(event, "pre_update_event", None)
            post = getattr(event, "post_update_event", None)
            if pre is not None and pre.deployment_id:
                self._go_ahead(str(pre.deployment_id))
            if post is not None and post.deployment_id and self._completed.add(str(post.deployment_id)):
                log.info("deployment finished on this device", deployment_id=post.deployment_id)
                self._wake()
        except Exception as exc:
            log.warning("component update event not handled", error=type(exc).__name__)

    def _go_ahead(self, deployment_id: str, *, unasked: bool = False) -> None:
        """Answer a pre-update event at once: recheckAfterMs 0, the update may start.
        ``unasked``: no event came to this subscription; a refusal is expected then."""
        with self._lock:
            client = self._client
        if client is None:
            return
        answer = client.defer_component_update_async(
            deployment_id=deployment_id, message=DEFER_MESSAGE, recheck_after_ms=0
        )

        def done(future: Future[Any]) -> None:
            failure = future.exception()
            if failure is None:
                if unasked:
                    log.info("released a deployment a previous process was asked about",
                             deployment_id=deployment_id)
            elif unasked:  # nothing awaited our answer: the usual case
                log.debug("no pre-update event awaits an answer", deployment_id=deployment_id)
            else:  # the nucleus then waits for its policy timeout
                log.warning("pre-update answer not accepted", deployment_id=deployment_id,
                            error=_describe(failure))

        answer.add_done_callback(done)

    def _stream_error(self, error: Exception) -> bool:
        log.warning("component update stream failed", error=_describe(error))
        return False  # keep the stream open


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _translate(exc: Exception, timeout: float) -> errors.AgentError:
    """A library exception from connecting or subscribing, in the agent's error tree."""
    from awsiot import eventstreamrpc
    from awsiot.greengrasscoreipc import model

    if isinstance(exc, errors.AgentError):
        return exc
    if isinstance(exc, eventstreamrpc.AccessDeniedError):
        return errors.AccessDeniedError(
            f"the nucleus rejected the IPC connection (check {TOKEN_ENV}): {_describe(exc)}"
        )
    if isinstance(exc, model.ResourceNotFoundError):
        return errors.NotFoundError(
            f"the nucleus does not know this component: {_describe(exc)}", code="ResourceNotFoundError"
        )
    if isinstance(exc, model.UnauthorizedError):
        return errors.AccessDeniedError(
            f"SubscribeToComponentUpdates denied by the nucleus: {_describe(exc)}",
            code="UnauthorizedError",
        )
    if isinstance(exc, FutureTimeoutError):
        return errors.TransportError(f"no answer from the nucleus within {timeout:g} s")
    return errors.TransportError(f"SubscribeToComponentUpdates failed: {_describe(exc)}")
