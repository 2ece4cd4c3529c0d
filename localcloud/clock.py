"""One clock shared by every part of the local world.

All emulator time is read from a :class:`Clock`. Tests use :class:`VirtualClock` and
advance it, so an 8-hour token window or a 20-minute packaging job is checked in
milliseconds. The demo uses :class:`ScaledClock` so a 15-minute job takes seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Anything with ``now()`` in epoch seconds (float, UTC)."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class RealClock:
    """The machine's wall clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ScaledClock:
    """Wall clock running ``factor`` times faster than real time from its creation."""

    def __init__(self, factor: float, origin: float | None = None) -> None:
        if factor <= 0:
            raise ValueError("factor must be > 0")
        self.factor = factor
        self._real_origin = time.time()
        self._monotonic_origin = time.monotonic()
        self._origin = self._real_origin if origin is None else origin

    def now(self) -> float:
        return self._origin + (time.time() - self._real_origin) * self.factor

    def monotonic(self) -> float:
        return (time.monotonic() - self._monotonic_origin) * self.factor

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        """Wait ``seconds`` of scaled time (``factor`` times less real time) or until
        ``wake`` is set; True when woken."""
        return wake.wait(max(0.0, seconds) / self.factor)


class VirtualClock:
    """A clock that only moves when told to. Thread-safe."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """Virtual time never goes back, so it is its own monotonic clock."""
        return self.now()

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        """Virtual time moves only when told to: a waiter waits ``seconds`` of real time
        at most (its loop looks at the virtual clock again) or until ``wake`` is set."""
        return wake.wait(max(0.0, seconds))

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0) and return the new time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to ``when``; it must not be in the past."""
        with self._lock:
            if when < self._now:
                raise ValueError("a clock cannot go backwards")
            self._now = float(when)
