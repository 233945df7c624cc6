"""What the check script decided, read from its reply: ``GroupVerdict`` for the coalesced
requests of one key, ``Check`` for one of them.

One verdict is shared by all the requests of a key that went in one script call (and by the
later ones served from a reserve), so each request's own numbers (its month count, what is
left of the minute) are derived from its place in arrival order rather than stored per
request. Reply strings and limit pairs repeat, so they are decoded and built once (memo).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.access.bounded_memo import memo
from gateway.access.limits import OK, Limits

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
        """One key's answer in the check script's reply (``lua/check.lua``): 16 fields, or
        fewer when the key was refused before anything was counted (unknown, revoked...)."""
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

