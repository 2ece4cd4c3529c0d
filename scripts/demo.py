"""The one-command demo: two model versions rolled out by the real agent process.

Starts the local world with one simulated Greengrass core device (``localcloud.stage``),
runs ``python -m agent run`` as that device's component would run, and shows what a
subscriber to the agent's MQTT topics sees. Model v1 is rolled out first; then v2 is
released and rolled out. The agent is stopped with SIGTERM and a summary is printed.

``--backend sagemaker`` packages with SageMaker instead: the model versions are
Approved packages of a model package group, Neo compiles each for the device and the
agent makes the Greengrass component from the compiled artifact.

Exit code 0 only if both versions ended RUNNING (or FINISHED) on the device and the
agent exited 0. No AWS account, no root, loopback only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from localcloud.iotcore import BusMessage  # noqa: E402
from localcloud.stage import AGENT_COMPONENT, Stage  # noqa: E402

ROLLOUT_TIMEOUT = 45.0
STOP_TIMEOUT = 10.0
RUNNING_STATES = ("RUNNING", "FINISHED")
#: Status phases after which a rollout does not go on by itself.
TERMINAL_PHASES = (
    "COMPONENT_RUNNING",
    "ROLLOUT_FAILED",
    "PACKAGING_FAILED",
    "DEPLOYMENT_FAILED",
    "ROLLED_BACK",
)


@dataclass
class Outcome:
    version: int
    job: str = "-"
    component: str = "-"
    deployment: str = "-"
    state: str = "NOT STARTED"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state in RUNNING_STATES


class LiveView:
    """Prints one line per message on the agent's topics, as it arrives."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        try:
            message = json.loads(payload)
        except ValueError:
            message = {}
        line = self._describe(kind, message)
        with self._lock:
            print(f"[{time.monotonic() - self._started:6.1f}s] {line}", flush=True)

    @staticmethod
    def _describe(kind: str, m: dict[str, Any]) -> str:
        seq = f"#{m.get('sequence', '?'):<3}"
        if kind == "status":
            parts = [f"status   {seq} v{m.get('modelVersion')} {m.get('phase', '?'):<22}"]
            if m.get("packagingBackend") == "sagemaker":
                parts.append("backend=sagemaker")
            if m.get("jobName"):
                parts.append(f"job={m['jobName']}")
            if m.get("componentName"):
                parts.append(f"component={m['componentName']}@{m.get('componentVersion')}")
            if m.get("deploymentId"):
                parts.append(f"deployment={m['deploymentId'][:8]}")
            if m.get("error"):
                parts.append(f"error={m['error'].get('type')}: {m['error'].get('message')}")
            return " ".join(parts)
        if kind == "health":
            deployed = m.get("deployed")
            shown = (
                f"v{deployed['modelVersion']} {deployed['componentName']}@"
                f"{deployed['componentVersion']} {deployed.get('lifecycleState') or '?'}"
                if deployed
                else "none"
            )
            rollout = m.get("activeRollout")
            active = f" rollout=v{rollout['modelVersion']}:{rollout['phase']}" if rollout else ""
            return f"health   {seq} {m.get('status', '?'):<9} deployed={shown}{active}"
        if kind == "platform":
            platform = m.get("platform") or {}
            return f"platform {seq} supported={m.get('supported')} key={platform.get('key', '-')}"
        return f"{kind:<8} {seq} {json.dumps(m)[:120]}"


def wait_for_rollout(stage: Stage, version: int, started: float, since: int) -> Outcome:
    """Wait until the agent reports a terminal phase for ``version``; check the device."""
    outcome = Outcome(version)
    status_topic = stage.topics["status"]

    def terminal(message: BusMessage) -> bool:
        if message.topic != status_topic:
            return False
        body = json.loads(message.payload)
        return body.get("modelVersion") == version and body.get("phase") in TERMINAL_PHASES

    assert stage.world is not None
    try:
        message = stage.world.iotcore.wait_for(terminal, timeout=ROLLOUT_TIMEOUT, since=since)
    except TimeoutError:
        outcome.state = f"TIMED OUT after {ROLLOUT_TIMEOUT:.0f} s"
        outcome.seconds = time.monotonic() - started
        return outcome
    outcome.seconds = time.monotonic() - started
    body = json.loads(message.payload)
    outcome.job = body.get("jobName") or "-"
    name, component_version = body.get("componentName"), body.get("componentVersion")
    outcome.component = f"{name}@{component_version}" if name else "-"
    outcome.deployment = body.get("deploymentId") or "-"
    if body["phase"] != "COMPONENT_RUNNING":
        outcome.state = body["phase"]
        return outcome
    on_device = stage.component_version(name) if name else None
    state = stage.component_state(name) if name else None
    if on_device != component_version:
        outcome.state = f"device has {name}@{on_device}"
    else:
        outcome.state = state or "MISSING"
    return outcome


def summary(outcomes: list[Outcome]) -> str:
    rows = [("version", "packaging job", "component", "deployment id", "final state", "time")]
    rows += [
        (f"v{o.version}", o.job, o.component, o.deployment, o.state, f"{o.seconds:.1f} s")
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Roll out two model versions locally.")
    parser.add_argument("--backend", choices=("lookoutvision", "sagemaker"), default="lookoutvision")
    backend = parser.parse_args(argv).backend
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="l4v-demo-"))
    print(f"demo: local AWS world + simulated Greengrass core device; agent work dir {workdir}")
    outcomes: list[Outcome] = []
    exit_code: int | None = None
    with Stage(workdir, backend=backend) as stage:
        assert stage.world is not None
        bus = stage.world.iotcore
        models = (
            "model package group 'widgets' has v1 Approved (packaged by SageMaker Neo)"
            if backend == "sagemaker"
            else "project 'widgets' has model v1 TRAINED (packaged by Lookout for Vision)"
        )
        print(f"demo: endpoint {stage.url}; {AGENT_COMPONENT} is RUNNING on {stage.thing}; {models}")
        bus.subscribe(f"l4v-edge/{stage.thing}/#", LiveView(started))
        print("demo: starting `python -m agent run` with the component environment\n")
        try:
            since = len(bus.messages)
            stage.start_agent()
            outcomes.append(wait_for_rollout(stage, 1, time.monotonic(), since))
            if outcomes[-1].ok:
                since = len(bus.messages)
                released_at = time.monotonic()
                version = stage.release()
                how = "Approved" if backend == "sagemaker" else "TRAINED"
                print(
                    f"\ndemo: released model v{version} ({how}); the agent finds it on its "
                    "next check\n",
                    flush=True,
                )
                outcomes.append(wait_for_rollout(stage, version, released_at, since))
        finally:
            print("\ndemo: stopping the agent with SIGTERM")
            exit_code = stage.stop_agent(timeout=STOP_TIMEOUT)
            print(f"demo: agent exited with code {exit_code}")
            ok = len(outcomes) == 2 and all(o.ok for o in outcomes) and exit_code == 0
            if not ok:
                print("\ndemo: the agent's log (last lines):")
                print(stage.log_tail(40))
    print()
    print(summary(outcomes))
    print(f"\ndemo: total {time.monotonic() - started:.1f} s — {'OK' if ok else 'FAILED'}")
    print("demo: to watch a whole simulated fleet roll out, run `python -m localcloud serve "
          "--devices 50` and, in a second terminal, the `fleet watch` command it prints")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
