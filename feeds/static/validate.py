"""Static GTFS validation: coded problems, found before a version may replace the serving one.

Two passes: ``check_source`` looks at the raw archive (is it a zip, are the required files
there, are they UTF-8 without NUL bytes) before gtfs-kit reads it; ``check_feed`` looks at the
tables gtfs-kit produced (required columns and values, references, dates, times, duplicates).

Problem codes (stable, documented in the README):
not_a_zip, missing_file, bad_encoding, contains_null, empty_file, malformed_csv, missing_column,
missing_value, bad_timezone, duplicate_id, duplicate_stop_sequence, unknown_trip, unknown_stop,
unknown_route, unknown_service, unknown_parent_station, bad_date, bad_time, bad_coordinates,
unsupported_flex.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from feeds.errors import Problem
from feeds.schedule.service_time import parse_gtfs_date, parse_time
from feeds.static.columns import blank

REQUIRED_FILES = ("agency.txt", "stops.txt", "routes.txt", "trips.txt", "stop_times.txt")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "agency": ("agency_name", "agency_url", "agency_timezone"),
    "stops": ("stop_id",),
    "routes": ("route_id", "route_type"),
    "trips": ("route_id", "service_id", "trip_id"),
    "stop_times": ("trip_id", "stop_sequence", "stop_id", "arrival_time", "departure_time"),
    "calendar": ("service_id", "monday", "tuesday", "wednesday", "thursday", "friday",
                 "saturday", "sunday", "start_date", "end_date"),
    "calendar_dates": ("service_id", "date", "exception_type"),
    "frequencies": ("trip_id", "start_time", "end_time", "headway_secs"),
}
_SAMPLE = 5
_ROW_CHECK_MAX_BYTES = 2_000_000
_LARGE_FILE_PREFIX = 256_000
STRUCTURAL = frozenset({"empty_file", "unsupported_flex", "missing_column", "missing_value",
                        "bad_date", "bad_timezone", "bad_time"})
"""Problems after which the tables cannot even be indexed to look for more."""


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each .txt file; of a file over _ROW_CHECK_MAX_BYTES only its start.

    A large file's encoding errors further in are still caught when gtfs-kit decodes it;
    reading all of it here would cost as much as the read itself.
    """
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.suffix == ".txt":
                with open(child, "rb") as fh:
                    yield child.name, _prefix(fh.read(_ROW_CHECK_MAX_BYTES + 1))
        return
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".txt") and "/" not in info.filename.strip("/"):
                with zf.open(info) as fh:
                    yield info.filename, _prefix(fh.read(_ROW_CHECK_MAX_BYTES + 1))


def _prefix(data: bytes) -> bytes:
    """A truncated read ends at a line boundary, so UTF-8 and row checks see whole lines."""
    if len(data) <= _ROW_CHECK_MAX_BYTES:
        return data
    return data[: data.rfind(b"\n", 0, _LARGE_FILE_PREFIX) + 1]


def _names(path: Path) -> set[str]:
    if path.is_dir():
        return {c.name for c in path.iterdir()}
    with zipfile.ZipFile(path) as zf:
        return {n for n in zf.namelist() if "/" not in n.strip("/")}


def check_source(path: Path) -> list[Problem]:
    """Problems visible in the raw files. An empty list means gtfs-kit may read it."""
    if not path.exists():
        return [Problem("missing_file", f"no such file or directory: {path}")]
    if path.is_file() and not zipfile.is_zipfile(path):
        return [Problem("not_a_zip", "the static feed is neither a zip archive nor a directory")]
    try:
        names = _names(path)
    except (zipfile.BadZipFile, OSError) as exc:
        return [Problem("not_a_zip", f"the archive cannot be read: {exc}")]
    problems: list[Problem] = []
    missing = [f for f in REQUIRED_FILES if f not in names]
    if "calendar.txt" not in names and "calendar_dates.txt" not in names:
        missing.append("calendar.txt or calendar_dates.txt")
    if missing:
        found = ", ".join(sorted(names)[:8]) or "nothing"
        problems.append(Problem("missing_file", f"required GTFS files missing: "
                                f"{', '.join(missing)} (found: {found})"))
        return problems
    for name, data in _members(path):
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            problems.append(Problem("bad_encoding", "UTF-16 text; GTFS files must be UTF-8", name))
            continue
        if b"\x00" in data:
            problems.append(Problem("contains_null", "the file contains NUL bytes", name))
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem("bad_encoding",
                                    f"invalid UTF-8 at byte {exc.start}; GTFS files must be UTF-8",
                                    name))
            continue
        if name in REQUIRED_FILES and not data.strip(b"\xef\xbb\xbf \r\n\t"):
            problems.append(Problem("empty_file", "a required file is empty", name))
        else:
            problems.extend(_ragged_rows(name, data))
    return problems


def _ragged_rows(name: str, data: bytes) -> list[Problem]:
    """Rows with fewer or more fields than the header (pandas pads short rows silently).

    Only for files up to a few MB: big ones (stop_times, shapes) are left to the CSV parser,
    which still refuses rows with too many fields.
    """
    rows = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    header = next(rows, None)
    if header is None:
        return []
    bad = [i for i, row in enumerate(rows, start=2) if row and len(row) != len(header)]
    if not bad:
        return []
    return [Problem("malformed_csv", f"{len(bad)} row(s) whose field count differs from the "
                    f"header's {len(header)} (first at line {bad[0]})", name, len(bad))]


def _table(feed: Any, name: str) -> pd.DataFrame | None:
    df = getattr(feed, name, None)
    return df if isinstance(df, pd.DataFrame) else None


def _sample(values: Any) -> str:
    items = [str(v) for v in list(dict.fromkeys(values))[:_SAMPLE]]
    return ", ".join(items)


def check_feed(feed: Any) -> list[Problem]:
    """Problems in the tables gtfs-kit read. Any problem here refuses the version."""
    problems: list[Problem] = []
    for table in ("agency", "stops", "routes", "trips", "stop_times"):
        df = _table(feed, table)
        if df is None or len(df) == 0:
            problems.append(Problem("empty_file", f"{table}.txt has no rows", f"{table}.txt"))
    if problems:
        return problems

    st = _table(feed, "stop_times")
    assert st is not None
    flex_columns = {"location_id", "location_group_id"} & set(st.columns)
    if flex_columns and ("stop_id" not in st.columns or blank(st["stop_id"]).any()):
        return [Problem("unsupported_flex", "stop_times use GTFS-Flex locations instead of "
                        "stop_id; flexible services are not supported", "stop_times.txt")]

    for table, columns in REQUIRED_COLUMNS.items():
        df = _table(feed, table)
        if df is None:
            continue
        absent = [c for c in columns if c not in df.columns]
        if absent:
            problems.append(Problem("missing_column", f"required column(s) missing: "
                                    f"{', '.join(absent)}", f"{table}.txt"))
            continue
        for column in columns:
            if table == "stop_times" and column in ("arrival_time", "departure_time"):
                continue  # untimed stops are allowed; checked below
            empty = blank(df[column])
            if empty.any():
                problems.append(Problem("missing_value", f"{int(empty.sum())} row(s) without "
                                        f"{column}", f"{table}.txt", int(empty.sum())))
    if problems:
        return problems

    agency = _table(feed, "agency")
    assert agency is not None
    for tz in agency["agency_timezone"].astype(str).str.strip().unique():
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem("bad_timezone", f"unknown agency_timezone {tz!r}",
                                    "agency.txt"))

    stops = _table(feed, "stops")
    routes = _table(feed, "routes")
    trips = _table(feed, "trips")
    assert stops is not None and routes is not None and trips is not None
    for df, key, file in ((stops, "stop_id", "stops.txt"), (routes, "route_id", "routes.txt"),
                          (trips, "trip_id", "trips.txt")):
        dup = df[key][df[key].duplicated()]
        if len(dup):
            problems.append(Problem("duplicate_id", f"{len(dup)} duplicate {key}(s): "
                                    f"{_sample(dup)}", file, len(dup)))
    def refs(child: pd.Series, parent: pd.Series, code: str, what: str, file: str) -> None:
        bad = child[~child.isin(parent)]
        if len(bad):
            problems.append(Problem(code, f"{len(bad)} row(s) reference unknown {what}: "
                                    f"{_sample(bad)}", file, len(bad)))

    # stop_times' own references, sequences and times are checked by build_index, which
    # computes the same row indexes anyway: doing it twice was a third of ingest time.
    refs(trips["route_id"], routes["route_id"], "unknown_route", "route_id", "trips.txt")
    services = pd.concat([
        df["service_id"] for df in (_table(feed, "calendar"), _table(feed, "calendar_dates"))
        if df is not None
    ]) if (_table(feed, "calendar") is not None or _table(feed, "calendar_dates") is not None) \
        else pd.Series(dtype=object)
    refs(trips["service_id"], services, "unknown_service", "service_id", "trips.txt")
    if "parent_station" in stops.columns:
        parents = stops["parent_station"].dropna()
        parents = parents[parents.astype(str).str.strip() != ""]
        refs(parents, stops["stop_id"], "unknown_parent_station", "parent_station", "stops.txt")

    for table, columns in (("calendar", ("start_date", "end_date")), ("calendar_dates", ("date",))):
        df = _table(feed, table)
        if df is None:
            continue
        for column in columns:
            bad = [v for v in df[column].astype(str).unique() if not _is_date(v)]
            if bad:
                problems.append(Problem("bad_date", f"{column} not YYYYMMDD: {_sample(bad)}",
                                        f"{table}.txt", len(bad)))

    freq = _table(feed, "frequencies")
    if freq is not None and len(freq):
        bad = [v for c in ("start_time", "end_time") for v in freq[c].dropna().unique()
               if not _is_time(str(v))]
        if bad:
            problems.append(Problem("bad_time", f"frequency times not H:MM:SS: {_sample(bad)}",
                                    "frequencies.txt", len(bad)))

    lat = pd.to_numeric(stops.get("stop_lat"), errors="coerce")
    lon = pd.to_numeric(stops.get("stop_lon"), errors="coerce")
    loc = pd.to_numeric(stops.get("location_type", pd.Series(0, index=stops.index)),
                        errors="coerce").fillna(0)
    needs_position = loc.isin([0, 1, 2])
    bad_pos = needs_position & ~(lat.between(-90, 90) & lon.between(-180, 180))
    if bad_pos.any():
        problems.append(Problem("bad_coordinates", f"{int(bad_pos.sum())} stop(s) without a valid "
                                f"stop_lat/stop_lon: {_sample(stops['stop_id'][bad_pos])}",
                                "stops.txt", int(bad_pos.sum())))
    return problems


def _is_date(value: str) -> bool:
    try:
        parse_gtfs_date(value)
    except ValueError:
        return False
    return True


def _is_time(value: str) -> bool:
    try:
        parse_time(value)
    except ValueError:
        return False
    return True
