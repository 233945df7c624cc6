"""The endpoint wrapper every route is served through (authentication, errors as JSON, rate-limit
headers, metrics), and ``add_routes``, the only way routes join the app."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.access.caller import CALLER, set_limit_headers
from gateway.access.guard import Guard
from gateway.errors import ApiError
from gateway.http import routing
from gateway.http.access_routes import PUBLIC_V1
from gateway.http.json_io import json_response
from gateway.observability.request_metrics import RouteMetrics

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


async def refuse_unwrapped_routes(app: web.Application) -> None:
    """on_startup: a route added with ``app.router.add_*`` instead of ``add_routes`` would
    serve without authentication, JSON errors or metrics; refuse to start instead."""
    for route in app.router.routes():
        if route.handler not in app[ENDPOINTS]:
            raise RuntimeError(
                f"route {route.method} {route.resource.canonical if route.resource else '?'} "
                "was not added with gateway.app.add_routes: it would serve without "
                "authentication")
