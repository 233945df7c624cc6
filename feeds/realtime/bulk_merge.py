"""The usual trip updates merged all at once, with numpy: what makes a national snapshot cheap.

``merge.merge_one`` handles one TripUpdate in Python, a few microseconds per stop: 0.4 s for
the 153k stop time updates of every trip running at a peak hour of a national feed. Most
updates are of one plain kind, though: a scheduled trip found by id, SCHEDULED stop time
updates found by stop_sequence, each with a time or a delay, no trip-level delay. For those,
``merge_plain`` computes the same outcome column-wise over all of them:

1. per update, the checks ``merge_one`` makes before reading stop time updates (the same
   helpers: trip, service date, run);
2. the stop time updates of all of them as arrays, with every check of ``_check_updates``
   and ``_positions`` made on the arrays (a stop found by a sorted search);
3. ``propagate_rows``: expected times at updated stops, the last delay carried forward to
   the following ones;
4. overlay records and trip views made from the arrays by ``zip``.

An update that is not plain, or that any check would refuse, gets None: the caller merges it
the Python way, which also says why it is refused. The outcome of every update given a value
here is the one ``merge_one`` gives (``tests/test_realtime_bulk.py`` compares them on random
updates, plain and flawed).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from feeds.realtime.merge import CANCELLED, MAX_POSIX, _run_start, _service_date, scheduled_base
from feeds.realtime.model import TripUpdate
from feeds.realtime.propagation import ON_TIME_S
from feeds.realtime.records import Reject
from feeds.realtime.schedule_cache import ScheduleCache
from feeds.schedule.service_time import NO_TIME

I64 = npt.NDArray[np.int64]
MISSING = -(1 << 62)  # a value absent (no valid time, delay or instant comes near)
_NOT_PLAIN = frozenset(("ADDED", "NEW", "DUPLICATED", *CANCELLED))
_STATUS = np.array(["on_time", "delayed", "early"], dtype=object)


@dataclass(frozen=True, slots=True)
class PlainOutcome:
    """A merged update, as ``overlay.stop_records`` and ``trip_realtime_records`` give it."""

    record_stops: tuple[str, ...]
    records: tuple[tuple[Any, ...], ...]
    trips: dict[str, bytes]


def _column(values: Sequence[Any], missing: int = MISSING) -> I64:
    """Ints or None as int64, None as ``missing`` (``dict.get`` maps None, keeps the rest)."""
    return np.fromiter(map({None: missing}.get, values, values), np.int64, len(values))


def _spread(per_group: npt.NDArray[Any], sizes: I64) -> npt.NDArray[Any]:
    return np.repeat(per_group, sizes)


def _any_per_group(flags: npt.NDArray[np.bool_], group: I64, groups: int) -> npt.NDArray[np.bool_]:
    return np.bincount(group[flags], minlength=groups) > 0


def merge_plain(cache: ScheduleCache, updates: Sequence[TripUpdate], now: float
                ) -> list[PlainOutcome | None]:
    """Each update's outcome, or None for one to merge the Python way (not plain, or refused
    by some check)."""
    out: list[PlainOutcome | None] = [None] * len(updates)
    index = cache.index
    # 1. What merge_one checks before the stop time updates, update by update.
    chosen: list[int] = []
    trips: list[int] = []
    days: list[int] = []
    runs: list[int] = []
    for i, tu in enumerate(updates):
        td = tu.trip
        if (tu.delay is not None or not tu.updates or td.trip_id is None
                or td.relationship in _NOT_PLAIN
                or (tu.timestamp is not None and not 0 < tu.timestamp < MAX_POSIX)
                or (td.route_id is not None and not cache.route_known(td.route_id))):
            continue
        trip = cache.trip_index(td.trip_id)
        if trip is None:
            continue
        try:
            day = _service_date(cache, trip, td.start_date, now)
            run = _run_start(cache, trip, td.start_time)
        except Reject:
            continue
        chosen.append(i)
        trips.append(trip)
        days.append(day)
        runs.append(run)
    if not chosen:
        return out
    n_tu = len(chosen)

    # 2. The stop time updates as columns, and _check_updates' checks on them.
    sizes = np.array([len(updates[i].updates) for i in chosen], dtype=np.int64)
    stus = list(chain.from_iterable(updates[i].updates for i in chosen))
    n = len(stus)
    # (itemgetter maps: zip(*stus) would make an argument per update and cost 10 times more)
    seq_t, stop_id_t, arrival_t, departure_t, relationship_t = (
        list(map(itemgetter(field), stus)) for field in range(5))
    tu_of = _spread(np.arange(n_tu), sizes)
    seq = _column(seq_t)
    bad = seq == MISSING  # found by stop_id: not plain
    bad |= np.fromiter(map("SCHEDULED".__ne__, relationship_t), bool, n)
    absent = (MISSING, MISSING)
    events = {}
    for name, column in (("a", arrival_t), ("d", departure_t)):
        present = np.fromiter(map(operator.is_not, column, repeat(None)), bool, n)
        pairs: list[tuple[int | None, int | None]] = list(map({None: absent}.get, column,
                                                              column))
        time = _column(list(map(itemgetter(0), pairs)))
        delay = _column(list(map(itemgetter(1), pairs)))
        bad |= present & (time == MISSING) & (delay == MISSING)  # E044, an empty event
        bad |= (time != MISSING) & ((time <= 0) | (time >= MAX_POSIX))  # E001
        events[name] = (present, time, delay)
    a_present, a_time, a_delay = events["a"]
    d_present, d_time, d_delay = events["d"]
    bad |= ~a_present & ~d_present  # E043: dropped by _check_updates, not plain
    stop_ids = {s for s in stop_id_t if s is not None}
    unknown = {s for s in stop_ids if cache.stop_index(s) is None}
    if unknown:  # E011
        bad |= np.fromiter(map(unknown.__contains__, stop_id_t), bool, n)
    bad_tu = _any_per_group(bad, tu_of, n_tu)
    same = tu_of[1:] == tu_of[:-1]
    bad_tu[tu_of[1:][same & (seq[1:] <= seq[:-1])]] = True  # E002
    times = np.empty(2 * n, dtype=np.int64)  # arrival, departure, arrival... (E022)
    times[0::2], times[1::2] = a_time, d_time
    timed = times != MISSING
    times, owner = times[timed], np.repeat(tu_of, 2)[timed]
    bad_tu[owner[1:][(owner[1:] == owner[:-1]) & (times[1:] < times[:-1])]] = True

    # Each stop time update's StopTimes row (a sorted search of (update, stop_sequence)).
    st = index.stop_times
    trip_array = np.array(trips, dtype=np.int64)
    lo = st.offsets[trip_array]
    lengths = st.offsets[trip_array + 1] - lo
    ends = np.cumsum(lengths)
    rows = np.repeat(lo - (ends - lengths), lengths) + np.arange(int(ends[-1]))
    tu_of_row = _spread(np.arange(n_tu), lengths)
    row_keys = (tu_of_row << 32) | st.sequence[rows].astype(np.int64)
    at = np.searchsorted(row_keys, (tu_of << 32) | np.where(seq >= 0, seq, 0))
    found = at < len(row_keys)
    found[found] = row_keys[at[found]] == ((tu_of[found] << 32) | seq[found])
    bad_tu[tu_of[~found]] = True  # not found by stop_sequence: not plain (or refused)

    # 3. propagate_rows: from each update's first updated stop to its trip's end.
    first_row = np.full(n_tu, len(rows), dtype=np.int64)
    np.minimum.at(first_row, tu_of[found], at[found])
    row_number = np.arange(len(rows))
    out_row = row_number >= first_row[tu_of_row]
    arr_off, dep_off = st.arrival[rows].astype(np.int64), st.departure[rows].astype(np.int64)
    dep_off = np.where(dep_off != NO_TIME, dep_off, arr_off)  # _scheduled's fill
    arr_off = np.where(arr_off != NO_TIME, arr_off, dep_off)
    bad_tu[tu_of_row[out_row & ((arr_off == NO_TIME) | (dep_off == NO_TIME))]] = True
    good = ~bad_tu
    if not good.any():
        return out
    base = np.array([scheduled_base(index, t, d, r) for t, d, r in zip(trips, days, runs,
                                                                        strict=True)],
                    dtype=np.int64)
    arr_s = base[tu_of_row] + arr_off
    dep_s = base[tu_of_row] + dep_off
    # At updated stops (stop time updates of good updates only from here).
    keep = good[tu_of]
    at_row = at[keep]
    a_p, a_t, a_d = a_present[keep], a_time[keep], a_delay[keep]
    d_p, d_t, d_d = d_present[keep], d_time[keep], d_delay[keep]
    s_arr, s_dep = arr_s[at_row], dep_s[at_row]
    arr = np.where(a_t != MISSING, a_t, s_arr + a_d)  # time wins over delay
    arr[~a_p] = MISSING
    dep = np.where(d_t != MISSING, d_t, s_dep + d_d)
    dep[~d_p] = MISSING
    no_arr, no_dep = arr == MISSING, dep == MISSING
    dep = np.where(no_dep, np.maximum(arr, s_dep + (arr - s_arr)), dep)
    arr = np.where(no_arr, np.minimum(dep, s_arr + (dep - s_dep)), arr)
    # Every stop from the first update on, the last update's delay carried forward.
    updated = np.full(len(rows), -1, dtype=np.int64)
    updated[at_row] = np.arange(len(at_row))
    last = np.maximum.accumulate(np.where(updated >= 0, row_number, -1))
    emit = out_row & good[tu_of_row]
    emit_rows = np.flatnonzero(emit)
    source = updated[last[emit_rows]]
    delay = (dep - s_dep)[source]
    is_update = updated[emit_rows] >= 0
    arrival = np.where(is_update, arr[updated[emit_rows]], arr_s[emit_rows] + delay)
    departure = np.where(is_update, dep[updated[emit_rows]], dep_s[emit_rows] + delay)
    status = _STATUS[np.where((delay > -ON_TIME_S) & (delay < ON_TIME_S), 0,
                              np.where(delay > 0, 1, 2))]

    # 4. Records (not at a trip's last stop) and trip views: made for all rows at once, then
    # sliced update by update (each update's rows end with its last stop's).
    owner_rows = tu_of_row[emit_rows]
    last_stop = rows[emit_rows] == (lo + lengths - 1)[owner_rows]
    emitted = np.bincount(owner_rows, minlength=n_tu)
    recorded = emitted - np.bincount(owner_rows[last_stop], minlength=n_tu)
    seqs = st.sequence[rows[emit_rows]].tolist()
    columns = (arrival.tolist(), departure.tolist(), delay.tolist(), status.tolist())
    values = list(zip(*columns, strict=True))
    unique_stops, stop_at = np.unique(st.stop[rows[emit_rows]], return_inverse=True)
    ids = np.array([cache.stop_id(s) for s in unique_stops.tolist()], dtype=object)
    stop_list = ids[stop_at].tolist()
    good_tus = np.flatnonzero(good)
    trip_ids = [cache.trip_id(trips[k]) for k in good_tus.tolist()]
    vehicles = [updates[chosen[k]].vehicle_id for k in good_tus.tolist()]
    per_row = emitted[good_tus]
    records = list(zip(
        repeat("s"), np.repeat(np.array(trip_ids, dtype=object), per_row).tolist(),
        np.repeat(np.array(days)[good_tus], per_row).tolist(),
        np.repeat(np.array(runs)[good_tus], per_row).tolist(), seqs, *columns,
        np.repeat(np.array(vehicles, dtype=object), per_row).tolist(),
        repeat(None), repeat(None), repeat(None), repeat(None)))
    start = 0
    for k, trip_id, vehicle, size, kept in zip(good_tus.tolist(), trip_ids, vehicles,
                                               per_row.tolist(), recorded[good_tus].tolist(),
                                               strict=True):
        end = start + size
        view = orjson.dumps({"status": "scheduled", "vehicle_id": vehicle, "stops": dict(
            zip(seqs[start:end], values[start:end], strict=True))},
            option=orjson.OPT_NON_STR_KEYS)
        out[chosen[k]] = PlainOutcome(tuple(stop_list[start:start + kept]),
                                      tuple(records[start:start + kept]),
                                      {f"{trip_id}|{days[k]}|{runs[k]}": view})
        start = end
    return out
