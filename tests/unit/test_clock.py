"""Wall-clock jump detection and capped waits (pure logic of ``agent.clock``)."""

from __future__ import annotations

import pytest

from agent.clock import WallClockWatch, capped_wait


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
