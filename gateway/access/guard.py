"""Who is calling and may they: API keys on ``/v1``, rate limits, the store failure policy.

For every keyed request: the presented key (``X-API-Key``, ``Authorization: Bearer`` or
``?key=``) is checked for prefix, length and checksum without the store (a typo costs no store
command), then one script call (``gateway.access.limiter``) authenticates it and counts it. Refused
requests (401, 429) never reach a handler. Every keyed response carries ``RateLimit-Policy`` and
``RateLimit`` (draft-ietf-httpapi-ratelimit-headers); a 429 adds ``Retry-After``.

Store failure policy (``Settings``): authentication fails closed, 503 ``store_unavailable``,
except for keys this process verified in the last ``auth_grace_seconds``; those are then rate
limited in process memory at their tier's per-minute limit (fail open, counted in metrics with
``source="fallback"``), or refused too when ``ratelimit_fail_open`` is off.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.access import keys
from gateway.access.bounded_memo import memo
from gateway.access.caller import CALLER, X_API_KEY, Caller, policy_of, presented_key
from gateway.access.limiter import GroupVerdict, KeyLimiter
from gateway.access.limits import (
    EXPIRED,
    RATE_LIMITED,
    REVOKED,
    UNKNOWN,
    FallbackLimiter,
    MonthWindow,
    month_window,
    seconds_up,
)
from gateway.access.tiers import TierCache
from gateway.clock import Clock
from gateway.errors import RateLimited, StoreUnavailable, Unauthorized
from gateway.observability import metrics
from gateway.settings import Settings

log = logging.getLogger(__name__)

MAX_RECENT = 100_000  # keys remembered for the store-down grace period
REMEMBER_EVERY_S = 1.0  # a key's verification is noted again after this much
MAX_HASHES = 10_000  # key strings whose hash is kept (a miss costs ~2 us)


def _timestamp(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True)
class _Verified:
    at: float  # monotonic
    hash: str
    kind: str
    tier: str
    expires: str


def _refuse(code: str, message: str) -> Unauthorized:
    metrics.AUTH_FAILURES.labels(code).inc()
    return Unauthorized(message, code=code)


class Guard:
    def __init__(self, settings: Settings, clock: Clock, limiter: KeyLimiter,
                 tiers: TierCache, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic  # durations: the grace period, the fallback's GCRA
        self.limiter = limiter
        self.tiers = tiers
        self.fallback = FallbackLimiter()
        self.recent: dict[str, _Verified] = {}
        self._month = month_window(clock.now())
        self._expiry: dict[str, float] = {}
        self._hashes: dict[str, tuple[str, str]] = {}  # key string -> (SHA-256, key id)
        # a key's verification is noted again after this much (at most half the grace period)
        self._remember_every = min(REMEMBER_EVERY_S, settings.auth_grace_seconds / 2)

    def _expires_at(self, iso: str) -> float:
        return memo(self._expiry, iso, _timestamp, iso, bound=10_000)

    def admit_reserved(self, request: web.Request) -> Caller | None:
        """The common case, decided without a suspension: a key this process has hashed
        before, sent in ``X-API-Key``, with places left in its reserve (``KeyLimiter.take``).
        None: ``admit`` decides (it also serves reserves of keys sent the other ways). Unlike
        ``admit``, does not store the caller in the request: the endpoint wrapper does, when a
        handler runs (a cached answer needs none).

        Worth its own entry point: the endpoint wrapper calls it without creating and awaiting
        a coroutine, and it skips what only a first sight of a key needs (measured with
        callgrind at about a fifth of what authentication cost a reserved request)."""
        known = self._hashes.get(request.headers.get(X_API_KEY, ""))
        if known is None:
            return None
        now = self.clock.now()
        month = self._month
        if not month.start <= now < month.end:
            return None  # a new month: ``admit`` moves to it
        return self._from_reserve(request, known, now, month)  # stored by the wrapper if needed

    def _from_reserve(self, request: web.Request, known: tuple[str, str], now: float,
                      month: MonthWindow) -> Caller | None:
        """The next place of the key's reserve, as its caller (not stored in the request), or
        None: no reserve to take from. A key that expired since the reserve was granted is
        refused (401) from its verdict, without asking the store, and the reserve ends."""
        key_hash, key_id = known
        taken = self.limiter.take(key_hash, self.tiers.wire, month.name)
        if taken is None:
            return None
        verdict, place = taken  # (the verdict that granted the reserve was checked in full)
        if verdict.expires and self._expires_at(verdict.expires) <= now:
            self.limiter.end_reserve(key_hash, untaken=place)  # this request's place too
            return self._verdict(request, key_id, key_hash, verdict, place, now, month)
        return _admitted(key_id, verdict, place, now, month)

    async def admit(self, request: web.Request) -> Caller:
        """Authenticate and count the request; raises 401/429/503 (with headers set)."""
        presented = request.headers.get(X_API_KEY) or presented_key(request)
        if not presented:
            raise _refuse("missing_api_key", "an API key is required: send the X-API-Key "
                          "header, Authorization: Bearer, or the key query parameter")
        known = self._hashes.get(presented)
        if known is None:  # checksum and hash once per key string, not per request
            key = presented.strip()
            if not keys.well_formed(key):
                raise _refuse("invalid_api_key", "the API key is malformed (check for a typo)")
            digest = keys.key_hash(key)
            if len(self._hashes) >= MAX_HASHES:
                self._hashes.clear()
            known = self._hashes[presented] = (digest, digest[:16])
        key_hash, key_id = known
        now = self.clock.now()
        month = self._month
        if not month.start <= now < month.end:
            month = self._month = month_window(now)
        reserved = self._from_reserve(request, known, now, month)
        if reserved is not None:  # counted ahead in this process's reserve (Bearer, ?key=)
            request[CALLER] = reserved
            return reserved
        if self.limiter.available():
            tiers = self.tiers
            if tiers.stale():
                tiers.refresh_soon()
            try:
                verdict, place = await self.limiter.check_many(key_id, key_hash, tiers.wire,
                                                               now, month)
                if verdict.refusal == "unknown_tier":  # defined since this process looked
                    verdict, place = await self._check_new_tier(key_id, key_hash, now, month)
            except StoreUnavailable:
                pass
            else:
                return self._verdict(request, key_id, key_hash, verdict, place, now, month)
        return self._fallback(request, key_id, key_hash, now, month)

    async def _check_new_tier(self, key_id: str, key_hash: str, now: float,
                              month: MonthWindow) -> tuple[GroupVerdict, int]:
        await self.tiers.refresh()
        verdict, place = await self.limiter.check_many(key_id, key_hash, self.tiers.wire, now,
                                                       month, strict=False)
        if not verdict.tier_known:
            log.warning("key %s has tier %r, which is not defined; using %r's limits",
                        key_id, verdict.tier, "bronze")
        return verdict, place

    def _verdict(self, request: web.Request, key_id: str, key_hash: str, verdict: GroupVerdict,
                 place: int, now: float, month: MonthWindow) -> Caller:
        refusal = verdict.refusal
        if refusal in (UNKNOWN, REVOKED, EXPIRED):
            self.recent.pop(key_id, None)
            if refusal == REVOKED:
                raise _refuse("revoked_api_key", "this API key was revoked")
            if refusal == EXPIRED:
                raise _refuse("expired_api_key", "this API key has expired")
            raise _refuse("invalid_api_key", "unknown API key")
        if verdict.expires and self._expires_at(verdict.expires) <= now:
            # records written before expires_at existed carry only the ISO instant
            self.recent.pop(key_id, None)
            raise _refuse("expired_api_key", "this API key has expired")
        if not verdict.remembered:  # once per store answer, not once per request
            verdict.remembered = True
            self._remember(key_id, key_hash, verdict.kind, verdict.tier, verdict.expires)
        if place < verdict.admitted:
            caller = request[CALLER] = _admitted(key_id, verdict, place, now, month)
            return caller
        month_left = math.ceil(month.end - now)
        limits = verdict.limits
        if refusal == RATE_LIMITED:
            retry = max(1, seconds_up(verdict.retry_us))
        else:
            retry = max(1, month_left)
        request[CALLER] = Caller(key_id, verdict.kind, verdict.tier, limits, verdict.expires,
                                 verdict.remaining, verdict.reset_us, verdict.used, month,
                                 month_left, "store", _verdict_policy(verdict, month), retry)
        if refusal == RATE_LIMITED:
            raise RateLimited(f"over {limits.per_minute} requests per minute; retry in "
                              f"{retry} s", code="rate_limited")
        raise RateLimited(f"the monthly quota of {limits.per_month} requests is used up; it "
                          "renews at the start of next month (UTC)", code="quota_exceeded")

    def _remember(self, key_id: str, key_hash: str, kind: str, tier: str, expires: str) -> None:
        at = self.monotonic()
        seen = self.recent.get(key_id)
        if (seen is not None and at - seen.at < self._remember_every and seen.hash == key_hash
                and seen.kind == kind and seen.tier == tier and seen.expires == expires):
            return  # noted less than a second ago: the grace period is seconds long
        self.recent.pop(key_id, None)  # re-insert: dict order is recency
        self.recent[key_id] = _Verified(at, key_hash, kind, tier, expires)
        if len(self.recent) > MAX_RECENT:
            del self.recent[next(iter(self.recent))]

    def _fallback(self, request: web.Request, key_id: str, key_hash: str, now: float,
                  month: MonthWindow) -> Caller:
        """The store cannot answer: recently verified keys only, limited in process."""
        seen = self.recent.get(key_id)
        if (seen is None or self.monotonic() - seen.at > self.settings.auth_grace_seconds
                or not hmac.compare_digest(seen.hash, key_hash)):
            metrics.AUTH_FAILURES.labels("store_unavailable").inc()
            raise StoreUnavailable("the key store is unreachable; try again in a few seconds")
        if seen.expires and self._expires_at(seen.expires) <= now:
            raise _refuse("expired_api_key", "this API key has expired")
        limits = self.tiers.get(seen.tier)
        if not self.settings.ratelimit_fail_open:
            metrics.decision(seen.tier, "store_unavailable", "fallback")
            raise StoreUnavailable("the key store is unreachable; try again in a few seconds")
        step = self.fallback.check(key_id, limits, int(self.monotonic() * 1_000_000))
        retry = 0 if step.allowed else max(1, seconds_up(step.retry_after_us))
        caller = Caller(key_id, seen.kind, seen.tier, limits, seen.expires, step.remaining,
                        step.reset_us, None, month, month.seconds_left(now), "fallback",
                        policy_of(limits, month), retry)
        request[CALLER] = caller
        metrics.decision(seen.tier, "ok" if step.allowed else RATE_LIMITED, "fallback")
        if not step.allowed:
            raise RateLimited(f"over {limits.per_minute} requests per minute; retry in "
                              f"{retry} s", code="rate_limited")
        return caller


def _admitted(key_id: str, verdict: GroupVerdict, place: int, now: float,
              month: MonthWindow) -> Caller:
    """The caller of an admitted request, with its own numbers: those of its place in the
    verdict, as if the requests after it in the same call had not come yet."""
    later = verdict.admitted - 1 - place
    limits = verdict.limits
    return Caller(key_id, verdict.kind, verdict.tier, limits, verdict.expires,
                  verdict.remaining + later if limits.per_minute else -1,
                  verdict.reset_us - later * verdict.interval_us, verdict.used - later, month,
                  math.ceil(month.end - now), "store", _verdict_policy(verdict, month))


def _verdict_policy(verdict: GroupVerdict, month: MonthWindow) -> str:
    """The verdict's RateLimit-Policy, made once per verdict: a reserve's verdict serves
    every request of the reserve."""
    if not verdict.policy:
        verdict.policy = policy_of(verdict.limits, month)
    return verdict.policy


