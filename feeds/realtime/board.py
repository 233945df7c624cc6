"""A departure board with realtime: scheduled departures amended by stop overlays (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feeds.realtime.overlay import (
    K_ARR,
    K_DATE,
    K_DELAY,
    K_DEP,
    K_DIRECTION,
    K_HEADSIGN,
    K_ROUTE,
    K_RUN,
    K_SCHEDULED,
    K_SEQ,
    K_STATUS,
    K_TRIP,
    K_VEHICLE,
    Record,
)
from feeds.schedule.board import ScheduledDeparture, scheduled_departures
from feeds.schedule.index import ScheduleIndex


@dataclass(frozen=True, slots=True)
class BoardEntry:
    scheduled: ScheduledDeparture | None  # None for a trip not in the schedule
    stop: int
    expected: int | None
    delay: int | None
    status: str
    realtime: bool
    vehicle_id: str | None
    added: Record | None = None  # the overlay record of an added trip

    @property
    def when(self) -> int:
        if self.expected is not None:
            return self.expected
        if self.scheduled is not None:
            return self.scheduled.instant
        return int(self.added[K_SCHEDULED] or 0) if self.added else 0


def realtime_board(
    index: ScheduleIndex,
    stop: int,
    start: int,
    window_s: int,
    route: int | None,
    overlays: dict[int, list[Record]],
    include_cancelled: bool = False,
) -> list[BoardEntry]:
    """Departures with ``start <= expected (else scheduled) < start + window``, sorted so."""
    end = start + window_s
    members = index.stops.board_members(stop)
    amend: dict[tuple[str, int, int, int], Record] = {}
    added: list[tuple[int, Record]] = []
    late = early = 0
    for member in members:
        for rec in overlays.get(member, ()):
            if rec[0] == "a":
                added.append((member, rec))
                continue
            amend[(rec[K_TRIP], rec[K_DATE], rec[K_RUN], rec[K_SEQ])] = rec
            delay = rec[K_DELAY]
            if delay is not None:
                late, early = max(late, delay), max(early, -delay)
    # A delayed departure scheduled before the window may be expected inside it.
    base = scheduled_departures(index, stop, start - late, window_s + late + early, route)
    trip_ids, st = index.trips.ids, index.stop_times
    entries: list[BoardEntry] = []
    for d in base:
        found = amend.get((trip_ids[d.trip], d.service_date, d.run_start,
                           int(st.sequence[d.row])))
        member = int(st.stop[d.row])
        if found is None:
            entry = BoardEntry(d, member, None, None, "scheduled", False, None)
        else:
            status = found[K_STATUS]
            expected = found[K_DEP] if found[K_DEP] is not None else found[K_ARR]
            if status == "no_data":
                entry = BoardEntry(d, member, None, None, "scheduled", False, found[K_VEHICLE])
            else:
                entry = BoardEntry(d, member, expected, found[K_DELAY], status, True,
                                   found[K_VEHICLE])
        if entry.status == "cancelled" and not include_cancelled:
            continue
        if start <= entry.when < end:
            entries.append(entry)
    route_id = index.routes.ids[route] if route is not None else None
    for member, rec in added:
        if route_id is not None and rec[K_ROUTE] != route_id:
            continue
        expected = rec[K_DEP] if rec[K_DEP] is not None else rec[K_ARR]
        entry = BoardEntry(None, member, expected, rec[K_DELAY], rec[K_STATUS], True,
                           rec[K_VEHICLE], rec)
        if entry.status == "cancelled" and not include_cancelled:
            continue
        if start <= entry.when < end:
            entries.append(entry)
    entries.sort(key=_sort_key)
    return entries


def _sort_key(e: BoardEntry) -> tuple[int, str]:
    trip = str(e.added[K_TRIP]) if e.added else ""
    return (e.when, trip if e.scheduled is None else f"{e.scheduled.trip:012d}")


def added_fields(rec: Record) -> dict[str, Any]:
    return {"trip_id": rec[K_TRIP], "route_id": rec[K_ROUTE], "headsign": rec[K_HEADSIGN],
            "direction_id": rec[K_DIRECTION], "stop_sequence": rec[K_SEQ],
            "service_date": rec[K_DATE], "scheduled": rec[K_SCHEDULED]}
