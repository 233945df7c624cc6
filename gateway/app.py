"""The aiohttp application: routes, the error middleware, authentication, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from feeds.errors import FeedError
from gateway import api
from gateway.auth import Authenticator
from gateway.catalog import FeedCatalog
from gateway.clock import Clock
from gateway.errors import ApiError, Forbidden, StoreUnavailable, Unprocessable
from gateway.feed_service import FeedService
from gateway.realtime import PollerManager
from gateway.settings import Settings
from gateway.state import (
    AUTH,
    CATALOG,
    CLOCK,
    FEEDS,
    POLLERS,
    SEARCH_CACHE,
    SETTINGS,
    STORE,
    json_response,
)
from gateway.store import Store

log = logging.getLogger("gateway.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEY_RECORD = web.RequestKey("key_record", object)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors become HTTP: ApiError → its status and stable code."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status, "http_error")
        response = json_response({"error": {"code": code, "message": exc.reason}},
                                 status=exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = json_response(
            {"error": {"code": "internal_error", "message": "internal server error"}},
            status=500)
    log.debug("%s %s %s %.1fms", request.method, request.path_qs, response.status,
              (time.perf_counter() - started) * 1000)
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/"):
        presented = request.headers.get("X-API-Key") or request.query.get("key")
        request[KEY_RECORD] = await request.app[AUTH].authenticate(presented)
    return await handler(request)


def build_app(settings: Settings, store: Store, clock: Clock,
              catalog: FeedCatalog | None = None, follow_store: bool = True) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=64 * 1024 * 1024)
    catalog = catalog or FeedCatalog(store)
    app[SETTINGS] = settings
    app[STORE] = store
    app[CLOCK] = clock
    app[CATALOG] = catalog
    app[FEEDS] = FeedService(store, settings, clock, catalog)
    app[AUTH] = Authenticator(store, clock, settings.key_cache_seconds)
    app[SEARCH_CACHE] = {}

    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/v1/feeds", api.list_feeds)
    app.router.add_get("/v1/feeds/{feed}", api.get_feed)
    app.router.add_get("/v1/feeds/{feed}/stops", api.search_stops)
    app.router.add_get("/v1/feeds/{feed}/stops/{stop}/departures", api.departures)
    app.router.add_get("/v1/feeds/{feed}/trips/{trip}", api.trip)
    app.router.add_get("/v1/feeds/{feed}/vehicles", api.vehicles)
    app.router.add_get("/v1/feeds/{feed}/alerts", api.alerts)

    app[POLLERS] = PollerManager(store, catalog, settings, clock)
    app.router.add_post("/v1/feeds/{feed}/realtime", push_realtime)
    if follow_store:
        app.cleanup_ctx.append(_follow_store)
        if settings.role in ("all", "ingest"):
            app.cleanup_ctx.append(_run_pollers)
    return app


async def _run_pollers(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[POLLERS].run(), name="realtime-pollers")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def push_realtime(request: web.Request) -> web.Response:
    """POST /v1/feeds/{feed}/realtime (operators): a GTFS-RT FeedMessage instead of a poll."""
    record = request[KEY_RECORD]
    if getattr(record, "kind", None) != "operator":
        raise Forbidden("pushing realtime needs an operator token", code="forbidden")
    feed = request.app[CATALOG].get(request.match_info["feed"])
    body = await request.read()
    rt = request.app[POLLERS].feed(feed.config.id)
    try:
        results = await rt.apply_pushed(body, feed.index)
    except FeedError as exc:
        raise Unprocessable(exc.message, code=exc.code) from exc
    return json_response({"feed": feed.config.id, "applied": results}, status=202)


async def _follow_store(app: web.Application) -> AsyncIterator[None]:
    catalog = app[CATALOG]
    try:
        await catalog.refresh()
    except StoreUnavailable as exc:
        logging.getLogger(__name__).warning("initial feed load failed: %s", exc.message)
    tasks = [asyncio.create_task(catalog.run(), name="catalog-events"),
             asyncio.create_task(catalog.run_periodic(), name="catalog-refresh")]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
