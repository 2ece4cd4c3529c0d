"""``python -m agent fleet watch | report`` against a simulated fleet on a real Mosquitto.

The fleet is :class:`localcloud.livefleet.PublishingFleet`: real agents on the world's
virtual clock whose outbox messages go to the broker over mutual TLS. The watcher runs
as its own process, exactly as an operator or a CI job starts it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shlex
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.fleet.report import write_report
from agent.fleet.state import FleetState
from agent.reporting.mqtt import DirectMqttConfig, DirectMqttTransport
from localcloud.bench.fleet import quiet_agent_logs
from localcloud.livefleet import PublishingFleet
from tests.support.chromium import HeadlessChromium, find_chromium
from tests.support.mosquitto import MosquittoBroker, Pki

REPO_ROOT = Path(__file__).resolve().parents[2]
FLEET = 200


class CollectedProcess:
    """A subprocess (by default ``python -m agent fleet ...``), its output collected line
    by line."""

    def __init__(self, args: list[str], *, module: tuple[str, ...] = ("agent", "fleet")) -> None:
        self._changed = threading.Condition()
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.process = subprocess.Popen(
            [sys.executable, "-m", *module, *args],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "140"},
        )
        self._pumps = [
            threading.Thread(target=self._pump, args=(name,), daemon=True)
            for name in ("stdout", "stderr")
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, name: str) -> None:
        stream = getattr(self.process, name)
        for line in stream:
            with self._changed:
                self.lines[name].append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, name: str, predicate: Callable[[str], bool], timeout: float) -> str:
        """The first line of ``name`` matching ``predicate``; AssertionError after ``timeout``."""
        found: list[str] = []

        def match() -> bool:
            found[:] = [line for line in self.lines[name] if predicate(line)][:1]
            return bool(found) or self.process.poll() is not None

        with self._changed:
            self._changed.wait_for(match, timeout)
        if not found:
            raise AssertionError(f"no such line on {name} within {timeout:g} s:\n{self.text()}")
        return found[0]

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        for pump in self._pumps:  # every line read before the caller looks at them
            pump.join(10)
        return code

    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines["stdout"] + ["-- stderr --"] + self.lines["stderr"])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def broker_args(broker: MosquittoBroker, pki: Pki) -> list[str]:
    operator = pki.client("operator")
    return ["--endpoint", broker.host, "--port", str(broker.port), "--cert", str(operator.cert_path),
            "--key", str(operator.key_path), "--ca", str(pki.ca_path)]


@contextmanager
def fleet_publisher(broker: MosquittoBroker, pki: Pki) -> Iterator[Callable[[str, bytes, bool], None]]:
    """One mutual-TLS connection publishing every simulated device's messages."""
    credentials = pki.client("fleet-sim")
    transport = DirectMqttTransport(DirectMqttConfig(
        endpoint=broker.host, port=broker.port, client_id="fleet-sim",
        cert_path=credentials.cert_path, key_path=credentials.key_path, ca_path=pki.ca_path,
    ))
    transport.connect(10.0)

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        transport.publish(topic, payload, retain=retain, timeout=10.0)

    try:
        yield publish
    finally:
        transport.close()


@contextmanager
def watching(args: list[str]) -> Iterator[CollectedProcess]:
    watch = CollectedProcess(args)
    try:
        watch.wait_for("stderr", lambda line: "subscribed to" in line, 60)
        yield watch
    finally:
        watch.kill()


pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_watch_follows_a_release_to_200_devices_and_exits_0(
    mosquitto: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    """200 simulated agents roll out model v1 while `fleet watch --until-version 1` looks
    on: it ends by itself with exit code 0 once all 200 run v1, and its final counts
    (fleet.json of --report) show every device RUNNING, none failed or silent."""
    report = tmp_path / "report"
    args = [*broker_args(mosquitto, pki), "--until-version", "1", "--expect", str(FLEET),
            "--timeout", "500", "--log-every", "1", "--report", str(report)]
    with watching(["watch", *args]) as watch, fleet_publisher(mosquitto, pki) as publish, \
            quiet_agent_logs(tmp_path / "agents.log"):
        fleet = PublishingFleet(FLEET, publish, state_dir=tmp_path)
        assert fleet.run(3 * 3600, until=lambda: fleet.running() == FLEET)
        fleet.close()
        code = watch.finish(120)
    assert code == 0, watch.text()
    assert "fleet: v1 runs on all 200 devices" in watch.lines["stdout"], watch.text()
    data = json.loads((report / "fleet.json").read_text())
    assert (data["devices"], data["onTarget"], data["complete"]) == (FLEET, FLEET, True)
    assert data["byVersionPhase"] == {"1": {"COMPONENT_RUNNING": FLEET}}
    assert (data["problems"], data["silent"], data["messages"]["unreadable"]) == ([], [], 0)
    assert {p["platform"]: p["devices"] for p in data["platforms"]} == {
        "jetson-xavier": 80, "x86-64-nvidia-sm75": 60, "arm64-cpu": 40, "x86-64-cpu": 20,
    }
    assert data["runningOverTime"]["1"][-1][1] == FLEET


@pytest.mark.timeout(600)
def test_watch_shows_failed_and_silent_devices_and_the_gate_fails(
    mosquitto: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    """200 agents roll out v1; 3 installs fail (the devices roll back) and 2 devices lose
    power. The watcher lists the 3 with their error and the 2 as silent; stopped with
    SIGTERM it exits 1. Afterwards `fleet report` rebuilds the state from the retained
    messages alone, and a `fleet watch --timeout` on that state exits 1 too."""
    report = tmp_path / "report"
    args = [*broker_args(mosquitto, pki), "--until-version", "1", "--timeout", "500",
            "--log-every", "0.2", "--report", str(report)]
    with watching(["watch", *args]) as watch, fleet_publisher(mosquitto, pki) as publish, \
            quiet_agent_logs(tmp_path / "agents.log"):
        fleet = PublishingFleet(FLEET, publish, state_dir=tmp_path)
        failing_platform = fleet.fail_installs(3)
        silent = fleet.silence(2)
        fleet.run(2400)
        fleet.close()
        watch.wait_for("stdout", lambda line: "200 devices · v1 running on 195 (98 %)" in line
                       and "3 failed" in line and "2 silent" in line, 120)
        watch.process.terminate()
        code = watch.finish(60)
    assert code == 1, watch.text()
    assert "fleet: v1 not on 5 device(s)" in "\n".join(watch.lines["stdout"]), watch.text()
    data = json.loads((report / "fleet.json").read_text())
    assert (data["devices"], data["onTarget"], data["complete"]) == (FLEET, 195, False)
    failed = data["problems"]
    assert len(failed) == 3
    for problem in failed:
        assert problem["problem"] in ("DEPLOYMENT_FAILED", "ROLLED_BACK")
        assert problem["platform"] == failing_platform
        assert "model file checksum mismatch" in problem["error"]
    assert sorted(s["thingName"] for s in data["silent"]) == sorted(silent)

    retained = tmp_path / "retained"
    answer = subprocess.run(
        [sys.executable, "-m", "agent", "fleet", "report", *broker_args(mosquitto, pki),
         "--out", str(retained), "--listen", "3"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert answer.returncode == 0, answer.stderr
    again = json.loads((retained / "fleet.json").read_text())
    assert (again["devices"], again["onTarget"], again["targetVersion"]) == (FLEET, 195, 1)
    assert sorted(p["thingName"] for p in again["problems"]) == sorted(p["thingName"] for p in failed)
    assert (retained / "index.html").stat().st_size > 0

    gate = subprocess.run(
        [sys.executable, "-m", "agent", "fleet", "watch", *broker_args(mosquitto, pki),
         "--until-version", "1", "--timeout", "4", "--settle", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert re.search(r"fleet: v1 not on 5 device\(s\)", gate.stdout), gate.stdout


def test_watch_exit_codes_for_bad_options_and_an_unreachable_broker(pki: Pki, tmp_path: Path) -> None:
    """Options are checked before connecting (exit 2, naming the option), and so is
    certificate material the TLS library refuses; a broker that does not answer is exit 4."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent", "fleet", "watch", *args],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})

    client = pki.client("operator")
    missing_ca = run("--endpoint", "127.0.0.1", "--cert", str(client.cert_path),
                     "--key", str(client.key_path))
    assert missing_ca.returncode == 2 and "--ca" in missing_ca.stderr, missing_ca.stderr
    no_endpoint = run("--region", "eu-west-1")
    assert no_endpoint.returncode == 2 and "endpoint" in no_endpoint.stderr, no_endpoint.stderr
    no_region = run("--endpoint", "example.invalid")
    assert no_region.returncode == 2 and "--region" in no_region.stderr, no_region.stderr
    no_key = run("--endpoint", "127.0.0.1", "--cert", str(client.cert_path),
                 "--key", str(client.key_path) + ".missing", "--ca", str(pki.ca_path))
    assert no_key.returncode == 2 and "key" in no_key.stderr, no_key.stderr
    not_pem = tmp_path / "not-a-certificate.pem"
    not_pem.write_text("hello\n")
    garbage = run("--endpoint", "127.0.0.1", "--cert", str(not_pem), "--key", str(client.key_path),
                  "--ca", str(pki.ca_path))
    assert garbage.returncode == 2 and "cannot load TLS material" in garbage.stderr, garbage.stderr
    from tests.support.mosquitto import free_port

    closed = run("--endpoint", "127.0.0.1", "--port", str(free_port()), "--cert", str(client.cert_path),
                 "--key", str(client.key_path), "--ca", str(pki.ca_path), "--timeout", "5")
    assert closed.returncode == 4, closed.stderr
    assert "cannot subscribe" in closed.stderr


def run_in_terminal(argv: list[str], *, timeout: float) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal of 120x50, as in a person's terminal; returns
    its exit code and everything it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=slave,
                               stderr=slave, env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal closed with the process
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        reader.join(10)
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.mark.timeout(300)
def test_localcloud_serve_devices_is_watched_with_the_command_it_prints(mosquitto_binary: str) -> None:
    """`python -m localcloud serve --devices 8` starts its own Mosquitto and fleet and
    prints a `fleet watch` command; that command, run as printed through the
    `l4v-edge-agent` console script in a terminal, shows the live view, sees v1 reach
    all 8 devices and exits 0. SIGTERM then stops the fleet with exit code 0."""
    serve = CollectedProcess(["serve", "--devices", "8", "--speed", "600", "--releases", "1",
                              "--failing-installs", "0", "--silent", "0"], module=("localcloud",))
    try:
        serve.wait_for("stdout", lambda line: line == "}", 60)
        announced = json.loads("\n".join(serve.lines["stdout"]))
        command = shlex.split(announced["watch"])
        assert command[:4] == ["python", "-m", "agent", "fleet"]
        console_script = Path(sys.executable).parent / "l4v-edge-agent"
        code, screen = run_in_terminal(
            [str(console_script), *command[3:], "--until-version", "1", "--expect", "8",
             "--timeout", "200"], timeout=240,
        )
        assert code == 0, screen
        assert "\x1b[?25l" in screen  # rich's live display took the terminal (cursor hidden)
        assert "progress toward v1" in screen and "per platform" in screen, screen
        assert "fleet: v1 runs on all 8 devices" in screen, screen
        serve.process.terminate()
        assert serve.finish(60) == 0, serve.text()
    finally:
        serve.kill()


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    binary = find_chromium()
    if binary is None:
        message = "chromium is not installed: apt-get install chromium (scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


@pytest.mark.timeout(300)
def test_report_page_shows_the_rollout_in_headless_chromium(chromium_binary: str, tmp_path: Path) -> None:
    """The HTML report of a 12-device rollout with one rolled-back install, opened from
    disk in headless Chromium: the summary, the progress table, one table per platform,
    the failed device with its error and the plot are visible, and the page loaded
    nothing from anywhere else."""
    state = FleetState(health_interval=300)
    with quiet_agent_logs(tmp_path / "agents.log"):
        fleet = PublishingFleet(12, lambda topic, payload, retain: state.receive(topic, payload),
                                state_dir=tmp_path)
        fleet.fail_installs(1)
        fleet.run(2400)
        fleet.close()
    snapshot = state.snapshot()
    failed = snapshot.problems[0].thing
    page, _ = write_report(tmp_path / "report", snapshot, state.devices(), state.running_history())
    with HeadlessChromium(chromium_binary) as browser:
        browser.open(page.as_uri())
        text: str = browser.evaluate("document.body.innerText")
        plot: dict[str, Any] = browser.evaluate(
            "(() => { const i = document.getElementById('running-plot');"
            " const r = i.getBoundingClientRect();"
            " return {w: i.naturalWidth, h: i.naturalHeight, shown: r.width > 0 && r.height > 0}; })()"
        )
        fetched: list[str] = browser.evaluate(
            "performance.getEntriesByType('resource').map(e => e.name)"
        )
        browser.screenshot(tmp_path / "report.png")
    assert "12 devices · v1 running on 11 (92 %)" in text
    assert "Progress toward v1" in text
    for platform in ("jetson-xavier", "x86-64-nvidia-sm75", "arm64-cpu", "x86-64-cpu"):
        assert re.search(rf"Platform {platform} \(\d+ devices\)", text), platform
    assert "Devices that need a look (1)" in text
    assert re.search(rf"{failed}\s+jetson-xavier\s+(DEPLOYMENT_FAILED|ROLLED_BACK)", text), text
    assert "model file checksum mismatch" in text
    assert plot["w"] > 300 and plot["h"] > 100 and plot["shown"], plot
    assert [u for u in fetched if not u.startswith("data:")] == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
