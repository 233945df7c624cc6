"""Service time: GTFS ``HH:MM:SS`` values (which may pass 24:00:00) and service-day origins.

A GTFS time is measured from "noon minus 12 h" of the service day in the agency's timezone, not
from midnight: on a daylight-saving change day local midnight and noon-minus-12h differ by one
hour, and only the latter gives the instants the spec intends.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

NO_TIME = -1
"""Sentinel in time arrays for an empty (untimed) value."""


def parse_time(value: str) -> int:
    """Seconds since the service-day origin for ``H:MM:SS`` / ``HH:MM:SS`` (hours may exceed 23).

    Raises ValueError on anything else.
    """
    text = value.strip()
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"not a GTFS time: {value!r}")
    hours, minutes, seconds = (int(p) for p in parts)
    if minutes > 59 or seconds > 59 or len(parts[1]) != 2 or len(parts[2]) != 2:
        raise ValueError(f"not a GTFS time: {value!r}")
    return hours * 3600 + minutes * 60 + seconds


def parse_time_column(
    codes: npt.NDArray[np.intp], uniques: list[str | None]
) -> tuple[npt.NDArray[np.int32], list[str]]:
    """Parse a factorized time column. Returns (seconds or NO_TIME, the unparseable values).

    Timetables repeat a few thousand distinct times over hundreds of thousands of rows, so
    parsing each distinct string once is what makes ingest fast.
    """
    bad: list[str] = []
    table = np.empty(len(uniques) + 1, dtype=np.int32)
    for i, raw in enumerate(uniques):
        if raw is None or raw != raw or not str(raw).strip():  # NaN / NA / empty
            table[i] = NO_TIME
            continue
        try:
            table[i] = parse_time(str(raw))
        except ValueError:
            bad.append(str(raw))
            table[i] = NO_TIME
    table[-1] = NO_TIME  # factorize gives -1 for missing values: index -1 hits this slot
    return table[codes], bad


@lru_cache(maxsize=4096)
def service_day_origin(date_ordinal: int, tz_name: str) -> int:
    """UTC epoch seconds of "noon minus 12 h" on the given service date in the timezone."""
    day = dt.date.fromordinal(date_ordinal)
    noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(tz_name))
    return int(noon.timestamp()) - 43200


def local_date_ordinal(instant: float, tz_name: str) -> int:
    """The local calendar date (as an ordinal) of a UTC instant in the timezone."""
    return dt.datetime.fromtimestamp(instant, ZoneInfo(tz_name)).date().toordinal()


def iso_local(instant: float, tz_name: str) -> str:
    """ISO-8601 with the agency's UTC offset at that instant, to the second."""
    return dt.datetime.fromtimestamp(int(instant), ZoneInfo(tz_name)).isoformat()


def parse_gtfs_date(value: str) -> dt.date:
    """``YYYYMMDD`` → date. Raises ValueError otherwise."""
    text = value.strip()
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        raise ValueError(f"not a GTFS date: {value!r}")
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
