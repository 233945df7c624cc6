"""Stop search by name (case- and accent-insensitive) and by distance (pure).

A ``StopSearch`` is built once per schedule version (seconds at national size: build it off
the event loop) and answers each query without visiting every stop:

- names are folded once, deduplicated and sorted; the stops in (folded name, index) order are
  the alphabetical ranking. Names starting with the query are one run of that order (binary
  search); the stops whose names contain every word of the query, or whose folded id contains
  the query, come from two substring indexes (``substrings.Substrings``) as numpy masks;
- ``near=`` takes the stops of the latitude rows within the radius, and of each row only those
  within a longitude window that no stop outside it can beat (``_Rows``), then computes the
  exact haversine distance of those few, as it was computed over every stop before.
"""

from __future__ import annotations

import math
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from feeds.schedule.index import Stops
from feeds.schedule.substrings import Substrings

EARTH_RADIUS_M = 6_371_008.8
# Letters that Unicode does not decompose into a base letter plus an accent.
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "å": "a", "ß": "ss", "đ": "d", "ł": "l", "œ": "oe"})

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


def fold(text: str) -> str:
    """'Göteborg Centralstation' → 'goteborg centralstation'."""
    if text.isascii():  # the same result, without the Unicode passes
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_FOLD)


def haversine_m(lat: float, lon: float, lat2: F64, lon2: F64, cos_lat2: F64) -> F64:
    """Metres from (lat, lon) in degrees to points given in radians (with their cosines)."""
    lat1, lon1 = math.radians(lat), math.radians(lon)
    a = (np.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * cos_lat2 * np.sin((lon2 - lon1) / 2) ** 2)
    result: F64 = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return result


ROW_DEG = 0.01  # height of a row of the spatial index: 1.1 km
_ROWS = int(180 / ROW_DEG) + 1
_SLACK = 1e-9  # relative and absolute (degrees) margin on the windows, for rounding


def _row(lat: float) -> int:
    return math.floor((lat + 90.0) / ROW_DEG)


class _Rows:
    """Stops in rows of ``ROW_DEG`` of latitude, by longitude within a row.

    A stop within ``r`` metres of (φ1, λ1) is within r/R radians of latitude (haversine: the
    distance is at least the latitude difference), and, as hav(d/R) ≥ cos φ1 cos φ2
    hav(Δλ), within the longitude window where sin²(Δλ/2) ≤ sin²(r/2R) / (cos φ1 cos φmax),
    φmax the largest |latitude| of the band. Stops whose coordinates are outside the globe
    are kept aside and measured on every query; those without coordinates never match."""

    def __init__(self, lat: F64, lon: F64) -> None:
        finite = np.isfinite(lat) & np.isfinite(lon)
        inside = finite & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)
        self.outside = np.flatnonzero(finite & ~inside)
        stops = np.flatnonzero(inside)
        rows = np.floor((lat[stops] + 90.0) / ROW_DEG).astype(np.int64)
        order = np.lexsort((lon[stops], rows))
        self.stops = stops[order]
        self.lon = np.ascontiguousarray(lon[self.stops])
        self.starts = np.searchsorted(rows[order], np.arange(_ROWS + 1)).tolist()

    def candidates(self, lat: float, lon: float, radius_m: float) -> I64 | None:
        """Every stop that can be within ``radius_m`` of (lat, lon), ascending; None: every
        stop can (the caller measures them all)."""
        if not (abs(lat) <= 90.0 and abs(lon) <= 180.0):
            return None
        if not radius_m >= 0.0:
            return np.zeros(0, dtype=np.int64)  # nothing is within a negative or NaN radius
        angle = radius_m / EARTH_RADIUS_M
        if angle >= math.pi / 2:
            return None
        dlat = math.degrees(angle) * (1 + _SLACK) + _SLACK
        south, north = lat - dlat, lat + dlat
        windows: list[tuple[float, float]] = [(-180.0, 180.0)]
        if south > -90.0 and north < 90.0:
            den = math.cos(math.radians(lat)) * math.cos(math.radians(max(-south, north)))
            s = math.sin(angle / 2) ** 2 / den if den > 0 else math.inf
            if s * (1 + _SLACK) < 1.0:
                w = math.degrees(2 * math.asin(math.sqrt(s))) * (1 + _SLACK) + _SLACK
                west, east = lon - w, lon + w
                windows = [(max(west, -180.0), min(east, 180.0))]
                if west < -180.0:
                    windows.append((west + 360.0, 180.0))
                if east > 180.0:
                    windows.append((-180.0, east - 360.0))
        parts = [self.outside]
        starts = self.starts
        for row in range(_row(max(south, -90.0)), _row(min(north, 90.0)) + 1):
            a, b = starts[row], starts[row + 1]
            if a == b:
                continue
            lons = self.lon[a:b]
            for west, east in windows:
                i = a + int(np.searchsorted(lons, west, "left"))
                j = a + int(np.searchsorted(lons, east, "right"))
                if i < j:
                    parts.append(self.stops[i:j])
        found = np.concatenate(parts).astype(np.int64)
        found.sort()
        return found


class StopSearch:
    """The search structures of one version's stops (build once, query many times)."""

    def __init__(self, stops: Stops) -> None:
        self.stops = stops
        n = len(stops.ids)
        # names: folded once per distinct name and numbered (first seen first); no step holds
        # the GIL for long: Python loops, or numpy (sorting the names, in ``sorted_order``)
        number_of: dict[str, int] = {}  # folded name → its number
        distinct: list[str] = []
        raw_number: dict[str, int] = {}
        raw_names: Sequence[str] = list(stops.names)
        for raw in raw_names:
            if raw not in raw_number:
                folded = fold(raw)
                k = number_of.get(folded)
                if k is None:
                    k = number_of[folded] = len(distinct)
                    distinct.append(folded)
                raw_number[raw] = k
        self.name_of_stop: I32 = np.fromiter(
            (raw_number[raw] for raw in raw_names), dtype=np.int32, count=n)
        self.name_index = Substrings(distinct)
        alphabetical = self.name_index.sorted_order()  # name numbers, sorted by name
        self.names: list[str] = [distinct[k] for k in alphabetical.tolist()]
        rank = np.empty(len(distinct), dtype=np.int32)
        rank[alphabetical] = np.arange(len(distinct), dtype=np.int32)
        # the ranking: stops by (folded name, index); each name's stops are one run of it
        name_rank = rank[self.name_of_stop]
        self.order: I32 = np.argsort(name_rank, kind="stable").astype(np.int32)
        self.position = np.empty(n, dtype=np.int32)  # of each stop in ``order``
        self.position[self.order] = np.arange(n, dtype=np.int32)
        self.name_in_order: I32 = self.name_of_stop[self.order]
        self.name_start = np.zeros(len(distinct) + 1, dtype=np.int64)
        np.cumsum(np.bincount(name_rank, minlength=len(distinct)), out=self.name_start[1:])
        self.id_index = Substrings(fold(s) for s in stops.ids)
        # places: radians and cosines as the full-table computation had them
        self.rad_lat: F64 = np.radians(stops.lat)
        self.rad_lon: F64 = np.radians(stops.lon)
        self.cos_lat: F64 = np.cos(self.rad_lat)
        self.rows = _Rows(stops.lat, stops.lon)

    @property
    def nbytes(self) -> int:
        """Memory of the arrays and the text indexes (the name strings aside)."""
        arrays = (self.name_of_stop, self.order, self.position, self.name_in_order,
                  self.name_start, self.rad_lat, self.rad_lon, self.cos_lat, self.rows.stops,
                  self.rows.lon)
        return (sum(a.nbytes for a in arrays) + self.name_index.nbytes
                + self.id_index.nbytes)

    def distances_m(self, lat: float, lon: float) -> F64:
        return haversine_m(lat, lon, self.rad_lat, self.rad_lon, self.cos_lat)

    def _named(self, words: list[str]) -> Mask:
        """Which distinct names (by number) contain every word (longest first: likely the
        rarest)."""
        found: Mask | None = None
        for word in sorted(set(words), key=len, reverse=True):
            mask = self.name_index.containing(word)
            found = mask if found is None else found & mask
            if not found.any():
                break
        assert found is not None
        return found

    def _by_id(self, needle: str) -> I32:
        return self.id_index.occurrences(needle)

    def search(
        self,
        query: str | None = None,
        near: tuple[float, float] | None = None,
        radius_m: float | None = None,
        limit: int = 50,
    ) -> list[tuple[int, float | None]]:
        """(stop index, distance or None). With ``near``: nearest first within the radius;
        otherwise name matches, those starting with the query first, then alphabetically.

        A name matches when it contains every word of the query, an id when it contains the
        whole query (both folded)."""
        needle = fold(query.strip()) if query else ""
        words = needle.split()
        if near is not None:
            return self._near(needle, words, near, radius_m, limit)
        assert query is not None
        return [(i, None) for i in self._ranked(needle, words, limit).tolist()]

    def _ranked(self, needle: str, words: list[str], limit: int) -> I32:
        # names starting with the needle: one run of the sorted names, so of ``order``
        size = len(needle)
        first = bisect_left(self.names, needle)
        last = bisect_right(self.names, needle, lo=first, key=lambda s: s[:size])
        start, stop = int(self.name_start[first]), int(self.name_start[last])
        if stop - start >= limit:
            return self.order[start : start + limit]
        if words:
            matched = self._named(words)[self.name_in_order]
            matched[self.position[self._by_id(needle)]] = True
        else:  # no words: every name matches
            matched = np.ones(len(self.order), dtype=bool)
        matched[start:stop] = False
        rest = np.flatnonzero(matched)[: limit - (stop - start)]
        return np.concatenate((self.order[start:stop], self.order[rest]))

    def _near(self, needle: str, words: list[str], near: tuple[float, float],
              radius_m: float | None, limit: int) -> list[tuple[int, float | None]]:
        lat, lon = near
        candidates = (self.rows.candidates(lat, lon, radius_m) if radius_m is not None
                      else None)
        if candidates is None:
            candidates = np.arange(len(self.order), dtype=np.int64)
        if words:
            ok = self._named(words)[self.name_of_stop[candidates]]
            by_id = np.zeros(len(self.order), dtype=bool)
            by_id[self._by_id(needle)] = True
            candidates = candidates[ok | by_id[candidates]]
        d = haversine_m(lat, lon, self.rad_lat[candidates], self.rad_lon[candidates],
                        self.cos_lat[candidates])
        ok = ~np.isnan(d)
        if radius_m is not None:
            ok &= d <= radius_m
        candidates, d = candidates[ok], d[ok]
        order = np.argsort(d, kind="stable")[:limit]
        return [(int(candidates[i]), float(d[i])) for i in order]
