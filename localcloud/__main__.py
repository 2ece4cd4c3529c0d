"""``python -m localcloud serve``: the local world and one simulated core device, for
running ``python -m agent run`` by hand exactly as Greengrass would.

Prints the endpoint, the topics and the component environment (JSON, or ``export``
lines with ``--shell``), then serves until SIGINT/SIGTERM. Start the agent with that
environment and the work directory as its current directory.

``serve --devices N`` serves a simulated fleet instead (``localcloud.livefleet``): N
agents publishing to a local mutual-TLS Mosquitto through model releases, and prints
the ``python -m agent fleet watch`` command that watches them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the world and a core device until SIGINT/SIGTERM")
    serve.add_argument(
        "workdir",
        type=Path,
        nargs="?",
        default=None,
        help="the agent's work directory (default: a new temporary directory)",
    )
    serve.add_argument("--thing", default="demo-core", help="thing name of the core device")
    serve.add_argument("--packaging-seconds", type=float, default=6.0)
    serve.add_argument("--running-after-seconds", type=float, default=1.0)
    serve.add_argument("--install-seconds", type=float, default=2.0)
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON object merged into the agent configuration deployed to the device",
    )
    serve.add_argument("--shell", action="store_true", help="print `export` lines instead of JSON")
    fleet = serve.add_argument_group("a simulated fleet for `python -m agent fleet watch`")
    fleet.add_argument("--devices", type=int, default=None,
                       help="serve N simulated agents publishing to a local Mosquitto instead")
    fleet.add_argument("--speed", type=float, default=60.0,
                       help="simulated seconds per real second (default 60)")
    fleet.add_argument("--releases", type=int, default=2, help="model versions released in turn")
    fleet.add_argument("--failing-installs", type=int, default=3,
                       help="installs that fail in the last release")
    fleet.add_argument("--silent", type=int, default=2,
                       help="devices powered off during the last release")
    return parser


def serve_fleet(args: argparse.Namespace) -> int:
    """``serve --devices N``: the fleet on a local Mosquitto, until SIGINT/SIGTERM."""
    from localcloud.livefleet import serve_fleet as run_fleet
    from localcloud.mosquitto import find_mosquitto

    binary = find_mosquitto()
    if binary is None:
        print("localcloud: --devices needs the mosquitto broker (apt-get install mosquitto)",
              file=sys.stderr)
        return 2
    if args.devices < 4 or args.speed <= 0 or args.releases < 1:
        print("localcloud: --devices must be >= 4 (one per platform), --speed > 0, "
              "--releases >= 1", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="l4v-fleet-"))
    stop = threading.Event()

    def announce(broker: dict[str, Any]) -> None:
        command = (f"python -m agent fleet watch --endpoint {broker['endpoint']} "
                   f"--port {broker['port']} --cert {shlex.quote(broker['cert'])} "
                   f"--key {shlex.quote(broker['key'])} --ca {shlex.quote(broker['ca'])}")
        print(json.dumps({**broker, "watch": command}, indent=2), flush=True)

    def note(text: str) -> None:
        print(f"localcloud: {text}", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_fleet(
            args.devices, workdir, mosquitto=binary, stop=stop, pace=args.speed,
            releases=args.releases, failing_installs=args.failing_installs, silent=args.silent,
            announce=announce, note=note,
        )
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    print("localcloud: stopped", file=sys.stderr)
    return 0


def _shell(report: dict[str, Any]) -> str:
    lines = [f"# local world at {report['endpoint']}; run the agent in {report['workdir']}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in report["environment"].items()]
    lines.append(f"cd {shlex.quote(report['workdir'])}  # then: python -m agent run")
    return "\n".join(lines)


def serve(args: argparse.Namespace) -> int:
    from localcloud.stage import Stage

    overrides: dict[str, Any] = {}
    if args.config is not None:
        loaded = json.loads(args.config.read_text())
        if not isinstance(loaded, dict):
            print("localcloud: --config must hold a JSON object", file=sys.stderr)
            return 2
        overrides = loaded
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="l4v-stage-"))
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Stage(
            workdir,
            thing=args.thing,
            packaging_seconds=args.packaging_seconds,
            running_after_seconds=args.running_after_seconds,
            install_seconds=args.install_seconds,
            agent_config=overrides,
        ) as stage:
            report = stage.environment_report()
            print(_shell(report) if args.shell else json.dumps(report, indent=2), flush=True)
            print("localcloud: serving; Ctrl-C to stop", file=sys.stderr, flush=True)
            stop.wait()
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    print("localcloud: stopped", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args) if args.devices is None else serve_fleet(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
