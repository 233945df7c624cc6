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
from typing import Any

import orjson

from feeds.realtime.merge import MergeResult
from feeds.schedule.index import ScheduleIndex

Record = list[Any]
K_TRIP, K_DATE, K_RUN, K_SEQ, K_ARR, K_DEP, K_DELAY, K_STATUS, K_VEHICLE = range(1, 10)
K_ROUTE, K_HEADSIGN, K_DIRECTION, K_SCHEDULED = range(10, 14)


def build_overlays(index: ScheduleIndex, merged: MergeResult) -> dict[str, bytes]:
    """stop_id → overlay bytes, for every stop that has realtime records."""
    return {stop: render(records) for stop, records in overlay_records(index, merged).items()}


def render(records: list[Record]) -> bytes:
    return orjson.dumps(sorted(records, key=_order))


def overlay_records(index: ScheduleIndex, merged: MergeResult) -> dict[str, list[Record]]:
    """stop_id → that stop's realtime records."""
    per_stop: dict[int, list[Record]] = defaultdict(list)
    st = index.stop_times
    trip_ids = index.trips.ids
    for (trip, day, run), trt in merged.trips.items():
        tid = trip_ids[trip]
        last = int(st.offsets[trip + 1]) - 1
        for row, s in trt.stops.items():
            if row == last:
                continue  # a trip's last stop is never a departure
            per_stop[int(st.stop[row])].append(
                ["s", tid, day, run, int(st.sequence[row]), s.arrival, s.departure, s.delay,
                 s.status, trt.vehicle_id, None, None, None, None])
    for added in merged.added:
        for a in added.stops[:-1]:
            delay = None
            if a.scheduled is not None and a.departure is not None:
                delay = a.departure - a.scheduled
            per_stop[a.stop].append(
                ["a", added.trip_id, added.service_date, -1, a.stop_sequence, a.arrival,
                 a.departure, delay, a.status if a.status != "duplicated" else "added",
                 added.vehicle_id, added.route_id, added.headsign, added.direction_id,
                 a.scheduled])
    stop_ids = index.stops.ids
    return {stop_ids[stop]: records for stop, records in per_stop.items()}


_order = operator.itemgetter(K_TRIP, K_DATE, K_RUN, K_SEQ)


def decode_overlay(data: bytes | None) -> list[Record]:
    return [] if not data else list(orjson.loads(data))


def trip_realtime_records(index: ScheduleIndex, merged: MergeResult) -> dict[str, bytes]:
    """``trip_id|YYYYMMDD-ordinal|run`` → the instance's per-stop realtime, for the trip view."""
    st = index.stop_times
    out: dict[str, bytes] = {}
    for (trip, day, run), trt in merged.trips.items():
        stops = {int(st.sequence[row]): [s.arrival, s.departure, s.delay, s.status]
                 for row, s in trt.stops.items()}
        out[f"{index.trips.ids[trip]}|{day}|{run}"] = orjson.dumps(
            {"status": trt.status, "vehicle_id": trt.vehicle_id, "stops": stops},
            option=orjson.OPT_NON_STR_KEYS)
    for added in merged.added:
        out[f"{added.trip_id}|{added.service_date}|-1"] = orjson.dumps({
            "status": added.kind, "vehicle_id": added.vehicle_id, "route_id": added.route_id,
            "headsign": added.headsign, "template": (index.trips.ids[added.template]
                                                     if added.template >= 0 else None),
            "stops": [[index.stops.ids[s.stop], s.stop_sequence, s.arrival, s.departure,
                       s.scheduled, s.status] for s in added.stops]})
    return out
