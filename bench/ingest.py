"""Ingest benchmark: ``feeds add`` of wmata-2026.zip until an API process serves its boards,
beside gtfs-kit's ``read_feed`` alone on the same file, in the same run, rounds interleaved.

Each measurement runs in a fresh child process (imports excluded from the timing), so peak
memory (ru_maxrss) is per measurement. The API server is a separate ``transit-gateway serve``
process: "served" means it learned of the new version through the store, loaded and decoded
it, and answered a departures request for a busy station with departures.

    python -m bench.ingest national     # the national-size rows only (3 interleaved rounds)

The national rows: the CPU part of a static ingest (``build_static``: source checks, gtfs-kit
read, validation, index; then as ``feeds add`` builds it, with the default size limits
checked and the version written to a file) of the 40-copy WMATA feed (``bench.tiler``, 14.1 M
stop_times), seconds and peak RSS, against the 1-copy feed measured in the same rounds and
scaled 40 times (its time, and its memory above the imports): ratio 1 is linear scaling. The
budget of that part at national size: 45 s and 2.5 GiB, so that ``feeds add`` stays within
60 s and 3 GiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import DATA, Row, free_port, maxrss_mib, median, run_child, wait_http

FEED = DATA / "gtfs" / "wmata-2026.zip"
STOP = "STN_A01_C01"  # Metro Center, a station with four lines
BOARD_TIME = "2026-05-05T08:00:00-04:00"


def child_read_feed() -> None:
    from feeds.static.reader import read_gtfs

    base = maxrss_mib()
    t = time.perf_counter()
    feed = read_gtfs(FEED)
    seconds = time.perf_counter() - t
    assert len(feed.stop_times) > 300_000
    print(json.dumps({"seconds": seconds, "maxrss_mib": maxrss_mib(), "base_mib": base}))


def child_build(source: str, to_file: str) -> None:
    """``build_static`` of ``source`` (as ``feeds add`` does it when ``to_file`` is "1": with
    the default size limits checked and the version written to a file) in this fresh process:
    seconds, CPU seconds, peak RSS."""
    from feeds.static.limits import SizeLimits
    from feeds.static.pipeline import build_static
    from gateway.ingest.static_build import build_to_file
    from gateway.settings import Settings

    settings = Settings()
    limits = SizeLimits(settings.static_max_bytes, settings.static_max_rows)

    base = maxrss_mib()
    t, cpu = time.perf_counter(), time.process_time()
    if to_file == "1":
        with tempfile.TemporaryDirectory(prefix="tg-bench-build-") as folder:
            counts = build_to_file(Path(source), "b", "v", Path(folder) / "v.tgv",
                                   limits).counts
    else:
        counts = build_static(Path(source), "b", "v").index.counts()
    print(json.dumps({"seconds": time.perf_counter() - t, "cpu": time.process_time() - cpu,
                      "maxrss_mib": maxrss_mib(), "base_mib": base,
                      "stop_times": counts["stop_times"]}))


def run_national(rounds: int = 3, copies: int = 40) -> list[Row]:
    from bench.tiler import tile

    big = str(tile(copies))
    one: list[dict[str, float]] = []
    national: list[dict[str, float]] = []
    to_file: list[dict[str, float]] = []
    for i in range(rounds):  # interleaved: one copy, national, national to a file, ...
        one.append(run_child("bench.ingest", "build", str(FEED), "0"))
        national.append(run_child("bench.ingest", "build", big, "0"))
        to_file.append(run_child("bench.ingest", "build", big, "1"))
        print(f"  round {i + 1}: 1 copy {one[-1]['seconds']:.2f}s "
              f"{one[-1]['maxrss_mib']:.0f} MiB; x{copies} {national[-1]['seconds']:.2f}s "
              f"(cpu {national[-1]['cpu']:.2f}s) {national[-1]['maxrss_mib']:.0f} MiB; "
              f"as feeds add {to_file[-1]['seconds']:.2f}s (cpu {to_file[-1]['cpu']:.2f}s) "
              f"{to_file[-1]['maxrss_mib']:.0f} MiB",
              file=sys.stderr)
    assert national[0]["stop_times"] == copies * one[0]["stop_times"]

    def linear_seconds(r: dict[str, float]) -> float:
        return copies * r["seconds"]

    def linear_mib(r: dict[str, float]) -> float:
        return r["base_mib"] + copies * (r["maxrss_mib"] - r["base_mib"])

    rows = []
    for name, runs in (("build_static", national), ("as feeds add", to_file)):
        rows += [
            Row(f"ingest x{copies} ({national[0]['stop_times'] / 1e6:.1f} M): {name}",
                median([r["seconds"] for r in runs]), "s", f"1 copy x{copies}",
                median([linear_seconds(r) for r in one]), "≤ 45.00",
                median([n["seconds"] / linear_seconds(o) for n, o in zip(runs, one,
                                                                         strict=True)])),
            Row(f"ingest x{copies}: {name} peak RSS", median([r["maxrss_mib"] for r in runs]),
                "MiB", f"1 copy x{copies} above imports",
                median([linear_mib(r) for r in one]), "≤ 2560",
                median([n["maxrss_mib"] / linear_mib(o) for n, o in zip(runs, one,
                                                                        strict=True)])),
        ]
    for name, runs in (("build_static", national), ("as feeds add", to_file)):
        rows.append(Row(f"ingest x{copies}: {name}, CPU", median([r["cpu"] for r in runs]), "s",
                        f"1 copy x{copies}", median([copies * r["cpu"] for r in one])))
    return rows


def child_ingest(redis_url: str, api: str, key: str, feed_id: str) -> None:
    from gateway.clock import SystemClock
    from gateway.feed_config import FeedConfig
    from gateway.ingest.feed_service import FeedService
    from gateway.settings import Settings
    from gateway.store.store import Store

    async def main() -> dict[str, float]:
        store = await Store.connect(redis_url)
        service = FeedService(store, Settings(redis_url=redis_url), SystemClock())
        url = f"{api}/v1/feeds/{feed_id}/stops/{STOP}/departures?time={BOARD_TIME}&key={key}"
        base = maxrss_mib()
        t = time.perf_counter()
        result = await service.add(FeedConfig(id=feed_id, static=str(FEED)))
        added = time.perf_counter() - t
        while True:
            ok = await asyncio.to_thread(_board_ready, url)
            if ok:
                break
            await asyncio.sleep(0.002)
        served = time.perf_counter() - t
        await store.close()
        return {"seconds": served, "add_seconds": added, "version": 0 if result else 1,
                "maxrss_mib": maxrss_mib(), "base_mib": base}

    print(json.dumps(asyncio.run(main())))


def _board_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.replace("+", "%2B"), timeout=2) as resp:
            return resp.status == 200 and b'"trip_id"' in resp.read()
    except OSError:
        return False


def run(rounds: int = 5) -> list[Row]:
    from gateway.store.embedded import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-ingest-"))
    store = EmbeddedValkey(tmp / "store")
    redis_url = store.ensure_running()
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "GATEWAY_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", str(port),
                               "--role", "api"], env=env)
    api = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{api}/healthz")
        key = subprocess.run([sys.executable, "-m", "gateway", "keys", "create", "--email",
                              "bench@localhost", "--tier", "unlimited"], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        reads: list[dict[str, float]] = []
        ingests: list[dict[str, float]] = []
        for i in range(rounds):  # interleaved: A B A B ...
            reads.append(run_child("bench.ingest", "read-feed"))
            ingests.append(run_child("bench.ingest", "ingest", redis_url, api, key,
                                     f"wmata{i}"))
            print(f"  round {i + 1}: read_feed {reads[-1]['seconds']:.3f}s, "
                  f"add→served {ingests[-1]['seconds']:.3f}s "
                  f"(add {ingests[-1]['add_seconds']:.3f}s)", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=15)
        store.stop()
    read_s = median([r["seconds"] for r in reads])
    ingest_s = median([r["seconds"] for r in ingests])
    read_mem = median([r["maxrss_mib"] for r in reads])
    ingest_mem = median([r["maxrss_mib"] for r in ingests])
    return [
        Row("ingest wmata: feeds add → boards served", ingest_s, "s",
            "gtfs-kit read_feed", read_s, "≤ 3.00"),
        Row("ingest wmata: peak RSS of the ingest process", ingest_mem, "MiB",
            "read_feed process peak RSS", read_mem),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="all")
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args()
    if ns.mode == "read-feed":
        child_read_feed()
    elif ns.mode == "build":
        child_build(*ns.args)
    elif ns.mode == "national":
        from bench.common import print_table

        print_table(run_national())
    elif ns.mode == "ingest":
        child_ingest(*ns.args)
    else:
        from bench.common import print_table

        print_table(run())


if __name__ == "__main__":
    main()
