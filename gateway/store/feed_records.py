"""Feed records: registered configs, static versions and their switch, ingest status."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.store.names import FEEDS_KEY, feed_key
from gateway.store.pubsub import PubSub

OLD_VERSION_TTL_S = 600  # a replaced index lingers so a process mid-load can finish


class FeedRecords(PubSub):
    """``tg:feeds``, ``tg:feed:<id>:version``, ``:static:<version>``, ``:status``."""

    async def feed_configs(self) -> dict[str, dict[str, Any]]:
        raw = await self._call("hgetall", FEEDS_KEY)
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def feed_config(self, feed_id: str) -> dict[str, Any] | None:
        raw = await self._call("hget", FEEDS_KEY, feed_id)
        return None if raw is None else dict(orjson.loads(raw))

    async def put_feed_config(self, feed_id: str, config: dict[str, Any]) -> None:
        await self._call("hset", FEEDS_KEY, feed_id, orjson.dumps(config))

    async def remove_feed(self, feed_id: str) -> bool:
        existed = bool(await self._call("hdel", FEEDS_KEY, feed_id))
        keys = [k async for k in self._scan(feed_key(feed_id, "*"))]
        for key in keys:
            await self._call("delete", key)
        await self.publish_event(f"feed {feed_id} -")
        return existed

    async def feed_versions(self, feed_ids: list[str]) -> dict[str, str | None]:
        if not feed_ids:
            return {}
        if self.cluster:
            values = [await self._call("get", feed_key(f, "version")) for f in feed_ids]
        else:
            values = await self._call("mget", [feed_key(f, "version") for f in feed_ids])
        return {f: (v.decode() if v else None) for f, v in zip(feed_ids, values, strict=True)}

    async def static_blob(self, feed_id: str, version: str) -> bytes | None:
        value = await self._call("get", feed_key(feed_id, f"static:{version}"))
        return None if value is None else bytes(value)

    async def publish_static(
        self, feed_id: str, version: str, blob: bytes, status: dict[str, Any]
    ) -> None:
        """Write the whole new version first, then switch to it: readers never see half a feed."""
        old = await self._call("get", feed_key(feed_id, "version"))
        await self._call("set", feed_key(feed_id, f"static:{version}"), blob)
        await self._call("mset", {feed_key(feed_id, "version"): version,
                                  feed_key(feed_id, "status"): orjson.dumps(status)})
        if old and old.decode() != version:
            await self._call("expire", feed_key(feed_id, f"static:{old.decode()}"),
                             OLD_VERSION_TTL_S)
        await self.publish_event(f"feed {feed_id} {version}")

    async def feed_status(self, feed_id: str) -> dict[str, Any]:
        raw = await self._call("get", feed_key(feed_id, "status"))
        return {} if raw is None else dict(orjson.loads(raw))

    async def put_feed_status(self, feed_id: str, status: dict[str, Any]) -> None:
        await self._call("set", feed_key(feed_id, "status"), orjson.dumps(status))
