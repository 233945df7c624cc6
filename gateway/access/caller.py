"""The caller of a keyed request: who it is, where it stands against its limits, and the
rate-limit headers of whatever answers it (draft-ietf-httpapi-ratelimit-headers)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import istr

from gateway.access.bounded_memo import memo
from gateway.access.limits import (
    US,
    Limits,
    MonthWindow,
    policy_header,
    ratelimit_header,
)
from gateway.errors import Forbidden


@dataclass(slots=True)
class Caller:
    """The authenticated caller of one request and where it stands against its limits."""

    key_id: str
    kind: str  # developer | operator
    tier: str
    limits: Limits
    expires: str  # ISO-8601, "" for never
    minute_remaining: int  # -1: no per-minute limit
    minute_reset_us: int
    month_used: int | None  # None while the store is down (the fallback does not know it)
    month: MonthWindow
    month_seconds_left: int
    source: str  # "store", or "fallback" while the store is down
    policy: str  # the RateLimit-Policy value of its limits and month ("": no limits)
    retry_after_s: int = 0

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        limits = self.limits
        if self.policy:
            headers["RateLimit-Policy"] = self.policy
            if self.month_used is None:  # unknown: report only what is known
                limits = Limits(limits.per_minute, 0)
            headers["RateLimit"] = ratelimit_header(
                limits, self.minute_remaining, self.minute_reset_us, self.month_used or 0,
                self.month_seconds_left)
        if self.retry_after_s:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


POLICIES: dict[tuple[int, int, str], str] = {}


def policy_of(limits: Limits, month: MonthWindow) -> str:
    """``RateLimit-Policy`` of a tier in a month (the same for every request: cached)."""
    return memo(POLICIES, (limits.per_minute, limits.per_month, month.name), policy_header,
                limits, month)


CALLER = web.RequestKey("caller", Caller)


# Header names case-folded once, not on every lookup or add (callgrind: ~1k instructions less
# per header added to a response)
X_API_KEY = istr("X-API-Key")


RATELIMIT_POLICY = istr("RateLimit-Policy")


RATELIMIT = istr("RateLimit")


RETRY_AFTER = web.RequestKey("retry_after", int)


def presented_key(request: web.Request) -> str | None:
    key = request.headers.get(X_API_KEY)
    if key:
        return key
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token
    return request.query.get("key")


def require_operator(request: web.Request) -> Caller:
    """The caller, if it holds an operator token; 403 ``forbidden`` otherwise."""
    caller: Caller | None = request.get(CALLER)
    if caller is None or caller.kind != "operator":
        raise Forbidden("this route needs an operator token (Authorization: Bearer tgo_…)",
                        code="forbidden")
    return caller


def set_limit_headers(request: web.Request, response: web.StreamResponse,
                      caller: Caller | None = None) -> None:
    """The rate-limit headers of whatever answers a keyed request (``gateway.http.app``'s
    endpoint wrapper calls this for every response, before it is prepared)."""
    if caller is None:
        caller = request.get(CALLER)
    if caller is not None:
        headers = response.headers
        limits = caller.limits
        used = caller.month_used
        if used is None or not limits.per_minute or not limits.per_month:
            headers.update(caller.headers())
        else:  # the common case, formatted in place; added (no handler sets these)
            left = limits.per_month - used
            headers.add(RATELIMIT_POLICY, caller.policy)
            headers.add(RATELIMIT, (
                f'"minute";r={caller.minute_remaining};t={-(-caller.minute_reset_us // US)}, '
                f'"month";r={left if left > 0 else 0};t={caller.month_seconds_left}'))
            if caller.retry_after_s:
                headers["Retry-After"] = str(caller.retry_after_s)
    elif response.status == 429:
        retry = request.get(RETRY_AFTER)
        if retry:
            response.headers["Retry-After"] = str(retry)
