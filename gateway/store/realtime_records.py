"""Realtime records of a feed: per-stop overlays, trip records, positions, alerts, health."""

from __future__ import annotations

from typing import Any

import orjson
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable
from gateway.store.names import feed_key
from gateway.store.pubsub import PubSub


class RealtimeRecords(PubSub):
    """``tg:feed:<id>:rt:*``: written in one pipeline per snapshot, announced on ``tg:events``."""

    async def publish_realtime(
        self,
        feed_id: str,
        kind: str,
        meta: dict[str, Any],
        stop_writes: dict[str, bytes] | None = None,
        stop_deletes: list[str] | None = None,
        trip_writes: dict[str, bytes] | None = None,
        trip_deletes: list[str] | None = None,
        blob: bytes | None = None,
    ) -> None:
        """Write one realtime snapshot's changes in one pipeline, then announce them.

        Only changed stop overlays and trip records are written; the event names the changed
        stops (or "*" when many) so API processes drop just those from their caches.
        """
        stop_writes = stop_writes or {}
        stop_deletes = stop_deletes or []
        trip_writes = trip_writes or {}
        trip_deletes = trip_deletes or []
        try:
            pipe = self.client.pipeline(transaction=False)
            if self.cluster:  # keys of one feed spread over slots: one SET each
                for stop, data in stop_writes.items():
                    pipe.set(feed_key(feed_id, f"rt:stop:{stop}"), data)
            elif stop_writes:  # one command for all: a third of the write's cost
                pipe.mset({feed_key(feed_id, f"rt:stop:{stop}"): data
                           for stop, data in stop_writes.items()})
            if stop_deletes:
                pipe.delete(*[feed_key(feed_id, f"rt:stop:{s}") for s in stop_deletes])
            if trip_writes:
                pipe.hset(feed_key(feed_id, "rt:trips"), mapping=trip_writes)
            if trip_deletes:
                pipe.hdel(feed_key(feed_id, "rt:trips"), *trip_deletes)
            if blob is not None:
                pipe.set(feed_key(feed_id, f"rt:{kind}"), blob)
            pipe.hset(feed_key(feed_id, "rt:meta"), kind, orjson.dumps(meta))
            await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"store error: {exc}") from exc
        changed = [*stop_writes, *stop_deletes]
        event = {"feed": feed_id, "kind": kind, "meta": meta,
                 "stops": changed if len(changed) <= 500 else "*"}
        await self.publish_event("rt " + orjson.dumps(event).decode())

    async def put_realtime_meta(self, feed_id: str, kind: str, meta: dict[str, Any]) -> None:
        await self._call("hset", feed_key(feed_id, "rt:meta"), kind, orjson.dumps(meta))
        event: dict[str, Any] = {"feed": feed_id, "kind": kind, "meta": meta, "stops": []}
        await self.publish_event("rt " + orjson.dumps(event).decode())

    async def realtime_meta(self, feed_id: str) -> dict[str, dict[str, Any]]:
        raw = await self._call("hgetall", feed_key(feed_id, "rt:meta"))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def stop_overlays(self, feed_id: str, stop_ids: list[str]) -> list[bytes | None]:
        keys = [feed_key(feed_id, f"rt:stop:{s}") for s in stop_ids]
        # on a cluster the overlays lie in several slots: one MGET per slot, in one pipeline
        return list(await self._call("mget_nonatomic" if self.cluster else "mget", keys))

    async def stop_overlay_ids(self, feed_id: str) -> list[str]:
        prefix = feed_key(feed_id, "rt:stop:")
        return [k.decode()[len(prefix):] async for k in self._scan(prefix + "*")]

    async def trip_realtime(self, feed_id: str, key: str) -> bytes | None:
        value = await self._call("hget", feed_key(feed_id, "rt:trips"), key)
        return None if value is None else bytes(value)

    async def trip_realtime_keys(self, feed_id: str) -> list[str]:
        return [k.decode() for k in await self._call("hkeys", feed_key(feed_id, "rt:trips"))]

    async def realtime_blob(self, feed_id: str, kind: str) -> bytes | None:
        value = await self._call("get", feed_key(feed_id, f"rt:{kind}"))
        return None if value is None else bytes(value)
