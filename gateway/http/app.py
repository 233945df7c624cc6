"""The aiohttp application: its parts, its routes (each behind ``gateway.http.endpoint``) and
the background tasks it runs while it serves."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.clock import Clock
from gateway.errors import StoreUnavailable
from gateway.http import access_routes, departures, feed_routes, openapi, ops, trips
from gateway.http.appkeys import (
    BOARD_CACHE,
    CATALOG,
    CLOCK,
    FEEDS,
    POLLERS,
    SEARCH_CACHE,
    SETTINGS,
    STORE,
)
from gateway.http.board_cache import BoardCache
from gateway.http.endpoint import ENDPOINTS, add_routes, refuse_unwrapped_routes, unmatched
from gateway.http.operator_routes import get_job, push_realtime
from gateway.ingest.feed_service import FeedService
from gateway.ingest.jobs import JobRunner
from gateway.ingest.pollers import PollerManager
from gateway.observability.request_metrics import HTTP_METRICS, flush_periodically
from gateway.replica.feeds import FeedCatalog
from gateway.settings import Settings
from gateway.store.store import Store


def build_app(settings: Settings, store: Store, clock: Clock,
              catalog: FeedCatalog | None = None, follow_store: bool = True,
              monotonic: Callable[[], float] = time.monotonic) -> web.Application:
    """The app over ``store``; ``clock`` is the process clock (instants), ``monotonic`` the
    clock the limiter and the guard measure durations with (tests step both)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[HTTP_METRICS] = settings.metrics  # request latency and bytes, by route and status
    catalog = catalog or FeedCatalog(store, versions_dir=settings.versions_dir)
    app[SETTINGS] = settings
    app[STORE] = store
    app[CLOCK] = clock
    app[CATALOG] = catalog
    app[FEEDS] = FeedService(store, settings, clock, catalog)
    app[SEARCH_CACHE] = {}
    app[BOARD_CACHE] = BoardCache(catalog, clock)
    catalog.on_replaced.append(app[BOARD_CACHE].forget)
    searches = app[SEARCH_CACHE]

    def forget_search(feed_id: str) -> None:
        searches.pop(feed_id, None)

    catalog.on_replaced.append(forget_search)
    app[POLLERS] = PollerManager(store, catalog, settings, clock)
    app[ENDPOINTS] = set()
    app.on_startup.insert(0, refuse_unwrapped_routes)  # before anything is started
    routes = [
        # The hot routes first: aiohttp tries the routes under /v1/feeds in registration order.
        web.get("/v1/feeds/{feed}/stops/{stop}/departures", departures.departures),
        web.get("/v1/feeds/{feed}/vehicles", feed_routes.vehicles),
        web.get("/v1/feeds/{feed}/alerts", feed_routes.alerts),
        web.get("/v1/feeds/{feed}/trips/{trip}", trips.trip),
        # keys, signup, operator routes
        *access_routes.install(app, settings, store, clock, monotonic),
        web.get("/healthz", ops.healthz),
        web.get("/readyz", ops.readyz),
        web.get("/openapi.json", openapi.openapi_json),
        web.get("/docs", openapi.docs),
        web.get("/v1/feeds", feed_routes.list_feeds),
        web.get("/v1/feeds/{feed}", feed_routes.get_feed),
        web.get("/v1/feeds/{feed}/stops", feed_routes.search_stops),
        web.post("/v1/feeds/{feed}/realtime", push_realtime),
        web.get("/v1/feeds/{feed}/jobs/{job}", get_job),
        # Indexed under "/", so tried after every route with a longer prefix, whenever added
        web.route("*", "/{tail:.*}", unmatched),
    ]
    add_routes(app, routes, app.get(access_routes.GUARD), settings.metrics,
               quick={departures.departures: app[BOARD_CACHE].answer})

    if settings.metrics:
        app.cleanup_ctx.append(flush_periodically)
    if follow_store:
        app.cleanup_ctx.append(_follow_store)
        if settings.role in ("all", "ingest"):
            app.cleanup_ctx.append(_run_pollers)
            app.cleanup_ctx.append(_run_jobs)
    return app


async def stop_tasks(tasks: list[asyncio.Task[None]], grace_s: float = 10.0) -> None:
    """Cancel background tasks and wait until they are really done.

    A single cancel() is not enough: on Python 3.11 a cancellation that lands just as a
    redis-py command completes inside asyncio.wait_for can be swallowed, and the task runs on.
    """
    deadline = asyncio.get_running_loop().time() + grace_s
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            logging.getLogger(__name__).warning("tasks still running at shutdown: %s",
                                                [t.get_name() for t in pending])
            return
        _, pending = await asyncio.wait(pending, timeout=min(0.5, remaining))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logging.getLogger(__name__).warning("task %s ended with %r", task.get_name(),
                                                task.exception())


async def _run_jobs(app: web.Application) -> AsyncIterator[None]:
    """Static ingests queued by API processes (``gateway.ingest.jobs``)."""
    runner = JobRunner(app[STORE], app[FEEDS], app[CLOCK])
    task = asyncio.create_task(runner.run(), name="ingest-jobs")
    yield
    await stop_tasks([task])


async def _run_pollers(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[POLLERS].run(), name="realtime-pollers")
    yield
    await stop_tasks([task])


async def _follow_store(app: web.Application) -> AsyncIterator[None]:
    catalog = app[CATALOG]
    try:
        await catalog.refresh()
    except StoreUnavailable as exc:
        logging.getLogger(__name__).warning("initial feed load failed: %s", exc.message)
    tasks = [asyncio.create_task(catalog.run(), name="catalog-events"),
             asyncio.create_task(catalog.run_periodic(), name="catalog-refresh")]
    yield
    await stop_tasks(tasks)
