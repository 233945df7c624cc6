"""Realtime ingest: poll (or accept a push of) GTFS-Realtime, merge, and publish the changes.

One ``RealtimeFeed`` per feed holds what the last good snapshot produced (per-stop overlays,
trip records, the header timestamp per kind) so that the next one writes only what changed. A
body that is refused leaves the last good data in place and is recorded in the feed's realtime
health; staleness is judged by readers from the header timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from typing import Any

import aiohttp
import orjson

from feeds.errors import FeedError, FeedSourceError
from feeds.realtime.alerts import alert_json
from feeds.realtime.decode import (
    RealtimeRejected,
    check_header,
    entity_trip_updates,
    parse_message,
    to_snapshot,
)
from feeds.realtime.incremental import Delta, IncrementalMerger
from feeds.realtime.model import FeedSnapshot
from feeds.realtime.vehicles import process_vehicles
from feeds.schedule.index import ScheduleIndex
from gateway.clock import Clock
from gateway.errors import ApiError
from gateway.ingest.feed_service import iso_utc
from gateway.ingest.realtime_fetch import fetch_realtime
from gateway.observability import feed_metrics
from gateway.replica.feeds import FeedCatalog
from gateway.settings import Settings
from gateway.store.store import Store

log = logging.getLogger(__name__)

KINDS = ("trip_updates", "vehicle_positions", "alerts")
MAX_BACKOFF_S = 300.0


class RealtimeFeed:
    """The write side of one feed's realtime."""

    def __init__(self, store: Store, feed_id: str, clock: Clock) -> None:
        self.store = store
        self.feed_id = feed_id
        self.clock = clock
        self.overlays: dict[str, bytes] | None = None  # None: not yet synced with the store
        self.timestamps: dict[str, int] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.merger: IncrementalMerger | None = None
        self.stored_trips: dict[str, bytes] = {}
        self._lock = asyncio.Lock()

    async def _sync(self) -> None:
        """On the first snapshot after start: learn which overlays the store holds, so stale
        ones left by a previous process are deleted rather than served."""
        if self.overlays is None:
            self.overlays = {s: b"" for s in await self.store.stop_overlay_ids(self.feed_id)}
            self.stored_trips = {k: b"" for k in await self.store.trip_realtime_keys(self.feed_id)}
            for kind, meta in (await self.store.realtime_meta(self.feed_id)).items():
                self.meta[kind] = meta
                if meta.get("timestamp"):
                    self.timestamps[kind] = int(meta["timestamp"])

    async def apply(self, kind: str, body: bytes, index: ScheduleIndex | None,
                    fetch: dict[str, Any] | None = None) -> dict[str, Any]:
        """Decode, check, merge and publish one body. Raises FeedError when refused."""
        async with self._lock:
            await self._sync()
            now = self.clock.now()
            meta = dict(self.meta.get(kind) or {})
            meta.update(fetch or {})
            meta["fetched_at"] = iso_utc(now)
            try:
                started = time.perf_counter()
                if index is None:
                    parse_message(body)  # a broken body is reported as such first
                    raise RealtimeRejected("static_not_loaded",
                                           "the feed has no static version to merge onto")
                if kind == "trip_updates":
                    await self._trip_updates(body, index, meta, now, started)
                else:
                    snapshot = await asyncio.to_thread(self._decode, body, now, kind)
                    await self._publish(kind, snapshot, index, meta)
            except FeedError as exc:
                feed_metrics.refused(self.feed_id, kind, exc.code)
                meta["last_error"] = {"code": exc.code, "message": exc.message,
                                      "at": iso_utc(now)}
                self.meta[kind] = meta
                await self.store.put_realtime_meta(self.feed_id, kind, meta)
                raise
            feed_metrics.snapshot_accepted(self.feed_id, kind, meta, self.clock,
                                           time.perf_counter() - started)
            return meta

    async def record_fetch(self, kind: str, fetch: dict[str, Any],
                           error: FeedError | None) -> None:
        """A fetch that brought no new body (not modified, or failed): keep the last good
        snapshot's health, update the fetch fields and the error."""
        async with self._lock:
            await self._sync()
            now = self.clock.now()
            meta = dict(self.meta.get(kind) or {})
            meta.update(fetch, fetched_at=iso_utc(now))
            meta["last_error"] = None if error is None else {
                "code": error.code, "message": error.message, "at": iso_utc(now)}
            self.meta[kind] = meta
            await self.store.put_realtime_meta(self.feed_id, kind, meta)

    def _decode(self, body: bytes, now: float, kind: str) -> FeedSnapshot:
        version = hashlib.sha256(body).hexdigest()[:16]
        snapshot = to_snapshot(parse_message(body), version)
        check_header(snapshot, now, self.timestamps.get(kind))
        return snapshot

    async def _trip_updates(self, body: bytes, index: ScheduleIndex, meta: dict[str, Any],
                            now: float, started: float) -> None:
        """Only entities whose bytes changed are decoded and merged; only stops whose overlay
        bytes changed are written."""
        existing = None
        if self.merger is None or self.merger.index is not index:
            self.merger = IncrementalMerger(index)
            self.merger.trip_bytes = dict(self.stored_trips)
            existing = self.overlays
        merger = self.merger
        previous = self.timestamps.get("trip_updates")

        def decode_and_merge() -> tuple[FeedSnapshot, int, Delta]:
            # One worker-thread hop for both steps: each hop costs a measurable share of a
            # small snapshot's time.
            header, entities = entity_trip_updates(body, now, previous, merger.known(now))
            return header, len(entities), merger.apply(entities, now, existing)

        header, n_entities, delta = await asyncio.to_thread(decode_and_merge)
        meta.update(version=header.version, timestamp=header.timestamp,
                    entities=n_entities, last_error=None, matched=delta.matched,
                    total=delta.total, match_rate=delta.match_rate,
                    rejected=dict(delta.rejected), flagged=dict(delta.flagged),
                    recomputed=delta.recomputed,
                    changed_stops=len(delta.stop_writes) + len(delta.stop_deletes),
                    merge_ms=round((time.perf_counter() - started) * 1000, 1))
        await self.store.publish_realtime(self.feed_id, "trip_updates", meta,
                                          delta.stop_writes, delta.stop_deletes,
                                          delta.trip_writes, delta.trip_deletes)
        self.overlays = dict(merger.stop_bytes)
        if header.timestamp is not None:
            self.timestamps["trip_updates"] = header.timestamp
        self.meta["trip_updates"] = meta

    async def _publish(self, kind: str, snapshot: FeedSnapshot, index: ScheduleIndex,
                       meta: dict[str, Any]) -> None:
        meta.update(version=snapshot.version, timestamp=snapshot.timestamp,
                    entities=snapshot.entity_count, last_error=None)
        if kind == "vehicle_positions":
            result = process_vehicles(index, snapshot.vehicles)
            meta.update(matched=len(result.vehicles), total=result.total,
                        match_rate=result.match_rate, rejected=dict(result.rejected),
                        flagged=dict(result.flagged))
            await self.store.publish_realtime(self.feed_id, kind, meta,
                                              blob=orjson.dumps(result.vehicles))
        else:
            alerts = [alert_json(a) for a in snapshot.alerts]
            meta.update(matched=len(alerts), total=len(alerts), match_rate=None, rejected={})
            await self.store.publish_realtime(self.feed_id, kind, meta,
                                              blob=orjson.dumps(alerts))
        if snapshot.timestamp is not None:
            self.timestamps[kind] = snapshot.timestamp
        self.meta[kind] = meta

    async def apply_pushed(self, body: bytes, index: ScheduleIndex | None) -> dict[str, Any]:
        """A pushed FeedMessage may mix entity kinds: apply each kind it carries."""
        snapshot = to_snapshot(parse_message(body), "probe")
        kinds = [k for k, present in (("trip_updates", snapshot.trip_updates),
                                      ("vehicle_positions", snapshot.vehicles),
                                      ("alerts", snapshot.alerts)) if present]
        results = {}
        for kind in kinds or ["trip_updates"]:
            results[kind] = await self.apply(kind, body, index, {"source": "push"})
        return results


class Poller:
    """One loop per realtime URL. Never dies: every failure is logged, counted and recorded."""

    def __init__(self, rt: RealtimeFeed, catalog: FeedCatalog, kind: str, url: str,
                 headers: dict[str, str], poll_seconds: float, settings: Settings,
                 session: aiohttp.ClientSession) -> None:
        self.rt, self.catalog, self.kind, self.url = rt, catalog, kind, url
        self.headers, self.poll_seconds = headers, poll_seconds
        self.settings, self.session = settings, session
        self.failures = 0
        self.etag: str | None = None
        self.last_modified: str | None = None

    async def run(self) -> None:
        while True:
            delay = await self.poll_once()
            await asyncio.sleep(delay)

    async def poll_once(self) -> float:
        """One fetch + apply; returns how long to wait before the next."""
        started = time.perf_counter()
        fetch: dict[str, Any] = {"url_kind": self.kind}
        try:
            result = await fetch_realtime(
                self.session, self.url, max_bytes=self.settings.realtime_max_bytes,
                timeout_s=min(self.settings.realtime_timeout_s, self.poll_seconds * 2),
                headers=self.headers, etag=self.etag, last_modified=self.last_modified,
                allow_private=self.settings.allow_private_urls)
            fetch.update(http_status=result.status,
                         fetch_ms=round((time.perf_counter() - started) * 1000, 1))
            feed_metrics.fetched(self.rt.feed_id, self.kind, time.perf_counter() - started,
                                 len(result.body) if result.body is not None else None)
            if result.not_modified:
                await self.rt.record_fetch(self.kind, fetch, None)
            else:
                assert result.body is not None
                fetch["bytes"] = len(result.body)
                feed = self.catalog.feeds.get(self.rt.feed_id)
                await self.rt.apply(self.kind, result.body, feed.index if feed else None, fetch)
                self.etag, self.last_modified = result.etag, result.last_modified
            self.failures = 0
            return self.poll_seconds
        except asyncio.CancelledError:
            raise
        except FeedError as exc:
            self.failures += 1
            log.warning("feed %s %s: %s: %s", self.rt.feed_id, self.kind, exc.code, exc.message)
            if isinstance(exc, FeedSourceError):  # apply() records its own refusals
                feed_metrics.refused(self.rt.feed_id, self.kind, exc.code)
                fetch["http_status"] = exc.http_status
                with contextlib.suppress(FeedError, ApiError):
                    await self.rt.record_fetch(self.kind, fetch, exc)
        except Exception:
            self.failures += 1
            log.exception("feed %s %s: poll failed", self.rt.feed_id, self.kind)
        return self.backoff()

    def backoff(self) -> float:
        """Exponential in consecutive failures, with full jitter, capped."""
        ceiling = min(MAX_BACKOFF_S, self.poll_seconds * (2 ** min(self.failures, 8)))
        return max(1.0, random.uniform(self.poll_seconds, ceiling))


class PollerManager:
    """Keeps one Poller per configured realtime URL running, for the feeds this process leads."""

    def __init__(self, store: Store, catalog: FeedCatalog, settings: Settings,
                 clock: Clock) -> None:
        self.store, self.catalog, self.settings, self.clock = store, catalog, settings, clock
        self.feeds: dict[str, RealtimeFeed] = {}
        self.tasks: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}
        self.owner = f"{settings.host}:{settings.port}:{id(self)}:{random.random()}"
        self.session: aiohttp.ClientSession | None = None

    def feed(self, feed_id: str) -> RealtimeFeed:
        if feed_id not in self.feeds:
            self.feeds[feed_id] = RealtimeFeed(self.store, feed_id, self.clock)
        return self.feeds[feed_id]

    async def run(self) -> None:
        self.session = aiohttp.ClientSession()
        try:
            while True:
                try:
                    await self.reconcile()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    log.warning("realtime scheduler: %s", exc)
                await asyncio.sleep(2.0)
        finally:
            for _, task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*(t for _, t in self.tasks.values()), return_exceptions=True)
            await self.session.close()

    async def reconcile(self) -> None:
        wanted: dict[tuple[str, str], str] = {}
        for feed_id, loaded in self.catalog.feeds.items():
            urls = {"trip_updates": loaded.config.trip_updates,
                    "vehicle_positions": loaded.config.vehicle_positions,
                    "alerts": loaded.config.alerts}
            if not any(urls.values()):
                continue
            # One poller per feed across all ingest processes: a lease, renewed each round.
            if not await self.store.hold_lease(f"feed:{feed_id}", self.owner, 10_000):
                continue
            for kind, url in urls.items():
                if url:
                    wanted[(feed_id, kind)] = url
        for key, (url, task) in list(self.tasks.items()):
            if wanted.get(key) != url or task.done():
                task.cancel()
                del self.tasks[key]
        for key, url in wanted.items():
            if key in self.tasks:
                continue
            feed_id, kind = key
            loaded = self.catalog.feeds[feed_id]
            assert self.session is not None
            poller = Poller(self.feed(feed_id), self.catalog, kind, url, loaded.config.headers,
                            loaded.config.poll_seconds, self.settings, self.session)
            self.tasks[key] = (url, asyncio.create_task(poller.run(),
                                                       name=f"poll-{feed_id}-{kind}"))
