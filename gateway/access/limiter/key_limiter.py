"""``KeyLimiter``: authenticates and counts a keyed request with at most one store command,
usually a fraction of one (the package docstring tells how), and spends signups per client IP.

What it joins: a request of a key with places left in its reserve is admitted by ``take``
(``ReserveBook``, its base class) without a store call; any other joins its key's open
``CheckGroup`` or starts one, which the ``Batcher`` sends with the rest of the batch. A
refusal while reserves are held elsewhere is asked again every ``WAIT_STEP_S`` until it is
final (at most ``WAIT_LIMIT_S``: by then every reserve held has stopped counting).

Monotonic time (a key's rate, reserve lifetimes, waiting, the breaker) is read from the
``monotonic`` passed in, so tests step it instead of sleeping. The scripts time the GCRA and
the reserves held with the store's ``TIME``, unless the limiter is given a ``store_clock``
(us): then every script call carries that clock's instant instead (tests step it too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from gateway.access.limiter.batcher import Batcher
from gateway.access.limiter.breaker import CircuitBreaker
from gateway.access.limiter.checks import CheckGroup, GroupKey, KeyWire
from gateway.access.limiter.reserves import HOLD_US, RESERVE_SECONDS, ReserveBook
from gateway.access.limiter.scripts import GCRA, store_now_arg
from gateway.access.limiter.verdict import Check, GroupVerdict
from gateway.access.limiter.wire import Call
from gateway.access.limits import MonthWindow
from gateway.errors import StoreUnavailable
from gateway.observability import metrics
from gateway.store.names import signup_ip_key
from gateway.store.store import Store

MONTH_TTL_GRACE_S = 86_400  # a month counter outlives its month by a day (clock skew)
WAIT_STEP_S = 0.02  # a "wait" verdict is asked again after this
WAIT_LIMIT_S = HOLD_US / 1e6 + 1.0  # then a refusal is final (every reserve then is gone)


class KeyLimiter(ReserveBook):
    """The limiter of one process, on ``store`` (the store's fast sibling: short timeouts, no
    retries) behind a circuit breaker open for ``breaker_seconds`` after a failure.
    ``store_clock``: the store time its scripts use (us); None, in production: ``TIME``."""

    def __init__(self, store: Store, breaker_seconds: float, timeout: float,
                 reserve_seconds: float = RESERVE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic,
                 store_clock: Callable[[], int] | None = None) -> None:
        self.store = store
        self.breaker = CircuitBreaker(breaker_seconds)
        super().__init__(Batcher(store, self.breaker, timeout, monotonic), reserve_seconds,
                         monotonic, store_clock)
        self.open_groups: dict[GroupKey, CheckGroup] = {}  # that requests may still join
        self._wires: dict[GroupKey, KeyWire] = {}

    async def close(self, grace: float = 1.0) -> None:
        """Hand back what is left of every reserve (waiting up to ``grace``), then close. No
        reserve is taken or granted from here on."""
        await self.hand_back_all(grace)
        await self._batcher.close()
        await self.store.close()

    def available(self) -> bool:
        """False while the breaker is open (the store failed lately): refuse at once."""
        breaker = self.breaker
        return breaker.open_until is None or breaker.allow(self.monotonic())

    async def check_many(self, key_id: str, key_hash: str, tier_table: str, now: float,
                         month: MonthWindow, strict: bool = True) -> tuple[GroupVerdict, int]:
        """Authenticate and count one request (call ``available()`` and ``take()`` first): the
        verdict of the script call it was coalesced into, and its place there. A refusal while
        reserves are held elsewhere (``waiting``) is asked again until it is final."""
        verdict, place = await self._check_once(key_id, key_hash, tier_table, now, month,
                                                strict)
        if place < verdict.admitted or not verdict.waiting:
            return verdict, place
        started = self.monotonic()
        while True:
            await asyncio.sleep(WAIT_STEP_S)
            taken = self.take(key_hash, tier_table, month.name) if strict else None
            if taken is not None:
                return taken
            waited = self.monotonic() - started
            verdict, place = await self._check_once(key_id, key_hash, tier_table, now + waited,
                                                    month, strict, counted=True)
            if place < verdict.admitted or not verdict.waiting:
                return verdict, place
            if waited >= WAIT_LIMIT_S:  # every reserve held then has stopped counting
                metrics.decision(verdict.tier, verdict.refusal, "store")
                return replace(verdict, waiting=False), place

    async def _check_once(self, key_id: str, key_hash: str, tier_table: str, now: float,
                          month: MonthWindow, strict: bool,
                          counted: bool = False) -> tuple[GroupVerdict, int]:
        """``counted``: asked again, the request is already in the key's rate."""
        group_key = (key_id, key_hash, month.name, strict)
        group = self.open_groups.get(group_key)
        if group is None or group.table != tier_table:
            wire = self._wires.get(group_key)
            mono = self.monotonic()
            if wire is None:
                if len(self._wires) >= 10_000:
                    self._wires.clear()
                wire = self._wires[group_key] = KeyWire(key_id, key_hash, month.name, strict,
                                                        mono)
            extra = (wire.extra(mono, self.reserve_seconds)
                     if self.reserve_seconds and not self._closing else 0)
            group = CheckGroup(self, group_key, wire, tier_table, now,
                               month.seconds_left(now) + MONTH_TTL_GRACE_S, extra,
                               self.new_reserve_id() if extra else b"-")
            self.open_groups[group_key] = group
            self._batcher.submit(group)
        if not counted:
            group.key.count += 1
        future: asyncio.Future[GroupVerdict] = asyncio.get_running_loop().create_future()
        place = len(group.waiters)
        group.waiters.append(future)
        try:
            return await future, place
        except StoreUnavailable:
            metrics.STORE_ERRORS.labels("ratelimit").inc()
            raise

    async def check(self, key_id: str, key_hash: str, tier_table: str, now: float,
                    month: MonthWindow, strict: bool = True) -> Check:
        """One request's outcome (``take``, else ``check_many``)."""
        taken = self.take(key_hash, tier_table, month.name) if strict else None
        verdict, place = taken or await self.check_many(key_id, key_hash, tier_table, now,
                                                        month, strict)
        return verdict.check(place)

    async def admit_signup(self, ip: str, limit: int, period_s: float) -> float:
        """Spend one signup of ``ip`` (``limit`` per ``period_s``, the ``GCRA`` script on its
        own key): 0.0 when admitted, else seconds to wait. It rides the limiter's batches and
        breaker, so a signup costs no connection of its own."""
        call = Call(GCRA, (signup_ip_key(ip),), (limit, int(period_s * 1_000_000),
                                                 store_now_arg(self.store_clock)))
        self._batcher.submit(call)
        try:
            reply = await call.future
        except StoreUnavailable:
            metrics.STORE_ERRORS.labels("signup_limit").inc()
            raise
        return 0.0 if int(reply[0]) else int(reply[1]) / 1_000_000
