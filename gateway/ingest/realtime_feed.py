"""Realtime ingest: poll (or accept a push of) GTFS-Realtime, merge, and publish the changes.

One ``RealtimeFeed`` per feed holds what the last good snapshot produced (per-stop overlays,
trip records, the header timestamp per kind) so that the next one writes only what changed. A
body that is refused leaves the last good data in place and is recorded in the feed's realtime
health; staleness is judged by readers from the header timestamp.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import orjson

from feeds.errors import FeedError
from feeds.realtime.alerts import alert_json
from feeds.realtime.decode import (
    entity_kinds,
    entity_trip_updates,
    gc_paused,
    parse_message,
    to_snapshot,
)
from feeds.realtime.header import RealtimeRejected, check_header
from feeds.realtime.incremental import Delta, IncrementalMerger
from feeds.realtime.model import FeedSnapshot
from feeds.realtime.vehicles import process_vehicles
from feeds.schedule.index import ScheduleIndex
from gateway.clock import Clock
from gateway.ingest.feed_service import iso_utc
from gateway.observability import feed_metrics
from gateway.store.store import Store

log = logging.getLogger(__name__)

KINDS = ("trip_updates", "vehicle_positions", "alerts")


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
            # small snapshot's time. No cyclic GC meanwhile: the decoded updates (a national
            # snapshot's 150k) are gone by the end, so no collection ever walks them.
            with gc_paused():
                header, entities = entity_trip_updates(body, now, previous, merger.known(now))
                count = len(entities)
                delta = merger.apply(entities, now, existing)
                del entities
            return header, count, delta

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
        """A pushed FeedMessage may mix entity kinds: apply each kind it carries. (Which, the
        parse says: decoding the whole body on the event loop to find out cost a national
        snapshot 0.6 s before its own decode started.)"""
        kinds = entity_kinds(parse_message(body))
        results = {}
        for kind in kinds or ["trip_updates"]:
            results[kind] = await self.apply(kind, body, index, {"source": "push"})
        return results


