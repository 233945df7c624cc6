"""API key records and tiers (the limiter's counters live beside each key record)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.store.connection import StoreConnection
from gateway.store.names import KEYS_KEY, TIERS_KEY, key_record_key


class KeyRecords(StoreConnection):
    """``tg:{key:<id>}`` records, the ``tg:keys`` index, ``tg:tiers``."""

    # Key records and tiers are acknowledged by a replica on a cluster that has them
    # (``_call_acked``): a key handed out, a revocation or a tier must outlive a failover.
    async def put_key(self, key_id: str, record: dict[str, str]) -> None:
        await self._call_acked("hset", key_record_key(key_id), mapping=record)
        await self._call_acked("sadd", KEYS_KEY, key_id)

    async def key(self, key_id: str) -> dict[str, str] | None:
        raw = await self._call("hgetall", key_record_key(key_id))
        if not raw:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def key_ids(self) -> list[str]:
        return sorted(k.decode() for k in await self._call("smembers", KEYS_KEY))

    async def update_key(self, key_id: str, fields: dict[str, str]) -> bool:
        if not await self._call("exists", key_record_key(key_id)):
            return False
        await self._call_acked("hset", key_record_key(key_id), mapping=fields)
        return True

    async def key_counters(self, key_id: str) -> dict[str, int]:
        """Every counter key of one API key → its PTTL in ms (-1: none; for ops and tests)."""
        names = [k async for k in self._scan(key_record_key(key_id) + ":*")]
        return {n.decode(): int(await self._call("pttl", n)) for n in names}

    async def tiers(self) -> dict[str, dict[str, Any]]:
        raw = await self._call("hgetall", TIERS_KEY)
        return {k.decode(): dict(orjson.loads(v)) for k, v in raw.items()}

    async def put_tier(self, name: str, data: dict[str, Any]) -> None:
        await self._call_acked("hset", TIERS_KEY, name, orjson.dumps(data))
