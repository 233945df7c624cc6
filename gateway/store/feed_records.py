"""Feed records: registered configs, static versions and their switch, ingest status.

A static version is stored in chunks (``tg:feed:<id>:static:<version>:<n>``, at most
``CHUNK_BYTES`` each: no stored value is ever large, and on a Cluster the chunks spread over
slots since they carry no hash tag), then its manifest (``:static:<version>``: the number of
chunks, their bytes and SHA-256), and only then the one small pointer write that switches
readers to it (``tg:feed:<id>:version``). Readers never see half a version; the old one keeps
serving until the switch. The newest ``keep`` versions stay stored (a rollback, or a process
still loading one); older ones are deleted after the switch. Every command names one key, so
nothing here crosses Cluster slots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.store.names import FEEDS_KEY, feed_key
from gateway.store.pubsub import PubSub

CHUNK_BYTES = 32 * 1024 * 1024  # well under the 64 MiB ceiling of any stored value
KEEP_VERSIONS = 3  # stored versions per feed, the one serving included


class FeedRecords(PubSub):
    """``tg:feeds``, ``tg:feed:<id>:version``, ``:static:<version>[:<n>]``, ``:stored``,
    ``:status``."""

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
        keys = [feed_key(f, "version") for f in feed_ids]
        # on a cluster the pointers lie in several slots: one MGET per slot, in one pipeline
        values = await self._call("mget_nonatomic" if self.cluster else "mget", keys)
        return {f: (v.decode() if v else None) for f, v in zip(feed_ids, values, strict=True)}

    async def static_manifest(self, feed_id: str, version: str) -> dict[str, Any] | None:
        """``{"chunks", "bytes", "sha256"}`` of a stored version, or None."""
        raw = await self._call("get", feed_key(feed_id, f"static:{version}"))
        return None if raw is None else dict(orjson.loads(raw))

    async def static_chunk(self, feed_id: str, version: str, n: int) -> bytes | None:
        value = await self._call("get", feed_key(feed_id, f"static:{version}:{n}"))
        return None if value is None else bytes(value)

    async def publish_static(self, feed_id: str, version: str, chunks: Iterable[bytes],
                             status: dict[str, Any], keep: int = KEEP_VERSIONS) -> int:
        """Write the version's ``chunks`` (each at most ``CHUNK_BYTES``) and its manifest,
        then switch to it and announce it; returns the bytes written. Versions beyond the
        newest ``keep`` are deleted after the switch."""
        digest = hashlib.sha256()
        count = total = 0
        for chunk in chunks:
            if len(chunk) > CHUNK_BYTES:
                raise ValueError(f"a chunk of {len(chunk)} bytes is over {CHUNK_BYTES}")
            await self._call("set", feed_key(feed_id, f"static:{version}:{count}"), chunk)
            digest.update(chunk)
            count += 1
            total += len(chunk)
        manifest = {"chunks": count, "bytes": total, "sha256": digest.hexdigest()}
        await self._call("set", feed_key(feed_id, f"static:{version}"), orjson.dumps(manifest))
        await self._call("zadd", feed_key(feed_id, "stored"),
                         {version: await self._store_seconds()})
        await self._call("set", feed_key(feed_id, "version"), version)  # the switch
        await self._call("set", feed_key(feed_id, "status"), orjson.dumps(status))
        await self.publish_event(f"feed {feed_id} {version}")
        await self._drop_old_versions(feed_id, version, keep)
        return total

    async def stored_versions(self, feed_id: str) -> list[str]:
        """Versions whose chunks are in the store, newest first."""
        raw = await self._call("zrevrange", feed_key(feed_id, "stored"), 0, -1)
        return [v.decode() for v in raw]

    async def _drop_old_versions(self, feed_id: str, serving: str, keep: int) -> None:
        for version in (await self.stored_versions(feed_id))[max(1, keep):]:
            if version == serving:
                continue
            manifest = await self.static_manifest(feed_id, version)
            for n in range(int(manifest["chunks"]) if manifest else 0):
                await self._call("delete", feed_key(feed_id, f"static:{version}:{n}"))
            await self._call("delete", feed_key(feed_id, f"static:{version}"))
            await self._call("zrem", feed_key(feed_id, "stored"), version)

    async def _store_seconds(self) -> float:
        """The store's clock: versions are ordered as the store saw them written."""
        seconds, micros = await self._call("time")
        return int(seconds) + int(micros) / 1e6

    async def feed_status(self, feed_id: str) -> dict[str, Any]:
        raw = await self._call("get", feed_key(feed_id, "status"))
        return {} if raw is None else dict(orjson.loads(raw))

    async def put_feed_status(self, feed_id: str, status: dict[str, Any]) -> None:
        await self._call("set", feed_key(feed_id, "status"), orjson.dumps(status))
