"""An unusable stateDir, as a user meets it: the agent process exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("where", ["file", "proc"])
def test_an_unusable_state_dir_exits_2_with_one_line(tmp_path: Path, where: str) -> None:
    """`run` with stateDir pointing at a file, or somewhere under /proc, stops at once
    with exit code 2 and a single stderr line naming stateDir (no traceback)."""
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("x")
    state_dir = str(blocker) if where == "file" else "/proc/l4v-edge-agent-state"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "thingName": "dev-1", "region": "us-east-1", "projectName": "widgets",
        "s3Bucket": "l4v-models", "stateDir": state_dir, "reporting": {"transport": "none"},
    }))
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # Named by the start-up check (the value quoted) or by the ledger itself.
    assert lines[0].startswith("l4v-edge-agent: stateDir: "), lines
    assert state_dir in lines[0] and "cannot hold the ledger: " in lines[0], lines
