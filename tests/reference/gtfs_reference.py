"""Independent reference implementation of "scheduled departures at a stop".

Written from the GTFS Schedule reference (https://gtfs.org/schedule/reference/),
standard library only, so that the test-suite can check the production code
against something small and obviously correct. It deliberately shares no
code with gateway/ or feeds/.

Contract:

* Service is active on date D if calendar.txt has the weekday flag set and
  start_date <= D <= end_date, then calendar_dates.txt adds (exception_type 1)
  or removes (exception_type 2) it. calendar.txt may be absent.
* Stop times are "H:MM:SS", may exceed 24:00:00, and are measured from
  "noon minus 12h" of the service day in the agency timezone:
  instant = epoch(local noon of D) - 43200 + seconds (correct on DST days).
* A departure is a stop_times row with pickup_type != 1 that is not the last
  stop (highest stop_sequence) of its trip; time = departure_time, else
  arrival_time; rows with neither are skipped.
* A station (location_type=1) includes the rows at its child stops; the
  reported stop_id is the child's.
* A trip listed in frequencies.txt runs only at start_time, start_time +
  headway_secs, ... while < end_time (exact_times 0 and 1 alike); each run is
  the trip's stop_times shifted so that the first stop departs at run start.
* A departure is included iff start <= instant < start + window_s.
"""

from __future__ import annotations

import bisect
import csv
import io
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class RefDeparture:
    trip_id: str
    stop_id: str
    stop_sequence: int
    service_date: str  # "YYYY-MM-DD"
    instant: int  # UTC epoch seconds of the scheduled departure


@dataclass
class RefFeed:
    timezone: ZoneInfo
    # service_id -> (weekday flags Mon..Sun, start date, end date)
    calendar: dict[str, tuple[tuple[bool, ...], date, date]]
    # date -> {service_id: exception_type}
    exceptions: dict[date, dict[str, int]]
    # stop_id -> sorted [(seconds since noon-12h, trip_id, stop_sequence, service_id)]
    rows_by_stop: dict[str, list[tuple[int, str, int, str]]]
    # station stop_id -> child stop_ids
    children: dict[str, list[str]]
    _active_cache: dict[date, frozenset[str]] = field(default_factory=dict)

    def active_services(self, d: date) -> frozenset[str]:
        if d not in self._active_cache:
            active = {
                sid
                for sid, (days, first, last) in self.calendar.items()
                if first <= d <= last and days[d.weekday()]
            }
            for sid, exception_type in self.exceptions.get(d, {}).items():
                if exception_type == 1:
                    active.add(sid)
                elif exception_type == 2:
                    active.discard(sid)
            self._active_cache[d] = frozenset(active)
        return self._active_cache[d]

    def noon_minus_12h(self, d: date) -> int:
        noon = datetime(d.year, d.month, d.day, 12, tzinfo=self.timezone)
        return int(noon.timestamp()) - 43200


def parse_time(value: str) -> int | None:
    """'H:MM:SS' or 'HH:MM:SS' (hours may be >= 24) -> seconds; '' -> None."""
    value = value.strip()
    if not value:
        return None
    h, m, s = value.split(":")
    return int(h) * 3600 + int(m) * 60 + int(s)


def parse_date(value: str) -> date:
    value = value.strip()
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def _read_table(zf: zipfile.ZipFile, name: str) -> list[dict[str, str]]:
    """Rows of `name` as dicts with stripped keys/values; [] if absent.

    The file may sit in a sub-folder of the zip (the shallowest match wins);
    a UTF-8 BOM is removed by the 'utf-8-sig' codec.
    """
    matches = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == name]
    if not matches:
        return []
    member = min(matches, key=lambda n: n.count("/"))
    with zf.open(member) as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
        header = [h.strip() for h in next(reader, [])]
        return [
            dict(zip(header, (v.strip() for v in row), strict=False))
            for row in reader
            if any(v.strip() for v in row)
        ]


def load_feed(zip_path: str | Path) -> RefFeed:
    with zipfile.ZipFile(zip_path) as zf:
        agency = _read_table(zf, "agency.txt")
        stops = _read_table(zf, "stops.txt")
        trips = _read_table(zf, "trips.txt")
        stop_times = _read_table(zf, "stop_times.txt")
        calendar_rows = _read_table(zf, "calendar.txt")
        calendar_dates = _read_table(zf, "calendar_dates.txt")
        frequencies = _read_table(zf, "frequencies.txt")

    timezone = ZoneInfo(agency[0]["agency_timezone"])
    weekdays = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    calendar = {
        r["service_id"]: (
            tuple(r[day] == "1" for day in weekdays),
            parse_date(r["start_date"]),
            parse_date(r["end_date"]),
        )
        for r in calendar_rows
    }
    exceptions: dict[date, dict[str, int]] = defaultdict(dict)
    for r in calendar_dates:
        exceptions[parse_date(r["date"])][r["service_id"]] = int(r["exception_type"])

    children: dict[str, list[str]] = defaultdict(list)
    for r in stops:
        if r.get("parent_station"):
            children[r["parent_station"]].append(r["stop_id"])
    stations = {r["stop_id"] for r in stops if r.get("location_type") == "1"}

    service_of_trip = {r["trip_id"]: r["service_id"] for r in trips}

    # Group stop_times per trip, ordered by stop_sequence.
    by_trip: dict[str, list[tuple[int, str, int | None, str]]] = defaultdict(list)
    for r in stop_times:
        seconds = parse_time(r.get("departure_time", ""))
        if seconds is None:
            seconds = parse_time(r.get("arrival_time", ""))
        by_trip[r["trip_id"]].append(
            (int(r["stop_sequence"]), r["stop_id"], seconds, r.get("pickup_type", ""))
        )

    # Run starts of frequency-based trips: trip_id -> [run start seconds].
    runs: dict[str, list[int]] = defaultdict(list)
    for r in frequencies:
        begin, end = parse_time(r["start_time"]), parse_time(r["end_time"])
        headway = int(r["headway_secs"])
        assert begin is not None and end is not None and headway > 0
        runs[r["trip_id"]].extend(range(begin, end, headway))

    rows_by_stop: dict[str, list[tuple[int, str, int, str]]] = defaultdict(list)
    for trip_id, rows in by_trip.items():
        rows.sort()
        service_id = service_of_trip[trip_id]
        if trip_id in runs:
            # Shift relative to the first stop (the first row that has a time).
            first = next(sec for _, _, sec, _ in rows if sec is not None)
            shifts = [run_start - first for run_start in runs[trip_id]]
        else:
            shifts = [0]
        for sequence, stop_id, seconds, pickup_type in rows[:-1]:  # last stop excluded
            if seconds is None or pickup_type == "1":
                continue
            for shift in shifts:
                rows_by_stop[stop_id].append((seconds + shift, trip_id, sequence, service_id))
    for lst in rows_by_stop.values():
        lst.sort()

    return RefFeed(
        timezone=timezone,
        calendar=calendar,
        exceptions=dict(exceptions),
        rows_by_stop=dict(rows_by_stop),
        children={s: c for s, c in children.items() if s in stations},
    )


def reference_departures(
    feed: RefFeed, stop_id: str, start: int, window_s: int
) -> list[RefDeparture]:
    """Scheduled departures at `stop_id` (or its children if it is a station)
    with start <= instant < start + window_s, sorted by (instant, trip_id, stop_id)."""
    end = start + window_s
    stop_ids = [stop_id, *feed.children.get(stop_id, [])]
    first_day = datetime.fromtimestamp(start, feed.timezone).date() - timedelta(days=2)
    # +1 day: on a spring-forward day "noon minus 12h" is 23:00 of the previous
    # local date, so service day D can have departures on local date D-1.
    last_day = datetime.fromtimestamp(end, feed.timezone).date() + timedelta(days=1)

    result = []
    d = first_day
    while d <= last_day:
        active = feed.active_services(d)
        base = feed.noon_minus_12h(d)
        for sid in stop_ids:
            rows = feed.rows_by_stop.get(sid, [])
            lo = bisect.bisect_left(rows, (start - base,))
            hi = bisect.bisect_left(rows, (end - base,))
            for seconds, trip_id, sequence, service_id in rows[lo:hi]:
                if service_id in active:
                    result.append(
                        RefDeparture(trip_id, sid, sequence, d.isoformat(), base + seconds)
                    )
        d += timedelta(days=1)
    result.sort(key=lambda r: (r.instant, r.trip_id, r.stop_id, r.stop_sequence, r.service_date))
    return result
