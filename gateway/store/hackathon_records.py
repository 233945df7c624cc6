"""Hackathon events: a code, its tier and expiry, and its seats taken atomically."""

from __future__ import annotations

from gateway.store.connection import StoreConnection
from gateway.store.names import HACKATHONS_KEY, hackathon_key


class HackathonRecords(StoreConnection):
    """``tg:hackathon:<code>`` and the ``tg:hackathons`` index."""

    async def put_hackathon(self, code: str, fields: dict[str, str]) -> bool:
        """Create an event; False (and nothing written) when the code is taken."""
        if not await self._call("hsetnx", hackathon_key(code), "code", code):
            return False
        # acknowledged by a replica on a cluster that has them: the code is handed out
        await self._call_acked("hset", hackathon_key(code), mapping=fields)
        await self._call_acked("sadd", HACKATHONS_KEY, code)
        return True

    async def hackathon(self, code: str) -> dict[str, str] | None:
        raw = await self._call("hgetall", hackathon_key(code))
        return {k.decode(): v.decode() for k, v in raw.items()} if raw else None

    async def hackathon_codes(self) -> list[str]:
        return sorted(k.decode() for k in await self._call("smembers", HACKATHONS_KEY))

    async def reserve_hackathon_seat(self, code: str, now: float) -> str:
        """Atomically take one of an event's ``max_keys`` seats at process time ``now``:
        "ok", "event_not_found", "event_expired" or "event_full"."""
        result = await self._call("eval", _RESERVE_SEAT, 1, hackathon_key(code), repr(now))
        return bytes(result).decode()

    async def release_hackathon_seat(self, code: str) -> None:
        await self._call("hincrby", hackathon_key(code), "signups", -1)


_RESERVE_SEAT = """
local e = redis.call('HMGET', KEYS[1], 'expires_at', 'max_keys', 'signups')
if not e[1] then return 'event_not_found' end
if tonumber(e[1]) <= tonumber(ARGV[1]) then return 'event_expired' end
if tonumber(e[3] or '0') >= tonumber(e[2]) then return 'event_full' end
redis.call('HINCRBY', KEYS[1], 'signups', 1)
return 'ok'
"""
