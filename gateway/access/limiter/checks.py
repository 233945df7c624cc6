"""One key's requests on their way to the check script, and a batch's checks on the wire.

Requests of one key that arrive while the previous batch is on the wire join one
``CheckGroup``: they share one verdict that decides all of them at once, exactly as if they
had come one after another (``n`` in the script). The groups of a batch go as one
``CHECK`` call (``ChecksWire``), one after another inside it; on a Redis Cluster, where a
script's keys must share a slot, one call per key. What a key puts on the wire that does not
change within a month (its key names, its hash) is RESP-encoded once, in its ``KeyWire``,
so packing a batch is mostly joining bytes: this runs for every batch.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway.access.bounded_memo import memo
from gateway.access.limiter.reserves import HOLD_US, RATE_WINDOW_S
from gateway.access.limiter.scripts import CHECK, STORE_TIME_BULK, Script, store_now_arg
from gateway.access.limiter.verdict import GroupVerdict
from gateway.access.limiter.wire import Pending, Wire
from gateway.access.limits import MINUTE_US, OK, QUOTA_EXCEEDED, RATE_LIMITED, reserve_size
from gateway.observability import metrics
from gateway.store.names import key_gcra_key, key_held_key, key_month_key, key_record_key
from gateway.store.resp import Arg, bulk

if TYPE_CHECKING:
    from gateway.access.limiter.key_limiter import KeyLimiter

GroupKey = tuple[str, str, str, bool]  # key id, key hash, month name, strict

_MINUTE = str(MINUTE_US).encode()
_HOLD = str(HOLD_US).encode()
_EVALSHA_CHECK = bulk("EVALSHA") + bulk(CHECK.sha)
_MINUTE_BULK = bulk(_MINUTE)
_HOLD_BULK = bulk(_HOLD)
_BULKS: dict[Arg, bytes] = {}


def _bulk_cached(value: Arg) -> bytes:
    """``bulk`` of a value that repeats (the tier table, small counts, a TTL per second)."""
    return memo(_BULKS, value, bulk, value)


class KeyWire:
    """What a check of one key puts on the wire that is the same every time in one month:
    its four key names and its hash, RESP-encoded once; and the key's recent request rate in
    this process, which sizes its reserves."""

    __slots__ = ("count", "hash_part", "key_hash", "key_part", "keys", "rate", "since",
                 "strict", "strict_part")

    def __init__(self, key_id: str, key_hash: str, month: str, strict: bool,
                 since: float = 0.0) -> None:
        self.keys = (key_record_key(key_id), key_gcra_key(key_id), key_month_key(key_id, month),
                     key_held_key(key_id))
        self.key_hash, self.strict = key_hash, strict
        self.key_part = b"".join([bulk(k) for k in self.keys])
        self.hash_part = bulk(key_hash)
        self.strict_part = bulk(b"1" if strict else b"0")
        self.count, self.since, self.rate = 0, since, 0.0  # requests since ``since``

    def extra(self, now: float, lifetime: float) -> int:
        """The reserve to ask for with this check (0: none). ``now`` is a monotonic reading:
        the rate is measured over ``RATE_WINDOW_S`` at least."""
        elapsed = now - self.since
        if elapsed >= RATE_WINDOW_S:
            self.rate, self.count, self.since = self.count / elapsed, 0, now
        return reserve_size(self.rate, lifetime) if self.strict else 0


class CheckGroup(Pending):
    """Requests of one key waiting for the same script call (coalesced)."""

    __slots__ = ("extra", "group", "key", "limiter", "now", "reserve_id", "table", "ttl",
                 "waiters")

    def __init__(self, limiter: KeyLimiter, group: GroupKey, key: KeyWire, table: str,
                 now: float, ttl: int, extra: int = 0, reserve_id: bytes = b"-") -> None:
        self.limiter, self.group, self.key, self.table = limiter, group, key, table
        self.now, self.ttl, self.extra, self.reserve_id = now, ttl, extra, reserve_id
        self.waiters: list[asyncio.Future[GroupVerdict]] = []  # one each: cancelled alone

    def close(self) -> None:
        """No more requests join this group (it is packed, or failed)."""
        open_groups = self.limiter.open_groups
        if open_groups.get(self.group) is self:
            del open_groups[self.group]

    def settle_reply(self, reply: Any, decided: dict[tuple[str, str], int]) -> None:
        """Hand the verdict to the waiting requests, keep its reserve (if any) and add their
        decisions to ``decided`` (counted in the metrics once per batch by
        ``ChecksWire.deliver``)."""
        verdict = GroupVerdict.from_reply(reply)
        waiting = len(self.waiters)
        if verdict.refusal in (OK, RATE_LIMITED, QUOTA_EXCEEDED):
            passed = min(verdict.admitted, waiting)
            if passed:
                key = (verdict.tier, OK)
                decided[key] = decided.get(key, 0) + passed
            if waiting > passed and not verdict.waiting:  # the waiting ones ask again
                key = (verdict.tier, verdict.refusal)
                decided[key] = decided.get(key, 0) + waiting - passed
        if verdict.reserved:
            self.limiter.keep_reserve(self, verdict)
        for future in self.waiters:
            if not future.done():
                future.set_result(verdict)

    def fail(self, error: BaseException) -> None:
        self.close()
        for future in self.waiters:
            if not future.done():
                future.set_exception(error)


class ChecksWire(Wire):
    """The key checks of a batch in one ``CHECK`` call, whose reply holds one answer per key
    (in the order of ``checks``)."""

    __slots__ = ("checks",)

    def __init__(self, checks: list[CheckGroup]) -> None:
        """Packed from parts cached per key and per tier table (this runs for every batch)."""
        store_clock = checks[0].limiter.store_clock
        parts = [b"*%d\r\n" % (8 + 10 * len(checks)), _EVALSHA_CHECK, bulk(4 * len(checks))]
        parts += [c.key.key_part for c in checks]
        parts += [_bulk_cached(checks[0].table), _MINUTE_BULK, bulk(repr(checks[-1].now)),
                  _HOLD_BULK, STORE_TIME_BULK if store_clock is None else bulk(store_clock())]
        for c in checks:
            c.close()  # packed: later requests of its key start a new group
            parts += [c.key.hash_part, _bulk_cached(c.ttl), c.key.strict_part,
                      _bulk_cached(len(c.waiters)), _bulk_cached(c.extra), bulk(c.reserve_id)]
        self.checks, self.packed = checks, b"".join(parts)

    @property
    def script(self) -> Script:
        return CHECK

    def command(self) -> tuple[list[Arg], list[Arg]]:
        keys: list[Arg] = []
        args: list[Arg] = [self.checks[0].table, _MINUTE, repr(self.checks[-1].now), _HOLD,
                           store_now_arg(self.checks[0].limiter.store_clock)]
        for c in self.checks:
            keys += c.key.keys
            args += [c.key.key_hash, c.ttl, b"1" if c.key.strict else b"0", len(c.waiters),
                     c.extra, c.reserve_id]
        return keys, args

    def deliver(self, reply: Any) -> None:
        decided: dict[tuple[str, str], int] = {}  # counted once per batch, not per key
        for check, answer in zip(self.checks, reply, strict=True):
            check.settle_reply(answer, decided)
        for (tier, result), n in decided.items():
            metrics.decision(tier, result, "store", n)

    def fail(self, error: BaseException) -> None:
        for check in self.checks:
            check.fail(error)
