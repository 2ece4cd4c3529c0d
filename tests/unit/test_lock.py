"""The lock files agree with pyproject.toml, and the suite runs on the locked versions.

``requirements/agent.lock`` is what every device installs (scripts/publish puts exactly
these wheels into the wheelhouses); ``requirements/test.lock`` is what scripts/bootstrap
installs into .venv for the tests and CI. Both come from ``scripts/lock``.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the lock installs tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
AGENT_LOCK = ROOT / "requirements" / "agent.lock"
TEST_LOCK = ROOT / "requirements" / "test.lock"
BUILD_SYSTEM_IN = ROOT / "requirements" / "build-system.in"
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;\\]+)\s*(;(?P<marker>[^\\]+))?")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


@dataclass
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: int = 0
    via: list[str] = field(default_factory=list)

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def parse_lock(path: Path) -> list[Pin]:
    """The pins of a lock written by ``uv pip compile --generate-hashes``."""
    pins: list[Pin] = []
    for line in path.read_text().splitlines():
        if not line.strip() or (line.startswith("#")):
            continue
        if not line[0].isspace():
            found = _PIN.match(line)
            assert found, f"{path.name}: not a pinned requirement: {line!r}"
            marker = found["marker"]
            pins.append(
                Pin(
                    canonicalize_name(found["name"]),
                    found["version"],
                    Marker(marker.strip()) if marker else None,
                )
            )
            continue
        assert pins, f"{path.name}: an option before the first requirement: {line!r}"
        text = line.strip()
        pins[-1].hashes += len(_HASH.findall(text))
        if text.startswith("#"):
            pins[-1].via.append(text.lstrip("# ").removeprefix("via").strip())
    return pins


def _applying(pins: list[Pin]) -> dict[str, Pin]:
    """Name -> the pin whose marker holds for this interpreter (one at most)."""
    chosen: dict[str, Pin] = {}
    for pin in pins:
        if pin.applies():
            assert pin.name not in chosen, f"two pins of {pin.name} apply here"
            chosen[pin.name] = pin
    return chosen


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    loaded = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(loaded, dict)
    return loaded


def _requirements(lines: list[str]) -> list[Requirement]:
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def _assert_allowed(requirements: list[Requirement], pins: dict[str, Pin], lock: str) -> None:
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}: {requirement} from pyproject.toml is not locked"
        version = pins[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock}: {name}=={version} is outside {requirement}; run scripts/lock"
        )


def test_device_lock_pins_exactly_the_agents_dependencies(project: dict[str, Any]) -> None:
    """Every runtime dependency of pyproject.toml is pinned in agent.lock at a version its
    bounds allow, the lock's direct requirements are exactly those, and every entry is
    one version for all platforms and Pythons (no markers) with at least one hash."""
    pins = parse_lock(AGENT_LOCK)
    assert len({p.name for p in pins}) == len(pins), "one pin per package"
    for pin in pins:
        assert pin.marker is None, f"agent.lock: {pin.name} has a marker ({pin.marker})"
        assert pin.hashes >= 1, f"agent.lock: {pin.name} has no hash"
    dependencies = _requirements(project["dependencies"])
    _assert_allowed(dependencies, {p.name: p for p in pins}, "agent.lock")
    direct = {p.name for p in pins if any("pyproject.toml" in via for via in p.via)}
    assert direct == {canonicalize_name(r.name) for r in dependencies}


def test_test_lock_holds_the_test_tools_at_the_device_versions(project: dict[str, Any]) -> None:
    """test.lock pins the test extras and the build backend within their bounds (and no
    direct requirement pyproject.toml no longer has), every entry with hashes, and the agent's dependencies at exactly the agent.lock versions:
    what the suite tests is what devices get."""
    pins = parse_lock(TEST_LOCK)
    for pin in pins:
        assert pin.hashes >= 1, f"test.lock: {pin.name} has no hash"
    here = _applying(pins)
    wanted = [
        *_requirements(project["dependencies"]),
        *_requirements(project["optional-dependencies"]["test"]),
        *_requirements(BUILD_SYSTEM_IN.read_text().splitlines()),
    ]
    _assert_allowed(wanted, here, "test.lock")
    direct = {p.name for p in pins if any(v.endswith(("(pyproject.toml)", ".in")) for v in p.via)}
    assert direct == {canonicalize_name(r.name) for r in wanted}, "run scripts/lock"
    device = {pin.name: pin.version for pin in parse_lock(AGENT_LOCK)}
    for pin in pins:
        if pin.name in device:
            assert pin.marker is None and pin.version == device[pin.name], (
                f"test.lock has {pin.name}=={pin.version}, devices get {device[pin.name]}"
            )


def test_the_suite_runs_against_the_locked_versions() -> None:
    """Every package test.lock pins for this interpreter is installed at exactly that
    version in the environment running these tests (scripts/bootstrap installs from the
    lock with --require-hashes), and so is the agent itself."""
    wrong = {}
    for name, pin in _applying(parse_lock(TEST_LOCK)).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed != pin.version:
            wrong[name] = f"{installed} (locked {pin.version})"
    assert wrong == {}, "run scripts/bootstrap"
    assert (
        importlib.metadata.version("l4v-edge-agent")
        == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    )
