"""Every stop of the real feeds, at several instants: the API's board equals the reference.

The reference (tests/reference/gtfs_reference.py) is written from the GTFS spec with the
standard library only; it shares no code with feeds/ or gateway/.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile

import pytest
from conftest import GTFS, Gateway
from reference.gtfs_reference import RefFeed, load_feed, reference_departures
from reference.instants import EMPTY_INSTANTS, INSTANTS, WINDOW_S

FEEDS = [
    "caltrain-2023.zip",
    "bart-2019.zip",
    "hsl-helsinki-2022-cropped.zip",
    "wmata-2026.zip",
    "usf-bullrunner.zip",
    "sound-transit-link-2023.zip",
]
LIMIT = 500

_refs: dict[str, RefFeed] = {}


def _ref(name: str) -> RefFeed:
    if name not in _refs:
        _refs[name] = load_feed(GTFS / name)
    return _refs[name]


def _all_stop_ids(name: str) -> list[str]:
    """Every stop_id in stops.txt, stations and entrances included."""
    with zipfile.ZipFile(GTFS / name) as zf:
        text = zf.read("stops.txt").decode("utf-8-sig")
    return sorted(row["stop_id"] for row in csv.DictReader(io.StringIO(text)))


def _epoch(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp())


@pytest.mark.parametrize("name", FEEDS)
async def test_every_stop_matches_reference(embedded_gateway: Gateway, name: str) -> None:
    gw = embedded_gateway
    feed_id = name.removesuffix(".zip")
    await gw.add_feed(feed_id, GTFS / name)
    ref = _ref(name)
    status, body = await gw.get(f"/v1/feeds/{feed_id}")
    assert status == 200 and body["ready"], body
    stop_ids = _all_stop_ids(name)
    instants = INSTANTS[name] + EMPTY_INSTANTS.get(name, [])
    compared = nonempty = 0
    for label, iso in instants:
        start = _epoch(iso)
        for stop_id in stop_ids:
            expected = reference_departures(ref, stop_id, start, WINDOW_S)
            assert len(expected) < LIMIT, (label, stop_id, "raise LIMIT")
            status, body = await gw.get(
                f"/v1/feeds/{feed_id}/stops/{stop_id}/departures",
                time=iso, window=WINDOW_S // 60, limit=LIMIT)
            assert status == 200, (label, stop_id, body)
            got = [(_epoch(d["scheduled"]), d["trip_id"], d["stop_id"], d["stop_sequence"],
                    d["service_date"]) for d in body["departures"]]
            assert [g[0] for g in got] == sorted(g[0] for g in got), (label, stop_id)
            want = [(e.instant, e.trip_id, e.stop_id, e.stop_sequence, e.service_date)
                    for e in expected]
            assert sorted(got) == sorted(want), (label, stop_id)
            compared += 1
            nonempty += bool(want)
    # The comparison must have exercised real boards, not only empty ones.
    assert nonempty > compared // 10, (compared, nonempty)
