"""Build a ScheduleIndex from a gtfs-kit Feed (already validated by ``validate``).

Vectorised with numpy/pandas: per-row Python work over stop_times would dominate ingest time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from feeds.errors import Problem, StaticFeedRejected
from feeds.schedule.calendar import WEEKDAYS, CalendarException, CalendarRule, ServiceCalendar
from feeds.schedule.index import (
    Departures,
    Frequencies,
    Routes,
    ScheduleIndex,
    Shapes,
    Stops,
    StopTimes,
    Trips,
)
from feeds.schedule.service_time import NO_TIME, parse_gtfs_date, parse_time, parse_time_column
from feeds.schedule.strings import OptionalStrings, StringTable


def _opt_str(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    text = str(value)
    return text if text.strip() else None


def _str_list(df: pd.DataFrame, column: str) -> list[str | None]:
    if column not in df.columns:
        return [None] * len(df)
    return [_opt_str(v) for v in df[column].tolist()]


def _int_column(df: pd.DataFrame, column: str, default: int, dtype: Any) -> Any:
    if column not in df.columns:
        return np.full(len(df), default, dtype=dtype)
    return pd.to_numeric(df[column], errors="coerce").fillna(default).to_numpy(dtype=dtype)


def _index_of(ids: list[str], values: pd.Series) -> np.ndarray[Any, np.dtype[np.int32]]:
    """Positions of ``values`` in ``ids``; -1 where absent."""
    positions: np.ndarray[Any, np.dtype[np.int32]] = (
        pd.Index(ids, dtype=values.dtype).get_indexer(values).astype(np.int32))
    return positions


def build_calendar(feed: Any) -> tuple[list[str], ServiceCalendar]:
    cal = feed.calendar if feed.calendar is not None else pd.DataFrame()
    dates = feed.calendar_dates if feed.calendar_dates is not None else pd.DataFrame()
    service_ids: list[str] = []
    seen: dict[str, int] = {}
    for sid in [*cal.get("service_id", pd.Series(dtype=object)).tolist(),
                *dates.get("service_id", pd.Series(dtype=object)).tolist()]:
        sid = str(sid)
        if sid not in seen:
            seen[sid] = len(service_ids)
            service_ids.append(sid)
    rules = []
    for row in cal.itertuples(index=False):
        flags = tuple(str(getattr(row, day)).strip() == "1" for day in WEEKDAYS)
        rules.append(
            CalendarRule(
                service=seen[str(row.service_id)],
                weekdays=flags,  # type: ignore[arg-type]  # always seven flags
                start=parse_gtfs_date(str(row.start_date)),
                end=parse_gtfs_date(str(row.end_date)),
            )
        )
    exceptions = [
        CalendarException(
            service=seen[str(row.service_id)],
            date=parse_gtfs_date(str(row.date)),
            added=str(row.exception_type).strip() == "1",
        )
        for row in dates.itertuples(index=False)
    ]
    return service_ids, ServiceCalendar.build(len(service_ids), rules, exceptions)


def _sample(values: Any, n: int = 5) -> str:
    return ", ".join(str(v) for v in list(dict.fromkeys(values))[:n])


def build_index(feed: Any, feed_id: str, version: str,
                problems: list[Problem] | None = None) -> ScheduleIndex:
    """Index a feed. Problems found on the way (unknown trip/stop references, repeated
    stop_sequence, malformed times) are added to ``problems`` and raise StaticFeedRejected
    together with those the caller had already found."""
    problems = list(problems or [])
    agency = feed.agency
    timezone = str(agency["agency_timezone"].iloc[0]).strip()
    agency_name = str(agency["agency_name"].iloc[0]) if "agency_name" in agency.columns else ""

    # --- stops
    sdf = feed.stops
    stop_ids = [str(s) for s in sdf["stop_id"].tolist()]
    parent_ids = sdf["parent_station"] if "parent_station" in sdf.columns else pd.Series(
        [None] * len(sdf), dtype=object)
    parent = _index_of(stop_ids, parent_ids.fillna("\0"))
    stops = Stops(
        ids=StringTable.of(stop_ids),
        names=StringTable.of(n or "" for n in _str_list(sdf, "stop_name")),
        lat=pd.to_numeric(sdf.get("stop_lat"), errors="coerce").to_numpy(np.float64),
        lon=pd.to_numeric(sdf.get("stop_lon"), errors="coerce").to_numpy(np.float64),
        location_type=_int_column(sdf, "location_type", 0, np.int8),
        parent=parent,
        platform=OptionalStrings.of(_str_list(sdf, "platform_code")),
    )

    # --- routes
    rdf = feed.routes
    route_ids = [str(r) for r in rdf["route_id"].tolist()]
    routes = Routes(
        ids=StringTable.of(route_ids),
        short_names=OptionalStrings.of(_str_list(rdf, "route_short_name")),
        long_names=OptionalStrings.of(_str_list(rdf, "route_long_name")),
        types=_int_column(rdf, "route_type", 3, np.int32),
        agency=OptionalStrings.of(_str_list(rdf, "agency_id")),
    )

    # --- services and trips
    service_ids, calendar = build_calendar(feed)
    tdf = feed.trips
    shapes, shape_ids = _shapes(feed)
    trip_ids = [str(t) for t in tdf["trip_id"].tolist()]
    trips = Trips(
        ids=StringTable.of(trip_ids),
        route=_index_of(route_ids, tdf["route_id"]),
        service=_index_of(service_ids, tdf["service_id"]),
        headsign=OptionalStrings.of(_str_list(tdf, "trip_headsign")),
        direction=_int_column(tdf, "direction_id", -1, np.int8),
        shape=(_index_of(shape_ids, tdf["shape_id"].fillna("\0"))
               if "shape_id" in tdf.columns and shape_ids
               else np.full(len(tdf), -1, dtype=np.int32)),
    )

    # --- stop times, sorted by (trip, stop_sequence)
    st = feed.stop_times
    trip = _index_of(trip_ids, st["trip_id"])
    stop = _index_of(stop_ids, st["stop_id"])
    seq = pd.to_numeric(st["stop_sequence"], errors="coerce").fillna(-1).to_numpy(np.int32)
    arr_codes, arr_uniques = pd.factorize(st["arrival_time"])
    dep_codes, dep_uniques = pd.factorize(st["departure_time"])
    arrival, bad_arr = parse_time_column(arr_codes, list(arr_uniques))
    departure, bad_dep = parse_time_column(dep_codes, list(dep_uniques))
    for column, bad in (("arrival_time", bad_arr), ("departure_time", bad_dep)):
        if bad:
            problems.append(Problem("bad_time", f"{column} not H:MM:SS: {_sample(bad)}",
                                    "stop_times.txt", len(bad)))
    for code, what, positions in (("unknown_trip", "trip_id", trip < 0),
                                  ("unknown_stop", "stop_id", stop < 0)):
        if positions.any():
            values = st[what][positions]
            problems.append(Problem(code, f"{int(positions.sum())} row(s) reference unknown "
                                    f"{what}: {_sample(values)}", "stop_times.txt",
                                    int(positions.sum())))
    pickup = _int_column(st, "pickup_type", 0, np.int8)
    drop_off = _int_column(st, "drop_off_type", 0, np.int8)
    headsigns: list[str] = []
    if "stop_headsign" in st.columns:
        hs_codes, hs_uniques = pd.factorize(st["stop_headsign"])
        headsigns = [str(h) for h in hs_uniques]
        headsign = hs_codes.astype(np.int32)
    else:
        headsign = np.full(len(st), -1, dtype=np.int32)

    order = np.lexsort((seq, trip))
    trip, stop, seq = trip[order], stop[order], seq[order]
    arrival, departure = arrival[order], departure[order]
    pickup, drop_off, headsign = pickup[order], drop_off[order], headsign[order]
    repeated = (trip[1:] == trip[:-1]) & (seq[1:] == seq[:-1]) & (trip[1:] >= 0)
    if repeated.any():
        dup_trips = [trips.ids[t] for t in trip[1:][repeated][:50].tolist()]
        problems.append(Problem("duplicate_stop_sequence", f"{int(repeated.sum())} repeated "
                                f"(trip_id, stop_sequence): trips {_sample(dup_trips)}",
                                "stop_times.txt", int(repeated.sum())))
    if problems:
        raise StaticFeedRejected(problems)
    offsets = np.searchsorted(trip, np.arange(len(trips.ids) + 1)).astype(np.int64)
    stop_times = StopTimes(
        offsets=offsets, trip=trip, stop=stop, sequence=seq, arrival=arrival,
        departure=departure, pickup=pickup, drop_off=drop_off, headsign=headsign,
    )

    # --- departure events
    when = np.where(departure != NO_TIME, departure, arrival)
    is_last = np.ones(len(trip), dtype=bool)
    is_last[:-1] = trip[1:] != trip[:-1]
    boardable = (pickup != 1) & ~is_last & (when != NO_TIME)

    frequencies = _frequencies(feed, trips)
    freq_trip = np.zeros(len(trips.ids), dtype=bool)
    freq_trip[frequencies.trip] = True
    plain = boardable & ~freq_trip[trip]
    rows = [np.flatnonzero(plain).astype(np.int32)]
    times = [when[rows[0]]]
    starts = [np.full(len(rows[0]), -1, dtype=np.int32)]
    for f in range(len(frequencies.trip)):
        t = int(frequencies.trip[f])
        lo, hi = int(offsets[t]), int(offsets[t + 1])
        template = np.arange(lo, hi, dtype=np.int32)
        template = template[boardable[lo:hi]]
        if hi <= lo or len(template) == 0:
            continue
        first = int(when[lo]) if when[lo] != NO_TIME else int(when[template[0]])
        runs = np.arange(int(frequencies.start[f]), int(frequencies.end[f]),
                         max(int(frequencies.headway[f]), 1), dtype=np.int32)
        rows.append(np.tile(template, len(runs)))
        times.append((np.add.outer(runs - first, when[template])).ravel().astype(np.int32))
        starts.append(np.repeat(runs, len(template)).astype(np.int32))
    ev_row = np.concatenate(rows)
    ev_time = np.concatenate(times).astype(np.int32)
    ev_start = np.concatenate(starts)
    ev_stop = stop[ev_row]
    order = np.lexsort((ev_time, ev_stop))
    ev_stop = ev_stop[order]
    departures = Departures(
        offsets=np.searchsorted(ev_stop, np.arange(len(stop_ids) + 1)).astype(np.int64),
        time=ev_time[order],
        row=ev_row[order],
        run_start=ev_start[order],
    )
    max_time = int(ev_time.max()) if len(ev_time) else 0

    return ScheduleIndex(
        feed_id=feed_id, version=version, agency_name=agency_name, timezone=timezone,
        calendar=calendar, service_ids=service_ids, stops=stops, routes=routes, trips=trips,
        stop_times=stop_times, departures=departures, frequencies=frequencies, shapes=shapes,
        headsigns=headsigns, max_time=max_time,
    )


def _shapes(feed: Any) -> tuple[Shapes, list[str]]:
    sdf = getattr(feed, "shapes", None)
    if sdf is None or len(sdf) == 0 or not {"shape_id", "shape_pt_lat", "shape_pt_lon",
                                            "shape_pt_sequence"} <= set(sdf.columns):
        empty = np.zeros(0, dtype=np.float64)
        return Shapes(offsets=np.zeros(1, dtype=np.int64), lat=empty, lon=empty), []
    codes, uniques = pd.factorize(sdf["shape_id"])
    seq = pd.to_numeric(sdf["shape_pt_sequence"], errors="coerce").fillna(0).to_numpy(np.int64)
    order = np.lexsort((seq, codes))
    codes = codes[order]
    lat = pd.to_numeric(sdf["shape_pt_lat"], errors="coerce").to_numpy(np.float64)[order]
    lon = pd.to_numeric(sdf["shape_pt_lon"], errors="coerce").to_numpy(np.float64)[order]
    offsets = np.searchsorted(codes, np.arange(len(uniques) + 1)).astype(np.int64)
    return Shapes(offsets=offsets, lat=lat, lon=lon), [str(u) for u in uniques]


def _frequencies(feed: Any, trips: Trips) -> Frequencies:
    fdf = getattr(feed, "frequencies", None)
    if fdf is None or len(fdf) == 0:
        empty = np.zeros(0, dtype=np.int32)
        return Frequencies(trip=empty, start=empty, end=empty, headway=empty,
                           exact_times=np.zeros(0, dtype=np.int8))
    trip = _index_of(list(trips.ids), fdf["trip_id"])
    keep = trip >= 0
    fdf = fdf[keep]
    return Frequencies(
        trip=trip[keep],
        start=np.array([parse_time(str(v)) for v in fdf["start_time"]], dtype=np.int32),
        end=np.array([parse_time(str(v)) for v in fdf["end_time"]], dtype=np.int32),
        headway=pd.to_numeric(fdf["headway_secs"]).to_numpy(np.int32),
        exact_times=_int_column(fdf, "exact_times", 0, np.int8),
    )
