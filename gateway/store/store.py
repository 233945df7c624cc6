"""The store adapter: every Redis/Valkey key the gateway uses is named here and nowhere else.

Layout (all under ``tg:``):

    tg:feeds                          HASH  feed id -> feed config (JSON)
    tg:feed:<id>:version              STR   the static version being served
    tg:feed:<id>:static:<version>     STR   that version's schedule index (feeds.codec blob)
    tg:feed:<id>:status               STR   static ingest health (JSON)
    tg:feed:<id>:rt:meta              HASH  realtime kind -> fetch/merge health (JSON)
    tg:feed:<id>:rt:stop:<stop_id>    STR   that stop's realtime overlay (feeds.rt_overlay)
    tg:feed:<id>:rt:trips             HASH  trip instance -> its realtime (trip view)
    tg:feed:<id>:rt:vehicle_positions STR   positions (JSON); rt:alerts likewise
    tg:lease:<name>                   STR   which ingest process polls a feed (PX TTL)
    tg:events                         PUBSUB "feed <id> <version>" on every switch or removal,
                                            "rt <json>" on every realtime change
    tg:{key:<key_id>}                 HASH  API key record (hash tag: one slot per key, so the
                                            rate-limit counters can live beside it on a Cluster)
    tg:keys                           SET   all key ids, for listing
    tg:{key:<key_id>}:gcra            STR   per-minute GCRA state: the TAT in microseconds of
                                            the store's TIME (PX TTL: gone once replenished)
    tg:{key:<key_id>}:month:<YYYYMM>  STR   requests admitted in that UTC month of the process
                                            clock (TTL: to the month's end + 1 day)
    tg:tiers                          HASH  tier name -> {"per_minute", "per_month"} (JSON)
    tg:signup:<client ip>             STR   per-IP signup GCRA state (PX TTL)
    tg:hackathon:<code>               HASH  a hackathon event: tier, expires, expires_at,
                                            max_keys, created, signups
    tg:hackathons                     SET   all event codes, for listing

Feed ids are restricted (``FEED_ID_RE``) so they can never form a hash tag or a wildcard.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable

log = logging.getLogger(__name__)

FEED_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
EVENTS_CHANNEL = "tg:events"
OLD_VERSION_TTL_S = 600  # a replaced index lingers so a process mid-load can finish


def _feed(feed_id: str, suffix: str) -> str:
    return f"tg:feed:{feed_id}:{suffix}"


def key_record_key(key_id: str) -> str:
    return f"tg:{{key:{key_id}}}"


# One API key's counters share its record's hash tag: one Cluster slot, one script call.
def key_gcra_key(key_id: str) -> str:
    return f"tg:{{key:{key_id}}}:gcra"


def key_month_key(key_id: str, month: str) -> str:
    return f"tg:{{key:{key_id}}}:month:{month}"


def key_held_key(key_id: str) -> str:
    """Requests of the key counted ahead as reserves of processes (``gateway.access.limiter``)."""
    return f"tg:{{key:{key_id}}}:held"


def signup_ip_key(ip: str) -> str:
    return f"tg:signup:{ip}"


def hackathon_key(code: str) -> str:
    return f"tg:hackathon:{code}"


TIERS_KEY = "tg:tiers"
HACKATHONS_KEY = "tg:hackathons"


class Store:
    """Async access to the store. Methods raise StoreUnavailable when the store cannot answer."""

    def __init__(self, client: Any, url: str, cluster: bool = False) -> None:
        self.client = client
        self.url = url
        self.cluster = cluster

    @classmethod
    async def connect(cls, url: str) -> Store:
        client: Any = aioredis.Redis.from_url(
            url, socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=30
        )
        cluster = False
        try:
            info = await client.info("cluster")
            cluster = bool(info.get("cluster_enabled"))
        except RedisError as exc:
            await client.aclose()
            raise StoreUnavailable(f"cannot reach the store at {url}: {exc}") from exc
        if cluster:
            await client.aclose()
            client = RedisCluster.from_url(url, socket_timeout=5.0)
        return cls(client, url, cluster)

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, method)(*args, **kwargs)
        except RedisError as exc:
            raise StoreUnavailable(f"store error: {exc}") from exc

    async def ping(self) -> bool:
        return bool(await self._call("ping"))

    # --- feeds -----------------------------------------------------------------------------
    async def feed_configs(self) -> dict[str, dict[str, Any]]:
        raw = await self._call("hgetall", "tg:feeds")
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def feed_config(self, feed_id: str) -> dict[str, Any] | None:
        raw = await self._call("hget", "tg:feeds", feed_id)
        return None if raw is None else dict(orjson.loads(raw))

    async def put_feed_config(self, feed_id: str, config: dict[str, Any]) -> None:
        await self._call("hset", "tg:feeds", feed_id, orjson.dumps(config))

    async def remove_feed(self, feed_id: str) -> bool:
        existed = bool(await self._call("hdel", "tg:feeds", feed_id))
        keys = [k async for k in self._scan(_feed(feed_id, "*"))]
        for key in keys:
            await self._call("delete", key)
        await self.publish_event(f"feed {feed_id} -")
        return existed

    async def _scan(self, pattern: str) -> AsyncIterator[bytes]:
        try:
            async for key in self.client.scan_iter(match=pattern, count=500):
                yield key
        except RedisError as exc:
            raise StoreUnavailable(f"store error: {exc}") from exc

    async def feed_versions(self, feed_ids: list[str]) -> dict[str, str | None]:
        if not feed_ids:
            return {}
        if self.cluster:
            values = [await self._call("get", _feed(f, "version")) for f in feed_ids]
        else:
            values = await self._call("mget", [_feed(f, "version") for f in feed_ids])
        return {f: (v.decode() if v else None) for f, v in zip(feed_ids, values, strict=True)}

    async def static_blob(self, feed_id: str, version: str) -> bytes | None:
        value = await self._call("get", _feed(feed_id, f"static:{version}"))
        return None if value is None else bytes(value)

    async def publish_static(
        self, feed_id: str, version: str, blob: bytes, status: dict[str, Any]
    ) -> None:
        """Write the whole new version first, then switch to it: readers never see half a feed."""
        old = await self._call("get", _feed(feed_id, "version"))
        await self._call("set", _feed(feed_id, f"static:{version}"), blob)
        await self._call("mset", {_feed(feed_id, "version"): version,
                                  _feed(feed_id, "status"): orjson.dumps(status)})
        if old and old.decode() != version:
            await self._call("expire", _feed(feed_id, f"static:{old.decode()}"), OLD_VERSION_TTL_S)
        await self.publish_event(f"feed {feed_id} {version}")

    async def feed_status(self, feed_id: str) -> dict[str, Any]:
        raw = await self._call("get", _feed(feed_id, "status"))
        return {} if raw is None else dict(orjson.loads(raw))

    async def put_feed_status(self, feed_id: str, status: dict[str, Any]) -> None:
        await self._call("set", _feed(feed_id, "status"), orjson.dumps(status))

    async def publish_event(self, message: str) -> None:
        await self._call("publish", EVENTS_CHANNEL, message)

    async def events(self) -> AsyncIterator[str]:
        """Messages on the events channel, until cancelled. Raises StoreUnavailable on loss."""
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(EVENTS_CHANNEL)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"].decode()
        except RedisError as exc:
            raise StoreUnavailable(f"events subscription lost: {exc}") from exc
        finally:
            with contextlib.suppress(RedisError):
                await pubsub.aclose()

    # --- realtime ------------------------------------------------------------------------
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
                    pipe.set(_feed(feed_id, f"rt:stop:{stop}"), data)
            elif stop_writes:  # one command for all: a third of the write's cost
                pipe.mset({_feed(feed_id, f"rt:stop:{stop}"): data
                           for stop, data in stop_writes.items()})
            if stop_deletes:
                pipe.delete(*[_feed(feed_id, f"rt:stop:{s}") for s in stop_deletes])
            if trip_writes:
                pipe.hset(_feed(feed_id, "rt:trips"), mapping=trip_writes)
            if trip_deletes:
                pipe.hdel(_feed(feed_id, "rt:trips"), *trip_deletes)
            if blob is not None:
                pipe.set(_feed(feed_id, f"rt:{kind}"), blob)
            pipe.hset(_feed(feed_id, "rt:meta"), kind, orjson.dumps(meta))
            await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"store error: {exc}") from exc
        changed = [*stop_writes, *stop_deletes]
        event = {"feed": feed_id, "kind": kind, "meta": meta,
                 "stops": changed if len(changed) <= 500 else "*"}
        await self.publish_event("rt " + orjson.dumps(event).decode())

    async def put_realtime_meta(self, feed_id: str, kind: str, meta: dict[str, Any]) -> None:
        await self._call("hset", _feed(feed_id, "rt:meta"), kind, orjson.dumps(meta))
        event: dict[str, Any] = {"feed": feed_id, "kind": kind, "meta": meta, "stops": []}
        await self.publish_event("rt " + orjson.dumps(event).decode())

    async def realtime_meta(self, feed_id: str) -> dict[str, dict[str, Any]]:
        raw = await self._call("hgetall", _feed(feed_id, "rt:meta"))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def stop_overlays(self, feed_id: str, stop_ids: list[str]) -> list[bytes | None]:
        if self.cluster:
            return [await self._call("get", _feed(feed_id, f"rt:stop:{s}")) for s in stop_ids]
        values = await self._call("mget", [_feed(feed_id, f"rt:stop:{s}") for s in stop_ids])
        return list(values)

    async def stop_overlay_ids(self, feed_id: str) -> list[str]:
        prefix = _feed(feed_id, "rt:stop:")
        return [k.decode()[len(prefix):] async for k in self._scan(prefix + "*")]

    async def trip_realtime(self, feed_id: str, key: str) -> bytes | None:
        value = await self._call("hget", _feed(feed_id, "rt:trips"), key)
        return None if value is None else bytes(value)

    async def trip_realtime_keys(self, feed_id: str) -> list[str]:
        return [k.decode() for k in await self._call("hkeys", _feed(feed_id, "rt:trips"))]

    async def realtime_blob(self, feed_id: str, kind: str) -> bytes | None:
        value = await self._call("get", _feed(feed_id, f"rt:{kind}"))
        return None if value is None else bytes(value)

    async def hold_lease(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew a lease (``tg:lease:<name>``); True while this owner holds it."""
        key = f"tg:lease:{name}"
        if await self._call("set", key, owner, nx=True, px=ttl_ms):
            return True
        holder = await self._call("get", key)
        if holder is not None and holder.decode() == owner:
            await self._call("pexpire", key, ttl_ms)
            return True
        return False

    # --- API keys --------------------------------------------------------------------------
    async def put_key(self, key_id: str, record: dict[str, str]) -> None:
        await self._call("hset", key_record_key(key_id), mapping=record)
        await self._call("sadd", "tg:keys", key_id)

    async def key(self, key_id: str) -> dict[str, str] | None:
        raw = await self._call("hgetall", key_record_key(key_id))
        if not raw:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def key_ids(self) -> list[str]:
        return sorted(k.decode() for k in await self._call("smembers", "tg:keys"))

    async def update_key(self, key_id: str, fields: dict[str, str]) -> bool:
        if not await self._call("exists", key_record_key(key_id)):
            return False
        await self._call("hset", key_record_key(key_id), mapping=fields)
        return True

    async def key_counters(self, key_id: str) -> dict[str, int]:
        """Every counter key of one API key → its PTTL in ms (-1: none; for ops and tests)."""
        names = [k async for k in self._scan(key_record_key(key_id) + ":*")]
        return {n.decode(): int(await self._call("pttl", n)) for n in names}

    def sibling(self, timeout: float) -> Store:
        """A second connection pool to the same store for calls that must fail fast (the
        limiter): short socket timeouts and no retries, since its caller has a fallback and a
        circuit breaker. Connecting is lazy; close it with ``close()``."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                   "retry": Retry(NoBackoff(), 0)}
        if self.cluster:
            client: Any = RedisCluster.from_url(self.url, **options)
        else:
            client = aioredis.Redis.from_url(self.url, **options)
        return Store(client, self.url, self.cluster)

    # --- tiers -----------------------------------------------------------------------------
    async def tiers(self) -> dict[str, dict[str, Any]]:
        raw = await self._call("hgetall", TIERS_KEY)
        return {k.decode(): dict(orjson.loads(v)) for k, v in raw.items()}

    async def put_tier(self, name: str, data: dict[str, Any]) -> None:
        await self._call("hset", TIERS_KEY, name, orjson.dumps(data))

    # --- hackathon events ------------------------------------------------------------------
    async def put_hackathon(self, code: str, fields: dict[str, str]) -> bool:
        """Create an event; False (and nothing written) when the code is taken."""
        if not await self._call("hsetnx", hackathon_key(code), "code", code):
            return False
        await self._call("hset", hackathon_key(code), mapping=fields)
        await self._call("sadd", HACKATHONS_KEY, code)
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
