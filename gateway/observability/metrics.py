"""Prometheus metrics (prometheus-client) and ``GET /metrics``.

Counted at the service boundary, never swallowed: rate-limit decisions by tier, result and
source (``store``, or ``fallback`` while the store is down), signups by result, store errors by
operation, authentication failures by code, the limiter's store latency and circuit state.
"""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

DECISIONS = Counter(
    "tg_ratelimit_decisions_total", "Rate-limit decisions on keyed requests",
    ["tier", "result", "source"])
SIGNUPS = Counter("tg_signups_total", "Self-service key signups by result", ["result"])
STORE_ERRORS = Counter("tg_store_errors_total", "Store calls that failed", ["operation"])
AUTH_FAILURES = Counter("tg_auth_failures_total", "Refused API keys by error code", ["code"])
LIMITER_SECONDS = Histogram(
    "tg_limiter_store_seconds", "Round trip of one batch of auth + rate-limit script calls",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
BREAKER_OPEN = Gauge("tg_store_breaker_open",
                     "1 while the limiter's circuit breaker keeps requests off the store")

_decisions: dict[tuple[str, str, str], Counter] = {}


def decision(tier: str, result: str, source: str, n: int = 1) -> None:
    """Count ``n`` decisions (children cached: this runs for every keyed request)."""
    key = (tier, result, source)
    child = _decisions.get(key)
    if child is None:
        child = _decisions[key] = DECISIONS.labels(tier, result, source)
    child.inc(n)


def _exposition() -> bytes:
    """This process's registry; under ``serve --workers N`` (PROMETHEUS_MULTIPROC_DIR set) the
    values of every worker, aggregated from their files, plus this process's scrape-time
    collectors (realtime age)."""
    from gateway.observability.request_metrics import flush

    flush()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from gateway.observability.feed_metrics import AGE

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(AGE)
    return generate_latest(registry)


async def metrics_handler(request: web.Request) -> web.Response:
    response = web.Response(body=_exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
