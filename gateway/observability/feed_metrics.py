"""Prometheus metrics of feed ingestion (static and realtime), exported by ``GET /metrics``.

Realtime age is computed at scrape time from the last accepted header timestamp and the
process clock (which ``GATEWAY_CLOCK`` may shift), so it grows while a feed is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.clock import Clock

FETCH_SECONDS = Histogram(
    "tg_feed_fetch_seconds", "Realtime fetch duration", ["feed", "kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
FETCH_BYTES = Counter("tg_feed_fetch_bytes_total", "Realtime bytes fetched (decompressed)",
                      ["feed", "kind"])
FETCH_ERRORS = Counter("tg_feed_fetch_errors_total",
                       "Realtime fetches or bodies refused, by code", ["feed", "kind", "code"])
MERGE_SECONDS = Histogram(
    "tg_feed_merge_seconds", "Decode + merge + publish of one realtime snapshot",
    ["feed", "kind"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
MATCH_RATE = Gauge("tg_feed_match_rate", "Share of realtime entities matched to the schedule",
                   ["feed", "kind"])
ENTITIES = Gauge("tg_feed_entities", "Entities in the last accepted realtime snapshot",
                 ["feed", "kind"])
REJECTED = Counter("tg_feed_rejected_entities_total", "Realtime entities rejected, by reason",
                   ["feed", "kind", "reason"])
STATIC_SECONDS = Histogram(
    "tg_static_ingest_seconds", "Static GTFS fetch + validate + index + publish", ["feed"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0))
STATIC_ERRORS = Counter("tg_static_ingest_errors_total", "Static updates refused, by code",
                        ["feed", "code"])


class _AgeCollector(Collector):
    def __init__(self) -> None:
        self.timestamps: dict[tuple[str, str], int] = {}
        self.clock: Clock | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("tg_feed_realtime_age_seconds",
                                   "Seconds since the last accepted realtime header timestamp",
                                   labels=["feed", "kind"])
        if self.clock is not None:
            now = self.clock.now()
            for (feed, kind), ts in list(self.timestamps.items()):
                family.add_metric([feed, kind], max(0.0, now - ts))
        yield family


AGE = _AgeCollector()
REGISTRY.register(AGE)


def snapshot_accepted(feed: str, kind: str, meta: dict[str, Any], clock: Clock,
                      seconds: float) -> None:
    MERGE_SECONDS.labels(feed, kind).observe(seconds)
    if meta.get("match_rate") is not None:
        MATCH_RATE.labels(feed, kind).set(meta["match_rate"])
    ENTITIES.labels(feed, kind).set(meta.get("entities") or 0)
    for reason, count in (meta.get("rejected") or {}).items():
        REJECTED.labels(feed, kind, reason).inc(count)
    if meta.get("timestamp"):
        AGE.clock = clock
        AGE.timestamps[(feed, kind)] = int(meta["timestamp"])


def fetched(feed: str, kind: str, seconds: float, size: int | None) -> None:
    FETCH_SECONDS.labels(feed, kind).observe(seconds)
    if size:
        FETCH_BYTES.labels(feed, kind).inc(size)


def refused(feed: str, kind: str, code: str) -> None:
    FETCH_ERRORS.labels(feed, kind, code).inc()


def forget(feed: str) -> None:
    for key in [k for k in AGE.timestamps if k[0] == feed]:
        del AGE.timestamps[key]
