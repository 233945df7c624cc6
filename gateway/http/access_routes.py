"""Access on the app: ``install`` builds the guard, the limiter, the tier cache and signup,
and returns the routes that go with them for ``build_app`` to register.

- ``GET /v1/keys/me``: the caller's kind, tier, limits and usage (this minute, this month).
- Operator routes on feeds (``gateway.http.operator_routes``), registered here so that they
  keep their place in the routing order.
- Self-service: ``POST /v1/keys``, ``GET/POST /signup``, ``GET /`` (→ /signup); ops:
  ``GET /metrics``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.access.caller import CALLER, Caller
from gateway.access.guard import Guard
from gateway.access.limiter import KeyLimiter
from gateway.access.signup import SignupService
from gateway.access.tiers import TierCache
from gateway.clock import Clock
from gateway.errors import BadRequest, StoreUnavailable
from gateway.http import signup_routes
from gateway.http.json_io import json_response
from gateway.http.operator_routes import create_feed, delete_feed, patch_feed
from gateway.observability import metrics
from gateway.settings import Settings
from gateway.store.store import Store

log = logging.getLogger(__name__)

GUARD = web.AppKey("guard", Guard)
PUBLIC_V1 = {("POST", "/v1/keys")}  # /v1 routes that need no key


def _caller(request: web.Request) -> Caller:
    caller: Caller | None = request.get(CALLER)
    if caller is None:
        raise BadRequest("no API key on this request")
    return caller


async def keys_me(request: web.Request) -> web.Response:
    c = _caller(request)
    limits = c.limits
    minute_used = (limits.per_minute - c.minute_remaining) if limits.per_minute else None
    return json_response({
        "key_id": c.key_id,
        "kind": c.kind,
        "tier": c.tier,
        "limits": limits.to_json(),
        "usage": {"minute": minute_used, "month": c.month_used, "month_name": c.month.name},
        "remaining": {
            "minute": c.minute_remaining if limits.per_minute else None,
            "month": (max(0, limits.per_month - c.month_used)
                      if limits.per_month and c.month_used is not None else None),
        },
        "expires": c.expires or None,
        "degraded": c.source != "store",
    })


def _refuse_bench_mode_off_loopback(settings: Settings) -> None:
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback:
        raise SystemExit("GATEWAY_BENCH_NO_AUTH=1 is refused unless the API listens on a "
                         f"loopback address (--host is {settings.host!r})")
    for _ in range(3):
        log.warning("GATEWAY_BENCH_NO_AUTH=1: AUTHENTICATION AND RATE LIMITS ARE OFF. "
                    "Benchmarks only; never in production.")


def install(app: web.Application, settings: Settings, store: Store, clock: Clock,
            monotonic: Callable[[], float]) -> list[web.RouteDef]:
    """Keys, tiers, limits and signup on ``app``; returns its routes (keys, signup, operator
    routes and /metrics) for ``gateway.http.app`` to register behind its endpoint wrapper."""
    if settings.bench_no_auth:
        _refuse_bench_mode_off_loopback(settings)
    limiter = KeyLimiter(store.sibling(settings.limiter_timeout_s), settings.breaker_seconds,
                         settings.limiter_timeout_s, settings.reserve_seconds, monotonic)
    tiers = TierCache(limiter.store, settings.tier_cache_seconds)  # fails fast too
    if not settings.bench_no_auth:
        app[GUARD] = Guard(settings, clock, limiter, tiers, monotonic)
    app[signup_routes.SIGNUP] = SignupService(store, clock, settings, limiter, tiers)

    routes = [
        web.get("/v1/keys/me", keys_me),
        web.post("/v1/keys", signup_routes.post_keys),
        web.post("/v1/feeds", create_feed),
        web.patch("/v1/feeds/{feed}", patch_feed),
        web.delete("/v1/feeds/{feed}", delete_feed),
        web.get("/", signup_routes.root),
        web.get("/signup", signup_routes.signup_page),
        web.post("/signup", signup_routes.signup_form),
        web.get("/metrics", metrics.metrics_handler),
    ]

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        with contextlib.suppress(StoreUnavailable):
            await tiers.refresh()
        yield
        await limiter.close()

    app.cleanup_ctx.append(lifecycle)
    return routes
