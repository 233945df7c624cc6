"""The schedule index: one published static feed version, in compact columnar form.

Everything a departure board, a trip view or a stop search needs, as numpy columns and string
tables (``strings.StringTable``: flat arrays too), so that a version is a few dozen flat arrays:
written whole (``codec``), shipped through the store in chunks, and memory-mapped by every API
process of a host from one file. Built by ``feeds.static.build``; queried by ``board`` and
``stop_search``. Constructors take lists of strings as well; they become string tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from feeds.schedule.calendar import ServiceCalendar
from feeds.schedule.strings import Lookup, OptionalStrings, StringTable, optional_strings, strings

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
F64 = npt.NDArray[np.float64]


def _tables(obj: object, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Lists given to a constructor become string tables (``build`` gives tables already)."""
    for name in required:
        object.__setattr__(obj, name, strings(getattr(obj, name)))
    for name in optional:
        object.__setattr__(obj, name, optional_strings(getattr(obj, name)))


@dataclass(frozen=True)
class Stops:
    ids: StringTable
    names: StringTable
    lat: F64
    lon: F64
    location_type: I8
    parent: I32  # index of parent_station, -1 when none
    platform: OptionalStrings  # None where a stop has no platform_code
    children: dict[int, list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _tables(self, ("ids", "names"), ("platform",))
        children: dict[int, list[int]] = {}
        for i, p in enumerate(self.parent.tolist()):
            if p >= 0:
                children.setdefault(p, []).append(i)
        object.__setattr__(self, "children", children)

    @property
    def index_of(self) -> Lookup:
        return self.ids.lookup

    def __len__(self) -> int:
        return len(self.ids)

    def board_members(self, stop: int) -> list[int]:
        """The stops whose departures make this stop's board: a station adds its children."""
        if int(self.location_type[stop]) == 1:
            return [stop, *self.children.get(stop, [])]
        return [stop]


@dataclass(frozen=True)
class Routes:
    ids: StringTable
    short_names: OptionalStrings
    long_names: OptionalStrings
    types: I32
    agency: OptionalStrings

    def __post_init__(self) -> None:
        _tables(self, ("ids",), ("short_names", "long_names", "agency"))

    @property
    def index_of(self) -> Lookup:
        return self.ids.lookup


@dataclass(frozen=True)
class Trips:
    ids: StringTable
    route: I32
    service: I32  # -1 when the service_id has no calendar entry at all
    headsign: OptionalStrings
    direction: I8  # -1 when direction_id is absent
    shape: I32  # index into Shapes, -1 when the trip has no shape

    def __post_init__(self) -> None:
        _tables(self, ("ids",), ("headsign",))

    @property
    def index_of(self) -> Lookup:
        return self.ids.lookup


@dataclass(frozen=True)
class StopTimes:
    """All stop times sorted by (trip, stop_sequence); trip t's rows are offsets[t]:offsets[t+1]."""

    offsets: I64
    trip: I32
    stop: I32
    sequence: I32
    arrival: I32  # seconds from the service-day origin, NO_TIME when empty
    departure: I32
    pickup: I8
    drop_off: I8
    headsign: I32  # index into ScheduleIndex.headsigns, -1 when no stop_headsign


@dataclass(frozen=True)
class Departures:
    """Departure events sorted by (stop, time); the events of stop s are offsets[s]:offsets[s+1].

    ``row`` points into StopTimes. ``run_start`` is the trip's start time for frequency-based
    trips (their identity for realtime, together with trip_id and date), -1 otherwise.
    """

    offsets: I64
    time: I32
    row: I32
    run_start: I32


@dataclass(frozen=True)
class Shapes:
    """Shape points in sequence order; the points of shape s are offsets[s]:offsets[s+1]."""

    offsets: I64
    lat: F64
    lon: F64


@dataclass(frozen=True)
class Frequencies:
    trip: I32
    start: I32
    end: I32
    headway: I32
    exact_times: I8


@dataclass(frozen=True)
class ScheduleIndex:
    feed_id: str
    version: str
    agency_name: str
    timezone: str
    calendar: ServiceCalendar
    service_ids: list[str]
    stops: Stops
    routes: Routes
    trips: Trips
    stop_times: StopTimes
    departures: Departures
    frequencies: Frequencies
    shapes: Shapes
    headsigns: list[str]
    max_time: int  # the latest departure second of any trip, to know how far back to look

    def counts(self) -> dict[str, int]:
        return {
            "stops": len(self.stops.ids),
            "routes": len(self.routes.ids),
            "trips": len(self.trips.ids),
            "stop_times": len(self.stop_times.trip),
            "departure_events": len(self.departures.time),
        }

    def service_range(self) -> tuple[int, int]:
        return self.calendar.first_ordinal, self.calendar.last_ordinal
