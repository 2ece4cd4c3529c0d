"""The fleet benchmark in quick mode (scripts/bench_fleet --devices 50), in-process."""

from __future__ import annotations

import json
from pathlib import Path

from agent.aws.session import AwsClients
from localcloud.bench import fleet as bench


def test_quick_fleet_benchmark_writes_figures_and_the_agent_shares_one_job_per_platform(
    tmp_path: Path,
) -> None:
    """Scenario: 50 real agents (20 Jetson Xavier, 15 x86_64+T4, 10 ARM64 CPU, 5 x86_64
    CPU) and then 50 naive baseline agents, each on a fresh local world on the virtual
    clock: one model release, 15 simulated minutes of packaging, the 5 requests/s
    Lookout for Vision quota and 5 % random 5xx answers from Lookout for Vision and
    Greengrass. The bench writes fleet.json and fleet.png; the agent starts one packaging
    job per platform, fails no rollout and brings every device to RUNNING, while the
    baseline starts a job per device."""
    out = tmp_path / "results"
    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> int:
            lines.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    code = bench.main(["--devices", "50", "--out", str(out)], stdout=Lines())  # type: ignore[arg-type]

    result = json.loads((out / "fleet.json").read_text())
    assert (out / "fleet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["scenario"]["mix"] == {
        "jetson-xavier": 20, "x86-64-nvidia-sm75": 15, "arm64-cpu": 10, "x86-64-cpu": 5,
    }
    agent, baseline = result["agent"], result["baseline"]
    assert agent["devices"] == baseline["devices"] == 50
    assert agent["packagingJobs"] == 4
    assert agent["failedRollouts"] == 0
    assert agent["devicesRunning"] == 50
    assert agent["deploymentsCreated"] == 50
    assert agent["secondsToRunning"]["p100"] is not None
    assert agent["peakLookoutvisionServedPerSecond"] <= 5  # the emulator enforces the quota
    assert baseline["packagingJobs"] == 50
    assert result["ratioAgentToBaseline"]["packaging jobs started"] == 4 / 50
    assert {t["key"] for t in result["targets"]} == {
        "packagingJobs", "failedRollouts", "throttledShare", "deployDelayP95",
        "secondsTo100", "lfvCallsMedian",
    }
    assert code == (0 if all(t["met"] for t in result["targets"]) else 1)
    text = "".join(lines)
    assert "packaging jobs started" in text and "awsMaxAttempts=1" in text


def test_aws_max_attempts_counts_the_first_request() -> None:
    """awsMaxAttempts 1 (what the bench and the simulations use) means one request and
    no botocore retry sleeping in real time: botocore's own ``max_attempts`` key would
    count retries only."""
    clients = AwsClients(region="us-east-1", endpoints={"iot": "http://127.0.0.1:9"}, max_attempts=1)
    assert clients.client("iot").meta.config.retries["total_max_attempts"] == 1
