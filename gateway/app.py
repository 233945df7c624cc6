"""The aiohttp application: routes, the error middleware, authentication, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway import api
from gateway.auth import Authenticator
from gateway.catalog import FeedCatalog
from gateway.clock import Clock
from gateway.errors import ApiError, StoreUnavailable
from gateway.feed_service import FeedService
from gateway.settings import Settings
from gateway.state import (
    AUTH,
    CATALOG,
    CLOCK,
    FEEDS,
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

    if follow_store:
        app.cleanup_ctx.append(_follow_store)
    return app


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
