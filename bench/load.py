"""Load benchmark of the keyed departures endpoint against what aiohttp itself can serve.

Servers, all up for the whole run and loaded one at a time, in rounds whose compared pairs run
back to back (odd rounds in reverse order); ratios are medians of the per-round ratios:

- ``hello``: the ceiling, ``bench/hello.py`` (aiohttp + uvloop, a small orjson body);
- ``hello-board``: the same app answering the gateway's own 50-departure board bytes from
  memory on the same URL as the gateway (for information: what the body and the URL cost
  aiohttp alone, without any gateway logic);
- ``gw``: ``transit-gateway serve --role api`` as in production (request metrics on);
- ``gw-nometrics``: the same with ``GATEWAY_METRICS=0``;
- ``gw-w2``: the same with ``--workers 2`` (SO_REUSEPORT).

One-process servers are pinned to CPU 0 with ``taskset`` and wrk to CPU 1 (when taskset exists
and there are 2+ CPUs); ``--workers 2`` is left on both CPUs (shared with wrk: on a 2-core
machine it cannot scale linearly). The embedded Valkey is pinned to CPU 1 too, beside wrk (which
uses under half of that core at these rates): in production the store runs on a host of its
own, and left unpinned it often lands on the gateway's core, where every batch written to it
wakes it up and preempts the gateway for the length of the script.

Load: ``wrk -t1 -c32 --latency``; departures of WMATA's Metro Center (``STN_A01_C01``, a station
with its platforms) at 2026-05-05 08:00 (``GATEWAY_CLOCK``), ``limit=50``, on a tier whose
limits are never reached (every request is authenticated, checked and counted). One key on every
request, or 100 keys in rotation (a wrk Lua script). Both are keys the gateway sees often, so
most requests are admitted from reserves counted ahead in the store (``gateway.access.limiter``);
the store commands per request show how rarely it is asked.

Store commands per request: Valkey counts the commands a Lua script runs (``redis.call``) in
``INFO commandstats``, in ``total_commands_processed`` and in a client's ``tot-cmds`` alike, so
none of them gives the commands the gateway *sends*. The figure comes from ``MONITOR`` instead:
a separate run on ``gw`` (one key, then 100 keys) with a MONITOR connection of the bench
counting the lines of commands received from clients (a script's inner calls are the lines
marked ``[0 lua]`` and are not counted), divided by the requests wrk completed. Everything the
gateway sends in that time counts, background refreshes included; MONITOR slows the store, so
those runs' throughput is not reported. A coalesced script call counts once for all the
requests it serves. ``INFO commandstats`` deltas of the one-key throughput runs (script-internal
calls included) are printed on stderr for information.

Server CPU per request (for information): user + system CPU time of each one-process server
(``/proc``) over a round's wrk run, divided by the requests completed, and hello's over the
gateway's, round by round. Both saturate their pinned core, so this is the throughput ratio
less the part of the noise that comes from scheduling (wrk and the store share CPU 1; the host
has other tenants); contention for caches and the CPU's clock still shows in it.

p99 at half of peak: open-loop load (``bench/openloop.c``, wrk2-style constant arrival rate,
64 connections, one key) at half of that round's measured one-worker keyed peak. Each request
is scheduled at ``t0 + i/rate`` and timed from then, so a stall delays and counts every request
scheduled behind it (no coordinated omission); the achieved rate is shown next to it. The
ceiling gets the same test in the same round (half of its own peak of that round; the two in
alternating order): a host that slows down for a while hits every server at half its peak
the same way (the backlog and its drain time scale with the rate), so a p99 the hello app
cannot keep under 10 ms says the host, not the gateway, sets the figure that day.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.common import (
    DATA,
    ROOT,
    Row,
    cpu_pinning,
    cpu_seconds,
    free_port,
    gateway_env,
    median,
    pin_store_beside_load,
    run_wrk,
    wait_http,
)
from bench.keys import _cli, _make_keys, _rotation_script, ensure_wrk
from bench.openloop import ensure_openloop, run_openloop

FEED = DATA / "gtfs" / "wmata-2026.zip"
CLOCK = "2026-05-05T08:00:00-04:00"
PATH = "/v1/feeds/wmata/stops/STN_A01_C01/departures?limit=50"
TIER = ("bench", "60000000", "1000000000000")
CONNECTIONS = 32


class StoreStats:
    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url)

    def commandstats(self) -> dict[str, int]:
        return {name: int(v["calls"]) for name, v in self.client.info("commandstats").items()}

    def _connect(self) -> socket.socket:
        if self.url.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(self.url.removeprefix("unix://").split("?")[0])
        else:
            rest = self.url.split("://", 1)[1].split("/")[0].rsplit("@", 1)[-1]
            host, _, port = rest.partition(":")
            sock = socket.create_connection((host, int(port or 6379)))
        return sock

    def count_sent(self, during: Callable[[], int]) -> tuple[int, int]:
        """(commands received from clients, during()'s result) while ``during`` runs, counted
        with MONITOR: script-internal calls (``[0 lua]`` lines) and our own marker excluded."""
        marker = uuid.uuid4().hex.encode()
        sock = self._connect()
        sock.sendall(b"MONITOR\r\n")
        assert sock.recv(5) == b"+OK\r\n"
        counted = {"lines": 0, "lua": 0}

        def read() -> None:
            tail = b""
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return
                data = tail + chunk
                end = data.rfind(b"\n") + 1
                done, tail = data[:end], data[end:]
                counted["lines"] += done.count(b"\n")
                counted["lua"] += done.count(b" lua] ")
                if marker in done:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        result = during()
        self.client.echo(marker)
        reader.join(timeout=120)
        sock.close()
        # minus the marker's ECHO (also counted by the monitor)
        return counted["lines"] - counted["lua"] - 1, result


def run(rounds: int = 7, seconds: int = 3) -> list[Row]:
    from gateway.store.embedded import EmbeddedValkey

    wrk_bin = ensure_wrk()
    ensure_openloop()
    pin_server, pin_wrk = cpu_pinning()
    wrk = [*pin_wrk, wrk_bin]
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-load-"))
    store = EmbeddedValkey(tmp / "store")
    redis_url = store.ensure_running()
    env = gateway_env(redis_url, CLOCK)
    servers: list[subprocess.Popen[bytes]] = []
    stats = StoreStats(redis_url)
    pin_store_beside_load(redis_url)  # as on a host of its own (see above)
    try:
        print("  loading wmata-2026.zip...", file=sys.stderr)
        _cli(env, "feeds", "add", "wmata", "--static", str(FEED))
        _cli(env, "tiers", "set", TIER[0], "--per-minute", TIER[1], "--per-month", TIER[2])
        keys = _make_keys(redis_url, 100)
        key = keys[0]
        rotation = _rotation_script(tmp / "keys.lua", keys)
        ports = {m: free_port() for m in ("hello", "hello-board", "gw", "gw-nometrics",
                                          "gw-w2")}
        gw = [sys.executable, "-m", "gateway", "serve", "--role", "api", "--port"]
        launch = {
            "hello": ([*pin_server, sys.executable, "-m", "bench.hello", str(ports["hello"])],
                      env),
            "gw": ([*pin_server, *gw, str(ports["gw"])], env),
            "gw-nometrics": ([*pin_server, *gw, str(ports["gw-nometrics"])],
                             {**env, "GATEWAY_METRICS": "0"}),
            "gw-w2": ([*gw, str(ports["gw-w2"]), "--workers", "2"], env),
        }
        pids: dict[str, int] = {}  # the one-process servers (taskset execs the server)
        for mode, (cmd, child_env) in launch.items():
            servers.append(subprocess.Popen(cmd, env=child_env, cwd=ROOT))
            if mode != "gw-w2":
                pids[mode] = servers[-1].pid
        for mode in launch:
            wait_http(f"http://127.0.0.1:{ports[mode]}/healthz")

        def url(mode: str) -> str:
            return f"http://127.0.0.1:{ports[mode]}" + ("/" if mode == "hello" else PATH)

        headers = {"X-API-Key": key}
        wait_http(url("gw") + f"&key={key}", timeout=120)
        with urllib.request.urlopen(urllib.request.Request(url("gw"), headers=headers)) as resp:
            (tmp / "board.json").write_bytes(resp.read())
        servers.append(subprocess.Popen(
            [*pin_server, sys.executable, "-m", "bench.hello", str(ports["hello-board"]),
             str(tmp / "board.json")], env=env, cwd=ROOT))
        pids["hello-board"] = servers[-1].pid
        for mode in ports:  # warm up: feed loaded, connections open, code paths hot
            keyed = not mode.startswith("hello")
            wait_http(url(mode) + (f"&key={key}" if keyed else ""), timeout=120)
            run_wrk(wrk, url(mode), 2, headers if keyed else None)

        res: dict[str, list[tuple[float, float, float, int]]] = {}
        cpu: dict[str, list[float]] = {}  # server CPU us per request, one-process servers
        breakdown: dict[str, int] = {}

        def load(name: str, mode: str, rotate: bool) -> None:
            cs_before = stats.commandstats()
            cpu_before = cpu_seconds(pids[mode]) if mode in pids else None
            got = run_wrk(wrk, url(mode), seconds, None if rotate or mode.startswith("hello")
                          else headers, rotation if rotate else None)
            cpu_after = cpu_seconds(pids[mode]) if mode in pids else None
            if cpu_before is not None and cpu_after is not None:
                cpu.setdefault(name, []).append((cpu_after - cpu_before) / got[3] * 1e6)
            res.setdefault(name, []).append(got)
            if mode == "gw" and not rotate:
                for cmd, calls in stats.commandstats().items():
                    breakdown[cmd] = breakdown.get(cmd, 0) + calls - cs_before.get(cmd, 0)

        # Every compared pair runs back to back (ratios are taken per round), and odd rounds
        # run the order backwards so that neither side of a pair always goes first.
        plan = [("nometrics1", "gw-nometrics", False), ("gw1", "gw", False),
                ("hello", "hello", False), ("gw100", "gw", True),
                ("nometrics100", "gw-nometrics", True), ("w2_100", "gw-w2", True),
                ("w2_1", "gw-w2", False), ("hello_board", "hello-board", False)]
        for i in range(rounds):
            order = list(reversed(plan)) if i % 2 else plan
            for name, mode, rotate in order:
                load(name, mode, rotate)
            halves = (("openloop", "gw", res["gw1"][-1][0] / 2),
                      ("openloop_hello", "hello", res["hello"][-1][0] / 2))
            for name, mode, half in halves[::-1 if i % 2 else 1]:
                got = run_openloop(pin_wrk, url(mode), half, seconds,
                                   None if mode == "hello" else headers)
                print(f"  open loop, {mode} at {half:.0f}/s: " + ", ".join(
                    f"{k} {got[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms",
                                                  "max_ms")), file=sys.stderr)
                res.setdefault(name, []).append(
                    (got["rate"], got["p50_ms"], got["p99_ms"], int(got["completed"])))
            print(f"  round {i + 1}: " + ", ".join(f"{n} {v[-1][0]:.0f}/s p99 {v[-1][2]:.2f}ms"
                                                  for n, v in res.items()), file=sys.stderr)
        print("  commandstats over the one-key runs: " + ", ".join(
            f"{c.removeprefix('cmdstat_')}={n}" for c, n in sorted(breakdown.items()) if n),
            file=sys.stderr)
        time.sleep(1.5)  # the workers flush their counts every second
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['gw-w2']}/metrics") as resp:
            text = resp.read().decode()
        counted = re.search(r'^tg_http_request_seconds_count\{method="GET",route="/v1/feeds/'
                            r'\{feed\}/stops/\{stop\}/departures",status="200"\} ([\d.e+]+)$',
                            text, re.M)
        print(f"  --workers 2 /metrics (aggregated over both workers): departures 200 count "
              f"{counted.group(1) if counted else None}; wrk completed "
              f"{sum(r[3] for n in ('w2_1', 'w2_100') for r in res[n])} in the measured runs "
              f"(+ warm-up)", file=sys.stderr)
        per_request: dict[str, float] = {}
        for name, rotate in (("cmds1", False), ("cmds100", True)):
            sent, served = stats.count_sent(lambda rotate=rotate: run_wrk(  # type: ignore[misc]
                wrk, url("gw"), 3, None if rotate else headers,
                rotation if rotate else None)[3])
            per_request[name] = sent / served
            print(f"  MONITOR, {name}: {sent} commands sent for {served} requests",
                  file=sys.stderr)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
        stats.client.close()
        store.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def m(name: str, field: int) -> float:
        return median([r[field] for r in res[name]])

    def pr(name: str, base: str) -> float:
        """Median of the per-round ratios: each round's pair ran within the same minute, so
        the machine's drift between rounds (often more than the effect) cancels out."""
        return median([a[0] / b[0] for a, b in zip(res[name], res[base], strict=True)])

    def cost(name: str) -> Row:
        """What the server's CPU says, round by round: hello's CPU per request over this
        one's. Both saturate their pinned core, so this is what the throughput ratio would be
        without the noise of the machine's other load (wrk, the store, other tenants)."""
        label = {"gw1": "1 key", "gw100": "100 keys"}[name]
        return Row(f"load: server CPU/request, {label}", median(cpu[name]), "us",
                   "hello CPU/request", median(cpu["hello"]), "(info)",
                   median([h / g for h, g in zip(cpu["hello"], cpu[name], strict=True)]))

    ceiling = m("hello", 0)
    rows = [Row("load: ceiling, aiohttp hello orjson", ceiling, "req/s",
                "itself", ceiling, "wrk -t1 -c32"),
            Row("load: hello app, board bytes on departures URL", m("hello_board", 0),
                "req/s", "ceiling", ceiling, "(info)", pr("hello_board", "hello"))]
    for label, name in (("1 key", "gw1"), ("100 keys", "gw100")):
        rows += [
            Row(f"load: keyed departures, {label}", m(name, 0), "req/s", "ceiling", ceiling,
                "≥ 0.60", pr(name, "hello")),
            Row(f"load: keyed departures, {label}, p50", m(name, 1), "ms", "ceiling p50",
                m("hello", 1)),
            Row(f"load: keyed departures, {label}, p99", m(name, 2), "ms", "ceiling p99",
                m("hello", 2)),
        ]
    for label, name, base in (("1 key", "w2_1", "gw1"), ("100 keys", "w2_100", "gw100")):
        rows += [
            Row(f"load: --workers 2, {label}", m(name, 0), "req/s", "1 worker", m(base, 0),
                "≥ 1.00", pr(name, base)),
            Row(f"load: --workers 2, {label}, p99", m(name, 2), "ms", "1 worker p99",
                m(base, 2)),
        ]
    if "hello" in cpu and "gw1" in cpu and "gw100" in cpu:
        rows += [cost("gw1"), cost("gw100")]
    rows += [
        Row("load: store commands/request, 1 key", per_request["cmds1"], "cmd",
            "target 1", 1.0, "≤ 1"),
        Row("load: store commands/request, 100 keys", per_request["cmds100"], "cmd",
            "target 1", 1.0, "≤ 1"),
        Row("load: p99 at half peak (open loop)", m("openloop", 2), "ms", "target 10 ms", 10.0,
            "< 10 ms"),
        Row("load: p99 at half peak, the ceiling (hello)", m("openloop_hello", 2), "ms",
            "target 10 ms", 10.0, "(info)"),
        Row("load: rate achieved by the open-loop run", m("openloop", 0), "req/s", "1 key peak",
            m("gw1", 0), "0.50"),
        Row("load: metrics on, 1 key", m("gw1", 0), "req/s", "GATEWAY_METRICS=0",
            m("nometrics1", 0), "≥ 0.95", pr("gw1", "nometrics1")),
        Row("load: metrics on, 100 keys", m("gw100", 0), "req/s", "GATEWAY_METRICS=0",
            m("nometrics100", 0), "≥ 0.95", pr("gw100", "nometrics100")),
    ]
    return rows


def main() -> None:
    from bench.common import print_table

    print_table(run())


if __name__ == "__main__":
    main()
