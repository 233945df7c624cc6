"""Service days: which service_ids run on which dates (calendar.txt + calendar_dates.txt)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class CalendarRule:
    """One calendar.txt row: the service runs on the flagged weekdays from start to end."""

    service: int
    weekdays: tuple[bool, bool, bool, bool, bool, bool, bool]
    start: dt.date
    end: dt.date


@dataclass(frozen=True)
class CalendarException:
    """One calendar_dates.txt row: ``added`` True for exception_type 1, False for 2."""

    service: int
    date: dt.date
    added: bool


@dataclass(frozen=True)
class ServiceCalendar:
    """A day-by-service matrix: ``active[d, s]`` is True when service s runs on first + d days."""

    first_ordinal: int
    active: npt.NDArray[np.bool_]

    @property
    def last_ordinal(self) -> int:
        return self.first_ordinal + int(self.active.shape[0]) - 1

    def services_on(self, date_ordinal: int) -> npt.NDArray[np.bool_] | None:
        """The services running on a date, or None when the date is outside the feed."""
        row = date_ordinal - self.first_ordinal
        if row < 0 or row >= self.active.shape[0]:
            return None
        running: npt.NDArray[np.bool_] = self.active[row]
        return running

    def dates_of(self, service: int) -> list[dt.date]:
        rows = np.flatnonzero(self.active[:, service])
        return [dt.date.fromordinal(self.first_ordinal + int(r)) for r in rows]

    @classmethod
    def build(
        cls,
        n_services: int,
        rules: Sequence[CalendarRule],
        exceptions: Iterable[CalendarException],
    ) -> ServiceCalendar:
        exceptions = list(exceptions)
        ordinals = [r.start.toordinal() for r in rules] + [r.end.toordinal() for r in rules]
        ordinals += [e.date.toordinal() for e in exceptions]
        if not ordinals:
            empty = np.zeros((0, n_services), dtype=bool)
            return cls(first_ordinal=dt.date(2000, 1, 1).toordinal(), active=empty)
        first, last = min(ordinals), max(ordinals)
        n_days = last - first + 1
        active = np.zeros((n_days, n_services), dtype=bool)
        # date.weekday() of each row: Monday is 0, as in WEEKDAYS
        weekday = (np.arange(first, last + 1) - 1) % 7  # ordinal 1 (0001-01-01) was a Monday
        for rule in rules:
            lo = rule.start.toordinal() - first
            hi = rule.end.toordinal() - first + 1
            if hi <= lo:
                continue
            flags = np.array(rule.weekdays, dtype=bool)
            active[lo:hi, rule.service] |= flags[weekday[lo:hi]]
        for exc in exceptions:
            active[exc.date.toordinal() - first, exc.service] = exc.added
        return cls(first_ordinal=first, active=active)
