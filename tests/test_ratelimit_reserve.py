"""Reserves on real stores: a key a process sees often is counted ahead in blocks, served from
the block without store calls, and what is left goes back; limits stay exact across processes
(a check that would refuse while a reserve is held elsewhere waits for it).

The limiter's monotonic clock (a key's rate window, a reserve's lifetime as ``take`` sees it)
is a ``FixedClock`` the tests step. Real sleeps remain only where the wait is real: a reserve's
end by its loop timer, the store's own ``TIME``, and a limiter waiting for reserves held
elsewhere (its reads of ``WAIT_LIMIT_S``) in the tests that measure it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.access.key_issuing import create_key
from gateway.access.keys import KeyRecord, key_hash, key_id_of
from gateway.access.limiter import KeyLimiter
from gateway.access.limits import OK, QUOTA_EXCEEDED, month_window
from gateway.access.tiers import DEFAULT_TIERS, Limits, set_tier, wire_table
from gateway.clock import FixedClock, parse_instant
from gateway.store.names import key_gcra_key, key_held_key, key_month_key
from gateway.store.store import Store
from tests.test_ratelimit_store import _evalsha_calls

NOW = parse_instant("2023-11-07T17:05:00-08:00")
MONTH = month_window(NOW)


def limiter_of(store: Store, reserve_seconds: float,
               monotonic: Callable[[], float] = time.monotonic) -> KeyLimiter:
    return KeyLimiter(store.sibling(0.25), 1.0, 0.25, reserve_seconds=reserve_seconds,
                      monotonic=monotonic)


@pytest.fixture
def mono() -> FixedClock:
    """The limiter's monotonic clock, stepped by the tests (``mono.now``)."""
    return FixedClock(0.0)


@pytest.fixture
async def tier(store: Store) -> str:
    await set_tier(store, "hundred", per_minute=100, per_month=1_000_000)
    await set_tier(store, "big", per_minute=6_000_000, per_month=1_000_000_000)
    await set_tier(store, "quota", per_minute=0, per_month=20_000)
    await set_tier(store, "fast", per_minute=60_000, per_month=1_000_000_000)
    return wire_table({**DEFAULT_TIERS, "hundred": Limits(100, 1_000_000),
                       "big": Limits(6_000_000, 1_000_000_000), "quota": Limits(0, 20_000),
                       "fast": Limits(60_000, 1_000_000_000)})


async def burst(limiter: KeyLimiter, key: str, n: int, table: str) -> list[tuple[str, int, int]]:
    """``n`` concurrent checks: (result, month used, minute remaining) each, in arrival order."""
    checks = await asyncio.gather(*(limiter.check(key_id_of(key), key_hash(key), table, NOW,
                                                  MONTH) for _ in range(n)))
    return [(c.result, c.month_used, c.minute_remaining) for c in checks]


async def make_hot(limiter: KeyLimiter, mono: FixedClock, key: str, table: str,
                   n: int = 5) -> int:
    """Two bursts 0.12 s apart on the limiter's clock ``mono``: the second one's check carries
    the key's rate (measured over 0.1 s at least), so it asks for a reserve. Returns the
    requests admitted."""
    first = await burst(limiter, key, n, table)
    mono.advance(0.12)
    second = await burst(limiter, key, n, table)
    return sum(r == OK for r, _, _ in first + second)


async def new_key(store: Store, email: str, tier: str,
                  expires: float | None = None) -> tuple[str, KeyRecord]:
    return await create_key(store, FixedClock(NOW), kind="developer", email=email, tier=tier,
                            expires=expires)


async def used(store: Store, key: str) -> int:
    return int(await store.client.get(key_month_key(key_id_of(key), MONTH.name)) or 0)


async def test_a_hot_key_is_served_from_its_reserve_without_store_calls(
        store: Store, tier: str, mono: FixedClock) -> None:
    limiter = limiter_of(store, reserve_seconds=5.0, monotonic=mono.now)
    key, _ = await new_key(store, "h@example.org", "big")
    try:
        assert await make_hot(limiter, mono, key, tier) == 10
        assert limiter._reserves, "the second burst's check asked for a reserve"
        calls, served = await _evalsha_calls(store, lambda: burst(limiter, key, 100, tier))
        assert calls == 0  # a reserve of 208 (5 requests in 0.12 s, for 5 s)
        # every request its own numbers, as if checked one after another
        assert [r for r, _, _ in served] == [OK] * 100
        assert [u for _, u, _ in served] == list(range(11, 111))
        remaining = [m for _, _, m in served]
        assert remaining == list(range(remaining[0], remaining[0] - 100, -1))
    finally:
        await limiter.close()
    # closing handed back what was left: the month counter holds the requests served
    assert await used(store, key) == 110
    assert not await store.client.exists(key_held_key(key_id_of(key)))


async def test_what_a_reserve_leaves_goes_back_when_it_ends(
        store: Store, tier: str, mono: FixedClock) -> None:
    # make_hot's 5 requests in 0.12 s ask for a reserve of 12 (8 at least: reserve_size)
    limiter = limiter_of(store, reserve_seconds=0.3, monotonic=mono.now)
    key, _ = await new_key(store, "e@example.org", "hundred")
    try:
        await make_hot(limiter, mono, key, tier)
        assert limiter._reserves
        assert await used(store, key) > 10  # counted ahead
        await burst(limiter, key, 3, tier)  # from the reserve
        mono.advance(0.5)
        await asyncio.sleep(0.5)  # its end is a loop timer, its return a store round trip
        assert not limiter._reserves
        assert await used(store, key) == 13
        assert not await store.client.exists(key_held_key(key_id_of(key)))
        # the GCRA state went back too: the next check sees 13 of the minute's burst used
        again = await burst(limiter, key, 1, tier)
        assert again[0][:2] == (OK, 14)
        assert 100 - 14 <= again[0][2] <= 100 - 14 + 2  # + what ~1 s refilled (1 per 0.6 s)
    finally:
        await limiter.close()


async def test_limits_stay_exact_while_another_process_holds_a_reserve(
        store: Store, tier: str, mono: FixedClock) -> None:
    """Two limiters (as two processes) on a key with 100 requests left of its month (a
    per-minute limit would refill while the test runs): A holds a reserve it hardly uses; B's
    burst takes the rest. B's requests beyond it wait for A's reserve to come back instead of
    being refused, so exactly 100 pass in all and every refusal is final. (B's wait is real:
    A's reserve ends by its loop timer; B keeps the real clock.)"""
    a = limiter_of(store, reserve_seconds=0.5, monotonic=mono.now)
    b = limiter_of(store, reserve_seconds=0.5)
    key, _ = await new_key(store, "x@example.org", "quota")
    await store.client.set(key_month_key(key_id_of(key), MONTH.name), 19_900, ex=3600)
    try:
        passed = await make_hot(a, mono, key, tier)
        assert passed == 10 and a._reserves, "A holds a reserve"
        assert await store.client.zcard(key_held_key(key_id_of(key))) == 1
        passed += sum(r == OK for r, _, _ in await burst(a, key, 3, tier))  # from it
        started = time.monotonic()
        results = await burst(b, key, 150, tier)
        waited = time.monotonic() - started
        assert {r for r, _, _ in results} == {OK, QUOTA_EXCEEDED}
        passed += sum(r == OK for r, _, _ in results)
        assert passed == 100
        assert 150 - sum(r == OK for r, _, _ in results) == 150 - (100 - 13)
        assert waited >= 0.2, "B's last requests waited for A's reserve to come back"
        assert await used(store, key) == 20_000
    finally:
        await a.close()
        await b.close()


async def test_revocation_reaches_a_key_with_a_reserve_within_its_lifetime(
        store: Store, tier: str, mono: FixedClock) -> None:
    limiter = limiter_of(store, reserve_seconds=0.3, monotonic=mono.now)
    key, rec = await new_key(store, "r@example.org", "big")
    try:
        await make_hot(limiter, mono, key, tier)
        assert limiter._reserves
        await store.update_key(rec.key_id, {"revoked": "2023-11-08T01:05:00+00:00"})
        revoked_at = mono.now()
        while (await burst(limiter, key, 1, tier))[0][0] != "revoked":
            assert mono.now() - revoked_at < 0.6
            mono.advance(0.01)
    finally:
        await limiter.close()


async def test_a_key_seen_rarely_gets_no_reserve(store: Store, tier: str,
                                                 mono: FixedClock) -> None:
    limiter = limiter_of(store, reserve_seconds=0.25, monotonic=mono.now)
    key, _ = await new_key(store, "s@example.org", "big")
    try:
        for _ in range(4):
            await burst(limiter, key, 1, tier)
            mono.advance(0.05)
        assert not limiter._reserves
        assert await used(store, key) == 4
    finally:
        await limiter.close()


@pytest.fixture
async def no_reserve_limiter(store: Store, mono: FixedClock) -> AsyncIterator[KeyLimiter]:
    limiter = limiter_of(store, reserve_seconds=0, monotonic=mono.now)
    yield limiter
    await limiter.close()


async def test_reserves_can_be_turned_off(store: Store, tier: str, mono: FixedClock,
                                          no_reserve_limiter: KeyLimiter) -> None:
    key, _ = await new_key(store, "o@example.org", "big")
    await make_hot(no_reserve_limiter, mono, key, tier, n=20)
    assert not no_reserve_limiter._reserves
    assert await used(store, key) == 40


async def test_a_reserve_the_clock_has_passed_gives_no_slots_back(
        store: Store, tier: str, mono: FixedClock) -> None:
    """60,000/min: one request per ms. A's reserve lies a few ms ahead when granted; B then
    pushes the GCRA state a second ahead. When A's reserve ends 0.3 s later, its slots are
    long refilled: handing them back must not take them off B's state (that would admit more
    than the burst). The store's clock has to pass A's slots, so that wait is real."""
    a = limiter_of(store, reserve_seconds=0.3, monotonic=mono.now)
    b = limiter_of(store, reserve_seconds=0)
    key, _ = await new_key(store, "f@example.org", "fast")
    gcra = key_gcra_key(key_id_of(key))
    try:
        await make_hot(a, mono, key, tier)
        assert a._reserves
        await burst(b, key, 1000, tier)
        before = int(await store.client.get(gcra))
        mono.advance(0.5)
        await asyncio.sleep(0.5)
        assert not a._reserves and not await store.client.exists(key_held_key(key_id_of(key)))
        assert int(await store.client.get(gcra)) == before
    finally:
        await a.close()
        await b.close()


async def test_a_reserve_of_a_dead_process_stops_counting_at_its_hold_time(
        store: Store, tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process died holding a reserve (it never comes back): refusals wait until the
    reserve's hold time, then are final and keep their kind. If even that never came, the
    limiter gives up after WAIT_LIMIT_S with the refusal it was given."""
    limiter = limiter_of(store, reserve_seconds=0)
    key, _ = await new_key(store, "d@example.org", "quota")
    await store.client.set(key_month_key(key_id_of(key), MONTH.name), 20_000, ex=3600)
    seconds, micros = await store.client.time()
    held = key_held_key(key_id_of(key))
    await store.client.zadd(held, {"dead:1": seconds * 1_000_000 + micros + 400_000})
    await store.client.pexpire(held, 5_000)
    try:
        started = time.monotonic()
        assert (await burst(limiter, key, 1, tier))[0][0] == QUOTA_EXCEEDED
        assert 0.3 < time.monotonic() - started < 1.5
        await store.client.zadd(held, {"dead:2": (seconds + 3600) * 1_000_000})
        monkeypatch.setattr("gateway.access.limiter.key_limiter.WAIT_LIMIT_S", 0.2)
        started = time.monotonic()
        assert (await burst(limiter, key, 1, tier))[0][0] == QUOTA_EXCEEDED
        assert 0.2 <= time.monotonic() - started < 1.0
    finally:
        await limiter.close()


async def test_a_key_served_from_a_reserve_expires_on_time(store: Store, tier: str,
                                                          mono: FixedClock) -> None:
    """Expiry is checked on every request, reserve or not: the moment the key expires (by
    the process clock), its next request is refused although its reserve has places left,
    and the reserve goes back whole (the refused request is not counted)."""
    from aiohttp.test_utils import make_mocked_request

    from gateway.access.guard import Guard
    from gateway.access.tiers import TierCache
    from gateway.errors import Unauthorized
    from gateway.settings import Settings

    clock = FixedClock(NOW)
    key, _ = await new_key(store, "t@example.org", "big", expires=NOW + 60)
    limiter = limiter_of(store, reserve_seconds=30.0, monotonic=mono.now)
    tiers = TierCache(limiter.store, 5.0)
    await tiers.refresh()
    guard = Guard(Settings.from_env({}), clock, limiter, tiers)

    def request() -> Any:
        return make_mocked_request("GET", "/v1/feeds", headers={"X-API-Key": key})

    async def admit() -> Any:  # as the endpoint wrapper does (gateway.app)
        req = request()
        return guard.admit_reserved(req) or await guard.admit(req)

    try:
        for _ in range(2):
            await asyncio.gather(*(admit() for _ in range(5)))
            mono.advance(0.12)
        assert limiter._reserves
        assert guard.admit_reserved(request()).month_used == 11  # from the reserve
        clock.advance(60)
        with pytest.raises(Unauthorized) as refused:
            guard.admit_reserved(request())  # refused from the reserve's verdict, no store call
        assert refused.value.code == "expired_api_key"
        assert not limiter._reserves  # ended at once, the refused request's place with it
    finally:
        await limiter.close()
    assert await used(store, key) == 11
