"""``python -m agent fleet watch | report``: the operator's commands.

``watch`` shows the rollout live in the terminal (at most ``--refresh`` frames a
second, drawn by rich) or, when stdout is not a terminal, one summary line every
``--log-every`` seconds; at the end it prints the full view once. With
``--until-version N`` it ends as soon as every device runs N (or newer) and exits
with a code a CI pipeline can gate on:

* 0: every device runs the version (or, without ``--until-version``, the watch ended);
* 1: ``--timeout`` passed (or the watch was interrupted) before every device ran it;
* 2: invalid options, or the operator libraries are not installed;
* 4: the broker could not be reached or refused the subscriptions.

``report`` listens for ``--listen`` seconds (retained platform and status messages
arrive at once; health within one interval) and writes ``index.html`` and
``fleet.json`` to ``--out``; ``watch --report DIR`` writes the same at its end, with
the whole rollout's history in the plot.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import errors

EXIT_OK, EXIT_NOT_REACHED, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 4


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return value


def _version(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 999_999:
        raise argparse.ArgumentTypeError(f"must be a model version 1-999999 (got {text!r})")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (got {text!r})")
    return int(text)


def parser() -> argparse.ArgumentParser:
    """The ``fleet`` command line."""
    root = argparse.ArgumentParser(
        prog="python -m agent fleet",
        description="The operator's view of a rollout (needs the [operator] extra).",
    )
    sub = root.add_subparsers(dest="action", required=True)
    watch = sub.add_parser("watch", help="live terminal view; exit code gates a pipeline")
    report = sub.add_parser("report", help="write a self-contained HTML page and fleet.json")
    for p in (watch, report):
        group = p.add_argument_group("broker")
        group.add_argument("--endpoint", help="IoT data endpoint or broker host "
                           "(default: $L4V_FLEET_ENDPOINT)")
        group.add_argument("--port", type=int, default=None,
                           help="default 8883 with a certificate, 443 for SigV4 over WebSocket")
        group.add_argument("--cert", type=Path, help="client certificate: mutual TLS instead of SigV4")
        group.add_argument("--key", type=Path, help="private key of --cert")
        group.add_argument("--ca", type=Path, help="CA certificate (required with --cert)")
        group.add_argument("--region", help="SigV4 signing Region (default: $AWS_REGION)")
        group.add_argument("--client-id", help="MQTT client id (default: a new random one)")
        group.add_argument("--config", type=Path,
                           help="the fleet's agent configuration (JSON): its reporting.topics are used")
        p.add_argument("--health-interval", type=_positive, default=300.0,
                       help="the fleet's reporting.healthIntervalSeconds; silent after twice this")
        p.add_argument("--until-version", type=_version, default=None,
                       help="target model version (default: the newest any device reports)")
    watch.add_argument("--timeout", type=_positive, default=None, help="give up after SECONDS")
    watch.add_argument("--expect", type=_count, default=None,
                       help="the fleet's size: not done before this many devices reported")
    watch.add_argument("--settle", type=float, default=3.0,
                       help="seconds after subscribing before completion is judged (retained burst)")
    watch.add_argument("--refresh", type=_positive, default=4.0, help="frames per second (terminal)")
    watch.add_argument("--log-every", type=_positive, default=10.0,
                       help="seconds between summary lines when stdout is not a terminal")
    watch.add_argument("--plain", action="store_true", help="summary lines even on a terminal")
    watch.add_argument("--report", type=Path, default=None, help="write the report to DIR at the end")
    report.add_argument("--out", type=Path, required=True, help="directory for index.html and fleet.json")
    report.add_argument("--listen", type=_positive, default=5.0, help="seconds to collect messages")
    return root


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``fleet watch`` or ``fleet report``; returns the exit code."""
    args = parser().parse_args(list(argv))
    env = os.environ if env is None else env
    try:
        import matplotlib  # noqa: F401  (checked here so a missing extra fails at once)
        import rich  # noqa: F401
    except ImportError as exc:
        print(f"fleet: {exc.name} is missing: pip install 'l4v-edge-agent[operator]'", file=sys.stderr)
        return EXIT_CONFIG
    from agent.fleet.connection import broker_settings

    try:
        settings = broker_settings(
            endpoint=args.endpoint, port=args.port, cert=args.cert, key=args.key, ca=args.ca,
            region=args.region, client_id=args.client_id, topics_file=args.config, env=dict(env),
        )
    except errors.ConfigurationError as exc:
        print(f"fleet: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    from agent.fleet.connection import open_subscription
    from agent.fleet.state import FleetState

    state = FleetState(health_interval=args.health_interval, target_version=args.until_version)
    try:
        transport = open_subscription(settings, state.receive)
    except errors.ConfigurationError as exc:  # e.g. a certificate the TLS library refuses
        print(f"fleet: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except errors.TransportError as exc:
        print(f"fleet: cannot subscribe at {settings.endpoint}:{settings.port}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"fleet: subscribed to {', '.join(settings.filters().values())} at "
          f"{settings.endpoint}:{settings.port}", file=sys.stderr, flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if args.action == "report":
            return _report(args, state, stop)
        return _watch(args, state, stop)
    finally:
        signal.signal(signal.SIGTERM, previous)
        transport.close()


def _write_report(directory: Path, state: Any) -> None:
    from agent.fleet.report import write_report

    html_path, json_path = write_report(
        directory, state.snapshot(), state.devices(), state.running_history()
    )
    print(f"fleet: report written to {html_path} and {json_path}", file=sys.stderr)


def _report(args: argparse.Namespace, state: Any, stop: threading.Event) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait(args.listen)
    _write_report(args.out, state)
    print(state.snapshot().summary())
    return EXIT_OK


def _watch(args: argparse.Namespace, state: Any, stop: threading.Event) -> int:
    from rich.console import Console
    from rich.live import Live

    from agent.fleet.view import render

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=120)  # CI logs: rich would assume 80 columns
    started = time.monotonic()
    deadline = None if args.timeout is None else started + args.timeout

    def done() -> bool:
        if args.until_version is None or time.monotonic() - started < args.settle:
            return False
        snapshot = state.snapshot()
        return bool(snapshot.complete and (args.expect is None or snapshot.devices >= args.expect))

    def frame() -> Any:
        return render(state.snapshot(), elapsed=time.monotonic() - started)

    def ended() -> bool:
        return stop.is_set() or done() or (deadline is not None and time.monotonic() >= deadline)

    try:
        if console.is_terminal and not args.plain:
            with Live(get_renderable=frame, console=console, refresh_per_second=args.refresh,
                      transient=True):
                while not ended():
                    stop.wait(0.25)
        else:
            last_line, last_at = "", 0.0
            while not ended():
                now = time.monotonic()
                line = state.snapshot().summary()
                if now - last_at >= args.log_every and line != last_line:
                    print(f"[{now - started:6.0f} s] {line}", flush=True)
                    last_line, last_at = line, now
                stop.wait(0.25)
    except KeyboardInterrupt:
        pass
    reached = done()
    console.print(frame())
    snapshot = state.snapshot()
    if args.report is not None:
        _write_report(args.report, state)
    if args.until_version is None:
        print(f"fleet: {snapshot.summary()}")
        return EXIT_OK
    if reached:
        print(f"fleet: v{args.until_version} runs on all {snapshot.devices} devices")
        return EXIT_OK
    missing = snapshot.devices - snapshot.on_target
    if args.expect is not None and snapshot.devices < args.expect:
        missing += args.expect - snapshot.devices
    print(f"fleet: v{args.until_version} not on {missing} device(s): {snapshot.summary()}")
    return EXIT_NOT_REACHED
