"""The store side of authentication + rate limiting: one Lua script call per batch of
requests, whatever their keys.

``KeyLimiter.check`` runs the ``check`` script on the key's record, its GCRA state and its
month counter (one hash tag, so one Cluster slot). The script verifies the key (hash,
revoked, expires), finds the tier's limits in the table passed in, applies the monthly quota
and the per-minute GCRA (``gateway.access.limits`` tells the arithmetic) with the store's
``TIME``, counts the request and gives every counter a TTL, all atomically. A process whose
clock is off changes nothing per minute; the month counter's name comes from the process
clock (so ``GATEWAY_CLOCK`` moves it, on purpose).

Coalescing: requests of one key that arrive while the previous batch is on the wire share one
verdict that decides all of them at once, exactly as if they had come one after another
(``n`` in the script), and the keys of a whole batch are checked by one script call, one
after another inside it (on a Redis Cluster, where a script's keys must share a slot, one
call per key, all in one pipeline). So a request costs at most one store command, usually a
fraction of one. The connection pool is the store's fast sibling (short timeouts, no
retries) behind a circuit breaker, so while the store is down requests do not each wait for
a timeout; a probe every ``open_seconds`` closes the breaker again.

Reserves: a key that this process sees often (``reserve_size``: at least a few requests per
reserve lifetime) asks the script for ``extra`` requests beyond the waiting ones. Far from
its limits (at most half of what is left of the minute's burst and of the month, and at most
0.1 % of the month's quota) the script counts them right away, as if they had arrived just
after the waiting ones, and notes the reserve in the key's ``held`` sorted set (until
``HOLD_US`` from now, should the process die with it). The process then admits the key's
next requests from it without a store call, each with its own numbers (its place in the
verdict), for at most ``RESERVE_SECONDS``; then the ``return`` script hands back what it did
not use (of the GCRA state, only what still lies ahead of now) and takes it out of ``held``.
Limits stay exact across processes: a refusal while reserves are held answers ``waiting``,
and the limiter asks again every ``WAIT_STEP_S`` until it is final. Revocation, expiry and a
tier change reach a hot key within a reserve's lifetime.

Tests: ``tests/ratelimit_model.py`` models what this promises, and
``tests/test_ratelimit_machine.py`` drives the real scripts on real stores against it, with
the store's time given by the test (``KeyLimiter(store_clock=...)``) instead of ``TIME``.

The modules, from the top:

- ``key_limiter``: ``KeyLimiter``, what callers use (and the per-IP signup GCRA);
- ``reserves``: the reserves it holds and hands back (``ReserveBook``, its base class);
- ``checks``: one key's coalesced requests, a batch's checks packed into one call;
- ``batcher``: batching, our own RESP connection, NOSCRIPT reloads, the redis-py fallback;
- ``wire``: what a batch is made of (``Pending``, ``Call``, ``Wire``);
- ``verdict``: the check script's reply read as ``GroupVerdict`` and ``Check``;
- ``breaker``: the circuit breaker;
- ``scripts`` and ``lua/``: the Lua scripts and their SHA1s.
"""

from gateway.access.limiter.breaker import CircuitBreaker
from gateway.access.limiter.key_limiter import KeyLimiter
from gateway.access.limiter.reserves import RESERVE_SECONDS
from gateway.access.limiter.verdict import Check, GroupVerdict

__all__ = ["RESERVE_SECONDS", "Check", "CircuitBreaker", "GroupVerdict", "KeyLimiter"]
