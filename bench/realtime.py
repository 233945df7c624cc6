"""Realtime benchmarks, each against a baseline measured in the same run (rounds interleaved):

1. decode of the MTA NYC bus trip updates (3.1 MiB, 90,879 StopTimeUpdates) into our types,
   as a ratio to a bare protobuf ``ParseFromString`` of the same bytes;
2. a trip-updates snapshot covering every trip of wmata-2026.zip running at a weekday peak
   (generated here from the static feed, random delays): from bytes received to boards updated
   in the store (decode, check, merge, per-stop overlays, diff, one pipelined write, event);
   then a second snapshot in which 10 % of the trips changed, which should cost at most a
   quarter of the first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from google.transit import gtfs_realtime_pb2 as pb

from bench.common import DATA, Row, median

MTA_BUS = DATA / "rt" / "unpaired" / "mta-nyc-bus-trip-updates.pb"
WMATA = DATA / "gtfs" / "wmata-2026.zip"
PEAK = "2026-05-05T08:00:00-04:00"


def decode_rows(rounds: int = 7) -> list[Row]:
    from feeds.realtime.decode import decode, entity_trip_updates

    body = MTA_BUS.read_bytes()
    bare: list[float] = []
    ours: list[float] = []
    steady: list[float] = []
    _, entities = entity_trip_updates(body, 2_000_000_000, None, {})
    known = {key: raw for key, raw, _ in entities}
    for _ in range(rounds):
        t = time.perf_counter()
        pb.FeedMessage().ParseFromString(body)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        decode(body, "v", now=2_000_000_000)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        entity_trip_updates(body, 2_000_000_000, None, known)
        steady.append(time.perf_counter() - t)
    return [Row("rt decode mta-bus TU (90,879 STUs), all new", median(ours) * 1000, "ms",
                "bare ParseFromString", median(bare) * 1000),
            Row("rt decode mta-bus TU, entities unchanged", median(steady) * 1000, "ms",
                "bare ParseFromString", median(bare) * 1000)]


def snapshot(index: Any, trips: list[tuple[int, int]], delays: dict[int, int],
             timestamp: int, cutoff: int) -> bytes:
    """A FULL_DATASET FeedMessage: each trip's stops from ``cutoff`` on, times = schedule+delay.

    Both snapshots use the same cutoff, so exactly the trips whose delay changed differ."""
    from feeds.schedule.service_time import service_day_origin

    msg = pb.FeedMessage()
    msg.header.gtfs_realtime_version = "2.0"
    msg.header.timestamp = timestamp
    st = index.stop_times
    for trip, day in trips:
        origin = service_day_origin(day, index.timezone)
        e = msg.entity.add()
        e.id = index.trips.ids[trip]
        tu = e.trip_update
        tu.trip.trip_id = index.trips.ids[trip]
        tu.trip.start_date = dt.date.fromordinal(day).strftime("%Y%m%d")
        lo, hi = int(st.offsets[trip]), int(st.offsets[trip + 1])
        delay = delays[trip]
        for row in range(lo, hi):
            if origin + int(st.departure[row]) < cutoff:
                continue  # already passed
            u = tu.stop_time_update.add()
            u.stop_sequence = int(st.sequence[row])
            u.arrival.time = origin + int(st.arrival[row]) + delay
            u.departure.time = origin + int(st.departure[row]) + delay
    return bytes(msg.SerializeToString())


def running_trips(index: Any, now: int, hour: int = 3600) -> list[tuple[int, int]]:
    """Trip instances running at any moment of [now, now + hour): "active at a peak hour"."""
    from feeds.schedule.service_time import local_date_ordinal, service_day_origin

    st = index.stop_times
    out = []
    today = local_date_ordinal(now, index.timezone)
    for day in (today - 1, today):
        services = index.calendar.services_on(day)
        if services is None:
            continue
        origin = service_day_origin(day, index.timezone)
        for trip in range(len(index.trips.ids)):
            service = int(index.trips.service[trip])
            if service < 0 or not services[service]:
                continue
            lo, hi = int(st.offsets[trip]), int(st.offsets[trip + 1])
            if origin + int(st.departure[lo]) < now + hour and origin + int(
                    st.arrival[hi - 1]) >= now:
                out.append((trip, day))
    return out


async def _merge_rounds(rounds: int) -> tuple[list[float], list[float], dict[str, Any]]:
    from feeds.static.pipeline import build_static
    from gateway.clock import FixedClock
    from gateway.ingest.realtime_feed import RealtimeFeed
    from gateway.store.embedded import EmbeddedValkey
    from gateway.store.store import Store

    index = build_static(WMATA, "wmata", "v").index
    now = int(dt.datetime.fromisoformat(PEAK).timestamp())
    trips = running_trips(index, now)
    rng = random.Random(7)
    delays1 = {t: rng.choice([0, 0, 30, 60, 120, 240, 420, -30]) for t, _ in trips}
    delays2 = dict(delays1)
    for t, _ in rng.sample(trips, len(trips) // 10):
        delays2[t] += rng.choice([60, 120, -60, 180])
    body1 = snapshot(index, trips, delays1, now, cutoff=now - 120)
    body2 = snapshot(index, trips, delays2, now + 30, cutoff=now - 120)
    server = EmbeddedValkey(Path(tempfile.mkdtemp(prefix="tg-bench-rt-")))
    store = await Store.connect(server.ensure_running())
    firsts, seconds = [], []
    info: dict[str, Any] = {"trips": len(trips), "bytes": len(body1)}
    try:
        for _ in range(rounds):
            await store.client.flushdb()
            clock = FixedClock(now)
            rt = RealtimeFeed(store, "wmata", clock)
            await rt._sync()  # start-up sync is not part of a snapshot's cost
            started = time.perf_counter()
            meta1 = await rt.apply("trip_updates", body1, index)
            firsts.append(time.perf_counter() - started)
            clock.advance(30)
            started = time.perf_counter()
            meta2 = await rt.apply("trip_updates", body2, index)
            seconds.append(time.perf_counter() - started)
            info.update(changed_first=meta1["changed_stops"],
                        changed_second=meta2["changed_stops"], matched=meta1["matched"],
                        recomputed=meta2["recomputed"], merge_ms=meta2["merge_ms"])
    finally:
        await store.close()
        server.stop()
    return firsts, seconds, info


def merge_rows(rounds: int = 5) -> list[Row]:
    firsts, seconds, info = asyncio.run(_merge_rounds(rounds))
    print(f"  wmata peak snapshot: {info['trips']} trips running, {info['bytes']:,} bytes; "
          f"{info['matched']} matched; stops written {info['changed_first']} then "
          f"{info['changed_second']} ({info['recomputed']} trips re-merged, decode+merge "
          f"{info['merge_ms']} ms of the second)",
          file=sys.stderr)
    first, second = median(firsts), median(seconds)
    return [
        Row(f"rt wmata peak-hour snapshot ({info['trips']} trips) → store", first, "s",
            "target 1 s", 1.0, "≤ 1.00"),
        Row("rt second snapshot, 10 % of trips changed", second, "s",
            "first snapshot", first, "≤ 0.25"),
    ]


def run() -> list[Row]:
    return decode_rows() + merge_rows()
