"""Authenticating API keys, with a short in-process cache of verified keys.

A malformed key (wrong prefix, length or checksum) is refused before any store command. A
verified record is trusted for ``ttl`` seconds; that bounds how long a revoked key keeps
working on a process that has just seen it.
"""

from __future__ import annotations

import datetime as dt

from gateway import keys
from gateway.clock import Clock
from gateway.errors import Unauthorized
from gateway.keys import KeyRecord
from gateway.store import Store


class Authenticator:
    def __init__(self, store: Store, clock: Clock, ttl: float) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self._cache: dict[str, tuple[float, KeyRecord]] = {}

    async def authenticate(self, presented: str | None) -> KeyRecord:
        if not presented:
            raise Unauthorized("an API key is required: send the X-API-Key header "
                               "or the key query parameter", code="missing_api_key")
        presented = presented.strip()
        if not keys.well_formed(presented):
            raise Unauthorized("the API key is malformed (check for a typo)",
                               code="invalid_api_key")
        now = self.clock.now()
        key_id = keys.key_id_of(presented)
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            record = cached[1]
        else:
            raw = await self.store.key(key_id)
            if raw is None:
                raise Unauthorized("unknown API key", code="invalid_api_key")
            record = KeyRecord.from_store(raw)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key_id] = (now + self.ttl, record)
        if not record.matches(presented):
            raise Unauthorized("unknown API key", code="invalid_api_key")
        if record.revoked:
            raise Unauthorized("this API key was revoked", code="revoked_api_key")
        if record.expires and dt.datetime.fromisoformat(record.expires).timestamp() <= now:
            raise Unauthorized("this API key has expired", code="expired_api_key")
        return record
