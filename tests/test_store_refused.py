"""A store that refuses a write is reported as what it is: ``store_refused`` with the store's
own message (507 when it is out of room or the value is too large for it, 500 otherwise), not
as ``store_unavailable``, which stays for a store that does not answer. On the suite's real
servers, made to refuse: ``maxmemory`` tiny, ``proto-max-bulk-len`` small, a key of the wrong
type. Each test puts the server's configuration back, whatever happens: the servers are the
session's, shared with the other tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gwprocs import free_port
from redis.asyncio.cluster import RedisCluster
from test_keys_operator import bearer, make_client

from gateway.errors import StoreRefused, StoreUnavailable
from gateway.store.connection import StoreConnection
from gateway.store.store import Store


@contextlib.asynccontextmanager
async def configured(store: Store, **settings: str) -> AsyncIterator[None]:
    """``CONFIG SET`` on every server of the store (each node of a Cluster) while within;
    the values before, after."""
    nodes = {"target_nodes": RedisCluster.ALL_NODES} if store.cluster else {}
    one = {"target_nodes": RedisCluster.DEFAULT_NODE} if store.cluster else {}
    before = {name: (await store.client.config_get(name, **one))[name] for name in settings}
    try:
        for name, value in settings.items():
            await store.client.config_set(name, value, **nodes)
        yield
    finally:
        for name, value in before.items():
            await store.client.config_set(name, value, **nodes)


def full(store: Store) -> contextlib.AbstractAsyncContextManager[None]:
    """``maxmemory`` 1 byte and no eviction: every write that allocates is refused with
    ``OOM command not allowed when used memory > 'maxmemory'``."""
    return configured(store, **{"maxmemory-policy": "noeviction", "maxmemory": "1"})


async def test_out_of_memory_is_refused_507_with_the_stores_message(store: Store) -> None:
    with pytest.raises(StoreRefused) as info:
        async with full(store):
            await store.put_feed_config("f", {"id": "f", "static": "x.zip"})
    exc = info.value
    assert isinstance(exc, StoreUnavailable)  # callers that degrade on a store outage still do
    assert (exc.status, exc.code, exc.full) == (507, "store_refused", True)
    assert exc.message.startswith("the store refused HSET: OOM command not allowed")
    assert "maxmemory" in exc.message
    assert exc.body()["error"]["code"] == "store_refused"
    assert await store.feed_config("f") is None


async def test_adding_a_feed_to_a_full_store_answers_507(
        store: Store, aiohttp_client: Any, tmp_path: Path) -> None:
    """The operator's key was verified a moment before (a full store also refuses the
    limiter's counting, and the access guard then serves recently verified keys in process):
    the write the request makes is refused, and the answer says so."""
    client, operator, _ = await make_client(store, aiohttp_client, allow_private_urls=True,
                                            versions_dir=tmp_path / "versions")
    assert (await client.get("/v1/feeds", headers=bearer(operator))).status == 200
    async with full(store):
        resp = await client.post("/v1/feeds",
                                 json={"id": "f", "static": str(tmp_path / "x.zip")},
                                 headers=bearer(operator))
        body = await resp.json()
    assert resp.status == 507, body
    assert body["error"]["code"] == "store_refused"
    assert "OOM" in body["error"]["message"]


async def test_a_value_over_proto_max_bulk_len_is_refused_507(store: Store) -> None:
    """The server closes the connection while the value is still being written (the client
    sees a broken pipe, never the error reply); the store still answers, so it is the refusal
    it was, with the size that caused it."""
    with pytest.raises(StoreRefused) as info:
        async with configured(store, **{"proto-max-bulk-len": str(1024 * 1024)}):  # smallest
            await store._call("set", "tg:test:big", b"x" * (4 * 1024 * 1024))
    exc = info.value
    assert (exc.status, exc.full) == (507, True)
    assert exc.message.startswith("the store refused SET")
    assert str(4 * 1024 * 1024) in exc.message and "proto-max-bulk-len" in exc.message
    assert await store.client.exists("tg:test:big") == 0
    await store._call("set", "tg:test:small", b"x" * 1000)  # the connection pool recovered


async def test_a_value_over_the_strings_limit_is_refused_507(store: Store) -> None:
    """A reply the client does read: growing a string past ``proto-max-bulk-len``."""
    with pytest.raises(StoreRefused) as info:
        await store._call("setrange", "tg:test:grown", 512 * 1024 * 1024, b"x")
    assert (info.value.status, info.value.full) == (507, True)
    assert "string exceeds maximum allowed size" in info.value.message


async def test_other_refusals_are_500(store: Store) -> None:
    await store._call("set", "tg:test:string", "1")
    with pytest.raises(StoreRefused) as info:
        await store._call("lpush", "tg:test:string", "x")
    assert (info.value.status, info.value.code, info.value.full) == (500, "store_refused", False)
    assert info.value.message.startswith("the store refused LPUSH: WRONGTYPE")


async def test_a_store_that_does_not_answer_stays_unavailable() -> None:
    with pytest.raises(StoreUnavailable) as info:
        await StoreConnection.connect(f"redis://127.0.0.1:{free_port()}/0")
    assert type(info.value) is StoreUnavailable
    assert (info.value.status, info.value.code) == (503, "store_unavailable")
