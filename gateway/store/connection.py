"""The connection to the store: standalone or Cluster (from ``INFO cluster``), and the one
place where a client error becomes ``StoreUnavailable`` or ``StoreRefused``. The record
families (``gateway.store.*_records``, ``leases``, ``pubsub``) build on it;
``gateway.store.store.Store`` joins them.

What a client error means (``store_error``):

- no answer (refused or lost connection, timeout, a server still loading its data): the store
  is unavailable, 503 ``store_unavailable``; so are the error replies of a store in transition
  (``READONLY`` after a failover, ``TRYAGAIN``, ``CLUSTERDOWN``, ``MASTERDOWN``, ``BUSY``,
  ``NOREPLICAS``), which a retry a moment later gets past;
- an error reply: the store refused the command, ``store_refused`` with its message; 507 when it
  is out of room (``OOM``, ``MISCONF``: it cannot persist) or the value is over what it stores
  (``proto-max-bulk-len``), 500 otherwise (``WRONGTYPE``, ``CROSSSLOT``, ``NOPERM``...).

A value over ``proto-max-bulk-len`` gets no reply the client can read: the server answers the
length it will not take with an error and closes the connection while the value is still being
written, and the client sees a broken pipe. So when a command that sent a large value
(``LARGE_VALUE_BYTES``) loses its connection and the store answers a PING right after, that is
reported as the refusal it was, not as an outage.

On a Cluster the client is redis-py's ``RedisCluster``: it routes each command to its slot's
primary and follows a failover (a replica promoted in a dead primary's place). The contract of
every caller: a multi-key command, script or pipeline stays inside one hash tag; keys of
several slots are read with ``mget_nonatomic`` (one pipeline: one round trip per node, in
parallel) or written one command each. Writes a failover must not lose (key records, tiers,
hackathon events) go through ``_call_acked``: on a cluster with replicas a replica has them
before they count as done, since replication is asynchronous and a promoted replica lacks
what it had not received yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Self

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.errors import StoreRefused, StoreUnavailable

log = logging.getLogger(__name__)

REPLICA_WAIT_MS = 1000  # how long an acknowledged write waits for a replica (WAIT)
LARGE_VALUE_BYTES = 1024 * 1024
"""The smallest ``proto-max-bulk-len`` a server accepts: a command that sent a value at least
this large and lost its connection may have been refused for its size."""
_TRANSIENT_REPLIES = ("READONLY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "BUSY", "LOADING",
                      "NOREPLICAS")
_FULL_REPLIES = ("OOM", "MISCONF")
_TOO_LARGE_TEXT = ("exceeds maximum allowed size", "invalid bulk length")


def store_error(exc: RedisError, command: str | None = None) -> StoreUnavailable:
    """The API error for a client error (see the module's docstring)."""
    if not isinstance(exc, ResponseError) or isinstance(
            exc, (ReadOnlyError, TryAgainError, ClusterDownError)):
        return StoreUnavailable(f"store error: {exc}")
    text = str(exc)
    code = getattr(exc, "status_code", None) or text.split(" ", 1)[0]
    if code in _TRANSIENT_REPLIES:
        return StoreUnavailable(f"store error: {exc}")
    reply = text if text.startswith(code) else f"{code} {text}"
    full = (isinstance(exc, OutOfMemoryError) or code in _FULL_REPLIES
            or any(t in text for t in _TOO_LARGE_TEXT))
    what = f"the store refused {command.upper()}" if command else "the store refused a command"
    return StoreRefused(f"{what}: {reply}", full=full)


def _largest_value(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """The size of the largest bytes or str among a command's arguments (mappings too)."""
    largest = 0
    for value in (*args, *kwargs.values()):
        values = value.values() if isinstance(value, Mapping) else (value,)
        for v in values:
            if isinstance(v, (bytes, bytearray, memoryview, str)):
                largest = max(largest, len(v))
    return largest


class StoreConnection:
    """Async access to the store. Methods raise StoreUnavailable when the store cannot answer,
    StoreRefused (a StoreUnavailable) when it answers with an error."""

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
            error = store_error(exc, "info")
            if isinstance(error, StoreRefused):
                raise error from exc
            raise StoreUnavailable(f"cannot reach the store at {url}: {exc}") from exc
        if cluster:
            await client.aclose()
            client = RedisCluster.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
            try:
                await client.initialize()  # its nodes, known from here on (``sibling``)
            except RedisError as exc:
                await client.aclose()
                raise StoreUnavailable(f"cannot reach the cluster at {url}: {exc}") from exc
        return cls(client, url, cluster)

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, method)(*args, **kwargs)
        except RedisError as exc:
            error = store_error(exc, method)
            if (isinstance(exc, RedisConnectionError) and not isinstance(error, StoreRefused)
                    and (size := _largest_value(args, kwargs)) >= LARGE_VALUE_BYTES
                    and await self._answers()):
                error = StoreRefused(
                    f"the store refused {method.upper()}: it closed the connection while a "
                    f"value of {size} bytes was being sent, and answers otherwise: values "
                    f"over its proto-max-bulk-len (512 MiB unless configured) end so ({exc})",
                    full=True)
            raise error from exc

    async def _call_acked(self, method: str, key: str, *args: Any, **kwargs: Any) -> Any:
        """``method`` on ``key`` (its first argument) as ``_call``; on a cluster with replicas
        it is done once a replica has it too (``WAIT`` on the same connection right after it:
        one pipeline to the key's node), so that a failover cannot lose it. A replica that
        does not answer within ``REPLICA_WAIT_MS`` is logged, not an error: the write stands
        on the primary. Whether the key's primary has a replica is the client's view of the
        cluster (as of connecting, or its last refresh after a redirection or an error)."""
        if not self.cluster or self.client.get_node_from_key(key, replica=True) is None:
            return await self._call(method, key, *args, **kwargs)
        try:
            pipe = self.client.pipeline(transaction=False)
            getattr(pipe, method)(key, *args, **kwargs)
            pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS,
                                 target_nodes=self.client.get_node_from_key(key))
            result, replicas = await pipe.execute()
        except RedisError as exc:
            raise store_error(exc, method) from exc
        if int(replicas) < 1:
            log.warning("no replica acknowledged %s %s within %d ms", method.upper(), key,
                        REPLICA_WAIT_MS)
        return result

    async def _answers(self) -> bool:
        """Whether the store answers a PING now (within a second)."""
        try:
            return bool(await asyncio.wait_for(self.client.ping(), timeout=1.0))
        except (RedisError, TimeoutError):
            return False

    async def _scan(self, pattern: str) -> AsyncIterator[bytes]:
        try:
            async for key in self.client.scan_iter(match=pattern, count=500):
                yield key
        except RedisError as exc:
            raise store_error(exc, "scan") from exc

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
        if self.cluster:  # every node known now is a way in, should the URL's node be gone
            nodes = [ClusterNode(n.host, n.port) for n in self.client.get_nodes()]
            client: Any = RedisCluster.from_url(self.url, startup_nodes=nodes, **options)
        else:
            client = aioredis.Redis.from_url(self.url, **options)
        return type(self)(client, self.url, self.cluster)
