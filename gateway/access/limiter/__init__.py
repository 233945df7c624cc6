"""The store side of authentication + rate limiting (see ``key_limiter``): re-exported here so
that ``from gateway.access.limiter import KeyLimiter`` keeps working."""

from gateway.access.limiter.key_limiter import (
    RESERVE_SECONDS,
    Check,
    CircuitBreaker,
    GroupVerdict,
    KeyLimiter,
    _CheckGroup,
    _KeyWire,
    _Wire,
)

__all__ = ["RESERVE_SECONDS", "Check", "CircuitBreaker", "GroupVerdict", "KeyLimiter",
           "_CheckGroup", "_KeyWire", "_Wire"]
