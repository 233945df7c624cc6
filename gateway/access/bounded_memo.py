"""Bounded memo tables for small values that repeat on the request path: reply strings,
header values, RESP-encoded arguments, parsed instants. A full table is emptied rather than
evicted one by one: each dropped entry costs one recompute, and no bookkeeping is paid on a hit.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def memo(cache: dict[K, V], key: K, make: Callable[..., V], *args: Any,
         bound: int = 1000) -> V:
    """``cache[key]``, made by ``make(*args)`` on a miss."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= bound:
            cache.clear()
        value = cache[key] = make(*args)
    return value
