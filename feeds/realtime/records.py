"""What a merge produces: the realtime of each stop and trip instance, added trips, rejections."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple


class StopRealtime(NamedTuple):
    """Realtime of one stop of a trip instance (a NamedTuple: a national snapshot makes
    hundreds of thousands, and a frozen dataclass costs several times more to build)."""

    arrival: int | None  # expected instants (UTC epoch seconds)
    departure: int | None
    delay: int | None  # departure delay in seconds
    status: str  # on_time | delayed | early | skipped | cancelled | no_data | added


@dataclass(frozen=True)
class TripRealtime:
    """A scheduled trip instance with realtime: the StopTimes rows that have some, in order,
    and their values as parallel lists (what records are made of, by ``zip``); ``stops`` has
    them by row."""

    trip: int
    service_date: int  # date ordinal
    run_start: int  # -1 unless frequency-based
    status: str  # scheduled | cancelled
    vehicle_id: str | None
    rows: list[int]
    arrivals: list[int | None]
    departures: list[int | None]
    delays: list[int | None]
    statuses: list[str]
    timestamp: int | None = None

    @property
    def stops(self) -> dict[int, StopRealtime]:
        return dict(zip(self.rows, map(StopRealtime._make, zip(
            self.arrivals, self.departures, self.delays, self.statuses, strict=True)),
            strict=True))


@dataclass(frozen=True)
class AddedStop:
    stop: int  # stop index
    stop_sequence: int
    arrival: int | None
    departure: int | None
    scheduled: int | None  # DUPLICATED copies keep a scheduled instant; ADDED have none
    status: str


@dataclass(frozen=True)
class AddedTrip:
    """A trip that is not in the schedule: ADDED/NEW, or a DUPLICATED copy."""

    trip_id: str
    route_id: str | None
    direction_id: int | None
    headsign: str | None
    service_date: int
    kind: str  # added | duplicated
    vehicle_id: str | None
    stops: tuple[AddedStop, ...]
    template: int = -1  # the scheduled trip a DUPLICATED trip copies


@dataclass
class MergeResult:
    trips: dict[tuple[int, int, int], TripRealtime] = field(default_factory=dict)
    added: list[AddedTrip] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    total: int = 0

    @property
    def matched(self) -> int:
        return len(self.trips) + len(self.added)

    @property
    def match_rate(self) -> float | None:
        return None if self.total == 0 else round(self.matched / self.total, 4)


class Reject(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code
