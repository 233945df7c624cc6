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
from dataclasses import dataclass, field, replace

from feeds.realtime.model import StopTimeEvent, StopTimeUpdate, TripUpdate
from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import NO_TIME, local_date_ordinal, parse_gtfs_date, parse_time
from feeds.schedule.service_time import service_day_origin as origin_of

DAY = 86400
ON_TIME_S = 60  # |delay| under this is "on_time"
MAX_POSIX = 10_000_000_000
CANCELLED = ("CANCELED", "DELETED")


@dataclass(frozen=True, slots=True)
class StopRealtime:
    """Realtime of one stop of a trip instance."""

    arrival: int | None  # expected instants (UTC epoch seconds)
    departure: int | None
    delay: int | None  # departure delay in seconds
    status: str  # on_time | delayed | early | skipped | cancelled | no_data | added


@dataclass(frozen=True)
class TripRealtime:
    """A scheduled trip instance with realtime; ``stops`` keyed by StopTimes row."""

    trip: int
    service_date: int  # date ordinal
    run_start: int  # -1 unless frequency-based
    status: str  # scheduled | cancelled
    vehicle_id: str | None
    stops: dict[int, StopRealtime]
    timestamp: int | None = None


@dataclass(frozen=True)
class AddedStop:
    stop: int  # stop index
    stop_sequence: int
    arrival: int | None
    departure: int | None
    scheduled: int | None  # DUPLICATED copies keep a scheduled instant; ADDED have none
    status: str


@dataclass(frozen=True)
class AddedTrip:
    """A trip that is not in the schedule: ADDED/NEW, or a DUPLICATED copy."""

    trip_id: str
    route_id: str | None
    direction_id: int | None
    headsign: str | None
    service_date: int
    kind: str  # added | duplicated
    vehicle_id: str | None
    stops: tuple[AddedStop, ...]
    template: int = -1  # the scheduled trip a DUPLICATED trip copies


@dataclass
class MergeResult:
    trips: dict[tuple[int, int, int], TripRealtime] = field(default_factory=dict)
    added: list[AddedTrip] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    total: int = 0

    @property
    def matched(self) -> int:
        return len(self.trips) + len(self.added)

    @property
    def match_rate(self) -> float | None:
        return None if self.total == 0 else round(self.matched / self.total, 4)


class Reject(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _status(delay: int | None) -> str:
    if delay is None or abs(delay) < ON_TIME_S:
        return "on_time"
    return "delayed" if delay > 0 else "early"


def _check_event(event: StopTimeEvent | None) -> None:
    if event is None:
        return
    if event.time is None and event.delay is None:
        raise Reject("empty_stop_time_event")  # E044: an arrival/departure with no time/delay
    if event.time is not None and not 0 < event.time < MAX_POSIX:
        raise Reject("timestamp_not_posix")


def _check_updates(updates: tuple[StopTimeUpdate, ...],
                   flagged: Counter[str]) -> tuple[StopTimeUpdate, ...]:
    """Structural checks of a TripUpdate's StopTimeUpdates (validator codes in comments).

    Raises Reject for what makes the whole update untrustworthy; drops (and flags) a single
    SCHEDULED update that carries no time, which says nothing but harms nothing.
    """
    last_seq = -1
    last_time = -1
    kept: list[StopTimeUpdate] = []
    for u in updates:
        if u.stop_sequence is None and u.stop_id is None:
            raise Reject("stop_time_update_unmatched")  # E040
        if u.stop_sequence is not None:
            if u.stop_sequence <= last_seq:
                raise Reject("unordered_stop_time_updates")  # E002
            last_seq = u.stop_sequence
        _check_event(u.arrival)  # E001
        _check_event(u.departure)
        has_times = u.arrival is not None or u.departure is not None
        if u.relationship == "NO_DATA" and has_times:
            raise Reject("times_with_no_data")  # E042
        if u.relationship == "SCHEDULED" and not has_times:
            flagged["missing_stop_time_event"] += 1  # E043
            continue
        kept.append(u)
        for event in (u.arrival, u.departure):
            if event is not None and event.time is not None:
                if event.time < last_time:
                    raise Reject("decreasing_times")  # E022
                last_time = event.time
    return tuple(kept)


def _service_date(index: ScheduleIndex, trip: int, start_date: str | None, now: float) -> int:
    service = int(index.trips.service[trip])
    if start_date is not None:
        try:
            day = parse_gtfs_date(start_date).toordinal()
        except ValueError:
            raise Reject("bad_start_date") from None  # E021
        running = index.calendar.services_on(day)
        if service < 0 or running is None or not running[service]:
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


def _run_start(index: ScheduleIndex, trip: int, start_time: str | None) -> int:
    frequency_based = bool((index.frequencies.trip == trip).any())
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
    st = index.stop_times
    lo = int(st.offsets[trip])
    first = int(st.departure[lo]) if st.departure[lo] != NO_TIME else int(st.arrival[lo])
    if secs != first:
        raise Reject("start_time_mismatch")  # E020 (a value that names no instance)
    return -1


def _rows_of(index: ScheduleIndex, trip: int, updates: tuple[StopTimeUpdate, ...]
             ) -> list[tuple[int, StopTimeUpdate]]:
    """Each update's StopTimes row: stop_sequence first, stop_id when the stop occurs once."""
    st = index.stop_times
    lo, hi = int(st.offsets[trip]), int(st.offsets[trip + 1])
    seqs = st.sequence[lo:hi].tolist()
    stops = st.stop[lo:hi].tolist()
    out: list[tuple[int, StopTimeUpdate]] = []
    for u in updates:
        if u.stop_id is not None and u.stop_id not in index.stops.index_of:
            raise Reject("stop_not_found")  # E011
        if u.stop_sequence is not None:
            k = bisect.bisect_left(seqs, u.stop_sequence)
            if k < len(seqs) and seqs[k] == u.stop_sequence:
                out.append((lo + k, u))
                continue
            if u.stop_id is None:
                raise Reject("stop_sequence_not_in_trip")
        stop = index.stops.index_of[u.stop_id]  # type: ignore[index]  # not None here
        hits = [k for k, s in enumerate(stops) if s == stop]
        if len(hits) != 1:
            raise Reject("stop_not_in_trip" if not hits else "ambiguous_stop")
        out.append((lo + hits[0], u))
    rows = [r for r, _ in out]
    if rows != sorted(rows):
        raise Reject("unordered_stop_time_updates")
    return out


def _expected(event: StopTimeEvent | None, scheduled: int | None) -> int | None:
    if event is None:
        return None
    if event.time is not None:
        return event.time
    if event.delay is not None and scheduled is not None:
        return scheduled + event.delay
    return None


def propagate(
    sched_arr: list[int | None],
    sched_dep: list[int | None],
    updates: dict[int, StopTimeUpdate],
    trip_delay: int | None = None,
) -> dict[int, StopRealtime]:
    """Realtime for each position 0..n-1 of a trip, from updates keyed by position."""
    out: dict[int, StopRealtime] = {}
    delay: int | None = trip_delay
    data = trip_delay is not None
    for k in range(len(sched_dep)):
        arr_s, dep_s = sched_arr[k], sched_dep[k]
        u = updates.get(k)
        if u is not None and u.relationship == "NO_DATA":
            data, delay = False, None
            out[k] = StopRealtime(None, None, None, "no_data")
            continue
        if u is not None and u.relationship == "SKIPPED":
            arr = None if delay is None or arr_s is None else arr_s + delay
            dep = None if delay is None or dep_s is None else dep_s + delay
            out[k] = StopRealtime(arr, dep, delay, "skipped")
            continue
        if u is not None:
            arr = _expected(u.arrival, arr_s)
            dep = _expected(u.departure, dep_s)
            if dep is None and arr is not None:
                # A missing departure takes the arrival's delay (never departing before arrival).
                dep = arr if dep_s is None or arr_s is None else max(arr, dep_s + (arr - arr_s))
            if arr is None and dep is not None:
                arr = dep if arr_s is None or dep_s is None else min(dep, arr_s + (dep - dep_s))
            if dep is not None and dep_s is not None:
                delay = dep - dep_s
            elif arr is not None and arr_s is not None:
                delay = arr - arr_s
            data = dep is not None or arr is not None
            out[k] = StopRealtime(arr, dep, delay, _status(delay))
            continue
        if data and delay is not None:
            out[k] = StopRealtime(None if arr_s is None else arr_s + delay,
                                  None if dep_s is None else dep_s + delay, delay, _status(delay))
    return out


def _scheduled(index: ScheduleIndex, trip: int, day: int, run_start: int
               ) -> tuple[list[int | None], list[int | None]]:
    st = index.stop_times
    lo, hi = int(st.offsets[trip]), int(st.offsets[trip + 1])
    origin = origin_of(day, index.timezone)
    shift = 0
    if run_start >= 0 and lo < hi:
        first = int(st.departure[lo]) if st.departure[lo] != NO_TIME else int(st.arrival[lo])
        shift = run_start - first
    arr = [None if a == NO_TIME else origin + a + shift for a in st.arrival[lo:hi].tolist()]
    dep = [None if d == NO_TIME else origin + d + shift for d in st.departure[lo:hi].tolist()]
    dep = [d if d is not None else a for a, d in zip(arr, dep, strict=True)]
    arr = [a if a is not None else d for a, d in zip(arr, dep, strict=True)]
    return arr, dep


def merge_trip_updates(index: ScheduleIndex, updates: tuple[TripUpdate, ...],
                       now: float) -> MergeResult:
    result = MergeResult()
    for tu in updates:
        result.total += 1
        try:
            merge_one(index, tu, now, result)
        except Reject as reject:
            result.rejected[reject.code] += 1
    return result


def merge_one(index: ScheduleIndex, tu: TripUpdate, now: float, result: MergeResult) -> None:
    td = tu.trip
    if tu.timestamp is not None and not 0 < tu.timestamp < MAX_POSIX:
        raise Reject("timestamp_not_posix")  # E001
    if td.route_id is not None and td.route_id not in index.routes.index_of \
            and td.relationship not in ("ADDED", "NEW"):
        raise Reject("route_not_found")  # E004
    tu = replace(tu, updates=_check_updates(tu.updates, result.flagged))
    if td.relationship in ("ADDED", "NEW"):
        result.added.append(_added_trip(index, tu, now))
        return
    if td.trip_id is None:
        raise Reject("trip_id_missing")
    trip = index.trips.index_of.get(td.trip_id)
    if trip is None:
        raise Reject("trip_not_found")  # E003
    if td.relationship == "DUPLICATED":
        copy = _duplicated_trip(index, tu, trip, result)
        if any(a.trip_id == copy.trip_id and a.service_date == copy.service_date
               for a in result.added):
            raise Reject("duplicate_trip_instance")
        result.added.append(copy)
        return
    day = _service_date(index, trip, td.start_date, now)
    run_start = _run_start(index, trip, td.start_time)
    key = (trip, day, run_start)
    if key in result.trips:
        raise Reject("duplicate_trip_instance")
    st = index.stop_times
    lo = int(st.offsets[trip])
    n = int(st.offsets[trip + 1]) - lo
    if td.relationship in CANCELLED:
        stops = {lo + k: StopRealtime(None, None, None, "cancelled") for k in range(n)}
        result.trips[key] = TripRealtime(trip, day, run_start, "cancelled", tu.vehicle_id,
                                         stops, tu.timestamp)
        return
    rows = _rows_of(index, trip, tu.updates)
    sched_arr, sched_dep = _scheduled(index, trip, day, run_start)
    by_pos = {row - lo: u for row, u in rows}
    stops_rt = propagate(sched_arr, sched_dep, by_pos, tu.delay)
    result.trips[key] = TripRealtime(trip, day, run_start, "scheduled", tu.vehicle_id,
                                     {lo + k: v for k, v in stops_rt.items()}, tu.timestamp)


def _added_trip(index: ScheduleIndex, tu: TripUpdate, now: float) -> AddedTrip:
    td = tu.trip
    trip_id = td.trip_id or tu.entity_id
    stops: list[AddedStop] = []
    for pos, u in enumerate(tu.updates):
        if u.stop_id is None or u.stop_id not in index.stops.index_of:
            raise Reject("stop_not_found")
        arr = u.arrival.time if u.arrival is not None else None
        dep = u.departure.time if u.departure is not None else None
        if arr is None and dep is None and u.relationship != "SKIPPED":
            raise Reject("added_trip_without_times")
        seq = u.stop_sequence if u.stop_sequence is not None else pos
        status = "skipped" if u.relationship == "SKIPPED" else "added"
        stops.append(AddedStop(index.stops.index_of[u.stop_id], seq, arr,
                               dep if dep is not None else arr, None, status))
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


def _duplicated_trip(index: ScheduleIndex, tu: TripUpdate, template: int,
                     result: MergeResult) -> AddedTrip:
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
    rows = _rows_of(index, template, tu.updates)
    sched_arr, sched_dep = _scheduled(index, template, day, start_secs)
    st = index.stop_times
    lo, hi = int(st.offsets[template]), int(st.offsets[template + 1])
    by_pos = {row - lo: u for row, u in rows}
    rt = propagate(sched_arr, sched_dep, by_pos, tu.delay)
    stops = []
    for k in range(hi - lo):
        s = rt.get(k)
        stops.append(AddedStop(
            stop=int(st.stop[lo + k]), stop_sequence=int(st.sequence[lo + k]),
            arrival=s.arrival if s else sched_arr[k], departure=s.departure if s else sched_dep[k],
            scheduled=sched_dep[k], status=s.status if s else "duplicated"))
    route = int(index.trips.route[template])
    return AddedTrip(new_id, index.routes.ids[route] if route >= 0 else td.route_id,
                     td.direction_id, index.trips.headsign[template], day, "duplicated",
                     tu.vehicle_id, tuple(stops), template)


def service_date_iso(day: int) -> str:
    return dt.date.fromordinal(day).isoformat()
