"""HTTP handlers of the /v1 API and the ops endpoints."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from aiohttp import web

from feeds.realtime.board import realtime_board
from feeds.realtime.vehicles import in_bbox
from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import iso_local, local_date_ordinal, service_day_origin
from feeds.schedule.stop_search import StopSearch
from gateway.errors import BadRequest, NotFound
from gateway.http import params, render
from gateway.http.appkeys import (
    BOARD_CACHE,
    CATALOG,
    CLOCK,
    SEARCH_CACHE,
    SETTINGS,
    STORE,
    json_response,
)
from gateway.replica.feeds import LoadedFeed
from gateway.replica.realtime import RealtimeView, thresholds
from gateway.settings import Settings


def _feed(request: web.Request) -> LoadedFeed:
    return request.app[CATALOG].get(request.match_info["feed"])


def _stop(index: ScheduleIndex, stop_id: str) -> int:
    i = index.stops.index_of.get(stop_id)
    if i is None:
        raise NotFound(f"no stop {stop_id!r} in feed {index.feed_id!r}", code="stop_not_found")
    return i


def _realtime_health(feed: LoadedFeed, view: RealtimeView | None, now: float,
                     settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    urls = {"trip_updates": feed.config.trip_updates,
            "vehicle_positions": feed.config.vehicle_positions, "alerts": feed.config.alerts}
    limits = thresholds(settings)
    for kind, url in urls.items():
        meta = (view.meta.get(kind) if view else None) or {}
        if url is None and not meta:
            out[kind] = None
            continue
        fresh = view.freshness(kind, now, limits[kind], url is not None) if view else None
        out[kind] = {
            "configured": url is not None,
            "last_fetch": meta.get("fetched_at"),
            "http_status": meta.get("http_status"),
            "bytes": meta.get("bytes"),
            "header_timestamp": meta.get("timestamp"),
            "age_s": fresh.age_s if fresh else None,
            "stale": fresh.stale if fresh else None,
            "entities": meta.get("entities"),
            "matched": meta.get("matched"),
            "match_rate": meta.get("match_rate"),
            "rejected": meta.get("rejected") or {},
            "flagged": meta.get("flagged") or {},
            "last_error": meta.get("last_error"),
        }
    return out


def feed_summary(feed: LoadedFeed, view: RealtimeView | None = None, now: float = 0.0,
                 settings: Settings | None = None) -> dict[str, Any]:
    static = feed.status.get("static") or {}
    return {
        "id": feed.config.id,
        "agency": static.get("agency"),
        "timezone": static.get("timezone"),
        "static": {
            "version": static.get("version"),
            "loaded_at": static.get("loaded_at"),
            "last_fetch": static.get("last_fetch"),
            "service_from": static.get("service_from"),
            "service_to": static.get("service_to"),
            "counts": static.get("counts"),
            "last_error": static.get("last_error"),
        },
        "realtime": _realtime_health(feed, view, now, settings or Settings()),
        "ready": feed.index is not None,
    }


def _summary(request: web.Request, feed: LoadedFeed) -> dict[str, Any]:
    app = request.app
    return feed_summary(feed, app[CATALOG].realtime.get(feed.config.id), app[CLOCK].now(),
                        app[SETTINGS])


async def list_feeds(request: web.Request) -> web.Response:
    feeds = request.app[CATALOG].feeds
    return json_response({"feeds": [_summary(request, feeds[k]) for k in sorted(feeds)]})


async def get_feed(request: web.Request) -> web.Response:
    return json_response(_summary(request, _feed(request)))


async def vehicles(request: web.Request) -> web.Response:
    feed = _feed(request)
    app = request.app
    now = app[CLOCK].now()
    view = app[CATALOG].realtime_view(feed.config.id)
    bbox = params.get_bbox(request.query, "bbox")
    route = params.get_str(request.query, "route")
    fresh = view.freshness("vehicle_positions", now, app[SETTINGS].stale_vehicles_s,
                           feed.config.vehicle_positions is not None)
    out = []
    for v in view.vehicles if not fresh.stale else []:
        if route is not None and v.get("route_id") != route:
            continue
        if bbox is not None and not in_bbox(v, bbox):
            continue
        ts = v.get("timestamp")
        out.append({**v, "age_s": max(0, int(now - ts)) if ts else None})
    return json_response({"feed": feed.config.id, "vehicles": out,
                          "realtime_age_s": fresh.age_s, "realtime_stale": fresh.stale})


async def alerts(request: web.Request) -> web.Response:
    feed = _feed(request)
    app = request.app
    now = app[CLOCK].now()
    view = app[CATALOG].realtime_view(feed.config.id)
    q = request.query
    fresh = view.freshness("alerts", now, app[SETTINGS].stale_alerts_s,
                           feed.config.alerts is not None)
    found = [] if fresh.stale else view.alerts.filter(
        now, params.get_str(q, "stop"), params.get_str(q, "route"), params.get_str(q, "trip"))
    return json_response({"feed": feed.config.id, "alerts": found,
                          "realtime_age_s": fresh.age_s, "realtime_stale": fresh.stale})


async def search_stops(request: web.Request) -> web.Response:
    index = _feed(request).ready_index()
    q = request.query
    settings = request.app[SETTINGS]
    text = params.get_str(q, "q")
    near = params.get_latlon(q, "near")
    radius = params.get_float(q, "radius", 1.0, 100_000.0)
    limit = params.get_int(q, "limit", settings.default_limit, 1, settings.max_limit)
    if text is None and near is None:
        raise BadRequest("give q (name) and/or near=lat,lon", code="bad_parameter",
                         details={"parameter": "q"})
    if radius is not None and near is None:
        raise BadRequest("radius needs near=lat,lon", details={"parameter": "radius"})
    if near is not None and radius is None:
        radius = 1000.0
    cache = request.app[SEARCH_CACHE]
    search = cache.get(index.version)
    if search is None:
        search = StopSearch(index.stops)
        cache.clear()
        cache[index.version] = search
    found = search.search(text, near, radius, limit)
    return json_response(
        {"stops": [render.stop(index, i, d) for i, d in found]}
    )


async def departures(request: web.Request) -> web.Response:
    boards = request.app[BOARD_CACHE]
    now = boards.clock.now()
    target, second = request.raw_path, int(now)
    body = boards.get(target, second)  # the common case: rendered earlier in this second
    if body is None:
        catalog = request.app[CATALOG]
        feed = catalog.get(request.match_info["feed"])
        view = catalog.realtime_view(feed.config.id)
        revision = view.revision  # before any await: a change meanwhile makes the entry stale
        body = await _render_board(request, feed, view, now)
        boards.put(target, second, feed, view, revision, body)
    return web.Response(body=body, content_type="application/json")


async def _render_board(request: web.Request, feed: LoadedFeed, view: RealtimeView,
                        now: float) -> bytes:
    index = feed.ready_index()
    stop_i = _stop(index, request.match_info["stop"])
    q = request.query
    app = request.app
    settings = app[SETTINGS]
    start = int(params.get_instant(q, "time", now))
    window = params.get_int(q, "window", settings.default_window_min, 1, settings.max_window_min)
    limit = params.get_int(q, "limit", settings.default_limit, 1, settings.max_limit)
    route_id = params.get_str(q, "route")
    include_cancelled = params.get_bool(q, "include_cancelled", False)
    route = None
    if route_id is not None:
        route = index.routes.index_of.get(route_id)
        if route is None:
            raise NotFound(f"no route {route_id!r} in feed {index.feed_id!r}",
                           code="route_not_found")
    fresh = view.freshness("trip_updates", now, settings.stale_trip_updates_s,
                           feed.config.trip_updates is not None)
    members = index.stops.board_members(stop_i)
    overlays: dict[int, list[Any]] = {}
    if fresh.usable:
        by_id = await view.stop_overlays(app[STORE], [index.stops.ids[m] for m in members])
        overlays = {index.stops.index_of[s]: recs for s, recs in by_id.items()}
    entries = realtime_board(index, stop_i, start, window * 60, route, overlays,
                             include_cancelled)[:limit]
    alerts_fresh = view.freshness("alerts", now, settings.stale_alerts_s,
                                  feed.config.alerts is not None)
    alert_index = view.alerts if not alerts_fresh.stale else None
    return orjson.dumps({
        "feed": index.feed_id,
        "stop": render.stop(index, stop_i, full=False),
        "time": iso_local(start, index.timezone),
        "window": window,
        "departures": [render.board_entry(index, e, alert_index, now) for e in entries],
        "realtime_age_s": fresh.age_s,
        "realtime_stale": fresh.stale,
    })


async def trip(request: web.Request) -> web.Response:
    feed = _feed(request)
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


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    try:
        await request.app[STORE].ping()
        store_ok = True
    except Exception:  # noqa: BLE001 - any failure means not ready
        store_ok = False
    feeds_ok = catalog.loaded_once and all(f.index is not None for f in catalog.feeds.values())
    ok = store_ok and feeds_ok
    return json_response(
        {"status": "ready" if ok else "not_ready", "store": store_ok,
         "feeds": {k: f.index is not None for k, f in catalog.feeds.items()}},
        status=200 if ok else 503,
    )
