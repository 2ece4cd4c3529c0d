"""The fleet-coordination benchmark in quick mode: 200 real agents through a release, the
idle hour and a bad release, on the same code path as the 100,000-device run."""

from __future__ import annotations

import json
from pathlib import Path

from localcloud.bench.fleet_scale import ScaleScenario, main, run, targets


def test_two_hundred_coordinated_agents_release_confirm_and_halt_a_bad_version() -> None:
    """One job per platform, every device RUNNING and confirmed, a handful of group
    deployments, and the bad version halted: the devices that received it are at most
    the first canary wave of each platform plus, for a platform without a canary
    device, its second wave."""
    figures = run(ScaleScenario(200))
    release = figures["release"]
    assert release["jobsStarted"] == release["platforms"] == 4
    assert release["running"] == 200
    assert release["secondsToAllConfirmed"] is not None
    assert release["groupDeployments"] <= 12
    assert release["perDevice"]["lookoutvision"]["median"] == 0
    bad = figures["badRelease"]
    assert set(bad["phases"]) <= {"HALTED", "FAILED"}
    assert bad["devicesThatReceivedIt"] <= 0.11 * 200
    assert len(figures["runningSeries"]) == 200
    # Every target is evaluated on real figures (none raises on a missing key).
    assert all(isinstance(t.check(figures), bool) for t in targets(200))


def test_the_command_writes_json_and_a_plot_and_exits_by_the_targets(tmp_path: Path) -> None:
    """`scripts/bench_fleet_scale --sizes 100` writes fleet-scale.json and fleet-scale.png
    and exits 0 only when the JSON lists no missed target."""
    code = main(["--sizes", "100", "--baseline-max", "0", "--out", str(tmp_path)])
    document = json.loads((tmp_path / "fleet-scale.json").read_text())
    assert (tmp_path / "fleet-scale.png").stat().st_size > 10_000
    assert code == (1 if document["missed"] else 0)
    assert document["sizes"][0]["scenario"]["devices"] == 100
