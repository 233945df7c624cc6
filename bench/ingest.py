"""Ingest benchmark: ``feeds add`` of wmata-2026.zip until an API process serves its boards,
beside gtfs-kit's ``read_feed`` alone on the same file, in the same run, rounds interleaved.

Each measurement runs in a fresh child process (imports excluded from the timing), so peak
memory (ru_maxrss) is per measurement. The API server is a separate ``transit-gateway serve``
process: "served" means it learned of the new version through the store, loaded and decoded
it, and answered a departures request for a busy station with departures.
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
    elif ns.mode == "ingest":
        child_ingest(*ns.args)
    else:
        from bench.common import print_table

        print_table(run())


if __name__ == "__main__":
    main()
