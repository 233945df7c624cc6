"""Leases: which ingest process polls a feed (``tg:lease:<name>``, with a TTL)."""

from __future__ import annotations

from gateway.store.connection import StoreConnection
from gateway.store.names import lease_key


class Leases(StoreConnection):
    """Take, renew and check a lease; an owner that stops renewing loses it when the TTL ends."""

    async def hold_lease(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew a lease (``tg:lease:<name>``); True while this owner holds it."""
        key = lease_key(name)
        if await self._call("set", key, owner, nx=True, px=ttl_ms):
            return True
        holder = await self._call("get", key)
        if holder is not None and holder.decode() == owner:
            await self._call("pexpire", key, ttl_ms)
            return True
        return False
