"""Keys benchmark: what authentication + rate limiting cost per request.

The same departures board (Caltrain, Palo Alto, the clock at a weekday evening) served by two
``transit-gateway serve`` processes on one embedded Valkey: one as in production (every request
is authenticated and counted: by the auth + rate-limit script, or, for a key the process sees
often, from a reserve that script counted ahead; the key's tier has limits so high that nothing
is refused), one with ``GATEWAY_BENCH_NO_AUTH=1`` (no key, no limits). wrk loads one at a
time, in interleaved rounds (ABBA order); the figure is the ratio of the median requests per
second, keyed over unkeyed. Target: at least 0.80.

Two load shapes: one key on every request (concurrent requests of one key share one verdict),
and 200 keys in rotation (a wrk Lua script; the keys waiting together share one script call but
each is checked on its own, and each soon has a reserve; the unkeyed server gets the same
headers). Servers are pinned to
CPU 0, wrk and the embedded Valkey to CPU 1 (``bench.common.cpu_pinning``,
``pin_store_beside_load``), as in the load bench: the store's own CPU per script call is not
taken from the gateway's core.

wrk comes from Debian's package (installed here with apt-get when missing).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import (
    DATA,
    ROOT,
    Row,
    cpu_pinning,
    ensure_tool,
    free_port,
    gateway_env,
    median,
    pin_store_beside_load,
    run_wrk,
    wait_http,
)

FEED = DATA / "gtfs" / "caltrain-2023.zip"
CLOCK = "2023-11-07T17:05:00-08:00"
PATH = "/v1/feeds/caltrain/stops/palo_alto/departures"
TIER = ("bench", "60000000", "1000000000000")  # per minute, per month: limits never reached


def ensure_wrk() -> str:
    return ensure_tool("wrk", "wrk")


def wrk(binary: list[str], url: str, seconds: int, headers: dict[str, str],
        script: Path | None = None) -> float:
    """Requests per second of one wrk run (see bench.common.run_wrk)."""
    return run_wrk(binary, url, seconds, headers, script)[0]


def _rotation_script(path: Path, keys: list[str]) -> Path:
    path.write_text("local keys = {" + ",".join(f'"{k}"' for k in keys) + "}\n"
                    "local i = 0\n"
                    "request = function()\n"
                    "  i = i % #keys + 1\n"
                    "  return wrk.format('GET', nil, {['X-API-Key'] = keys[i]})\n"
                    "end\n")
    return path


def _make_keys(redis_url: str, n: int) -> list[str]:
    import asyncio

    from gateway.access.key_issuing import create_key
    from gateway.clock import SystemClock
    from gateway.store.store import Store

    async def make() -> list[str]:
        store = await Store.connect(redis_url)
        try:
            return [(await create_key(store, SystemClock(), kind="developer",
                                      email=f"bench{i}@localhost", tier=TIER[0]))[0]
                    for i in range(n)]
        finally:
            await store.close()

    return asyncio.run(make())


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway", *args], env=env, cwd=ROOT,
                          check=True, capture_output=True, text=True)
    return done.stdout.strip()


def run(rounds: int = 5, seconds: int = 5) -> list[Row]:
    from gateway.store.embedded import EmbeddedValkey

    pin_server, pin_wrk = cpu_pinning()
    binary = [*pin_wrk, ensure_wrk()]
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-keys-"))
    store = EmbeddedValkey(tmp / "store")
    redis_url = store.ensure_running()
    pin_store_beside_load(redis_url)
    env = gateway_env(redis_url, CLOCK)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        _cli(env, "feeds", "add", "caltrain", "--static", str(FEED))
        _cli(env, "tiers", "set", TIER[0], "--per-minute", TIER[1], "--per-month", TIER[2])
        key = _cli(env, "keys", "create", "--email", "bench@localhost", "--tier", TIER[0])
        rotation = _rotation_script(tmp / "keys.lua", _make_keys(redis_url, 200))
        ports = {"keyed": free_port(), "unkeyed": free_port()}
        for mode, port in ports.items():
            child = {**env, "GATEWAY_BENCH_NO_AUTH": "1"} if mode == "unkeyed" else env
            servers.append(subprocess.Popen(
                [*pin_server, sys.executable, "-m", "gateway", "serve", "--role", "api",
                 "--port", str(port)], env=child, cwd=ROOT))
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/healthz")
        headers = {"keyed": {"X-API-Key": key}, "unkeyed": {}}

        def url(mode: str) -> str:
            return f"http://127.0.0.1:{ports[mode]}{PATH}"

        for mode in ports:  # warm up: feed loaded, connections open, code paths hot
            wait_http(url(mode) + (f"?key={key}" if mode == "keyed" else ""))
            wrk(binary, url(mode), 2, headers[mode])
        results: dict[str, list[float]] = {m: [] for m in
                                           ("keyed", "unkeyed", "keyed200", "unkeyed200")}
        for i in range(rounds):
            order = ("keyed", "unkeyed") if i % 2 == 0 else ("unkeyed", "keyed")
            for mode in order:
                results[mode].append(wrk(binary, url(mode), seconds, headers[mode]))
                results[mode + "200"].append(wrk(binary, url(mode), seconds, {},
                                                 script=rotation))
            print(f"  round {i + 1}: one key: keyed {results['keyed'][-1]:.0f} req/s, "
                  f"unkeyed {results['unkeyed'][-1]:.0f} req/s; 200 keys: keyed "
                  f"{results['keyed200'][-1]:.0f}, unkeyed {results['unkeyed200'][-1]:.0f}",
                  file=sys.stderr)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=15)
        store.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return [
        Row("keys: departures, auth + limits, one key", median(results["keyed"]), "req/s",
            "same, GATEWAY_BENCH_NO_AUTH=1", median(results["unkeyed"]), "≥ 0.80"),
        Row("keys: departures, auth + limits, 200 keys", median(results["keyed200"]), "req/s",
            "same, GATEWAY_BENCH_NO_AUTH=1", median(results["unkeyed200"]), "≥ 0.80"),
    ]


def main() -> None:
    from bench.common import print_table

    print_table(run())


if __name__ == "__main__":
    main()
