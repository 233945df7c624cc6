"""Rate limits and quotas (pure): tier limits, the per-minute GCRA, calendar months, the IETF
headers.

Nothing here does I/O or reads a clock: every function takes ``now``. The limits themselves
are enforced by the store, atomically, in the limiter's Lua scripts (``gateway.access.limiter``;
``tests/ratelimit_model.py`` is the model the tests hold them to); while the store is
unreachable, ``FallbackLimiter`` runs the per-minute GCRA below in process memory.

Per minute: GCRA (the generic cell rate algorithm). A tier allowing ``N`` requests per period
``P`` has an emission interval ``T = floor(P / N)`` microseconds and admits a burst of exactly
``N``; after that one request per ``T``. The only state is the theoretical arrival time (TAT):

    base = max(tat, now);  new = base + T
    refused   when new - now > N * T   (retry after new - now - N*T)
    admitted  otherwise, and tat := new (remaining = floor((N*T - (new - now)) / T))

All times are integer microseconds (the Lua scripts compute with doubles, exact below 2**53).
Per month: a counter of admitted requests per UTC calendar month; a request is refused once
the counter has reached the tier's quota. Refused requests consume nothing.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass

MINUTE_US = 60_000_000
US = 1_000_000

# Results of one check, the same strings as the Lua script returns.
OK = "ok"
RATE_LIMITED = "rate_limited"
QUOTA_EXCEEDED = "quota_exceeded"
UNKNOWN = "unknown"
REVOKED = "revoked"
EXPIRED = "expired"


@dataclass(frozen=True)
class Limits:
    """A tier's limits. 0 means "no limit" (the ``unlimited`` tier: counted, never refused)."""

    per_minute: int
    per_month: int

    def to_json(self) -> dict[str, int]:
        return {"per_minute": self.per_minute, "per_month": self.per_month}


@dataclass(frozen=True)
class GcraStep:
    allowed: bool
    tat_us: int
    """The TAT to keep: advanced when admitted, unchanged when refused."""
    remaining: int
    reset_us: int
    """Until the whole burst is available again."""
    retry_after_us: int
    """Until this request would have been admitted (0 when admitted)."""


def emission_interval_us(limit: int, period_us: int = MINUTE_US) -> int:
    return max(1, period_us // limit)


def gcra(tat_us: int, now_us: int, limit: int, period_us: int = MINUTE_US) -> GcraStep:
    """Admit or refuse one request of a ``limit``-per-``period`` GCRA at ``now_us``."""
    t = emission_interval_us(limit, period_us)
    span = t * limit
    base = max(tat_us, now_us)
    new = base + t
    if new - now_us > span:
        return GcraStep(False, base, 0, base - now_us, new - now_us - span)
    return GcraStep(True, new, (span - (new - now_us)) // t, new - now_us, 0)


def reserve_size(rate_per_s: float, lifetime_s: float, cap: int = 1024, least: int = 8) -> int:
    """How many requests of a key to count ahead: what it is expected to send in a reserve's
    lifetime at its recent rate in this process, at most ``cap``; none below ``least`` (a key
    sending a few requests a second keeps being checked one call at a time)."""
    size = min(cap, int(rate_per_s * lifetime_s))
    return size if size >= least else 0


# --- calendar months (UTC, from the process clock) ----------------------------------------

@dataclass(frozen=True)
class MonthWindow:
    name: str  # "YYYYMM", part of the counter's key
    start: float
    end: float

    @property
    def seconds(self) -> int:
        return int(self.end - self.start)

    def contains(self, now: float) -> bool:
        return self.start <= now < self.end

    def seconds_left(self, now: float) -> int:
        return max(0, math.ceil(self.end - now))


def month_window(now: float) -> MonthWindow:
    day = dt.datetime.fromtimestamp(now, dt.UTC)
    start = dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC)
    days = calendar.monthrange(day.year, day.month)[1]
    end = start + dt.timedelta(days=days)
    return MonthWindow(f"{day.year:04d}{day.month:02d}", start.timestamp(), end.timestamp())


# --- headers (draft-ietf-httpapi-ratelimit-headers, structured-field form) ----------------

def seconds_up(us: int) -> int:
    """Microseconds → whole seconds, rounded up (a client that waits that long is admitted)."""
    return max(0, -(-us // US))


def policy_header(limits: Limits, month: MonthWindow) -> str:
    parts = []
    if limits.per_minute:
        parts.append(f'"minute";q={limits.per_minute};w=60')
    if limits.per_month:
        parts.append(f'"month";q={limits.per_month};w={month.seconds}')
    return ", ".join(parts)


def ratelimit_header(limits: Limits, minute_remaining: int, minute_reset_us: int,
                     month_used: int, month_seconds_left: int) -> str:
    parts = []
    if limits.per_minute:
        parts.append(f'"minute";r={max(0, minute_remaining)};t={seconds_up(minute_reset_us)}')
    if limits.per_month:
        parts.append(f'"month";r={max(0, limits.per_month - month_used)};'
                     f"t={month_seconds_left}")
    return ", ".join(parts)


# --- the in-process fallback ----------------------------------------------------------------

class FallbackLimiter:
    """Per-key GCRA in process memory, used only while the store cannot answer.

    Bounded: at most ``max_keys`` keys are tracked (the oldest are forgotten first). Each
    process enforces the tier's per-minute limit on its own, so N processes admit up to N
    times the limit while the store is down; the monthly quota is not enforced then.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._tat: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._tat)

    def check(self, key_id: str, limits: Limits, now_us: int) -> GcraStep:
        if not limits.per_minute:
            return GcraStep(True, now_us, -1, 0, 0)
        step = gcra(self._tat.get(key_id, 0), now_us, limits.per_minute)
        if step.allowed:
            self._tat.pop(key_id, None)  # re-insert: dict order is recency
            self._tat[key_id] = step.tat_us
            while len(self._tat) > self.max_keys:
                del self._tat[next(iter(self._tat))]
        return step
