"""Reserves: requests of a hot key counted ahead by the store for this process.

A key that this process sees often (``reserve_size``: at least a few requests per reserve
lifetime, its rate measured over ``RATE_WINDOW_S``) asks the check script for ``extra``
requests beyond the waiting ones. Far from its limits the script counts them at once and
notes the reserve in the key's ``held`` sorted set (until ``HOLD_US`` from then, should the
process die with it). The process then admits the key's next requests from it without a
store call (``take``), each with its own numbers (its place in the verdict), for at most the
reserve's lifetime; then the ``RETURN`` script hands back what it did not use and takes it
out of ``held``. Limits stay exact across processes: a refusal while reserves are held
answers ``waiting`` (``KeyLimiter.check_many`` asks again).

``ReserveBook`` is the base class of ``KeyLimiter`` rather than an object it holds: ``take``
runs on every request of a hot key, and a delegating call would cost each of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.access.limiter.scripts import RETURN, store_now_arg
from gateway.access.limiter.verdict import GroupVerdict
from gateway.access.limiter.wire import Call
from gateway.access.limits import OK
from gateway.observability import metrics
from gateway.store.resp import Arg

if TYPE_CHECKING:
    from gateway.access.limiter.batcher import Batcher
    from gateway.access.limiter.checks import CheckGroup, KeyWire

log = logging.getLogger(__name__)

# A reserve's lifetime: revocation reaches a hot key within this. Each renewal costs two store
# round trips (the check that grants it, the return): with 100 keys sharing one process's load,
# 0.25 s made blocks of ~40 requests and renewals ~3 % of every request (callgrind); 1 s
# makes them ~170. Must end well within HOLD_US (Settings caps it at MAX_RESERVE_SECONDS).
RESERVE_SECONDS = 1.0
HOLD_US = 2_000_000  # a reserve counts as held this long at most (its process may die)
RATE_WINDOW_S = 0.1  # a key's request rate in this process is measured over this


class Reserve:
    """Requests of one key counted ahead by the store for this process: places ``next`` to
    ``admitted - 1`` of the verdict are still to be handed out."""

    __slots__ = ("admitted", "end", "first", "id", "key", "month", "next", "table", "timer",
                 "verdict")

    def __init__(self, key: KeyWire, table: str, month: str, verdict: GroupVerdict,
                 first: int, end: float, reserve_id: bytes) -> None:
        self.key, self.table, self.month, self.verdict = key, table, month, verdict
        self.admitted = verdict.admitted
        self.first = self.next = first
        self.end, self.id = end, reserve_id  # end: a monotonic reading
        self.timer: asyncio.TimerHandle | None = None


class ReserveBook:
    """The reserves one limiter holds, by key hash (strict checks only), and their return.

    ``monotonic`` is the limiter's clock: a reserve serves until ``reserve_seconds`` after
    its grant by this clock (tests step it); its timer, a loop timer, ends it meanwhile.
    ``store_clock`` (us; None: the store's ``TIME``) is the store time the scripts use.
    """

    def __init__(self, batcher: Batcher, reserve_seconds: float,
                 monotonic: Callable[[], float],
                 store_clock: Callable[[], int] | None = None) -> None:
        self.reserve_seconds = reserve_seconds  # 0: no reserves
        self.monotonic = monotonic
        self.store_clock = store_clock
        self._batcher = batcher
        self._reserves: dict[str, Reserve] = {}
        self._returns: list[Reserve] = []
        self._returning: set[asyncio.Future[Any]] = set()
        self._process = os.urandom(6).hex().encode()  # names this process's reserves
        self._granted = 0
        self._closing = False  # no reserve is granted or kept from then on

    def take(self, key_hash: str, tier_table: str, month: str) -> tuple[GroupVerdict, int] | None:
        """The next place of the key's reserve (admitted without a store call), or None: no
        reserve, or it is used up, too old, or for another tier table or month (it ends)."""
        reserve = self._reserves.get(key_hash)
        if reserve is None:
            return None
        place = reserve.next
        if (place < reserve.admitted and self.monotonic() < reserve.end
                and reserve.table == tier_table and reserve.month == month):
            reserve.next = place + 1
            return reserve.verdict, place
        self._end(key_hash, reserve)
        return None

    def end_reserve(self, key_hash: str, untaken: int | None = None) -> None:
        """End the key's reserve now (its key expired): what is left goes back, with place
        ``untaken`` too if that was the last one taken (its request was refused after all)."""
        reserve = self._reserves.get(key_hash)
        if reserve is not None:
            if untaken is not None and reserve.next == untaken + 1:
                reserve.next = untaken
            self._end(key_hash, reserve)

    def new_reserve_id(self) -> bytes:
        """A name for the reserve a check asks for, unique across processes (in ``held``)."""
        self._granted += 1
        return b"%s:%d" % (self._process, self._granted)

    def keep_reserve(self, group: CheckGroup, verdict: GroupVerdict) -> None:
        """The script granted ``group`` a reserve: serve the key's next requests from it."""
        key_hash = group.key.key_hash
        old = self._reserves.get(key_hash)
        if old is not None:
            self._end(key_hash, old)
        reserve = Reserve(group.key, group.table, group.group[2], verdict, len(group.waiters),
                          self.monotonic() + self.reserve_seconds, group.reserve_id)
        self._reserves[key_hash] = reserve
        if self._closing:  # granted while closing: straight back
            self._end(key_hash, reserve)
            return
        reserve.timer = asyncio.get_running_loop().call_later(
            self.reserve_seconds, self._expire, key_hash, reserve)

    async def hand_back_all(self, grace: float) -> None:
        """End every reserve and wait up to ``grace`` for what is left to go back; none is
        granted from here on."""
        self._closing = True
        for key_hash, reserve in list(self._reserves.items()):
            self._end(key_hash, reserve)
        self._send_returns()
        if self._returning:
            await asyncio.wait(list(self._returning), timeout=grace)

    def _expire(self, key_hash: str, reserve: Reserve) -> None:
        if self._reserves.get(key_hash) is reserve:
            self._end(key_hash, reserve)

    def _end(self, key_hash: str, reserve: Reserve) -> None:
        """The reserve serves no more: what it did not use goes back (``RETURN``, with the
        other reserves ending in this loop turn), and it stops counting as held."""
        if self._reserves.get(key_hash) is reserve:
            del self._reserves[key_hash]
        if reserve.timer is not None:
            reserve.timer.cancel()
        served = reserve.next - reserve.first
        if served:
            reserve.key.count += served
            metrics.decision(reserve.verdict.tier, OK, "store", served)
        self._returns.append(reserve)
        if len(self._returns) == 1:
            asyncio.get_running_loop().call_soon(self._send_returns)

    def _send_returns(self) -> None:
        """The ended reserves in one ``RETURN`` call (one per reserve on a cluster, where a
        script's keys must share a slot)."""
        returns, self._returns = self._returns, []
        if not returns:
            return
        for part in ([[r] for r in returns] if self._batcher.store.cluster else [returns]):
            keys: list[str] = []
            args: list[Arg] = [store_now_arg(self.store_clock)]
            for r in part:
                keys += r.key.keys[1:]
                args += [r.admitted - r.next, r.verdict.interval_us, r.verdict.granted_tat,
                         r.id]
            call = Call(RETURN, keys, args)
            self._returning.add(call.future)
            call.future.add_done_callback(self._returned)
            self._batcher.submit(call)

    def _returned(self, future: asyncio.Future[Any]) -> None:
        self._returning.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("reserves not handed back (their unused requests stay counted until "
                        "the counters expire): %s", future.exception())
