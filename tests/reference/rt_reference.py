"""Independent reference for merging one GTFS-Realtime TripUpdate onto one scheduled trip.

Written from the GTFS-Realtime reference (https://gtfs.org/realtime/reference/), standard
library and the generated protobuf classes only; it shares no code with feeds/ or gateway/.

Contract, for the trip instance (trip_id, start_date YYYYMMDD) of a static zip:

* The TripUpdate is the entity whose trip.trip_id is trip_id and whose trip.start_date is
  start_date or unset (the first such entity). None: every stop "scheduled".
* trip schedule_relationship CANCELED or DELETED: every stop "cancelled", no times.
* A StopTimeUpdate belongs to the stop_times row with its stop_sequence; without one (or when no
  row has it) to the row of its stop_id, only if that stop occurs once in the trip.
* Scheduled instant = noon minus 12 h of start_date in the agency timezone + the GTFS seconds.
* Stops are walked in stop_sequence order, carrying a delay. It starts as TripUpdate.delay
  (the spec: trip-level delay applies until the first stop with a StopTimeUpdate), else none.
  - SCHEDULED update: an event (arrival/departure) gives its `time` when set (time wins over
    delay), else scheduled + its `delay`; an event with neither counts as absent. A missing
    departure takes the arrival's delay, a missing arrival the departure's. The stop's delay
    (departure's, else arrival's) is carried on. "updated". An update whose events are all
    absent says nothing: the stop is treated as if it had no update.
  - SKIPPED: "skipped"; times = scheduled + carried delay (None without one); delay carried
    across unchanged.
  - NO_DATA: "no_data", no times; the carried delay is dropped, so the following stops stay
    "scheduled" until an update with data.
  - No update: carried delay -> "propagated" (scheduled + delay); none -> "scheduled", no
    times (so stops before the first update get nothing: propagation is forward only).
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from google.transit import gtfs_realtime_pb2 as pb

CANCELLED = (pb.TripDescriptor.CANCELED, pb.TripDescriptor.DELETED)
STU = pb.TripUpdate.StopTimeUpdate


@dataclass(frozen=True)
class RefStop:
    stop_id: str
    arrival: int | None  # expected, UTC epoch seconds
    departure: int | None
    delay: int | None  # departure delay (arrival delay when there is no departure)
    status: str  # scheduled | updated | propagated | skipped | no_data | cancelled


def _secs(text: str) -> int:
    h, m, s = text.strip().split(":")
    return int(h) * 3600 + int(m) * 60 + int(s)


@lru_cache(maxsize=8)
def load_static(zip_path: str) -> tuple[str, dict[str, list[tuple[int, str, int, int]]]]:
    """(timezone, trip_id -> [(stop_sequence, stop_id, arrival s, departure s)] sorted)."""
    def rows(zf: zipfile.ZipFile, name: str) -> csv.DictReader[str]:
        return csv.DictReader(io.TextIOWrapper(zf.open(name), encoding="utf-8-sig"))

    trips: dict[str, list[tuple[int, str, int, int]]] = {}
    with zipfile.ZipFile(zip_path) as zf:
        tz = next(iter(rows(zf, "agency.txt")))["agency_timezone"].strip()
        for r in rows(zf, "stop_times.txt"):
            arr = r["arrival_time"].strip() or r["departure_time"]
            dep = r["departure_time"].strip() or r["arrival_time"]
            trips.setdefault(r["trip_id"].strip(), []).append(
                (int(r["stop_sequence"]), r["stop_id"].strip(), _secs(arr), _secs(dep)))
    for stops in trips.values():
        stops.sort()
    return tz, trips


def origin(start_date: str, tz: str) -> int:
    d = date(int(start_date[:4]), int(start_date[4:6]), int(start_date[6:]))
    return int(datetime(d.year, d.month, d.day, 12, tzinfo=ZoneInfo(tz)).timestamp()) - 43200


def _event(ev: pb.TripUpdate.StopTimeEvent | None, sched: int) -> int | None:
    if ev is None or not (ev.HasField("time") or ev.HasField("delay")):
        return None
    return ev.time if ev.HasField("time") else sched + ev.delay


def expected_stops(static_zip: Path | str, message: pb.FeedMessage, trip_id: str,
                   start_date: str) -> dict[int, RefStop]:
    tz, trips = load_static(str(static_zip))
    stops = trips[trip_id]
    base = origin(start_date, tz)
    tu = next((e.trip_update for e in message.entity if e.HasField("trip_update")
               and e.trip_update.trip.trip_id == trip_id
               and e.trip_update.trip.start_date in ("", start_date)), None)
    if tu is None:
        return {seq: RefStop(sid, None, None, None, "scheduled") for seq, sid, _, _ in stops}
    if tu.trip.schedule_relationship in CANCELLED:
        return {seq: RefStop(sid, None, None, None, "cancelled") for seq, sid, _, _ in stops}
    placed: dict[int, STU] = {}
    for u in tu.stop_time_update:
        pos = [k for k, s in enumerate(stops) if u.HasField("stop_sequence")
               and s[0] == u.stop_sequence]
        if not pos and u.stop_id:
            pos = [k for k, s in enumerate(stops) if s[1] == u.stop_id]
        if len(pos) != 1:
            raise ValueError(f"StopTimeUpdate matches no single stop of {trip_id}: {u}")
        placed[pos[0]] = u
    carried: int | None = tu.delay if tu.HasField("delay") else None
    out: dict[int, RefStop] = {}
    for k, (seq, sid, arr_s, dep_s) in enumerate(stops):
        arr_s, dep_s = base + arr_s, base + dep_s
        u = placed.get(k)
        if u is not None and u.schedule_relationship == STU.NO_DATA:
            carried = None
            out[seq] = RefStop(sid, None, None, None, "no_data")
            continue
        if u is not None and u.schedule_relationship == STU.SKIPPED:
            d = carried
            out[seq] = RefStop(sid, None if d is None else arr_s + d,
                               None if d is None else dep_s + d, d, "skipped")
            continue
        arr = _event(u.arrival if u is not None and u.HasField("arrival") else None, arr_s)
        dep = _event(u.departure if u is not None and u.HasField("departure") else None, dep_s)
        if arr is None and dep is not None:
            arr = arr_s + (dep - dep_s)
        if dep is None and arr is not None:
            dep = dep_s + (arr - arr_s)
        if arr is not None and dep is not None:
            carried = dep - dep_s
            out[seq] = RefStop(sid, arr, dep, carried, "updated")
        elif carried is not None:
            out[seq] = RefStop(sid, arr_s + carried, dep_s + carried, carried, "propagated")
        else:
            out[seq] = RefStop(sid, None, None, None, "scheduled")
    return out
