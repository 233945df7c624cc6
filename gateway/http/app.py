"""The aiohttp application: routes behind one endpoint wrapper (authentication, errors,
rate-limit headers, metrics), lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from feeds.errors import FeedError
from gateway.access.guard import CALLER, Guard, require_operator, set_limit_headers
from gateway.clock import Clock
from gateway.errors import ApiError, StoreUnavailable, Unprocessable
from gateway.http import handlers, key_routes, openapi, routing
from gateway.http.appkeys import (
    BOARD_CACHE,
    CATALOG,
    CLOCK,
    FEEDS,
    POLLERS,
    SEARCH_CACHE,
    SETTINGS,
    STORE,
    BoardCache,
    json_response,
)
from gateway.http.key_routes import PUBLIC_V1
from gateway.ingest.feed_service import FeedService
from gateway.ingest.realtime_feed import PollerManager
from gateway.observability.request_metrics import HTTP_METRICS, RouteMetrics, flush_periodically
from gateway.replica.feeds import FeedCatalog
from gateway.settings import Settings
from gateway.store.store import Store

log = logging.getLogger("gateway.access.guard")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Quick = Callable[[web.Request], bytes | None]  # a JSON body ready without the handler, or None
ENDPOINTS = web.AppKey("endpoints", set[Handler])  # every route's handler, as wrapped


def endpoint(handler: Handler, guard: Guard | None, keyed: bool,
             measured: RouteMetrics | None, quick: Quick | None = None) -> Handler:
    """``handler`` as served: every route is registered through this wrapper, and the app has
    no aiohttp middleware (a middleware costs every request three more coroutine layers and a
    handler-chain lookup: measured at 3.3 us of a 30 us request). The wrapper:

    - authenticates and counts the request first when ``keyed`` (the /v1 routes but signup)
      by ``guard`` (``gateway.access.guard``; None in bench mode); refusals (401, 429, 503) never
      reach the handler;
    - is the one place where errors become HTTP: ApiError → its status and stable code;
    - answers with ``quick(request)`` when it has a body ready (a departures board rendered
      earlier in this second), without running the handler;
    - sets the caller's rate-limit headers on whatever answers (handlers return their
      responses unprepared, so the headers can still be added here);
    - measures the request into its route's series (``gateway.observability.request_metrics``), if
    any.
    """
    admit = guard.admit if keyed and guard is not None else None
    admit_reserved = guard.admit_reserved if keyed and guard is not None else None

    async def serve(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        caller = None
        try:
            if admit is not None and admit_reserved is not None:
                caller = admit_reserved(request) or await admit(request)
            body = quick(request) if quick is not None else None
            response: web.StreamResponse
            if body is not None:
                response = web.Response(body=body, content_type="application/json")
            else:
                if caller is not None:
                    request[CALLER] = caller  # for handlers that read it (require_operator)
                response = await handler(request)
        except ApiError as exc:
            response = json_response(exc.body(), status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _http_error(exc)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = json_response(
                {"error": {"code": "internal_error", "message": "internal server error"}},
                status=500)
        set_limit_headers(request, response, caller)
        elapsed = time.perf_counter() - started
        if measured is not None:
            measured.record(request.method, response, elapsed)
        if log.isEnabledFor(logging.DEBUG):  # path_qs costs a URL build: only when logged
            log.debug("%s %s %s %.1fms", request.method, request.path_qs, response.status,
                      elapsed * 1000)
        return response

    return serve


def _http_error(exc: web.HTTPException) -> web.Response:
    code = {404: "not_found", 405: "method_not_allowed",
            413: "payload_too_large"}.get(exc.status, "http_error")
    allow = exc.headers.get("Allow")
    return json_response({"error": {"code": code, "message": exc.reason}}, status=exc.status,
                         headers={"Allow": allow} if allow else None)


async def unmatched(request: web.Request) -> web.StreamResponse:
    """The catch-all route: 405 when another route has this path (with its ``Allow``), else
    404; both become JSON errors in ``endpoint`` like every other error."""
    allowed: set[str] = set()
    this = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not this:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def add_routes(app: web.Application, routes: list[web.RouteDef], guard: Guard | None,
               measure: bool, quick: dict[Handler, Quick] | None = None) -> None:
    """Register ``routes`` in order, each behind ``endpoint`` (aiohttp tries the routes that
    share a path prefix in registration order: the hot ones go first). A /v1 route needs a
    key, except the ones in ``PUBLIC_V1``; the catch-all needs none. ``quick``: by handler,
    its answer from a cache (see ``endpoint``). Paths with variables are matched by
    ``gateway.http.routing``."""
    for route in routes:
        catch_all = route.handler is unmatched
        keyed = (not catch_all and route.path.startswith("/v1/")
                 and (route.method, route.path) not in PUBLIC_V1)
        wrapped = endpoint(route.handler, guard, keyed,
                           RouteMetrics("unmatched" if catch_all else route.path)
                           if measure else None, (quick or {}).get(route.handler))
        app[ENDPOINTS].add(wrapped)
        routing.register(app.router, web.RouteDef(route.method, route.path, wrapped,
                                                  route.kwargs))


async def _refuse_unwrapped_routes(app: web.Application) -> None:
    """on_startup: a route added with ``app.router.add_*`` instead of ``add_routes`` would
    serve without authentication, JSON errors or metrics; refuse to start instead."""
    for route in app.router.routes():
        if route.handler not in app[ENDPOINTS]:
            raise RuntimeError(
                f"route {route.method} {route.resource.canonical if route.resource else '?'} "
                "was not added with gateway.app.add_routes: it would serve without "
                "authentication")


def build_app(settings: Settings, store: Store, clock: Clock,
              catalog: FeedCatalog | None = None, follow_store: bool = True) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[HTTP_METRICS] = settings.metrics  # request latency and bytes, by route and status
    catalog = catalog or FeedCatalog(store)
    app[SETTINGS] = settings
    app[STORE] = store
    app[CLOCK] = clock
    app[CATALOG] = catalog
    app[FEEDS] = FeedService(store, settings, clock, catalog)
    app[SEARCH_CACHE] = {}
    app[BOARD_CACHE] = BoardCache(catalog, clock)
    app[POLLERS] = PollerManager(store, catalog, settings, clock)
    app[ENDPOINTS] = set()
    app.on_startup.insert(0, _refuse_unwrapped_routes)  # before anything is started
    routes = [
        # The hot routes first: aiohttp tries the routes under /v1/feeds in registration order.
        web.get("/v1/feeds/{feed}/stops/{stop}/departures", handlers.departures),
        web.get("/v1/feeds/{feed}/vehicles", handlers.vehicles),
        web.get("/v1/feeds/{feed}/alerts", handlers.alerts),
        web.get("/v1/feeds/{feed}/trips/{trip}", handlers.trip),
        *key_routes.install(app, settings, store, clock),  # keys, signup, operator routes
        web.get("/healthz", handlers.healthz),
        web.get("/readyz", handlers.readyz),
        web.get("/openapi.json", openapi.openapi_json),
        web.get("/docs", openapi.docs),
        web.get("/v1/feeds", handlers.list_feeds),
        web.get("/v1/feeds/{feed}", handlers.get_feed),
        web.get("/v1/feeds/{feed}/stops", handlers.search_stops),
        web.post("/v1/feeds/{feed}/realtime", push_realtime),
        # Indexed under "/", so tried after every route with a longer prefix, whenever added
        web.route("*", "/{tail:.*}", unmatched),
    ]
    add_routes(app, routes, app.get(key_routes.GUARD), settings.metrics,
               quick={handlers.departures: app[BOARD_CACHE].answer})

    if settings.metrics:
        app.cleanup_ctx.append(flush_periodically)
    if follow_store:
        app.cleanup_ctx.append(_follow_store)
        if settings.role in ("all", "ingest"):
            app.cleanup_ctx.append(_run_pollers)
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


async def _run_pollers(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[POLLERS].run(), name="realtime-pollers")
    yield
    await stop_tasks([task])


async def push_realtime(request: web.Request) -> web.Response:
    """POST /v1/feeds/{feed}/realtime (operators): a GTFS-RT FeedMessage instead of a poll."""
    require_operator(request)
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
    await stop_tasks(tasks)
