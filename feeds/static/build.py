"""Build a ScheduleIndex from a gtfs-kit Feed (already validated by ``validate``).

Vectorised with numpy/pandas: per-row Python work over stop_times would dominate ingest time.
The big columns arrive as categories (``reader``) and are read through ``columns``: each
distinct id or time is looked up or parsed once, rows are taken by their codes. Memory: one
int32 (or int8) array per stop_times column, the table released as soon as they are out, and
sorted copies made one column at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
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
from feeds.static.columns import codes_and_values, int_column, positions, str_list

I32 = npt.NDArray[np.int32]


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
                problems: list[Problem] | None = None, *, release: bool = False) -> ScheduleIndex:
    """Index a feed. Problems found on the way (unknown trip/stop references, repeated
    stop_sequence, malformed times) are added to ``problems`` and raise StaticFeedRejected
    together with those the caller had already found.

    ``release``: the caller is done with ``feed``; its big tables (stop_times, shapes) are
    dropped from it as soon as their columns are taken, so that their memory goes back before
    the sorts that follow need theirs."""
    problems = list(problems or [])
    agency = feed.agency
    timezone = str(agency["agency_timezone"].iloc[0]).strip()
    agency_name = str(agency["agency_name"].iloc[0]) if "agency_name" in agency.columns else ""

    # --- stops
    sdf = feed.stops
    stop_ids = [str(s) for s in sdf["stop_id"].tolist()]
    stops = Stops(
        ids=StringTable.of(stop_ids),
        names=StringTable.of(n or "" for n in str_list(sdf, "stop_name")),
        lat=pd.to_numeric(sdf.get("stop_lat"), errors="coerce").to_numpy(np.float64),
        lon=pd.to_numeric(sdf.get("stop_lon"), errors="coerce").to_numpy(np.float64),
        location_type=int_column(sdf, "location_type", 0, np.int8),
        parent=(positions(stop_ids, sdf["parent_station"]) if "parent_station" in sdf.columns
                else np.full(len(sdf), -1, dtype=np.int32)),
        platform=OptionalStrings.of(str_list(sdf, "platform_code")),
    )

    # --- routes
    rdf = feed.routes
    route_ids = [str(r) for r in rdf["route_id"].tolist()]
    routes = Routes(
        ids=StringTable.of(route_ids),
        short_names=OptionalStrings.of(str_list(rdf, "route_short_name")),
        long_names=OptionalStrings.of(str_list(rdf, "route_long_name")),
        types=int_column(rdf, "route_type", 3, np.int32),
        agency=OptionalStrings.of(str_list(rdf, "agency_id")),
    )

    # --- services and trips
    service_ids, calendar = build_calendar(feed)
    tdf = feed.trips
    shapes, shape_ids = _shapes(_table(feed, "shapes", release))
    trip_ids = [str(t) for t in tdf["trip_id"].tolist()]
    trips = Trips(
        ids=StringTable.of(trip_ids),
        route=positions(route_ids, tdf["route_id"]),
        service=positions(service_ids, tdf["service_id"]),
        headsign=OptionalStrings.of(str_list(tdf, "trip_headsign")),
        direction=int_column(tdf, "direction_id", -1, np.int8),
        shape=(positions(shape_ids, tdf["shape_id"]) if "shape_id" in tdf.columns and shape_ids
               else np.full(len(tdf), -1, dtype=np.int32)),
    )

    # --- stop times, sorted by (trip, stop_sequence): one int32/int8 array per column, taken
    # from the categories' codes; the table itself goes as soon as they are out
    st = _table(feed, "stop_times", release)
    trip = positions(trip_ids, st["trip_id"])
    stop = positions(stop_ids, st["stop_id"])
    seq = int_column(st, "stop_sequence", -1, np.int32)
    arrival = _times(st, "arrival_time", problems)
    departure = _times(st, "departure_time", problems)
    for code, what, unknown in (("unknown_trip", "trip_id", trip < 0),
                                ("unknown_stop", "stop_id", stop < 0)):
        if unknown.any():
            values = st[what][unknown]
            problems.append(Problem(code, f"{int(unknown.sum())} row(s) reference unknown "
                                    f"{what}: {_sample(values)}", "stop_times.txt",
                                    int(unknown.sum())))
    pickup = int_column(st, "pickup_type", 0, np.int8)
    drop_off = int_column(st, "drop_off_type", 0, np.int8)
    headsigns: list[str] = []
    if "stop_headsign" in st.columns:
        hs_codes, hs_values = codes_and_values(st["stop_headsign"])
        headsigns = [str(h) for h in hs_values.tolist()]
        headsign = hs_codes.astype(np.int32)
        del hs_codes
    else:
        headsign = np.full(len(st), -1, dtype=np.int32)
    del st

    if not _in_order(trip, seq):
        order = np.lexsort((seq, trip))
        # one column at a time: each old array goes as its sorted copy arrives
        trip = trip[order]
        stop = stop[order]
        seq = seq[order]
        arrival = arrival[order]
        departure = departure[order]
        pickup = pickup[order]
        drop_off = drop_off[order]
        headsign = headsign[order]
        del order
    repeated = (trip[1:] == trip[:-1]) & (seq[1:] == seq[:-1]) & (trip[1:] >= 0)
    if repeated.any():
        dup_trips = [trips.ids[t] for t in trip[1:][repeated][:50].tolist()]
        problems.append(Problem("duplicate_stop_sequence", f"{int(repeated.sum())} repeated "
                                f"(trip_id, stop_sequence): trips {_sample(dup_trips)}",
                                "stop_times.txt", int(repeated.sum())))
    del repeated
    if problems:
        raise StaticFeedRejected(problems)
    offsets = np.searchsorted(trip, np.arange(len(trip_ids) + 1)).astype(np.int64)
    stop_times = StopTimes(
        offsets=offsets, trip=trip, stop=stop, sequence=seq, arrival=arrival,
        departure=departure, pickup=pickup, drop_off=drop_off, headsign=headsign,
    )

    # --- departure events
    when = np.where(departure != NO_TIME, departure, arrival)
    boardable = pickup != 1
    boardable &= when != NO_TIME
    boardable[:-1] &= trip[1:] == trip[:-1]  # the last stop of a trip is no departure
    boardable[-1:] = False

    frequencies = _frequencies(feed, trip_ids)
    if len(frequencies.trip):
        freq_trip = np.zeros(len(trip_ids), dtype=bool)
        freq_trip[frequencies.trip] = True
        plain = boardable & ~freq_trip[trip]
        del freq_trip
    else:
        plain = boardable
    rows = [np.flatnonzero(plain).astype(np.int32)]
    del plain
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
    del when, boardable
    ev_row, ev_time, ev_start = (_joined(rows), _joined(times).astype(np.int32, copy=False),
                                 _joined(starts))
    del rows, times, starts
    ev_stop = stop[ev_row]
    order = np.lexsort((ev_time, ev_stop))
    ev_stop = ev_stop[order]
    ev_time = ev_time[order]
    ev_row = ev_row[order]
    ev_start = ev_start[order]
    del order
    departures = Departures(
        offsets=np.searchsorted(ev_stop, np.arange(len(stop_ids) + 1)).astype(np.int64),
        time=ev_time, row=ev_row, run_start=ev_start,
    )
    del ev_stop
    max_time = int(ev_time.max()) if len(ev_time) else 0

    return ScheduleIndex(
        feed_id=feed_id, version=version, agency_name=agency_name, timezone=timezone,
        calendar=calendar, service_ids=service_ids, stops=stops, routes=routes, trips=trips,
        stop_times=stop_times, departures=departures, frequencies=frequencies, shapes=shapes,
        headsigns=headsigns, max_time=max_time,
    )


def _table(feed: Any, name: str, release: bool) -> Any:
    """``feed.<name>``; with ``release``, the feed lets go of it (the caller's is the last
    reference, so the table's memory goes when the caller drops it)."""
    df = getattr(feed, name, None)
    if release:
        setattr(feed, name, None)
    return df


def _times(st: pd.DataFrame, column: str, problems: list[Problem]) -> I32:
    """A time column in seconds (NO_TIME where empty): each distinct string parsed once."""
    codes, values = codes_and_values(st[column])
    seconds, bad = parse_time_column(codes, values.tolist())
    if bad:
        problems.append(Problem("bad_time", f"{column} not H:MM:SS: {_sample(bad)}",
                                "stop_times.txt", len(bad)))
    return seconds


def _in_order(trip: I32, seq: I32) -> bool:
    """Already sorted by (trip, stop_sequence), without ties: feeds mostly list stop times so,
    and checking costs a fraction of the sort."""
    if len(trip) < 2:
        return True
    later_trip = trip[1:] > trip[:-1]
    if later_trip.all():
        return True
    same_trip = trip[1:] == trip[:-1]
    same_trip &= seq[1:] > seq[:-1]
    same_trip |= later_trip
    return bool(same_trip.all())


def _joined(parts: list[Any]) -> Any:
    """``np.concatenate`` without the copy when there is one part."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _shapes(sdf: pd.DataFrame | None) -> tuple[Shapes, list[str]]:
    if sdf is None or len(sdf) == 0 or not {"shape_id", "shape_pt_lat", "shape_pt_lon",
                                            "shape_pt_sequence"} <= set(sdf.columns):
        empty = np.zeros(0, dtype=np.float64)
        return Shapes(offsets=np.zeros(1, dtype=np.int64), lat=empty, lon=empty), []
    codes, values = codes_and_values(sdf["shape_id"])
    seq = int_column(sdf, "shape_pt_sequence", 0, np.int32)
    order = np.lexsort((seq, codes))
    del seq
    codes = codes[order]
    lat = pd.to_numeric(sdf["shape_pt_lat"], errors="coerce").to_numpy(np.float64)[order]
    lon = pd.to_numeric(sdf["shape_pt_lon"], errors="coerce").to_numpy(np.float64)[order]
    offsets = np.searchsorted(codes, np.arange(len(values) + 1)).astype(np.int64)
    return Shapes(offsets=offsets, lat=lat, lon=lon), [str(v) for v in values.tolist()]


def _frequencies(feed: Any, trip_ids: list[str]) -> Frequencies:
    fdf = getattr(feed, "frequencies", None)
    if fdf is None or len(fdf) == 0:
        empty = np.zeros(0, dtype=np.int32)
        return Frequencies(trip=empty, start=empty, end=empty, headway=empty,
                           exact_times=np.zeros(0, dtype=np.int8))
    trip = positions(trip_ids, fdf["trip_id"])
    keep = trip >= 0
    fdf = fdf[keep]
    return Frequencies(
        trip=trip[keep],
        start=np.array([parse_time(str(v)) for v in fdf["start_time"]], dtype=np.int32),
        end=np.array([parse_time(str(v)) for v in fdf["end_time"]], dtype=np.int32),
        headway=pd.to_numeric(fdf["headway_secs"]).to_numpy(np.int32),
        exact_times=int_column(fdf, "exact_times", 0, np.int8),
    )
