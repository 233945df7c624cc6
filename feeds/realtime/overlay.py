"""Per-stop realtime overlays: what the merge says about each stop's departures (pure).

An overlay is the list of realtime records of one stop, rendered to bytes once per snapshot.
Comparing bytes with the previous snapshot's tells which stops' boards changed, so only those
are written to the store and invalidated in the API processes.

Record layout (a JSON array, compact on purpose):
    [kind, trip_id, service_date, run_start, stop_sequence, arrival, departure, delay, status,
     vehicle_id, route_id, headsign, direction_id, scheduled]
kind "s" amends a scheduled departure (route_id.. scheduled are null); kind "a" is a departure
of a trip not in the schedule (ADDED, or a DUPLICATED copy) and carries what a board shows.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import orjson

from feeds.realtime.records import MergeResult
from feeds.realtime.schedule_cache import ScheduleCache
from feeds.schedule.index import ScheduleIndex

Record = Sequence[Any]  # built as a tuple (untracked by the garbage collector), read as a list
K_TRIP, K_DATE, K_RUN, K_SEQ, K_ARR, K_DEP, K_DELAY, K_STATUS, K_VEHICLE = range(1, 10)
K_ROUTE, K_HEADSIGN, K_DIRECTION, K_SCHEDULED = range(10, 14)


def build_overlays(index: ScheduleIndex, merged: MergeResult) -> dict[str, bytes]:
    """stop_id → overlay bytes, for every stop that has realtime records."""
    return {stop: render(records) for stop, records in overlay_records(index, merged).items()}


def render(records: list[Record]) -> bytes:
    return orjson.dumps(sorted(records, key=_order))


def overlay_records(index: ScheduleIndex, merged: MergeResult,
                    cache: ScheduleCache | None = None) -> dict[str, list[Record]]:
    """stop_id → that stop's realtime records."""
    per_stop: dict[str, list[Record]] = defaultdict(list)
    for stop, record in zip(*stop_records(cache or ScheduleCache(index), merged), strict=True):
        per_stop[stop].append(record)
    return dict(per_stop)


def stop_records(cache: ScheduleCache, merged: MergeResult
                 ) -> tuple[list[str], list[Record]]:
    """Every departure the merge amends or adds, trip by trip in stop order: the stop_id of
    each, and its record. Records are tuples of strings and numbers: the garbage collector
    stops tracking them, which matters when a national feed's ~150k stay between snapshots."""
    at: list[str] = []
    out: list[Record] = []
    for (trip, day, run), trt in merged.trips.items():
        static = cache.trip(trip)
        lo, rows = static.lo, trt.rows
        n = len(rows)
        if n and rows[-1] == lo + len(static.seqs) - 1:
            n -= 1  # a trip's last stop is never a departure
        if not n:
            continue
        seqs, stop_ids = _at_rows(static.seqs, rows, lo, n), _at_rows(static.stop_ids, rows, lo, n)
        at.extend(stop_ids)
        out.extend(zip(repeat("s"), repeat(cache.trip_id(trip)), repeat(day), repeat(run), seqs,
                       trt.arrivals[:n], trt.departures[:n], trt.delays[:n], trt.statuses[:n],
                       repeat(trt.vehicle_id), repeat(None), repeat(None), repeat(None),
                       repeat(None)))
    for added in merged.added:
        for a in added.stops[:-1]:
            delay = None
            if a.scheduled is not None and a.departure is not None:
                delay = a.departure - a.scheduled
            at.append(cache.stop_id(a.stop))
            out.append(("a", added.trip_id, added.service_date, -1, a.stop_sequence, a.arrival,
                        a.departure, delay, a.status if a.status != "duplicated" else "added",
                        added.vehicle_id, added.route_id, added.headsign, added.direction_id,
                        a.scheduled))
    return at, out


def _at_rows(values: list[Any], rows: list[int], lo: int, n: int) -> list[Any]:
    """``values`` (a trip's, by position) at the first ``n`` of ``rows`` (ascending)."""
    first = rows[0] - lo
    if rows[n - 1] - rows[0] == n - 1:  # consecutive rows: the usual case
        return values[first:first + n]
    return [values[row - lo] for row in rows[:n]]


_order = operator.itemgetter(K_TRIP, K_DATE, K_RUN, K_SEQ)


def decode_overlay(data: bytes | None) -> list[Record]:
    return [] if not data else list(orjson.loads(data))


def trip_realtime_records(index: ScheduleIndex, merged: MergeResult,
                          cache: ScheduleCache | None = None) -> dict[str, bytes]:
    """``trip_id|YYYYMMDD-ordinal|run`` → the instance's per-stop realtime, for the trip view."""
    cache = cache or ScheduleCache(index)
    out: dict[str, bytes] = {}
    for (trip, day, run), trt in merged.trips.items():
        static = cache.trip(trip)
        rows = trt.rows
        seqs = _at_rows(static.seqs, rows, static.lo, len(rows)) if rows else []
        stops = dict(zip(seqs, zip(trt.arrivals, trt.departures, trt.delays, trt.statuses,
                                   strict=True), strict=True))
        out[f"{cache.trip_id(trip)}|{day}|{run}"] = orjson.dumps(
            {"status": trt.status, "vehicle_id": trt.vehicle_id, "stops": stops},
            option=orjson.OPT_NON_STR_KEYS)
    for added in merged.added:
        out[f"{added.trip_id}|{added.service_date}|-1"] = orjson.dumps({
            "status": added.kind, "vehicle_id": added.vehicle_id, "route_id": added.route_id,
            "headsign": added.headsign, "template": (cache.trip_id(added.template)
                                                     if added.template >= 0 else None),
            "stops": [[cache.stop_id(s.stop), s.stop_sequence, s.arrival, s.departure,
                       s.scheduled, s.status] for s in added.stops]})
    return out
