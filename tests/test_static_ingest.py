"""Static ingest: the edge-case feeds through the pipeline, refused and replaced versions through
the feed service and the API, whole-then-switch publishing, cross-process invalidation, and the
HTTP source (conditional GET, size and time limits, SSRF guard) against a local test server.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import io
import shutil
import struct
import time
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import EDGE_GTFS, GTFS, Gateway

from feeds.errors import FeedSourceError, StaticFeedRejected
from feeds.schedule.codec import MAGIC, decode_index
from feeds.static.pipeline import build_static
from gateway.clock import FixedClock, parse_instant
from gateway.errors import Unprocessable
from gateway.feed_config import FeedConfig
from gateway.ingest.feed_service import FeedService
from gateway.ingest.static_fetch import fetch_static
from gateway.replica.feeds import FeedCatalog
from gateway.settings import Settings
from gateway.store.names import EVENTS_CHANNEL
from gateway.store.store import Store

CALTRAIN = GTFS / "caltrain-2023.zip"
TRANSITFEED = EDGE_GTFS / "transitfeed"
NOT_A_ZIP = EDGE_GTFS / "not-a-zip.zip"
BOARD_TIME = "2023-11-07T17:05:00-08:00"


# --- every edge-case input through build_static ----------------------------------------------


@dataclass(frozen=True)
class Refused:
    """Expected problems: (code, file or None, substrings the problem's message must hold)."""

    problems: list[tuple[str, str | None, tuple[str, ...]]]


@dataclass(frozen=True)
class Accepted:
    counts: dict[str, int]
    agency: str
    service: tuple[str, str]  # first and last service date
    facts: dict[str, Any] = field(default_factory=dict)


EDGE_CASES: dict[str, Refused | Accepted] = {
    "not-a-zip.zip": Refused([("not_a_zip", None, ("zip",))]),
    "transitfeed/unknown_format.zip": Refused([("not_a_zip", None, ("zip",))]),
    "badgtfs-wrong-filenames.zip": Refused(
        [("missing_file", None, ("agency.txt", "stop_times.txt", "bad_agency.txt"))]),
    "hsl-broken-referential.zip": Refused([
        ("unknown_stop", "stop_times.txt", ("stop_id", "1130436")),
        ("unknown_route", "trips.txt", ("route_id", "-1001")),
    ]),
    "transitfeed/bad_date_format": Refused([
        ("bad_date", "calendar.txt", ("start_date", "2007.01.01")),
        ("bad_date", "calendar_dates.txt", ("2007-06-04",)),
    ]),
    "transitfeed/bad_utf8": Refused([("bad_encoding", "agency.txt", ("UTF-8",))]),
    "transitfeed/utf16": Refused([("bad_encoding", "agency.txt", ("UTF-16",))]),
    "transitfeed/contains_null": Refused([("contains_null", "stops.txt", ("NUL",))]),
    "transitfeed/duplicate_stop_sequence": Refused(
        [("duplicate_stop_sequence", "stop_times.txt", ("CITY1",))]),
    "transitfeed/empty_file": Refused([("empty_file", "agency.txt", ("empty",))]),
    "transitfeed/extra_row_cells": Refused([("malformed_csv", "routes.txt", ("line 4",))]),
    "transitfeed/missing_row_cells": Refused([("malformed_csv", "routes.txt", ("line 4",))]),
    # The fixture also has rows shorter than their header in routes/stops/trips (an error in
    # GTFS: every row has the header's field count), and the raw-file pass stops there; the
    # missing agency_name itself is shown by test_missing_column_once_rows_are_padded.
    "transitfeed/missing_column": Refused([
        ("malformed_csv", "routes.txt", ("header's 9",)),
        ("malformed_csv", "stops.txt", ("header's 7",)),
    ]),
    "transitfeed/missing_stop_times": Refused([("missing_file", None, ("stop_times.txt",))]),
    "transitfeed/undefined_stop": Refused([("unknown_stop", "stop_times.txt", ("NADAR",))]),
    "transitfeed/good_feed": Accepted(
        {"stops": 10, "routes": 5, "trips": 11, "stop_times": 28},
        "Autorité de passage de démonstration", ("2007-01-01", "2025-12-31"),
        {"station": "BEATTY_AIRPORT_STATION"}),
    "transitfeed/only_calendar_dates": Accepted(
        {"stops": 9, "routes": 5, "trips": 11, "stop_times": 28},
        "Demo Transit Authority", ("2007-06-04", "2007-06-05")),
    "transitfeed/utf8bom": Accepted(
        {"stops": 9, "routes": 5, "trips": 11, "stop_times": 28},
        "Demo Transit Authority", ("2007-01-01", "2010-12-31")),
    "transitfeed/bad_eol.zip": Accepted(
        {"stops": 9, "routes": 5, "trips": 11, "stop_times": 28},
        "Autorité de passage de démonstration", ("2007-01-01", "2010-12-31")),
}


def test_edge_table_covers_every_fixture() -> None:
    present = {p.name for p in EDGE_GTFS.iterdir() if p.name != "transitfeed"}
    present |= {f"transitfeed/{p.name}" for p in TRANSITFEED.iterdir()}
    assert present == set(EDGE_CASES)


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_feed_through_build_static(name: str) -> None:
    expected = EDGE_CASES[name]
    path = EDGE_GTFS / name
    if isinstance(expected, Refused):
        with pytest.raises(StaticFeedRejected) as info:
            build_static(path, "x", "v")
        exc = info.value
        assert exc.code == "static_feed_rejected"
        assert exc.problems, "a refusal must carry at least one coded problem"
        for code, file, words in expected.problems:
            matching = [i for i, p in enumerate(exc.problems) if p.code == code and p.file == file]
            assert matching, f"no {code} on {file}: {[(p.code, p.file) for p in exc.problems]}"
            i = matching[0]
            problem = exc.problems[i]
            for word in words:
                assert word in problem.message, (word, problem.message)
            assert problem.count >= 1
            if i < 5:  # the exception's message summarises the first five problems
                summary = f"{code}: {problem.message}" + (f" ({file})" if file else "")
                assert summary in exc.message
        return
    built = build_static(path, "x", "v")
    index = built.index
    counts = index.counts()
    assert {k: counts[k] for k in expected.counts} == expected.counts
    assert counts["departure_events"] > 0
    assert index.agency_name == expected.agency
    assert index.timezone == "America/Los_Angeles"
    first, last = index.service_range()
    assert (dt.date.fromordinal(first).isoformat(),
            dt.date.fromordinal(last).isoformat()) == expected.service
    # no byte-order mark, stray CR or form feed leaks into identifiers or names
    texts = [*index.stops.ids, *index.stops.names, *index.routes.ids, *index.trips.ids,
             *(n for n in index.routes.long_names if n)]
    assert not [t for t in texts if any(c in t for c in "\ufeff\r\x0c")]
    assert "FUR_CREEK_RES" in index.stops.index_of
    assert index.feed_id == "x" and index.version == "v"
    assert decode_index(built.blob).counts() == counts
    if "station" in expected.facts:
        station = index.stops.index_of[expected.facts["station"]]
        assert int(index.stops.location_type[station]) == 1
        assert index.stops.ids[int(index.stops.parent[index.stops.index_of["BEATTY_AIRPORT"]])] \
            == expected.facts["station"]


def _pad_rows(src: Path, dst: Path) -> None:
    """A copy of a feed directory whose short rows are padded to their header's length."""
    dst.mkdir()
    for f in src.iterdir():
        rows = list(csv.reader(io.StringIO(f.read_text("utf-8-sig"))))
        width = len(rows[0])
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(
            [r + [""] * (width - len(r)) for r in rows if r])
        (dst / f.name).write_text(out.getvalue(), "utf-8")


def test_missing_column_once_rows_are_padded(tmp_path: Path) -> None:
    padded = tmp_path / "missing_column"
    _pad_rows(TRANSITFEED / "missing_column", padded)
    with pytest.raises(StaticFeedRejected) as info:
        build_static(padded, "x", "v")
    problems = [(p.code, p.file) for p in info.value.problems]
    assert problems == [("missing_column", "agency.txt")]
    assert "agency_name" in info.value.problems[0].message


def test_padding_alone_does_not_refuse_a_good_feed(tmp_path: Path) -> None:
    """Control for the test above: the padding itself introduces no problem."""
    padded = tmp_path / "good"
    _pad_rows(TRANSITFEED / "good_feed", padded)
    assert build_static(padded, "x", "v").index.counts()["stops"] == 10


# --- helpers over the real store ------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


def _blob_key(feed_id: str, version: str) -> str:
    """The version's manifest: written after all its chunks, before the switch."""
    return f"tg:feed:{feed_id}:static:{version}"


async def _stored(client: Any, feed_id: str, version: str) -> bytes:
    """The version as stored: its chunks, in order, checked against its manifest."""
    manifest = orjson.loads(await client.get(_blob_key(feed_id, version)))
    blob = b"".join([await client.get(f"{_blob_key(feed_id, version)}:{n}")
                     for n in range(manifest["chunks"])])
    assert len(blob) == manifest["bytes"]
    assert hashlib.sha256(blob).hexdigest() == manifest["sha256"]
    return blob


def _version_key(feed_id: str) -> str:
    return f"tg:feed:{feed_id}:version"


def _renamed_caltrain(target: Path, new_name: str) -> None:
    """Caltrain with the Palo Alto station renamed: a different, valid version."""
    with zipfile.ZipFile(CALTRAIN) as src, zipfile.ZipFile(target, "w",
                                                           zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "stops.txt":
                old = b"palo_alto,palo_alto,Palo Alto,"
                assert data.count(old) == 1
                data = data.replace(old, b"palo_alto,palo_alto," + new_name.encode() + b",")
            dst.writestr(info.filename, data)


async def _board(gateway: Gateway, feed_id: str = "f") -> tuple[int, Any]:
    return await gateway.get(f"/v1/feeds/{feed_id}/stops/palo_alto/departures",
                             time=BOARD_TIME, limit=5)


def _deps(body: Any) -> list[tuple[str, str]]:
    return [(d["trip_id"], d["scheduled"]) for d in body["departures"]]


# --- refused versions through the service and the API ----------------------------------------


@pytest.mark.parametrize(
    ("source", "code"),
    [
        (NOT_A_ZIP, "not_a_zip"),
        (EDGE_GTFS / "hsl-broken-referential.zip", "unknown_stop"),
        (TRANSITFEED / "undefined_stop", "unknown_stop"),
        (TRANSITFEED / "missing_stop_times", "missing_file"),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
async def test_adding_a_broken_feed_registers_nothing(
    gateway: Gateway, source: Path, code: str
) -> None:
    with pytest.raises(Unprocessable) as info:
        await gateway.add_feed("x", source)
    exc = info.value
    assert exc.status == 422
    assert exc.code == "static_feed_rejected"
    assert code in [p["code"] for p in exc.details["problems"]]
    assert exc.body()["error"]["problems"] == exc.details["problems"]

    status, body = await gateway.get("/v1/feeds/x")
    assert status == 404, body
    assert body["error"]["code"] == "feed_not_found"
    assert await gateway.store.feed_config("x") is None
    assert [k async for k in gateway.store.client.scan_iter(match="tg:feed:x:*")] == []
    # still nothing once the catalog has followed every event the refusal caused
    await asyncio.sleep(0.2)
    status, body = await gateway.get("/v1/feeds")
    assert status == 200 and body["feeds"] == []
    status, _ = await gateway.get("/v1/feeds/x")
    assert status == 404


async def test_adding_an_unreadable_source_registers_nothing(gateway: Gateway,
                                                            tmp_path: Path) -> None:
    with pytest.raises(Unprocessable) as info:
        await gateway.add_feed("x", tmp_path / "absent.zip")
    assert info.value.code == "source_not_found"
    with pytest.raises(Unprocessable) as info:
        await gateway.add_feed("y", "http://127.0.0.1:9/gtfs.zip")  # SSRF guard is on
    assert info.value.code == "forbidden_address"
    assert await gateway.store.feed_configs() == {}
    for feed_id in ("x", "y"):
        status, _ = await gateway.get(f"/v1/feeds/{feed_id}")
        assert status == 404


async def test_refused_update_keeps_serving_then_a_new_version_replaces_it(
    gateway: Gateway, tmp_path: Path
) -> None:
    path = tmp_path / "feed.zip"
    shutil.copyfile(CALTRAIN, path)
    first = await gateway.add_feed("f", path)
    assert first.changed
    v1 = first.version
    status, before = await _board(gateway)
    assert status == 200 and _deps(before)[:2] == [
        ("411", "2023-11-07T17:09:00-08:00"), ("310", "2023-11-07T17:14:00-08:00")]
    assert before["stop"]["name"] == "Palo Alto"

    # a broken update is refused ...
    path.write_bytes(NOT_A_ZIP.read_bytes())
    with pytest.raises(Unprocessable) as info:
        await gateway.feeds.reload("f")
    assert info.value.code == "static_feed_rejected"
    assert [p["code"] for p in info.value.details["problems"]] == ["not_a_zip"]

    # ... the version that was serving stays, and the error is reported
    assert (await gateway.store.client.get(_version_key("f"))).decode() == v1
    assert await gateway.store.client.ttl(_blob_key("f", v1)) == -1
    status, after = await _board(gateway)
    assert status == 200 and _deps(after) == _deps(before)

    async def error_visible() -> bool:
        _, feed = await gateway.get("/v1/feeds/f")
        return feed["static"]["last_error"] is not None

    await eventually(error_visible)
    status, feed = await gateway.get("/v1/feeds/f")
    assert status == 200
    error = feed["static"]["last_error"]
    assert error["code"] == "static_feed_rejected"
    assert [p["code"] for p in error["problems"]] == ["not_a_zip"]
    assert feed["static"]["version"] == v1
    assert feed["ready"] is True
    stored = await gateway.store.feed_status("f")
    assert stored["static"]["version"] == v1
    assert stored["static"]["last_error"]["problems"][0]["code"] == "not_a_zip"

    # a valid, different version replaces it; the old one stays stored (rollback)
    _renamed_caltrain(path, "Palo Alto Renamed")
    second = await gateway.feeds.reload("f")
    assert second.changed
    v2 = second.version
    assert v2 != v1
    assert v2 == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert (await gateway.store.client.get(_version_key("f"))).decode() == v2
    assert await gateway.store.stored_versions("f") == [v2, v1]
    assert await gateway.store.client.ttl(_blob_key("f", v2)) == -1

    status, board = await _board(gateway)
    assert status == 200
    assert board["stop"]["name"] == "Palo Alto Renamed"
    assert _deps(board) == _deps(before)
    status, found = await gateway.get("/v1/feeds/f/stops", q="palo alto renamed")
    assert status == 200 and [s["id"] for s in found["stops"]] == ["palo_alto"]
    status, feed = await gateway.get("/v1/feeds/f")
    assert feed["static"]["version"] == v2
    assert feed["static"]["last_error"] is None


async def test_reload_of_unchanged_content(gateway: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "feed.zip"
    shutil.copyfile(CALTRAIN, path)
    first = await gateway.add_feed("f", path)
    keys_before = sorted([k async for k in gateway.store.client.scan_iter(match="tg:feed:f:*")])
    gateway.clock.advance(60)
    again = await gateway.feeds.reload("f")
    assert again.changed is False
    assert again.version == first.version
    assert (await gateway.store.client.get(_version_key("f"))).decode() == first.version
    assert await gateway.store.client.ttl(_blob_key("f", first.version)) == -1
    keys_after = sorted([k async for k in gateway.store.client.scan_iter(match="tg:feed:f:*")])
    assert keys_after == keys_before
    status = await gateway.store.feed_status("f")
    assert status["static"]["version"] == first.version
    assert status["static"]["last_fetch"] != first.status["static"]["last_fetch"]
    code, _ = await _board(gateway)
    assert code == 200


async def test_publish_writes_the_whole_version_then_switches(gateway: Gateway,
                                                             tmp_path: Path) -> None:
    feed_id = "whole-then-switch"
    path = tmp_path / "feed.zip"
    shutil.copyfile(CALTRAIN, path)
    first = await gateway.add_feed(feed_id, path)
    client = gateway.store.client

    version = (await client.get(_version_key(feed_id))).decode()
    assert version == first.version
    blob = await _stored(client, feed_id, version)
    assert blob.startswith(MAGIC)
    index = decode_index(blob)
    assert index.version == version and index.feed_id == feed_id
    assert index.counts() == first.status["static"]["counts"]
    assert index.counts() == build_static(CALTRAIN, feed_id, version).index.counts()

    # While a new version is published, the pointer never names a blob that is not (yet)
    # there (read atomically by one script), and the announcement comes after the switch.
    # On a cluster the pointer and the manifest lie in two slots, which no script may read
    # together: there the pointer is read first, then the manifest it names (written before
    # the switch, deleted only once three newer versions are stored), which tells the same.
    _renamed_caltrain(path, "Palo Alto Two")
    pointer_and_blob = client.register_script(
        "local v = redis.call('GET', KEYS[1]) "
        "if not v then return {false, 0} end "
        "return {v, redis.call('EXISTS', ARGV[1] .. v)}")
    observed: list[tuple[str, int]] = []
    stop = asyncio.Event()

    async def read_pointer_and_blob() -> tuple[bytes | None, int]:
        prefix = f"tg:feed:{feed_id}:static:"
        if not gateway.store.cluster:
            v, exists = await pointer_and_blob(keys=[_version_key(feed_id)], args=[prefix])
            return v, int(exists)
        v = await client.get(_version_key(feed_id))
        return v, (0 if v is None else int(await client.exists(prefix + v.decode())))

    async def watch_pointer() -> None:
        while not stop.is_set():
            v, exists = await read_pointer_and_blob()
            observed.append((v.decode() if v else "", exists))

    pubsub = client.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    watcher = asyncio.create_task(watch_pointer())
    try:
        second = await gateway.feeds.reload(feed_id)
        announced = f"feed {feed_id} {second.version}"
        deadline = time.monotonic() + 2
        while True:
            assert time.monotonic() < deadline, "the new version was never announced"
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message and message["data"].decode() == announced:
                break
        # when the announcement arrives the switch is done
        assert (await client.get(_version_key(feed_id))).decode() == second.version
        assert await client.exists(_blob_key(feed_id, second.version)) == 1
    finally:
        stop.set()
        await watcher
        await pubsub.aclose()
    assert {v for v, _ in observed} <= {first.version, second.version}
    assert all(exists == 1 for _, exists in observed), observed
    assert len(observed) > 1
    blob = await _stored(client, feed_id, second.version)
    assert decode_index(blob).counts() == second.status["static"]["counts"]


async def test_another_process_sees_the_switch(gateway: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "feed.zip"
    shutil.copyfile(CALTRAIN, path)
    first = await gateway.add_feed("f", path)

    loads: list[str | None] = []  # after_load: where the server settles its heap (gc.freeze)
    other = FeedCatalog(gateway.store,  # as another API process would hold
                        after_load=lambda: loads.append(other.get("f").ready_index().version))
    await other.refresh()
    assert other.get("f").ready_index().version == first.version
    assert loads == [first.version]

    # Subscribed once an event it receives makes it re-read the feed's status (the channel is
    # server-wide, so counting subscribers would also count other clients of a shared server).
    status = await gateway.store.feed_status("f")
    await gateway.store.put_feed_status("f", {**status, "probe": True})
    task = asyncio.create_task(other.run())
    try:
        async def subscribed() -> bool:
            await gateway.store.publish_event(f"feed f {first.version}")
            await asyncio.sleep(0.05)
            return other.get("f").status.get("probe") is True

        await eventually(subscribed)
        assert loads == [first.version]  # a status change loads no schedule
        _renamed_caltrain(path, "Palo Alto Elsewhere")
        second = await gateway.feeds.reload("f")
        assert second.changed and second.version != first.version

        async def switched() -> bool:
            index = other.get("f").index
            return index is not None and index.version == second.version

        await eventually(switched, within=2.0)
        index = other.get("f").ready_index()
        assert index.stops.names[index.stops.index_of["palo_alto"]] == "Palo Alto Elsewhere"
        assert other.get("f").status["static"]["version"] == second.version
        assert loads == [first.version, second.version]

        # a removal reaches it the same way
        await gateway.feeds.remove("f")

        async def dropped() -> bool:
            return "f" not in other.feeds

        await eventually(dropped)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_one_undecodable_version_does_not_hide_the_other_feeds(gateway: Gateway) -> None:
    """Control: a version whose blob is missing from the store leaves the feed unready only."""
    await gateway.add_feed("good", CALTRAIN)
    await gateway.store.put_feed_config("bad", {"id": "bad", "static": "x.zip"})
    await gateway.store.client.set(_version_key("bad"), "0123456789abcdef")
    other = FeedCatalog(gateway.store)
    await other.refresh()
    assert other.get("good").index is not None
    assert other.get("bad").index is None


def _damaged(kind: str) -> bytes:
    blob = build_static(CALTRAIN, "bad", "0123456789abcdef").blob
    (hlen,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    meta = orjson.loads(blob[start : start + hlen])
    if kind == "unknown-field":  # as written by a newer gateway during a rolling upgrade
        meta["tree"]["field_from_a_newer_version"] = True
    elif kind == "unknown-dtype":
        meta["arrays"][0]["dtype"] = "not-a-dtype"
    elif kind == "truncated":
        return blob[: len(blob) // 2]
    header = orjson.dumps(meta)
    return MAGIC + struct.pack("<I", len(header)) + header + blob[start + hlen :]


@pytest.mark.parametrize(
    "kind",
    [
        "unknown-field",
        "truncated",
        "unknown-dtype",
    ],
)
async def test_an_undecodable_version_does_not_break_the_catalog(gateway: Gateway,
                                                                 kind: str,
                                                                 tmp_path: Path) -> None:
    await gateway.add_feed("good", CALTRAIN)
    await gateway.store.put_feed_config("bad", {"id": "bad", "static": "x.zip"})
    await gateway.store.publish_static("bad", "0123456789abcdef", [_damaged(kind)], {})
    other = FeedCatalog(gateway.store, versions_dir=tmp_path)
    await other.refresh()
    assert other.get("good").index is not None
    assert other.get("bad").index is None


# --- the HTTP source against a local server ---------------------------------------------------

ZIP_BYTES = CALTRAIN.read_bytes()
ETAG = '"caltrain-v1"'
LAST_MODIFIED = "Fri, 22 Sep 2023 21:03:00 GMT"


@dataclass
class FeedServer:
    url: str
    hits: list[tuple[str, dict[str, str]]]
    release: asyncio.Event


@pytest.fixture
async def feed_server(aiohttp_server: Any) -> Any:
    hits: list[tuple[str, dict[str, str]]] = []
    release = asyncio.Event()

    async def record(request: web.Request) -> None:
        hits.append((request.path, dict(request.headers)))

    async def feed(request: web.Request) -> web.StreamResponse:
        await record(request)
        if request.headers.get("If-None-Match") == ETAG or (
            request.headers.get("If-Modified-Since") == LAST_MODIFIED
        ):
            return web.Response(status=304)
        return web.Response(body=ZIP_BYTES, headers={"ETag": ETAG,
                                                     "Last-Modified": LAST_MODIFIED})

    async def big(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(body=b"x" * 5000)

    async def chunked(request: web.Request) -> web.StreamResponse:
        await record(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"y" * 1000)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.StreamResponse:
        await record(request)
        await asyncio.wait_for(release.wait(), 10)
        return web.Response(body=b"late")

    async def slow_body(request: web.Request) -> web.StreamResponse:
        await record(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"z" * 100)
        await asyncio.wait_for(release.wait(), 10)
        await resp.write_eof()
        return resp

    async def error(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=500, text="boom")

    async def redirect(request: web.Request) -> web.StreamResponse:
        await record(request)
        raise web.HTTPFound("/feed.zip")

    app = web.Application()
    for path, handler in (("/feed.zip", feed), ("/big", big), ("/chunked", chunked),
                          ("/slow", slow), ("/slow-body", slow_body), ("/error", error),
                          ("/redirect", redirect)):
        app.router.add_get(path, handler)
    server = await aiohttp_server(app)
    yield FeedServer(str(server.make_url("")).rstrip("/"), hits, release)
    release.set()


async def test_download(feed_server: FeedServer, tmp_path: Path) -> None:
    source = await fetch_static(f"{feed_server.url}/feed.zip", max_bytes=10_000_000,
                                timeout_s=10, allow_private=True, tmp_dir=tmp_path,
                                headers={"Authorization": "Bearer secret"})
    try:
        assert source.temporary and not source.not_modified
        assert source.path.parent == tmp_path
        assert source.path.read_bytes() == ZIP_BYTES
        assert source.digest == hashlib.sha256(ZIP_BYTES).hexdigest()
        assert source.etag == ETAG and source.last_modified == LAST_MODIFIED
        assert feed_server.hits[-1][1].get("Authorization") == "Bearer secret"
        assert "If-None-Match" not in feed_server.hits[-1][1]
        # the download is a readable feed
        assert build_static(source.path, "x", "v").index.counts()["stops"] == 109
    finally:
        source.path.unlink()


async def test_conditional_get(feed_server: FeedServer, tmp_path: Path) -> None:
    url = f"{feed_server.url}/feed.zip"
    source = await fetch_static(url, max_bytes=10_000_000, timeout_s=10, etag=ETAG,
                                allow_private=True, tmp_dir=tmp_path)
    assert source.not_modified and not source.temporary
    assert source.etag == ETAG
    assert feed_server.hits[-1][1].get("If-None-Match") == ETAG
    source = await fetch_static(url, max_bytes=10_000_000, timeout_s=10,
                                last_modified=LAST_MODIFIED, allow_private=True, tmp_dir=tmp_path)
    assert source.not_modified
    assert feed_server.hits[-1][1].get("If-Modified-Since") == LAST_MODIFIED
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    # a stale validator gets the full body
    source = await fetch_static(url, max_bytes=10_000_000, timeout_s=10, etag='"old"',
                                allow_private=True, tmp_dir=tmp_path)
    assert not source.not_modified and source.path.read_bytes() == ZIP_BYTES
    source.path.unlink()


@pytest.mark.parametrize("path", ["/big", "/chunked"])
async def test_size_cap(feed_server: FeedServer, tmp_path: Path, path: str) -> None:
    with pytest.raises(FeedSourceError) as info:
        await fetch_static(feed_server.url + path, max_bytes=1500, timeout_s=10,
                           allow_private=True, tmp_dir=tmp_path)
    assert info.value.code == "source_too_large"
    assert "1500" in info.value.message
    assert list(tmp_path.iterdir()) == []


async def test_size_cap_not_hit_at_the_limit(feed_server: FeedServer, tmp_path: Path) -> None:
    source = await fetch_static(feed_server.url + "/chunked", max_bytes=10_000, timeout_s=10,
                                allow_private=True, tmp_dir=tmp_path)
    assert source.path.stat().st_size == 10_000
    source.path.unlink()


@pytest.mark.parametrize("path", ["/slow", "/slow-body"])
async def test_timeout(feed_server: FeedServer, tmp_path: Path, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(FeedSourceError) as info:
        await fetch_static(feed_server.url + path, max_bytes=10_000, timeout_s=0.5,
                           allow_private=True, tmp_dir=tmp_path)
    elapsed = time.monotonic() - started
    assert info.value.code == "fetch_timeout"
    assert 0.4 <= elapsed < 2.0
    assert list(tmp_path.iterdir()) == []
    feed_server.release.set()


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::1]", "10.1.2.3", "192.168.0.1", "169.254.169.254",
             "0.0.0.0", "[::ffff:127.0.0.1]"])
async def test_private_addresses_refused(feed_server: FeedServer, tmp_path: Path,
                                         host: str) -> None:
    port = feed_server.url.rsplit(":", 1)[1]
    with pytest.raises(FeedSourceError) as info:
        await fetch_static(f"http://{host}:{port}/feed.zip", max_bytes=10_000_000, timeout_s=2,
                           allow_private=False, tmp_dir=tmp_path)
    assert info.value.code == "forbidden_address"
    assert feed_server.hits == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("path", "status"), [("/error", "500"), ("/redirect", "302"),
                                              ("/absent", "404")])
async def test_http_errors(feed_server: FeedServer, tmp_path: Path, path: str,
                           status: str) -> None:
    with pytest.raises(FeedSourceError) as info:
        await fetch_static(feed_server.url + path, max_bytes=10_000_000, timeout_s=5,
                           allow_private=True, tmp_dir=tmp_path)
    assert info.value.code == "fetch_failed"
    assert status in info.value.message
    assert [p for p, _ in feed_server.hits] == ([path] if path != "/absent" else [])
    assert list(tmp_path.iterdir()) == []


async def test_connection_refused(tmp_path: Path) -> None:
    with pytest.raises(FeedSourceError) as info:
        await fetch_static("http://127.0.0.1:9/gtfs.zip", max_bytes=100, timeout_s=5,
                           allow_private=True, tmp_dir=tmp_path)
    assert info.value.code == "fetch_failed"


async def test_local_sources(tmp_path: Path) -> None:
    source = await fetch_static(str(CALTRAIN), max_bytes=10_000_000, timeout_s=5)
    assert source.path == CALTRAIN and not source.temporary
    assert source.digest == hashlib.sha256(ZIP_BYTES).hexdigest()
    same = await fetch_static(CALTRAIN.as_uri(), max_bytes=10_000_000, timeout_s=5)
    assert same.path == CALTRAIN and same.digest == source.digest
    with pytest.raises(FeedSourceError) as info:
        await fetch_static(str(CALTRAIN), max_bytes=1000, timeout_s=5)
    assert info.value.code == "source_too_large"
    with pytest.raises(FeedSourceError) as info:
        await fetch_static(str(tmp_path / "absent.zip"), max_bytes=1000, timeout_s=5)
    assert info.value.code == "source_not_found"


async def test_feed_service_over_http_uses_conditional_get(
    store: Store, feed_server: FeedServer
) -> None:
    clock = FixedClock(parse_instant(BOARD_TIME))
    service = FeedService(store, Settings(allow_private_urls=True), clock)
    url = f"{feed_server.url}/feed.zip"
    first = await service.add(FeedConfig.from_json({"id": "h", "static": url}))
    assert first.changed
    assert first.version == hashlib.sha256(ZIP_BYTES).hexdigest()[:16]
    assert first.status["static"]["etag"] == ETAG
    again = await service.reload("h")
    assert again.changed is False and again.version == first.version
    assert feed_server.hits[-1][1].get("If-None-Match") == ETAG
    assert (await store.client.get(_version_key("h"))).decode() == first.version
    # the default settings refuse the same URL
    guarded = FeedService(store, Settings(), clock)
    with pytest.raises(Unprocessable) as info:
        await guarded.add(FeedConfig.from_json({"id": "h2", "static": url}))
    assert info.value.code == "forbidden_address"
    assert await store.feed_config("h2") is None
