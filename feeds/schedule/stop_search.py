"""Stop search by name (case- and accent-insensitive) and by distance (pure)."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from feeds.schedule.index import Stops

EARTH_RADIUS_M = 6_371_008.8
# Letters that Unicode does not decompose into a base letter plus an accent.
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "å": "a", "ß": "ss", "đ": "d", "ł": "l", "œ": "oe"})


def fold(text: str) -> str:
    """'Göteborg Centralstation' → 'goteborg centralstation'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_FOLD)


@dataclass(frozen=True)
class StopSearch:
    stops: Stops
    folded: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", [fold(n) for n in self.stops.names])

    def distances_m(self, lat: float, lon: float) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
        lat1, lon1 = math.radians(lat), math.radians(lon)
        lat2, lon2 = np.radians(self.stops.lat), np.radians(self.stops.lon)
        a = (np.sin((lat2 - lat1) / 2) ** 2
             + math.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2)
        result: np.ndarray[tuple[int], np.dtype[np.float64]] = (
            2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))
        return result

    def search(
        self,
        query: str | None = None,
        near: tuple[float, float] | None = None,
        radius_m: float | None = None,
        limit: int = 50,
    ) -> list[tuple[int, float | None]]:
        """(stop index, distance or None). With ``near``: nearest first within the radius;
        otherwise name matches, those starting with the query first, then alphabetically."""
        n = len(self.stops.ids)
        candidates = np.arange(n)
        if query:
            needle = fold(query.strip())
            words = needle.split()
            candidates = np.array(
                [i for i, name in enumerate(self.folded)
                 if all(w in name for w in words) or needle in fold(self.stops.ids[i])],
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
        needle = fold(query.strip())
        ranked = sorted(candidates.tolist(),
                        key=lambda i: (not self.folded[i].startswith(needle), self.folded[i], i))
        return [(i, None) for i in ranked[:limit]]
