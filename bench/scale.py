"""National scale: the 40-copy WMATA feed (14.1 M stop_times, ``bench.tiler``) beside the
1-copy feed, measured in the same run.

    python -m bench scale

What each row is:

- **ingest**: ``transit-gateway feeds add`` into a fresh store, wall seconds and the peak RSS
  of the largest process of the command's tree (the CLI, or the child it builds in);
- **time to ready**: ``serve --role api`` from start to ``/readyz`` 200, the version file
  absent (fetched from the store) and present (only mapped);
- **memory**: sum of PSS over the ``serve --role api`` process tree (the store not included)
  after every stop's board was asked once (so the index's pages are touched), ``--workers 3``
  against ``--workers 1``: the target is at most 1.35;
- **board p50/p99**: keyed departures of random stations at a weekday peak, each URL once
  (the board cache does not answer), one connection;
- **version switch**: an API worker's RSS before a second version of the big feed is
  published, at its highest while the switch happens, and 10 s after.

The realtime rows at this size are in ``python -m bench realtime``, the search rows in
``python -m bench search``.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import DATA, Row, free_port, median
from bench.tiler import tile

COPIES = 40
ONE = DATA / "gtfs" / "wmata-2026.zip"
PEAK = "2026-05-05T08:00:00-04:00"
CLI = [sys.executable, "-m", "gateway"]


def _env(redis_url: str, versions: Path) -> dict[str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "GATEWAY_LOG_LEVEL": "WARNING",
           "GATEWAY_CLOCK": PEAK, "GATEWAY_VERSIONS_DIR": str(versions)}
    for name in ("GATEWAY_BENCH_NO_AUTH", "GATEWAY_METRICS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


@contextmanager
def _store(folder: Path) -> Iterator[str]:
    from gateway.store.embedded import EmbeddedValkey

    server = EmbeddedValkey(folder)
    try:
        yield server.ensure_running()
    finally:
        server.stop()


def _children_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def ingest(redis_url: str, versions: Path, feed_id: str, zip_path: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of ``feeds add`` in a fresh process (whose peak this process's
    RUSAGE_CHILDREN reports only if it is the largest so far: measured in a wrapper)."""
    code = ("import resource, subprocess, sys, time, json\n"
            "t = time.perf_counter()\n"
            "subprocess.run(sys.argv[1:], check=True)\n"
            "print(json.dumps({'s': time.perf_counter() - t, 'rss': resource.getrusage("
            "resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n")
    out = subprocess.run([sys.executable, "-c", code, *CLI, "feeds", "add", feed_id,
                          "--static", str(zip_path)], env=_env(redis_url, versions),
                         capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"feeds add {feed_id} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["s"]), float(result["rss"])


def _pss_mib(root: int) -> float:
    pids = [root]
    found = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True).stdout
    pids += [int(p) for p in found.split()]
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """``serve --role api --workers N`` on a free port, until ``stop``."""

    def __init__(self, redis_url: str, versions: Path, workers: int) -> None:
        self.port = free_port()
        started = time.perf_counter()
        self.popen = subprocess.Popen(
            [*CLI, "serve", "--role", "api", "--workers", str(workers), "--port",
             str(self.port)], env=_env(redis_url, versions))
        self.ready_s = self._wait_ready(started)

    def _wait_ready(self, started: float, timeout: float = 300.0) -> float:
        while time.perf_counter() - started < timeout:
            if self.popen.poll() is not None:
                raise RuntimeError(f"serve exited {self.popen.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz",
                                            timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("serve did not become ready")

    def get(self, path: str, key: str) -> tuple[int, float]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers={"X-API-Key": key})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        return status, time.perf_counter() - started

    def workers(self) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(self.popen.pid)], capture_output=True,
                               text=True).stdout
        return [int(p) for p in found.split()] or [self.popen.pid]

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)


def _key(redis_url: str, versions: Path) -> str:
    out = subprocess.run([*CLI, "keys", "create", "--email", "bench@example.org", "--tier",
                          "unlimited"], env=_env(redis_url, versions), check=True,
                         capture_output=True, text=True)
    return next(w for w in out.stdout.split() if w.startswith("tgw_"))


def _stations(zip_path: Path, feed_id: str, limit: int, seed: int = 7) -> list[str]:
    import csv
    import io
    import zipfile

    with zipfile.ZipFile(zip_path) as z:
        rows = csv.DictReader(io.StringIO(z.read("stops.txt").decode("utf-8-sig")))
        ids = [r["stop_id"] for r in rows if r.get("location_type") == "1"]
    random.Random(seed).shuffle(ids)
    return ids[:limit]


def _boards(server: Server, key: str, feed_id: str, stations: list[str]) -> list[float]:
    times = []
    for stop in stations:
        status, seconds = server.get(f"/v1/feeds/{feed_id}/stops/{stop}/departures?limit=50",
                                     key)
        if status != 200:
            raise RuntimeError(f"departures of {stop}: HTTP {status}")
        times.append(seconds)
    return times


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def run() -> list[Row]:
    big = tile(COPIES)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tg-scale-") as tmp:
        root = Path(tmp)
        versions = root / "versions"
        with _store(root / "store") as url:
            print("  ingest: 1 copy, then 40...", file=sys.stderr)
            one_s, one_rss = ingest(url, versions, "one", ONE)
            big_s, big_rss = ingest(url, versions, "big", big)
            rows += [Row("scale: feeds add, 40 copies (14.1 M st)", big_s, "s",
                         "1 copy (353 k stop_times)", one_s, "<= 60 s"),
                     Row("scale: feeds add peak RSS, 40 copies", big_rss, "MiB",
                         "1 copy", one_rss, "<= 3072 MiB")]
            key = _key(url, versions)
            stations_big = _stations(big, "big", 400)

            stations_one = _stations(ONE, "one", 100)

            print("  time to ready and memory...", file=sys.stderr)
            shutil_rm(versions)
            cold = Server(url, versions, 1)  # fetches both versions from the store
            cold_s = cold.ready_s
            cold.stop()
            warm = Server(url, versions, 1)  # maps the files
            warm_s = warm.ready_s
            _boards(warm, key, "big", stations_big)
            _boards(warm, key, "one", stations_one)
            pss1 = _pss_mib(warm.popen.pid)
            warm.stop()
            three = Server(url, versions, 3)
            for _ in range(3):  # connections spread over the workers by the kernel
                _boards(three, key, "big", stations_big)
                _boards(three, key, "one", stations_one)
            pss3 = _pss_mib(three.popen.pid)
            three.stop()
            rows += [Row("scale: time to ready, file fetched", cold_s, "s",
                         "file already on the host", warm_s, "<= 10 s"),
                     Row("scale: memory, --workers 3 (sum PSS)", pss3, "MiB",
                         "--workers 1", pss1, "<= 1.35")]

            print("  boards...", file=sys.stderr)
            server = Server(url, versions, 1)
            big_t: list[float] = []
            one_t: list[float] = []
            for r in range(5):  # interleaved rounds, each URL once (no board cache hit)
                big_t += _boards(server, key, "big", _stations(big, "big", 200, seed=r))
                one_t += _boards(server, key, "one", _stations(ONE, "one", 40, seed=r))
            rows += [Row("scale: board p50, 40 copies", median(big_t) * 1000, "ms",
                         "1 copy", median(one_t) * 1000),
                     Row("scale: board p99, 40 copies", _p99(big_t) * 1000, "ms",
                         "1 copy", _p99(one_t) * 1000)]

            print("  version switch...", file=sys.stderr)
            worker = server.workers()[0]
            before = _rss_mib(worker)
            variant = tile(COPIES, out=big.with_name(f"wmata-x{COPIES}-b.zip"),
                           agency_suffix=" (b)")
            peak = before
            _patch_static(url, "big", variant)
            switch = subprocess.Popen([*CLI, "feeds", "reload", "big"],
                                      env=_env(url, versions))
            while switch.poll() is None:
                peak = max(peak, _rss_mib(worker))
                time.sleep(0.05)
            for _ in range(200):  # 10 s after: the old mapping let go
                peak = max(peak, _rss_mib(worker))
                time.sleep(0.05)
            _boards(server, key, "big", stations_big[:50])
            after = _rss_mib(worker)
            server.stop()
            rows += [Row("scale: worker RSS at the switch (peak)", peak, "MiB",
                         "before the switch", before, "< 2"),
                     Row("scale: worker RSS 10 s after the switch", after, "MiB",
                         "before the switch", before, "~1")]
    return rows


def _patch_static(redis_url: str, feed_id: str, source: Path) -> None:
    """Point the feed at ``source`` (the CLI's reload then publishes it)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    raw = client.hget("tg:feeds", feed_id)
    assert isinstance(raw, bytes), f"no feed {feed_id}"
    config = json.loads(raw)
    config["static"] = str(source)
    client.hset("tg:feeds", feed_id, json.dumps(config))
    client.close()


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
