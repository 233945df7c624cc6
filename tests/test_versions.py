"""Static versions at national scale: string tables, the codec's chunks, versions stored in
chunks and switched by one pointer, and one memory-mapped file per host.

The store is real (the suite's own servers); the version files live in each test's temporary
directory.
"""

from __future__ import annotations

import mmap
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import GTFS, Gateway, catalog_settled
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.ingest.feed_service as feed_service
from feeds.schedule.codec import chunks, decode_index, encode_index, encode_parts
from feeds.schedule.strings import OptionalStrings, StringTable
from feeds.static.pipeline import build_static
from gateway.http.appkeys import CATALOG
from gateway.replica.feeds import FeedCatalog
from gateway.replica.version_files import VersionFiles

CALTRAIN_ZIP = GTFS / "caltrain-2023.zip"

# --- string tables ----------------------------------------------------------------------------

words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(st.lists(words, max_size=60), st.lists(words, max_size=10))
@settings(max_examples=200, deadline=None)
def test_a_string_table_reads_and_finds_like_a_list(values: list[str], probes: list[str]) -> None:
    table = StringTable.of(values)
    assert list(table) == values and len(table) == len(values)
    assert [table[i] for i in range(len(values))] == values
    for key in [*values, *probes]:
        expected = values.index(key) if key in values else None
        assert table.find(key) == expected
        assert (key in table.lookup) == (expected is not None)
        assert table.lookup.get(key) == expected


@given(st.lists(st.none() | words, max_size=40))
@settings(max_examples=100, deadline=None)
def test_optional_strings_keep_none_apart_from_empty(values: list[str | None]) -> None:
    table = OptionalStrings.of(values)
    assert list(table) == values
    present = [v for v in values if v is not None]
    for key in present:
        assert table.find(key) == values.index(key)


def test_a_string_table_refuses_none() -> None:
    with pytest.raises(ValueError, match="OptionalStrings"):
        StringTable.of(["a", None])  # type: ignore[list-item]


# --- the codec's parts and chunks -------------------------------------------------------------

@pytest.fixture(scope="module")
def caltrain_build() -> Any:
    return build_static(CALTRAIN_ZIP, "caltrain", "0123456789abcdef")


@given(st.integers(min_value=1, max_value=200_000))
@settings(max_examples=25, deadline=None)
def test_chunks_regroup_the_parts_exactly(caltrain_build: Any, size: int) -> None:
    whole = encode_index(caltrain_build.index)
    pieces = list(chunks(encode_parts(caltrain_build.index), size))
    assert b"".join(pieces) == whole
    assert all(len(p) == size for p in pieces[:-1]) and 0 < len(pieces[-1]) <= size


def test_an_index_decodes_over_a_mapping_without_copying(caltrain_build: Any,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "v.idx"
    path.write_bytes(encode_index(caltrain_build.index))
    with open(path, "rb") as fh:
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    index = decode_index(mapping)
    assert index.counts() == caltrain_build.index.counts()
    assert index.stops.ids == caltrain_build.index.stops.ids
    assert index.trips.index_of["101"] == caltrain_build.index.trips.index_of["101"]
    # the arrays are views of the mapping, not copies
    assert not index.stop_times.arrival.flags.owndata
    assert not index.stop_times.arrival.flags.writeable


# --- versions in the store ----------------------------------------------------------------------

async def test_no_stored_value_is_over_the_chunk_size(gateway: Gateway, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_service, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr("gateway.store.feed_records.CHUNK_BYTES", 64 * 1024)
    result = await gateway.add_feed("small-chunks", CALTRAIN_ZIP)
    manifest = await gateway.store.static_manifest("small-chunks", result.version)
    assert manifest is not None and manifest["chunks"] > 4
    client = gateway.store.client
    async for key in client.scan_iter(match="tg:feed:small-chunks:*"):
        if await client.type(key) == b"string":
            assert await client.strlen(key) <= 64 * 1024, key
    status, board = await gateway.get("/v1/feeds/small-chunks/stops/palo_alto/departures",
                                       time="2023-11-07T17:05:00-08:00")
    assert status == 200 and board["departures"]


async def test_old_versions_beyond_the_kept_ones_are_deleted(gateway: Gateway,
                                                             tmp_path: Path) -> None:
    store = gateway.store
    blob = encode_index(build_static(CALTRAIN_ZIP, "kept", "0").index)
    versions = [f"{n:016x}" for n in range(1, 5)]
    for version in versions:
        await store.publish_static("kept", version, [blob[:1000], blob[1000:]], {}, keep=2)
    assert await store.stored_versions("kept") == versions[::-1][:2]
    for gone in versions[:2]:
        assert await store.static_manifest("kept", gone) is None
        assert await store.static_chunk("kept", gone, 0) is None
    assert (await store.client.get("tg:feed:kept:version")).decode() == versions[-1]


async def test_processes_of_one_host_map_one_file(gateway: Gateway, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "feed.zip"
    shutil.copyfile(CALTRAIN_ZIP, path)
    result = await gateway.add_feed("host", path)
    shared = tmp_path / "versions"
    fetched: list[int] = []
    chunk = gateway.store.static_chunk

    async def counted(feed_id: str, version: str, n: int) -> bytes | None:
        fetched.append(n)
        return await chunk(feed_id, version, n)

    monkeypatch.setattr(gateway.store, "static_chunk", counted)
    first, second = FeedCatalog(gateway.store, versions_dir=shared), FeedCatalog(
        gateway.store, versions_dir=shared)
    await first.refresh()
    after_first = len(fetched)
    await second.refresh()
    assert after_first >= 1 and len(fetched) == after_first  # the second only mapped the file
    file = VersionFiles(gateway.store, shared).path("host", result.version)
    assert file.exists()
    a, b = first.get("host").ready_index(), second.get("host").ready_index()
    assert a.counts() == b.counts() == result.status["static"]["counts"]
    assert not a.stop_times.arrival.flags.owndata and not b.stop_times.arrival.flags.owndata


async def test_a_large_source_is_built_in_a_child_process(gateway: Gateway, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Over ``ingest_child_bytes`` the build runs in a spawned child: the result, and a
    refusal (an exception that crosses the process boundary), are the same as in a thread."""
    import dataclasses
    from concurrent.futures import ProcessPoolExecutor

    from gateway.errors import Unprocessable
    from gateway.ingest import static_build

    service = gateway.feeds
    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings,
                                                                 ingest_child_bytes=0))
    submitted: list[str] = []

    class Recording(ProcessPoolExecutor):  # a real pool that notes what it is given
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(fn.__name__)
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(static_build, "ProcessPoolExecutor", Recording)
    result = await gateway.add_feed("child", CALTRAIN_ZIP)
    assert result.changed and result.status["static"]["counts"]["trips"] > 0
    status, board = await gateway.get("/v1/feeds/child/stops/palo_alto/departures",
                                      time="2023-11-07T17:05:00-08:00")
    assert status == 200 and board["departures"]
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(Unprocessable) as info:
        await gateway.add_feed("child-bad", bad)
    assert info.value.code == "static_feed_rejected"
    assert [p["code"] for p in info.value.details["problems"]] == ["not_a_zip"]
    assert submitted == ["build_to_file", "build_to_file"]  # both built in a child


async def test_a_switch_lets_go_of_the_old_version(gateway: Gateway, tmp_path: Path) -> None:
    """After a version switch nothing holds the old index (boards and searches cached from
    it included), so its file mapping is released then and there, not when a cache fills."""
    import gc
    import weakref

    from test_static_ingest import _renamed_caltrain

    path = tmp_path / "feed.zip"
    shutil.copyfile(CALTRAIN_ZIP, path)
    await gateway.add_feed("switch", path)
    old = gateway.app[CATALOG].get("switch").ready_index()
    for url, params in (("/v1/feeds/switch/stops/palo_alto/departures",
                         {"time": "2023-11-07T17:05:00-08:00"}),
                        ("/v1/feeds/switch/stops", {"q": "palo"})):
        status, _ = await gateway.get(url, **params)
        assert status == 200
    released = weakref.ref(old)
    del old
    _renamed_caltrain(path, "Palo Alto Two")
    assert (await gateway.feeds.reload("switch")).changed
    # the refresh the switch's event starts holds the old index while it runs: the switch
    # is over when the catalog has settled
    await catalog_settled(gateway.app, "switch")
    gc.collect()
    assert released() is None

