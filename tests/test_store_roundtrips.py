"""A departures request costs at most two store round trips (counted by the server itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from cluster import commands_sent
from conftest import GTFS, Gateway
from redis.asyncio.cluster import RedisCluster

from gateway.access.key_issuing import create_key
from gateway.store.names import key_record_key


async def _settle(gw: Gateway) -> None:
    """Let the background catalog follower finish reacting to the feed's publish event and
    open its pool connections, so that what is counted is the request alone. On a cluster the
    limiter has a connection per node, opened on first use: a request with a key on every
    primary opens them all."""
    await asyncio.sleep(0.5)
    keys = [gw.key]
    if gw.store.cluster:
        client, primaries = gw.store.client, set()
        for _ in range(100):
            key, record = await create_key(gw.store, gw.clock, kind="developer",
                                           email="warm@example.org", tier="unlimited")
            node = client.get_node_from_key(key_record_key(record.key_id)).name
            if node not in primaries:
                primaries.add(node)
                keys.append(key)
            if len(primaries) == len(client.get_primaries()):
                break
    for key in keys:
        status, _ = await gw.get("/v1/feeds/caltrain/stops/palo_alto/departures", key=key)
        assert status == 200


async def _commands(gw: Gateway) -> dict[str, int]:
    """Commands run by the store so far, by name (summed over the primaries of a cluster)."""
    if not gw.store.cluster:
        stats: dict[str, Any] = await gw.store.client.info("commandstats")
        return {name: int(v["calls"]) for name, v in stats.items()}
    per_node: dict[str, Any] = await gw.store.client.info(
        "commandstats", target_nodes=RedisCluster.PRIMARIES)
    total: dict[str, int] = {}
    for stats in per_node.values():
        for name, v in stats.items():
            total[name] = total.get(name, 0) + int(v["calls"])
    return total


def _spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    spent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    spent.pop("cmdstat_info", None)  # the measurement itself
    return {k: v for k, v in spent.items() if v}


async def _round_trips(gw: Gateway, action: Callable[[], Awaitable[None]]) -> dict[str, int]:
    """Commands that reached the store from clients while ``action`` ran, as the server itself
    reports them (MONITOR, on every primary of a cluster). Unlike INFO commandstats this does
    not count the commands a Lua script runs inside the store: the auth + rate-limit script is
    one round trip however many keys it reads and writes (issue 4)."""
    sent, _ = await commands_sent(gw.store, action)
    spent: dict[str, int] = {}
    for name in sent:
        spent[name.lower()] = spent.get(name.lower(), 0) + 1
    return spent


async def test_departures_request_needs_at_most_two_store_commands(gateway: Gateway) -> None:
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip")
    key, _ = await create_key(gateway.store, gateway.clock, kind="developer",
                              email="cold@example.org")
    path = "/v1/feeds/caltrain/stops/palo_alto/departures"
    await _settle(gateway)

    async def cold_request() -> None:  # key not yet verified by this process
        status, body = await gateway.get(path, key=key)
        assert status == 200 and body["departures"]

    cold = await _round_trips(gateway, cold_request)
    assert sum(cold.values()) <= 2, cold
    assert sum(cold.values()) >= 1, "a never-seen key must be checked against the store"

    async def warm_requests() -> None:
        for _ in range(5):
            status, _ = await gateway.get(path, key=key)
            assert status == 200

    warm = await _round_trips(gateway, warm_requests)
    assert sum(warm.values()) <= 2 * 5, warm


async def test_malformed_key_costs_no_store_command(gateway: Gateway) -> None:
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip")
    await _settle(gateway)
    typo = gateway.key[:10] + ("x" if gateway.key[10] != "x" else "y") + gateway.key[11:]
    before = await _commands(gateway)
    status, body = await gateway.get("/v1/feeds/caltrain", key=typo)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert _spent(before, await _commands(gateway)) == {}
