"""Realtime benchmarks, each against a baseline measured in the same run (rounds interleaved):

1. decode of the MTA NYC bus trip updates (3.1 MiB, 90,879 StopTimeUpdates) into our types,
   all entities new, by ``decode`` and by the entity split the ingest uses, beside a bare
   protobuf ``ParseFromString`` of the same bytes (target: 150 ms);
2. a trip-updates snapshot covering every trip of wmata-2026.zip running at a weekday peak
   (generated here from the static feed, random delays): from bytes received to boards updated
   in the store (decode, check, merge, per-stop overlays, diff, one pipelined write, event);
   then a second snapshot in which 10 % of the trips changed, which should cost at most a
   quarter of the first;
3. the same at national size: every trip of the 40-copy feed (``bench.tiler``, 14.1 M
   stop_times) running 08:00-09:00 on 2026-05-05, 7,960 trips, beside the same snapshot of the
   1-copy feed in the same rounds. Both feeds are added with ``feeds add`` to a store of the
   bench's own and mapped as the ingest maps them (``FeedCatalog``); the timed part is
   ``RealtimeFeed.apply``, bytes in to boards written and the event published (target: 1 s).
   First snapshot (a fresh ``RealtimeFeed``, as after a restart), then the next one, in which
   every trip's delay changed (a live feed's usual poll), and the first one pushed
   (``apply_pushed``, what the operator route calls).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
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


def decode_rows(rounds: int = 11) -> list[Row]:
    from feeds.realtime.decode import decode, entity_trip_updates

    body = MTA_BUS.read_bytes()
    bare: list[float] = []
    ours: list[float] = []
    split: list[float] = []
    steady: list[float] = []
    _, entities = entity_trip_updates(body, 2_000_000_000, None, {})
    known = {key: raw for key, raw, _ in entities}
    for _ in range(rounds):
        # Each timed call starts with no garbage of the previous one left to collect: the
        # decoders build their records with cyclic GC paused, and the one collection that
        # then walks what they made (if still alive) is the caller's (in the ingest none:
        # the merge frees the records before GC resumes).
        gc.collect()
        t = time.perf_counter()
        pb.FeedMessage().ParseFromString(body)
        bare.append(time.perf_counter() - t)
        gc.collect()
        t = time.perf_counter()
        snapshot = decode(body, "v", now=2_000_000_000)
        ours.append(time.perf_counter() - t)
        del snapshot
        gc.collect()
        t = time.perf_counter()
        split_out = entity_trip_updates(body, 2_000_000_000, None, {})
        split.append(time.perf_counter() - t)
        del split_out
        gc.collect()
        t = time.perf_counter()
        entity_trip_updates(body, 2_000_000_000, None, known)
        steady.append(time.perf_counter() - t)
    return [Row("rt decode mta-bus TU (90,879 STUs), all new", median(ours) * 1000, "ms",
                "bare ParseFromString", median(bare) * 1000, "<= 150 ms"),
            Row("rt decode mta-bus TU, entity split, all new", median(split) * 1000, "ms",
                "bare ParseFromString", median(bare) * 1000, "<= 150 ms"),
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


NATIONAL_COPIES = 40


def _add_feeds(redis_url: str, versions: Path, feeds: dict[str, Path]) -> bool:
    """``feeds add`` each feed into the bench's store (the CLI, as an operator would); False
    when one fails (the caller then builds the indexes in this process instead)."""
    import os
    import subprocess

    env = {**os.environ, "REDIS_URL": redis_url, "GATEWAY_LOG_LEVEL": "WARNING",
           "GATEWAY_VERSIONS_DIR": str(versions)}
    for feed_id, path in feeds.items():
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "gateway", "feeds", "add", feed_id,
                               "--static", str(path)], env=env, capture_output=True,
                              text=True, timeout=1200, check=False)
        if done.returncode:
            print(f"  feeds add {feed_id} failed ({done.stderr.strip()[-300:]}): the index is "
                  "built in this process instead", file=sys.stderr)
            return False
        print(f"  feeds add {feed_id}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return True


def _bodies(index: Any, now: int) -> tuple[int, bytes, bytes]:
    """Trips running in the peak hour, a first snapshot and the next (every delay changed)."""
    trips = running_trips(index, now)
    rng = random.Random(11)
    delays = {t: rng.choice([0, 0, 30, 60, 120, 240, 420, -30]) for t, _ in trips}
    changed = {t: d + rng.choice([30, 60, -30, 90]) for t, d in delays.items()}
    return (len(trips), snapshot(index, trips, delays, now, cutoff=now - 120),
            snapshot(index, trips, changed, now + 30, cutoff=now - 120))


async def _drop_realtime(store: Any, feed_id: str) -> None:
    """The feed's realtime records, deleted between rounds (not timed)."""
    from gateway.store.names import feed_key

    keys = [k async for k in store.client.scan_iter(match=feed_key(feed_id, "rt:*"),
                                                    count=10_000)]
    for start in range(0, len(keys), 10_000):
        await store.client.unlink(*keys[start:start + 10_000])


async def _national_rounds(rounds: int) -> dict[str, Any]:
    from bench.tiler import tile
    from gateway.clock import FixedClock
    from gateway.ingest.realtime_feed import RealtimeFeed
    from gateway.replica.feeds import FeedCatalog
    from gateway.store.embedded import EmbeddedValkey
    from gateway.store.store import Store

    feeds = {"one": WMATA, "national": tile(NATIONAL_COPIES)}
    now = int(dt.datetime.fromisoformat(PEAK).timestamp())
    info: dict[str, Any] = {phase: {f: [] for f in feeds} for phase in ("first", "next",
                                                                          "pushed")}
    with tempfile.TemporaryDirectory(prefix="tg-bench-rt-national-") as tmp:
        root = Path(tmp)
        server = EmbeddedValkey(root / "store")
        url = server.ensure_running()
        store = await Store.connect(url)
        try:
            indexes: dict[str, Any] = {}
            if await asyncio.to_thread(_add_feeds, url, root / "versions", feeds):
                catalog = FeedCatalog(store, versions_dir=root / "versions")
                await catalog.refresh()
                indexes = {f: catalog.get(f).ready_index() for f in feeds}
                info["source"] = "feeds add, mapped by FeedCatalog"
            else:
                from feeds.static.pipeline import build_static

                indexes = {f: build_static(p, f, "v").index for f, p in feeds.items()}
                info["source"] = "build_static in this process"
            bodies = {f: _bodies(index, now) for f, index in indexes.items()}
            for f, (trips, body, _) in bodies.items():
                info[f] = {"trips": trips, "bytes": len(body)}
            for r in range(rounds):
                order = list(feeds) if r % 2 == 0 else list(reversed(feeds))
                for f in order:
                    _, first_body, next_body = bodies[f]
                    clock = FixedClock(now)
                    rt = RealtimeFeed(store, f, clock)
                    await rt._sync()  # start-up sync is not part of a snapshot's cost
                    started = time.perf_counter()
                    meta = await rt.apply("trip_updates", first_body, indexes[f])
                    info["first"][f].append(time.perf_counter() - started)
                    clock.advance(30)
                    started = time.perf_counter()
                    meta2 = await rt.apply("trip_updates", next_body, indexes[f])
                    info["next"][f].append(time.perf_counter() - started)
                    info[f].update(matched=meta["matched"], stops=meta["changed_stops"],
                                   stops_next=meta2["changed_stops"])
                    del rt
                    await _drop_realtime(store, f)
                    # The same first snapshot pushed (the operator route's call): the kinds it
                    # carries are found first, then it is applied as a polled one.
                    rt = RealtimeFeed(store, f, FixedClock(now))
                    await rt._sync()
                    started = time.perf_counter()
                    await rt.apply_pushed(first_body, indexes[f])
                    info["pushed"][f].append(time.perf_counter() - started)
                    del rt
                    await _drop_realtime(store, f)
        finally:
            await store.close()
            server.stop()
    return info


def national_rows(rounds: int = 5) -> list[Row]:
    info = asyncio.run(_national_rounds(rounds))
    one, big = info["one"], info["national"]
    print(f"  national peak snapshot ({info['source']}): {big['trips']:,} trips running, "
          f"{big['bytes']:,} bytes, {big['matched']:,} matched, {big['stops']:,} stops "
          f"written (next: {big['stops_next']:,}); 1 copy: {one['trips']} trips, "
          f"{one['bytes']:,} bytes", file=sys.stderr)
    first = {f: median(v) for f, v in info["first"].items()}
    following = {f: median(v) for f, v in info["next"].items()}
    pushed = {f: median(v) for f, v in info["pushed"].items()}
    return [
        Row(f"rt national snapshot ({big['trips']:,} trips) → store", first["national"], "s",
            f"1 copy ({one['trips']} trips)", first["one"], "<= 1 s"),
        Row("rt national next snapshot, every trip changed", following["national"], "s",
            "1 copy", following["one"], "<= 1 s"),
        Row("rt national snapshot pushed → store", pushed["national"], "s",
            "1 copy", pushed["one"], "<= 1 s"),
    ]


def run() -> list[Row]:
    return decode_rows() + merge_rows() + national_rows()
