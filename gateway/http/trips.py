"""``GET /v1/feeds/{feed}/trips/{trip}``: a trip's stop times on a service date, with realtime."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from aiohttp import web

from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import iso_local, local_date_ordinal, service_day_origin
from gateway.errors import NotFound
from gateway.http import params, render
from gateway.http.appkeys import CATALOG, CLOCK, SETTINGS, STORE
from gateway.http.feed_routes import requested_feed
from gateway.http.json_io import json_response


async def trip(request: web.Request) -> web.Response:
    feed = requested_feed(request)
    index = feed.ready_index()
    trip_id = request.match_info["trip"]
    t = index.trips.index_of.get(trip_id)
    if t is None:
        raise NotFound(f"no trip {trip_id!r} in feed {index.feed_id!r}", code="trip_not_found")
    date = params.get_date(request.query, "date")
    service = int(index.trips.service[t])
    if date is None:
        date = _default_trip_date(index, service, request.app[CLOCK].now())
    runs = False
    if date is not None and service >= 0:
        running = index.calendar.services_on(date.toordinal())
        runs = bool(running is not None and running[service])
    st = index.stop_times
    lo, hi = int(st.offsets[t]), int(st.offsets[t + 1])
    origin = service_day_origin(date.toordinal(), index.timezone) if date else None
    tz = index.timezone

    def at(secs: int) -> str | None:
        return None if origin is None or secs < 0 else iso_local(origin + secs, tz)

    app = request.app
    now = app[CLOCK].now()
    view = app[CATALOG].realtime_view(index.feed_id)
    fresh = view.freshness("trip_updates", now, app[SETTINGS].stale_trip_updates_s,
                           feed.config.trip_updates is not None)
    rt: dict[str, Any] = {}
    if fresh.usable and date is not None:
        raw = await app[STORE].trip_realtime(index.feed_id, f"{trip_id}|{date.toordinal()}|-1")
        rt = orjson.loads(raw) if raw else {}
    rt_stops: dict[str, list[Any]] = rt.get("stops") or {}

    def live(seq: int, field: int) -> Any:
        values = rt_stops.get(str(seq))
        if values is None:
            return None
        value = values[field]
        return iso_local(value, tz) if field < 2 and value is not None else value

    route = int(index.trips.route[t])
    direction = int(index.trips.direction[t])
    freq = [
        {"start": int(index.frequencies.start[f]), "end": int(index.frequencies.end[f]),
         "headway_s": int(index.frequencies.headway[f]),
         "exact_times": int(index.frequencies.exact_times[f])}
        for f in range(len(index.frequencies.trip)) if int(index.frequencies.trip[f]) == t
    ]
    return json_response({
        "feed": index.feed_id,
        "trip": {
            "trip_id": trip_id,
            "route_id": index.routes.ids[route] if route >= 0 else None,
            "route_short_name": index.routes.short_names[route] if route >= 0 else None,
            "headsign": index.trips.headsign[t],
            "direction_id": direction if direction >= 0 else None,
            "service_id": index.service_ids[service] if service >= 0 else None,
            "service_date": date.isoformat() if date else None,
            "runs_on_date": runs,
            "frequencies": freq,
        },
        "stop_times": [
            {
                "stop_id": index.stops.ids[int(st.stop[r])],
                "stop_name": index.stops.names[int(st.stop[r])],
                "stop_sequence": int(st.sequence[r]),
                "platform": index.stops.platform[int(st.stop[r])],
                "headsign": render.headsign(index, t, r),
                "arrival": at(int(st.arrival[r])),
                "departure": at(int(st.departure[r])),
                "pickup_type": int(st.pickup[r]),
                "drop_off_type": int(st.drop_off[r]),
                "expected_arrival": live(int(st.sequence[r]), 0),
                "expected_departure": live(int(st.sequence[r]), 1),
                "delay_s": live(int(st.sequence[r]), 2),
                "status": live(int(st.sequence[r]), 3) or (
                    "cancelled" if rt.get("status") == "cancelled" else "scheduled"),
            }
            for r in range(lo, hi)
        ],
        "vehicle_id": rt.get("vehicle_id"),
        "realtime_age_s": fresh.age_s,
        "realtime_stale": fresh.stale,
    })


def _default_trip_date(index: ScheduleIndex, service: int, now: float) -> dt.date | None:
    """The trip's latest service date up to today (local), else its first one."""
    if service < 0:
        return None
    dates = index.calendar.dates_of(service)
    if not dates:
        return None
    today = local_date_ordinal(now, index.timezone)
    past = [d for d in dates if d.toordinal() <= today]
    return past[-1] if past else dates[0]
