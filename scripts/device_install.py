"""Install the agent on a device from its wheelhouse, offline; the recipe's Install step.

    python3 install.py WORK_PATH

scripts/publish copies this file into every wheelhouse artifact as ``install.py``, next
to ``wheelhouse.json`` (platform, Python versions, version), ``requirements.txt`` (the
lock plus the agent's wheel, every line with its sha256) and ``wheels/``. It

- refuses, with a message for the component log, a machine or Python version the
  wheelhouse has no wheels for, and a Python without ``venv``/``ensurepip``;
- installs with ``pip --no-index --find-links wheels --require-hashes`` into a new
  venv ``WORK_PATH/venvs/<key>``, where the key is the hash of ``requirements.txt`` and
  the interpreter, so no package index is contacted and nothing unlocked is installed;
- checks the result (``pip check``, the agent's version), writes a marker with the key
  and only then points the symlink ``WORK_PATH/venv`` at it with an atomic rename: a
  failed install leaves the previous venv in place and usable;
- does nothing when ``WORK_PATH/venv`` already is a complete venv for this key, and
  keeps the previous venv so that a rollback only switches the link back.

Only the standard library; it must run (at least far enough to refuse) on any python3.
Exit codes: 0 installed or already current, 1 the install failed, 3 unsupported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = "wheelhouse.json"
REQUIREMENTS = "requirements.txt"
MARKER = ".l4v-installed"
#: Python's names for the machine -> the wheelhouse's architecture.
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
PIP_TIMEOUT_SECONDS = 600


class InstallError(Exception):
    """The install cannot go on; the message goes to the component log."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def log(message: str) -> None:
    print(f"l4v.edge.Agent install: {message}", file=sys.stderr, flush=True)


def check_supported(manifest: dict) -> str:
    """This interpreter's ``X.Y`` if the wheelhouse has wheels for it and this machine."""
    machine = platform.machine()
    wanted = manifest["architecture"]
    if platform.system() != "Linux" or MACHINES.get(machine.lower()) != wanted:
        raise InstallError(
            f"this wheelhouse is for linux/{wanted}; this machine is "
            f"{platform.system()}/{machine}: deploy the component's manifest for this platform",
            3,
        )
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    supported = manifest["pythons"]
    if running not in supported:
        raise InstallError(
            f"Python {running} ({sys.executable}) is not supported: the wheelhouse has wheels "
            f"for Python {', '.join(supported)}. Install one of these with its venv module and "
            "make it the python3 on the PATH of the user that runs the component",
            3,
        )
    try:
        import ensurepip  # noqa: F401
        import venv  # noqa: F401
    except ImportError as exc:
        raise InstallError(
            f"Python {running} ({sys.executable}) has no venv/ensurepip module ({exc}); "
            f"install it (Debian and Ubuntu: apt-get install python{running}-venv)",
            3,
        ) from exc
    return running


def install_key(requirements: bytes, python_version: str) -> str:
    """What a venv is built from: the locked requirements and the interpreter."""
    digest = hashlib.sha256(requirements)
    digest.update(f"\0{python_version}\0{os.path.realpath(sys.executable)}".encode())
    return digest.hexdigest()[:20]


def is_complete(venv: Path, key: str) -> bool:
    try:
        return (venv / MARKER).read_text().strip() == key
    except OSError:
        return False


def run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=PIP_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        output = done.stdout.decode(errors="replace").strip()
        raise InstallError(f"{what} failed (exit {done.returncode}):\n{output}")


def build_venv(target: Path, manifest: dict) -> None:
    """A new venv at ``target`` with exactly the wheelhouse's locked requirements."""
    run([sys.executable, "-m", "venv", str(target)], f"creating the venv {target}")
    python = str(target / "bin" / "python")
    pip = [python, "-m", "pip", "--isolated", "--disable-pip-version-check", "--no-cache-dir"]
    run(
        [
            *pip,
            "install",
            "--no-index",
            "--find-links",
            str(HERE / "wheels"),
            "--require-hashes",
            "--only-binary=:all:",
            "-r",
            str(HERE / REQUIREMENTS),
        ],
        "pip install from the wheelhouse",
    )
    run([*pip, "check"], "pip check")
    expected = manifest["version"]
    probe = f"import agent, sys; sys.exit(agent.__version__ != {expected!r})"
    run([python, "-c", probe], f"importing agent {expected} from the new venv")


def switch(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` with one rename (a reader sees the old or the new)."""
    if link.exists() and not link.is_symlink():
        # The venv of a version from before wheelhouses (a real directory): moved into
        # venvs/ to make room for the link, and pruned there like any old venv.
        legacy = target.parent / "before-wheelhouses"
        shutil.rmtree(legacy, ignore_errors=True)
        link.rename(legacy)
    staged = link.with_name(f"{link.name}.switch-{os.getpid()}")
    if staged.is_symlink() or staged.exists():
        staged.unlink()
    staged.symlink_to(os.path.relpath(target, link.parent))
    os.replace(staged, link)


def current_target(link: Path) -> Path | None:
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


def prune(venvs: Path, keep: set[Path]) -> None:
    """Remove venvs other than the current and the previous one."""
    for entry in venvs.iterdir():
        if entry.resolve() not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def install(work: Path) -> str:
    """Make ``work/venv`` the venv of this wheelhouse; returns what was done."""
    manifest = json.loads((HERE / MANIFEST).read_text())
    python_version = check_supported(manifest)
    key = install_key((HERE / REQUIREMENTS).read_bytes(), python_version)
    link = work / "venv"
    venvs = work / "venvs"
    target = venvs / key
    previous = current_target(link)
    if previous == target.resolve() and is_complete(target, key):
        return f"{manifest['version']} already installed (lock {key}); nothing to do"
    venvs.mkdir(parents=True, exist_ok=True)
    if is_complete(target, key):
        action = f"switched back to the installed {manifest['version']} (lock {key})"
    else:
        shutil.rmtree(target, ignore_errors=True)  # the rest of an interrupted attempt
        try:
            build_venv(target, manifest)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        marker = target / f"{MARKER}.tmp"
        marker.write_text(key + "\n")
        os.replace(marker, target / MARKER)
        action = f"installed {manifest['version']} for Python {python_version} (lock {key})"
    switch(link, target)
    prune(venvs, {target.resolve(), *([previous] if previous else [])})
    return action


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        log("usage: install.py WORK_PATH")
        return 2
    try:
        log(install(Path(argv[0]).resolve()))
    except InstallError as exc:
        log(f"error: {exc}")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
