"""Delay propagation along one trip instance: from the updates of some stops to the realtime of
every stop (pure). ``time`` wins over ``delay``; a missing departure takes the arrival's
delay; the last known delay propagates forward, never backwards; SKIPPED propagates across
the stop; NO_DATA leaves this and later stops scheduled until an update with data."""

from __future__ import annotations

from feeds.realtime.model import StopTimeUpdate
from feeds.realtime.records import StopRealtime

ON_TIME_S = 60  # |delay| under this is "on_time"
# positions, arrivals, departures, delays, statuses: a trip's realtime, column by column
Rows = tuple[list[int], list[int | None], list[int | None], list[int | None], list[str]]


def _status(delay: int | None) -> str:
    if delay is None or abs(delay) < ON_TIME_S:
        return "on_time"
    return "delayed" if delay > 0 else "early"


def propagate(
    sched_arr: list[int | None],
    sched_dep: list[int | None],
    updates: dict[int, StopTimeUpdate],
    trip_delay: int | None = None,
) -> dict[int, StopRealtime]:
    """Realtime for each position 0..n-1 of a trip, from updates keyed by position."""
    rows, arrivals, departures, delays, statuses = propagate_rows(sched_arr, sched_dep, updates,
                                                                  trip_delay)
    return dict(zip(rows, map(StopRealtime._make, zip(
        arrivals, departures, delays, statuses, strict=True)), strict=True))


def propagate_rows(
    sched_arr: list[int | None],
    sched_dep: list[int | None],
    updates: dict[int, StopTimeUpdate],
    trip_delay: int | None = None,
    base: int = 0,
) -> Rows:
    """``propagate`` as parallel lists (``base`` + position, arrival, departure, delay,
    status), in position order. The hot loop of merging: written flat on purpose."""
    rows: list[int] = []
    arrivals: list[int | None] = []
    departures: list[int | None] = []
    delays: list[int | None] = []
    statuses: list[str] = []
    add_row, add_arr, add_dep = rows.append, arrivals.append, departures.append
    add_delay, add_status = delays.append, statuses.append
    delay: int | None = trip_delay
    data = trip_delay is not None
    # Before the first update (and without a trip delay) nothing is known: start there.
    start = 0 if data or not updates else max(0, min(updates))
    get = updates.get
    for k in range(start, len(sched_dep)):
        arr_s, dep_s = sched_arr[k], sched_dep[k]
        u = get(k)
        if u is None:
            if data and delay is not None:
                add_row(base + k)
                add_arr(None if arr_s is None else arr_s + delay)
                add_dep(None if dep_s is None else dep_s + delay)
                add_delay(delay)
                add_status("on_time" if -ON_TIME_S < delay < ON_TIME_S
                           else "delayed" if delay > 0 else "early")
            continue
        relationship = u[4]
        if relationship == "NO_DATA":
            data, delay = False, None
            add_row(base + k)
            add_arr(None)
            add_dep(None)
            add_delay(None)
            add_status("no_data")
            continue
        if relationship == "SKIPPED":
            add_row(base + k)
            add_arr(None if delay is None or arr_s is None else arr_s + delay)
            add_dep(None if delay is None or dep_s is None else dep_s + delay)
            add_delay(delay)
            add_status("skipped")
            continue
        # time wins over delay; a delay needs a scheduled time
        event = u[2]
        if event is None:
            arr = None
        elif event[0] is not None:
            arr = event[0]
        elif event[1] is not None and arr_s is not None:
            arr = arr_s + event[1]
        else:
            arr = None
        event = u[3]
        if event is None:
            dep = None
        elif event[0] is not None:
            dep = event[0]
        elif event[1] is not None and dep_s is not None:
            dep = dep_s + event[1]
        else:
            dep = None
        if dep is None and arr is not None:
            # A missing departure takes the arrival's delay (never departing before arrival).
            dep = arr if dep_s is None or arr_s is None else max(arr, dep_s + (arr - arr_s))
        if arr is None and dep is not None:
            arr = dep if arr_s is None or dep_s is None else min(dep, arr_s + (dep - dep_s))
        if dep is not None and dep_s is not None:
            delay = dep - dep_s
        elif arr is not None and arr_s is not None:
            delay = arr - arr_s
        data = dep is not None or arr is not None
        add_row(base + k)
        add_arr(arr)
        add_dep(dep)
        add_delay(delay)
        add_status("on_time" if delay is None or -ON_TIME_S < delay < ON_TIME_S
                   else "delayed" if delay > 0 else "early")
    return rows, arrivals, departures, delays, statuses
