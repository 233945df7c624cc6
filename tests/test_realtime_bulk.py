"""The bulk paths (``bulk_decode``, ``bulk_merge``) must give exactly what the plain ones give:
the same snapshot for any body protobuf reads (or the same refusal), the same outcome for any
trip update they accept. Checked on every capture, on mutated bodies and on random updates.
And a push's entity kinds, found without decoding, are those a decode finds."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import GTFS, RT
from google.transit import gtfs_realtime_pb2 as pb

from feeds.realtime.bulk_merge import merge_plain
from feeds.realtime.decode import (
    decode,
    entity_kinds,
    entity_trip_updates,
    parse_message,
    to_snapshot,
)
from feeds.realtime.header import RealtimeRejected, check_header
from feeds.realtime.incremental import IncrementalMerger
from feeds.realtime.model import StopTimeEvent, StopTimeUpdate, TripDescriptor, TripUpdate
from feeds.realtime.wire import split_entities
from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import service_day_origin
from feeds.static.pipeline import build_static

FAR_FUTURE = 4_000_000_000
CAPTURES = sorted(p for p in RT.rglob("*.pb") if p.stat().st_size > 20)


def _plain(body: bytes) -> Any:
    """What the plain decoder makes of a body: the snapshot, or the refusal."""
    try:
        snapshot = to_snapshot(parse_message(body), "v")
        check_header(snapshot, FAR_FUTURE, None)
        return snapshot
    except RealtimeRejected as exc:
        return (exc.code, exc.message)


def _bulk(body: bytes) -> Any:
    try:
        return decode(body, "v", FAR_FUTURE)
    except RealtimeRejected as exc:
        return (exc.code, exc.message)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_bulk_decode_equals_plain_decode(path: Path) -> None:
    body = path.read_bytes()
    assert _bulk(body) == _plain(body)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_entity_kinds_are_what_a_decode_finds(path: Path) -> None:
    message = parse_message(path.read_bytes())
    try:
        snapshot = to_snapshot(message, "v")
    except RealtimeRejected as exc:
        with pytest.raises(RealtimeRejected) as again:
            entity_kinds(message)
        assert again.value.code == exc.code
        return
    assert entity_kinds(message) == [kind for kind, found in (
        ("trip_updates", snapshot.trip_updates), ("vehicle_positions", snapshot.vehicles),
        ("alerts", snapshot.alerts)) if found]


def _ld(tag: int, payload: bytes) -> bytes:
    assert len(payload) < 0x80
    return bytes([tag, len(payload)]) + payload


# StopTimeUpdates protobuf reads in ways a layout must not misread: empty, repeated or
# unpacked events, non-minimal varints, unknown fields and enum values, a negative delay.
ODD_STOP_TIME_UPDATES = [
    b"\x12\x00", b"\x1a\x00", b"\x10\x08", b"\x10\x08\x10\x05", b"\x12\x02\x10\x05\x12\x02\x08\x03",
    b"\x12\x03\x08\x80\x00", b"\x12\x02\x28\x05", b"\x12\x02\x10\x05\x1a\x02\x10\x05",
    b"\x12\x0b\x08" + b"\xff" * 9 + b"\x01", b"\x12\x06\x08\xff\xff\xff\xff\x0f",
    b"\x12\x03\x10\x05\x00", b"\x12\x04\x10\x05\x20\x07", b"\x28\x09", b"\x28\x01", b"\x08\x00",
    b"\x22\x00", b"\x08\x05\x08\x07", b"\x22\x02\xff\xfe", b"\x12\x06\x10\x80\x94\xea\xcb\x06",
    b"\x12\x07\x10\x80\x94\xea\xcb\x06\x00", b"\x12\x02\x10\x05\xc0\x3e\x01",
]


def _message(stu: bytes) -> bytes:
    trip_update = _ld(0x0A, b"\x0a\x01t") + _ld(0x12, b"\x08\x01\x22\x01s" + stu)
    entity = _ld(0x0A, b"e") + _ld(0x1A, trip_update)
    return _ld(0x0A, b"\x0a\x032.0\x18\x05") + _ld(0x12, entity)


@pytest.mark.parametrize("stu", ODD_STOP_TIME_UPDATES)
def test_bulk_decode_odd_stop_time_updates(stu: bytes) -> None:
    body = _message(stu)
    assert _bulk(body) == _plain(body)


def test_bulk_decode_mutated_bodies() -> None:
    rng = random.Random(5)
    message = pb.FeedMessage()
    message.header.gtfs_realtime_version = "2.0"
    trip_update = message.entity.add(id="x").trip_update
    trip_update.trip.trip_id = "t"
    for k in range(4):
        u = trip_update.stop_time_update.add(stop_sequence=k, stop_id=f"s{k}")
        u.arrival.time = 1769638400 + 60 * k
        u.departure.delay = -5
    seeds = [message.SerializeToString()] + [_message(s) for s in ODD_STOP_TIME_UPDATES]
    accepted = 0
    for _ in range(3000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(body))
            op = rng.random()
            if op < 0.5:
                body[i] = rng.randrange(256)
            elif op < 0.75:
                del body[i]
            else:
                body.insert(i, rng.randrange(256))
        plain = _plain(bytes(body))
        assert _bulk(bytes(body)) == plain
        if not isinstance(plain, tuple):
            accepted += 1
            try:
                split_entities(bytes(body))
            except (ValueError, IndexError):
                continue  # the wire split refuses ids that are not UTF-8 (protobuf keeps bytes)
            _, entities = entity_trip_updates(bytes(body), FAR_FUTURE, None, {})
            assert [tu for _, _, tu in entities] == list(plain.trip_updates)
    assert accepted > 50  # the mutations must not all be refused


def _random_update(rng: random.Random, index: ScheduleIndex, trip: int, date: str, origin: int,
                   n: int) -> TripUpdate:
    """Mostly plain updates, some with one flaw of the kinds merge_plain must leave."""
    st = index.stop_times
    lo, hi = int(st.offsets[trip]), int(st.offsets[trip + 1])
    flaw = rng.choice([None] * 6 + ["delay", "skipped", "gap", "order", "empty", "stop_id",
                                    "bad_stop", "unsorted", "cancel", "date", "time"])
    delay = rng.choice([0, 30, 90, -90, 400])
    first = rng.randrange(hi - lo)
    updates = []
    for row in range(lo + first, hi if rng.random() < 0.8 else lo + first + 1):
        events = []
        for sched in (int(st.arrival[row]), int(st.departure[row])):
            r = rng.random()
            events.append(None if r < 0.1 or sched < 0 else
                          StopTimeEvent(None, delay) if r < 0.3 else
                          StopTimeEvent(origin + sched + delay, 5 if r < 0.4 else None))
        if events == [None, None]:
            events[0] = StopTimeEvent(None, delay)
        stop_id = index.stops.ids[int(st.stop[row])] if rng.random() < 0.3 else None
        updates.append(StopTimeUpdate(int(st.sequence[row]), stop_id, events[0], events[1],
                                      "SCHEDULED"))
    k = rng.randrange(len(updates))
    if flaw == "skipped":
        updates[k] = updates[k]._replace(relationship=rng.choice(["SKIPPED", "NO_DATA"]))
    elif flaw == "gap":
        updates[k] = updates[k]._replace(arrival=None, departure=None)
    elif flaw == "order" and len(updates) > 1:
        updates[0], updates[-1] = updates[-1], updates[0]
    elif flaw == "empty":
        updates[k] = updates[k]._replace(arrival=StopTimeEvent(None, None))
    elif flaw == "stop_id":
        updates[k] = updates[k]._replace(stop_sequence=None,
                                         stop_id=index.stops.ids[int(st.stop[lo + first + k])])
    elif flaw == "bad_stop":
        updates[k] = updates[k]._replace(stop_id="no such stop")
    elif flaw == "unsorted" and len(updates) > 1:
        updates[k] = updates[k]._replace(arrival=StopTimeEvent(origin - 10**6, None))
    elif flaw == "time":
        updates[k] = updates[k]._replace(departure=StopTimeEvent(0, None))
    return TripUpdate(f"e{n}", TripDescriptor(
        index.trips.ids[trip], None, None, "20200101" if flaw == "date" else date, None,
        "CANCELED" if flaw == "cancel" else "SCHEDULED"), tuple(updates),
        rng.choice([None, "v1"]), None, 60 if flaw == "delay" else None)


@pytest.mark.parametrize("feed, date", [("wmata-2026.zip", "20260505"),
                                        ("caltrain-2023.zip", "20231107")])
def test_merge_plain_equals_merge_one(feed: str, date: str) -> None:
    index = build_static(GTFS / feed, "f", "v").index
    day = dt.date(int(date[:4]), int(date[4:6]), int(date[6:])).toordinal()
    origin = service_day_origin(day, index.timezone)
    running = index.calendar.services_on(day)
    assert running is not None
    trips = [t for t in range(len(index.trips.ids)) if index.trips.service[t] >= 0
             and running[index.trips.service[t]] and index.stop_times.offsets[t + 1] >
             index.stop_times.offsets[t]]
    rng = random.Random(3)
    merger = IncrementalMerger(index)
    plain_count = 0
    for batch in range(20):
        updates = [_random_update(rng, index, rng.choice(trips), date, origin, 50 * batch + i)
                   for i in range(50)]
        for update, plain in zip(updates, merge_plain(merger.cache, updates, origin + 8 * 3600),
                                 strict=True):
            reference = merger._outcome(update, b"", origin + 8 * 3600)
            if plain is None:
                continue
            plain_count += 1
            assert (reference.rejected, reference.flagged, reference.matched) == (None, None, 1)
            assert plain.record_stops == reference.record_stops
            assert plain.records == reference.records
            assert plain.trips == reference.trips
    assert plain_count > 300  # most updates are plain
