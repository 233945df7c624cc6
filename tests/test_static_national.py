"""Static ingest at national scale: the compact reading of the big tables (categories whose
values stay the file's strings), and the size limits that refuse a feed with
``feed_too_large`` before its expensive read where they can.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from feeds.static.pipeline import build_static
from feeds.static.reader import read_gtfs

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
