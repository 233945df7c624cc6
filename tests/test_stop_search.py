"""Stop search (feeds.schedule.stop_search) against a reference written to be obviously right:
fold every name and id, keep the stops whose folded name contains every word of the folded
query or whose folded id contains the whole of it, and rank them; measure every stop with the
haversine formula over the whole table and keep those within the radius, nearest first.

The search under test indexes names and ids once (feeds.schedule.substrings) and measures only
the stops of a spatial prefilter; on random stop tables and queries (accents, letters that fold
to several, several words, ids, duplicate names and places, poles, the antimeridian, places off
the globe or missing) both must give exactly the same list, distances to the last bit.
"""

from __future__ import annotations

import asyncio
import math
import string
import threading
import unicodedata
from typing import Any

import numpy as np
import pytest
from conftest import GTFS, Gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.schedule.index import Stops
from feeds.schedule.stop_search import StopSearch, fold
from feeds.schedule.substrings import Substrings, suffix_array

# --- the reference ---------------------------------------------------------------------------


def reference_search(ids: list[str], names: list[str], lat: np.ndarray[Any, Any],
                     lon: np.ndarray[Any, Any], query: str | None,
                     near: tuple[float, float] | None, radius_m: float | None,
                     limit: int) -> list[tuple[int, float | None]]:
    folded = [fold(n) for n in names]
    stops = list(range(len(ids)))
    if query:
        needle = fold(query.strip())
        stops = [i for i in stops
                 if all(w in folded[i] for w in needle.split()) or needle in fold(ids[i])]
    if near is not None:
        p1, l1 = math.radians(near[0]), math.radians(near[1])
        p2, l2 = np.radians(lat), np.radians(lon)
        a = np.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
        d = 2 * 6_371_008.8 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
        within = [(float(d[i]), i) for i in stops
                  if not math.isnan(d[i]) and (radius_m is None or d[i] <= radius_m)]
        return [(i, dist) for dist, i in sorted(within)[:limit]]
    assert query is not None
    needle = fold(query.strip())
    stops.sort(key=lambda i: (not folded[i].startswith(needle), folded[i], i))
    return [(i, None) for i in stops[:limit]]


# --- random stop tables ----------------------------------------------------------------------

# Letters that fold alike (case, accents, ø/æ/ß/ł and ligatures), separators, and characters
# whose decomposition holds a space (¨) or that are spaces of other kinds.
LETTERS = "abcABCáÁäÄåøØæÆßssłlœoeﬁfiİi̇ -–:_'.¨\u00a0\u3000"
words = st.text(LETTERS, min_size=0, max_size=8)
names = st.lists(words, min_size=1, max_size=3).map(" ".join)

# Places around a few centres: ordinary, near a pole, across the antimeridian.
CENTRES = [(59.33, 18.06), (0.0, 0.0), (89.999, 10.0), (-89.9995, -120.0), (12.5, 179.999),
           (-33.9, -179.998)]
offsets = st.floats(-0.03, 0.03, allow_nan=False)
odd_places = st.sampled_from([(math.nan, 0.0), (0.0, math.nan), (95.0, 10.0), (-91.0, 400.0),
                              (10.0, -181.0)])


@st.composite
def stop_tables(draw: st.DrawFn) -> tuple[list[str], list[str], Any, Any]:
    n = draw(st.integers(0, 40))
    pool = draw(st.lists(names, min_size=1, max_size=8))  # names repeat, as at stations
    centre = draw(st.sampled_from(CENTRES))
    ids, stop_names, lat, lon = [], [], [], []
    for i in range(n):
        ids.append(draw(st.sampled_from([f"s{i}", f"{i}:Å{i}", f"STN_{i}", f"x{i} y"])))
        stop_names.append(draw(st.one_of(st.sampled_from(pool), names)))
        same = draw(st.integers(0, 9)) if lat else 9
        if same < 4:  # the previous stop's place, latitude or longitude: ties, due north...
            lat.append(lat[-1] if same in (0, 1) else centre[0] + draw(offsets))
            lon.append(lon[-1] if same in (0, 2) else centre[1] + draw(offsets))
        elif draw(st.integers(0, 12)) == 0:
            a, b = draw(odd_places)
            lat.append(a)
            lon.append(b)
        else:
            lat.append(centre[0] + draw(offsets))
            lon.append(centre[1] + draw(offsets))
    return ids, stop_names, np.array(lat, dtype=np.float64), np.array(lon, dtype=np.float64)


def make_stops(ids: list[str], stop_names: list[str], lat: Any, lon: Any) -> Stops:
    columns: dict[str, Any] = {
        "ids": ids, "names": stop_names, "lat": lat, "lon": lon,
        "location_type": np.zeros(len(ids), dtype=np.int8),
        "parent": np.full(len(ids), -1, dtype=np.int32), "platform": [None] * len(ids)}
    return Stops(**columns)


@st.composite
def queries(draw: st.DrawFn, ids: list[str], stop_names: list[str]) -> str:
    """A piece of a name or an id (often several words), or anything from the alphabet."""
    texts = [*stop_names, *ids]
    if texts and draw(st.booleans()):
        text = draw(st.sampled_from(texts))
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, len(text)))
        piece = text[a:b]
        if draw(st.booleans()):
            piece = piece.upper()
        return piece
    return draw(st.text(LETTERS, max_size=6))


radii = st.one_of(st.sampled_from([0.0, 1.0, 500.0, 2000.0, 5e6, 2e7, 3e7, -1.0, math.nan]),
                  st.floats(0.0, 10_000.0))
limits = st.integers(0, 12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=stop_tables(), data=st.data())
def test_name_search_is_the_reference(table: Any, data: st.DataObject) -> None:
    ids, stop_names, lat, lon = table
    search = StopSearch(make_stops(ids, stop_names, lat, lon))
    for _ in range(5):
        query = data.draw(queries(ids, stop_names))
        limit = data.draw(limits)
        expected = reference_search(ids, stop_names, lat, lon, query, None, None, limit)
        assert search.search(query, limit=limit) == expected, (query, limit)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=stop_tables(), data=st.data())
def test_near_search_is_the_reference(table: Any, data: st.DataObject) -> None:
    ids, stop_names, lat, lon = table
    search = StopSearch(make_stops(ids, stop_names, lat, lon))
    for _ in range(5):
        if len(ids) and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(ids) - 1))  # at a stop, or a little off it
            point = (float(lat[i]) + data.draw(st.sampled_from([0.0, 1e-4, -0.01])),
                     float(lon[i]) + data.draw(st.sampled_from([0.0, 1e-4, -0.01])))
        else:
            centre = data.draw(st.sampled_from(CENTRES))
            point = (centre[0] + data.draw(offsets), centre[1] + data.draw(offsets))
        if not (abs(point[0]) <= 90 and abs(point[1]) <= 180) and data.draw(st.booleans()):
            point = (max(-90.0, min(90.0, point[0])), max(-180.0, min(180.0, point[1])))
        radius = data.draw(st.one_of(st.none(), radii))
        if len(ids) and data.draw(st.booleans()):  # exactly as far as some stop: on the edge
            j = data.draw(st.integers(0, len(ids) - 1))
            edge = reference_search(ids, stop_names, lat, lon, None, point, None, len(ids))
            radius = dict(edge).get(j, radius)
        query = data.draw(st.one_of(st.none(), st.just(""), queries(ids, stop_names)))
        limit = data.draw(limits)
        expected = reference_search(ids, stop_names, lat, lon, query, point, radius, limit)
        got = search.search(query, near=point, radius_m=radius, limit=limit)
        assert got == expected, (query, point, radius, limit)


deltas = st.one_of(st.just(0.0), st.floats(-0.05, 0.05, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(lat=st.floats(-89.99, 89.99), lon=st.floats(-180.0, 180.0),
       moves=st.lists(st.tuples(deltas, deltas), min_size=1, max_size=12), data=st.data())
def test_stops_exactly_on_the_radius_are_found(lat: float, lon: float,
                                               moves: list[tuple[float, float]],
                                               data: st.DataObject) -> None:
    """Stops due north, south, east or west of the point (or anywhere near it), the radius
    exactly the distance of one of them: the prefilter's bounds have no room to spare."""
    places = [(lat + a, (lon + b + 180.0) % 360.0 - 180.0) for a, b in moves]
    lats = np.array([p[0] for p in places])
    lons = np.array([p[1] for p in places])
    ids = [f"s{i}" for i in range(len(places))]
    every = reference_search(ids, ids, lats, lons, None, (lat, lon), None, len(ids))
    radius = dict(every)[data.draw(st.integers(0, len(ids) - 1))]
    assert radius is not None
    expected = reference_search(ids, ids, lats, lons, None, (lat, lon), radius, len(ids))
    search = StopSearch(make_stops(ids, ids, lats, lons))
    assert search.search(near=(lat, lon), radius_m=radius, limit=len(ids)) == expected


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.text(max_size=12), max_size=12), data=st.data())
def test_substrings_finds_what_in_finds(texts: list[str], data: st.DataObject) -> None:
    index = Substrings(texts)
    assert sorted(texts) == [texts[i] for i in index.sorted_order().tolist()]
    for _ in range(5):
        if texts and data.draw(st.booleans()):
            text = data.draw(st.sampled_from(texts))
            a = data.draw(st.integers(0, len(text)))
            part = text[a : data.draw(st.integers(a, len(text)))]
        else:
            part = data.draw(st.text(max_size=3))
        assert index.containing(part).tolist() == [part in t for t in texts], part


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text("ab", max_size=40), max_size=20), data=st.data())
def test_substrings_of_long_repeats(texts: list[str], data: st.DataObject) -> None:
    """Two letters: suffixes tied far beyond the first pass's 7 bytes, in groups of all sizes."""
    index = Substrings(texts)
    assert sorted(texts) == [texts[i] for i in index.sorted_order().tolist()]
    for _ in range(5):
        part = data.draw(st.text("ab", min_size=1, max_size=12))
        assert index.containing(part).tolist() == [part in t for t in texts], part


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(st.text("ab", max_size=30), st.text(max_size=10)), max_size=20))
def test_suffix_array_sorts_every_suffix(texts: list[str]) -> None:
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    sa = suffix_array(b"".join(encoded), lengths).tolist()
    suffixes = [(e[k:], i) for i, e in enumerate(encoded) for k in range(len(e))]
    starts = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    owner = np.repeat(np.arange(len(encoded)), lengths).tolist()
    got = [encoded[owner[p]][p - starts[owner[p]]:] for p in sa]
    assert sorted(sa) == list(range(len(suffixes)))
    assert got == sorted(s for s, _ in suffixes)


def reference_fold(text: str) -> str:
    """fold as first written: casefold, the letters Unicode does not decompose, NFKD, no
    combining marks (fold's ASCII shortcut must give the same)."""
    table = str.maketrans({"ø": "o", "æ": "ae", "å": "a", "ß": "ss", "đ": "d", "ł": "l",
                           "œ": "oe"})
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(table))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(table)


@given(st.one_of(st.text(), st.text(string.printable), st.text(LETTERS)))
def test_fold_is_its_definition(text: str) -> None:
    assert fold(text) == reference_fold(text)


def test_substrings_of_repeats_and_lone_surrogates() -> None:
    texts = ["a" * 40, "a" * 39 + "b", "", "\ud800x", "ab" * 20, "\x00\x00", "x"]
    index = Substrings(texts)
    assert sorted(texts) == [texts[i] for i in index.sorted_order().tolist()]
    for part in ["a", "a" * 40, "a" * 41, "ab", "ba", "b", "\ud800", "x", "\x00", "\x00" * 3]:
        assert index.containing(part).tolist() == [part in t for t in texts], part


def test_a_national_radius_and_a_pole() -> None:
    """Radii up to the API's 100 km, and beyond a quarter of the globe (no prefilter)."""
    rng = np.random.default_rng(7)
    lat = np.concatenate([rng.uniform(-90, 90, 3000), [90.0, -90.0, 89.9999]])
    lon = np.concatenate([rng.uniform(-180, 180, 3000), [0.0, 180.0, -180.0]])
    ids = [f"s{i}" for i in range(len(lat))]
    search = StopSearch(make_stops(ids, ids, lat, lon))
    for point in [(90.0, 0.0), (-89.9, 179.9), (0.0, -180.0), (45.0, 7.0)]:
        for radius in [100_000.0, 1e6, 1.2e7]:
            expected = reference_search(ids, ids, lat, lon, None, point, radius, 1000)
            assert search.search(near=point, radius_m=radius, limit=1000) == expected


# --- the route: one build per version, off the event loop -------------------------------------


async def test_concurrent_first_searches_share_one_build(
        embedded_gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.http import feed_routes

    built: list[int] = []  # the threads that built a search

    def counting(stops: Stops) -> StopSearch:
        built.append(threading.get_ident())
        return StopSearch(stops)

    monkeypatch.setattr(feed_routes, "StopSearch", counting)
    gw = embedded_gateway
    await gw.add_feed("caltrain", GTFS / "caltrain-2023.zip")
    path = "/v1/feeds/caltrain/stops"
    answers = await asyncio.gather(*(gw.get(path, q="palo alto") for _ in range(6)),
                                   gw.get(path, near="37.44322,-122.16429", radius=200))
    assert [status for status, _ in answers] == [200] * 7
    assert len({str(body) for _, body in answers[:6]}) == 1
    assert [s["id"] for s in answers[-1][1]["stops"]] == ["palo_alto", "70171", "70172", "PAS"]
    assert len(built) == 1 and built[0] != threading.get_ident()  # once, off the event loop
    await gw.get(path, q="palo")
    assert len(built) == 1
