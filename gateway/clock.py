"""The process clock: real time, or real time shifted to start at a chosen instant.

``GATEWAY_CLOCK=<ISO-8601>`` makes the process believe it started at that instant and lets time
run forward from there, so years-old recorded feeds can be served as if live. The core never
reads a clock: it receives ``now`` from whoever holds one of these.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """UTC epoch seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ShiftedClock:
    """Reads ``start`` (epoch seconds) when constructed, then advances with the monotonic clock."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._origin = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._origin)


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, instant: float) -> None:
        self.instant = instant

    def now(self) -> float:
        return self.instant

    def advance(self, seconds: float) -> None:
        self.instant += seconds


def parse_instant(text: str) -> float:
    """ISO-8601 → epoch seconds. A value without offset is refused: it would be ambiguous."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"instant needs a UTC offset, e.g. 2023-11-07T17:05:00-08:00: {text!r}")
    return value.timestamp()


def clock_from_setting(value: str | None) -> Clock:
    return ShiftedClock(parse_instant(value)) if value else SystemClock()
