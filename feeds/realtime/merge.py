"""Merging GTFS-Realtime trip updates onto the schedule (pure: ``now`` is passed in).

Rules, from the GTFS-Realtime reference:
- a trip instance is trip_id + start_date (+ start_time for frequency-based trips); an update
  that matches no instance, or several, is rejected and counted by reason;
- StopTimeUpdates match by stop_sequence, by stop_id only when the stop occurs once in the trip;
- ``time`` wins over ``delay``; a missing departure takes the arrival's delay; the last known
  delay propagates forward to later stops without updates, never backwards;
- SKIPPED marks that stop skipped and the delay propagates across it; NO_DATA leaves this and
  the following stops scheduled until an update with data;
- CANCELED and DELETED cancel every stop; ADDED/NEW trips not in the schedule and DUPLICATED
  trips (a copy of a scheduled trip at another start) become trips of their own.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from dataclasses import replace

from feeds.realtime.model import StopTimeUpdate, TripUpdate
from feeds.realtime.propagation import propagate, propagate_rows
from feeds.realtime.records import (
    AddedStop,
    AddedTrip,
    MergeResult,
    Reject,
    TripRealtime,
)
from feeds.realtime.schedule_cache import ScheduleCache
from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import NO_TIME, local_date_ordinal, parse_gtfs_date, parse_time
from feeds.schedule.service_time import service_day_origin as origin_of

DAY = 86400
MAX_POSIX = 10_000_000_000
CANCELLED = ("CANCELED", "DELETED")


def _check_updates(updates: tuple[StopTimeUpdate, ...],
                   flagged: Counter[str]) -> tuple[StopTimeUpdate, ...]:
    """Structural checks of a TripUpdate's StopTimeUpdates (validator codes in comments).

    Raises Reject for what makes the whole update untrustworthy; drops (and flags) a single
    SCHEDULED update that carries no time, which says nothing but harms nothing. Returns
    ``updates`` itself when nothing is dropped.
    """
    last_seq = -1
    last_time = -1
    kept: list[StopTimeUpdate] = []
    dropped = False
    for u in updates:
        seq, stop_id, arrival, departure, relationship = u
        if seq is None:
            if stop_id is None:
                raise Reject("stop_time_update_unmatched")  # E040
        else:
            if seq <= last_seq:
                raise Reject("unordered_stop_time_updates")  # E002
            last_seq = seq
        if arrival is not None:  # E044: no time nor delay; E001: a time that is not POSIX
            time = arrival[0]
            if time is None:
                if arrival[1] is None:
                    raise Reject("empty_stop_time_event")
            elif not 0 < time < MAX_POSIX:
                raise Reject("timestamp_not_posix")
        if departure is not None:
            time = departure[0]
            if time is None:
                if departure[1] is None:
                    raise Reject("empty_stop_time_event")
            elif not 0 < time < MAX_POSIX:
                raise Reject("timestamp_not_posix")
        if arrival is None and departure is None:
            if relationship == "SCHEDULED":
                flagged["missing_stop_time_event"] += 1  # E043
                dropped = True
                continue
        elif relationship == "NO_DATA":
            raise Reject("times_with_no_data")  # E042
        kept.append(u)
        if arrival is not None and arrival[0] is not None:
            if arrival[0] < last_time:
                raise Reject("decreasing_times")  # E022
            last_time = arrival[0]
        if departure is not None and departure[0] is not None:
            if departure[0] < last_time:
                raise Reject("decreasing_times")
            last_time = departure[0]
    return tuple(kept) if dropped else updates


def _service_date(cache: ScheduleCache, trip: int, start_date: str | None, now: float) -> int:
    index = cache.index
    service = cache.service(trip)
    if start_date is not None:
        day = cache.date(start_date)
        if day is None:
            raise Reject("bad_start_date")  # E021
        if not cache.runs(service, day):
            raise Reject("no_service_on_date")
        return day
    # No start_date: the service day whose run of this trip is closest to now, if unambiguous.
    st = index.stop_times
    lo, hi = int(st.offsets[trip]), int(st.offsets[trip + 1])
    first = int(st.departure[lo]) if lo < hi else 0
    last = int(max(st.arrival[hi - 1], st.departure[hi - 1])) if lo < hi else 0
    today = local_date_ordinal(now, index.timezone)
    best: list[tuple[float, int]] = []
    for day in range(today - 2, today + 2):
        running = index.calendar.services_on(day)
        if service < 0 or running is None or not running[service]:
            continue
        origin = origin_of(day, index.timezone)
        start, end = origin + first, origin + last
        distance = 0.0 if start - 3600 <= now <= end + 3600 else min(abs(now - start),
                                                                    abs(now - end))
        best.append((distance, day))
    if not best:
        raise Reject("no_service_on_date")
    best.sort()
    if len(best) > 1 and best[0][0] == best[1][0]:
        raise Reject("ambiguous_trip_instance")
    return best[0][1]


def _run_start(cache: ScheduleCache, trip: int, start_time: str | None) -> int:
    frequency_based = cache.frequency_based(trip)
    if start_time is None:
        if frequency_based:
            raise Reject("missing_start_time")
        return -1
    try:
        secs = parse_time(start_time)
    except ValueError:
        raise Reject("bad_start_time") from None  # E020
    if frequency_based:
        return secs
    # For a timetabled trip the start time may only restate the first scheduled departure.
    st = cache.index.stop_times
    lo = int(st.offsets[trip])
    first = int(st.departure[lo]) if st.departure[lo] != NO_TIME else int(st.arrival[lo])
    if secs != first:
        raise Reject("start_time_mismatch")  # E020 (a value that names no instance)
    return -1


def _positions(cache: ScheduleCache, trip: int, updates: tuple[StopTimeUpdate, ...]
               ) -> dict[int, StopTimeUpdate]:
    """Each update by its position in the trip: stop_sequence first, stop_id when the stop
    occurs once in the trip."""
    static = cache.trip(trip)
    seqs, stops = static.seqs, static.stops
    n = len(seqs)
    # The usual update: sequences of consecutive stops. Then each is found at its place (and a
    # stop_id given beside can only be refused as unknown, as the loop below would). Exact
    # because _check_updates has made the sequences strictly increasing.
    wanted = [u[0] for u in updates]
    if wanted and None not in wanted:
        first = bisect.bisect_left(seqs, wanted[0])  # type: ignore[type-var]  # no None
        if seqs[first:first + len(wanted)] == wanted:
            stop_ids = {u[1] for u in updates}
            stop_ids.discard(None)
            if any(cache.stop_index(stop_id) is None for stop_id in stop_ids):  # type: ignore[arg-type]
                raise Reject("stop_not_found")  # E011
            return dict(zip(range(first, first + len(wanted)), updates, strict=True))
    positions: list[int] = []
    for u in updates:
        seq, stop_id = u[0], u[1]
        stop = None
        if stop_id is not None:
            stop = cache.stop_index(stop_id)
            if stop is None:
                raise Reject("stop_not_found")  # E011
        if seq is not None:
            k = bisect.bisect_left(seqs, seq)
            if k < n and seqs[k] == seq:
                positions.append(k)
                continue
            if stop_id is None:
                raise Reject("stop_sequence_not_in_trip")
        hits = [k for k, s in enumerate(stops) if s == stop]
        if len(hits) != 1:
            raise Reject("stop_not_in_trip" if not hits else "ambiguous_stop")
        positions.append(hits[0])
    if positions != sorted(positions):
        raise Reject("unordered_stop_time_updates")
    return dict(zip(positions, updates, strict=True))




def scheduled_base(index: ScheduleIndex, trip: int, day: int, run_start: int) -> int:
    """What the trip's time offsets are added to on ``day``: the service day's origin, moved
    to ``run_start`` for a run of a frequency-based trip."""
    base = origin_of(day, index.timezone)
    if run_start >= 0:
        st = index.stop_times
        lo = int(st.offsets[trip])
        if lo < int(st.offsets[trip + 1]):
            first = int(st.departure[lo]) if st.departure[lo] != NO_TIME else int(st.arrival[lo])
            base += run_start - first
    return base


def _scheduled(cache: ScheduleCache, trip: int, day: int, run_start: int, start: int = 0
               ) -> tuple[list[int | None], list[int | None]]:
    """The trip's scheduled instants on ``day``: None before position ``start`` (unread)."""
    static = cache.trip(trip)
    base = scheduled_base(cache.index, trip, day, run_start)
    skipped: list[int | None] = [None] * start
    if static.timed:
        return (skipped + list(map(base.__add__, static.arrival[start:])),  # type: ignore[arg-type]
                skipped + list(map(base.__add__, static.departure[start:])))  # type: ignore[arg-type]
    return (skipped + [None if a is None else base + a for a in static.arrival[start:]],
            skipped + [None if d is None else base + d for d in static.departure[start:]])


def merge_trip_updates(index: ScheduleIndex, updates: tuple[TripUpdate, ...],
                       now: float) -> MergeResult:
    result = MergeResult()
    cache = ScheduleCache(index)
    for tu in updates:
        result.total += 1
        try:
            merge_one(cache, tu, now, result)
        except Reject as reject:
            result.rejected[reject.code] += 1
    return result


def merge_one(cache: ScheduleCache, tu: TripUpdate, now: float, result: MergeResult) -> None:
    td = tu.trip
    if tu.timestamp is not None and not 0 < tu.timestamp < MAX_POSIX:
        raise Reject("timestamp_not_posix")  # E001
    if td.route_id is not None and not cache.route_known(td.route_id) \
            and td.relationship not in ("ADDED", "NEW"):
        raise Reject("route_not_found")  # E004
    checked = _check_updates(tu.updates, result.flagged)
    if checked is not tu.updates:
        tu = replace(tu, updates=checked)
    if td.relationship in ("ADDED", "NEW"):
        result.added.append(_added_trip(cache, tu, now))
        return
    if td.trip_id is None:
        raise Reject("trip_id_missing")
    trip = cache.trip_index(td.trip_id)
    if trip is None:
        raise Reject("trip_not_found")  # E003
    if td.relationship == "DUPLICATED":
        copy = _duplicated_trip(cache, tu, trip, result)
        if any(a.trip_id == copy.trip_id and a.service_date == copy.service_date
               for a in result.added):
            raise Reject("duplicate_trip_instance")
        result.added.append(copy)
        return
    day = _service_date(cache, trip, td.start_date, now)
    run_start = _run_start(cache, trip, td.start_time)
    key = (trip, day, run_start)
    if key in result.trips:
        raise Reject("duplicate_trip_instance")
    static = cache.trip(trip)
    lo = static.lo
    if td.relationship in CANCELLED:
        n = len(static.seqs)
        none: list[int | None] = [None] * n
        result.trips[key] = TripRealtime(trip, day, run_start, "cancelled", tu.vehicle_id,
                                         list(range(lo, lo + n)), none, none, none,
                                         ["cancelled"] * n, tu.timestamp)
        return
    by_pos = _positions(cache, trip, tu.updates)
    # propagate_rows reads nothing before the first update unless the trip has a delay
    start = 0 if tu.delay is not None or not by_pos else max(0, min(by_pos))
    sched_arr, sched_dep = _scheduled(cache, trip, day, run_start, start)
    result.trips[key] = TripRealtime(trip, day, run_start, "scheduled", tu.vehicle_id,
                                     *propagate_rows(sched_arr, sched_dep, by_pos, tu.delay, lo),
                                     tu.timestamp)


def _added_trip(cache: ScheduleCache, tu: TripUpdate, now: float) -> AddedTrip:
    index = cache.index
    td = tu.trip
    trip_id = td.trip_id or tu.entity_id
    stops: list[AddedStop] = []
    for pos, u in enumerate(tu.updates):
        stop = None if u.stop_id is None else cache.stop_index(u.stop_id)
        if stop is None:
            raise Reject("stop_not_found")
        arr = u.arrival.time if u.arrival is not None else None
        dep = u.departure.time if u.departure is not None else None
        if arr is None and dep is None and u.relationship != "SKIPPED":
            raise Reject("added_trip_without_times")
        seq = u.stop_sequence if u.stop_sequence is not None else pos
        status = "skipped" if u.relationship == "SKIPPED" else "added"
        stops.append(AddedStop(stop, seq, arr, dep if dep is not None else arr, None, status))
    if not stops:
        raise Reject("added_trip_without_stops")
    first = next((s.departure for s in stops if s.departure is not None), None)
    if td.start_date is not None:
        try:
            day = parse_gtfs_date(td.start_date).toordinal()
        except ValueError:
            raise Reject("bad_start_date") from None
    else:
        day = local_date_ordinal(first if first is not None else now, index.timezone)
    last_stop = index.stops.names[stops[-1].stop]
    return AddedTrip(trip_id, td.route_id, td.direction_id, last_stop, day, "added",
                     tu.vehicle_id, tuple(stops))


def _duplicated_trip(cache: ScheduleCache, tu: TripUpdate, template: int,
                     result: MergeResult) -> AddedTrip:
    index = cache.index
    td, props = tu.trip, tu.properties
    new_id = props.trip_id if props is not None and props.trip_id else None
    start_date = (props.start_date if props is not None and props.start_date else None) \
        or td.start_date
    start_time = (props.start_time if props is not None and props.start_time else None) \
        or td.start_time
    if start_date is None or start_time is None:
        raise Reject("duplicated_without_start")
    if new_id is None:
        # The spec asks for TripProperties.trip_id; some producers (Sound Transit) send only the
        # descriptor's start. Keep the trip, under an id that cannot collide, and flag it.
        result.flagged["duplicated_without_properties"] += 1
        new_id = f"{td.trip_id}@{start_date}T{start_time}"
    try:
        day = parse_gtfs_date(start_date).toordinal()
        start_secs = parse_time(start_time)
    except ValueError:
        raise Reject("bad_start_date") from None
    by_pos = _positions(cache, template, tu.updates)
    sched_arr, sched_dep = _scheduled(cache, template, day, start_secs)
    static = cache.trip(template)
    rt = propagate(sched_arr, sched_dep, by_pos, tu.delay)
    stops = []
    for k in range(len(static.seqs)):
        s = rt.get(k)
        stops.append(AddedStop(
            stop=static.stops[k], stop_sequence=static.seqs[k],
            arrival=s.arrival if s else sched_arr[k], departure=s.departure if s else sched_dep[k],
            scheduled=sched_dep[k], status=s.status if s else "duplicated"))
    route = int(index.trips.route[template])
    return AddedTrip(new_id, index.routes.ids[route] if route >= 0 else td.route_id,
                     td.direction_id, index.trips.headsign[template], day, "duplicated",
                     tu.vehicle_id, tuple(stops), template)


def service_date_iso(day: int) -> str:
    return dt.date.fromordinal(day).isoformat()
