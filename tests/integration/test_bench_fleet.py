"""The fleet benchmark in quick mode (scripts/bench_fleet --devices 50), in-process."""

from __future__ import annotations

import json
from pathlib import Path

from agent.aws.session import AwsClients
from localcloud.bench import fleet as bench


def test_quick_fleet_benchmark_compares_the_agent_with_both_baselines_per_service(
    tmp_path: Path,
) -> None:
    """Scenario: 50 real agents (20 Jetson Xavier, 15 x86_64+T4, 10 ARM64 CPU, 5 x86_64
    CPU), then 50 naive baseline agents, then 50 per-platform baseline agents, each on a
    fresh local world on the virtual clock: one model release, 15 simulated minutes of
    packaging, the 5 requests/s Lookout for Vision quota, the emulated Greengrass quotas
    and 5 % random 5xx answers from Lookout for Vision and Greengrass. The bench writes
    fleet.json and fleet.png; the agent and the per-platform baseline start one packaging
    job per platform and the naive baseline one per device; every contender brings every
    device to RUNNING; the throttled shares are reported per service (and per operation)
    and agree with the call counts; the throttling targets are per service."""
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
    assert result["scenario"]["greengrassRateQuotasPerSecond"] == {
        "CreateComponentVersion": 1.0, "other operations, combined": 30.0,
    }
    agent, naive, strong = result["agent"], result["baseline"], result["platformBaseline"]
    assert agent["devices"] == naive["devices"] == strong["devices"] == 50
    assert agent["packagingJobs"] == strong["packagingJobs"] == 4
    assert naive["packagingJobs"] == 50
    for figures in (agent, naive, strong):
        assert figures["failedRollouts"] == 0
        assert figures["devicesRunning"] == 50
        assert figures["deploymentsCreated"] == 50
        assert figures["secondsToRunning"]["p100"] is not None
        assert figures["peakLookoutvisionServedPerSecond"] <= 5  # the emulator enforces the quota
        by_service = figures["throttledShareByService"]
        assert set(by_service) == {"lookoutvision", "greengrass"}
        lfv_throttled = sum(
            n for key, n in figures["throttledPerOperation"].items()
            if key.startswith("lookoutvision:")
        )
        assert by_service["lookoutvision"] == lfv_throttled / figures["lookoutvisionCalls"]
        for key, share in figures["throttledSharePerOperation"].items():
            assert share == figures["throttledPerOperation"][key] / figures["callsPerOperation"][key]
        assert figures["lookoutvisionCallsPerDevice"]["mean"] is not None
    # Sharing a job per platform costs the per-platform baseline far fewer L4V calls.
    assert strong["lookoutvisionCalls"] < naive["lookoutvisionCalls"]
    assert result["ratioAgentToBaseline"]["packaging jobs started"] == 4 / 50
    assert result["ratioAgentToPlatformBaseline"]["packaging jobs started"] == 1.0
    targets = {t["key"]: t for t in result["targets"]}
    assert set(targets) == {
        "packagingJobs", "jobsPerPlatform", "failedRollouts", "lfvThrottledShare",
        "ggThrottledShare", "deployDelayP95", "secondsTo100", "lfvCallsMedian",
    }
    assert agent["packagingJobsPerPlatform"] == {
        "jetson-xavier": 1, "x86-64-nvidia-sm75": 1, "arm64-cpu": 1, "x86-64-cpu": 1,
    }
    assert naive["packagingJobsPerPlatform"] == result["scenario"]["mix"]
    assert targets["lfvThrottledShare"]["value"] == agent["throttledShareByService"]["lookoutvision"]
    assert targets["ggThrottledShare"]["value"] == agent["throttledShareByService"]["greengrass"]
    assert code == (0 if all(t["met"] for t in targets.values()) else 1)
    text = "".join(lines)
    assert "packaging jobs started" in text and "awsMaxAttempts=1" in text
    assert "per-plat." in text and "throttled share, L4V calls" in text
    assert "throttled share, Greengrass calls" in text


class _Lines:
    """A text stream that keeps what the bench prints."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(self.parts)


def test_quick_fleet_benchmark_with_the_sagemaker_backend(tmp_path: Path) -> None:
    """Scenario: scripts/bench_fleet --backend sagemaker --devices 50 --sagemaker-quota 3:
    50 real agents with the SageMaker backend on a fresh local world (a model package
    group, a Neo role, Neo compiling for 15 simulated minutes, an assumed SageMaker quota
    of 3 requests/s that the emulator enforces, the Greengrass quotas, 5 % random 5xx
    from SageMaker and Greengrass), one Approved package version released. The agents
    start exactly one Neo compilation job per platform, every device runs the new
    version, the figures are SageMaker's (calls per device, throttled share per service),
    the baselines are skipped and the output says so, and the exit code follows the
    targets."""
    out = tmp_path / "results"
    printed = _Lines()

    code = bench.main(
        ["--backend", "sagemaker", "--devices", "50", "--sagemaker-quota", "3", "--out", str(out)],
        stdout=printed,  # type: ignore[arg-type]
    )

    result = json.loads((out / "fleet-sagemaker.json").read_text())
    assert (out / "fleet-sagemaker.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "fleet.json").exists()
    scenario = result["scenario"]
    assert scenario["backend"] == "sagemaker"
    assert scenario["sagemakerQuotaPerSecond"] == 3
    assert "assumed" in scenario["sagemakerQuotaNote"]
    assert result["baseline"] is None and result["platformBaseline"] is None
    assert "Lookout for Vision only" in result["baselinesSkipped"]
    agent = result["agent"]
    assert agent["backend"] == "sagemaker"
    assert agent["packagingJobsPerPlatform"] == {
        "jetson-xavier": 1, "x86-64-nvidia-sm75": 1, "arm64-cpu": 1, "x86-64-cpu": 1,
    }
    assert agent["packagingJobsSucceeded"] == 4
    assert agent["failedRollouts"] == 0
    assert agent["devicesRunning"] == agent["deploymentsCreated"] == 50
    assert "lookoutvisionCalls" not in agent and "lookoutvisionCallsPerDevice" not in agent
    assert agent["callsPerOperation"].get("lookoutvision:ListModels") is None
    assert agent["peakSagemakerServedPerSecond"] <= 3  # the emulator enforces the quota
    assert set(agent["throttledShareByService"]) == {"sagemaker", "greengrass"}
    sm_throttled = sum(
        n for key, n in agent["throttledPerOperation"].items() if key.startswith("sagemaker:")
    )
    assert agent["throttledShareByService"]["sagemaker"] == sm_throttled / agent["sagemakerCalls"]
    assert agent["sagemakerCallsPerDevice"]["median"] >= 1
    assert agent["greengrassCallsPerDevice"]["median"] >= 1
    # Every device's delay is measured from its platform's Neo job's end.
    assert agent["deployDelayAfterSucceeded"]["devices"] == 50
    assert agent["secondsToRunning"]["p100"] is not None
    targets = {t["key"]: t for t in result["targets"]}
    assert set(targets) == {
        "packagingJobs", "jobsPerPlatform", "failedRollouts", "smThrottledShare",
        "ggThrottledShare", "deployDelayP95", "secondsTo100", "smCallsMedian",
    }
    assert targets["jobsPerPlatform"]["met"]
    assert code == (0 if all(t["met"] for t in targets.values()) else 1)
    text = printed.text
    assert "baselines skipped for the SageMaker backend" in text
    assert "SageMaker quota 3 req/s (assumed)" in text
    assert "throttled share, SageMaker calls" in text and "per-plat." not in text
    assert ("all agent targets met" in text) == (code == 0)


def test_aws_max_attempts_counts_the_first_request() -> None:
    """awsMaxAttempts 1 (what the bench and the simulations use) means one request and
    no botocore retry sleeping in real time: botocore's own ``max_attempts`` key would
    count retries only."""
    clients = AwsClients(region="us-east-1", endpoints={"iot": "http://127.0.0.1:9"}, max_attempts=1)
    assert clients.client("iot").meta.config.retries["total_max_attempts"] == 1


def test_agent_only_bench_on_memory_stores_says_what_ran_and_what_it_cost(tmp_path: Path) -> None:
    """Scenario: scripts/bench_fleet --devices 20 --agent-only --ledger memory: the agents
    run alone on MemoryStore instead of their SQLite ledgers, every device still runs the
    release through the agent's own decisions and AWS calls, the output and fleet.json say
    which store ran and that the baselines were skipped, and they report the bench's wall
    time, CPU time and peak RSS."""
    out = tmp_path / "results"
    printed = _Lines()

    bench.main(
        ["--devices", "20", "--agent-only", "--ledger", "memory", "--out", str(out)],
        stdout=printed,  # type: ignore[arg-type]
    )

    result = json.loads((out / "fleet.json").read_text())
    assert result["baseline"] is None and result["platformBaseline"] is None
    assert result["baselinesSkipped"] == "baselines skipped (--agent-only)"
    assert result["scenario"]["agentRolloutStore"].startswith("memory (MemoryStore")
    assert result["agent"]["devicesRunning"] == 20
    assert result["agent"]["packagingJobs"] == 4
    assert result["peakRssMegabytes"] > 0 and result["cpuSeconds"] > 0
    text = printed.text
    assert "agent rollout store: memory (MemoryStore, not the agent's SQLite ledger" in text
    assert "baselines skipped (--agent-only)" in text and "per-plat." not in text
    assert "peak RSS" in text and "CPU" in text


def test_auto_store_switches_to_memory_above_the_threshold() -> None:
    """The default store is each agent's SQLite ledger up to MEMORY_STORE_ABOVE devices and
    MemoryStore above it; an explicit choice wins."""
    at = bench.Scenario(mix=bench.scaled_mix(bench.MEMORY_STORE_ABOVE))
    above = bench.Scenario(mix=bench.scaled_mix(bench.MEMORY_STORE_ABOVE + 1))
    assert (at.store, above.store) == ("sqlite", "memory")
    assert bench.Scenario(mix=above.mix, ledger="sqlite").store == "sqlite"


def test_agent_deadline_bounds_the_simulated_run(tmp_path: Path) -> None:
    """Scenario: --agent-deadline-minutes 5 with 15 minutes of packaging: the agents stop
    at the deadline in simulated time, no device runs the release yet, and the bench
    reports the miss (exit code 1)."""
    out = tmp_path / "results"

    code = bench.main(
        ["--devices", "8", "--agent-only", "--agent-deadline-minutes", "5", "--out", str(out)],
        stdout=_Lines(),  # type: ignore[arg-type]
    )

    result = json.loads((out / "fleet.json").read_text())
    assert result["scenario"]["deadlineSeconds"]["agent"] == 300
    assert 0 < result["agent"]["simulatedSeconds"] <= 300 + 60
    assert result["agent"]["devicesRunning"] == 0
    assert code == 1
