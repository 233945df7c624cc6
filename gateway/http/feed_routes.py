"""Feeds and what is in them: ``GET /v1/feeds``, ``/v1/feeds/{feed}`` (with health), stop search,
vehicles and alerts."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from feeds.realtime.vehicles import in_bbox
from feeds.schedule.index import ScheduleIndex
from feeds.schedule.stop_search import StopSearch
from gateway.errors import BadRequest
from gateway.http import params, render
from gateway.http.appkeys import CATALOG, CLOCK, SEARCH_CACHE, SETTINGS
from gateway.http.json_io import json_response
from gateway.replica.feeds import LoadedFeed
from gateway.replica.realtime import RealtimeView, thresholds
from gateway.settings import Settings


def requested_feed(request: web.Request) -> LoadedFeed:
    return request.app[CATALOG].get(request.match_info["feed"])


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
    return json_response(_summary(request, requested_feed(request)))


async def vehicles(request: web.Request) -> web.Response:
    feed = requested_feed(request)
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
    feed = requested_feed(request)
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


async def stop_search(app: web.Application, feed_id: str, index: ScheduleIndex) -> StopSearch:
    """The stop search of this version of the feed: built once, in a thread (about a second at
    national size, most of it in numpy with the GIL released), by the first request to need it;
    requests arriving meanwhile await the same build. One version per feed is kept; a build
    that failed is forgotten, so the next request tries again."""
    cache = app[SEARCH_CACHE]
    entry = cache.get(feed_id)
    if entry is None or entry[0] != index.version:
        build = asyncio.ensure_future(asyncio.to_thread(StopSearch, index.stops))
        # retrieved here too, for when every request awaiting it was cancelled
        build.add_done_callback(lambda done: done.cancelled() or done.exception())
        entry = cache[feed_id] = (index.version, build)
    try:
        # shielded: a request cancelled while it waits leaves the build to the others
        return await asyncio.shield(entry[1])
    except Exception:
        if cache.get(feed_id) is entry:
            del cache[feed_id]
        raise


async def search_stops(request: web.Request) -> web.Response:
    feed = requested_feed(request)
    index = feed.ready_index()
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
    search = await stop_search(request.app, feed.config.id, index)
    found = search.search(text, near, radius, limit)
    return json_response(
        {"stops": [render.stop(index, i, d) for i, d in found]}
    )
