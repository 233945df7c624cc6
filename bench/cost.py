"""Cost benchmark: user-space instructions per request, counted by callgrind (no noise).

The load bench's req/s move by up to half between rounds on a shared host; this counts what a
request costs in instructions, which repeats to within about 1 % from run to run, so a change
of a few per cent in the gateway's own code shows. Each server is driven in one process
(``python -m bench.cost child MODE N`` under ``valgrind --tool=callgrind``): its aiohttp
request handler gets each request through ``data_received`` and writes the answer to a
transport that only counts bytes, one request at a time, and instrumentation is on only around
N requests (a client request from a small C shim compiled here). No socket and no kernel: what
the kernel costs (about a quarter of a request's CPU in the load bench) and what a real socket
adds to uvloop are not in these figures; everything in Python and C on the request's path is.

Servers, as in the load bench: ``hello`` (the ceiling, a small orjson body on ``/``);
``hello-board`` (the gateway's 50-departure board on the departures route, from memory: what
aiohttp itself costs for that URL and body); ``gateway`` (the app as built by ``serve``, over
the embedded Valkey, keyed requests of one key on a tier whose limits are never reached, so
each is admitted from a reserve and answered with the board cached for the current second;
the clock fixed, the store-following tasks not running); ``gateway-nometrics``: the same with
``GATEWAY_METRICS=0``, so what request metrics cost shows without the load bench's noise
(target: under 5 %).

Under callgrind a request takes ~50x longer, so a reserve sized by the key's rate holds fewer
requests than at full speed (the lifetime is the default and largest allowed, 1 s): renewals
(two store round trips each) weigh a little more here than at full speed.

valgrind comes from Debian's package (installed with apt-get when missing; it carries
``callgrind.h``); the shim is compiled with the system's ``cc``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT, Row, ensure_tool, gateway_env

N = 2000  # measured requests per server (after as many for warm-up)

_SHIM = """
#include <valgrind/callgrind.h>
void measure_on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void measure_off(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS; }
"""


def ensure_valgrind() -> str:
    return ensure_tool("valgrind", "valgrind", Path("/usr/include/valgrind/callgrind.h"))


# --- the child: one server under callgrind ---------------------------------------------------

class _CountingTransport(asyncio.Transport):
    """Takes what the server writes, counts it, and tells the driver an answer is out."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.head = b""
        self.answered: asyncio.Future[None] | None = None

    def write(self, data: Any) -> None:
        self._took([data])

    def writelines(self, list_of_data: Any) -> None:
        self._took(list(list_of_data))

    def _took(self, chunks: list[Any]) -> None:
        self.head = bytes(chunks[0][:12])
        self.written += sum(len(c) for c in chunks)
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default)

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def _child(mode: str, n: int, shim: str | None) -> dict[str, Any]:
    import ctypes

    import orjson
    from aiohttp import web

    from bench.load import CLOCK, PATH

    path, headers = PATH, ""
    if mode == "hello":
        body = orjson.dumps({"hello": "world", "n": 1})
        path = "/"
    elif mode == "hello-board":
        body = Path(os.environ["BENCH_BOARD"]).read_bytes()
    if mode in ("hello", "hello-board"):
        async def hello(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/", hello)
        app.router.add_get("/v1/feeds/{feed}/stops/{stop}/departures", hello)
    else:
        import gateway.observability.request_metrics
        from gateway.cli.run import settle_heap
        from gateway.clock import FixedClock, parse_instant
        from gateway.http.app import build_app
        from gateway.http.appkeys import CATALOG
        from gateway.replica.feeds import FeedCatalog
        from gateway.settings import MAX_RESERVE_SECONDS, Settings
        from gateway.store.store import Store

        # The metrics flush runs once a second of wall time; under callgrind a second holds
        # ~50x fewer requests, so it would weigh ~50x more per request than at full speed.
        gateway.observability.request_metrics.FLUSH_SECONDS = 50.0
        settings = dataclasses.replace(Settings.from_env(), reserve_seconds=MAX_RESERVE_SECONDS,
                                       metrics=mode == "gateway")
        store = await Store.connect(os.environ["REDIS_URL"])
        app = build_app(settings, store, FixedClock(parse_instant(CLOCK)),
                        FeedCatalog(store, after_load=settle_heap), follow_store=False)
        await app[CATALOG].refresh()
        headers = f"X-API-Key: {os.environ['BENCH_KEY']}\r\n"
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}User-Agent: wrk\r\n\r\n"
               ).encode()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    loop = asyncio.get_running_loop()
    assert runner.server is not None
    protocol = runner.server()
    transport = _CountingTransport()
    protocol.connection_made(transport)

    async def serve(count: int) -> None:
        for _ in range(count):
            transport.answered = loop.create_future()
            protocol.data_received(request)
            await transport.answered
            if transport.head != b"HTTP/1.1 200":
                raise RuntimeError(f"{mode} answered {transport.head!r}")
        await asyncio.sleep(0.01)  # what the last answers left to do

    await serve(n)  # warm: code paths, caches, the key's reserve
    measure = ctypes.CDLL(shim) if shim else None
    written = transport.written
    if measure is not None:
        measure.measure_on()
    await serve(n)
    if measure is not None:
        measure.measure_off()
    await runner.cleanup()
    return {"mode": mode, "n": n, "bytes": (transport.written - written) // n}


# --- the parent ------------------------------------------------------------------------------

def _instructions(out_dir: Path) -> int:
    """The instructions of the measured stretch: the largest ``totals`` of the dumps (the
    stretch's own dump; the one at exit holds only what ran after it)."""
    totals = [int(line.split()[1]) for f in out_dir.glob("callgrind.*")
              for line in f.read_text(errors="replace").splitlines()
              if line.startswith("totals:")]
    if not totals:
        raise RuntimeError(f"callgrind wrote no totals in {out_dir}")
    return max(totals)


def _measure(valgrind: str, shim: Path, mode: str, env: dict[str, str], tmp: Path) -> float:
    out_dir = tmp / mode
    out_dir.mkdir()
    done = subprocess.run(
        [valgrind, "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out_dir}/callgrind.%p.%n", sys.executable, "-m", "bench.cost",
         "child", mode, str(N), str(shim)],
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
        timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} under callgrind failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return _instructions(out_dir) / int(result["n"])


def run() -> list[Row]:
    from bench.keys import _cli, _make_keys
    from bench.load import CLOCK, FEED, TIER
    from gateway.store.embedded import EmbeddedValkey

    valgrind = ensure_valgrind()
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-cost-"))
    shim = tmp / "measure.so"
    (tmp / "measure.c").write_text(_SHIM)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(shim), str(tmp / "measure.c")],
                   check=True, capture_output=True)
    store = EmbeddedValkey(tmp / "store")
    url = store.ensure_running()
    env = gateway_env(url, CLOCK)
    try:
        print("  loading wmata-2026.zip...", file=sys.stderr)
        _cli(env, "feeds", "add", "wmata", "--static", str(FEED))
        _cli(env, "tiers", "set", TIER[0], "--per-minute", TIER[1], "--per-month", TIER[2])
        key = _make_keys(url, 1)[0]
        env["BENCH_KEY"] = key
        board = tmp / "board.json"
        board.write_bytes(asyncio.run(_board(url, key)))
        env["BENCH_BOARD"] = str(board)
        per_request = {}
        for mode in ("hello", "hello-board", "gateway", "gateway-nometrics"):
            print(f"  {mode} under callgrind ({N} requests)...", file=sys.stderr)
            per_request[mode] = _measure(valgrind, shim, mode, env, tmp)
    finally:
        store.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    hello, board_cost, gateway, bare = (per_request[m] for m in (
        "hello", "hello-board", "gateway", "gateway-nometrics"))
    return [
        Row("cost: hello, instructions/request", hello, "Ir", "itself", hello, "(info)"),
        Row("cost: hello app, board on departures URL", board_cost, "Ir", "hello", hello,
            "(info)"),
        Row("cost: keyed departures, 1 key", gateway, "Ir", "hello app, board", board_cost,
            "(info)"),
        Row("cost: keyed departures over the ceiling", gateway, "Ir", "hello", hello,
            "(info)"),
        Row("cost: request metrics on", gateway, "Ir", "GATEWAY_METRICS=0", bare, "< 1.05"),
    ]


async def _board(url: str, key: str) -> bytes:
    """The board the gateway answers (the hello-board server answers the same bytes)."""
    from aiohttp.test_utils import TestClient, TestServer

    from bench.load import CLOCK, PATH
    from gateway.clock import FixedClock, parse_instant
    from gateway.http.app import build_app
    from gateway.http.appkeys import CATALOG
    from gateway.settings import Settings
    from gateway.store.store import Store

    store = await Store.connect(url)
    app = build_app(Settings.from_env({}), store, FixedClock(parse_instant(CLOCK)),
                    follow_store=False)
    await app[CATALOG].refresh()
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(PATH, headers={"X-API-Key": key})
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"the gateway answered {resp.status}: {body[:300]!r}")
    await store.close()
    return body


def main() -> None:
    if len(sys.argv) >= 4 and sys.argv[1] == "child":
        import uvloop

        uvloop.install()
        shim = sys.argv[4] if len(sys.argv) > 4 else None
        print(json.dumps(asyncio.run(_child(sys.argv[2], int(sys.argv[3]), shim))))
        return
    from bench.common import print_table

    print_table(run())


if __name__ == "__main__":
    main()
