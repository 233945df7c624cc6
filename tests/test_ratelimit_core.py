"""The pure parts of rate limiting with explicit ``now`` values: no store, no clock. The
per-minute GCRA of the in-process fallback, calendar months, headers, reserve sizes, the
breaker, and how a verdict gives each coalesced request its own numbers; and the model the
limiter is held to (``tests/ratelimit_model.py``, driven against the real Lua scripts by
``test_ratelimit_machine.py``) checked for its own sanity."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.access.limiter.breaker import CircuitBreaker
from gateway.access.limiter.verdict import GroupVerdict
from gateway.access.limits import (
    MINUTE_US,
    OK,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    FallbackLimiter,
    Limits,
    gcra,
    month_window,
    policy_header,
    ratelimit_header,
    reserve_size,
    seconds_up,
)
from gateway.access.tiers import DEFAULT_TIERS, wire_table
from tests.ratelimit_model import (
    Outcome,
    decide,
    hand_back,
    interval_us,
    one_request,
    reserve_cap,
    reserve_fits,
)

T0 = 1_700_000_000_000_000  # microseconds


def run(limit: int, times: list[int], tat: int = 0) -> list[bool]:
    admitted = []
    for now in times:
        step = gcra(tat, now, limit)
        tat = step.tat_us
        admitted.append(step.allowed)
    return admitted


def test_a_burst_admits_exactly_the_limit() -> None:
    for limit in (1, 7, 30, 100, 300, 3000):
        assert run(limit, [T0] * (limit + 50)) == [True] * limit + [False] * 50


def test_after_the_burst_one_request_per_emission_interval() -> None:
    interval = MINUTE_US // 100
    tat = 0
    for _ in range(100):
        tat = gcra(tat, T0, 100).tat_us
    refused = gcra(tat, T0 + interval - 1, 100)
    assert not refused.allowed and refused.retry_after_us == 1
    admitted = gcra(tat, T0 + interval, 100)
    assert admitted.allowed and admitted.remaining == 0


def test_remaining_reset_and_retry_after() -> None:
    first = gcra(0, T0, 30)
    assert (first.allowed, first.remaining, first.reset_us) == (True, 29, 2_000_000)
    tat = first.tat_us
    for _ in range(29):
        tat = gcra(tat, T0, 30).tat_us
    refused = gcra(tat, T0, 30)
    assert (refused.allowed, refused.remaining, refused.tat_us) == (False, 0, tat)
    assert refused.reset_us == MINUTE_US  # the whole burst is back in a minute
    assert refused.retry_after_us == 2_000_000  # one slot back in one emission interval
    assert seconds_up(refused.retry_after_us) == 2


def test_idle_key_gets_its_whole_burst_back() -> None:
    tat = 0
    for _ in range(30):
        tat = gcra(tat, T0, 30).tat_us
    assert run(30, [T0 + MINUTE_US] * 31, tat) == [True] * 30 + [False]


@given(limit=st.integers(1, 5000), gaps=st.lists(st.integers(0, 5_000_000), max_size=200))
def test_never_more_than_limit_plus_elapsed_intervals(limit: int, gaps: list[int]) -> None:
    """Over any run, admitted <= limit + elapsed / T (the GCRA's definition)."""
    now, tat, admitted = T0, 0, 0
    for gap in gaps:
        now += gap
        step = gcra(tat, now, limit)
        tat = step.tat_us
        admitted += step.allowed
    interval = MINUTE_US // limit
    assert admitted <= limit + (now - T0) // interval


def test_model_quota_first_and_refusals_cost_nothing() -> None:
    limits = Limits(per_minute=100, per_month=5)
    used, tat, results = 0, 0, []
    for _ in range(7):
        d, tat, used = one_request(tat, used, T0, limits)
        results.append(d.result)
    assert results == [OK] * 5 + [QUOTA_EXCEEDED] * 2
    assert used == 5
    assert one_request(tat, used, T0, limits)[0].remaining == 95


def test_model_rate_limited_before_quota_runs_out() -> None:
    limits = Limits(per_minute=2, per_month=10)
    d1, tat, used = one_request(0, 0, T0, limits)
    d2, tat, used = one_request(tat, used, T0, limits)
    d3, tat, used = one_request(tat, used, T0, limits)
    assert [d1.result, d2.result, d3.result] == [OK, OK, RATE_LIMITED]
    assert d3.used == 2 and d3.retry_us == 30_000_000


def test_model_unlimited_is_counted_but_never_refused() -> None:
    limits = DEFAULT_TIERS["unlimited"]
    d, _, _ = one_request(0, 10**9, T0, limits)
    assert d.result == OK and d.used == 10**9 + 1 and d.remaining == -1


@given(limit=st.integers(1, 5000), gaps=st.lists(st.integers(0, 5_000_000), max_size=200))
def test_the_model_gcra_is_the_fallback_gcra(limit: int, gaps: list[int]) -> None:
    """The model's per-minute GCRA (what the Lua script is held to) and the fallback's (what a
    process runs while the store is down) admit the same requests with the same numbers."""
    now, tat, model_tat = T0, 0, 0
    for gap in gaps:
        now += gap
        step = gcra(tat, now, limit)
        tat = step.tat_us
        outcome, model_tat, _ = one_request(model_tat, 0, now, Limits(limit, 0))
        assert (outcome.result == OK, model_tat) == (step.allowed, tat)
        assert (outcome.reset_us, outcome.retry_us) == (step.reset_us, step.retry_after_us)
        if step.allowed:
            assert outcome.remaining == step.remaining


@pytest.mark.parametrize(("instant", "name", "days"), [
    ("2023-11-30T23:59:59+00:00", "202311", 30),
    ("2023-12-01T00:00:00+00:00", "202312", 31),
    ("2024-02-10T12:00:00+00:00", "202402", 29),
    ("2023-11-30T20:00:00-08:00", "202312", 31),  # already December in UTC
])
def test_month_window_is_the_utc_calendar_month(instant: str, name: str, days: int) -> None:
    now = dt.datetime.fromisoformat(instant).timestamp()
    month = month_window(now)
    assert month.name == name and month.seconds == days * 86400
    assert month.contains(now) and not month.contains(month.end)
    assert 0 < month.seconds_left(now) <= month.seconds


def test_headers_in_structured_field_form() -> None:
    month = month_window(dt.datetime(2023, 11, 7, tzinfo=dt.UTC).timestamp())
    bronze = DEFAULT_TIERS["bronze"]
    assert policy_header(bronze, month) == '"minute";q=30;w=60, "month";q=100000;w=2592000'
    assert ratelimit_header(bronze, 29, 2_000_000, 1, 3600) == \
        '"minute";r=29;t=2, "month";r=99999;t=3600'
    assert policy_header(DEFAULT_TIERS["unlimited"], month) == ""


def test_fallback_limiter_is_per_key_and_bounded() -> None:
    fallback = FallbackLimiter(max_keys=3)
    limits = Limits(per_minute=2, per_month=0)
    assert [fallback.check("a", limits, T0).allowed for _ in range(3)] == [True, True, False]
    assert fallback.check("b", limits, T0).allowed
    for key in ("c", "d", "e"):
        fallback.check(key, limits, T0)
    assert len(fallback) == 3
    assert fallback.check("a", limits, T0).allowed  # "a" was forgotten first


def test_circuit_breaker_opens_probes_and_closes() -> None:
    breaker = CircuitBreaker(open_seconds=1.0)
    assert breaker.allow(0.0)
    breaker.failure(0.0)
    assert not breaker.allow(0.5)
    assert breaker.allow(1.0)  # one probe
    assert not breaker.allow(1.0)  # the others wait for it
    breaker.failure(1.1)
    assert not breaker.allow(1.5) and breaker.allow(2.2)
    breaker.success()
    assert breaker.allow(2.3) and breaker.allow(2.3)


def test_wire_table_puts_the_default_tier_first() -> None:
    table = wire_table({**DEFAULT_TIERS, "a_first": Limits(1, 2)})
    assert table.startswith(";bronze:30:100000;")
    assert ";a_first:1:2;" in table and table.endswith(";")


def verdict_of(outcomes: list[Outcome], reserved: int, limits: Limits) -> GroupVerdict:
    """The verdict the check script gives for these requests (its fields are the numbers after
    the admitted ones: those of the last request, since a refused one changes nothing)."""
    last = outcomes[-1]
    refused = [o.result for o in outcomes if o.result != OK]
    return GroupVerdict(refused[0] if refused else OK, "developer", "t", "", True, limits,
                        sum(o.result == OK for o in outcomes), last.remaining, last.reset_us,
                        last.retry_us, last.used, interval_us(limits.per_minute), reserved)


def spent_state(limits: Limits, spent: int) -> int:
    """A GCRA state with ``spent`` requests of the minute already used at ``T0``."""
    tat = 0
    for _ in range(spent):
        tat = one_request(tat, 0, T0, limits)[1]
    return tat


@given(per_minute=st.integers(0, 50), per_month=st.integers(0, 80),
       used=st.integers(0, 100), spent=st.integers(0, 60), n=st.integers(1, 120))
def test_a_verdict_gives_each_coalesced_request_its_own_numbers(
        per_minute: int, per_month: int, used: int, spent: int, n: int) -> None:
    """n requests of one key that arrive together share one verdict of the script; each
    request's numbers (GroupVerdict.check, by its place) are those of deciding them one after
    another at that instant (the model)."""
    limits = Limits(per_minute, per_month)
    decision = decide(spent_state(limits, spent), used, T0, limits, n)
    verdict = verdict_of(decision.outcomes, 0, limits)
    for i, one in enumerate(decision.outcomes):
        check = verdict.check(i)
        assert (check.result, check.month_used) == (one.result, one.used), i
        assert check.minute_remaining == one.remaining, i
        if one.result == OK:
            assert check.minute_reset_us == one.reset_us, i
        if one.result == RATE_LIMITED:
            assert check.retry_after_us == one.retry_us, i


@given(per_minute=st.integers(0, 50), per_month=st.integers(0, 400),
       used=st.integers(0, 100), spent=st.integers(0, 60), n=st.integers(1, 30),
       extra=st.integers(0, 40), taken=st.integers(0, 40))
def test_model_a_reserve_is_counted_like_later_requests_and_comes_back_whole(
        per_minute: int, per_month: int, used: int, spent: int, n: int, extra: int,
        taken: int) -> None:
    """A reserve only far from the limits (at most half of what is left of either, at most
    0.1 % of the month); its places are numbered like requests right after the ``n`` (by the
    verdict, GroupVerdict.check); handing back what was not used at once (the GCRA state, and
    the month counter less the unused) leaves the state of ``n + used`` requests counted one
    after another."""
    limits = Limits(per_minute, per_month)
    tat = spent_state(limits, spent)
    plain = decide(tat, used, T0, limits, n)
    batch = decide(tat, used, T0, limits, n, extra)
    assert batch.outcomes == plain.outcomes
    capped = reserve_cap(extra, limits)
    assert capped <= extra and (not per_month or capped <= per_month // 1000)
    fits = all(o.result == OK for o in plain.outcomes) and reserve_fits(
        capped, plain.outcomes[-1].remaining if per_minute else None,
        per_month - plain.used if per_month else None)
    assert len(batch.reserve) == (capped if fits else 0)
    everything = batch.outcomes + batch.reserve
    verdict = verdict_of(everything, len(batch.reserve), limits)
    for i, one in enumerate(everything):
        check = verdict.check(i)
        assert (check.result, check.month_used, check.minute_remaining) == (
            one.result, one.used, one.remaining), i
    if batch.reserve:
        use = min(taken, len(batch.reserve))
        unused = len(batch.reserve) - use
        back_tat = hand_back(batch.tat, batch.tat, unused, interval_us(per_minute), T0)
        alone = decide(tat, used, T0, limits, n + use)
        assert (max(back_tat, T0), batch.used - unused) == (max(alone.tat, T0), alone.used)


def test_a_reserve_is_sized_by_the_rate_and_kept_for_busy_keys_only() -> None:
    assert reserve_size(1000.0, 0.25) == 250
    assert reserve_size(100_000.0, 0.25) == 1024  # capped
    assert reserve_size(20.0, 0.25) == 0  # 5 requests: checked one call at a time
    assert reserve_size(40.0, 0.25) == 10
    assert reserve_fits(10, 20, None) and reserve_fits(10, None, 20)
    assert not reserve_fits(10, 19, 1000) and not reserve_fits(10, 1000, 19)
    assert not reserve_fits(0, 1000, 1000)


def test_model_a_hand_back_gives_back_only_what_still_lies_ahead() -> None:
    """A reserve of 100 at 1 ms each, granted at T0, none used. Handed back at once: all 100
    slots come back. Handed back 60 ms later, after another process pushed the state 50 s
    ahead: only the 40 slots still ahead of the clock do (the other 60 were refilled anyway;
    taking them off would admit 60 more than the burst)."""
    granted = T0 + 100_000
    assert hand_back(granted, granted, 100, 1_000, T0) == T0
    later = T0 + 60_000
    pushed = later + 50_000_000
    assert hand_back(pushed, granted, 100, 1_000, later) == pushed - 40_000
    assert hand_back(pushed, granted, 100, 1_000, granted + 1) == pushed  # all passed
    assert reserve_cap(500, Limits(0, 100_000)) == 100 and reserve_cap(500, Limits(10, 0)) == 500
