"""The schedule as the merge reads it: each trip's stop times as Python lists, made once per
trip and version and kept while snapshots follow each other (``ScheduleCache``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import NO_TIME, parse_gtfs_date


class TripStatic(NamedTuple):
    """A trip's stop times as Python lists, as the merge reads them."""

    lo: int  # its first StopTimes row
    seqs: list[int]
    stops: list[int]
    stop_ids: list[str]
    arrival: list[int | None]  # offsets from the service-day origin, one filled from the
    departure: list[int | None]  # other where empty (None when both are)
    service: int
    timed: bool  # no None in arrival and departure


class ScheduleCache:
    """What the merge reads from one index for every update, read from it once: trips' stop
    times as lists, stops and ids found by id (``strings.Lookup`` hashes each time), services
    per date, frequency-based trips. Holds only derived copies; one per index (a merger keeps
    its own across snapshots)."""

    def __init__(self, index: ScheduleIndex) -> None:
        self.index = index
        self._trips: dict[int, TripStatic] = {}
        self._trip_of: dict[str, int | None] = {}
        self._stop_of: dict[str, int | None] = {}
        self._stop_ids: dict[int, str] = {}
        self._trip_ids: dict[int, str] = {}
        self._routes: dict[str, bool] = {}
        self._dates: dict[str, int | None] = {}
        self._running: dict[int, Any] = {}
        self._frequency_trips: frozenset[int] | None = None
        self._services: list[int] | None = None

    def trip(self, trip: int) -> TripStatic:
        found = self._trips.get(trip)
        if found is None:
            self.prefetch([trip])
            found = self._trips[trip]
        return found

    def service(self, trip: int) -> int:
        if self._services is None:
            self._services = self.index.trips.service.tolist()
        return self._services[trip]

    def trip_index(self, trip_id: str) -> int | None:
        try:
            return self._trip_of[trip_id]
        except KeyError:
            found = self._trip_of[trip_id] = self.index.trips.index_of.get(trip_id)
            return found

    def prefetch(self, trips: Iterable[int]) -> None:
        """Read the stop times of many trips at once: a national snapshot's first merge needs
        thousands, and one gather over the columns costs what a few slices each would."""
        todo = sorted({t for t in trips if t not in self._trips})
        if not todo:
            return
        st = self.index.stop_times
        which = np.array(todo, dtype=np.int64)
        lo = st.offsets[which]
        lengths = st.offsets[which + 1] - lo
        ends = np.cumsum(lengths)
        rows = np.repeat(lo - (ends - lengths), lengths) + np.arange(int(ends[-1]))
        arr, dep = st.arrival[rows], st.departure[rows]
        dep = np.where(dep != NO_TIME, dep, arr)  # _scheduled's fill: each from the other
        arr = np.where(arr != NO_TIME, arr, dep)
        untimed = np.bincount(np.repeat(np.arange(len(todo)), lengths),
                              weights=(arr == NO_TIME) | (dep == NO_TIME),
                              minlength=len(todo)).tolist()
        stops_array = st.stop[rows]
        for stop in np.unique(stops_array).tolist():
            self.stop_id(stop)
        stops = stops_array.tolist()
        stop_ids = list(map(self._stop_ids.__getitem__, stops))
        seqs, arr_list, dep_list = st.sequence[rows].tolist(), arr.tolist(), dep.tolist()
        services = self.index.trips.service[which].tolist()
        start = 0
        for trip, first, end, service, gaps in zip(todo, lo.tolist(), ends.tolist(), services,
                                                   untimed, strict=True):
            a: list[int | None] = arr_list[start:end]
            d: list[int | None] = dep_list[start:end]
            if gaps:
                a = [None if x == NO_TIME else x for x in a]
                d = [None if x == NO_TIME else x for x in d]
            self._trips[trip] = TripStatic(first, seqs[start:end], stops[start:end],
                                           stop_ids[start:end], a, d, service, not gaps)
            start = end

    def stop_index(self, stop_id: str) -> int | None:
        try:
            return self._stop_of[stop_id]
        except KeyError:
            found = self._stop_of[stop_id] = self.index.stops.index_of.get(stop_id)
            return found

    def stop_id(self, stop: int) -> str:
        try:
            return self._stop_ids[stop]
        except KeyError:
            found = self._stop_ids[stop] = self.index.stops.ids[stop]
            return found

    def trip_id(self, trip: int) -> str:
        try:
            return self._trip_ids[trip]
        except KeyError:
            found = self._trip_ids[trip] = self.index.trips.ids[trip]
            return found

    def route_known(self, route_id: str) -> bool:
        try:
            return self._routes[route_id]
        except KeyError:
            found = self._routes[route_id] = route_id in self.index.routes.index_of
            return found

    def date(self, start_date: str) -> int | None:
        """A YYYYMMDD date as an ordinal; None when it is not one."""
        try:
            return self._dates[start_date]
        except KeyError:
            try:
                day: int | None = parse_gtfs_date(start_date).toordinal()
            except ValueError:
                day = None
            self._dates[start_date] = day
            return day

    def runs(self, service: int, day: int) -> bool:
        """Whether ``service`` runs on the date (never for a trip without a service)."""
        try:
            running = self._running[day]
        except KeyError:
            running = self._running[day] = self.index.calendar.services_on(day)
        return service >= 0 and running is not None and bool(running[service])

    def frequency_based(self, trip: int) -> bool:
        if self._frequency_trips is None:
            self._frequency_trips = frozenset(self.index.frequencies.trip.tolist())
        return trip in self._frequency_trips
