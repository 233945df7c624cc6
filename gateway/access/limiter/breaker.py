"""The limiter's circuit breaker: while the store is down, requests are refused at once
instead of each waiting for a timeout; one probe per ``open_seconds`` finds out whether it
is back. Its state is exported as ``tg_store_breaker_open``.
"""

from __future__ import annotations

from gateway.observability import metrics


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
