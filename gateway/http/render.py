"""JSON shapes of the API (plain dicts handed to orjson)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from feeds.realtime.alerts import AlertIndex
from feeds.realtime.board import BoardEntry, added_fields
from feeds.schedule.board import ScheduledDeparture
from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import iso_local


def _num(value: float) -> float | None:
    return None if value != value else round(float(value), 6)


def stop(index: ScheduleIndex, i: int, distance_m: float | None = None,
         full: bool = True) -> dict[str, Any]:
    stops = index.stops
    out: dict[str, Any] = {
        "id": stops.ids[i],
        "name": stops.names[i],
        "lat": _num(stops.lat[i]),
        "lon": _num(stops.lon[i]),
    }
    if full:
        parent = int(stops.parent[i])
        out.update(
            location_type=int(stops.location_type[i]),
            parent_station=stops.ids[parent] if parent >= 0 else None,
            platform=stops.platform[i],
        )
        out["distance_m"] = round(distance_m, 1) if distance_m is not None else None
    return out


def headsign(index: ScheduleIndex, trip: int, row: int) -> str | None:
    h = int(index.stop_times.headsign[row])
    if h >= 0:
        return index.headsigns[h]
    return index.trips.headsign[trip]


def board_entry(index: ScheduleIndex, e: BoardEntry, alerts: AlertIndex | None,
                now: float) -> dict[str, Any]:
    """One departure of a board, scheduled or added, with its realtime and alert ids."""
    tz = index.timezone
    stop_i = e.stop
    if e.scheduled is not None:
        out = departure(index, e.scheduled)
    else:
        assert e.added is not None
        fields = added_fields(e.added)
        out = {
            "trip_id": fields["trip_id"],
            "route_id": fields["route_id"],
            "route_short_name": _route_short_name(index, fields["route_id"]),
            "headsign": fields["headsign"],
            "direction_id": fields["direction_id"],
            "stop_id": index.stops.ids[stop_i],
            "stop_sequence": fields["stop_sequence"],
            "platform": index.stops.platform[stop_i],
            "service_date": dt.date.fromordinal(fields["service_date"]).isoformat(),
            "scheduled": (iso_local(fields["scheduled"], tz)
                          if fields["scheduled"] is not None else None),
        }
    out["expected"] = iso_local(e.expected, tz) if e.expected is not None else None
    out["delay_s"] = e.delay
    out["realtime"] = e.realtime
    out["status"] = e.status
    out["vehicle_id"] = e.vehicle_id
    if alerts is not None:
        stop_ids = [out["stop_id"]]
        parent = int(index.stops.parent[stop_i])
        if parent >= 0:
            stop_ids.append(index.stops.ids[parent])
        r = index.routes.index_of.get(out["route_id"]) if out["route_id"] else None
        out["alerts"] = [a["id"] for a in alerts.matching(
            now, stop_ids, out["route_id"], out["trip_id"],
            agency_id=index.routes.agency[r] if r is not None else None,
            direction_id=out["direction_id"],
            route_type=int(index.routes.types[r]) if r is not None else None)]
    else:
        out["alerts"] = []
    return out


def _route_short_name(index: ScheduleIndex, route_id: str | None) -> str | None:
    r = index.routes.index_of.get(route_id) if route_id is not None else None
    return index.routes.short_names[r] if r is not None else None


def departure(index: ScheduleIndex, d: ScheduledDeparture) -> dict[str, Any]:
    trips, st = index.trips, index.stop_times
    route = int(trips.route[d.trip])
    stop_i = int(st.stop[d.row])
    direction = int(trips.direction[d.trip])
    return {
        "trip_id": trips.ids[d.trip],
        "route_id": index.routes.ids[route] if route >= 0 else None,
        "route_short_name": index.routes.short_names[route] if route >= 0 else None,
        "headsign": headsign(index, d.trip, d.row),
        "direction_id": direction if direction >= 0 else None,
        "stop_id": index.stops.ids[stop_i],
        "stop_sequence": int(st.sequence[d.row]),
        "platform": index.stops.platform[stop_i],
        "service_date": dt.date.fromordinal(d.service_date).isoformat(),
        "scheduled": iso_local(d.instant, index.timezone),
        "expected": None,
        "delay_s": None,
        "realtime": False,
        "status": "scheduled",
        "vehicle_id": None,
        "alerts": [],
    }
