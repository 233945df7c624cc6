"""``GET /v1/feeds/{feed}/stops/{stop}/departures``: the departure board, with realtime, cached
for the second it was rendered in (``gateway.http.board_cache``)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from feeds.realtime.board import realtime_board
from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import iso_local
from gateway.errors import NotFound
from gateway.http import params, render
from gateway.http.appkeys import BOARD_CACHE, CATALOG, SETTINGS, STORE
from gateway.replica.feeds import LoadedFeed
from gateway.replica.realtime import RealtimeView


def _stop(index: ScheduleIndex, stop_id: str) -> int:
    i = index.stops.index_of.get(stop_id)
    if i is None:
        raise NotFound(f"no stop {stop_id!r} in feed {index.feed_id!r}", code="stop_not_found")
    return i


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
