"""Footprint benchmark: what the agent process costs a device, measured from outside.

The real daemon (``python -m agent run``) runs as a subprocess against the local world
of :class:`localcloud.stage.Stage` (HTTP on 127.0.0.1, simulated nucleus IPC, token
exchange), exactly as the Greengrass nucleus would start it. Everything is read from
``/proc/<pid>`` of that process; nothing in the agent is instrumented.

Scenario:

1. **Start and rollout** - the stage's short polling intervals and a health report
   every 5 s; periodic checks every 900 s, so that after the rollout every check is one
   the benchmark asked for. The time from spawning the process to its first message on
   the bus (the platform report) is the start-up time; descriptors, threads and
   resident memory are sampled then and again once model v1 is RUNNING.
2. **Reconcile cycles** - ``check-now`` commands published on
   ``l4v-edge/<thing>/commands``; the nucleus hands each to the agent over IPC
   SubscribeToIoTCore. Each round trip waits for the ``ACCEPTED`` response *and* for
   the ``ListModels`` call of that cycle's check, so every command is one full
   reconcile cycle (check, ledger write, log line) and none are merged. Memory,
   descriptors and threads are sampled after the last cycle.
3. **Idle at the default intervals** - the agent is stopped (SIGTERM), its component
   configuration is changed by a deployment to the defaults (checks every 900 s, health
   every 300 s, default polling) and it is started again. After its start-up messages,
   user+system CPU time is measured over an idle stretch and scaled to an hour; the
   hour's 4 checks and 12 health reports are added at the per-cycle cost measured in
   step 2 (an upper bound: that cost includes a command and its response).

Targets (see :data:`TARGETS`): :func:`main` prints a table, writes
``<out>/footprint.json`` and returns 1 when one is missed. Descriptor and thread growth
is judged over the two steady stretches (after the rollout -> after the cycles, and the
idle stretch): the agent opens some resources on first use (one keep-alive HTTPS
connection per AWS service, the nucleus connection for lifecycle states, the worker
that runs command callbacks), so the counts right after the first message are lower by
design. Those figures are reported too (``...FromStart``) with the kinds of descriptors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from localcloud.iotcore import BusMessage
from localcloud.stage import AGENT_COMPONENT, Stage
from localcloud.world import Call

MIB = 1024 * 1024
ROLLOUT_TIMEOUT = 60.0
ROUND_TRIP_TIMEOUT = 15.0
#: The status phases that end a rollout.
TERMINAL_PHASES = (
    "COMPONENT_RUNNING",
    "ROLLOUT_FAILED",
    "PACKAGING_FAILED",
    "DEPLOYMENT_FAILED",
    "ROLLED_BACK",
)
#: The agent's default intervals (``agent.config.AgentConfig``), as a configuration merge.
DEFAULT_INTERVALS: dict[str, Any] = {
    "checkIntervalSeconds": "900",
    "pollInitialSeconds": "15",
    "pollMaxSeconds": "60",
    "jobPollMaxSeconds": "600",
    "awsMaxAttempts": "3",
    "reporting": {"healthIntervalSeconds": "300"},
}
#: 10,000 round trips take ~8 minutes (each is a full cycle through the nucleus, the
#: agent and the world's HTTP front, ~20 per second), so the default is 2,000.
DEFAULT_CYCLES = 2000
CHECKS_PER_IDLE_HOUR = 3600 / 900
HEALTH_REPORTS_PER_IDLE_HOUR = 3600 / 300


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    limit: float
    unit: str


TARGETS: tuple[Target, ...] = (
    Target("firstMessageSeconds", "first message after start", 1.5, "s"),
    Target("steadyRssMiB", "resident memory, steady (max)", 70.0, "MiB"),
    Target("rssGrowthMiB", "resident memory growth over the cycles", 2.0, "MiB"),
    Target("fdGrowth", "open descriptors growth, steady", 0, ""),
    Target("threadGrowth", "threads growth, steady", 0, ""),
    Target("idleCpuPercent", "idle CPU at default intervals", 0.1, "% of a core"),
)


class BenchmarkError(RuntimeError):
    """The scenario itself went wrong (not a missed target)."""


# -- /proc ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One reading of the agent process."""

    at: str
    rss_bytes: int
    fds: int
    threads: int
    cpu_seconds: float
    fd_kinds: dict[str, int]

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / MIB


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit.lower() != "kb":
                raise BenchmarkError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise BenchmarkError(f"no VmRSS for process {pid}")


def fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors by kind: socket, pipe, anon_inode:[eventfd], file..."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":[")[0] if ":[" in target else "file"
        if target.startswith("anon_inode:"):
            kind = target
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def sample(pid: int, at: str) -> Sample:
    return Sample(
        at=at,
        rss_bytes=rss_bytes(pid),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=len(os.listdir(f"/proc/{pid}/task")),
        cpu_seconds=cpu_seconds(pid),
        fd_kinds=fd_kinds(pid),
    )


def machine() -> dict[str, Any]:
    model = pyplatform.processor() or pyplatform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpuModel": model,
        "python": pyplatform.python_version(),
        "system": f"{pyplatform.system()} {pyplatform.release()} {pyplatform.machine()}",
    }


# -- watching the world ------------------------------------------------------------------
class CallCounter:
    """Counts the world's answered calls of one operation and lets a caller wait for them."""

    def __init__(self, stage: Stage, service: str, operation: str) -> None:
        assert stage.world is not None
        self._log = stage.world.calls
        self._service, self._operation = service, operation
        self._cond = threading.Condition()
        self._count = sum(1 for c in self._log.calls if self._counts(c))
        self._record = self._log.record

    def _counts(self, call: Call) -> bool:
        return call.service == self._service and call.operation == self._operation

    def __enter__(self) -> CallCounter:
        def record(call: Call) -> None:
            self._record(call)
            if self._counts(call):
                with self._cond:
                    self._count += 1
                    self._cond.notify_all()

        self._log.record = record  # type: ignore[method-assign]
        return self

    def __exit__(self, *_exc: object) -> None:
        self._log.record = self._record  # type: ignore[method-assign]

    @property
    def count(self) -> int:
        with self._cond:
            return self._count

    def wait_for(self, count: int, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._count >= count, timeout):
                raise TimeoutError(
                    f"{self._operation}: {self._count} call(s), expected {count} within {timeout} s"
                )


def _body(message: BusMessage) -> dict[str, Any]:
    body = json.loads(message.payload)
    if not isinstance(body, dict):
        raise BenchmarkError(f"not a JSON object on {message.topic}")
    return body


def _wait(stage: Stage, predicate: Callable[[BusMessage], bool], timeout: float, since: int,
          what: str) -> BusMessage:
    assert stage.world is not None
    try:
        return stage.world.iotcore.wait_for(predicate, timeout, since=since)
    except TimeoutError:
        raise BenchmarkError(f"no {what} within {timeout} s; agent log:\n{stage.log_tail()}") from None


def _rollout(stage: Stage, version: int, since: int) -> dict[str, Any]:
    topic = stage.topics["status"]

    def ended(message: BusMessage) -> bool:
        if message.topic != topic:
            return False
        body = _body(message)
        return body.get("modelVersion") == version and body.get("phase") in TERMINAL_PHASES

    body = _body(_wait(stage, ended, ROLLOUT_TIMEOUT, since, f"end of the v{version} rollout"))
    if body["phase"] != "COMPONENT_RUNNING":
        raise BenchmarkError(f"rollout of v{version} ended {body['phase']}: {body.get('error')}")
    return body


def _start(stage: Stage) -> tuple[int, float, int]:
    """Start the agent; return its pid, the seconds until its first message, and the
    bus index of that message."""
    assert stage.world is not None
    prefix = f"l4v-edge/{stage.thing}/"
    since = len(stage.world.iotcore.messages)
    started = time.time()
    process = stage.start_agent()
    first = _wait(stage, lambda m: m.topic.startswith(prefix), 30.0, since, "first message")
    index = stage.world.iotcore.messages.index(first)
    return process.pid, first.time - started, index


@contextmanager
def _responses(stage: Stage) -> Iterator[queue.Queue[dict[str, Any]]]:
    assert stage.world is not None
    bus = stage.world.iotcore
    answers: queue.Queue[dict[str, Any]] = queue.Queue()
    handle = bus.subscribe(stage.topics["commandResponses"], lambda _t, p: answers.put(json.loads(p)))
    try:
        yield answers
    finally:
        bus.unsubscribe(handle)


def run_cycles(stage: Stage, cycles: int, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """``cycles`` check-now round trips, each one full reconcile cycle of the agent."""
    assert stage.world is not None
    bus = stage.world.iotcore
    topic = stage.topics["commands"]
    with CallCounter(stage, "lookoutvision", "ListModels") as checks, _responses(stage) as answers:
        first_check = checks.count
        started = time.monotonic()
        for number in range(1, cycles + 1):
            command_id = f"bench-{number}"
            bus.publish(topic, json.dumps({"id": command_id, "command": "check-now"}).encode())
            while True:
                try:
                    answer = answers.get(timeout=ROUND_TRIP_TIMEOUT)
                except queue.Empty:
                    raise BenchmarkError(
                        f"no response to {command_id} within {ROUND_TRIP_TIMEOUT} s; agent log:\n"
                        + stage.log_tail()
                    ) from None
                if answer.get("id") == command_id:
                    break
            if answer.get("outcome") != "ACCEPTED":
                raise BenchmarkError(f"{command_id}: {answer}")
            try:
                checks.wait_for(first_check + number, ROUND_TRIP_TIMEOUT)
            except TimeoutError as exc:
                raise BenchmarkError(f"{command_id}: {exc}; agent log:\n{stage.log_tail()}") from None
            if progress is not None:
                progress(number)
        seconds = time.monotonic() - started
        checked = checks.count - first_check
    return {
        "requested": cycles,
        "checks": checked,
        "seconds": round(seconds, 2),
        "perSecond": round(cycles / seconds, 1) if seconds > 0 else None,
    }


def reconfigure(stage: Stage, merge: dict[str, Any], timeout: float = 30.0) -> str:
    """Deploy the device's latest components again with ``merge`` for the agent's
    configuration, as an operator would, and wait until the device applied it."""
    world = stage.world
    assert world is not None
    gg = world.client("greengrassv2")
    target = world.client("iot").describe_thing(thingName=stage.thing)["thingArn"]
    latest = gg.list_deployments(targetArn=target, historyFilter="LATEST_ONLY")["deployments"][0]
    current = gg.get_deployment(deploymentId=latest["deploymentId"])
    components = {name: dict(spec) for name, spec in current["components"].items()}
    components[AGENT_COMPONENT] = {
        "componentVersion": components[AGENT_COMPONENT]["componentVersion"],
        "configurationUpdate": {"merge": json.dumps(merge)},
    }
    deployment_id: str = gg.create_deployment(
        targetArn=target,
        deploymentName=current.get("deploymentName") or "footprint-benchmark",
        components=components,
        deploymentPolicies=current.get("deploymentPolicies") or {},
    )["deploymentId"]
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        world.tick()
        effective = stage.device.effective(deployment_id)
        if effective is not None and effective.status in ("SUCCEEDED", "COMPLETED"):
            return deployment_id
        if effective is not None and effective.status in ("FAILED", "CANCELED", "REJECTED"):
            raise BenchmarkError(f"reconfiguration {deployment_id} {effective.status}")
        if time.monotonic() > deadline:
            raise BenchmarkError(f"reconfiguration {deployment_id} not applied within {timeout} s")
        pause.wait(0.05)


# -- the benchmark -------------------------------------------------------------------------
def run(workdir: Path, *, cycles: int, idle_seconds: float,
        say: Callable[[str], None] = lambda _text: None) -> dict[str, Any]:
    """Run the whole scenario in ``workdir``; return the figures (see :func:`evaluate`)."""
    samples: list[Sample] = []
    # Every check-now must be one full cycle: the per-device command rate limit is off.
    agent_config = {"checkIntervalSeconds": "900", "commands": {"minCheckIntervalSeconds": "0"}}
    with Stage(workdir, agent_config=agent_config) as stage:
        assert stage.world is not None
        # 1. start and rollout
        say("starting the agent process; rollout of model v1")
        pid, first_message, first_index = _start(stage)
        samples.append(sample(pid, "start"))
        _rollout(stage, 1, first_index)
        samples.append(sample(pid, "afterRollout"))

        # 2. reconcile cycles
        say(f"{cycles} check-now round trips (one reconcile cycle each)")
        step = max(1, cycles // 10)

        def progress(done: int) -> None:
            if done % step == 0 and done < cycles:
                say(f"  {done} cycles, RSS {rss_bytes(pid) / MIB:.1f} MiB")

        cycle_start = samples[-1]
        mark = len(stage.world.iotcore.messages)
        cycle_figures = run_cycles(stage, cycles, progress)
        samples.append(sample(pid, "afterCycles"))
        cycle_figures["healthReports"] = sum(
            1 for m in stage.world.iotcore.messages[mark:] if m.topic == stage.topics["health"]
        )
        cycle_cpu = samples[-1].cpu_seconds - cycle_start.cpu_seconds
        cycle_figures["cpuMillisecondsPerCycle"] = round(1000 * cycle_cpu / max(1, cycles), 3)
        exit_code = stage.stop_agent(timeout=15.0)
        if exit_code != 0:
            raise BenchmarkError(f"agent exited {exit_code} on SIGTERM:\n{stage.log_tail()}")

        # 3. idle at the default intervals
        say(f"restart with the default intervals; {idle_seconds:g} s idle")
        reconfigure(stage, DEFAULT_INTERVALS)
        with CallCounter(stage, "lookoutvision", "ListModels") as checks:
            before = checks.count
            pid, restart_first_message, first_index = _start(stage)
            samples.append(sample(pid, "restart"))
            # The start-up health report follows the platform report; the next check is
            # ~900 s away (set by the last cycle), the next health report ~300 s.
            health = stage.topics["health"]
            _wait(stage, lambda m: m.topic == health, 30.0, first_index, "start-up health report")
            pause = threading.Event()
            pause.wait(1.0)  # let the start-up step's ledger write and log line finish
            idle_from = sample(pid, "idleStart")
            mark = len(stage.world.iotcore.messages)
            pause.wait(idle_seconds)  # the measured idle stretch
            idle_to = sample(pid, "idleEnd")
            idle_checks = checks.count - before
        idle_messages = len(stage.world.iotcore.messages) - mark
        samples += [idle_from, idle_to]
        exit_code = stage.stop_agent(timeout=15.0)
        if exit_code != 0:
            raise BenchmarkError(f"agent exited {exit_code} on SIGTERM:\n{stage.log_tail()}")

    idle_cpu = idle_to.cpu_seconds - idle_from.cpu_seconds
    per_cycle = cycle_cpu / max(1, cycles)
    hourly = (
        idle_cpu / idle_seconds * 3600
        + (CHECKS_PER_IDLE_HOUR + HEALTH_REPORTS_PER_IDLE_HOUR) * per_cycle
    )
    by_name = {s.at: s for s in samples}
    start, steady, end = by_name["start"], by_name["afterRollout"], by_name["afterCycles"]
    return {
        "firstMessageSeconds": round(first_message, 3),
        "firstMessageSecondsRestart": round(restart_first_message, 3),
        "cycles": cycle_figures,
        "steadyRssMiB": round(max(by_name["afterRollout"].rss_mib, end.rss_mib), 2),
        "rssGrowthMiB": round(end.rss_mib - by_name["afterRollout"].rss_mib, 2),
        "fdGrowth": max(end.fds - steady.fds, idle_to.fds - idle_from.fds),
        "threadGrowth": max(end.threads - steady.threads, idle_to.threads - idle_from.threads),
        "fdGrowthFromStart": end.fds - start.fds,
        "threadGrowthFromStart": end.threads - start.threads,
        "idle": {
            "seconds": idle_seconds,
            "cpuSeconds": round(idle_cpu, 3),
            "checks": idle_checks,
            "messages": idle_messages,
            "measuredCpuPercent": round(100 * idle_cpu / idle_seconds, 4),
            "cpuSecondsPerHour": round(hourly, 2),
        },
        "idleCpuPercent": round(100 * hourly / 3600, 4),
        "samples": [
            {**asdict(s), "rssMiB": round(s.rss_mib, 2), "cpu_seconds": round(s.cpu_seconds, 2)}
            for s in samples
        ],
    }


def evaluate(figures: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "key": t.key,
            "label": t.label,
            "value": figures[t.key],
            "limit": t.limit,
            "unit": t.unit,
            "ok": figures[t.key] <= t.limit,
        }
        for t in TARGETS
    ]


def table(figures: dict[str, Any], results: list[dict[str, Any]]) -> str:
    rows = [("figure", "value", "target", "")]
    for r in results:
        unit = f" {r['unit']}" if r["unit"] else ""
        rows.append((r["label"], f"{r['value']:g}{unit}", f"<= {r['limit']:g}{unit}",
                     "ok" if r["ok"] else "MISSED"))
    samples = {s["at"]: s for s in figures["samples"]}
    for name in ("start", "afterRollout", "afterCycles", "restart", "idleEnd"):
        s = samples[name]
        rows.append((f"  {name}: RSS / fds / threads",
                     f"{s['rssMiB']:.1f} MiB / {s['fds']} / {s['threads']}", "", ""))
    c = figures["cycles"]
    rows.append(("  reconcile cycles", f"{c['requested']} in {c['seconds']:g} s, "
                 f"{c['cpuMillisecondsPerCycle']:g} ms CPU each, {c['healthReports']} health",
                 "", ""))
    i = figures["idle"]
    rows.append(("  idle stretch", f"{i['cpuSeconds']:g} s CPU in {i['seconds']:g} s "
                 f"({i['measuredCpuPercent']:g} %)", "", ""))
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None, stdout: IO[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_footprint",
        description="The agent's footprint on the device: start-up, memory, descriptors, "
        "threads, idle CPU (real process against the local world).",
    )
    parser.add_argument("--cycles", type=int, default=None,
                        help="check-now reconcile cycles (default 2000; --quick: 100)")
    parser.add_argument("--idle-seconds", type=float, default=None,
                        help="idle stretch at the default intervals (default 60; --quick: 5)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="where footprint.json goes (default bench-results)")
    parser.add_argument("--quick", action="store_true", help="100 cycles, 5 s idle")
    args = parser.parse_args(argv)
    out = stdout or sys.stdout
    cycles = args.cycles if args.cycles is not None else (100 if args.quick else DEFAULT_CYCLES)
    idle = args.idle_seconds if args.idle_seconds is not None else (5.0 if args.quick else 60.0)
    if cycles < 1 or idle <= 0:
        parser.error("--cycles must be >= 1 and --idle-seconds > 0")

    def say(text: str) -> None:
        print(f"bench_footprint: {text}", file=out, flush=True)

    command = " ".join(["scripts/bench_footprint", *(argv if argv is not None else sys.argv[1:])])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="l4v-footprint-") as tmp:
        try:
            figures = run(Path(tmp) / "work", cycles=cycles, idle_seconds=idle, say=say)
        except BenchmarkError as exc:
            say(f"FAILED: {exc}")
            return 2
    results = evaluate(figures)
    ok = all(r["ok"] for r in results)
    report = {
        "benchmark": "footprint",
        "command": command.strip(),
        "machine": machine(),
        "wallSeconds": round(time.monotonic() - started, 1),
        **figures,
        "targets": results,
        "ok": ok,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "footprint.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(file=out)
    print(table(figures, results), file=out)
    missed = [r["label"] for r in results if not r["ok"]]
    say(f"wrote {path}; " + ("all targets met" if ok else "MISSED: " + ", ".join(missed)))
    return 0 if ok else 1

