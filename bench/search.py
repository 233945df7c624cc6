"""Stop search at national size: the 87,000 stops of the 40-copy WMATA feed (``bench.tiler``).

Per query, the search of ``feeds.schedule.stop_search`` against the full scan it replaced
(``OldStopSearch`` below, a verbatim copy: the baseline), in interleaved rounds, on two stop
tables: the feed's own ("x40": its 40 copies repeat WMATA's 479 distinct names, which the new
search indexes once each) and the same stops with every name made distinct by a number
appended ("x40 distinct": 87,000 names to index, the harder case). Queries: words, prefixes,
several words, single letters, ids and misses drawn from the names (fixed seed); ``near=``
points at stops, near them and anywhere in the feed's box, radius 500 m to 2 km. Every answer
of the new search is checked equal to the old one's where both ran. p50/p99 are over every
query of every round; "best of 3" takes each query's fastest round first (the shared
machine's preemptions out). Also: the time to build the search structure, its memory, and how
late an event loop's 1 ms ticks run at worst while it is built in a thread (median of 3
builds, against 0.5 s of ticks without a build, interleaved).

    python -m bench search
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import random
import sys
import time
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from bench.common import Row, median
from bench.tiler import tile
from feeds.schedule.index import Stops
from feeds.schedule.stop_search import StopSearch

COPIES = 40
ROUNDS = 3
NAME_QUERIES = 300  # per round, new search
NEAR_QUERIES = 300
OLD_PER_ROUND = 20  # the old search: ~0.3 s per name query at this size
T = TypeVar("T")


# --- the baseline: the search as it was before (a copy, not to be improved) -----------------

_FOLD = str.maketrans({"ø": "o", "æ": "ae", "å": "a", "ß": "ss", "đ": "d", "ł": "l", "œ": "oe"})


def old_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_FOLD)


@dataclass(frozen=True)
class OldStopSearch:
    stops: Stops
    folded: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", [old_fold(n) for n in self.stops.names])

    def distances_m(self, lat: float, lon: float) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
        lat1, lon1 = math.radians(lat), math.radians(lon)
        lat2, lon2 = np.radians(self.stops.lat), np.radians(self.stops.lon)
        a = (np.sin((lat2 - lat1) / 2) ** 2
             + math.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2)
        result: np.ndarray[tuple[int], np.dtype[np.float64]] = (
            2 * 6_371_008.8 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))
        return result

    def search(
        self,
        query: str | None = None,
        near: tuple[float, float] | None = None,
        radius_m: float | None = None,
        limit: int = 50,
    ) -> list[tuple[int, float | None]]:
        n = len(self.stops.ids)
        candidates = np.arange(n)
        if query:
            needle = old_fold(query.strip())
            words = needle.split()
            candidates = np.array(
                [i for i, name in enumerate(self.folded)
                 if all(w in name for w in words) or needle in old_fold(self.stops.ids[i])],
                dtype=np.int64,
            )
        if near is not None:
            dist = self.distances_m(*near)
            d = dist[candidates]
            ok = ~np.isnan(d)
            if radius_m is not None:
                ok &= d <= radius_m
            candidates, d = candidates[ok], d[ok]
            order = np.argsort(d, kind="stable")[:limit]
            return [(int(candidates[i]), float(d[i])) for i in order]
        assert query is not None
        needle = old_fold(query.strip())
        ranked = sorted(candidates.tolist(),
                        key=lambda i: (not self.folded[i].startswith(needle), self.folded[i], i))
        return [(i, None) for i in ranked[:limit]]


# --- the stops and the queries -------------------------------------------------------------


def load_stops(distinct_names: bool) -> Stops:
    """The tiled feed's stops.txt as a ``Stops`` (as ``build`` makes it, without a whole
    ingest); ``distinct_names``: every name made distinct by a number appended."""
    with zipfile.ZipFile(tile(COPIES)) as z:
        rows = list(csv.DictReader(io.TextIOWrapper(z.open("stops.txt"), "utf-8-sig")))
    ids = [r["stop_id"] for r in rows]
    names = [r["stop_name"] for r in rows]
    if distinct_names:  # "Metro Center 12.345": copy 12, its 345th stop
        per_copy = len(rows) // COPIES
        names = [f"{name} {k // per_copy}.{k % per_copy}" for k, name in enumerate(names)]
    number = {s: i for i, s in enumerate(ids)}
    columns: dict[str, Any] = {  # lists of strings: the constructor makes them tables
        "ids": ids, "names": names,
        "lat": np.array([float(r["stop_lat"]) for r in rows]),
        "lon": np.array([float(r["stop_lon"]) for r in rows]),
        "location_type": np.array([int(r["location_type"] or 0) for r in rows], dtype=np.int8),
        "parent": np.array([number.get(r["parent_station"], -1) for r in rows], dtype=np.int32),
        "platform": [None] * len(rows),
    }
    return Stops(**columns)


HARD = ["a", "e", "-", "&", "center", "metro center", "st", "nw", "ave nw", "farragut west",
        "gallery pl", "l'enfant plaza", "platform", "line platform", "elevator", "west",
        "washington", "0:", "12:stn", "stn_a01", "k", "zzz", "no such stop", "cénter",
        "FARRAGUT", "heights", "square", "u st"]


def name_queries(stops: Stops, count: int, rng: random.Random) -> list[str]:
    """Words, prefixes and several words of random stops' names, and ids."""
    out = list(HARD)
    names, ids = list(stops.names), list(stops.ids)
    while len(out) < count:
        words = names[rng.randrange(len(names))].split()
        kind = rng.random()
        if kind < 0.3:
            w = rng.choice(words)
            out.append(w[: rng.randint(1, len(w))])  # a prefix of a word
        elif kind < 0.6:
            k = rng.randrange(len(words))
            out.append(" ".join(words[k : k + rng.randint(1, 3)]))
        elif kind < 0.8:
            out.append(" ".join(words[: rng.randint(1, len(words))]))  # a name's start
        elif kind < 0.9:
            out.append(ids[rng.randrange(len(ids))].split(":", 1)[1][: rng.randint(2, 8)])
        else:
            out.append(" ".join(rng.sample(words, min(2, len(words)))).lower())
    return out[:count]


def near_queries(stops: Stops, count: int, rng: random.Random) -> list[tuple[float, float, float]]:
    """(lat, lon, radius): at a stop, near one, or anywhere in the feed's box."""
    lat, lon = stops.lat, stops.lon
    out = []
    for _ in range(count):
        i = rng.randrange(len(lat))
        kind = rng.random()
        if kind < 0.4:
            point = (float(lat[i]), float(lon[i]))
        elif kind < 0.8:
            point = (float(lat[i]) + rng.uniform(-0.01, 0.01),
                     float(lon[i]) + rng.uniform(-0.01, 0.01))
        else:
            point = (rng.uniform(float(lat.min()), float(lat.max())),
                     rng.uniform(float(lon.min()), float(lon.max())))
        out.append((*point, rng.choice([500.0, 1000.0, 2000.0])))
    return out


# --- measuring -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def _loop_lag(stops: Stops | None) -> tuple[float, float]:
    """Build the search of ``stops`` in a thread while the loop ticks every 1 ms: (build
    seconds, worst tick lateness in ms); without stops, only the ticks (for 0.5 s)."""
    late: list[float] = []
    done = False

    async def tick() -> None:
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append(time.perf_counter() - t - 0.001)

    ticker = asyncio.create_task(tick())
    t = time.perf_counter()
    if stops is not None:
        await asyncio.to_thread(StopSearch, stops)
    else:
        await asyncio.sleep(0.5)
    took = time.perf_counter() - t
    done = True
    await ticker
    return took, max(late) * 1000


def _timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """(milliseconds, result) of one call."""
    t = time.perf_counter_ns()
    result = fn(*args, **kwargs)
    return (time.perf_counter_ns() - t) / 1e6, result


def table_rows(label: str, distinct_names: bool) -> list[Row]:
    stops = load_stops(distinct_names)
    rng = random.Random(20260504)
    names = name_queries(stops, NAME_QUERIES, rng)
    points = near_queries(stops, NEAR_QUERIES, rng)
    print(f"  {label}: {len(stops.ids)} stops, {len(set(stops.names))} distinct names",
          file=sys.stderr)
    builds: dict[str, list[float]] = {"new": [], "old": []}
    # times[kind][round][query], ms: kind "name"/"near" for the new search, "old ..." the old
    times: dict[str, list[list[float]]] = {k: [] for k in ("name", "near", "old name",
                                                           "old near")}
    checked = 0
    for r in range(ROUNDS):
        t, new = _timed(StopSearch, stops)
        builds["new"].append(t)
        t, old = _timed(OldStopSearch, stops)
        builds["old"].append(t)
        times["name"].append([_timed(new.search, q)[0] for q in names])
        times["near"].append([_timed(new.search, near=(a, b), radius_m=m)[0]
                              for a, b, m in points])
        times["old name"].append([])
        times["old near"].append([])
        for k in range(r * OLD_PER_ROUND, (r + 1) * OLD_PER_ROUND):
            q = names[k % len(names)]
            t, expected = _timed(old.search, q)
            times["old name"][-1].append(t)
            assert new.search(q) == expected, q
            a, b, m = points[k % len(points)]
            t, expected = _timed(old.search, near=(a, b), radius_m=m)
            times["old near"][-1].append(t)
            assert new.search(near=(a, b), radius_m=m) == expected, (a, b, m)
            # a name and a place together: checked only
            both = new.search(q, near=(a, b), radius_m=m)
            assert both == old.search(q, near=(a, b), radius_m=m), (q, a, b, m)
            checked += 3
    for a, b, m in points:  # every near answer (cheap in both)
        assert new.search(near=(a, b), radius_m=m) == old.search(near=(a, b), radius_m=m)
        checked += 1
    print(f"  {label}: {checked} answers equal to the old search's", file=sys.stderr)
    lags = [(asyncio.run(_loop_lag(stops)), asyncio.run(_loop_lag(None)))
            for _ in range(ROUNDS)]
    took = median([build[0] for build, _ in lags])
    lag = median([build[1] for build, _ in lags])
    idle_lag = median([idle[1] for _, idle in lags])

    def every(kind: str) -> list[float]:
        return [t for one in times[kind] for t in one]

    def best(kind: str) -> list[float]:  # each query's fastest round: the machine's noise out
        return [min(ts) for ts in zip(*times[kind], strict=True)]

    def paired(kind: str) -> float:
        return median([median(a) / median(b)
                       for a, b in zip(times[kind], times[f"old {kind}"], strict=True)])

    rows = [Row(f"search {label}: build", median(builds["new"]), "ms",
                "old build (fold every name)", median(builds["old"]))]
    for kind in ("name", "near"):
        old_all = every(f"old {kind}")
        rows += [
            Row(f"search {label}: {kind} p50", percentile(every(kind), 50), "ms",
                "old full scan", percentile(old_all, 50), "", paired(kind)),
            Row(f"search {label}: {kind} p99", percentile(every(kind), 99), "ms",
                "old full scan", percentile(old_all, 99), "< 5 ms"),
            Row(f"search {label}: {kind} p99, best of {ROUNDS}", percentile(best(kind), 99),
                "ms", "old full scan", percentile(old_all, 99), "< 5 ms"),
        ]
    return [*rows,
            Row(f"search {label}: worst loop tick late, build in thread", lag, "ms",
                "no build (0.5 s of ticks)", idle_lag, f"build {took * 1000:.0f} ms"),
            Row(f"search {label}: structure memory", new.nbytes / 2**20, "MiB",
                "old: folded names list", sum(sys.getsizeof(s) for s in old.folded) / 2**20)]


def run() -> list[Row]:
    return (table_rows("x40", distinct_names=False)
            + table_rows("x40 distinct", distinct_names=True))


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run())
