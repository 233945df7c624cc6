"""The connection to the store: standalone or Cluster (from ``INFO cluster``), and the one
place where a client error becomes ``StoreUnavailable``. The record families
(``gateway.store.*_records``, ``leases``, ``pubsub``) build on it; ``gateway.store.store.Store``
joins them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Self

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable


class StoreConnection:
    """Async access to the store. Methods raise StoreUnavailable when the store cannot answer."""

    def __init__(self, client: Any, url: str, cluster: bool = False) -> None:
        self.client = client
        self.url = url
        self.cluster = cluster

    @classmethod
    async def connect(cls, url: str) -> Self:
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

    async def _scan(self, pattern: str) -> AsyncIterator[bytes]:
        try:
            async for key in self.client.scan_iter(match=pattern, count=500):
                yield key
        except RedisError as exc:
            raise StoreUnavailable(f"store error: {exc}") from exc

    async def ping(self) -> bool:
        return bool(await self._call("ping"))

    def sibling(self, timeout: float) -> Self:
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
        return type(self)(client, self.url, self.cluster)
