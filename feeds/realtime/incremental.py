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

from feeds.realtime.bulk_merge import PlainOutcome, merge_plain
from feeds.realtime.merge import merge_one
from feeds.realtime.model import TripUpdate
from feeds.realtime.overlay import Record, stop_records, trip_realtime_records
from feeds.realtime.records import MergeResult, Reject
from feeds.realtime.schedule_cache import ScheduleCache
from feeds.schedule.index import ScheduleIndex

BULK_FROM = 16  # changed updates from which plain ones are merged in bulk


@dataclass(slots=True)
class EntityOutcome:
    """What one trip-update entity came to, kept while its bytes stay the same. Flat tuples
    of strings and numbers, which the garbage collector stops tracking: a national feed keeps
    ~150k records here, and every full collection of the process would walk them as lists."""

    raw: bytes
    matched: int  # instances and added trips it contributes (0 or 1)
    rejected: str | None  # why it was rejected
    flagged: Counter[str] | None
    record_stops: tuple[str, ...]  # the stop of each record
    records: tuple[Record, ...]  # trip by trip, in stop order
    stops: tuple[str, ...]  # the stops it has records at
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
        self.cache = ScheduleCache(index)
        self._scratch = MergeResult()  # one entity's merge at a time (cleared after each)
        self.max_age_s = max_age_s
        self.entities: dict[str, EntityOutcome] = {}
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
        previous = self.entities
        new_entities: dict[str, EntityOutcome] = {}
        todo: list[tuple[bytes, TripUpdate]] = []
        for key, raw, update in entities:
            if update is not None or key not in previous:
                assert update is not None
                todo.append((raw, update))
        outcomes = iter(self._outcomes(todo, now))
        for key, _raw, update in entities:
            old = previous.get(key)
            if update is None and old is not None:
                new_entities[key] = old
                continue
            outcome = next(outcomes)
            delta.recomputed += 1
            new_entities[key] = outcome
            if old is not None:
                touched.update(old.stops)
            touched.update(outcome.stops)
        for key in previous.keys() - new_entities.keys():
            touched.update(previous[key].stops)
        # Combine: the first entity to claim a trip instance keeps it (later ones are rejected).
        claimed: set[str] = set()
        trips: dict[str, bytes] = {}
        losers: set[str] = set()
        for key, outcome in new_entities.items():
            delta.total += 1
            if outcome.flagged:
                delta.flagged.update(outcome.flagged)
            if outcome.rejected is not None:
                delta.rejected[outcome.rejected] += 1
                continue
            instance = next(iter(outcome.trips), None)
            if instance is not None and instance in claimed:
                delta.rejected["duplicate_trip_instance"] += 1
                losers.add(key)
                touched.update(outcome.stops)
                continue
            if instance is not None:
                claimed.add(instance)
            delta.matched += outcome.matched
            trips.update(outcome.trips)
        self.entities = new_entities
        # Each touched stop's records: entity by entity in key order (deterministic bytes;
        # each entity's records come in trip order already), so one pass over the entities
        # that have records there, instead of a sort per stop.
        per_stop: dict[str, list[Record]] = {stop: [] for stop in touched}
        if touched:
            for key in sorted(new_entities):
                outcome = new_entities[key]
                if key in losers or touched.isdisjoint(outcome.stops):
                    continue
                for stop, record in zip(outcome.record_stops, outcome.records, strict=True):
                    found = per_stop.get(stop)
                    if found is not None:
                        found.append(record)
        for stop, records in per_stop.items():
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

    def _outcomes(self, todo: list[tuple[bytes, TripUpdate]], now: float
                  ) -> list[EntityOutcome]:
        """The outcome of each (bytes, update): plain updates merged all at once
        (``bulk_merge``, from a few dozen on: below, numpy's fixed costs exceed the saving),
        the others one by one."""
        plain: list[PlainOutcome | None] = (
            merge_plain(self.cache, [update for _, update in todo], now)
            if len(todo) >= BULK_FROM else [None] * len(todo))
        # The trips of the others, read from the schedule in one go.
        self.cache.prefetch(t for t in map(self.cache.trip_index, (
            update.trip.trip_id for (_, update), p in zip(todo, plain, strict=True)
            if p is None and update.trip.trip_id)) if t is not None)
        return [self._outcome(update, raw, now) if p is None else
                EntityOutcome(raw, 1, None, None, p.record_stops, p.records,
                              tuple(dict.fromkeys(p.record_stops)), p.trips, now)
                for (raw, update), p in zip(todo, plain, strict=True)]

    def _outcome(self, update: TripUpdate, raw: bytes, now: float) -> EntityOutcome:
        result = self._scratch
        try:
            merge_one(self.cache, update, now, result)
        except Reject as reject:
            result.trips.clear()
            result.added.clear()
            return EntityOutcome(raw, 0, reject.code, self._flagged(), (), (), (), {}, now)
        at, records = stop_records(self.cache, result)
        trips = trip_realtime_records(self.index, result, self.cache)
        matched = result.matched
        result.trips.clear()
        result.added.clear()
        return EntityOutcome(raw, matched, None, self._flagged(), tuple(at), tuple(records),
                             tuple(dict.fromkeys(at)), trips, now)

    def _flagged(self) -> Counter[str] | None:
        """What the scratch result flagged for this entity (then cleared for the next)."""
        flagged = self._scratch.flagged
        if not flagged:
            return None
        out = Counter(flagged)
        flagged.clear()
        return out
