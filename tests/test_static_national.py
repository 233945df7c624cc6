"""Static ingest at national scale: the compact reading of the big tables (categories whose
values stay the file's strings), and the size limits that refuse a feed with
``feed_too_large`` before its expensive read where they can.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import GTFS
from test_keys_operator import bearer, make_client

from feeds.errors import StaticFeedRejected
from feeds.static import pipeline
from feeds.static.limits import FeedTooLarge, SizeLimits
from feeds.static.pipeline import build_static
from feeds.static.reader import read_gtfs
from gateway.settings import Settings
from gateway.store.store import Store

# Every identifier below looks like a number: pandas, left to itself, reads such a category
# column as numbers (007 and 7 become one stop, 1.0 and 1 another, 0123 loses its zero).
NUMERIC_LOOKING = {
    "agency.txt": "agency_id,agency_name,agency_url,agency_timezone\n"
                  "1,Numeric Transit,http://example.org,America/Los_Angeles\n",
    "stops.txt": "stop_id,stop_name,stop_lat,stop_lon\n"
                 "007,Seven padded,37.0,-122.0\n7,Seven,37.1,-122.1\n"
                 "1.0,One point zero,37.2,-122.2\n1,One,37.3,-122.3\n",
    "routes.txt": "route_id,route_short_name,route_long_name,route_type\n10,10,Ten,3\n",
    "trips.txt": "route_id,service_id,trip_id,trip_headsign,shape_id\n"
                 "10,1,0123,North,05\n10,1,123,South,5\n",
    "calendar.txt": "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,"
                    "start_date,end_date\n1,1,1,1,1,1,1,1,20240101,20241231\n",
    "shapes.txt": "shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence\n"
                  "05,37.0,-122.0,1\n05,37.2,-122.2,2\n5,37.1,-122.1,1\n5,37.3,-122.3,2\n",
    "stop_times.txt": "trip_id,arrival_time,departure_time,stop_id,stop_sequence,pickup_type,"
                      "drop_off_type,stop_headsign,continuous_pickup\n"
                      "0123,08:00:00,08:00:00,007,1,0,0,,1\n"
                      "0123,08:10:00,08:10:00,1.0,2,0,1,,1\n"
                      "123,09:00:00,09:00:00,7,1,1,0,42,1\n"
                      "123,09:05:00,09:05:00,1,2,0,0,042,1\n"
                      "123,09:10:00,09:10:00,007,3,0,0,042,1\n",
}


def _feed(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text, "utf-8")
    return directory


def test_big_tables_are_read_as_categories_of_the_files_strings(tmp_path: Path) -> None:
    feed = read_gtfs(_feed(tmp_path / "numeric", NUMERIC_LOOKING))
    st = feed.stop_times
    for column in ("trip_id", "stop_id", "arrival_time", "departure_time", "stop_headsign",
                   "pickup_type", "continuous_pickup"):
        assert isinstance(st[column].dtype, pd.CategoricalDtype), column
    assert sorted(st["stop_id"].cat.categories.tolist()) == ["007", "1", "1.0", "7"]
    assert sorted(st["trip_id"].cat.categories.tolist()) == ["0123", "123"]
    assert sorted(feed.shapes["shape_id"].cat.categories.tolist()) == ["05", "5"]
    assert sorted(st["stop_headsign"].dropna().unique().tolist()) == ["042", "42"]
    # outside read_gtfs, pandas infers as it always did
    other = pd.read_csv(pd.io.common.StringIO("a\n007\n7\n"), dtype={"a": "category"})
    assert other["a"].tolist() == [7, 7]


def test_numeric_looking_ids_index_as_strings(tmp_path: Path) -> None:
    index = build_static(_feed(tmp_path / "numeric", NUMERIC_LOOKING), "n", "v").index
    assert list(index.stops.ids) == ["007", "7", "1.0", "1"]
    assert list(index.trips.ids) == ["0123", "123"]
    st = index.stop_times
    stops_of = {index.trips.ids[t]: [index.stops.ids[int(s)]
                                     for s in st.stop[st.offsets[t]:st.offsets[t + 1]]]
                for t in range(len(index.trips.ids))}
    assert stops_of == {"0123": ["007", "1.0"], "123": ["7", "1", "007"]}
    assert st.pickup.tolist() == [0, 0, 1, 0, 0] and st.drop_off.tolist() == [0, 1, 0, 0, 0]
    assert [index.headsigns[h] if h >= 0 else None for h in st.headsign.tolist()] == [
        None, None, "42", "042", "042"]
    # the two shapes stay two: trip 0123 follows 05, trip 123 follows 5
    assert index.shapes.offsets.tolist() == [0, 2, 4]
    lat_of = {index.trips.ids[t]: index.shapes.lat[index.shapes.offsets[s]]
              for t, s in enumerate(index.trips.shape.tolist())}
    assert lat_of == {"0123": 37.0, "123": 37.1}
    # a pickup_type of 1 takes the first stop of trip 123 off the boards; last stops never board
    assert index.counts()["departure_events"] == 2
    assert np.array_equal(index.departures.row[np.argsort(index.departures.time)], [0, 3])


# --- size limits ----------------------------------------------------------------------------

CALTRAIN = GTFS / "caltrain-2023.zip"
CALTRAIN_ROWS = 3498  # its stop_times.txt: 3499 CRLF lines, the last without one, header first


def _no_read(path: Path) -> Any:
    raise AssertionError(f"{path} was read: the limit should have refused it first")


def test_rows_over_the_limit_are_refused_before_the_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "read_gtfs", _no_read)
    with pytest.raises(FeedTooLarge) as info:
        build_static(CALTRAIN, "c", "v", SizeLimits(max_rows=CALTRAIN_ROWS - 1))
    exc = info.value
    assert isinstance(exc, StaticFeedRejected) and exc.code == "feed_too_large"
    [problem] = exc.problems
    assert (problem.code, problem.file) == ("feed_too_large", "stop_times.txt")
    assert problem.message == (f"stop_times.txt has {CALTRAIN_ROWS} rows, over the limit of "
                               f"{CALTRAIN_ROWS - 1} rows (GATEWAY_STATIC_MAX_ROWS)")
    # it crosses a process boundary as what it is (big builds run in a child)
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is FeedTooLarge and again.problems == exc.problems


def test_a_feed_at_the_limits_is_accepted() -> None:
    limits = SizeLimits(max_bytes=CALTRAIN.stat().st_size, max_rows=CALTRAIN_ROWS)
    assert build_static(CALTRAIN, "c", "v", limits).index.counts()["stop_times"] == CALTRAIN_ROWS


def test_counting_stops_past_the_limit(tmp_path: Path) -> None:
    """A stop_times.txt far over the limit is not counted to its end (an archive may inflate to
    any size): the refusal says how far the count went."""
    files = dict(NUMERIC_LOOKING)
    files["stop_times.txt"] = ("trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
                               + "0123,,,007,1\n" * 1_000_000)
    with pytest.raises(FeedTooLarge) as info:
        build_static(_feed(tmp_path / "long", files), "n", "v", SizeLimits(max_rows=10))
    message = info.value.problems[0].message
    assert message.startswith("stop_times.txt has at least ")
    counted = int(message.split()[4])
    assert 10 < counted < 1_000_000
    assert message.endswith("over the limit of 10 rows (GATEWAY_STATIC_MAX_ROWS)")


def test_rows_too_short_for_the_line_count_are_counted_after_the_read(tmp_path: Path) -> None:
    """Rows shorter than any valid one (here without the times and sequence) let a file under
    the size bound skip the line count; the rows pandas read are then checked exactly, before
    the feed's other problems (its missing columns) are looked for."""
    files = dict(NUMERIC_LOOKING)
    files["stop_times.txt"] = "trip_id,stop_id\n" + "a,b\n" * 40
    with pytest.raises(FeedTooLarge) as info:
        build_static(_feed(tmp_path / "short", files), "n", "v", SizeLimits(max_rows=39))
    assert [p.message for p in info.value.problems] == [
        "stop_times.txt has 40 rows, over the limit of 39 rows (GATEWAY_STATIC_MAX_ROWS)"]


def test_a_source_over_the_bytes_limit(tmp_path: Path) -> None:
    source = _feed(tmp_path / "numeric", NUMERIC_LOOKING)  # a directory: its files' bytes
    size = sum(p.stat().st_size for p in source.iterdir())
    with pytest.raises(FeedTooLarge) as info:
        build_static(source, "n", "v", SizeLimits(max_bytes=size - 1))
    assert info.value.problems[0].message == (
        f"the source is {size} bytes, over the limit of {size - 1} bytes "
        "(GATEWAY_STATIC_MAX_BYTES)")
    assert build_static(source, "n", "v", SizeLimits(max_bytes=size)).index.counts()["stops"] == 4


def test_the_row_limit_setting() -> None:
    assert Settings().static_max_rows == 20_000_000
    assert Settings.from_env({"GATEWAY_STATIC_MAX_ROWS": "5"}).static_max_rows == 5


async def test_adding_a_feed_over_the_row_limit_answers_413(
        store: Store, aiohttp_client: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, operator, _ = await make_client(store, aiohttp_client, allow_private_urls=True,
                                            versions_dir=tmp_path / "versions",
                                            static_max_rows=CALTRAIN_ROWS - 1)
    monkeypatch.setattr(pipeline, "read_gtfs", _no_read)
    resp = await client.post("/v1/feeds", json={"id": "big", "static": str(CALTRAIN)},
                             headers=bearer(operator))
    body = await resp.json()
    assert resp.status == 413, body
    error = body["error"]
    assert error["code"] == "feed_too_large"
    assert "GATEWAY_STATIC_MAX_ROWS" in error["message"]
    assert [p["code"] for p in error["problems"]] == ["feed_too_large"]
    assert await store.feed_config("big") is None  # a refused first version registers nothing

    monkeypatch.undo()
    client, operator, _ = await make_client(store, aiohttp_client, allow_private_urls=True,
                                            versions_dir=tmp_path / "versions",
                                            static_max_rows=CALTRAIN_ROWS)
    resp = await client.post("/v1/feeds", json={"id": "big", "static": str(CALTRAIN)},
                             headers=bearer(operator))
    assert resp.status == 201, await resp.text()
