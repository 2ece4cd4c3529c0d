"""`plan` promises to be read-only: it writes nothing, not even the ledger."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcloud.stage import Stage

pytestmark = pytest.mark.slow


def agent(stage: Stage, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=stage.workdir, env=stage.agent_env(), capture_output=True, text=True,
        timeout=120, check=False,
    )


def snapshot(directory: Path) -> dict[str, str]:
    """Every file in ``directory`` with the hash of its bytes."""
    if not directory.exists():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    with Stage(tmp_path / "work") as started:
        yield started


def test_plan_writes_nothing_to_the_ledger(stage: Stage) -> None:
    """On a fresh device `plan` creates no ledger (before, it created one and cached the
    thing's ARN in it); after a rollout, the ledger file is byte for byte the same
    before and after `plan`, which still answers from it."""
    state = stage.workdir / "state"
    assert snapshot(state) == {}
    result = agent(stage, "plan")
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(state) == {}
    assert agent(stage, "once").returncode == 0
    assert stage.world is not None
    stage.world.lookoutvision.add_model("widgets", "TRAINED")
    before = snapshot(state)
    assert "agent.sqlite" in before
    result = agent(stage, "plan")
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads(result.stdout[result.stdout.index("{") :])
    assert (plan["deployedVersion"], plan["desiredVersion"]) == (1, 2)
    assert snapshot(state) == before
