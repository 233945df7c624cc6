"""The store side of authentication + rate limiting: one Lua script call per batch of
requests, whatever their keys.

``KeyLimiter.check`` runs ``CHECK_SCRIPT`` on the key's record, its GCRA state and its month
counter (one hash tag, so one Cluster slot). The script verifies the key (hash, revoked,
expires), finds the tier's limits in the table passed in, applies the monthly quota and the
per-minute GCRA (``gateway.access.limits.decide_batch``, the same integer arithmetic) with the
store's ``TIME``, counts the request and gives every counter a TTL, all atomically. A process
whose clock is off changes nothing per minute; the month counter's name comes from the process
clock (so ``GATEWAY_CLOCK`` moves it, on purpose).

Coalescing: requests of one key that arrive while the previous batch is on the wire share one
verdict that decides all of them at once, exactly as if they had come one after another (``n``
in the script), and the keys of a whole batch are checked by one script call, one after another
inside it (on a Redis Cluster, where a script's keys must share a slot, one call per key, all
in one pipeline). So a request costs at most one store command, usually a fraction of one. The
connection pool is the store's fast sibling (short timeouts, no retries) behind a circuit
breaker, so while the store is down requests do not each wait for a timeout; a probe every
``open_seconds`` closes the breaker again.

Reserves: a key that this process sees often (``reserve_size``: at least a few requests per
reserve lifetime) asks the script for ``extra`` requests beyond the waiting ones. Far from its
limits (``reserve_fits``: at most half of what is left of the minute's burst and of the month,
and at most 0.1 % of the month's quota) the script counts them right away, as if they had
arrived just after the waiting ones, and notes the reserve in the key's ``held`` sorted set
(until ``HOLD_US`` from now, should the process die with it). The process then admits the
key's next requests from it without a store call, each with its own numbers (its place in
the verdict), for at most ``RESERVE_SECONDS``; then ``RETURN_SCRIPT`` hands back what it did
not use (``gateway.access.limits.hand_back``) and takes it out of ``held``. Limits stay exact
across processes: a refusal while reserves are held answers ``waiting``, and the limiter asks
again every ``WAIT_STEP_S`` until it is final. Revocation, expiry and a tier change reach a
hot key within a reserve's lifetime.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio.connection import SSLConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gateway.access.limits import (
    MINUTE_US,
    OK,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    Limits,
    MonthWindow,
    reserve_size,
)
from gateway.access.memo import memo
from gateway.errors import StoreUnavailable
from gateway.observability import metrics
from gateway.store.names import (
    key_gcra_key,
    key_held_key,
    key_month_key,
    key_record_key,
    signup_ip_key,
)
from gateway.store.resp import Arg, RespConnection, address_of, bulk, pack
from gateway.store.store import Store

log = logging.getLogger(__name__)

MONTH_TTL_GRACE_S = 86_400  # a month counter outlives its month by a day (clock skew)
_MINUTE = str(MINUTE_US).encode()
# A reserve's lifetime: revocation reaches a hot key within this. Each renewal costs two store
# round trips (the check that grants it, the return): with 100 keys sharing one process's load,
# 0.25 s made blocks of ~40 requests and renewals ~3 % of every request (callgrind); 1 s
# makes them ~170. Must end well within HOLD_US (Settings caps it at MAX_RESERVE_SECONDS).
RESERVE_SECONDS = 1.0
HOLD_US = 2_000_000  # a reserve counts as held this long at most (its process may die)
RATE_WINDOW_S = 0.1  # a key's request rate in this process is measured over this
WAIT_STEP_S = 0.02  # a "wait" verdict is asked again after this
WAIT_LIMIT_S = HOLD_US / 1e6 + 1.0  # then a refusal is final (every reserve then is gone)
_HOLD = str(HOLD_US).encode()

CHECK_SCRIPT = """
-- KEYS: per key checked: its record, its GCRA state, its month counter, its reserves held (a
--       sorted set: reserve id -> store time it stops counting; one hash tag each)
-- ARGV: tier table ";name:per_minute:per_month;...", GCRA period (us), process now (s), hold
--       (us: how long a reserve counts as held), then per key: its hash, month counter TTL
--       (s), strict tier lookup (1|0), n requests, extra (a reserve wanted), reserve id
-- One reply per key, in KEYS order; a key's n requests are decided as if one after another
-- (gateway.ratelimit.decide_batch, extra included). Keys are checked one after another, so a
-- key named twice sees its first check's counts.
local tiers, period, process_now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local hold = tonumber(ARGV[4])
local store_now
local function clock()
  if not store_now then
    local time = redis.call('TIME')
    store_now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  end
  return store_now
end
local tier_limits = {}  -- tier name -> {known 1|0, per minute, per month}, once per call
local function check(k, a)
  local rec = redis.call('HMGET', KEYS[k + 1], 'hash', 'kind', 'tier', 'revoked', 'expires',
                         'expires_at')
  if rec[1] ~= ARGV[a + 1] then return {'unknown'} end
  local kind, tier, expires = rec[2] or '', rec[3] or '', rec[5] or ''
  if rec[4] and rec[4] ~= '' then return {'revoked', kind, tier, expires} end
  local expires_at = tonumber(rec[6] or '')
  if expires_at and expires_at <= process_now then
    return {'expired', kind, tier, expires}
  end
  local limits = tier_limits[tier]
  if not limits then
    local at = string.find(tiers, ';' .. tier .. ':', 1, true)
    local known = 1
    if not at then known, at = 0, 1 end
    local pm, pq = string.match(tiers, '^;[^;:]*:(%d+):(%d+)', at)
    limits = {known, tonumber(pm), tonumber(pq)}
    tier_limits[tier] = limits
  end
  local known, per_minute, per_month = limits[1], limits[2], limits[3]
  if known == 0 and ARGV[a + 3] == '1' then return {'unknown_tier', kind, tier, expires} end
  local n, extra = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local counters = redis.call('MGET', KEYS[k + 3], KEYS[k + 2])  -- month used, GCRA tat
  local used = tonumber(counters[1] or '0')
  local admitted, refusal, reserved, waiting = n, 'ok', 0, 0
  if per_month > 0 and per_month - used < admitted then
    admitted, refusal = math.max(0, per_month - used), 'quota_exceeded'
  end
  local remaining, reset, retry, t, now, tat, span = -1, 0, 0, 0, 0, 0, 0
  local slots_left = extra * 2  -- without a per-minute limit the minute never stops a reserve
  if per_minute > 0 then
    now = clock()
    t = math.max(1, math.floor(period / per_minute))
    span = t * per_minute
    tat = tonumber(counters[2] or '0')
    if tat < now then tat = now end
    local slots = math.max(0, math.floor((span - (tat - now)) / t))
    if slots < admitted then admitted, refusal = slots, 'rate_limited' end
    slots_left = slots - admitted
  end
  -- a reserve only far from the limits, and at most 0.1 % of the month's quota (what a
  -- process that dies with one loses): gateway.ratelimit.reserve_cap, reserve_fits
  if per_month > 0 then extra = math.min(extra, math.floor(per_month / 1000)) end
  if refusal == 'ok' and extra > 0 and slots_left >= 2 * extra
     and (per_month == 0 or per_month - used - admitted >= 2 * extra) then
    admitted, reserved = admitted + extra, extra
    redis.call('ZADD', KEYS[k + 4], clock() + hold, ARGV[a + 6])
    redis.call('PEXPIRE', KEYS[k + 4], math.ceil(hold / 1000))
  end
  if refusal ~= 'ok' and redis.call('EXISTS', KEYS[k + 4]) == 1 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', clock())
    -- reserves held by processes may still come back: the limiter asks again shortly
    if redis.call('ZCARD', KEYS[k + 4]) > 0 then waiting = 1 end
  end
  if per_minute > 0 then
    if admitted > 0 then
      tat = tat + admitted * t
      -- a number argument is written with all its digits (unlike tostring's %.14g), and
      -- without string.format, which cost ~1 us per key
      redis.call('SET', KEYS[k + 2], tat, 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    end
    remaining = math.floor((span - (tat - now)) / t)
    reset = tat - now
    if refusal == 'rate_limited' then retry = tat + t - now - span end
  end
  if admitted > 0 then
    used = redis.call('INCRBY', KEYS[k + 3], admitted)
    if used == admitted then redis.call('EXPIRE', KEYS[k + 3], ARGV[a + 2]) end
  end
  return {refusal, kind, tier, expires, known, per_minute, per_month, admitted, remaining,
          reset, retry, used, t, reserved, tat, waiting}
end
local out = {}
for i = 0, #KEYS / 4 - 1 do
  out[i + 1] = check(i * 4, 4 + i * 6)
end
return out
"""

RETURN_SCRIPT = """
-- Reserves that ended: what was not used goes back (gateway.ratelimit.hand_back), and
-- they stop counting as held.
-- KEYS per reserve: GCRA state, month counter, reserves held (one hash tag)
-- ARGV per reserve: unused, GCRA emission interval (us, 0: no per-minute limit), the GCRA
--       state the grant left (us), reserve id
local now
for i = 0, #KEYS / 3 - 1 do
  local unused, t = tonumber(ARGV[i * 4 + 1]), tonumber(ARGV[i * 4 + 2])
  local granted_tat = tonumber(ARGV[i * 4 + 3])
  if unused > 0 then
    if t > 0 then
      if not now then
        local time = redis.call('TIME')
        now = tonumber(time[1]) * 1000000 + tonumber(time[2])
      end
      -- only what still lies ahead: slots the clock has passed were refilled anyway
      local back = math.min(unused * t, math.max(0, granted_tat - now))
      local tat = back > 0 and tonumber(redis.call('GET', KEYS[i * 3 + 1]) or '')
      if tat then redis.call('SET', KEYS[i * 3 + 1], tat - back, 'KEEPTTL') end
    end
    if redis.call('EXISTS', KEYS[i * 3 + 2]) == 1 then
      redis.call('DECRBY', KEYS[i * 3 + 2], unused)
    end
  end
  redis.call('ZREM', KEYS[i * 3 + 3], ARGV[i * 4 + 4])
end
return #KEYS / 3
"""

GCRA_SCRIPT = """
-- One GCRA on one key (signups per client IP). ARGV: limit, period (us). Returns
-- {admitted 1|0, retry after (us)}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local limit = tonumber(ARGV[1])
local t = math.max(1, math.floor(tonumber(ARGV[2]) / limit))
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + t
if new - now > t * limit then return {0, new - now - t * limit} end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX',
           math.max(1, math.ceil((new - now) / 1000)))
return {1, 0}
"""


_TEXTS: dict[bytes, str] = {}


def _text(value: bytes) -> str:
    """A reply's short string (result, kind, tier, expiry): a handful of values repeat."""
    return memo(_TEXTS, value, value.decode)


NO_LIMITS = Limits(0, 0)
_LIMITS: dict[tuple[int, int], Limits] = {}


def _limits(per_minute: int, per_month: int) -> Limits:
    return memo(_LIMITS, (per_minute, per_month), Limits, per_minute, per_month)


@dataclass(slots=True)
class Check:
    """What the script decided for one request."""

    result: str  # ok, rate_limited, quota_exceeded, unknown, revoked, expired, unknown_tier
    kind: str = ""
    tier: str = ""
    expires: str = ""
    tier_known: bool = True
    limits: Limits = NO_LIMITS
    minute_remaining: int = -1
    minute_reset_us: int = 0
    retry_after_us: int = 0
    month_used: int = 0


@dataclass(slots=True)
class GroupVerdict:
    """The script's answer for ``n`` coalesced requests of one key: the first ``admitted`` pass
    (in arrival order), the others are refused for ``refusal``. Shared by those requests; each
    reads its own numbers with ``check(i)``."""

    refusal: str  # "ok", rate_limited, quota_exceeded, or unknown/revoked/expired/unknown_tier
    kind: str
    tier: str
    expires: str
    tier_known: bool = True
    limits: Limits = NO_LIMITS
    admitted: int = 0
    remaining: int = -1  # after the admitted ones
    reset_us: int = 0
    retry_us: int = 0
    used: int = 0  # after the admitted ones
    interval_us: int = 0
    reserved: int = 0  # of ``admitted``, counted ahead for this process's later requests
    granted_tat: int = 0  # the GCRA state the call left (store time, us): for a hand-back
    waiting: bool = False  # refused for now: reserves held elsewhere may come back
    remembered: bool = False  # gateway.access noted the key as verified (store-down grace)
    policy: str = ""  # its RateLimit-Policy value: made once by gateway.access, not per request

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> GroupVerdict:
        if len(reply) < 16:
            kind, tier, expires = [*(v.decode() for v in reply[1:4]), "", "", ""][:3]
            return cls(reply[0].decode(), kind, tier, expires)
        (refusal, kind, tier, expires, known, per_minute, per_month, admitted, remaining,
         reset, retry, used, t, reserved, granted_tat, waiting) = reply
        texts = _TEXTS  # inlined lookups: this runs once per key of every batch
        return cls(texts.get(refusal) or _text(refusal), texts.get(kind) or _text(kind),
                   texts.get(tier) or _text(tier), texts.get(expires) or _text(expires),
                   known == 1, _LIMITS.get((per_minute, per_month))
                   or _limits(per_minute, per_month), admitted, remaining, reset, retry, used, t,
                   reserved, granted_tat, waiting == 1)

    def check(self, i: int) -> Check:
        """The ``i``-th request's (0-based, in arrival order) outcome."""
        if i < self.admitted:
            later = self.admitted - 1 - i  # admitted after this one
            return Check(OK, self.kind, self.tier, self.expires, self.tier_known, self.limits,
                         self.remaining + later if self.limits.per_minute else -1,
                         self.reset_us - later * self.interval_us, 0, self.used - later)
        return Check(self.refusal, self.kind, self.tier, self.expires, self.tier_known,
                     self.limits, self.remaining, self.reset_us, self.retry_us, self.used)


class CircuitBreaker:
    """Closed → (a failure) → open for ``open_seconds`` → one probe → closed or open again.

    ``now`` is a monotonic reading passed in by the caller.
    """

    def __init__(self, open_seconds: float) -> None:
        self.open_seconds = open_seconds
        self.open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allow(self, now: float) -> bool:
        if self.open_until is None:
            return True
        if now >= self.open_until and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        if self.open_until is not None:
            metrics.BREAKER_OPEN.set(0)
        self.open_until = None
        self._probing = False

    def failure(self, now: float) -> None:
        if self.open_until is None:
            metrics.BREAKER_OPEN.set(1)
        self.open_until = now + self.open_seconds
        self._probing = False


class Pending:
    """One caller's share of a batch (told the error here; its reply by ``_Wire.deliver``)."""

    __slots__ = ()

    def fail(self, error: BaseException) -> None:
        raise NotImplementedError


class _Call(Pending):
    """A script call of its own (a signup's GCRA)."""

    def __init__(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> None:
        self.script, self.keys, self.args = script, keys, args
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def resolve(self, reply: Any) -> None:
        if not self.future.done():
            self.future.set_result(reply)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class _Wire:
    """One command on the wire and whom its reply is for: a single call, or the key checks of
    a whole batch in one ``CHECK_SCRIPT`` call, whose reply holds one answer per key."""

    __slots__ = ("checks", "packed", "single")

    def __init__(self, single: _Call | None, checks: list[_CheckGroup], packed: bytes) -> None:
        self.single, self.checks, self.packed = single, checks, packed

    @classmethod
    def of_call(cls, call: _Call) -> _Wire:
        return cls(call, [], pack("EVALSHA", _sha(call.script), len(call.keys), *call.keys,
                                  *call.args))

    @classmethod
    def of_checks(cls, checks: list[_CheckGroup]) -> _Wire:
        """Packed from parts cached per key and per tier table (this runs for every batch)."""
        parts = [b"*%d\r\n" % (7 + 10 * len(checks)), _EVALSHA_CHECK, bulk(4 * len(checks))]
        parts += [c.key.key_part for c in checks]
        parts += [_bulk_cached(checks[0].table), _MINUTE_BULK, bulk(repr(checks[-1].now)),
                  _HOLD_BULK]
        for c in checks:
            c.close()  # packed: later requests of its key start a new group
            parts += [c.key.hash_part, _bulk_cached(c.ttl), c.key.strict_part,
                      _bulk_cached(len(c.waiters)), _bulk_cached(c.extra), bulk(c.reserve_id)]
        return cls(None, checks, b"".join(parts))

    @property
    def script(self) -> str:
        return self.single.script if self.single is not None else CHECK_SCRIPT

    def command(self) -> tuple[list[Arg], list[Arg]]:
        """Keys and arguments unpacked (the cluster client and EVAL need them)."""
        if self.single is not None:
            return list(self.single.keys), list(self.single.args)
        keys: list[Arg] = []
        args: list[Arg] = [self.checks[0].table, _MINUTE, repr(self.checks[-1].now), _HOLD]
        for c in self.checks:
            keys += c.key.keys
            args += [c.key.key_hash, c.ttl, b"1" if c.key.strict else b"0", len(c.waiters),
                     c.extra, c.reserve_id]
        return keys, args

    def deliver(self, reply: Any) -> None:
        if self.single is not None:
            self.single.resolve(reply)
            return
        decided: dict[tuple[str, str], int] = {}  # counted once per batch, not per key
        for check, answer in zip(self.checks, reply, strict=True):
            check.settle_reply(answer, decided)
        for (tier, result), n in decided.items():
            metrics.decision(tier, result, "store", n)

    def fail(self, error: BaseException) -> None:
        for pending in [self.single] if self.single is not None else self.checks:
            pending.fail(error)


class _Batcher:
    """Sends waiting calls in batches, at most ``max_inflight`` on the wire at once (so that
    requests arriving meanwhile make the next batch bigger); the key checks of one batch go
    as one script call (per Cluster slot on a cluster). Batches go on one ``RespConnection``
    of our own (``gateway.store.resp``), without a task or a future per batch; on a cluster or over
    TLS through redis-py. The breaker learns every batch's outcome here, whether or not its
    callers still wait."""

    def __init__(self, store: Store, breaker: CircuitBreaker, timeout: float,
                 max_batch: int = 512, max_inflight: int = 1) -> None:
        self.store = store
        self.breaker = breaker
        self.timeout = timeout
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        pool = store.client.connection_pool if not store.cluster else None
        self._address = (None if pool is None else address_of(
            pool.connection_kwargs, issubclass(pool.connection_class, SSLConnection)))
        self._conn: RespConnection | None = None
        self._closed = False
        self._pending: list[Pending] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, call: Pending) -> None:
        self._pending.append(call)
        if not self._scheduled and self._inflight < self.max_inflight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)  # this loop turn joins in

    def _start(self) -> None:
        self._scheduled = False
        while self._pending and self._inflight < self.max_inflight:
            batch, self._pending = (self._pending[:self.max_batch],
                                    self._pending[self.max_batch:])
            self._inflight += 1
            wires = self._wires(batch)
            conn = self._conn
            if self._closed:
                self._finish(wires, StoreUnavailable("the limiter is closed"), time.perf_counter())
            elif conn is not None and not conn.closed:
                self._send_raw(conn, wires)
            else:  # connect first, or go through redis-py (cluster, TLS)
                self._spawn(self._send(wires))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wires(self, batch: list[Pending]) -> list[_Wire]:
        wires: list[_Wire] = []
        by_table: dict[str, list[_CheckGroup]] = {}
        for pending in batch:
            if isinstance(pending, _CheckGroup):
                if self.store.cluster:  # a script's keys must share a slot: one call per key
                    wires.append(_Wire.of_checks([pending]))
                else:
                    by_table.setdefault(pending.table, []).append(pending)
            elif isinstance(pending, _Call):
                wires.append(_Wire.of_call(pending))
        wires += [_Wire.of_checks(checks) for checks in by_table.values()]
        return wires

    def _send_raw(self, conn: RespConnection, wires: list[_Wire]) -> None:
        started = time.perf_counter()

        def done(replies: list[Any] | BaseException) -> None:
            if isinstance(replies, BaseException):
                self._finish(wires, replies, started)
            elif any(_no_script(r) for r in replies):  # first use, or the store restarted
                self._spawn(self._load_scripts(wires, replies, started))
            else:
                self._finish(wires, replies, started)

        conn.send(b"".join([wire.packed for wire in wires]), len(wires), done)

    async def _send(self, wires: list[_Wire]) -> None:
        started = time.perf_counter()
        try:
            if self._address is None:
                replies: list[Any] | BaseException = await self._execute(wires)
            else:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = await RespConnection.open(self._address, self.timeout)
                    if self._closed:
                        conn.close()
                        raise StoreUnavailable("the limiter is closed")
                    if self._conn is not None and not self._conn.closed:
                        conn.close()  # another batch connected meanwhile: one is enough
                        conn = self._conn
                    self._conn = conn
                self._send_raw(conn, wires)
                return
        except BaseException as exc:  # every waiting request must get an answer, even when
            self._finish(wires, exc, started)  # this task is cancelled (the loop shuts down)
            if not isinstance(exc, Exception):
                raise
            return
        self._finish(wires, replies, started)

    async def _load_scripts(self, wires: list[_Wire], replies: list[Any],
                            started: float) -> None:
        """The commands the store answered NOSCRIPT go again as EVAL (which loads the
        script); nothing of theirs ran, so sending them again counts nothing twice."""
        try:
            await self._eval_missing(wires, replies)
        except BaseException as exc:  # as in _send: answer everyone, then let cancelling on
            self._finish(wires, exc, started)
            if not isinstance(exc, Exception):
                raise
        else:
            self._finish(wires, replies, started)

    def _finish(self, wires: list[_Wire], replies: list[Any] | BaseException,
                started: float) -> None:
        try:
            if isinstance(replies, BaseException):
                self.breaker.failure(time.monotonic())
                error: BaseException = replies
                if isinstance(replies, (RedisError, OSError)):
                    error = StoreUnavailable(f"store error: {replies}")
                for wire in wires:
                    wire.fail(error)
                return
            self.breaker.success()
            metrics.LIMITER_SECONDS.observe(time.perf_counter() - started)
            for wire, reply in zip(wires, replies, strict=True):
                if isinstance(reply, Exception):
                    wire.fail(StoreUnavailable(f"store error: {reply}"))
                    continue
                try:
                    wire.deliver(reply)
                except Exception:  # a reply we cannot read must not strand its requests
                    log.exception("unreadable limiter reply: %.200r", reply)
                    wire.fail(StoreUnavailable("unreadable reply from the store"))
        finally:
            self._inflight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._start)

    async def _execute(self, wires: list[_Wire]) -> list[Any]:
        """EVALSHA in one redis-py pipeline (cluster, TLS)."""
        pipe = self.store.client.pipeline(transaction=False)
        for wire in wires:
            keys, args = wire.command()
            pipe.evalsha(_sha(wire.script), len(keys), *keys, *args)
        replies = list(await pipe.execute(raise_on_error=False))
        await self._eval_missing(wires, replies)
        return replies

    async def _eval_missing(self, wires: list[_Wire], replies: list[Any]) -> None:
        missing = [i for i, r in enumerate(replies) if _no_script(r)]
        if missing:
            pipe = self.store.client.pipeline(transaction=False)
            for i in missing:
                keys, args = wires[i].command()
                pipe.eval(wires[i].script, len(keys), *keys, *args)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False),
                                strict=True):
                replies[i] = reply

    async def close(self) -> None:
        """Close the connection and stop the batches still connecting; nothing is sent after
        this (later checks fail with 503)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _no_script(reply: Any) -> bool:
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"))


_BULKS: dict[Arg, bytes] = {}


def _bulk_cached(value: Arg) -> bytes:
    """``bulk`` of a value that repeats (the tier table, small counts, a TTL per second)."""
    return memo(_BULKS, value, bulk, value)


_SHAS: dict[str, str] = {}


def _sha(script: str) -> str:
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()
    return sha


_EVALSHA_CHECK = bulk("EVALSHA") + bulk(_sha(CHECK_SCRIPT))
_MINUTE_BULK = bulk(_MINUTE)
_HOLD_BULK = bulk(_HOLD)
GroupKey = tuple[str, str, str, bool]  # key id, key hash, month name, strict


class _KeyWire:
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
        """The reserve to ask for with this check (0: none)."""
        elapsed = now - self.since
        if elapsed >= RATE_WINDOW_S:
            self.rate, self.count, self.since = self.count / elapsed, 0, now
        return reserve_size(self.rate, lifetime) if self.strict else 0


class _CheckGroup(Pending):
    """Requests of one key waiting for the same script call (coalesced)."""

    __slots__ = ("extra", "group", "key", "limiter", "now", "reserve_id", "table", "ttl",
                 "waiters")

    def __init__(self, limiter: KeyLimiter, group: GroupKey, key: _KeyWire, table: str,
                 now: float, ttl: int, extra: int = 0, reserve_id: bytes = b"-") -> None:
        self.limiter, self.group, self.key, self.table = limiter, group, key, table
        self.now, self.ttl, self.extra, self.reserve_id = now, ttl, extra, reserve_id
        self.waiters: list[asyncio.Future[GroupVerdict]] = []  # one each: cancelled alone

    def close(self) -> None:
        if self.limiter._open.get(self.group) is self:
            del self.limiter._open[self.group]

    def settle_reply(self, reply: Any, decided: dict[tuple[str, str], int]) -> None:
        """Hand the verdict to the waiting requests, keep its reserve (if any) and add their
        decisions to ``decided`` (counted in the metrics once per batch by ``_Wire.deliver``)."""
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
            self.limiter._keep_reserve(self, verdict)
        for future in self.waiters:
            if not future.done():
                future.set_result(verdict)

    def fail(self, error: BaseException) -> None:
        self.close()
        for future in self.waiters:
            if not future.done():
                future.set_exception(error)


class _Reserve:
    """Requests of one key counted ahead by the store for this process: places ``next`` to
    ``admitted - 1`` of the verdict are still to be handed out."""

    __slots__ = ("admitted", "end", "first", "id", "key", "month", "next", "table", "timer",
                 "verdict")

    def __init__(self, key: _KeyWire, table: str, month: str, verdict: GroupVerdict,
                 first: int, end: float, reserve_id: bytes) -> None:
        self.key, self.table, self.month, self.verdict = key, table, month, verdict
        self.admitted = verdict.admitted
        self.first = self.next = first
        self.end, self.id = end, reserve_id
        self.timer: asyncio.TimerHandle | None = None


class KeyLimiter:
    def __init__(self, store: Store, breaker_seconds: float, timeout: float,
                 reserve_seconds: float = RESERVE_SECONDS) -> None:
        self.store = store
        self.breaker = CircuitBreaker(breaker_seconds)
        self.reserve_seconds = reserve_seconds  # 0: no reserves
        self._batcher = _Batcher(store, self.breaker, timeout)
        self._open: dict[GroupKey, _CheckGroup] = {}
        self._wires: dict[GroupKey, _KeyWire] = {}
        self._reserves: dict[str, _Reserve] = {}  # by key hash (strict checks only)
        self._returns: list[_Reserve] = []
        self._returning: set[asyncio.Future[Any]] = set()
        self._process = os.urandom(6).hex().encode()  # names this process's reserves
        self._granted = 0
        self._closing = False

    async def close(self, grace: float = 1.0) -> None:
        """Hand back what is left of every reserve (waiting up to ``grace``), then close. No
        reserve is taken or granted from here on."""
        self._closing = True
        for key_hash, reserve in list(self._reserves.items()):
            self._end(key_hash, reserve)
        self._send_returns()
        if self._returning:
            await asyncio.wait(list(self._returning), timeout=grace)
        await self._batcher.close()
        await self.store.close()

    def available(self) -> bool:
        breaker = self.breaker
        return breaker.open_until is None or breaker.allow(time.monotonic())

    def take(self, key_hash: str, tier_table: str, month: str) -> tuple[GroupVerdict, int] | None:
        """The next place of the key's reserve (admitted without a store call), or None: no
        reserve, or it is used up, too old, or for another tier table or month (it ends)."""
        reserve = self._reserves.get(key_hash)
        if reserve is None:
            return None
        place = reserve.next
        if (place < reserve.admitted and time.monotonic() < reserve.end
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

    def _keep_reserve(self, group: _CheckGroup, verdict: GroupVerdict) -> None:
        key_hash = group.key.key_hash
        old = self._reserves.get(key_hash)
        if old is not None:
            self._end(key_hash, old)
        reserve = _Reserve(group.key, group.table, group.group[2], verdict, len(group.waiters),
                           time.monotonic() + self.reserve_seconds, group.reserve_id)
        self._reserves[key_hash] = reserve
        if self._closing:  # granted while closing: straight back
            self._end(key_hash, reserve)
            return
        reserve.timer = asyncio.get_running_loop().call_later(
            self.reserve_seconds, self._expire, key_hash, reserve)

    def _expire(self, key_hash: str, reserve: _Reserve) -> None:
        if self._reserves.get(key_hash) is reserve:
            self._end(key_hash, reserve)

    def _end(self, key_hash: str, reserve: _Reserve) -> None:
        """The reserve serves no more: what it did not use goes back (``RETURN_SCRIPT``, with
        the other reserves ending in this loop turn), and it stops counting as held."""
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
        """The ended reserves in one ``RETURN_SCRIPT`` call (one per reserve on a cluster,
        where a script's keys must share a slot)."""
        returns, self._returns = self._returns, []
        if not returns:
            return
        for part in ([[r] for r in returns] if self.store.cluster else [returns]):
            keys: list[str] = []
            args: list[Arg] = []
            for r in part:
                keys += r.key.keys[1:]
                args += [r.admitted - r.next, r.verdict.interval_us, r.verdict.granted_tat,
                         r.id]
            call = _Call(RETURN_SCRIPT, keys, args)
            self._returning.add(call.future)
            call.future.add_done_callback(self._returned)
            self._batcher.submit(call)

    def _returned(self, future: asyncio.Future[Any]) -> None:
        self._returning.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("reserves not handed back (their unused requests stay counted until "
                        "the counters expire): %s", future.exception())

    async def check_many(self, key_id: str, key_hash: str, tier_table: str, now: float,
                         month: MonthWindow, strict: bool = True) -> tuple[GroupVerdict, int]:
        """Authenticate and count one request (call ``available()`` and ``take()`` first): the
        verdict of the script call it was coalesced into, and its place there. A refusal while
        reserves are held elsewhere (``waiting``) is asked again until it is final."""
        verdict, place = await self._check_once(key_id, key_hash, tier_table, now, month,
                                                strict)
        if place < verdict.admitted or not verdict.waiting:
            return verdict, place
        started = time.monotonic()
        while True:
            await asyncio.sleep(WAIT_STEP_S)
            taken = self.take(key_hash, tier_table, month.name) if strict else None
            if taken is not None:
                return taken
            waited = time.monotonic() - started
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
        group = self._open.get(group_key)
        if group is None or group.table != tier_table:
            wire = self._wires.get(group_key)
            mono = time.monotonic()
            if wire is None:
                if len(self._wires) >= 10_000:
                    self._wires.clear()
                wire = self._wires[group_key] = _KeyWire(key_id, key_hash, month.name, strict,
                                                         mono)
            extra = (wire.extra(mono, self.reserve_seconds)
                     if self.reserve_seconds and not self._closing else 0)
            reserve_id = b"-"
            if extra:
                self._granted += 1
                reserve_id = b"%s:%d" % (self._process, self._granted)
            group = _CheckGroup(self, group_key, wire, tier_table, now,
                                month.seconds_left(now) + MONTH_TTL_GRACE_S, extra, reserve_id)
            self._open[group_key] = group
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
        taken = self.take(key_hash, tier_table, month.name) if strict else None
        verdict, place = taken or await self.check_many(key_id, key_hash, tier_table, now,
                                                        month, strict)
        return verdict.check(place)

    async def admit_signup(self, ip: str, limit: int, period_s: float) -> float:
        """Spend one signup of ``ip``: 0.0 when admitted, else seconds to wait."""
        call = _Call(GCRA_SCRIPT, (signup_ip_key(ip),), (limit, int(period_s * 1_000_000)))
        self._batcher.submit(call)
        try:
            reply = await call.future
        except StoreUnavailable:
            metrics.STORE_ERRORS.labels("signup_limit").inc()
            raise
        return 0.0 if int(reply[0]) else int(reply[1]) / 1_000_000
