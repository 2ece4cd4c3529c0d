"""Wall-clock jump detection and capped waits (pure logic of ``agent.clock``)."""

from __future__ import annotations

import math
import random

import pytest

from agent.clock import CheckBudget, ThrottleAdaptation, WallClockWatch, capped_wait


def test_a_wall_clock_that_follows_the_monotonic_clock_never_jumped() -> None:
    """Both clocks moving together (small drift included) is not a jump."""
    watch = WallClockWatch(tolerance=30)
    assert watch.jump(1000.0, 5.0) == 0.0
    assert watch.jump(1060.0, 65.0) == 0.0
    assert watch.jump(1130.0, 125.0) == 0.0  # 10 s of drift: below the tolerance


@pytest.mark.parametrize("jump", [-3 * 86_400.0, 3 * 86_400.0])
def test_a_jump_either_way_is_measured_against_the_monotonic_clock(jump: float) -> None:
    """Three days back or forward between two looks is reported once, with its size."""
    watch = WallClockWatch(tolerance=30)
    watch.jump(1_000_000.0, 5.0)
    assert watch.jump(1_000_000.0 + 60 + jump, 65.0) == pytest.approx(jump)
    assert watch.jump(1_000_000.0 + 120 + jump, 125.0) == 0.0


def test_capped_wait_never_exceeds_the_longest_wait() -> None:
    """A due-time three days ahead (stored before the clock went back) waits at most
    ``longest``; one in the past is due now."""
    assert capped_wait(1000.0 + 3 * 86_400, 1000.0, 900.0) == 900.0
    assert capped_wait(1300.0, 1000.0, 900.0) == 300.0
    assert capped_wait(500.0, 1000.0, 900.0) == 0.0


def test_the_system_clock_waits_until_woken() -> None:
    """SystemClock.wait returns True at once when the event is set, False after the
    time (zero here) when it is not."""
    import threading

    from agent.clock import SystemClock

    wake = threading.Event()
    assert SystemClock().wait(0.0, wake) is False
    wake.set()
    assert SystemClock().wait(30.0, wake) is True


@pytest.mark.parametrize(
    ("seconds", "size", "per_second", "expected"),
    [(900, 1, 0.5, 900), (900, 450, 0.5, 900), (900, 1000, 0.5, 2000), (900, 100_000, 0.5, 200_000),
     (60, 100, 5, 60), (10, 10_000_000, 5, 2_000_000)],
)
def test_the_check_budget_stretches_the_interval_to_the_fleets_share(
    seconds: float, size: int, per_second: float, expected: float
) -> None:
    """Each device checks every max(checkIntervalSeconds, size / budget) seconds, so the
    fleet's idle checks together stay within the budget; jitter spreads them."""
    interval = CheckBudget(seconds, 0.2, fleet_size=size, per_second=per_second).interval
    assert interval.seconds == expected
    draws = [interval.next(random.Random(seed)) for seed in range(200)]
    assert expected * 0.8 <= min(draws) < max(draws) <= expected * 1.2


def test_a_check_budget_needs_a_fleet_and_a_positive_budget() -> None:
    with pytest.raises(ValueError, match="fleet_size"):
        CheckBudget(900, fleet_size=0)
    with pytest.raises(ValueError, match="per_second"):
        CheckBudget(900, per_second=0)


def test_throttling_doubles_the_factor_up_to_its_cap_and_success_shrinks_it_slowly() -> None:
    """Throttled: x2 up to 16; successful: x0.8 down to 1; a stored value out of range
    or not a number is brought back within [1, 16]."""
    adaptation = ThrottleAdaptation()
    factor = 1.0
    grown = []
    for _ in range(6):
        factor = adaptation.throttled(factor)
        grown.append(factor)
    assert grown == [2, 4, 8, 16, 16, 16]
    assert adaptation.succeeded(16) == pytest.approx(12.8)
    assert adaptation.succeeded(1.1) == 1.0
    assert [adaptation.bounded(v) for v in (0.0, -3.0, math.nan, math.inf, 99.0, 3.0)] == [1, 1, 1, 1, 16, 3]
    with pytest.raises(ValueError, match="grow"):
        ThrottleAdaptation(shrink=1.5)
