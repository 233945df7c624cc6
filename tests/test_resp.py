"""The limiter's own RESP connection (``gateway.store.resp``) against real stores: pipelined replies
in order, error replies as values, AUTH and SELECT, the per-send deadline, a lost connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import STANDALONE
from redis.exceptions import ConnectionError as StoreConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as StoreTimeout

from gateway.store.embedded import EmbeddedValkey
from gateway.store.resp import Address, RespConnection, address_of, pack
from gateway.store.store import Store


def address(store: Store) -> Address:
    pool = store.client.connection_pool
    found = address_of(pool.connection_kwargs, tls=False)
    assert found is not None
    return found


@pytest.fixture
async def own_valkey(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedValkey, str]]:
    """A Valkey of this test's own (it is paused, reconfigured or stopped), and its socket."""
    server = EmbeddedValkey(tmp_path / "valkey")
    server.ensure_running()
    yield server, str(server.socket_path)
    server.stop()


# The limiter never uses its own connection on a Cluster (redis-py's cluster client routes
# each script call to its slot's node): standalone stores only.
@pytest.mark.parametrize("store_url", STANDALONE, indirect=True)
async def test_pipelined_sends_get_their_own_replies_in_order(store: Store) -> None:
    conn = await RespConnection.open(address(store), 1.0)
    got: list[Any] = []
    await store.client.delete("tg:test:resp")
    conn.send(pack("INCR", "tg:test:resp") + pack("INCR", "tg:test:resp"), 2, got.append)
    conn.send(pack("ECHO", "third"), 1, got.append)
    last = await conn.request(pack("INCR", "tg:test:resp") + pack("GET", "tg:test:resp"), 2)
    assert got == [[1, 2], [b"third"]]
    assert last == [3, b"3"]
    assert await store.client.get("tg:test:resp") == b"3"  # the same database as the store's
    await store.client.delete("tg:test:resp")
    conn.close()


# The limiter never uses its own connection on a Cluster (redis-py's cluster client routes
# each script call to its slot's node): standalone stores only.
@pytest.mark.parametrize("store_url", STANDALONE, indirect=True)
async def test_an_error_reply_is_a_value_and_the_next_replies_follow(store: Store) -> None:
    conn = await RespConnection.open(address(store), 1.0)
    replies = await conn.request(pack("EVALSHA", "0" * 40, 0) + pack("ECHO", "after"), 2)
    assert isinstance(replies[0], ResponseError) and str(replies[0]).startswith("NOSCRIPT")
    assert replies[1] == b"after"
    assert not conn.closed
    conn.close()


async def test_auth_and_select(own_valkey: tuple[EmbeddedValkey, str]) -> None:
    _, path = own_valkey
    admin = aioredis.Redis.from_url(f"unix://{path}")
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    conn = await RespConnection.open(Address(path=path, password="s3cret", db=3), 1.0)
    assert await conn.request(pack("SET", "k", "in db 3"), 1) == [b"OK"]
    conn.close()
    check = aioredis.Redis.from_url(f"unix://{path}?db=3", password="s3cret")
    assert await check.get("k") == b"in db 3"
    await check.aclose()
    with pytest.raises(StoreConnectionError, match="refused"):
        await RespConnection.open(Address(path=path, password="wrong"), 1.0)
    nopass = await RespConnection.open(Address(path=path), 1.0)
    (reply,) = await nopass.request(pack("PING"), 1)
    assert isinstance(reply, ResponseError) and "NOAUTH" in str(reply)
    nopass.close()


async def test_a_store_that_does_not_answer_in_time(own_valkey: tuple[EmbeddedValkey, str]
                                                    ) -> None:
    _, path = own_valkey
    conn = await RespConnection.open(Address(path=path), 0.2)
    admin = await RespConnection.open(Address(path=path), 5.0)
    assert await admin.request(pack("CLIENT", "PAUSE", 600, "ALL"), 1) == [b"OK"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    failed: list[Any] = []
    conn.send(pack("PING"), 1, failed.append)
    with pytest.raises(StoreTimeout):
        await conn.request(pack("ECHO", "x"), 1)
    assert loop.time() - started < 0.4
    assert conn.closed and len(failed) == 1 and isinstance(failed[0], StoreTimeout)
    admin.close()


async def test_a_lost_connection_fails_what_waits(own_valkey: tuple[EmbeddedValkey, str]
                                                  ) -> None:
    server, path = own_valkey
    conn = await RespConnection.open(Address(path=path), 5.0)
    waiting = asyncio.ensure_future(conn.request(pack("BLPOP", "nothing", "0"), 1))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(server.stop)
    with pytest.raises(StoreConnectionError):
        await waiting
    assert conn.closed
    failed: list[Any] = []
    conn.send(pack("PING"), 1, failed.append)  # a closed connection answers at once
    assert isinstance(failed[0], StoreConnectionError)
    with pytest.raises(StoreConnectionError):
        await RespConnection.open(Address(path=path), 0.5)


def test_address_of_redis_py_pools() -> None:
    for url, want in [
        ("unix:///run/v.sock?db=2", Address(path="/run/v.sock", db=2)),
        ("redis://u:p@10.0.0.1:6380/9", Address("10.0.0.1", 6380, "", "u", "p", 9)),
    ]:
        pool = aioredis.Redis.from_url(url).connection_pool
        assert address_of(pool.connection_kwargs, tls=False) == want
    assert address_of({"host": "h"}, tls=True) is None
