"""Query-parameter parsing: every malformed value becomes a 400 naming the parameter."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from gateway.clock import parse_instant
from gateway.errors import BadRequest


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest(f"{name}: {message}", code="bad_parameter", details={"parameter": name})


def get_int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, f"expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise _bad(name, f"must be between {lo} and {hi}, got {value}")
    return value


def get_float(query: Mapping[str, str], name: str, lo: float, hi: float) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, f"expected a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise _bad(name, f"must be between {lo} and {hi}, got {value}")
    return value


def get_bool(query: Mapping[str, str], name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _bad(name, f"expected true or false, got {raw!r}")


def get_instant(query: Mapping[str, str], name: str, default: float) -> float:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_instant(raw)
    except ValueError:
        raise _bad(name, "expected an ISO-8601 instant with offset, "
                   f"e.g. 2023-11-07T17:05:00-08:00, got {raw!r}") from None


def get_date(query: Mapping[str, str], name: str) -> dt.date | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise _bad(name, f"expected YYYY-MM-DD, got {raw!r}") from None


def get_latlon(query: Mapping[str, str], name: str) -> tuple[float, float] | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    parts = raw.split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise _bad(name, f"expected lat,lon, got {raw!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise _bad(name, f"lat,lon out of range: {raw!r}")
    return lat, lon


def get_str(query: Mapping[str, str], name: str, max_len: int = 200) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise _bad(name, f"longer than {max_len} characters")
    return raw


def get_bbox(query: Mapping[str, str], name: str) -> tuple[float, float, float, float] | None:
    """``minlon,minlat,maxlon,maxlat``."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        min_lon, min_lat, max_lon, max_lat = (float(p) for p in raw.split(","))
    except ValueError:
        raise _bad(name, f"expected minlon,minlat,maxlon,maxlat, got {raw!r}") from None
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise _bad(name, f"not a valid box: {raw!r}")
    return min_lon, min_lat, max_lon, max_lat
