"""Incremental trip-update merging: a new snapshot costs in proportion to what changed (pure).

Each trip-update entity's outcome (matched instance, added trip, or rejection) and its overlay
records are remembered with the entity's bytes. An entity whose bytes did not change is not
decoded or merged again; only stops touched by changed entities are re-rendered. Outcomes are
recomputed after ``max_age_s`` even when unchanged, since inferring a missing start_date
depends on the time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson

from feeds.realtime.merge import MergeResult, Reject, merge_one
from feeds.realtime.model import TripUpdate
from feeds.realtime.overlay import Record, overlay_records, trip_realtime_records
from feeds.schedule.index import ScheduleIndex


@dataclass
class EntityOutcome:
    raw: bytes
    update: TripUpdate
    result: MergeResult
    records: dict[str, list[Record]]  # stop_id -> records of this entity
    trips: dict[str, bytes]  # trip record key -> bytes
    computed_at: float


@dataclass
class Delta:
    stop_writes: dict[str, bytes] = field(default_factory=dict)
    stop_deletes: list[str] = field(default_factory=list)
    trip_writes: dict[str, bytes] = field(default_factory=dict)
    trip_deletes: list[str] = field(default_factory=list)
    matched: int = 0
    total: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    recomputed: int = 0

    @property
    def match_rate(self) -> float | None:
        return None if self.total == 0 else round(self.matched / self.total, 4)


class IncrementalMerger:
    def __init__(self, index: ScheduleIndex, max_age_s: float = 300.0) -> None:
        self.index = index
        self.max_age_s = max_age_s
        self.entities: dict[str, EntityOutcome] = {}
        self.stop_entities: dict[str, set[str]] = {}  # stop_id -> entity keys with records
        self.stop_bytes: dict[str, bytes] = {}
        self.trip_bytes: dict[str, bytes] = {}

    def known(self, now: float) -> dict[str, bytes]:
        """Entity bytes that may be reused at ``now`` (others will be decoded again)."""
        return {k: e.raw for k, e in self.entities.items()
                if now - e.computed_at < self.max_age_s}

    def apply(self, entities: list[tuple[str, bytes, TripUpdate | None]], now: float,
              existing_stops: dict[str, bytes] | None = None) -> Delta:
        """Merge a snapshot given as (key, bytes, TripUpdate or None when unchanged)."""
        delta = Delta()
        touched: set[str] = set()
        if existing_stops is not None:
            # What the store holds from before this merger existed (a restart): every such
            # stop is re-rendered, so overlays of trips that have since gone are deleted.
            self.stop_bytes = dict(existing_stops)
            touched.update(existing_stops)
        new_entities: dict[str, EntityOutcome] = {}
        index = self.stop_entities
        for key, raw, update in entities:
            old = self.entities.get(key)
            if update is None and old is not None:
                new_entities[key] = old
                continue
            assert update is not None
            outcome = self._outcome(update, raw, now)
            delta.recomputed += 1
            new_entities[key] = outcome
            if old is not None:
                self._unindex(key, old)
                touched.update(old.records)
            for stop in outcome.records:
                index.setdefault(stop, set()).add(key)
            touched.update(outcome.records)
        for key in set(self.entities) - set(new_entities):
            self._unindex(key, self.entities[key])
            touched.update(self.entities[key].records)
        # Combine: the first entity to claim a trip instance keeps it (later ones are rejected).
        claimed: set[str] = set()
        trips: dict[str, bytes] = {}
        losers: set[str] = set()
        for key, outcome in new_entities.items():
            r = outcome.result
            delta.total += r.total
            if r.flagged:
                delta.flagged.update(r.flagged)
            if r.rejected:
                delta.rejected.update(r.rejected)
            instance = next(iter(outcome.trips), None)
            if r.rejected:
                continue
            if instance is not None and instance in claimed:
                delta.rejected["duplicate_trip_instance"] += 1
                losers.add(key)
                touched.update(outcome.records)
                continue
            if instance is not None:
                claimed.add(instance)
            delta.matched += r.matched
            trips.update(outcome.trips)
        self.entities = new_entities
        for stop in touched:
            records: list[Record] = []
            # Entity order, not record order, makes the bytes deterministic: each entity's
            # records come in trip order already, and sorting a few keys beats sorting records.
            for key in sorted(index.get(stop, ())):
                if key not in losers:
                    records.extend(new_entities[key].records[stop])
            data = orjson.dumps(records) if records else None
            if data is None:
                if stop in self.stop_bytes:
                    delta.stop_deletes.append(stop)
                    del self.stop_bytes[stop]
            elif self.stop_bytes.get(stop) != data:
                delta.stop_writes[stop] = data
                self.stop_bytes[stop] = data
        for tkey, data in trips.items():
            if self.trip_bytes.get(tkey) != data:
                delta.trip_writes[tkey] = data
        delta.trip_deletes = [t for t in self.trip_bytes if t not in trips]
        self.trip_bytes = trips
        return delta

    def _unindex(self, key: str, outcome: EntityOutcome) -> None:
        for stop in outcome.records:
            keys = self.stop_entities.get(stop)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.stop_entities[stop]

    def _outcome(self, update: TripUpdate, raw: bytes, now: float) -> EntityOutcome:
        result = MergeResult()
        result.total = 1
        try:
            merge_one(self.index, update, now, result)
        except Reject as reject:
            result.rejected[reject.code] += 1
        return EntityOutcome(raw, update, result, overlay_records(self.index, result),
                             trip_realtime_records(self.index, result), now)
