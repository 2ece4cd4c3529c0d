"""``python -m agent``: run | once | plan | status | detect | schemas | config check | fleet.

Exit codes: 0 success; 1 the rollout did not end RUNNING (``once``) or a read failed;
2 invalid configuration (the agent refuses to start; ``config check`` found a problem);
3 unsupported platform (``once``, ``plan``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import __version__, errors

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PLATFORM = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"l4v-edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", type=Path, default=os.environ.get("L4V_AGENT_CONFIG") or None,
            help="JSON configuration file (default: $L4V_AGENT_CONFIG; under Greengrass the "
            "component configuration is read over IPC and applied on top)",
        )
        return p

    with_config(sub.add_parser("run", help="run as a daemon until SIGTERM/SIGINT"))
    with_config(sub.add_parser("once", help="reconcile until the rollout ends; 0 if RUNNING"))
    with_config(sub.add_parser("plan", help="show what would be done (read-only calls)"))
    status = with_config(sub.add_parser("status", help="show the ledger"))
    status.add_argument("--json", action="store_true")
    detect = sub.add_parser(
        "detect", help="detect the platform and print the packaging backend's target as JSON"
    )
    detect.add_argument("--root", type=Path, default=Path("/"))
    detect.add_argument(
        "--config", type=Path, default=None,
        help="apply platform overrides and packaging.backend from it",
    )
    detect.add_argument(
        "--backend", choices=("lookoutvision", "sagemaker"), default=None,
        help="the packaging backend whose target to show (default: the configuration's, "
        "else lookoutvision); sagemaker shows the Neo TargetDevice or TargetPlatform + "
        "CompilerOptions",
    )
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    with_config(config_sub.add_parser(
        "check", help="validate what `run` would validate (no AWS calls); print the "
        "effective configuration as JSON; 0 if valid, 2 if not",
    ))
    schemas = sub.add_parser("schemas", help="write the message JSON Schemas")
    schemas.add_argument("directory", type=Path, nargs="?", default=Path("schemas"))
    # Listed for --help only: main() hands `fleet ...` to agent.fleet before parsing, so
    # the device's own commands never import the operator's code.
    sub.add_parser("fleet", help="the operator's view of a rollout: fleet watch | fleet report")
    return parser


def load(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    from agent.config import load_config
    from agent.reporting.ipc_configuration import read_component_configuration

    component = read_component_configuration(env)
    return load_config(file=args.config, component_configuration=component, env=env)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fleet"]:
        from agent.fleet.cli import main as fleet_main

        return fleet_main(argv[1:], env)
    args = _parser().parse_args(argv)
    env = os.environ if env is None else env
    from agent.config import check_before_start, effective_configuration
    from agent.logs import configure_logging

    if args.command == "detect":
        return _detect(args)
    if args.command == "schemas":
        from agent.reporting.schemas import export_schemas

        for path in export_schemas(args.directory):
            print(path)
        return EXIT_OK
    try:
        config = load(args, env)
        if args.command != "status":
            # Files, directories and the transport: refused here rather than retried forever.
            check_before_start(config, env)
    except errors.ConfigurationError as exc:
        # One problem: one line (what a log collector shows as the reason).
        reason = exc.problems[0] if len(exc.problems) == 1 else exc.message
        print(f"l4v-edge-agent: {reason}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "config":
        effective = effective_configuration(config)
        if config.fleet.enabled:
            # Where this device stands in the fleet's canary waves (derived, not configured).
            wave = config.fleet.wave_of(config.thing_name)
            effective["fleetPlacement"] = {
                "wave": wave,
                "deploysSecondsAfterReady": wave * config.fleet.wave_delay_seconds,
            }
        print(json.dumps(effective, indent=2, ensure_ascii=False))
        return EXIT_OK
    configure_logging(config.log_level, config.log_format)
    if args.command == "status":
        return _status(config, as_json=args.json)
    from agent.daemon import Daemon, build_agent
    from agent.reporting.ipc import nucleus_available

    under_greengrass = nucleus_available(env)
    try:
        agent = build_agent(config, env=env, read_only=args.command == "plan")
    except errors.ConfigurationError as exc:
        print(f"l4v-edge-agent: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except errors.AgentError as exc:  # e.g. no space left to create the ledger
        print(f"l4v-edge-agent: {exc.kind}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    if args.command == "plan":
        from agent.plan import plan

        return plan(agent)
    if args.command == "once" and agent.reconciler is None:
        print(f"l4v-edge-agent: {agent.platform_error}", file=sys.stderr)
        return EXIT_PLATFORM
    watcher: Any = None
    if under_greengrass and args.command == "run":
        # Live configuration: a deployment that changes our configuration is applied
        # without a restart (or rejected, with the reason in health, if invalid).
        from agent.config import load_config
        from agent.reporting.ipc_configuration import ConfigurationWatcher

        agent.reload = lambda update: load_config(
            file=args.config, component_configuration=update, env=env
        )
        watcher = ConfigurationWatcher(env, agent.configuration_changed, _log_watch_error)
    daemon = Daemon(
        agent,
        until_settled=args.command == "once",
        on_startup=None if watcher is None else watcher.start,
        on_shutdown=None if watcher is None else watcher.stop,
    )
    return daemon.run()


def _log_watch_error(message: str) -> None:
    import structlog

    structlog.get_logger("agent.config").warning("configuration watch", problem=message)


def _detect(args: argparse.Namespace) -> int:
    from agent.aws.backends import detected_target

    overrides = None
    prefer = True
    backend = args.backend
    if args.config is not None:
        from agent.config import load_config

        try:
            config = load_config(file=args.config, env=os.environ)
        except errors.ConfigurationError as exc:
            print(f"l4v-edge-agent: {exc.message}", file=sys.stderr)
            return EXIT_CONFIG
        overrides, prefer = config.platform, config.prefer_target_device
        backend = backend or config.packaging.backend
    backend = backend or "lookoutvision"
    try:
        report = detected_target(backend, args.root, overrides=overrides, prefer_target_device=prefer)
    except errors.UnsupportedPlatformError as exc:
        print(json.dumps(
            {"supported": False, "packagingBackend": backend, "error": exc.message}, indent=2
        ))
        return EXIT_PLATFORM
    print(json.dumps({"supported": True, **report}, indent=2))
    return EXIT_OK


def _status(config: Any, *, as_json: bool) -> int:
    from agent.ledger import Ledger

    path = Path(config.state_dir) / "agent.sqlite"
    if not path.exists():
        print(f"no ledger at {path}: the agent has not run here yet", file=sys.stderr)
        return EXIT_FAILED
    ledger = Ledger(path, read_only=True)
    rollouts = ledger.rollouts(limit=20)
    known = ledger.facts()
    facts = {
        "deployed_version": known.deployed_version,
        "deployed_component_name": known.deployed_component_name,
        "deployed_component_version": known.deployed_component_version,
        "last_check_at": known.last_check_at,
        "next_check_at": known.next_check_at,
        # > 1 while throttling has stretched this device's check interval
        "check_interval_factor": known.check_interval_factor,
        "last_error_type": known.last_error.type if known.last_error else None,
        "last_error_message": known.last_error.message if known.last_error else None,
    }
    if as_json:
        print(json.dumps(
            {"facts": facts, "outboxDepth": ledger.outbox_depth(),
             "rollouts": [r.model_dump(mode="json") for r in rollouts]}, indent=2))
        return EXIT_OK
    print(f"deployed: v{facts['deployed_version'] or '-'} "
          f"({facts['deployed_component_name'] or '-'} {facts['deployed_component_version'] or ''})")
    if facts["last_error_type"]:
        print(f"last error: {facts['last_error_type']}: {facts['last_error_message']}")
    print(f"outbox: {ledger.outbox_depth()} message(s) waiting")
    header = f"{'id':>4} {'ver':>4} {'try':>3} {'phase':<20} {'job':<34} {'deployment':<38} error"
    print(header)
    for r in rollouts:
        print(f"{r.id:>4} {r.model_version:>4} {r.attempt:>3} {r.phase.value:<20} "
              f"{(r.job_name or '-'):<34} {(r.deployment_id or '-'):<38} {r.error_message or ''}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
