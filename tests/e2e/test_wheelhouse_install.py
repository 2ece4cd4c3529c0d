"""The recipe's Install step on this machine, offline, from a real wheelhouse.

scripts/publish builds the wheelhouse for this machine's platform and Python; it is
unpacked as Greengrass unpacks a ZIP artifact and its ``install.py`` runs as the Install
step runs it (``python3 install.py WORK_PATH``) with pip cut off from any network: a
proxy in the environment that refuses every connection and, where the kernel lets us,
a network namespace without interfaces. The installed agent then runs as the Run step
runs it, against the stage, and must send its first message.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

import agent
from localcloud.iotcore import BusMessage
from localcloud.stage import Stage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PUBLISH = ROOT / "scripts" / "publish"
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
    platform.machine().lower(), platform.machine()
)
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
STEM = f"l4v-edge-agent-{agent.__version__}-linux-{ARCH}"
BUILD_TIMEOUT = 540.0
INSTALL_TIMEOUT = 300.0
FIRST_MESSAGE_TIMEOUT = 60.0


def _refused_port() -> int:
    """A loopback port nobody listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _can_unshare_network() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


OFFLINE_PREFIX = ["unshare", "--net"] if _can_unshare_network() else []


def offline_env() -> dict[str, str]:
    """The environment with every route to a package index pointing at a refused port."""
    dead = f"http://127.0.0.1:{_refused_port()}"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PIP_", "NO_PROXY"))}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env[name] = dead
    env["PIP_INDEX_URL"] = f"{dead}/simple"
    env["PIP_EXTRA_INDEX_URL"] = f"{dead}/simple"
    env.pop("PYTHONPATH", None)
    return env


def run_install(wheelhouse: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """The Install step: ``python3 install.py WORK_PATH``, offline."""
    return subprocess.run(
        [*OFFLINE_PREFIX, sys.executable, str(wheelhouse / "install.py"), str(work)],
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


def venv_target(work: Path) -> Path:
    link = work / "venv"
    assert link.is_symlink(), f"{link} is not the switched link"
    return link.resolve()


def imports_agent(work: Path) -> str:
    """Where the venv's python imports the agent from (outside the repository)."""
    done = subprocess.run(
        [str(work / "venv" / "bin" / "python"), "-c", "import agent; print(agent.__file__)"],
        cwd=work,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's wheelhouse, built by scripts/publish and unpacked as Greengrass
    unpacks it ({artifacts:decompressedPath}/<zip name without .zip>/)."""
    if ARCH not in ("x86_64", "aarch64"):
        pytest.skip(f"no wheelhouse for {platform.machine()}")
    base = tmp_path_factory.mktemp("wheelhouse")
    build = subprocess.run(
        [sys.executable, str(PUBLISH), "--build-only", "--build-dir", str(base / "build"),
         "--arch", ARCH, "--python", PYTHON],
        cwd=base, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    artifact = base / "build" / "artifacts" / "l4v.edge.Agent" / agent.__version__ / f"{STEM}.zip"
    unpacked = base / "decompressed" / STEM
    with zipfile.ZipFile(artifact) as archive:
        archive.extractall(unpacked)
    return unpacked


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    with Stage(tmp_path / "stage") as started:
        yield started


def _first_message(stage: Stage, process: subprocess.Popen[bytes]) -> BusMessage:
    assert stage.world is not None
    prefix = f"l4v-edge/{stage.thing}/"
    try:
        return stage.world.iotcore.wait_for(
            lambda m: m.topic.startswith(prefix), FIRST_MESSAGE_TIMEOUT
        )
    except TimeoutError:
        process.kill()
        output = process.communicate(timeout=10)[0].decode(errors="replace")
        pytest.fail(f"no message from the installed agent; its output:\n{output}", pytrace=False)


@pytest.mark.timeout(BUILD_TIMEOUT + 2 * INSTALL_TIMEOUT)
def test_offline_install_runs_the_agent_and_reinstalling_is_a_no_op(
    wheelhouse: Path, stage: Stage, tmp_path: Path
) -> None:
    """With no package index reachable, install.py builds the venv from the wheelhouse
    alone and links WORK/venv to it (replacing the plain venv directory an older version
    of the recipe left there); the agent started from that venv, as the Run step
    starts it, sends its platform message first (valid against its schema); a second
    Install with the same wheelhouse changes nothing and says so."""
    work = tmp_path / "work"
    (work / "venv" / "bin").mkdir(parents=True)
    (work / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    first = run_install(wheelhouse, work)
    assert first.returncode == 0, first.stderr
    assert f"installed {agent.__version__} for Python {PYTHON}" in first.stderr
    target = venv_target(work)
    assert target.parent == work / "venvs"
    assert sorted(p.name for p in (work / "venvs").iterdir()) == [target.name]
    assert imports_agent(work).startswith(str(work / "venv"))

    env = {**stage.agent_env()}
    env.pop("PYTHONPATH", None)
    process = subprocess.Popen(
        [str(work / "venv" / "bin" / "python"), "-m", "agent", "run"],
        cwd=stage.workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        message = _first_message(stage, process)
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert message.topic == stage.topics["platform"]
    body: dict[str, Any] = json.loads(message.payload)
    schema = json.loads((ROOT / "schemas" / "platform.schema.json").read_text())
    jsonschema.validate(body, schema)
    assert body["thingName"] == stage.thing

    marker_time = (target / ".l4v-installed").stat().st_mtime_ns
    again = run_install(wheelhouse, work)
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stderr
    assert venv_target(work) == target
    assert (target / ".l4v-installed").stat().st_mtime_ns == marker_time
    assert sorted(p.name for p in (work / "venvs").iterdir()) == [target.name]


@pytest.mark.timeout(BUILD_TIMEOUT + 4 * INSTALL_TIMEOUT)
def test_a_failed_install_leaves_the_previous_venv_and_a_rollback_only_switches(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """After a good install, a new wheelhouse with a wheel that does not match its hash
    fails (exit 1, pip's hash error in the log), leaves WORK/venv on the previous venv,
    still working, and no half-built venv behind. A good new wheelhouse then switches the
    link, keeping the previous venv, and going back to the first wheelhouse (a rollback)
    switches back without installing anything."""
    work = tmp_path / "work"
    assert run_install(wheelhouse, work).returncode == 0
    previous = venv_target(work)

    upgrade = tmp_path / "upgrade"
    shutil.copytree(wheelhouse, upgrade)
    with (upgrade / "requirements.txt").open("a") as requirements:
        requirements.write("# a new lock: another install key\n")
    corrupted = tmp_path / "corrupted"
    shutil.copytree(upgrade, corrupted)
    [six] = (corrupted / "wheels").glob("six-*.whl")
    six.write_bytes(six.read_bytes()[:-100])

    failed = run_install(corrupted, work)
    assert failed.returncode == 1
    assert "HASHES" in failed.stderr.upper()
    assert venv_target(work) == previous
    assert imports_agent(work).startswith(str(work / "venv"))
    assert [p.resolve() for p in (work / "venvs").iterdir()] == [previous]

    upgraded = run_install(upgrade, work)
    assert upgraded.returncode == 0, upgraded.stderr
    current = venv_target(work)
    assert current != previous
    assert {p.resolve() for p in (work / "venvs").iterdir()} == {previous, current}

    rollback = run_install(wheelhouse, work)
    assert rollback.returncode == 0, rollback.stderr
    assert "switched back" in rollback.stderr
    assert venv_target(work) == previous
    assert imports_agent(work).startswith(str(work / "venv"))
