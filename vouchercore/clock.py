"""Clocks: the only source of "now" for the engine.

The engine reads its injected clock exactly once per operation. :class:`SystemClock` is the
default; :class:`FakeClock` moves only when told to (and only forward), which makes expiry,
start and expiration boundaries testable to the microsecond and whole runs reproducible.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta

from vouchercore.domain.instants import MAX_US, from_us, to_us

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(ABC):
    """Where the engine gets the current instant.

    Subclasses implement :meth:`now`; :meth:`now_us` may be overridden with a faster path.
    """

    @abstractmethod
    def now(self) -> datetime:
        """The current instant, an aware UTC datetime."""

    def now_us(self) -> int:
        """The current instant in microseconds since the Unix epoch (UTC)."""
        return to_us(self.now(), "Clock.now()")


class SystemClock(Clock):
    """The machine's wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def now_us(self) -> int:
        return time.time_ns() // 1000


class FakeClock(Clock):
    """A clock that moves only when told to, and never backwards. Thread-safe.

    Args:
        start: the initial instant (aware); default 2026-01-01T00:00:00Z.

    Example:
        >>> clock = FakeClock()
        >>> clock.advance(seconds=30)
        >>> clock.now().isoformat()
        '2026-01-01T00:00:30+00:00'
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._us = to_us(start, "start") if start is not None else to_us(_DEFAULT_START)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return from_us(self._us)

    def now_us(self) -> int:
        return self._us

    def advance(
        self,
        delta: timedelta | None = None,
        *,
        days: int = 0,
        hours: int = 0,
        minutes: int = 0,
        seconds: int = 0,
        milliseconds: int = 0,
        microseconds: int = 0,
    ) -> None:
        """Move forward by *delta* plus the given units (all must add up to ≥ 0)."""
        step = delta if delta is not None else timedelta(0)
        step += timedelta(
            days=days,
            hours=hours,
            minutes=minutes,
            seconds=seconds,
            milliseconds=milliseconds,
            microseconds=microseconds,
        )
        step_us = step // timedelta(microseconds=1)
        if step_us < 0:
            raise ValueError("FakeClock moves only forward")
        with self._lock:
            if self._us + step_us > MAX_US:
                raise ValueError("FakeClock cannot move past datetime.max")
            self._us += step_us

    def advance_us(self, microseconds: int) -> None:
        """Move forward by an exact number of microseconds (≥ 0)."""
        self.advance(microseconds=microseconds)

    def set(self, instant: datetime) -> None:
        """Jump to *instant*, which must not be earlier than now."""
        target = to_us(instant, "instant")
        with self._lock:
            if target < self._us:
                raise ValueError("FakeClock moves only forward")
            self._us = target


_DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
