"""Limits are exact across gateway processes: three real ``serve`` processes on one store (once
per store kind). Process 0 runs on the real clock, process 1 with GATEWAY_CLOCK 90 s ahead,
process 2 with GATEWAY_CLOCK in the next calendar month."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from gwprocs import ROOT, GatewayProcess, burst, get, iso_in, start_gateways

from gateway.access import keys
from gateway.access.key_issuing import create_key
from gateway.access.tiers import set_tier
from gateway.clock import SystemClock
from gateway.store.store import Store


def _next_month_iso() -> str:
    now = dt.datetime.now(dt.UTC)
    first = dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, 1, tzinfo=dt.UTC)
    return first.isoformat()


@pytest.fixture(scope="module")
def gateways(store_url: str) -> Iterator[list[GatewayProcess]]:
    procs = start_gateways(store_url, [None, iso_in(90), _next_month_iso()])
    yield procs
    for proc in procs:
        proc.stop()


async def new_key(store: Store, per_minute: int, per_month: int) -> tuple[str, str]:
    tier = f"t_{uuid.uuid4().hex[:12]}"  # new to the processes: they learn it on first use
    await set_tier(store, tier, per_minute, per_month)
    key, record = await create_key(store, SystemClock(), kind="developer",
                                   email="load@example.org", tier=tier)
    return key, record.key_id


def body(reply: Any) -> dict[str, Any]:
    return dict(orjson.loads(reply.body))


async def test_1000_concurrent_requests_two_processes_exactly_100(
        store: Store, gateways: list[GatewayProcess]) -> None:
    key, key_id = await new_key(store, per_minute=100, per_month=1_000_000)
    a, b = gateways[0], gateways[1]  # b's clock is 90 s ahead of a's
    started = time.perf_counter()
    replies = [r for part in await asyncio.gather(
        burst(a.port, "/v1/keys/me", {"X-API-Key": key}, 500),
        burst(b.port, "/v1/keys/me", {"X-API-Key": key}, 500)) for r in part]
    elapsed = time.perf_counter() - started
    statuses = Counter(r.status for r in replies)
    assert statuses == {200: 100, 429: 900}, (statuses, elapsed)
    for reply in replies:
        assert reply.headers["ratelimit-policy"].startswith('"minute";q=100;w=60, "month";')
        assert reply.headers["ratelimit"].startswith('"minute";r=')
        if reply.status == 429:
            assert body(reply)["error"]["code"] == "rate_limited"
            assert int(reply.headers["retry-after"]) >= 1
    counters = await store.key_counters(key_id)
    assert any(name.endswith(":gcra") for name in counters), counters
    assert all(ttl > 0 for ttl in counters.values()), counters
    months = [n for n in counters if ":month:" in n]
    assert sum([int(await store.client.get(n)) for n in months]) == 100


async def test_a_clock_90s_ahead_changes_nothing(store: Store,
                                                 gateways: list[GatewayProcess]) -> None:
    key, _ = await new_key(store, per_minute=60, per_month=1_000_000)
    a, b = gateways[0], gateways[1]
    started = time.monotonic()
    first = await burst(a.port, "/v1/feeds", {"X-API-Key": key}, 40, connections=1)
    assert Counter(r.status for r in first) == {200: 40}
    # b believes 90 s have passed (a process-clock limiter would give a whole new burst: 40
    # more); the minute is measured by the store's TIME, so b admits only what is left of the
    # burst, plus one refill per second (60/min) that really passed while this ran.
    second = await burst(b.port, "/v1/feeds", {"X-API-Key": key}, 40, connections=1)
    admitted = sum(r.status == 200 for r in second)
    refills = int(time.monotonic() - started) + 1
    assert 20 <= admitted <= 20 + refills, Counter(r.status for r in second)


async def test_mistyped_key_costs_no_store_command(store: Store,
                                                   gateways: list[GatewayProcess]) -> None:
    # INFO commandstats counts the commands of every client: both store kinds are servers this
    # session started, so only these gateways send them (their background work: retried below)
    key, _ = await new_key(store, per_minute=1000, per_month=1_000_000)
    typo = key[:20] + ("a" if key[20] != "a" else "b") + key[21:]
    assert not keys.well_formed(typo)
    for proc in gateways[:2]:  # warm: connections open, tiers loaded
        assert (await get(proc.port, "/v1/feeds", {"X-API-Key": key})).status == 200

    async def commands() -> dict[str, int]:
        stats: dict[str, Any] = await store.client.info("commandstats")
        return {k: int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}

    spent: dict[str, int] = {}
    for _ in range(3):  # background work (the catalog's periodic refresh) may land inside
        before = await commands()
        for proc in gateways[:2]:
            replies = await burst(proc.port, "/v1/feeds", {"X-API-Key": typo}, 50, 5)
            assert {r.status for r in replies} == {401}
            assert {body(r)["error"]["code"] for r in replies} == {"invalid_api_key"}
        after = await commands()
        spent = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        if not spent:
            break
    assert spent == {}


async def test_revocation_reaches_both_processes_within_5s(
        store_url: str, store: Store, gateways: list[GatewayProcess]) -> None:
    key, key_id = await new_key(store, per_minute=1000, per_month=1_000_000)
    headers = {"X-API-Key": key}
    for proc in gateways[:2]:
        assert (await get(proc.port, "/v1/feeds", headers)).status == 200
    env = {**os.environ, "REDIS_URL": store_url}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", "keys", "revoke", key_id],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    revoked_at = time.monotonic()
    for proc in gateways[:2]:
        while True:
            reply = await get(proc.port, "/v1/feeds", headers)
            if reply.status == 401:
                assert body(reply)["error"]["code"] == "revoked_api_key"
                break
            assert time.monotonic() - revoked_at < 5.0, "still served 5 s after revocation"
            await asyncio.sleep(0.05)
    assert time.monotonic() - revoked_at < 5.0


async def test_monthly_quota_across_processes_and_the_next_month(
        store: Store, gateways: list[GatewayProcess]) -> None:
    key, key_id = await new_key(store, per_minute=1000, per_month=5)
    headers = {"X-API-Key": key}
    a, b, next_month = gateways
    for _ in range(3):
        assert (await get(a.port, "/v1/feeds", headers)).status == 200
    for _ in range(2):
        assert (await get(b.port, "/v1/feeds", headers)).status == 200
    for proc in (a, b):
        reply = await get(proc.port, "/v1/feeds", headers)
        assert reply.status == 429 and body(reply)["error"]["code"] == "quota_exceeded"
        assert reply.headers["ratelimit"].endswith(f"r=0;t={reply.headers['retry-after']}")
    reply = await get(next_month.port, "/v1/keys/me", headers)
    assert reply.status == 200, reply.body
    assert body(reply)["usage"]["month"] == 1
    counters = await store.key_counters(key_id)
    assert len([n for n in counters if ":month:" in n]) == 2
    assert all(ttl > 0 for ttl in counters.values()), counters
