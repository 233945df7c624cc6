"""Request metrics on the hot path: latency by route and status, response body bytes.

Recorded by every endpoint (``gateway.http.app.endpoint``) through its route's ``RouteMetrics``,
so nothing is resolved per request: the labelled children of a (route, method, status) are
looked up once. The route label is the route's path pattern
(``/v1/feeds/{feed}/stops/{stop}/departures``), never the raw URL, so the label set stays
bounded; requests that match no route are ``unmatched``.

``GATEWAY_METRICS=0`` sets ``app[HTTP_METRICS]`` false: nothing is recorded (see
``gateway.http.app``): that is how ``bench/load.py`` measures what instrumentation costs.

Several processes (``serve --workers N``): the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory before it spawns the workers (``prepare_multiprocess_dir``), so every worker
writes its values to memory-mapped files there and ``GET /metrics`` on any worker aggregates all
of them (``prometheus_client.multiprocess.MultiProcessCollector``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_SECONDS = Histogram(
    "tg_http_request_seconds",
    "HTTP request latency (handler, authentication and rate limiting) by route",
    ["route", "method", "status"], buckets=BOUNDS)
RESPONSE_BYTES = Counter(
    "tg_http_response_bytes_total", "HTTP response body bytes by route",
    ["route", "method", "status"])

HTTP_METRICS = web.AppKey("http_metrics", bool)
FLUSH_SECONDS = 1.0


class _Series:
    """One (route, method, status): observations counted in plain ints and floats per request
    (prometheus_client's observe() takes a lock per value and scans the buckets: measured at
    about 10 % of a departures request), moved into the prometheus children by ``flush()`` —
    before every scrape of this process and every second (``flush_periodically``), so the
    files of ``--workers N`` lag at most a second."""

    __slots__ = ("counter", "counts", "histogram", "seconds", "sent")

    def __init__(self, histogram: Any, counter: Any) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)  # the last one: +Inf
        self.seconds = 0.0
        self.sent = 0
        self.histogram = histogram
        self.counter = counter

    def flush(self) -> None:
        counts = self.counts
        for i, n in enumerate(counts):
            if n:
                counts[i] = 0
                self.histogram._buckets[i].inc(n)
        if self.seconds:
            self.histogram._sum.inc(self.seconds)
            self.seconds = 0.0
        if self.sent:
            self.counter.inc(self.sent)
            self.sent = 0


_children: dict[tuple[str, str, str], _Series] = {}  # by labels: route, method, status


def flush() -> None:
    for series in list(_children.values()):
        series.flush()


async def flush_periodically(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx of the app when metrics are on."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            flush()

    task = asyncio.create_task(loop(), name="http-metrics-flush")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    flush()


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class RouteMetrics:
    """The series of one route, held by its endpoint (``gateway.http.app``): the route label is
    fixed when the route is registered, so a request costs one dict lookup by method and
    status. The label is the route's path pattern (``/v1/feeds/{feed}/stops/{stop}/departures``),
    never the raw URL, so the label set stays bounded; the catch-all endpoint is ``unmatched``,
    and methods outside ``_METHODS`` are ``other``."""

    __slots__ = ("_series", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self._series: dict[tuple[str, int], _Series] = {}

    def record(self, method: str, response: web.StreamResponse, elapsed: float) -> None:
        key = (method, response.status)
        series = self._series.get(key)
        if series is None:
            series = self._series_of(method, response.status)
        series.counts[bisect_left(BOUNDS, elapsed)] += 1  # Prometheus buckets are "<= bound"
        series.seconds += elapsed
        body = getattr(response, "body", None)
        if isinstance(body, bytes):
            series.sent += len(body)

    def _series_of(self, method: str, status: int) -> _Series:
        label = method if method in _METHODS else "other"
        labels = (self.route, label, str(status))
        series = _children.get(labels)
        if series is None:
            series = _children[labels] = _Series(REQUEST_SECONDS.labels(*labels),
                                                 RESPONSE_BYTES.labels(*labels))
        if label == method:  # unknown methods are looked up by label: the cache stays bounded
            self._series[(method, status)] = series
        return series


def prepare_multiprocess_dir() -> Path:
    """In the parent of ``--workers N``: a clean directory for the workers' metric files.

    An operator-set ``PROMETHEUS_MULTIPROC_DIR`` is used (its old ``*.db`` files removed: they
    are from processes that are gone); otherwise a new temporary directory. Must run before the
    workers start: they read the variable when they import prometheus_client.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="tg-prometheus-"))
        os.environ[MULTIPROC_ENV] = str(path)
    return path


def remove_multiprocess_dir(path: Path) -> None:
    if path.name.startswith("tg-prometheus-"):
        shutil.rmtree(path, ignore_errors=True)
