"""Time as a port, plus the value objects for intervals and back-off.

The reconciler never reads the system clock: it gets a :class:`Clock`. The daemon uses
:class:`SystemClock`; simulations pass the local world's virtual clock (anything with
``now()``), so a fleet's hours run in seconds.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in epoch seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> float:
        return time.time()


def wait(clock: Clock, seconds: float, wake: threading.Event) -> bool:
    """Wait up to ``seconds`` of ``clock`` time or until ``wake`` is set.

    Returns True when woken. A clock with a ``factor`` (a scaled clock) waits
    proportionally less real time.
    """
    factor = float(getattr(clock, "factor", 1.0))
    return wake.wait(max(0.0, seconds) / factor)


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
