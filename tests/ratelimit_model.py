"""A model of what the rate limiter promises, small enough to read in one go.

``tests/test_ratelimit_machine.py`` drives the real limiter (``KeyLimiter``, hence the Lua
scripts in ``gateway/access/limiter/lua/``) on a real store and holds every answer and every
counter to this model. It is written from what the limiter's docstrings and the scripts'
comments say it does, not from their code, and production never imports it.

The store (``Store``): tiers by name; per key its record (hash, tier, revoked, expiry in
process time), its GCRA state (the theoretical arrival time, TAT, in microseconds of the
store's clock; absent until a request is admitted), a counter of admitted requests per month
name, and the reserves held by processes (reserve id -> the store time until which it counts).

- A key's ``n`` requests arriving together are decided as if one after another: the monthly
  quota first (a request is refused once the counter has reached the quota), then the
  per-minute GCRA (a burst of exactly ``per_minute``, then one request per emission interval
  ``T = 60 s // per_minute``). A refused request changes nothing. 0 means "no limit".
- A reserve: when all ``n`` pass, ``extra`` more (at most 0.1 % of the month's quota) are
  counted right after them, as if they had arrived then, but only far from the limits: at
  most half of what is left of the minute's burst and of the month. It is noted as held
  until ``HOLD_US`` from now. A refusal while reserves are held answers "waiting".
- A hand-back: what an ended reserve did not use goes back to its month's counter; of the GCRA
  state only what still lies ahead of now (slots the clock has passed were refilled anyway).
  The reserve is no longer held.

The process (``Process``): the reserves one limiter holds. It serves a key's next requests
from its reserve (each with the numbers of its place, computed when it was granted) until
the reserve is used up, ``reserve_seconds`` old by the process's monotonic clock, or the
tier table or the month changed; then it ends and is handed back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.access.limiter.reserves import HOLD_US
from gateway.access.limits import Limits

MINUTE_US = 60_000_000
OK, RATE_LIMITED, QUOTA_EXCEEDED = "ok", "rate_limited", "quota_exceeded"


def interval_us(per_minute: int) -> int:
    """The GCRA's emission interval: one request per this (0: no per-minute limit)."""
    return max(1, MINUTE_US // per_minute) if per_minute else 0


@dataclass(frozen=True)
class Outcome:
    """One request's outcome, with the numbers the limiter reports for it."""

    result: str
    remaining: int = -1  # of the minute's burst, after it (-1: no per-minute limit)
    reset_us: int = 0  # until the whole burst is back
    retry_us: int = 0  # rate_limited: until a request would pass
    used: int = 0  # the month's counter, after it


def one_request(tat: int, used: int, now: int, limits: Limits) -> tuple[Outcome, int, int]:
    """One request at store time ``now`` against GCRA state ``tat`` and month counter
    ``used``: its outcome and the state after it (unchanged when refused)."""
    t = interval_us(limits.per_minute)
    span = t * limits.per_minute  # the burst, in time
    base = max(tat, now)  # a TAT in the past owes nothing
    remaining = (span - (base - now)) // t if t else -1
    reset = base - now if t else 0
    if limits.per_month and used >= limits.per_month:
        return Outcome(QUOTA_EXCEEDED, remaining, reset, 0, used), tat, used
    if t and base + t - now > span:
        return Outcome(RATE_LIMITED, remaining, reset, base + t - now - span, used), tat, used
    new = base + t if t else tat
    return Outcome(OK, (span - (new - now)) // t if t else -1, new - now if t else 0, 0,
                   used + 1), new, used + 1


def reserve_cap(extra: int, limits: Limits) -> int:
    """At most 0.1 % of the month's quota in one reserve."""
    return min(extra, limits.per_month // 1000) if limits.per_month else extra


def reserve_fits(extra: int, minute_left: int | None, month_left: int | None) -> bool:
    """Far from the limits: at most half of what is left of each (None: no such limit)."""
    return extra > 0 and all(left is None or left >= 2 * extra
                             for left in (minute_left, month_left))


@dataclass
class Decision:
    """A key's ``n`` requests decided together, and the reserve counted after them."""

    outcomes: list[Outcome]  # in arrival order
    reserve: list[Outcome]  # the places counted ahead (empty: none)
    tat: int
    used: int

    @property
    def admitted(self) -> int:
        return sum(o.result == OK for o in self.outcomes) + len(self.reserve)


def decide(tat: int, used: int, now: int, limits: Limits, n: int, extra: int = 0) -> Decision:
    """``n`` requests one after another at ``now``; if all pass and ``extra`` (capped) fits,
    that many more as a reserve."""
    outcomes = []
    for _ in range(n):
        outcome, tat, used = one_request(tat, used, now, limits)
        outcomes.append(outcome)
    reserve: list[Outcome] = []
    extra = reserve_cap(extra, limits)
    if all(o.result == OK for o in outcomes) and reserve_fits(
            extra, outcomes[-1].remaining if limits.per_minute else None,
            limits.per_month - used if limits.per_month else None):
        for _ in range(extra):
            outcome, tat, used = one_request(tat, used, now, limits)
            assert outcome.result == OK, "a reserve that fits is admitted whole"
            reserve.append(outcome)
    return Decision(outcomes, reserve, tat, used)


def hand_back(tat: int, granted_tat: int, unused: int, interval: int, now: int) -> int:
    """The GCRA state once ``unused`` places of a reserve (whose grant left ``granted_tat``)
    go back at ``now``: only the part that still lies ahead of now."""
    return tat - min(unused * interval, max(0, granted_tat - now))


# --- the store --------------------------------------------------------------------------------

@dataclass
class Key:
    hash: str
    tier: str
    revoked: bool = False
    expires_at: float | None = None  # process time (epoch seconds)
    tat: int | None = None  # absent until a request is admitted
    months: dict[str, int] = field(default_factory=dict)  # month name -> admitted
    held: dict[bytes, int] = field(default_factory=dict)  # reserve id -> counts until


@dataclass
class Answer:
    """The store's answer for one key's requests of one script call."""

    result: str  # ok, or why the ones not admitted are refused; or unknown/revoked/...
    outcomes: list[Outcome]
    reserve: list[Outcome] = field(default_factory=list)
    limits: Limits | None = None  # None: refused before the tier was looked up
    granted_tat: int = 0
    waiting: bool = False


class Store:
    def __init__(self) -> None:
        self.tiers: dict[str, Limits] = {}
        self.keys: dict[str, Key] = {}

    def check(self, key_id: str, key_hash: str, n: int, process_now: float, month: str,
              store_now: int, extra: int = 0, reserve_id: bytes = b"") -> Answer:
        """Authenticate and count ``n`` requests of a key (strict tier lookup)."""
        key = self.keys.get(key_id)
        refusal = ("unknown" if key is None or key.hash != key_hash else
                   "revoked" if key.revoked else
                   "expired" if key.expires_at is not None and key.expires_at <= process_now
                   else "unknown_tier" if key.tier not in self.tiers else "")
        if refusal or key is None:
            return Answer(refusal, [Outcome(refusal)] * n)
        limits = self.tiers[key.tier]
        decision = decide(key.tat or 0, key.months.get(month, 0), store_now, limits, n, extra)
        if decision.admitted:
            if limits.per_minute:
                key.tat = decision.tat
            key.months[month] = decision.used
        if decision.reserve:
            key.held[reserve_id] = store_now + HOLD_US
        refused = [o.result for o in decision.outcomes if o.result != OK]
        waiting = False
        if refused and key.held:  # held reserves that stopped counting are let go
            key.held = {r: until for r, until in key.held.items() if until > store_now}
            waiting = bool(key.held)
        return Answer(refused[0] if refused else OK, decision.outcomes, decision.reserve,
                      limits, decision.tat, waiting)

    def hand_back(self, key_id: str, month: str, unused: int, interval: int, granted_tat: int,
                  reserve_id: bytes, store_now: int) -> None:
        key = self.keys[key_id]
        if unused:
            if interval and key.tat is not None:
                key.tat = hand_back(key.tat, granted_tat, unused, interval, store_now)
            if month in key.months:
                key.months[month] -= unused
        key.held.pop(reserve_id, None)


# --- a process's reserves -----------------------------------------------------------------------

@dataclass
class Reserve:
    key_id: str
    places: list[Outcome]
    end: float  # monotonic
    table: str
    month: str
    reserve_id: bytes
    interval: int
    granted_tat: int
    granted_at: int  # store time: when its places were counted
    taken: int = 0

    @property
    def unused(self) -> int:
        return len(self.places) - self.taken


class Process:
    def __init__(self, reserve_seconds: float) -> None:
        self.reserve_seconds = reserve_seconds
        self.reserves: dict[str, Reserve] = {}

    def take(self, key_id: str, table: str, month: str,
             mono: float) -> tuple[Outcome | None, Reserve | None]:
        """The next place of the key's reserve, or None; and the reserve if it ended (to be
        handed back): used up, too old, or for another tier table or month."""
        reserve = self.reserves.get(key_id)
        if reserve is None:
            return None, None
        if (reserve.taken < len(reserve.places) and mono < reserve.end
                and reserve.table == table and reserve.month == month):
            reserve.taken += 1
            return reserve.places[reserve.taken - 1], None
        return None, self.reserves.pop(key_id)

    def keep(self, key_id: str, answer: Answer, table: str, month: str, mono: float,
             reserve_id: bytes, store_now: int) -> None:
        assert answer.limits is not None and key_id not in self.reserves
        self.reserves[key_id] = Reserve(
            key_id, answer.reserve, mono + self.reserve_seconds, table, month, reserve_id,
            interval_us(answer.limits.per_minute), answer.granted_tat, store_now)

    def end(self, key_id: str) -> Reserve | None:
        return self.reserves.pop(key_id, None)
