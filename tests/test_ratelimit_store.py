"""The limiter script on real stores (embedded Valkey, Redis 7): coalesced requests, key states,
script reloads, and failing fast when the store is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cluster import commands_sent

from gateway.access.key_issuing import create_key
from gateway.access.keys import generate_key, key_hash, key_id_of
from gateway.access.limiter import Check, KeyLimiter
from gateway.access.limiter.checks import CheckGroup, ChecksWire, KeyWire
from gateway.access.limiter.scripts import CHECK
from gateway.access.limits import month_window
from gateway.access.tiers import DEFAULT_TIERS, Limits, set_tier, wire_table
from gateway.clock import FixedClock, parse_instant
from gateway.errors import StoreUnavailable
from gateway.store.names import key_gcra_key
from gateway.store.store import Store

NOW = parse_instant("2023-11-07T17:05:00-08:00")


async def check_all(limiter: KeyLimiter, key: str, n: int, table: str,
                    now: float = NOW) -> list[Check]:
    month = month_window(now)
    return list(await asyncio.gather(*(
        limiter.check(key_id_of(key), key_hash(key), table, now, month) for _ in range(n))))


@pytest.fixture
async def limiter(store: Store) -> AsyncIterator[KeyLimiter]:
    limiter = KeyLimiter(store.sibling(0.25), 1.0, 0.25)
    yield limiter
    await limiter.close()


async def test_concurrent_requests_share_one_call_and_get_their_own_numbers(
        store: Store, limiter: KeyLimiter) -> None:
    await set_tier(store, "twenty", per_minute=20, per_month=1000)
    table = wire_table({**DEFAULT_TIERS, "twenty": Limits(20, 1000)})
    key, record = await create_key(store, FixedClock(NOW), kind="developer",
                                   email="c@example.org", tier="twenty")
    checks = await check_all(limiter, key, 50, table)
    ok = [c for c in checks if c.result == "ok"]
    assert len(ok) == 20
    assert sorted(c.minute_remaining for c in ok) == list(range(20))
    assert sorted(c.month_used for c in ok) == list(range(1, 21))
    refused = [c for c in checks if c.result != "ok"]
    assert {c.result for c in refused} == {"rate_limited"}
    assert all(c.retry_after_us > 0 and c.minute_remaining == 0 for c in refused)
    counters = await store.key_counters(record.key_id)
    assert len(counters) == 2 and all(ttl > 0 for ttl in counters.values()), counters
    # the GCRA state is the theoretical arrival time in whole microseconds, every digit kept
    # (the script passes a Lua number: tostring's %.14g would round it to 100 us)
    tat = await store.client.get(key_gcra_key(record.key_id))
    assert tat.isdigit() and len(tat) == 16, tat


async def test_key_states(store: Store, limiter: KeyLimiter) -> None:
    clock = FixedClock(NOW)
    table = wire_table(DEFAULT_TIERS)
    good, _ = await create_key(store, clock, kind="developer", email="a@example.org")
    revoked, rec = await create_key(store, clock, kind="developer", email="b@example.org")
    await store.update_key(rec.key_id, {"revoked": "2023-11-08T00:00:00+00:00"})
    expired, _ = await create_key(store, clock, kind="developer", email="c@example.org",
                                  expires=NOW - 1)
    odd, rec = await create_key(store, clock, kind="operator", email="d@example.org")
    await store.update_key(rec.key_id, {"tier": "platinum"})
    assert (await check_all(limiter, good, 1, table))[0].result == "ok"
    assert (await check_all(limiter, revoked, 1, table))[0].result == "revoked"
    assert (await check_all(limiter, expired, 1, table))[0].result == "expired"
    assert (await check_all(limiter, generate_key(), 1, table))[0].result == "unknown"
    month = month_window(NOW)
    strict = await limiter.check(key_id_of(odd), key_hash(odd), table, NOW, month)
    assert (strict.result, strict.tier) == ("unknown_tier", "platinum")
    lenient = await limiter.check(key_id_of(odd), key_hash(odd), table, NOW, month,
                                  strict=False)
    assert (lenient.result, lenient.tier_known, lenient.limits) == (
        "ok", False, DEFAULT_TIERS["bronze"])  # an undefined tier gets the default's limits


async def test_scripts_flushed_from_the_store_are_loaded_again(store: Store,
                                                               limiter: KeyLimiter) -> None:
    key, _ = await create_key(store, FixedClock(NOW), kind="developer", email="s@example.org")
    table = wire_table(DEFAULT_TIERS)
    assert (await check_all(limiter, key, 1, table))[0].result == "ok"
    await store.client.script_flush()
    checks = await check_all(limiter, key, 3, table)
    assert [c.month_used for c in checks] == [2, 3, 4]


async def test_a_dead_store_fails_fast_and_opens_the_breaker(tmp_path: Path) -> None:
    dead = Store(aioredis.Redis.from_url(f"unix://{tmp_path}/nothing.sock"),
                 f"unix://{tmp_path}/nothing.sock")
    limiter = KeyLimiter(dead.sibling(0.25), 1.0, 0.25)
    key = generate_key()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await limiter.check(key_id_of(key), key_hash(key), ";bronze:30:1;", NOW,
                            month_window(NOW))
    assert time.monotonic() - started < 0.5
    assert not limiter.available()  # open: the next requests skip the store
    await limiter.close()
    await dead.client.aclose()


async def test_signup_limit_per_ip(store: Store, limiter: KeyLimiter) -> None:
    waits = [await limiter.admit_signup("192.0.2.1", 3, 3600) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0] and 1190 < waits[3] <= 1200
    assert await limiter.admit_signup("192.0.2.2", 3, 3600) == 0.0
    assert 0 < await store.client.pttl("tg:signup:192.0.2.1") <= 3_600_000


async def _evalsha_calls(store: Store, action: Any) -> tuple[int, Any]:
    """(EVALSHA/EVAL commands clients sent while ``action()`` ran, its result), from MONITOR
    (on every primary of a cluster): the store's own account, where a script's inner calls
    are marked ``lua`` and left out."""
    sent, result = await commands_sent(store, action)
    return sum(name in ("EVALSHA", "EVAL") for name in sent), result


async def test_the_keys_of_one_batch_are_checked_by_one_script_call(
        store: Store, limiter: KeyLimiter) -> None:
    """Requests of five keys in one loop tick: one script call, and each key's own outcome as
    if it had been checked alone (per-key exact limits, revocation, unknown keys)."""
    clock = FixedClock(NOW)
    await set_tier(store, "three", per_minute=3, per_month=1000)
    table = wire_table({**DEFAULT_TIERS, "three": Limits(3, 1000)})
    tight, _ = await create_key(store, clock, kind="developer", email="t@example.org",
                                tier="three")
    roomy, _ = await create_key(store, clock, kind="developer", email="r@example.org")
    other, _ = await create_key(store, clock, kind="developer", email="o@example.org",
                                tier="three")
    revoked, rec = await create_key(store, clock, kind="developer", email="v@example.org")
    await store.update_key(rec.key_id, {"revoked": "2023-11-08T00:00:00+00:00"})
    unknown = generate_key()
    plan = [tight] * 5 + [roomy] * 4 + [other] * 2 + [revoked, unknown]
    month = month_window(NOW)
    await limiter.check(key_id_of(roomy), key_hash(roomy), table, NOW, month)  # warm up
    if store.cluster:  # the warm-up loaded the script on roomy's primary only
        await store.client.script_load(CHECK.text)

    async def burst() -> list[Check]:
        return list(await asyncio.gather(*(
            limiter.check(key_id_of(k), key_hash(k), table, NOW, month) for k in plan)))

    calls, checks = await _evalsha_calls(store, burst)
    # on a cluster, where a script's keys must share a slot: one call per key (5), in one
    # pipeline
    assert calls == (5 if store.cluster else 1)
    # our own RESP connection on a standalone store, never on a cluster (redis-py routes there)
    assert (limiter._batcher._conn is None) == store.cluster
    by_key: dict[str, list[Check]] = {}
    for k, c in zip(plan, checks, strict=True):
        by_key.setdefault(k, []).append(c)
    assert [c.result for c in by_key[tight]] == ["ok"] * 3 + ["rate_limited"] * 2
    assert sorted(c.minute_remaining for c in by_key[tight][:3]) == [0, 1, 2]
    assert [c.result for c in by_key[roomy]] == ["ok"] * 4
    assert [c.month_used for c in by_key[roomy]] == [2, 3, 4, 5]
    assert [c.result for c in by_key[other]] == ["ok", "ok"]
    assert [c.month_used for c in by_key[other]] == [1, 2]
    assert [c.result for c in by_key[revoked]] == ["revoked"]
    assert [c.result for c in by_key[unknown]] == ["unknown"]



async def test_a_reply_the_limiter_cannot_read_fails_its_requests(limiter: KeyLimiter) -> None:
    """Every waiting request gets an answer: a reply of an unexpected shape fails its
    requests with 503 instead of leaving them waiting, and the batcher carries on."""
    key = generate_key()
    month = month_window(NOW)
    group = CheckGroup(limiter, (key_id_of(key), key_hash(key), month.name, True),
                       KeyWire(key_id_of(key), key_hash(key), month.name, True),
                       ";bronze:30:1;", NOW, 60)
    waiting: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    group.waiters.append(waiting)
    batcher = limiter._batcher
    batcher._inflight += 1  # as if sent
    batcher._finish([ChecksWire([group])], [[b"ok", b"developer", 7]], time.perf_counter())
    with pytest.raises(StoreUnavailable, match="unreadable"):
        await waiting
    assert batcher._inflight == 0


async def test_a_closed_limiter_answers_at_once_and_connects_no_more(store: Store) -> None:
    limiter = KeyLimiter(store.sibling(0.25), 1.0, 0.25)
    key, _ = await create_key(store, FixedClock(NOW), kind="developer", email="z@example.org")
    table = wire_table(DEFAULT_TIERS)
    assert (await check_all(limiter, key, 1, table))[0].result == "ok"
    await limiter.close()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(check_all(limiter, key, 2, table), 1.0)
    assert limiter._batcher._conn is None and limiter._batcher._inflight == 0
