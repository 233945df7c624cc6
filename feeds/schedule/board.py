"""Departure boards: the scheduled departures at a stop within a time window (pure).

Realtime is applied afterwards by the merge; this module only knows the timetable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import local_date_ordinal, service_day_origin

DAY = 86400


@dataclass(frozen=True, slots=True)
class ScheduledDeparture:
    instant: int  # UTC epoch seconds
    service_date: int  # date ordinal of the service day
    trip: int
    row: int  # StopTimes row
    run_start: int  # frequency run start (secs), -1 for timetabled trips

    def sort_key(self) -> tuple[int, int, int]:
        return (self.instant, self.trip, self.row)


def scheduled_departures(
    index: ScheduleIndex,
    stop: int,
    start: int,
    window_s: int,
    route: int | None = None,
) -> list[ScheduledDeparture]:
    """All departures at ``stop`` (and its children, for a station) with start <= t < start+window.

    Service days are tried from the one whose trips could still be running at ``start`` (times
    up to ``max_time`` past its origin) to the local date of the window's end.
    """
    tz = index.timezone
    end = start + window_s
    first_day = local_date_ordinal(start, tz) - (index.max_time // DAY) - 1
    # +1: on a spring-forward day the origin is 23:00 of the day before, so that service
    # day's first hour falls on the previous local date.
    last_day = local_date_ordinal(end, tz) + 1
    deps = index.departures
    st = index.stop_times
    trip_service = index.trips.service
    members = index.stops.board_members(stop)
    found: list[ScheduledDeparture] = []
    for day in range(first_day, last_day + 1):
        running = index.calendar.services_on(day)
        if running is None or not running.any():
            continue
        origin = service_day_origin(day, tz)
        lo_t, hi_t = start - origin, end - origin
        for member in members:
            a, b = int(deps.offsets[member]), int(deps.offsets[member + 1])
            if a == b:
                continue
            times = deps.time[a:b]
            i = a + int(np.searchsorted(times, lo_t, side="left"))
            j = a + int(np.searchsorted(times, hi_t, side="left"))
            if i == j:
                continue
            rows = deps.row[i:j]
            trips = st.trip[rows]
            services = trip_service[trips]
            ok = (services >= 0) & running[np.maximum(services, 0)]
            if route is not None:
                ok &= index.trips.route[trips] == route
            for k in np.flatnonzero(ok).tolist():
                e = i + k
                found.append(
                    ScheduledDeparture(
                        instant=origin + int(deps.time[e]),
                        service_date=day,
                        trip=int(trips[k]),
                        row=int(rows[k]),
                        run_start=int(deps.run_start[e]),
                    )
                )
    found.sort(key=ScheduledDeparture.sort_key)
    return found
