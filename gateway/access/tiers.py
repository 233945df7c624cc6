"""Tiers are data: name → limits, kept in the store (``tg:tiers``) over built-in defaults.

``transit-gateway tiers set NAME --per-minute N --per-month N`` defines or redefines one (0 means
no limit); ``tiers list`` shows them. Each process keeps the table in memory (``TierCache``) and
reloads it when it is older than ``GATEWAY_TIER_CACHE_SECONDS`` (in the background, off the
request path) or at once when a key names a tier it does not know yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from gateway.access.limits import Limits
from gateway.errors import BadRequest, StoreUnavailable
from gateway.store.store import Store

log = logging.getLogger(__name__)

DEFAULT_TIER = "bronze"
DEFAULT_TIERS: dict[str, Limits] = {
    "bronze": Limits(per_minute=30, per_month=100_000),
    "silver": Limits(per_minute=300, per_month=1_000_000),
    "gold": Limits(per_minute=3_000, per_month=10_000_000),
    "unlimited": Limits(per_minute=0, per_month=0),
}
TIER_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
MAX_PER_MINUTE = 60_000_000  # one per microsecond: the GCRA's resolution


def check_tier_name(name: str) -> str:
    if not TIER_NAME_RE.match(name):
        raise BadRequest(f"tier names are 1-32 of a-z, 0-9 and _: {name!r}",
                         code="invalid_tier", details={"parameter": "tier"})
    return name


def limits_from_json(raw: Mapping[str, Any]) -> Limits:
    try:
        per_minute = int(raw.get("per_minute", 0))
        per_month = int(raw.get("per_month", 0))
    except (TypeError, ValueError):
        raise BadRequest(f"tier limits must be integers: {raw!r}", code="invalid_tier") from None
    if not (0 <= per_minute <= MAX_PER_MINUTE and per_month >= 0):
        raise BadRequest(f"per_minute must be 0..{MAX_PER_MINUTE} and per_month >= 0",
                         code="invalid_tier")
    return Limits(per_minute, per_month)


async def load_tiers(store: Store) -> dict[str, Limits]:
    tiers = dict(DEFAULT_TIERS)
    for name, raw in (await store.tiers()).items():
        try:
            tiers[check_tier_name(name)] = limits_from_json(raw)
        except BadRequest as exc:
            log.error("tier %r in the store is invalid, ignored: %s", name, exc.message)
    return tiers


async def set_tier(store: Store, name: str, per_minute: int, per_month: int) -> Limits:
    limits = limits_from_json({"per_minute": per_minute, "per_month": per_month})
    await store.put_tier(check_tier_name(name), limits.to_json())
    return limits


async def require_tier(store: Store, name: str) -> Limits:
    """The limits of ``name``, or 400 unknown_tier (checked when a key or event is made)."""
    limits = (await load_tiers(store)).get(name)
    if limits is None:
        raise BadRequest(f"no tier {name!r} (see `transit-gateway tiers list`)",
                         code="unknown_tier", details={"parameter": "tier"})
    return limits


def wire_table(tiers: dict[str, Limits]) -> str:
    """The table as the limiter script reads it: ``;name:per_minute:per_month;…``, with the
    default tier first (the script falls back to the first entry for an unknown tier)."""
    names = [DEFAULT_TIER, *sorted(n for n in tiers if n != DEFAULT_TIER)]
    return ";" + ";".join(f"{n}:{tiers[n].per_minute}:{tiers[n].per_month}"
                          for n in names if n in tiers) + ";"


class TierCache:
    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self.tiers: dict[str, Limits] = dict(DEFAULT_TIERS)
        self.wire = wire_table(self.tiers)
        self._loaded_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None

    def get(self, name: str) -> Limits:
        return self.tiers.get(name) or self.tiers.get(DEFAULT_TIER) or DEFAULT_TIERS[DEFAULT_TIER]

    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at > self.ttl

    async def refresh(self) -> None:
        """Reload now; concurrent callers share one store call."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._load())
        await asyncio.shield(self._refreshing)

    def refresh_soon(self) -> None:
        """Reload in the background if stale (called on the request path, never waits)."""
        if self.stale() and (self._refreshing is None or self._refreshing.done()):
            self._loaded_at = time.monotonic()  # one attempt per ttl, even when it fails
            self._refreshing = asyncio.create_task(self._load_quietly())

    async def _load(self) -> None:
        tiers = await load_tiers(self.store)
        self.tiers, self.wire = tiers, wire_table(tiers)
        self._loaded_at = time.monotonic()

    async def _load_quietly(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._load()
