"""install.py (scripts/device_install.py) refuses what its wheelhouse cannot install.

These cases stop before pip runs, so a wheelhouse of just the installer and its
manifest is enough; the installs themselves are in tests/e2e/test_wheelhouse_install.py.
"""

from __future__ import annotations

import ast
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import agent

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "scripts" / "device_install.py"
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
    platform.machine().lower(), platform.machine()
)
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def wheelhouse(tmp_path: Path, *, architecture: str, pythons: list[str]) -> Path:
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    shutil.copy2(INSTALLER, folder / "install.py")
    manifest = {
        "component": "l4v.edge.Agent",
        "version": agent.__version__,
        "architecture": architecture,
        "pythons": pythons,
    }
    (folder / "wheelhouse.json").write_text(json.dumps(manifest))
    (folder / "requirements.txt").write_text("")
    return folder


def install(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(folder / "install.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_python_without_wheels_is_refused_with_the_supported_versions(tmp_path: Path) -> None:
    """A wheelhouse without wheels for the running Python exits 3 with a message naming
    the running version and the ones it has wheels for, and creates no venv."""
    folder = wheelhouse(tmp_path, architecture=HOST_ARCH, pythons=["3.98", "3.99"])
    work = tmp_path / "work"
    done = install(folder, str(work))
    assert done.returncode == 3
    assert done.stderr.startswith("l4v.edge.Agent install: error: ")
    assert f"Python {HOST_PYTHON} ({sys.executable}) is not supported" in done.stderr
    assert "wheels for Python 3.98, 3.99" in done.stderr
    assert not work.exists()


def test_another_architectures_wheelhouse_is_refused(tmp_path: Path) -> None:
    """The aarch64 wheelhouse on an x86_64 machine (and the other way round) exits 3
    naming both platforms, before anything is installed."""
    other = "aarch64" if HOST_ARCH == "x86_64" else "x86_64"
    folder = wheelhouse(tmp_path, architecture=other, pythons=[HOST_PYTHON])
    work = tmp_path / "work"
    done = install(folder, str(work))
    assert done.returncode == 3
    assert f"this wheelhouse is for linux/{other}" in done.stderr
    assert platform.machine() in done.stderr
    assert not work.exists()


def test_the_work_path_is_required(tmp_path: Path) -> None:
    """Without the work path argument install.py exits 2 with its usage."""
    folder = wheelhouse(tmp_path, architecture=HOST_ARCH, pythons=[HOST_PYTHON])
    done = install(folder)
    assert done.returncode == 2
    assert "usage: install.py WORK_PATH" in done.stderr


def test_the_installer_parses_on_old_pythons() -> None:
    """install.py is read by whatever python3 a device has; its syntax stays within
    Python 3.7 so that an old interpreter gets the clear refusal, not a SyntaxError."""
    ast.parse(INSTALLER.read_text(), feature_version=(3, 7))
