"""Realtime polling against a misbehaving feed server (a real aiohttp server on 127.0.0.1).

Every fault is met twice: by ``gateway.ingest.realtime_fetch.fetch_realtime`` alone (cut-off time,
memory, error code), and by ``gateway.ingest.pollers.Poller.poll_once`` inside a running
gateway over a real store, where the last good Caltrain capture must keep serving after the failure
and must be reported stale (and dropped from the boards) once it is older than 90 s.

Facts about the fixtures used here (read with protobuf and csv, not with the production code):
``rt/caltrain/trip-updates-2023-11-07.pb`` is a FULL_DATASET of 19 trip updates whose header
timestamp is 1699405534 (2023-11-07 17:05:34 PST); trip 126 has explicit updates at Palo Alto's
southbound platform 70172, so the Palo Alto board has realtime entries at that instant.

The gateway fixture's own PollerManager would also poll the configured URL (with the app's
default settings, i.e. refusing loopback addresses) and record its own errors; each test holds
the feed's ingest lease first, as another ingest replica would, so the only poller of the feed
is the one the test drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from conftest import GTFS, RT, Gateway, eventually
from google.transit import gtfs_realtime_pb2 as pb

from feeds.errors import FeedError
from gateway.access.key_issuing import create_key
from gateway.http.appkeys import CATALOG
from gateway.ingest.pollers import MAX_BACKOFF_S, Poller
from gateway.ingest.realtime_feed import RealtimeFeed
from gateway.ingest.realtime_fetch import fetch_realtime
from gateway.settings import Settings

CAPTURE = (RT / "caltrain" / "trip-updates-2023-11-07.pb").read_bytes()
HEADER_TS = 1699405534  # the capture's header timestamp (checked in test_capture_facts)
PA = "/v1/feeds/caltrain/stops/palo_alto/departures"
FEED = "/v1/feeds/caltrain"
ETAG = '"caltrain-tu-1"'
TIMEOUT_S = 1.5  # > the drip interval, so only a *total* timeout can cut a drip off
MARGIN_S = 0.75
MAX_BYTES = 1 << 20
MiB = 1 << 20
HUGE_BYTES = 200 * MiB
RSS_LIMIT = 50 * MiB
POLL_SECONDS = 15.0
STALE_AFTER_S = 90
HTML = (b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title>"
        b"</head><body><h1>Service Temporarily Unavailable</h1>"
        b"<p>The feed is down for maintenance.</p></body></html>\n")

T = TypeVar("T")


def test_capture_facts() -> None:
    """The constants above, from the bytes (so the other tests rest on checked facts)."""
    message = pb.FeedMessage()
    message.ParseFromString(CAPTURE)
    assert message.header.timestamp == HEADER_TS
    assert message.header.incrementality == pb.FeedHeader.FULL_DATASET
    assert len(message.entity) == 19
    trip = {e.trip_update.trip.trip_id: e.trip_update for e in message.entity}["126"]
    assert "70172" in {u.stop_id for u in trip.stop_time_update}


# --- a gzip bomb -----------------------------------------------------------------------------

BOMB_MIB = 1100  # inflates to 1,100 MiB (> 1 GB)


def _gzip_bomb() -> bytes:
    """A valid gzip member of BOMB_MIB MiB of zeros, about 1.1 MB on the wire.

    Deflate cannot do better than ~1:1032, so "a few KB for > 1 GB" needs nesting; a single
    member of ~1 MB is the honest bomb. Built with zlib.compressobj streaming zeros, with full
    flushes so that every MiB after the first compresses to the same block: that block is
    repeated instead of compressing 1.1 GB, and the trailer (CRC-32 and size of the whole
    output) is computed for the real content. (Checked once by inflating it whole: 1,153,433,600
    bytes, CRC valid.)"""
    zeros = bytes(MiB)
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert block == c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()[:-8]  # the final empty block, without the trailer for 3 MiB
    crc = 0
    for _ in range(BOMB_MIB):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, (BOMB_MIB * MiB) & 0xFFFFFFFF)
    return head + block * (BOMB_MIB - 1) + tail + trailer


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = _gzip_bomb()
    assert len(data) < 2 * MiB
    # The start really is gzip of zeros, and the trailer claims the full size.
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert d.decompress(data, 8 * MiB) == bytes(8 * MiB)
    assert struct.unpack("<I", data[-4:])[0] == (BOMB_MIB * MiB) & 0xFFFFFFFF
    return data


# --- memory -----------------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssWatch:
    """Peak growth of this process's memory while the block runs: resource.getrusage's
    high-water mark, and (because an earlier test may already have set that mark higher) the
    current RSS sampled every 2 ms from /proc."""

    def __enter__(self) -> RssWatch:
        self.max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.before = _rss()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.max_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def growth(self) -> int:
        return max(self.peak - self.before, self.max_after - self.max_before)


# --- the misbehaving server -------------------------------------------------------------------

@dataclass
class FaultServer:
    url: str
    release: asyncio.Event
    mode: list[str]  # the behaviour of /feed, switched by the tests
    hits: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)

    def feed_url(self) -> str:
        return f"{self.url}/feed"


@pytest.fixture
async def fault_server(aiohttp_server: Any, bomb: bytes) -> AsyncIterator[FaultServer]:
    release = asyncio.Event()
    server_state = FaultServer("", release, ["good"])
    chunk = b"\0" * (64 * 1024)

    async def good(request: web.Request) -> web.StreamResponse:
        return web.Response(body=CAPTURE, content_type="application/x-protobuf")

    async def hang(request: web.Request) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 60)
        return web.Response(body=CAPTURE, content_type="application/x-protobuf")

    async def drip(request: web.Request) -> web.StreamResponse:
        """The capture, one byte a second (headers go out at once)."""
        resp = web.StreamResponse(headers={"Content-Type": "application/x-protobuf"})
        resp.content_length = len(CAPTURE)
        await resp.prepare(request)
        try:
            for i in range(len(CAPTURE)):
                await resp.write(CAPTURE[i:i + 1])
                server_state.sent["drip"] = i + 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), 1.0)
                if release.is_set():
                    break
        except ConnectionError:
            pass
        return resp

    async def huge(request: web.Request) -> web.StreamResponse:
        """200 MiB streamed from an async generator: one 64 KiB buffer, never 200 MiB."""
        server_state.sent["huge"] = 0

        async def body() -> AsyncIterator[bytes]:
            for _ in range(HUGE_BYTES // len(chunk)):
                server_state.sent["huge"] += len(chunk)
                yield chunk

        return web.Response(body=body(), content_type="application/x-protobuf")

    async def gzip_bomb(request: web.Request) -> web.StreamResponse:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "application/x-protobuf"})

    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(body=HTML, content_type="text/html")

    async def error(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="upstream exploded")

    async def etag(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == ETAG:
            server_state.sent["not_modified"] = server_state.sent.get("not_modified", 0) + 1
            return web.Response(status=304, headers={"ETag": ETAG})
        return web.Response(body=CAPTURE, headers={"ETag": ETAG},
                            content_type="application/x-protobuf")

    handlers: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
        "good": good, "hang": hang, "drip": drip, "huge": huge, "bomb": gzip_bomb,
        "html": html, "error": error, "etag": etag,
    }

    async def feed(request: web.Request) -> web.StreamResponse:
        server_state.hits.append((request.path, dict(request.headers)))
        return await handlers[server_state.mode[0]](request)

    async def fixed(request: web.Request) -> web.StreamResponse:
        server_state.hits.append((request.path, dict(request.headers)))
        return await handlers[request.match_info["mode"]](request)

    app = web.Application()
    app.router.add_get("/feed", feed)
    app.router.add_get("/fault/{mode}", fixed)
    server = await aiohttp_server(app)
    server_state.url = str(server.make_url("")).rstrip("/")
    yield server_state
    release.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def fetch(session: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
    return await fetch_realtime(session, url, max_bytes=MAX_BYTES, timeout_s=TIMEOUT_S,
                                allow_private=True, **kw)


async def expect_error(code: str, coro: Awaitable[T]) -> float:
    """Await, expect a FeedError with ``code``; return the seconds it took."""
    started = time.monotonic()
    with pytest.raises(FeedError) as caught:
        await coro
    assert caught.value.code == code, caught.value.message
    return time.monotonic() - started


# --- fetch_realtime alone ---------------------------------------------------------------------

async def test_fetch_good_body(fault_server: FaultServer,
                               session: aiohttp.ClientSession) -> None:
    got = await fetch(session, f"{fault_server.url}/fault/good")
    assert (got.status, got.body, got.not_modified) == (200, CAPTURE, False)


async def test_fetch_hang_is_cut_off_at_the_timeout(fault_server: FaultServer,
                                                    session: aiohttp.ClientSession) -> None:
    took = await expect_error("fetch_timeout", fetch(session, f"{fault_server.url}/fault/hang"))
    assert TIMEOUT_S - 0.1 <= took <= TIMEOUT_S + MARGIN_S, took


async def test_fetch_drip_is_cut_off_at_the_total_timeout(
        fault_server: FaultServer, session: aiohttp.ClientSession) -> None:
    took = await expect_error("fetch_timeout", fetch(session, f"{fault_server.url}/fault/drip"))
    assert TIMEOUT_S - 0.1 <= took <= TIMEOUT_S + MARGIN_S, took
    # The server really was sending all along (a byte a second), so no read ever idled as
    # long as the timeout: only a total deadline stops this.
    assert fault_server.sent["drip"] >= 2


async def test_fetch_200_mb_body_is_refused_with_bounded_memory(
        fault_server: FaultServer, session: aiohttp.ClientSession) -> None:
    with RssWatch() as mem:
        took = await expect_error("body_too_large",
                                  fetch(session, f"{fault_server.url}/fault/huge"))
    assert took < 5.0, took
    assert mem.growth < RSS_LIMIT, f"memory grew by {mem.growth / MiB:.1f} MiB"
    await asyncio.sleep(0.2)
    # The client hung up rather than draining the rest.
    assert fault_server.sent["huge"] < HUGE_BYTES // 2, fault_server.sent["huge"]


async def test_fetch_gzip_bomb_is_refused_quickly_with_bounded_memory(
        fault_server: FaultServer, session: aiohttp.ClientSession) -> None:
    with RssWatch() as mem:
        took = await expect_error("body_too_large",
                                  fetch(session, f"{fault_server.url}/fault/bomb"))
    assert took < 2.0, took
    assert mem.growth < RSS_LIMIT, f"memory grew by {mem.growth / MiB:.1f} MiB"


async def test_fetch_accepts_gzip_under_the_cap(aiohttp_server: Any,
                                                session: aiohttp.ClientSession) -> None:
    """The cap is on the decompressed body, and a normal gzip body still decodes."""
    async def gz(request: web.Request) -> web.StreamResponse:
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return web.Response(body=c.compress(CAPTURE) + c.flush(),
                            headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/gz", gz)
    server = await aiohttp_server(app)
    got = await fetch(session, str(server.make_url("/gz")))
    assert got.body == CAPTURE
    small = await expect_error("body_too_large", fetch_realtime(
        session, str(server.make_url("/gz")), max_bytes=len(CAPTURE) - 1, timeout_s=TIMEOUT_S,
        allow_private=True))
    assert small < TIMEOUT_S


async def test_fetch_html_is_fetched_but_is_not_a_feed_message(
        fault_server: FaultServer, session: aiohttp.ClientSession, gateway: Gateway) -> None:
    got = await fetch(session, f"{fault_server.url}/fault/html")
    assert (got.status, got.body) == (200, HTML)
    rt = RealtimeFeed(gateway.store, "caltrain", gateway.clock)
    await expect_error("not_a_feed_message", rt.apply("trip_updates", HTML, None))


async def test_fetch_conditional_get(fault_server: FaultServer,
                                     session: aiohttp.ClientSession) -> None:
    url = f"{fault_server.url}/fault/etag"
    first = await fetch(session, url)
    assert (first.status, first.body, first.etag) == (200, CAPTURE, ETAG)
    assert "If-None-Match" not in fault_server.hits[-1][1]
    second = await fetch(session, url, etag=first.etag)
    assert second.not_modified and second.status == 304 and second.body is None
    assert fault_server.hits[-1][1].get("If-None-Match") == ETAG
    assert fault_server.sent["not_modified"] == 1


async def test_fetch_http_500(fault_server: FaultServer,
                              session: aiohttp.ClientSession) -> None:
    took = await expect_error("fetch_failed", fetch(session, f"{fault_server.url}/fault/error"))
    assert took < TIMEOUT_S


async def test_fetch_refuses_loopback_unless_allowed(fault_server: FaultServer,
                                                     session: aiohttp.ClientSession) -> None:
    before = len(fault_server.hits)
    await expect_error("forbidden_address", fetch_realtime(
        session, f"{fault_server.url}/fault/good", max_bytes=MAX_BYTES, timeout_s=TIMEOUT_S))
    assert len(fault_server.hits) == before  # refused before connecting


# --- the Poller inside a gateway --------------------------------------------------------------

@dataclass
class Live:
    gw: Gateway
    server: FaultServer
    rt: RealtimeFeed
    poller: Poller
    key: str

    async def get(self, path: str, **params: Any) -> Any:
        status, body = await self.gw.get(path, key=self.key, **params)
        assert status == 200, body
        return body


@pytest.fixture
async def live(gateway: Gateway, fault_server: FaultServer,
               session: aiohttp.ClientSession) -> Live:
    # Another "ingest replica" (this test) holds the feed: the app's own pollers stay off it.
    assert await gateway.store.hold_lease("feed:caltrain", "tests", 600_000)
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip",
                           trip_updates=fault_server.feed_url())
    gateway.clock.instant = float(HEADER_TS)
    key, _ = await create_key(gateway.store, gateway.clock, kind="developer",
                              email="rt-faults@example.org", tier="unlimited")
    rt = RealtimeFeed(gateway.store, "caltrain", gateway.clock)
    settings = Settings(allow_private_urls=True, realtime_timeout_s=TIMEOUT_S,
                        realtime_max_bytes=MAX_BYTES)
    poller = Poller(rt, gateway.app[CATALOG], "trip_updates", fault_server.feed_url(), {},
                    POLL_SECONDS, settings, session)
    return Live(gateway, fault_server, rt, poller, key)


def realtime_entries(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in board["departures"] if d["realtime"]]


async def serving_good_data(live: Live) -> dict[str, Any]:
    """The board at Palo Alto shows the capture: fresh realtime, trip 126 expected 17:38:29."""
    async def check() -> dict[str, Any]:
        board = await live.get(PA)
        assert board["realtime_stale"] is False, board
        rt = realtime_entries(board)
        assert rt, board
        by_trip = {d["trip_id"]: d for d in rt}
        # 126 at 70172: time 1699407509 = 17:38:29 PST, scheduled 17:38:00
        assert by_trip["126"]["expected"] == "2023-11-07T17:38:29-08:00", by_trip["126"]
        assert by_trip["126"]["delay_s"] == 29
        return board
    return await eventually(check)


async def poll_good(live: Live) -> dict[str, Any]:
    live.server.mode[0] = "good"
    assert await live.poller.poll_once() == POLL_SECONDS
    assert live.poller.failures == 0
    return await serving_good_data(live)


FAULTS = [
    # mode, expected code, seconds the poll may take at most
    ("hang", "fetch_timeout", TIMEOUT_S + MARGIN_S),
    ("drip", "fetch_timeout", TIMEOUT_S + MARGIN_S),
    ("huge", "body_too_large", 5.0),
    ("bomb", "body_too_large", 2.0),
    ("html", "not_a_feed_message", 2.0),
    ("error", "fetch_failed", 2.0),
]


@pytest.mark.parametrize(("mode", "code", "max_seconds"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_poll_fault_keeps_last_good_data_then_reports_it_stale(
        live: Live, mode: str, code: str, max_seconds: float) -> None:
    good_board = await poll_good(live)

    live.server.mode[0] = mode
    started = time.monotonic()
    with RssWatch() as mem:
        delay = await live.poller.poll_once()
    took = time.monotonic() - started
    assert took <= max_seconds, took
    if mode in ("hang", "drip"):
        assert took >= TIMEOUT_S - 0.1, took
    assert mem.growth < RSS_LIMIT, f"memory grew by {mem.growth / MiB:.1f} MiB"
    assert live.poller.failures == 1
    assert POLL_SECONDS <= delay <= 2 * POLL_SECONDS  # first backoff step

    # The last good data keeps serving, and health tells what went wrong.
    async def failed_but_serving() -> None:
        health = (await live.get(FEED))["realtime"]["trip_updates"]
        assert health["last_error"] is not None, health
        assert health["last_error"]["code"] == code, health
        assert health["stale"] is False and health["age_s"] == 0, health
        assert health["header_timestamp"] == HEADER_TS, health
        assert health["entities"] == 19, health
        board = await live.get(PA)
        assert board["realtime_stale"] is False
        assert board["departures"] == good_board["departures"]
    await eventually(failed_but_serving)

    # 91 s later the data is stale: the board falls back to the schedule and says so.
    live.gw.clock.advance(STALE_AFTER_S + 1)
    board = await live.get(PA)
    assert board["realtime_stale"] is True
    assert board["realtime_age_s"] == STALE_AFTER_S + 1
    assert board["departures"], board
    for d in board["departures"]:
        assert (d["realtime"], d["expected"], d["delay_s"], d["status"]) == (
            False, None, None, "scheduled"), d
    health = (await live.get(FEED))["realtime"]["trip_updates"]
    assert health["stale"] is True and health["age_s"] == STALE_AFTER_S + 1, health
    assert health["last_error"]["code"] == code


async def test_poll_not_modified_keeps_serving(live: Live) -> None:
    live.server.mode[0] = "etag"
    assert await live.poller.poll_once() == POLL_SECONDS
    assert "If-None-Match" not in live.server.hits[-1][1]
    good_board = await serving_good_data(live)
    live.gw.clock.advance(20)

    assert await live.poller.poll_once() == POLL_SECONDS
    assert live.server.hits[-1][1].get("If-None-Match") == ETAG
    assert live.server.sent["not_modified"] == 1
    assert live.poller.failures == 0

    async def not_modified() -> None:
        health = (await live.get(FEED))["realtime"]["trip_updates"]
        assert health["http_status"] == 304, health
        assert health["last_error"] is None, health
        assert health["age_s"] == 20 and health["stale"] is False, health
        board = await live.get(PA)
        assert board["departures"] == good_board["departures"]
    await eventually(not_modified)

    # A third poll asks conditionally again: the validator is kept, not consumed.
    assert await live.poller.poll_once() == POLL_SECONDS
    assert live.server.sent["not_modified"] == 2


async def test_refused_body_does_not_store_its_etag(live: Live, aiohttp_server: Any) -> None:
    """A 200 whose body is refused must be fetched again whole, not answered 304 forever."""
    await poll_good(live)
    seen: list[str | None] = []

    async def bad_with_etag(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("If-None-Match"))
        return web.Response(body=HTML, headers={"ETag": '"html-1"'})

    app = web.Application()
    app.router.add_get("/tu", bad_with_etag)
    server = await aiohttp_server(app)
    live.poller.url = str(server.make_url("/tu"))
    await live.poller.poll_once()
    await live.poller.poll_once()
    assert live.poller.failures == 2
    assert seen == [None, None]


async def test_backoff_grows_exponentially_and_is_capped(live: Live) -> None:
    live.server.mode[0] = "error"
    previous_ceiling = POLL_SECONDS
    for failures in range(1, 8):
        delay = await live.poller.poll_once()
        assert live.poller.failures == failures
        ceiling = min(MAX_BACKOFF_S, POLL_SECONDS * 2 ** failures)
        samples = [delay] + [live.poller.backoff() for _ in range(400)]
        assert all(POLL_SECONDS <= s <= ceiling for s in samples), (failures, min(samples),
                                                                     max(samples))
        assert all(s <= 300.0 for s in samples)
        if ceiling > previous_ceiling:
            # full jitter reaches into the new upper half: the wait really grows
            assert max(samples) > previous_ceiling, (failures, max(samples))
        previous_ceiling = ceiling
    assert previous_ceiling == 300.0
    # Recovery resets the count: the next wait is the poll interval again.
    await poll_good(live)
    assert live.poller.failures == 0
    assert all(POLL_SECONDS <= live.poller.backoff() <= 2 * POLL_SECONDS for _ in range(50))


async def test_poller_that_never_succeeded_fails_without_hiding_data(live: Live) -> None:
    """Before any success the board is scheduled-only and health already shows the error."""
    live.server.mode[0] = "error"
    await live.poller.poll_once()

    async def check() -> None:
        health = (await live.get(FEED))["realtime"]["trip_updates"]
        assert health["configured"] is True
        assert health["last_error"]["code"] == "fetch_failed", health
        assert health["header_timestamp"] is None and health["age_s"] is None, health
        board = await live.get(PA)
        assert board["departures"] and not realtime_entries(board)
    await eventually(check)


# --- bugs -------------------------------------------------------------------------------------

async def test_health_http_status_follows_a_failed_fetch(live: Live) -> None:
    await poll_good(live)
    live.server.mode[0] = "error"
    await live.poller.poll_once()

    async def check() -> None:
        health = (await live.get(FEED))["realtime"]["trip_updates"]
        assert health["last_error"]["code"] == "fetch_failed", health
        assert health["http_status"] == 500, health
    await eventually(check)


async def test_failure_in_a_fresh_process_keeps_the_stored_realtime(live: Live) -> None:
    await poll_good(live)
    # "Restart": a new RealtimeFeed and Poller over the same store, the feed server now down.
    rt2 = RealtimeFeed(live.gw.store, "caltrain", live.gw.clock)
    poller2 = Poller(rt2, live.gw.app[CATALOG], "trip_updates", live.server.feed_url(), {},
                     POLL_SECONDS, live.poller.settings, live.poller.session)
    live.server.mode[0] = "error"
    await poller2.poll_once()
    meta = (await live.gw.store.realtime_meta("caltrain"))["trip_updates"]
    assert meta["last_error"]["code"] == "fetch_failed"
    assert meta.get("timestamp") == HEADER_TS, meta
    await serving_good_data(live)


def _truncated_gzip(entities: int) -> tuple[bytes, bytes]:
    """A gzip stream of the capture cut off (no final block, no trailer) just after its first
    ``entities`` entities: what a feed server writing its file while serving it, or a proxy
    that drops the connection after a sync point, delivers. Returns (stream, the prefix)."""
    message = pb.FeedMessage()
    message.ParseFromString(CAPTURE)
    del message.entity[entities:]
    prefix = message.SerializeToString()
    assert CAPTURE.startswith(prefix) and len(prefix) < len(CAPTURE)
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(prefix) + c.flush(zlib.Z_SYNC_FLUSH), prefix


async def test_truncated_gzip_body_is_refused(live: Live, aiohttp_server: Any) -> None:
    stream, prefix = _truncated_gzip(10)
    assert zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(stream) == prefix

    async def cut(request: web.Request) -> web.StreamResponse:
        return web.Response(body=stream, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/cut", cut)
    server = await aiohttp_server(app)
    await poll_good(live)
    live.poller.url = str(server.make_url("/cut"))
    await live.poller.poll_once()
    meta = (await live.gw.store.realtime_meta("caltrain"))["trip_updates"]
    assert meta["entities"] == 19, meta  # not replaced by the 10 entities of the cut body
    assert live.poller.failures == 1
    assert meta["last_error"]["code"] == "fetch_failed", meta
