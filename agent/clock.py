"""Time as a port, plus the value objects for intervals and back-off.

The core never reads the system clock or sleeps: it gets a :class:`Clock`. The daemon
uses :class:`SystemClock`; simulations pass a clock of their own (the local world's
virtual or scaled clock), which decides what waiting means for it, so a fleet's hours run
in seconds.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Protocol


class TimeSource(Protocol):
    """Wall-clock time in epoch seconds, and a monotonic time for waiting.

    ``now()`` may jump either way (NTP corrections, a dead RTC battery); it dates events
    and the due-times stored in the ledger. ``monotonic()`` never goes back; every wait
    is measured on it.
    """

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class Clock(TimeSource, Protocol):
    """A time source that can also wait (the loops that sleep need one; the reconciler
    only reads the time)."""

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        """Wait up to ``seconds`` of this clock's time or until ``wake`` is set; True
        when woken."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        return wake.wait(max(0.0, seconds))


#: A wall-clock step smaller than this (seconds) is not treated as a jump.
CLOCK_JUMP_TOLERANCE = 30.0


class WallClockWatch:
    """Notices when the wall clock jumped: its change since the last look differs from
    the monotonic clock's by more than ``tolerance`` seconds."""

    def __init__(self, tolerance: float = CLOCK_JUMP_TOLERANCE) -> None:
        self.tolerance = tolerance
        self._last: tuple[float, float] | None = None

    def jump(self, wall: float, monotonic: float) -> float:
        """Seconds the wall clock jumped since the previous call (0 when it did not)."""
        last, self._last = self._last, (wall, monotonic)
        if last is None:
            return 0.0
        jumped = (wall - last[0]) - (monotonic - last[1])
        return jumped if abs(jumped) > self.tolerance else 0.0


def capped_wait(due: float, now: float, longest: float) -> float:
    """Seconds until ``due`` (epoch), never more than ``longest``: a due-time further away
    than any wait that could have set it was stored before the wall clock went back."""
    return max(0.0, min(due - now, longest))


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with full jitter: delay(n) ~ U(0, min(cap, base * factor**n)).

    ``floor`` keeps a minimum so a fleet never polls in a tight loop.
    """

    base: float
    cap: float
    factor: float = 2.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= self.base <= self.cap:
            raise ValueError("back-off needs 0 <= floor <= base <= cap")
        if self.factor < 1:
            raise ValueError("back-off factor must be >= 1")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay for the ``attempt``-th retry (0-based)."""
        return min(self.cap, self.base * self.factor ** max(0, min(attempt, 64)))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A jittered delay for the ``attempt``-th retry."""
        return max(self.floor, rng.uniform(0, self.ceiling(attempt)))


@dataclass(frozen=True)
class JitteredInterval:
    """A period with +/- ``jitter`` (fraction) spread, so a fleet does not act in step."""

    seconds: float
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.seconds <= 0 or not 0 <= self.jitter < 1:
            raise ValueError("interval needs seconds > 0 and 0 <= jitter < 1")

    def next(self, rng: random.Random) -> float:
        return self.seconds * rng.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True)
class CheckBudget:
    """The idle-check interval a fleet can afford: its devices share an account-wide
    budget of ``per_second`` checks, so each of ``fleet_size`` devices checks every
    ``fleet_size / per_second`` seconds, never more often than ``seconds``."""

    seconds: float
    jitter: float = 0.2
    fleet_size: int = 1
    per_second: float = 0.5

    def __post_init__(self) -> None:
        if self.fleet_size < 1 or self.per_second <= 0:
            raise ValueError("check budget needs fleet_size >= 1 and per_second > 0")

    @property
    def interval(self) -> JitteredInterval:
        """The jittered check interval this budget allows."""
        return JitteredInterval(max(self.seconds, self.fleet_size / self.per_second), self.jitter)


@dataclass(frozen=True)
class ThrottleAdaptation:
    """A multiplier of the check interval that adapts to throttling: ``grow``-fold on a
    throttled check (up to ``cap``), ``shrink``-fold on a successful one (down to
    ``floor``), so a fleet whose configured size is too small backs off by itself and
    creeps back slowly."""

    grow: float = 2.0
    shrink: float = 0.8
    floor: float = 1.0
    cap: float = 16.0

    def __post_init__(self) -> None:
        if not (self.grow >= 1 and 0 < self.shrink <= 1 and 0 < self.floor <= self.cap):
            raise ValueError("throttle adaptation needs grow >= 1, 0 < shrink <= 1, 0 < floor <= cap")

    def bounded(self, factor: float) -> float:
        """``factor`` within [floor, cap] (a stored value that is not a number is the floor)."""
        if not math.isfinite(factor):
            return self.floor
        return min(self.cap, max(self.floor, factor))

    def throttled(self, factor: float) -> float:
        """The factor after a throttled check."""
        return self.bounded(self.bounded(factor) * self.grow)

    def succeeded(self, factor: float) -> float:
        """The factor after a successful check."""
        return self.bounded(self.bounded(factor) * self.shrink)
