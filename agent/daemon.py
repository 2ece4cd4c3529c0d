"""Composition and life of the agent: build the parts, wire them, run the loop, stop.

:func:`build_agent` builds every part (no network I/O), then wires the few that call
each other (the outbox wakes the publisher, health reads the agent's state): no part
needs another that does not exist yet. :class:`Daemon` is the process's life::

    startup()    publisher started, platform and first health reports sent
    main_loop()  MainLoop.turn() until should_exit (or, for ``once``, the rollout ended)
    shutdown()   outbox flushed within shutdown_timeout, ledger closed

Life cycle (``AgentState``)::

    STARTING ─> RUNNING ──────────────> STOPPING ─> STOPPED
           └──> DEGRADED (unsupported platform: health and commands only) ─┘

Signals are captured in one place (:meth:`Daemon.capture_signals`): the first SIGTERM or
SIGINT sets ``should_exit`` (the current turn finishes, the outbox gets a bounded chance
to flush); a second one sets ``force_exit`` and the flush is cut short.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent import __version__, errors
from agent.aws.backends import bind, packaging_backend
from agent.aws.greengrass import GreengrassDeployments
from agent.aws.session import AwsClients, ClientHook
from agent.clock import Backoff, Clock, JitteredInterval, SystemClock
from agent.config import AgentConfig
from agent.coordination import FleetBoard
from agent.decide import STATUS_OF_PHASE
from agent.health import HealthReporter
from agent.ledger import Ledger
from agent.platform import DetectedPlatform, platform_report
from agent.ports import FactChanges, LastError, OutgoingMessage
from agent.reconciler import Reconciler, settings_from_config
from agent.reporting.commands import CommandHandler
from agent.reporting.events import ErrorInfo, PlatformReport, utc_iso
from agent.reporting.fleet_channel import FleetChannel
from agent.reporting.outbox import Outbox, Publisher
from agent.reporting.transport import MessageHandler, Transport

if TYPE_CHECKING:
    from agent.reporting.ipc_component_updates import ComponentUpdateWatcher, NoLocalDeployments

log = structlog.get_logger("agent.daemon")

#: Retries of a ledger that cannot be written (full disk): 1 s doubling up to 5 minutes.
STORAGE_BACKOFF = Backoff(1.0, 300.0, floor=1.0)


#: Settings that only take effect when the agent starts again.
RESTART_REQUIRED = frozenset(
    {
        "thing_name", "region", "state_dir", "endpoints", "aws_max_attempts", "aws_retry_mode",
        "platform_root", "prefer_target_device", "platform", "reporting", "commands",
        "log_level", "log_format", "packaging", "sagemaker", "fleet",
    }
)


class AgentState(str, Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class LogTransport:
    """Transport ``none``: messages go to the log and count as delivered."""

    supports_retain = False

    def connect(self, timeout: float) -> None:
        return None

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        log.info("message", topic=topic, payload=payload.decode(errors="replace"))

    def subscribe(self, topic: str, handler: MessageHandler, *, timeout: float) -> None:
        return None

    def is_connected(self) -> bool:
        return True

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Subscription:
    """A topic filter the agent's transport subscribes to at every connection.

    Without ``on_result`` the subscription is required: if it fails, connecting fails
    (commands). With it, a failure is handed to ``on_result`` and the connection stays
    up for everything else; the next connection tries again (fleet announcements).
    """

    topic: str
    handler: MessageHandler
    on_result: Callable[[str, errors.AgentError | None], None] | None = None


class SubscribingTransport:
    """Wraps a transport so that connecting also subscribes to the agent's topics."""

    def __init__(self, inner: Transport, subscriptions: Sequence[Subscription], timeout: float) -> None:
        self.inner = inner
        self.supports_retain = inner.supports_retain
        self._subscriptions, self._timeout = tuple(subscriptions), timeout

    def connect(self, timeout: float) -> None:
        self.inner.connect(timeout)
        for wanted in self._subscriptions:
            try:
                self.inner.subscribe(wanted.topic, wanted.handler, timeout=self._timeout)
            except errors.AgentError as exc:
                if wanted.on_result is None:
                    raise
                wanted.on_result(wanted.topic, exc)
            else:
                if wanted.on_result is not None:
                    wanted.on_result(wanted.topic, None)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        self.inner.publish(topic, payload, retain=retain, timeout=timeout)

    def subscribe(self, topic: str, handler: MessageHandler, *, timeout: float) -> None:
        self.inner.subscribe(topic, handler, timeout=timeout)

    def is_connected(self) -> bool:
        return self.inner.is_connected()

    def close(self) -> None:
        self.inner.close()


def make_transport(config: AgentConfig, env: Mapping[str, str]) -> Transport:
    """The transport the configuration asks for (``auto``: IPC under Greengrass, else MQTT
    when an endpoint is configured, else the log)."""
    from agent.reporting.ipc import nucleus_available

    choice = config.reporting.resolved_transport(nucleus_available(env))
    if choice == "ipc":
        from agent.reporting.ipc import IpcTransport

        return IpcTransport.from_env(env)
    if choice == "mqtt":
        from agent.reporting.mqtt import DirectMqttConfig, DirectMqttTransport

        mqtt = config.reporting.mqtt
        missing = [n for n in ("endpoint", "cert_path", "key_path", "ca_path") if getattr(mqtt, n) is None]
        if missing:
            raise errors.ConfigurationError(
                "reporting.mqtt: transport mqtt needs " + ", ".join(missing)
            )
        return DirectMqttTransport(
            DirectMqttConfig(
                endpoint=str(mqtt.endpoint),
                port=mqtt.port,
                cert_path=str(mqtt.cert_path),
                key_path=str(mqtt.key_path),
                ca_path=str(mqtt.ca_path),
                client_id=mqtt.client_id or config.thing_name,
                connect_timeout=mqtt.connect_timeout_seconds,
                reconnect_min_seconds=mqtt.reconnect_min_seconds,
                reconnect_max_seconds=mqtt.reconnect_max_seconds,
            )
        )
    return LogTransport()


def _deployment_in_flight(ledger: Ledger) -> list[str]:
    """The active rollout's deployment, if it made one (a restarted agent releases it)."""
    rollout = ledger.active_rollout()
    return [rollout.deployment_id] if rollout is not None and rollout.deployment_id else []


def make_local_deployments(
    env: Mapping[str, str],
    *,
    wake: Callable[[], None],
    in_flight: Callable[[], list[str]] = list,
) -> ComponentUpdateWatcher | NoLocalDeployments:
    """Under a nucleus, the watcher of its component update events (it subscribes at
    startup); otherwise nothing is reported and the agent polls the cloud. ``in_flight``
    names the deployments to release after each subscription."""
    from agent.reporting.ipc import nucleus_available
    from agent.reporting.ipc_component_updates import ComponentUpdateWatcher, NoLocalDeployments

    if not nucleus_available(env):
        return NoLocalDeployments()
    return ComponentUpdateWatcher.from_env(env, wake=wake, in_flight=in_flight)


class Requests:
    """What commands and configuration updates ask of the main loop: flags it reads at
    its next turn, and the event that cuts its wait short. The command handler's target
    (its calls come from the main loop's ``commands.process``)."""

    def __init__(
        self,
        reconciler: Reconciler | None,
        platform_error: errors.AgentError | None,
        wake: threading.Event | None = None,
    ) -> None:
        self.wake = wake or threading.Event()
        self.health = False
        self.status = False
        self._reconciler = reconciler
        self._platform_error = platform_error

    def bind(self, reconciler: Reconciler | None, platform_error: errors.AgentError | None) -> None:
        """The reconciler (or why there is none), once built: the wake event exists before."""
        self._reconciler, self._platform_error = reconciler, platform_error

    def request_check(self, model_version: int | None = None) -> None:
        """Check for a new version (or roll out ``model_version``) at the next turn."""
        if self._reconciler is None:
            raise errors.UnsupportedPlatformError(
                found=str(self._platform_error), supported="see the platform report"
            )
        self._reconciler.request_check(model_version)
        self.wake.set()

    def report_health_now(self) -> None:
        self.health = True
        self.wake.set()

    def report_status_now(self) -> None:
        self.status = True
        self.wake.set()


@dataclass
class Agent:
    """Every part of a running agent, built by :func:`build_agent`."""

    config: AgentConfig
    clock: Clock
    ledger: Ledger
    platform: DetectedPlatform | None
    platform_error: errors.AgentError | None
    reconciler: Reconciler | None
    publisher: Publisher
    health: HealthReporter
    commands: CommandHandler
    topics: dict[str, str]
    clients: AwsClients
    outbox: Outbox
    requests: Requests
    rng: random.Random
    state: AgentState = AgentState.STARTING
    started_at: float = 0.0
    #: validates a new component configuration (set by the CLI under Greengrass)
    reload: Callable[[dict[str, Any]], AgentConfig] | None = None
    pending_config: AgentConfig | None = None
    #: the platform report of the packaging backend's target (None: ``platform``'s)
    platform_details: dict[str, object] | None = None
    #: deployments the nucleus reports finished here (subscribed at startup; None: no nucleus)
    local_deployments: ComponentUpdateWatcher | NoLocalDeployments | None = None
    #: fleet announcements heard (None: ``fleet.enabled`` is false or no platform)
    fleet: FleetChannel | None = None

    @property
    def fleet_board(self) -> FleetBoard | None:
        """What the fleet announced to this device, as the reconciler reads it."""
        return self.fleet.board if self.fleet is not None else None

    # -- live configuration -----------------------------------------------------------------
    def configuration_changed(self, component_configuration: dict[str, Any]) -> None:
        """A new component configuration arrived (IPC thread): validate it now, apply it
        in the main loop. An invalid one is rejected, reported and changes nothing."""
        if self.reload is None:
            return
        try:
            candidate = self.reload(component_configuration)
        except errors.ConfigurationError as exc:
            log.error("configuration update rejected", problems=exc.problems)
            message = "configuration update rejected: " + "; ".join(exc.problems)
            self.ledger.update_facts(FactChanges(last_error=LastError(exc.kind, message, self.clock.now())))
            self.requests.report_health_now()
            return
        self.pending_config = candidate
        self.requests.wake.set()

    def apply_pending_configuration(self) -> list[str]:
        """Apply a validated configuration update (main loop only); returns changed keys.

        Rollout settings apply at once and trigger a check; identity, endpoints,
        platform and reporting settings take effect at the next start.
        """
        new, self.pending_config = self.pending_config, None
        if new is None:
            return []
        changed = [n for n in AgentConfig.model_fields if getattr(new, n) != getattr(self.config, n)]
        live = [n for n in changed if n not in RESTART_REQUIRED]
        later = [n for n in changed if n in RESTART_REQUIRED]
        if live:
            self.config = self.config.model_copy(update={n: getattr(new, n) for n in live})
            if self.reconciler is not None:
                self.reconciler.settings = settings_from_config(self.config)
                self.reconciler.request_check()
        error = self.ledger.facts().last_error
        if error is not None and error.type == errors.ConfigurationError.kind:
            self.ledger.update_facts(FactChanges(last_error=None))
        log.info("configuration updated", applied=live, at_next_start=later)
        return changed

    @property
    def wake(self) -> threading.Event:
        """Set to cut the main loop's wait short."""
        return self.requests.wake

    # -- messages ---------------------------------------------------------------------------
    def send(self, messages: list[OutgoingMessage]) -> None:
        """Into the outbox (bounded); the publisher is woken."""
        self.outbox.send(messages)

    def platform_message(self) -> OutgoingMessage:
        now = self.clock.now()
        thing = self.config.thing_name
        if self.platform is not None:
            report = self.platform_details or platform_report(self.platform)
            request = self.reconciler.request_for(1, 1) if self.reconciler else None
            request_fields = None
            if request is not None:
                kwargs = request.api_kwargs()
                # Lookout for Vision's request nests the component; another backend's
                # request is shown whole, with the component it makes.
                fields = kwargs["Configuration"]["Greengrass"] if "Configuration" in kwargs else {
                    **kwargs, "ComponentName": request.component_name,
                }
                # The version depends on the model version to come: show the template.
                fields["ComponentVersion"] = self.config.component_version_template.replace(
                    "{version}", "<modelVersion>"
                )
                request_fields = {k: v for k, v in fields.items() if v is not None}

            def render(sequence: int, epoch: str) -> bytes:
                return PlatformReport(
                    thing_name=thing, sequence=sequence, epoch=epoch, timestamp=utc_iso(now), supported=True,
                    platform=report, request=request_fields,
                ).to_json()
        else:
            error = self.platform_error or errors.AgentError("platform unknown")

            def render(sequence: int, epoch: str) -> bytes:
                return PlatformReport(
                    thing_name=thing, sequence=sequence, epoch=epoch, timestamp=utc_iso(now), supported=False,
                    error=ErrorInfo(type=error.kind, message=error.message),
                ).to_json()

        return OutgoingMessage("platform", self.topics["platform"], render, retain=True)

    def status_message(self) -> OutgoingMessage | None:
        """The latest rollout's state, re-sent on request."""
        latest = self.ledger.rollouts(limit=1)
        if not latest or self.reconciler is None:
            return None
        rollout = latest[0]
        phase = STATUS_OF_PHASE[rollout.phase]
        error = (
            ErrorInfo(type=rollout.error_type, code=rollout.error_code, message=rollout.error_message or "")
            if rollout.error_type
            else None
        )
        return self.reconciler.status_message(rollout, phase, "requested status", error)


def build_agent(
    config: AgentConfig,
    *,
    clock: Clock | None = None,
    env: Mapping[str, str] | None = None,
    customize_clients: ClientHook | None = None,
    transport_factory: Callable[[], Transport] | None = None,
    lifecycle_provider: Callable[[str], str | None] | None = None,
    rng: random.Random | None = None,
    read_only: bool = False,
) -> Agent:
    """Build every part from a validated configuration. Does no network I/O.

    ``read_only`` (``plan``): the ledger is opened so that nothing is written to it.
    """
    clock = clock or SystemClock()
    env = os.environ if env is None else env
    rng = rng or random.Random()
    state_dir = Path(config.state_dir)
    ledger = Ledger(state_dir / "agent.sqlite", read_only=read_only)
    topics = config.reporting.topics.render(config.thing_name)
    clients = AwsClients(
        region=config.region,
        endpoints={str(k): v for k, v in config.endpoints.items()},
        max_attempts=config.aws_max_attempts,
        retry_mode=config.aws_retry_mode,
        customize=customize_clients,
    )
    platform: DetectedPlatform | None = None
    platform_error: errors.AgentError | None = None
    backend = None
    requests = Requests(None, None)
    local_deployments = make_local_deployments(
        env, wake=requests.wake.set, in_flight=lambda: _deployment_in_flight(ledger)
    )
    try:
        backend = packaging_backend(config, clients)
        platform = backend.platform
    except errors.UnsupportedPlatformError as exc:
        platform_error = exc
    fleet = None
    if backend is not None and config.fleet.enabled:
        fleet = FleetChannel.for_device(
            config.fleet.topic_prefix, config.project_name, backend.platform.key, clock=clock,
            wake=requests.wake.set,
        )
    reconciler = None
    if backend is not None:
        reconciler = Reconciler(
            settings=settings_from_config(config),
            platform=backend.platform,
            packaging=backend.packaging,
            deployments=GreengrassDeployments(clients),
            ledger=ledger,
            clock=clock,
            rng=rng,
            derive=backend.derive,
            local_deployments=local_deployments,
            fleet_board=fleet.board if fleet is not None else None,
        )
        bind(backend.packaging, reconciler.request_for)
    health = HealthReporter(
        ledger,
        thing_name=config.thing_name,
        topic=topics["health"],
        clock=clock,
        started_at=clock.now(),
        state_provider=lambda: AgentState.STARTING.value,
        lifecycle_provider=lifecycle_provider,
        state_dir=state_dir,
    )
    reporting = config.reporting
    outbox = Outbox(ledger, clock, reporting.outbox_max_messages)
    requests.bind(reconciler, platform_error)
    commands = CommandHandler(
        thing_name=config.thing_name,
        response_topic=topics["command_responses"],
        settings=config.commands,
        target=requests,
        enqueue=outbox.send,
        clock=clock,
        notify=requests.wake.set,
    )
    base_factory = transport_factory or (lambda: make_transport(config, env))
    subscriptions = []
    if config.commands.enabled:
        subscriptions.append(Subscription(topics["commands"], commands.handle))
    if fleet is not None:
        subscriptions += [Subscription(t, fleet.handle, fleet.subscription_result) for t in fleet.subscriptions()]

    def factory() -> Transport:
        return SubscribingTransport(base_factory(), subscriptions, reporting.publish_timeout_seconds)

    retry_cap = min(60.0, reporting.mqtt.reconnect_max_seconds)
    publisher = Publisher(
        ledger,
        factory,
        clock=clock,
        publish_timeout=reporting.publish_timeout_seconds,
        # The publisher rebuilds a transport that stays down: its retries must not be
        # spaced wider than the configured MQTT reconnect bound.
        backoff=Backoff(min(1.0, retry_cap), retry_cap),
        rng=rng,
    )
    agent = Agent(
        config=config, clock=clock, ledger=ledger, platform=platform, platform_error=platform_error,
        reconciler=reconciler, publisher=publisher, health=health, commands=commands, topics=topics,
        clients=clients, outbox=outbox, requests=requests, rng=rng, started_at=clock.now(),
        platform_details=backend.report if backend is not None else None,
        local_deployments=local_deployments, fleet=fleet,
    )
    # Wiring: the parts that call back into others, now that all exist.
    outbox.notify = publisher.notify
    health.local_deployments_problem = local_deployments.problem
    if fleet is not None:
        health.announcements_provider = fleet.counts
    health.state_provider = lambda: agent.state.value
    return agent


class MainLoop:
    """The daemon's main loop, one turn at a time (tests drive turns on a virtual clock).

    Every change to the reconciler happens here, on one thread: queued commands, due
    deferred checks, configuration updates, the step itself. All waiting is measured on
    the clock's monotonic time, so a wall clock that jumps never stretches a wait.
    """

    def __init__(self, agent: Agent, *, until_settled: bool = False) -> None:
        self.agent = agent
        self.until_settled = until_settled
        self.rng = agent.rng
        config = agent.config
        self.health_interval = JitteredInterval(
            config.reporting.health_interval_seconds, config.reporting.health_jitter
        )
        self.next_health = 0.0
        self.steps = 0
        #: set when ``until_settled`` and the rollout has ended: the process exit code
        self.exit_code: int | None = None
        #: consecutive turns that could not write the ledger, and since when (wall clock)
        self.storage_failures = 0
        self.storage_since = 0.0
        self._report_recovery = False

    def start(self) -> None:
        """Start publishing and send the platform and first health reports."""
        agent = self.agent
        agent.state = AgentState.RUNNING if agent.reconciler is not None else AgentState.DEGRADED
        if agent.platform_error is not None:
            log.error("platform not supported: health reporting only", error=agent.platform_error.message)
        agent.publisher.start()
        if agent.reconciler is not None and agent.local_deployments is not None:
            # Fail-soft: the watcher logs the failure once and health shows it; the cloud
            # is polled meanwhile, and the watcher retries.
            with contextlib.suppress(errors.AgentError):
                agent.local_deployments.start()
        try:
            agent.send([agent.platform_message(), agent.health.message()])
        except errors.StateStorageError as exc:
            self._storage_failed(exc)
        self.next_health = agent.clock.monotonic() + self.health_interval.next(self.rng)
        if self.until_settled and agent.reconciler is not None:
            agent.reconciler.request_check()

    def turn(self) -> float:
        """One pass: commands, one reconcile step, configuration, reports. Returns the
        seconds to wait (monotonic) before the next turn; sets ``exit_code`` when done.

        A ledger that cannot be written (full disk) degrades the agent: reported in
        health, retried with back-off, never fatal. A ledger found corrupt is replaced.
        """
        try:
            delay = self._turn()
        except errors.StateStorageError as exc:
            return self._storage_failed(exc)
        except errors.LedgerCorruptError as exc:
            try:
                self.agent.ledger.replace_corrupt(exc)
            except errors.StateStorageError as no_room:
                return self._storage_failed(no_room)
            self.agent.requests.health = True
            return 0.0
        if self.storage_failures:
            self._storage_recovered()
            return 0.0
        return delay

    def _storage_failed(self, exc: errors.StateStorageError) -> float:
        now = self.agent.clock.now()
        if not self.storage_failures:
            self.storage_since = now
            log.error("the ledger cannot be written: degraded, retrying with back-off", error=exc.message)
        self.storage_failures += 1
        delay = STORAGE_BACKOFF.delay(self.storage_failures, self.rng)
        log.warning("ledger still not writable", retry_in=round(delay, 1), failures=self.storage_failures)
        self.agent.health.storage_error = ErrorInfo(
            type=exc.kind, message=f"{exc.message} (since {utc_iso(self.storage_since)})"
        )
        self.agent.requests.health = True
        return delay

    def _storage_recovered(self) -> None:
        """The ledger takes writes again: say so in a health report at once."""
        since = utc_iso(self.storage_since)
        log.info("the ledger is writable again", failures=self.storage_failures, since=since)
        self.storage_failures = 0
        error = self.agent.health.storage_error
        if error is not None:
            self.agent.health.storage_error = ErrorInfo(
                type=error.type,
                message=f"{error.message.rsplit(' (since', 1)[0]} (from {since} until "
                f"{utc_iso(self.agent.clock.now())}; recovered)",
            )
        self.agent.requests.health = True
        self._report_recovery = True

    def _turn(self) -> float:
        agent, clock = self.agent, self.agent.clock
        # Cleared before the step, not after it: a command or configuration update
        # that arrives while the step runs must cut the following wait short.
        agent.wake.clear()
        command_wait = agent.commands.process()
        delay = 60.0
        if agent.reconciler is not None:
            before = _rollout_mark(agent.ledger)
            delay = _guarded_step(agent.reconciler)
            self.steps += 1
            # Not the outbox depth: command responses and acknowledgements change it
            # from other threads, which made every check-now cost a health report.
            if _rollout_mark(agent.ledger) != before:
                agent.publisher.notify()
                agent.requests.health = True  # health follows every state change at once
            if self.until_settled and delay > 0 and agent.ledger.active_rollout() is None:
                self.exit_code = _settled_exit_code(agent)
                return 0.0
        elif self.until_settled:
            self.exit_code = 1
            return 0.0
        if agent.pending_config is not None:
            agent.apply_pending_configuration()
        if agent.requests.status:
            agent.requests.status = False
            message = agent.status_message()
            if message is not None:
                agent.send([message])
        now = clock.monotonic()
        if agent.requests.health or now >= self.next_health:
            agent.send([agent.health.message()])
            agent.requests.health = False
            self.next_health = now + self.health_interval.next(self.rng)
            if self._report_recovery:
                # The recovery has been reported: the storage error is history now.
                self._report_recovery = False
                agent.health.storage_error = None
        waits = [delay, self.next_health - now]
        if command_wait is not None:
            waits.append(command_wait)
        return max(0.0, min(waits)) if delay > 0 else 0.0

    def stop(self, shutdown_timeout: float, *, abort: Callable[[], bool] = lambda: False) -> None:
        """Flush what can be flushed within ``shutdown_timeout`` (real seconds; less once
        ``abort()`` says so) and close the ledger."""
        agent = self.agent
        agent.state = AgentState.STOPPING
        if agent.local_deployments is not None:
            agent.local_deployments.stop()
        deadline = time.monotonic() + shutdown_timeout
        flush_until = time.monotonic() + shutdown_timeout * 0.6
        while agent.publisher.running and not abort() and time.monotonic() < flush_until:
            if agent.publisher.flush(timeout=min(0.1, max(0.0, flush_until - time.monotonic()))):
                break
        remaining = deadline - time.monotonic()
        agent.publisher.stop(timeout=max(0.1, min(remaining, 0.2) if abort() else remaining))
        agent.state = AgentState.STOPPED
        agent.ledger.close()
        log.info("stopped", steps=self.steps)


class Daemon:
    """The agent process's life, in the manner of an ASGI server: :meth:`startup`,
    :meth:`main_loop`, :meth:`shutdown`; :meth:`run` does all three with the signals
    captured. ``should_exit`` ends the loop after the current turn; ``force_exit`` (a
    second signal) cuts the graceful shutdown short.

    ``until_settled`` (``python -m agent once``): force a check and stop once no rollout
    is active; the exit code is 0 if the device runs the desired version, 1 otherwise.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        until_settled: bool = False,
        shutdown_timeout: float = 5.0,
        forced_shutdown_timeout: float = 0.5,
        on_startup: Callable[[], None] | None = None,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.agent = agent
        self.loop = MainLoop(agent, until_settled=until_settled)
        self.shutdown_timeout = shutdown_timeout
        self.forced_shutdown_timeout = forced_shutdown_timeout
        self._on_startup, self._on_shutdown = on_startup, on_shutdown
        self.should_exit = False
        self.force_exit = False
        self.exit_code = 0

    def run(self) -> int:
        """Start, loop until asked to stop (or settled), shut down; the exit code."""
        with self.capture_signals():
            try:
                self.startup()
                self.main_loop()
            finally:
                self.shutdown()
        return self.exit_code

    def startup(self) -> None:
        """Start publishing, send the platform and first health reports."""
        self.loop.start()
        if self._on_startup is not None:
            self._on_startup()

    def main_loop(self) -> None:
        """Turn until ``should_exit``; waits are measured on the agent's clock and cut
        short by its wake event (commands, configuration, signals)."""
        agent = self.agent
        while not self.should_exit:
            delay = self.loop.turn()
            if self.loop.exit_code is not None:
                self.exit_code = self.loop.exit_code
                return
            if delay > 0 and not self.should_exit:
                agent.clock.wait(delay, agent.wake)

    def shutdown(self) -> None:
        """Stop what startup started: at most ``shutdown_timeout`` seconds (after a
        second signal, ``forced_shutdown_timeout``) for the outbox, then the ledger."""
        if self._on_shutdown is not None:
            try:
                self._on_shutdown()
            except Exception as exc:
                log.warning("shutdown hook failed", error=type(exc).__name__)
        self.loop.stop(self.forced_shutdown_timeout if self.force_exit else self.shutdown_timeout,
                       abort=lambda: self.force_exit)

    def handle_exit(self, signum: int, _frame: Any = None) -> None:
        """A stop signal: the first asks for a graceful stop, a second forces it."""
        name = signal.Signals(signum).name
        if self.should_exit:
            log.warning("second signal: stopping now", signal=name)
            self.force_exit = True
        else:
            log.info("signal received: stopping", signal=name)
        self.should_exit = True
        self.agent.wake.set()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The one place signals are handled (main thread only): SIGTERM and SIGINT go to
        :meth:`handle_exit`; the previous handlers come back afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)


def _rollout_mark(ledger: Ledger) -> tuple[Any, ...]:
    """What changes when a step reports a state change: a status event sets the newest
    rollout's ``last_reported`` (or creates a new rollout)."""
    latest = ledger.rollouts(limit=1)
    if not latest:
        return ()
    return latest[0].id, latest[0].phase, latest[0].last_reported


def _guarded_step(reconciler: Reconciler) -> float:
    """One reconcile step; a bug in a step is logged and retried later, never fatal."""
    try:
        return reconciler.step()
    except (errors.StateStorageError, errors.LedgerCorruptError):
        raise  # the main loop degrades or replaces the ledger
    except errors.AgentError as exc:
        log.error("step failed", error=exc.kind, message=exc.message)
    except Exception as exc:
        log.exception("step crashed", error=type(exc).__name__)
    return 30.0


def _settled_exit_code(agent: Agent) -> int:
    latest = agent.ledger.rollouts(limit=1)
    if latest and latest[0].phase.value == "FAILED":
        log.error("rollout failed", reason=latest[0].error_message)
        return 1
    facts = agent.ledger.facts()
    if facts.last_error is not None and not facts.deployed_version:
        log.error("no rollout", reason=facts.last_error.message)
        return 1
    return 0


__all__ = ["Agent", "AgentState", "Daemon", "MainLoop", "Requests", "__version__", "build_agent"]
