"""The read side of realtime in an API process: cached per feed, invalidated by store events.

Overlays of stops are fetched on first use (one MGET for a station and its platforms) and kept
until an event says that stop changed; vehicles and alerts are reloaded when their version
changes. Freshness is judged per request from the header timestamp and the process clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from feeds.realtime.alerts import AlertIndex
from feeds.realtime.overlay import Record, decode_overlay
from gateway.settings import Settings
from gateway.store.store import Store


@dataclass
class Freshness:
    configured: bool
    age_s: int | None
    stale: bool

    @property
    def usable(self) -> bool:
        return self.configured and self.age_s is not None and not self.stale


@dataclass
class RealtimeView:
    feed_id: str
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    overlays: dict[str, list[Record]] = field(default_factory=dict)
    vehicles: list[dict[str, Any]] = field(default_factory=list)
    vehicles_version: str | None = None
    alerts: AlertIndex = field(default_factory=lambda: AlertIndex(()))
    alerts_version: str | None = None
    generation: int = 0  # bumped by every invalidation, so a fetch that raced one is dropped
    revision: int = 0  # bumped by every event or reload: what a rendered board depends on

    def freshness(self, kind: str, now: float, threshold_s: float, configured: bool
                  ) -> Freshness:
        meta = self.meta.get(kind) or {}
        ts = meta.get("timestamp")
        if not configured and not meta:
            return Freshness(False, None, False)
        if not ts:
            return Freshness(True, None, True)
        age = max(0, int(now - ts))
        return Freshness(True, age, age > threshold_s)

    def invalidate(self, stops: list[str] | str) -> None:
        self.generation += 1
        self.revision += 1
        if stops == "*":
            self.overlays.clear()
        else:
            for stop in stops:
                self.overlays.pop(stop, None)

    async def stop_overlays(self, store: Store, stop_ids: list[str]) -> dict[str, list[Record]]:
        missing = [s for s in stop_ids if s not in self.overlays]
        if missing:
            generation = self.generation
            values = await store.stop_overlays(self.feed_id, missing)
            fetched = {s: decode_overlay(v) for s, v in zip(missing, values, strict=True)}
            if generation == self.generation:
                self.overlays.update(fetched)
            return {s: self.overlays.get(s) or fetched.get(s) or [] for s in stop_ids}
        return {s: self.overlays[s] for s in stop_ids}

    async def apply_event(self, store: Store, event: dict[str, Any]) -> None:
        self.revision += 1
        kind = event.get("kind")
        if isinstance(kind, str) and isinstance(event.get("meta"), dict):
            self.meta[kind] = event["meta"]
        stops = event.get("stops", [])
        if kind == "trip_updates" and stops:
            self.invalidate(stops)
        await self.reload_blobs(store)

    async def reload(self, store: Store) -> None:
        """Full refresh (start-up, or a possibly missed event): meta, caches, blobs."""
        meta = await store.realtime_meta(self.feed_id)
        if meta != self.meta:
            self.revision += 1
        old = (self.meta.get("trip_updates") or {}).get("version")
        self.meta = meta
        if (meta.get("trip_updates") or {}).get("version") != old:
            self.invalidate("*")
        await self.reload_blobs(store)

    async def reload_blobs(self, store: Store) -> None:
        version = (self.meta.get("vehicle_positions") or {}).get("version")
        if version != self.vehicles_version:
            blob = await store.realtime_blob(self.feed_id, "vehicle_positions")
            self.vehicles = orjson.loads(blob) if blob else []
            self.vehicles_version = version
            self.revision += 1
        version = (self.meta.get("alerts") or {}).get("version")
        if version != self.alerts_version:
            blob = await store.realtime_blob(self.feed_id, "alerts")
            self.alerts = AlertIndex(tuple(orjson.loads(blob)) if blob else ())
            self.alerts_version = version
            self.revision += 1


def thresholds(settings: Settings) -> dict[str, float]:
    return {"trip_updates": settings.stale_trip_updates_s,
            "vehicle_positions": settings.stale_vehicles_s,
            "alerts": settings.stale_alerts_s}
