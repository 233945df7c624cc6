"""GTFS-Realtime decode, validation and merge on the real captures (pure: no store, no network).

Expected stop times come from tests/reference/rt_reference.py, a small merge written from the
GTFS-Realtime reference that shares no code with feeds/ or gateway/. Counts and defects quoted
below were read from the captures themselves (see tests/fixtures/PROVENANCE.md).

Known bugs are tests marked ``xfail(strict=True)`` with a reason starting "BUG:".
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import math
import zipfile
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.protobuf import json_format
from google.transit import gtfs_realtime_pb2 as pb
from reference.rt_reference import RefStop, expected_stops, load_static, origin

from feeds.realtime.alerts import AlertIndex, alert_json
from feeds.realtime.board import BoardEntry, realtime_board
from feeds.realtime.decode import decode, parse_json_message, parse_message, to_snapshot
from feeds.realtime.header import RealtimeRejected, check_header
from feeds.realtime.merge import merge_trip_updates
from feeds.realtime.model import FeedSnapshot, StopTimeEvent, StopTimeUpdate
from feeds.realtime.overlay import K_TRIP, build_overlays, decode_overlay
from feeds.realtime.propagation import propagate
from feeds.realtime.records import MergeResult, StopRealtime
from feeds.realtime.vehicles import process_vehicles
from feeds.schedule.index import ScheduleIndex
from feeds.static.pipeline import build_static

FIXTURES = Path(__file__).parent / "fixtures"
GTFS = FIXTURES / "gtfs"
RT = FIXTURES / "rt"
ERRORS = RT / "caltrain" / "errors-json"
CALTRAIN = GTFS / "caltrain-2023.zip"
BART = GTFS / "bart-2019.zip"
SOUND = GTFS / "sound-transit-link-2023.zip"
BULL = GTFS / "usf-bullrunner.zip"
CT_TU = RT / "caltrain" / "trip-updates-2023-11-07.pb"
CT_VP = RT / "caltrain" / "vehicle-positions-2023-11-07.pb"
CT_NOW = 1699405534  # header timestamp of CT_TU = 2023-11-07 17:05:34 PST
LA = ZoneInfo("America/Los_Angeles")
RT_STATUSES = ("on_time", "delayed", "early")
STU = pb.TripUpdate.StopTimeUpdate


# --------------------------------------------------------------------------- helpers


@cache
def _index(zip_path: Path) -> ScheduleIndex:
    return build_static(zip_path, zip_path.stem, "v").index


def _pb(path: Path) -> pb.FeedMessage:
    """The capture as a protobuf message, for the reference (no production code)."""
    msg = pb.FeedMessage()
    if path.suffix == ".json":
        json_format.Parse(path.read_bytes(), msg, ignore_unknown_fields=True)
    else:
        msg.ParseFromString(path.read_bytes())
    return msg


def _snapshot(path: Path) -> FeedSnapshot:
    raw = path.read_bytes()
    return to_snapshot(parse_json_message(raw) if path.suffix == ".json" else parse_message(raw),
                       "v")


def _snap_of(msg: pb.FeedMessage) -> FeedSnapshot:
    return to_snapshot(parse_message(msg.SerializeToString()), "v")


def _ordinal(yyyymmdd: str) -> int:
    return dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])).toordinal()


def _prod_stops(index: ScheduleIndex, result: MergeResult, trip_id: str, start_date: str
                ) -> dict[int, StopRealtime]:
    trt = result.trips[(index.trips.index_of[trip_id], _ordinal(start_date), -1)]
    seq = index.stop_times.sequence
    return {int(seq[row]): s for row, s in trt.stops.items()}


def _check_status(p: StopRealtime) -> bool:
    if p.status not in RT_STATUSES or p.delay is None:
        return False
    return not ((p.status == "delayed" and p.delay <= 0) or (p.status == "early" and p.delay >= 0)
                or (p.delay == 0 and p.status != "on_time"))


def _assert_equals_reference(zip_path: Path, msg: pb.FeedMessage, result: MergeResult,
                             trip_id: str, start_date: str) -> dict[int, RefStop]:
    ref = expected_stops(zip_path, msg, trip_id, start_date)
    prod = _prod_stops(_index(zip_path), result, trip_id, start_date)
    wrong = []
    for seq, r in ref.items():
        p = prod.get(seq)
        if r.status == "scheduled":
            ok = p is None
        elif r.status in ("updated", "propagated"):
            ok = p is not None and (p.arrival, p.departure, p.delay) == (
                r.arrival, r.departure, r.delay) and _check_status(p)
        else:
            ok = p is not None and (p.status, p.arrival, p.departure, p.delay) == (
                r.status, r.arrival, r.departure, r.delay)
        if not ok:
            wrong.append((seq, r, p))
    assert not wrong, f"{trip_id} {start_date}: {wrong[:5]}"
    assert set(prod) <= set(ref)
    return ref


def _overlays(index: ScheduleIndex, result: MergeResult) -> dict[int, list[Any]]:
    return {index.stops.index_of[s]: decode_overlay(b)
            for s, b in build_overlays(index, result).items()}


def _board(index: ScheduleIndex, result: MergeResult, stop_id: str, start: int, window: int,
           include_cancelled: bool = False) -> list[BoardEntry]:
    return realtime_board(index, index.stops.index_of[stop_id], start, window, None,
                          _overlays(index, result), include_cancelled)


def _stu(seq: int | None = None, stop_id: str | None = None, arr: dict[str, int] | None = None,
         dep: dict[str, int] | None = None, rel: int = STU.SCHEDULED) -> STU:
    u = STU(schedule_relationship=rel)
    if seq is not None:
        u.stop_sequence = seq
    if stop_id is not None:
        u.stop_id = stop_id
    if arr is not None:
        u.arrival.SetInParent()
        for k, v in arr.items():
            setattr(u.arrival, k, v)
    if dep is not None:
        u.departure.SetInParent()
        for k, v in dep.items():
            setattr(u.departure, k, v)
    return u


def _feed(ts: int, *trip_updates: pb.TripUpdate) -> pb.FeedMessage:
    msg = pb.FeedMessage()
    msg.header.gtfs_realtime_version = "2.0"
    msg.header.incrementality = pb.FeedHeader.FULL_DATASET
    msg.header.timestamp = ts
    for i, tu in enumerate(trip_updates):
        entity = msg.entity.add(id=f"e{i}")
        entity.trip_update.CopyFrom(tu)
    return msg


def _tu(trip_id: str, start_date: str | None, *updates: STU, rel: int = 0,
        delay: int | None = None) -> pb.TripUpdate:
    tu = pb.TripUpdate()
    tu.trip.trip_id = trip_id
    tu.trip.schedule_relationship = rel
    if start_date is not None:
        tu.trip.start_date = start_date
    if delay is not None:
        tu.delay = delay
    tu.stop_time_update.extend(updates)
    return tu


def _csv(zip_path: Path, name: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(zip_path) as zf:
        return list(csv.DictReader(io.TextIOWrapper(zf.open(name), encoding="utf-8-sig")))


# --------------------------------------------------------------------------- Caltrain, clean pair


def _caltrain() -> tuple[pb.FeedMessage, MergeResult]:
    msg = _pb(CT_TU)
    return msg, merge_trip_updates(_index(CALTRAIN), _snapshot(CT_TU).trip_updates, CT_NOW)


def test_caltrain_all_19_trips_match() -> None:
    msg, result = _caltrain()
    assert msg.header.timestamp == CT_NOW
    assert result.total == 19 and result.matched == 19 and result.match_rate == 1.0
    assert len(result.trips) == 19 and not result.added
    assert not result.rejected and not result.flagged
    ids = {e.trip_update.trip.trip_id for e in msg.entity}
    index = _index(CALTRAIN)
    assert {index.trips.ids[t] for t, _, _ in result.trips} == ids
    assert {day for _, day, _ in result.trips} == {_ordinal("20231107")}


@pytest.mark.parametrize("trip_id", sorted(e.trip_update.trip.trip_id for e in _pb(CT_TU).entity))
def test_caltrain_every_stop_equals_reference(trip_id: str) -> None:
    msg, result = _caltrain()
    ref = _assert_equals_reference(CALTRAIN, msg, result, trip_id, "20231107")
    statuses = Counter(r.status for r in ref.values())
    assert statuses["updated"] >= 1  # every entity has at least one timed update


def test_caltrain_reference_is_not_vacuous() -> None:
    msg, _ = _caltrain()
    counts: Counter[str] = Counter()
    delays = set()
    for e in msg.entity:
        for r in expected_stops(CALTRAIN, msg, e.trip_update.trip.trip_id, "20231107").values():
            counts[r.status] += 1
            delays.add(r.delay)
    # 220 StopTimeUpdates, all timed; the stops before each trip's first update get nothing.
    assert counts["updated"] == 220
    assert counts["scheduled"] > 0
    assert len(delays) > 20


@pytest.mark.parametrize("stop_id", ["palo_alto", "sj_diridon", "san_francisco", "place_MLBR",
                                     "70262", "70012", "70221"])
def test_caltrain_boards_equal_reference(stop_id: str) -> None:
    msg, result = _caltrain()
    index = _index(CALTRAIN)
    refs = {e.trip_update.trip.trip_id: expected_stops(CALTRAIN, msg, e.trip_update.trip.trip_id,
                                                       "20231107") for e in msg.entity}
    start, window = CT_NOW - 1800, 3 * 3600
    entries = _board(index, result, stop_id, start, window)
    assert [e.when for e in entries] == sorted(e.when for e in entries)
    st = index.stop_times
    members = {index.stops.ids[m] for m in index.stops.board_members(index.stops.index_of[stop_id])}
    seen = set()
    for e in entries:
        assert e.scheduled is not None and e.added is None
        assert start <= e.when < start + window
        tid = index.trips.ids[e.scheduled.trip]
        seq = int(st.sequence[e.scheduled.row])
        r = refs.get(tid, {}).get(seq) if e.scheduled.service_date == _ordinal("20231107") else None
        if r is not None and r.status in ("updated", "propagated"):
            assert (e.expected, e.delay, e.realtime) == (r.departure, r.delay, True), (tid, seq)
            assert e.status in RT_STATUSES
            seen.add((tid, seq))
        else:
            assert (e.expected, e.delay, e.realtime, e.status) == (None, None, False, "scheduled")
    expected_rt = {(tid, seq) for tid, ref in refs.items() for seq, r in ref.items()
                   if seq != max(ref) and r.stop_id in members
                   and r.status in ("updated", "propagated")
                   and r.departure is not None and start <= r.departure < start + window}
    assert seen == expected_rt
    assert seen, "the window should hold realtime departures"


# --------------------------------------------------------------------------- propagate (unit)

SCHED_ARR: list[int | None] = [1000, 2000, 3000, 4000, 5000]
SCHED_DEP: list[int | None] = [1000, 2060, 3000, 4000, 5000]  # 60 s dwell at position 1


def _u(arr: StopTimeEvent | None = None, dep: StopTimeEvent | None = None,
       rel: str = "SCHEDULED") -> StopTimeUpdate:
    return StopTimeUpdate(None, None, arr, dep, rel)


def test_propagate_time_wins_over_delay() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {1: _u(StopTimeEvent(time=2100, delay=999),
                                                  StopTimeEvent(time=2200, delay=-5))})
    assert (out[1].arrival, out[1].departure, out[1].delay) == (2100, 2200, 140)
    assert (out[2].arrival, out[2].delay, out[2].status) == (3140, 140, "delayed")


def test_propagate_missing_departure_takes_arrival_delay() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {1: _u(StopTimeEvent(delay=120))})
    assert (out[1].arrival, out[1].departure, out[1].delay) == (2120, 2180, 120)


def test_propagate_missing_arrival_takes_departure_delay() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {1: _u(None, StopTimeEvent(time=2000))})
    assert (out[1].arrival, out[1].departure, out[1].delay) == (1940, 2000, -60)
    assert out[1].status == "early"


def test_propagate_forward_only() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {2: _u(None, StopTimeEvent(time=3300))})
    assert 0 not in out and 1 not in out
    assert [(out[k].arrival, out[k].departure, out[k].delay) for k in (2, 3, 4)] == [
        (3300, 3300, 300), (4300, 4300, 300), (5300, 5300, 300)]
    assert {out[k].status for k in (2, 3, 4)} == {"delayed"}


def test_propagate_later_update_replaces_delay() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {0: _u(StopTimeEvent(delay=300)),
                                           3: _u(StopTimeEvent(delay=10))})
    assert [out[k].delay for k in range(5)] == [300, 300, 300, 10, 10]
    assert out[3].status == "on_time"


def test_propagate_skipped_carries_delay_across() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {1: _u(StopTimeEvent(delay=120)),
                                           2: _u(rel="SKIPPED")})
    assert out[2].status == "skipped" and out[2].delay == 120
    assert (out[3].arrival, out[3].delay, out[3].status) == (4120, 120, "delayed")
    assert out[4].departure == 5120


def test_propagate_skipped_without_prior_delay() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {1: _u(rel="SKIPPED")})
    assert out[1] == StopRealtime(None, None, None, "skipped")
    assert set(out) == {1}


def test_propagate_no_data_stops_propagation_until_next_update() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {0: _u(StopTimeEvent(delay=120)),
                                           2: _u(rel="NO_DATA"), 4: _u(StopTimeEvent(delay=30))})
    assert out[1].delay == 120
    assert out[2] == StopRealtime(None, None, None, "no_data")
    assert 3 not in out
    assert (out[4].arrival, out[4].delay) == (5030, 30)


def test_propagate_trip_level_delay() -> None:
    out = propagate(SCHED_ARR, SCHED_DEP, {}, trip_delay=90)
    assert [(out[k].arrival, out[k].delay) for k in range(5)] == [
        (a + 90, 90) for a in (1000, 2000, 3000, 4000, 5000)]
    out = propagate(SCHED_ARR, SCHED_DEP, {3: _u(StopTimeEvent(delay=10))}, trip_delay=90)
    assert [out[k].delay for k in range(5)] == [90, 90, 90, 10, 10]


# --------------------------------------------------------------------------- merge rules, synthetic


def _synthetic(*tus: pb.TripUpdate, now: int = CT_NOW) -> tuple[pb.FeedMessage, MergeResult]:
    msg = _feed(now, *tus)
    return msg, merge_trip_updates(_index(CALTRAIN), _snap_of(msg).trip_updates, now)


# trip 124 (23 stops, 15:37 San Francisco -> Tamien) on Tue 2023-11-07
SYNTHETIC = {
    "delay_only": [_stu(5, arr={"delay": 240})],
    "time_wins_over_delay": [_stu(5, arr={"time": 1699399000, "delay": 999},
                                  dep={"time": 1699399030, "delay": -999})],
    "arrival_only_then_departure_only": [_stu(5, arr={"delay": 60}),
                                         _stu(9, dep={"delay": 420})],
    "skipped_after_update": [_stu(5, dep={"delay": 180}), _stu(6, rel=STU.SKIPPED),
                             _stu(7, rel=STU.SKIPPED)],
    "skipped_first": [_stu(3, rel=STU.SKIPPED), _stu(8, arr={"delay": 30})],
    "no_data_then_update": [_stu(4, dep={"delay": 200}), _stu(6, rel=STU.NO_DATA),
                            _stu(12, arr={"delay": -90})],
    "by_stop_id_only": [_stu(None, "70172", dep={"delay": 75})],  # Palo Alto, once in 124
    "sequence_wins_over_stop_id": [_stu(5, "70172", dep={"delay": 75})],
    "trip_delay_only": [],
    "early": [_stu(2, dep={"delay": -120})],
}


@pytest.mark.parametrize("case", sorted(SYNTHETIC))
def test_synthetic_rules_equal_reference(case: str) -> None:
    delay = 150 if case == "trip_delay_only" else None
    msg, result = _synthetic(_tu("124", "20231107", *SYNTHETIC[case], delay=delay))
    assert not result.rejected and not result.flagged and result.matched == 1
    ref = _assert_equals_reference(CALTRAIN, msg, result, "124", "20231107")
    assert {r.status for r in ref.values()} != {"scheduled"}


def test_trip_level_delay_applies_before_first_update() -> None:
    msg, result = _synthetic(_tu("124", "20231107", _stu(10, dep={"delay": 30}), delay=150))
    ref = _assert_equals_reference(CALTRAIN, msg, result, "124", "20231107")
    assert ref[1].delay == 150


@pytest.mark.parametrize("rel", [pb.TripDescriptor.CANCELED, pb.TripDescriptor.DELETED])
def test_cancelled_trip_every_stop_cancelled_and_hidden(rel: int) -> None:
    msg, result = _synthetic(_tu("124", "20231107", rel=rel))
    ref = _assert_equals_reference(CALTRAIN, msg, result, "124", "20231107")
    assert {r.status for r in ref.values()} == {"cancelled"} and len(ref) == 23
    index = _index(CALTRAIN)
    # 124 leaves Palo Alto (70172, seq 14) at 16:26 PST
    start = int(dt.datetime(2023, 11, 7, 16, 0, tzinfo=LA).timestamp())
    trip = index.trips.index_of["124"]
    shown = [e for e in _board(index, result, "palo_alto", start, 3600)
             if e.scheduled is not None and e.scheduled.trip == trip]
    assert shown == []
    shown = [e for e in _board(index, result, "palo_alto", start, 3600, include_cancelled=True)
             if e.scheduled is not None and e.scheduled.trip == trip]
    assert [(e.status, e.expected, e.realtime) for e in shown] == [("cancelled", None, True)]


def test_same_scheduled_instance_twice_second_rejected() -> None:
    _, result = _synthetic(_tu("124", "20231107", _stu(5, arr={"delay": 60})),
                           _tu("124", "20231107", _stu(5, arr={"delay": 600})))
    assert result.rejected == Counter({"duplicate_trip_instance": 1})
    assert len(result.trips) == 1 and result.total == 2
    stops = _prod_stops(_index(CALTRAIN), result, "124", "20231107")
    assert stops[5].delay == 60  # the first one wins


def test_stop_time_update_matching_no_stop_rejected() -> None:
    _, result = _synthetic(_tu("124", "20231107", _stu(99, dep={"delay": 60})),
                           _tu("126", "20231107", _stu(None, "70011", dep={"delay": 60})))
    # seq 99 is not in trip 124; 70011 (San Francisco northbound platform) is not in trip 126
    assert result.rejected == Counter({"stop_sequence_not_in_trip": 1, "stop_not_in_trip": 1})


def test_no_data_with_times_rejected() -> None:
    # E042 in the validators' numbering (rt_merge.py labels it E044)
    _, result = _synthetic(_tu("124", "20231107",
                               _stu(5, arr={"delay": 60}, rel=STU.NO_DATA)))
    assert result.rejected == Counter({"times_with_no_data": 1})


def test_not_running_on_date_rejected() -> None:
    # Caltrain weekday trip 124 on Saturday 2023-11-11
    _, result = _synthetic(_tu("124", "20231111", _stu(5, arr={"delay": 60})))
    assert result.rejected == Counter({"no_service_on_date": 1})


# --------------------------------------------------------------------------- after midnight


def test_yesterdays_service_day_after_midnight() -> None:
    """Trip 146 (weekday, 24:03 San Francisco -> 25:43 Tamien) of Tue 2023-11-07 runs on
    Wednesday morning; at 00:30 its update (start_date 20231107) must land on it."""
    now = int(dt.datetime(2023, 11, 8, 0, 30, tzinfo=LA).timestamp())
    tz, trips = load_static(str(CALTRAIN))
    assert max(s[2] for s in trips["146"]) > 86400  # times pass 24:00
    updates = [_stu(7, dep={"delay": 300})]
    for start_date in ("20231107", None):
        msg, result = _synthetic(_tu("146", start_date, *updates), now=now)
        assert result.matched == 1 and not result.rejected, start_date
        (key,) = result.trips
        assert key[1] == _ordinal("20231107")
        ref = _assert_equals_reference(CALTRAIN, msg, result, "146", "20231107")
        index = _index(CALTRAIN)
        on_board = 0
        for seq, r in ref.items():
            if seq == max(ref) or r.status == "scheduled":
                continue
            entries = [e for e in _board(index, result, r.stop_id, now, 2 * 3600)
                       if e.scheduled is not None
                       and index.trips.ids[e.scheduled.trip] == "146"]
            assert len(entries) == 1, (seq, entries)
            e = entries[0]
            assert e.scheduled is not None
            assert e.scheduled.service_date == _ordinal("20231107")
            assert (e.expected, e.delay, e.status) == (r.departure, 300, "delayed")
            assert e.scheduled.instant == origin("20231107", tz) + next(
                s[3] for s in trips["146"] if s[0] == seq)
            assert dt.datetime.fromtimestamp(e.expected, LA).date() == dt.date(2023, 11, 8)
            on_board += 1
        assert on_board == 23 - 7  # seq 7..22 are departures after midnight


# --------------------------------------------------------------------------- BART


def _bart() -> tuple[pb.FeedMessage, MergeResult]:
    path = RT / "bart" / "trip-updates-2019-08-07.pb"
    msg = _pb(path)
    snap = _snapshot(path)
    return msg, merge_trip_updates(_index(BART), snap.trip_updates, msg.header.timestamp)


def test_bart_counts_are_explained_by_the_data() -> None:
    msg, result = _bart()
    static_ids = {r["trip_id"] for r in _csv(BART, "trips.txt")}
    tus = [e.trip_update for e in msg.entity]
    added = [t for t in tus if t.trip.schedule_relationship == pb.TripDescriptor.ADDED]
    scheduled = [t for t in tus if t.trip.schedule_relationship == pb.TripDescriptor.SCHEDULED]
    assert (len(tus), len(added), len(scheduled)) == (91, 8, 83)

    def unordered(t: pb.TripUpdate) -> bool:
        seqs = [u.stop_sequence for u in t.stop_time_update]
        return any(b <= a for a, b in itertools.pairwise(seqs))

    missing = [t for t in scheduled if t.trip.trip_id not in static_ids]
    assert len(missing) == 18
    # 8 of the unknown trips (249WKDY..263WKDY) list stop_sequence 1 twice: the ordering check
    # comes first, so they count as unordered, the other 10 as trip_not_found.
    missing_unordered = [t for t in missing if unordered(t)]
    assert sorted(t.trip.trip_id for t in missing_unordered) == [
        f"{n}WKDY" for n in range(249, 264, 2)]
    known_unordered = [t.trip.trip_id for t in scheduled
                       if t.trip.trip_id in static_ids and unordered(t)]
    assert known_unordered == ["3711056WKDY"]  # sequences 1, 15, 17, 16, ...
    assert result.rejected == Counter({"trip_not_found": 10, "unordered_stop_time_updates": 9})
    assert len(result.trips) == 83 - 18 - 1 == 64
    assert sorted(a.trip_id for a in result.added) == sorted(t.trip.trip_id for t in added)
    assert all(a.trip_id not in static_ids and a.kind == "added" for a in result.added)
    assert result.total == 91 and result.matched == 72
    assert result.match_rate == round(72 / 91, 4)


def test_bart_scheduled_trips_equal_reference() -> None:
    msg, result = _bart()
    index = _index(BART)
    assert {day for _, day, _ in result.trips} == {_ordinal("20190807")}
    n = 0
    for trip, _, _ in result.trips:
        ref = _assert_equals_reference(BART, msg, result, index.trips.ids[trip], "20190807")
        n += sum(r.status == "updated" for r in ref.values())
    assert n > 500


def test_bart_added_trips_as_listed() -> None:
    msg, result = _bart()
    index = _index(BART)
    by_id = {a.trip_id: a for a in result.added}
    for e in msg.entity:
        t = e.trip_update
        if t.trip.schedule_relationship != pb.TripDescriptor.ADDED:
            continue
        a = by_id[t.trip.trip_id]
        assert [(index.stops.ids[s.stop], s.arrival, s.departure, s.status) for s in a.stops] == [
            (u.stop_id, u.arrival.time, u.departure.time, "added") for u in t.stop_time_update]
        assert a.service_date == _ordinal("20190807")
        assert a.headsign == index.stops.names[index.stops.index_of[
            t.stop_time_update[-1].stop_id]]


def test_bart_added_trips_on_boards_of_their_stops() -> None:
    msg, result = _bart()
    index = _index(BART)
    overlays = _overlays(index, result)
    checked = 0
    for e in msg.entity:
        t = e.trip_update
        if t.trip.schedule_relationship != pb.TripDescriptor.ADDED:
            continue
        for u in t.stop_time_update[:-1]:  # the last listed stop is no departure
            when = u.departure.time
            entries = realtime_board(index, index.stops.index_of[u.stop_id], when - 60, 120,
                                     None, overlays)
            mine = [x for x in entries if x.added is not None and x.added[K_TRIP] == t.trip.trip_id]
            assert len(mine) == 1, (t.trip.trip_id, u.stop_id)
            x = mine[0]
            assert (x.scheduled, x.expected, x.status, x.realtime) == (None, when, "added", True)
            checked += 1
        last = t.stop_time_update[-1]
        entries = realtime_board(index, index.stops.index_of[last.stop_id],
                                 last.arrival.time - 60, 120, None, overlays)
        assert not [x for x in entries if x.added is not None
                    and x.added[K_TRIP] == t.trip.trip_id]
    assert checked == sum(len(e.trip_update.stop_time_update) - 1 for e in msg.entity
                          if e.trip_update.trip.schedule_relationship == pb.TripDescriptor.ADDED)
    assert checked == 47


# --------------------------------------------------------------------------- Sound Transit JSON

ST_DIR = RT / "sound-transit-json"
# file -> (rejected, flagged, DUPLICATED copies kept); each checked against the data below
ST_EXPECTED: dict[str, tuple[dict[str, int], dict[str, int], int]] = {
    # the DUPLICATED trip's times go back 10 min at stop_sequence 10 (and 10..15 appear twice)
    "TripUpdate-DUPLICATED-1690679342.json": ({"decreasing_times": 1}, {}, 0),
    # dated 20230731, after calendar.txt ends (20230730): every SCHEDULED trip is refused; the
    # DUPLICATED one has no StopTimeUpdate and no trip_properties; 1 trip lists 18 untimed STUs
    "TripUpdate-DUPLICATED-Empty-1690865133.json": (
        {"no_service_on_date": 14}, {"duplicated_without_properties": 1,
                                     "missing_stop_time_event": 18}, 1),
    # the DUPLICATED trip's times fall back by ~40 min at stop_sequence 16
    "trip_update_1683740698.json": ({"decreasing_times": 1}, {}, 0),
    # the DUPLICATED trip departs stop_sequence 16 before it arrives there
    "trip_update_1683740798.json": ({"decreasing_times": 1}, {"missing_stop_time_event": 18}, 0),
    # a Sunday trip duplicated on Wednesday 20230510: a DUPLICATED copy may run any day
    "trip_update_1683746223_bad.json": ({}, {"duplicated_without_properties": 1}, 1),
    "trip_update_1683915993.json": ({}, {"duplicated_without_properties": 1}, 1),
}
ST_TWICE = ["trip_update_1683914528.json", "trip_update_1683915543.json"]


def _st(name: str) -> tuple[pb.FeedMessage, MergeResult]:
    path = ST_DIR / name
    msg = _pb(path)
    return msg, merge_trip_updates(_index(SOUND), _snapshot(path).trip_updates,
                                   msg.header.timestamp)


def _dup_entities(msg: pb.FeedMessage) -> list[pb.TripUpdate]:
    return [e.trip_update for e in msg.entity
            if e.trip_update.trip.schedule_relationship == pb.TripDescriptor.DUPLICATED]


def test_sound_transit_files_all_covered() -> None:
    names = {p.name for p in ST_DIR.glob("*.json") if not p.name.startswith("vehicle_position")}
    assert names == set(ST_EXPECTED) | set(ST_TWICE)


@pytest.mark.parametrize("name", sorted(ST_EXPECTED))
def test_sound_transit_counts(name: str) -> None:
    msg, result = _st(name)
    rejected, flagged, copies = ST_EXPECTED[name]
    assert dict(result.rejected) == rejected
    assert dict(result.flagged) == flagged
    assert [a.kind for a in result.added] == ["duplicated"] * copies
    dups = _dup_entities(msg)
    assert len(dups) == 1 and not dups[0].HasField("trip_properties")
    if "decreasing_times" in rejected:
        times = [ev.time for u in dups[0].stop_time_update for ev in (u.arrival, u.departure)
                 if ev.HasField("time")]
        assert any(b < a for a, b in itertools.pairwise(times))
    assert result.total == len(msg.entity)
    assert len(result.trips) == result.total - sum(rejected.values()) - copies


@pytest.mark.parametrize("name", sorted(ST_EXPECTED) + ST_TWICE)
def test_sound_transit_scheduled_equal_reference(name: str) -> None:
    """Every SCHEDULED instance equals the reference, computed without TripUpdate.delay (see
    test_trip_level_delay_applies_before_first_update: that rule is a known bug)."""
    msg, _ = _st(name)
    for e in msg.entity:
        e.trip_update.ClearField("delay")
    result = merge_trip_updates(_index(SOUND), _snap_of(msg).trip_updates, msg.header.timestamp)
    index = _index(SOUND)
    for trip, day, _ in result.trips:
        _assert_equals_reference(SOUND, msg, result, index.trips.ids[trip],
                                 dt.date.fromordinal(day).strftime("%Y%m%d"))


def test_sound_transit_empty_date_is_after_calendar() -> None:
    msg, result = _st("TripUpdate-DUPLICATED-Empty-1690865133.json")
    end = max(r["end_date"] for r in _csv(SOUND, "calendar.txt"))
    assert end == "20230730"
    dates = {e.trip_update.trip.start_date for e in msg.entity}
    assert dates == {"20230731"}
    scheduled = [e for e in msg.entity
                 if e.trip_update.trip.schedule_relationship == pb.TripDescriptor.SCHEDULED]
    assert result.rejected["no_service_on_date"] == len(scheduled) == 14


def _template_shift(template: str, start_date: str, start_time: str
                    ) -> list[tuple[int, str, int, int]]:
    tz, trips = load_static(str(SOUND))
    stops = trips[template]
    h, m, s = (int(x) for x in start_time.split(":"))
    shift = origin(start_date, tz) + h * 3600 + m * 60 + s - stops[0][3]
    return [(seq, sid, a + shift, d + shift) for seq, sid, a, d in stops]


def test_sound_transit_duplicated_empty_by_hand() -> None:
    msg, result = _st("TripUpdate-DUPLICATED-Empty-1690865133.json")
    (dup,) = _dup_entities(msg)
    assert (dup.trip.trip_id, dup.trip.start_date, dup.trip.start_time) == (
        "LLR_2023-03-18_Weekday_100479_1015", "20230731", "21:43:00")
    assert len(dup.stop_time_update) == 0
    (a,) = result.added
    index = _index(SOUND)
    assert a.trip_id == "LLR_2023-03-18_Weekday_100479_1015@20230731T21:43:00"
    assert (a.kind, a.service_date, index.trips.ids[a.template]) == (
        "duplicated", _ordinal("20230731"), dup.trip.trip_id)
    assert a.route_id == "100479" and a.vehicle_id == "861.023530"
    want = _template_shift(dup.trip.trip_id, "20230731", "21:43:00")
    # by hand: the template leaves its first stop at 06:01:00; the copy at 21:43 PDT on 07-31
    first = dt.datetime.fromtimestamp(want[0][3], LA)
    assert first == dt.datetime(2023, 7, 31, 21, 43, tzinfo=LA)
    got = [(s.stop_sequence, index.stops.ids[s.stop], s.arrival, s.departure, s.scheduled,
            s.status) for s in a.stops]
    assert got == [(seq, sid, arr, dep, dep, "duplicated") for seq, sid, arr, dep in want]
    # and it is on the board of its first stop, as an added departure at 21:43
    entries = _board(index, result, want[0][1], want[0][3] - 60, 120)
    mine = [e for e in entries if e.added is not None and e.added[K_TRIP] == a.trip_id]
    assert [(e.expected, e.status, e.delay) for e in mine] == [(want[0][3], "added", 0)]


def test_sound_transit_template_first_departure() -> None:
    # by hand from stop_times.txt: the template used above starts at 06:01:00
    rows = [r for r in _csv(SOUND, "stop_times.txt")
            if r["trip_id"] == "LLR_2023-03-18_Weekday_100479_1015"]
    first = min(rows, key=lambda r: int(r["stop_sequence"]))
    assert first["departure_time"] == "06:01:00" and len(rows) == 11


def test_sound_transit_duplicated_with_update_by_hand() -> None:
    msg, result = _st("trip_update_1683915993.json")
    (dup,) = _dup_entities(msg)
    assert (dup.trip.start_date, dup.trip.start_time) == ("20230512", "10:23:00")
    (u,) = dup.stop_time_update
    assert (u.stop_sequence, u.arrival.time, u.arrival.delay, u.departure.time) == (
        19, 1683915903, 333, 1683915933)
    (a,) = result.added
    want = _template_shift(dup.trip.trip_id, "20230512", "10:23:00")
    assert [s.scheduled for s in a.stops] == [d for _, _, _, d in want]
    last = a.stops[-1]
    assert (last.stop_sequence, last.arrival, last.departure) == (19, 1683915903, 1683915933)
    assert last.arrival == want[-1][2] + 333  # the producer's time and delay agree here
    assert last.scheduled == want[-1][3]


@pytest.mark.parametrize("name", ST_TWICE)
def test_sound_transit_same_trip_twice_data(name: str) -> None:
    msg, result = _st(name)
    dups = _dup_entities(msg)
    assert len(dups) == 2 and dups[0].trip == dups[1].trip
    assert dups[0].vehicle.id == dups[1].vehicle.id
    assert len({e.id for e in msg.entity}) == len(msg.entity)  # distinct entity ids
    assert result.flagged["duplicated_without_properties"] == 2


@pytest.mark.parametrize("name", ST_TWICE)
def test_sound_transit_same_trip_twice_second_rejected(name: str) -> None:
    _, result = _st(name)
    assert len(result.added) == 1
    assert result.rejected["duplicate_trip_instance"] == 1


# --------------------------------------------------------------------------- Bull Runner


def test_bullrunner_vehicles_without_trip_ids() -> None:
    path = RT / "usf-bullrunner" / "vehicle-positions-2017-09-13.pb"
    msg = _pb(path)
    assert all(not e.vehicle.trip.HasField("trip_id") for e in msg.entity)
    result = process_vehicles(_index(BULL), _snapshot(path).vehicles)
    assert result.total == 10 and len(result.vehicles) == 10 and not result.rejected
    assert result.match_rate == 1.0
    routes = {r["route_id"] for r in _csv(BULL, "routes.txt")}
    assert [v["id"] for v in result.vehicles] == [e.vehicle.vehicle.id for e in msg.entity]
    assert all(v["trip_id"] is None for v in result.vehicles)
    assert [v["route_id"] for v in result.vehicles] == [e.vehicle.trip.route_id
                                                        for e in msg.entity]
    assert {v["route_id"] for v in result.vehicles} == routes
    for v, e in zip(result.vehicles, msg.entity, strict=True):
        assert v["lat"] == pytest.approx(e.vehicle.position.latitude)
        assert v["lon"] == pytest.approx(e.vehicle.position.longitude)


# --------------------------------------------------------------------------- unpaired captures

UNPAIRED = {  # file -> (timestamp, trip updates, stop time updates, vehicles, alerts)
    "mbta-trip-updates.pb": (1732128730, 1207, 28735, 0, 0),
    "mbta-vehicle-positions.pb": (1732128725, 0, 0, 650, 0),
    "mbta-alerts.pb": (1732128700, 0, 0, 0, 94),
    "mta-nyc-bus-trip-updates.pb": (1769638414, 5801, 90879, 0, 0),
    "mta-nyc-bus-vehicle-positions.pb": (1769039915, 0, 0, 3018, 0),
    "mta-nyc-bus-service-alerts.pb": (1769608662, 0, 0, 0, 70),
    "mta-nyc-subway-mixed-nyct-extensions.pb": (1683629923, 257, 5628, 139, 1),
}


@pytest.mark.parametrize("name", sorted(UNPAIRED))
def test_unpaired_decode_counts(name: str) -> None:
    ts, tus, stus, vps, alerts = UNPAIRED[name]
    snap = decode((RT / "unpaired" / name).read_bytes(), "v", now=ts + 1)
    assert snap.timestamp == ts and snap.incrementality == "FULL_DATASET"
    assert (len(snap.trip_updates), sum(len(t.updates) for t in snap.trip_updates),
            len(snap.vehicles), len(snap.alerts)) == (tus, stus, vps, alerts)


def test_unpaired_all_files_listed() -> None:
    assert {p.name for p in (RT / "unpaired").iterdir()} == set(UNPAIRED)


def test_mbta_trip_relationships() -> None:
    snap = _snapshot(RT / "unpaired" / "mbta-trip-updates.pb")
    assert Counter(t.trip.relationship for t in snap.trip_updates) == Counter(
        {"SCHEDULED": 1123, "CANCELED": 45, "ADDED": 39})


def _alerts(name: str) -> tuple[pb.FeedMessage, AlertIndex]:
    path = RT / "unpaired" / name
    snap = _snapshot(path)
    return _pb(path), AlertIndex(tuple(alert_json(a) for a in snap.alerts))


def _spec_active(alert: pb.Alert, now: int) -> bool:
    """TimeRange: active when start <= t < end; a missing bound is infinite; none: always."""
    if not alert.active_period:
        return True
    return any((not p.HasField("start") or p.start <= now)
               and (not p.HasField("end") or now < p.end) for p in alert.active_period)


def test_mbta_alert_filter_by_stop_route_trip_equals_spec() -> None:
    msg, index = _alerts("mbta-alerts.pb")
    stops = {ie.stop_id for e in msg.entity for ie in e.alert.informed_entity if ie.stop_id}
    routes = {ie.route_id for e in msg.entity for ie in e.alert.informed_entity if ie.route_id}
    trips = {ie.trip.trip_id for e in msg.entity for ie in e.alert.informed_entity
             if ie.trip.trip_id}
    assert (len(stops), len(routes), len(trips)) == (219, 157, 93)
    for now in (msg.header.timestamp, 1732131540):
        active = [e for e in msg.entity if _spec_active(e.alert, now)]
        for field, values in (("stop", stops), ("route", routes), ("trip", trips)):
            for v in values:
                want = sorted(e.id for e in active if any(
                    (ie.stop_id if field == "stop" else ie.route_id if field == "route"
                     else ie.trip.trip_id) == v for ie in e.alert.informed_entity))
                kw = {"stop": None, "route": None, "trip": None, field: v}
                got = sorted(a["id"] for a in index.filter(now, kw["stop"], kw["route"],
                                                           kw["trip"]))
                assert got == want, (now, field, v)
    assert len(index.filter(msg.header.timestamp, None, None, None)) == 64


def test_mbta_alert_active_period_honoured() -> None:
    msg, index = _alerts("mbta-alerts.pb")
    (period,) = next(e for e in msg.entity if e.id == "612520").alert.active_period
    assert (period.start, period.end) == (1732125540, 1732131540)
    trip = "SouthWKDYF24-710170-820"
    for now, active in ((period.start - 1, False), (period.start, True),
                        (msg.header.timestamp, True), (period.end - 1, True),
                        (period.end, False)):
        got = {a["id"] for a in index.filter(now, None, None, trip)}
        assert ("612520" in got) is active, now
        got = {a["id"] for a in index.matching(now, [], "CR-Providence", trip)}
        assert ("612520" in got) is active, now
    # 261 periods: a gap between two of them is inactive
    many = next(e for e in msg.entity if e.id == "546776").alert
    assert len(many.active_period) == 261
    gap = many.active_period[0].end
    assert many.active_period[1].start > gap
    ids = {a["id"] for a in index.active(gap)}
    assert "546776" not in ids
    assert "546776" in {a["id"] for a in index.active(many.active_period[1].start)}


def test_mbta_alert_matching_departures() -> None:
    msg, index = _alerts("mbta-alerts.pb")
    now = msg.header.timestamp

    def ids(stops: list[str], route: str | None, trip: str | None = None) -> set[str]:
        return {a["id"] for a in index.matching(now, stops, route, trip)}

    # 360721 informs (route, stop) pairs: Red/627/... x Alewife stops incl. 70061
    assert "360721" in ids(["70061"], "Red")
    assert "360721" not in ids(["70061"], "Green-B")  # route and stop are ANDed
    assert "360721" not in ids(["no-such-stop"], "Red")
    # 591871 has an entity with a stop only
    e = next(x for x in msg.entity if x.id == "591871").alert
    stop_only = next(ie.stop_id for ie in e.informed_entity if not ie.route_id)
    assert "591871" in ids([stop_only], "any-route")
    # trip alert 612520 (active from 1732125540): its trip only
    assert "612520" in ids([], "CR-Providence", "SouthWKDYF24-710170-820")
    assert "612520" not in ids([], "CR-Providence", "another-trip")
    j = next(a for a in index.alerts if a["id"] == "612520")
    assert j["informed_entities"][0]["trip_id"] == "SouthWKDYF24-710170-820"
    assert j["header"] and j["effect"] is not None


def test_subway_alert_without_informed_entity() -> None:
    msg, index = _alerts("mta-nyc-subway-mixed-nyct-extensions.pb")
    now = msg.header.timestamp
    (a,) = index.alerts
    assert a["informed_entities"] == [] and a["header"] == {"": "Train delayed"}
    assert [x["id"] for x in index.filter(now, None, None, None)] == [a["id"]]
    assert index.matching(now, ["any"], "any", "any") == []


NYC_M15 = "MTA NYCT_lmm:planned_work:29838"  # Water St at Pine St closed, route M15+ only


def test_nyc_bus_alert_informs_route_through_trip_descriptor_data() -> None:
    msg, index = _alerts("mta-nyc-bus-service-alerts.pb")
    e = next(x for x in msg.entity if x.id == NYC_M15).alert
    assert [(ie.agency_id, ie.HasField("route_id"), ie.trip.route_id, ie.trip.direction_id)
            for ie in e.informed_entity] == [("MTA NYCT", False, "M15+", 0),
                                             ("MTA NYCT", False, "M15+", 1)]
    assert _spec_active(e, msg.header.timestamp)
    routes = {a["id"] for a in index.filter(msg.header.timestamp, None, "X28", None)}
    assert "MTA NYCT_lmm:planned_work:22245" in routes  # informs X28 by route_id


def test_nyc_bus_alert_filter_by_route_via_trip_descriptor() -> None:
    msg, index = _alerts("mta-nyc-bus-service-alerts.pb")
    got = {a["id"] for a in index.filter(msg.header.timestamp, None, "M15+", None)}
    assert NYC_M15 in got


def test_nyc_bus_route_alert_not_attached_to_other_routes() -> None:
    msg, index = _alerts("mta-nyc-bus-service-alerts.pb")
    got = {a["id"] for a in index.matching(msg.header.timestamp, ["some-stop"], "X28", None)}
    assert NYC_M15 not in got


# --------------------------------------------------------------------------- header checks


def test_header_timestamp_regressed() -> None:
    snap = _snapshot(CT_TU)
    check_header(snap, CT_NOW, CT_NOW)  # same timestamp again is fine
    with pytest.raises(RealtimeRejected) as exc:
        check_header(snap, CT_NOW, CT_NOW + 1)
    assert exc.value.code == "timestamp_regressed"
    with pytest.raises(RealtimeRejected) as exc:
        decode(CT_TU.read_bytes(), "v", CT_NOW, previous_timestamp=CT_NOW + 30)
    assert exc.value.code == "timestamp_regressed"


def test_header_timestamp_in_future() -> None:
    snap = _snapshot(CT_TU)
    check_header(snap, CT_NOW - 60, None)  # 60 s ahead: accepted
    with pytest.raises(RealtimeRejected) as exc:
        check_header(snap, CT_NOW - 61, None)
    assert exc.value.code == "timestamp_in_future"


def test_header_differential_unsupported() -> None:
    msg = _pb(CT_TU)
    msg.header.incrementality = pb.FeedHeader.DIFFERENTIAL
    with pytest.raises(RealtimeRejected) as exc:
        decode(msg.SerializeToString(), "v", CT_NOW)
    assert exc.value.code == "differential_unsupported"
    assert decode(CT_TU.read_bytes(), "v", CT_NOW).entity_count == 19  # the original passes


def test_empty_body_refused() -> None:
    pb.FeedMessage().ParseFromString(b"")  # upb accepts it: the check has to be ours
    with pytest.raises(RealtimeRejected) as exc:
        decode(b"", "v", CT_NOW)
    assert exc.value.code == "empty_body"


# --------------------------------------------------------------------------- edge + errors-json


def _stus(m: pb.FeedMessage) -> Any:
    return m.entity[0].trip_update.stop_time_update


def _times(m: pb.FeedMessage) -> list[int]:
    return [ev.time for u in _stus(m) for ev in (u.arrival, u.departure) if ev.HasField("time")]


def _decreasing(m: pb.FeedMessage) -> bool:
    t = _times(m)
    return any(b < a for a, b in itertools.pairwise(t))


def _pos(m: pb.FeedMessage) -> tuple[float, float]:
    p = m.entity[0].vehicle.position
    return (round(p.latitude, 5), round(p.longitude, 5))


def _trip(m: pb.FeedMessage) -> Any:
    return m.entity[0].trip_update.trip



# file -> (outcome, code, count, the defect as seen in the file)
#   refused: decoding raises RealtimeRejected(code); header: check_header raises it;
#   empty: a valid feed with no entity; tu / vp: MergeResult / VehicleResult rejects `count`
#   entities with `code`; tu_flag: the entity is kept and flagged with `code`.
EDGE: dict[str, tuple[str, str | None, int, Callable[[Any], bool]]] = {
    "corrupt-wire-format.pb": ("refused", "not_a_feed_message", 0, lambda b: len(b) == 17),
    "empty-feed-header-only.pb": ("empty", None, 0, lambda b: len(b) == 15),
    "E001.header-timestamp.json": ("header", "timestamp_not_posix", 0,
                                   lambda m: m.header.timestamp == 1699405801000),
    "E001.trip_update-stop_time_update-arrival-time.json": (
        "tu", "timestamp_not_posix", 1, lambda m: _stus(m)[0].arrival.time == 1699405801000),
    "E001.trip_update-stop_time_update-departure-time.json": (
        "tu", "timestamp_not_posix", 1, lambda m: _stus(m)[0].departure.time == 1699405801000),
    "E001.trip_update-timestamp.json": (
        "tu", "timestamp_not_posix", 1, lambda m: m.entity[0].trip_update.timestamp
        == 1699405520000),
    "E002.trip_update-stop_time_update.1.json": (
        "tu", "unordered_stop_time_updates", 1,
        lambda m: [u.stop_sequence for u in _stus(m)] == [21, 20]),
    "E002.trip_update-stop_time_update.2.json": (
        "tu", "unordered_stop_time_updates", 1,
        lambda m: [u.stop_sequence for u in _stus(m)] == [20, 21, 19]),
    "E003.trip_update-trip-trip_id.json": (
        "tu", "trip_not_found", 2,
        lambda m: [e.trip_update.trip.trip_id for e in m.entity] == ["124-unknown", "124-added"]),
    "E003.vehicle_position-trip-trip_id.json": (
        "vp", "trip_not_found", 1, lambda m: m.entity[0].vehicle.trip.trip_id == "124-unknown"),
    "E004.trip_update-trip-route_id.json": (
        "tu", "route_not_found", 1, lambda m: _trip(m).route_id == "L1-unknown"),
    "E011.trip_update-stop_time_update-stop_id.json": (
        "tu", "stop_not_found", 1, lambda m: _stus(m)[0].stop_id == "70242-unknown"),
    "E011.vehicle_position-stop_id.json": (
        "vp", "stop_not_found", 1, lambda m: m.entity[0].vehicle.stop_id == "xyzabc"),
    "E020.trip_update-trip-start_time.1.json": (
        "tu", "bad_start_time", 1, lambda m: _trip(m).start_time == "AA:BB:CC"),
    "E020.trip_update-trip-start_time.2.json": (
        "tu", "start_time_mismatch", 1, lambda m: _trip(m).start_time == "1000:00:00"),
    "E021.trip_update-trip-start_date.1.json": (
        "tu", "bad_start_date", 1, lambda m: _trip(m).start_date == "AAAABBCC"),
    "E021.trip_update-trip-start_date.2.json": (
        "tu", "bad_start_date", 1, lambda m: _trip(m).start_date == "20010000"),
    "E021.trip_update-trip-start_date.3.json": (
        "tu", "bad_start_date", 1, lambda m: _trip(m).start_date == "2023-01-01"),
    "E022.trip_update-stop_time_update.1.json": ("tu", "decreasing_times", 1, _decreasing),
    "E022.trip_update-stop_time_update.2.json": ("tu", "decreasing_times", 1, _decreasing),
    "E022.trip_update-stop_time_update.3.json": ("tu", "decreasing_times", 1, _decreasing),
    "E026.vehicle_position-position-latitude.1.json": (
        "vp", "bad_position", 1, lambda m: _pos(m) == (100.0, -121.99604)),
    "E026.vehicle_position-position-latitude.2.json": (
        "vp", "bad_position", 1, lambda m: _pos(m) == (-100.0, -121.99604)),
    "E026.vehicle_position-position-latitude.3.json": (
        "vp", "bad_position", 1, lambda m: _pos(m) == (0.0, -121.99604)),
    "E026.vehicle_position-position-longitude.1.json": (
        "vp", "bad_position", 1, lambda m: _pos(m) == (37.37046, 200.0)),
    "E026.vehicle_position-position-longitude.2.json": (
        "vp", "bad_position", 1, lambda m: _pos(m) == (37.37046, -200.0)),
    "E026.vehicle_position-position-longitude.3.json": (
        "vp", "bad_position", 1, lambda m: _pos(m) == (37.37046, 0.0)),
    "E029.vehicle_position-position.1.json": (
        "vp_flag", "position_off_shape", 1, lambda m: _pos(m) == (37.36879, -121.99607)),
    "E029.vehicle_position-position.2.json": (
        "vp_flag", "position_off_shape", 1, lambda m: _pos(m) == (37.37708, -122.01325)),
    "E029.vehicle_position-position.3.json": (
        "vp", "position_far_from_trip", 1, lambda m: _pos(m) == (33.0, -121.0)),
    "E040.trip_update-stop_time_update.json": (
        "tu", "stop_time_update_unmatched", 1,
        lambda m: not _stus(m)[1].HasField("stop_sequence") and not _stus(m)[1].HasField(
            "stop_id")),
    "E043.trip_update-schedule_relationship.json": (
        "tu_flag", "missing_stop_time_event", 1,
        lambda m: not _stus(m)[0].HasField("arrival") and not _stus(m)[0].HasField("departure")),
    "E044.trip_update-schedule_relationship.1.json": (
        "tu", "empty_stop_time_event", 1, lambda m: _stus(m)[0].HasField("departure")
        and not _stus(m)[0].departure.ListFields()),
    "E044.trip_update-schedule_relationship.2.json": (
        "tu", "empty_stop_time_event", 1, lambda m: _stus(m)[1].HasField("arrival")
        and not _stus(m)[1].arrival.ListFields()),
}


def _edge_path(name: str) -> Path:
    return RT / "edge" / name if name.endswith(".pb") else ERRORS / name


def test_edge_table_covers_every_file() -> None:
    files = {p.name for p in (RT / "edge").iterdir()} | {p.name for p in ERRORS.iterdir()}
    assert files == set(EDGE)
    assert len(files) == 34


def _base_minus(base: FeedSnapshot, broken: FeedSnapshot) -> tuple[Any, Any]:
    ids = {e.entity_id for e in broken.trip_updates} | {v.entity_id for v in broken.vehicles}
    tus = tuple(t for t in base.trip_updates if t.entity_id not in ids) + broken.trip_updates
    vps = tuple(v for v in base.vehicles if v.entity_id not in ids) + broken.vehicles
    return tus, vps


@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_file_refused_or_entity_rejected(name: str) -> None:
    outcome, code, count, defect = EDGE[name]
    path = _edge_path(name)
    body = path.read_bytes()
    if outcome == "refused":
        assert defect(body)
        with pytest.raises(RealtimeRejected) as exc:
            decode(body, "v", CT_NOW)
        assert exc.value.code == code
        return
    if outcome == "empty":
        assert defect(body)
        ts = _pb(path).header.timestamp
        snap = decode(body, "v", ts + 5)
        assert snap.entity_count == 0 and snap.incrementality == "FULL_DATASET"
        return
    assert defect(_pb(path)), "the file does not show the defect it is named after"
    broken = _snapshot(path)
    if outcome == "header":
        with pytest.raises(RealtimeRejected) as exc:
            check_header(broken, CT_NOW, None)
        assert exc.value.code == code
        return
    assert broken.timestamp is not None
    check_header(broken, broken.timestamp + 5, None)  # the header itself is fine
    index = _index(CALTRAIN)
    if outcome.startswith("tu"):
        base = _snapshot(CT_TU)
        good = merge_trip_updates(index, base.trip_updates, CT_NOW)
        tus, _ = _base_minus(base, broken)
        result = merge_trip_updates(index, tus, CT_NOW)
        assert result.total == 18 + count
        if outcome == "tu":
            assert result.rejected == Counter({code: count})
            assert not result.flagged
            assert len(result.trips) == 18
        else:
            assert not result.rejected and len(result.trips) == 19
            if code is None:
                assert result.flagged, "E044 should be flagged"
            else:
                assert result.flagged == Counter({code: count})
            key = (index.trips.index_of["124"], _ordinal("20231107"), -1)
            assert all(s.status not in RT_STATUSES or s.departure is not None
                       for s in result.trips[key].stops.values())
        for key, trt in result.trips.items():  # good data kept, unchanged
            if index.trips.ids[key[0]] != "124":
                assert trt.stops == good.trips[key].stops
    else:
        base = _snapshot(CT_VP)
        _, vps = _base_minus(base, broken)
        result_v = process_vehicles(index, vps)
        assert result_v.total == 14
        real = process_vehicles(index, base.vehicles)
        assert real.rejected == Counter()
        # Real data: vehicle 311 of the capture is 196 m off its shape, flagged, never dropped.
        assert real.flagged == Counter({"position_off_shape": 1})
        if outcome == "vp_flag":
            assert result_v.rejected == Counter()
            assert result_v.flagged[code] == real.flagged[code] + count
            flagged_124 = next(v for v in result_v.vehicles if v["id"] == "124")
            assert flagged_124["flags"] == [code]
            return
        assert result_v.rejected == Counter({code: count})
        kept = [v["id"] for v in result_v.vehicles]
        assert len(kept) == 13 and "124" not in kept


def test_e043_trip_kept_with_other_updates_equal_reference() -> None:
    path = ERRORS / "E043.trip_update-schedule_relationship.json"
    msg = _pb(path)
    result = merge_trip_updates(_index(CALTRAIN), _snapshot(path).trip_updates, CT_NOW)
    assert result.flagged == Counter({"missing_stop_time_event": 1})
    ref = _assert_equals_reference(CALTRAIN, msg, result, "124", "20231107")
    assert ref[20].status == "scheduled" and ref[21].status == "updated"


def test_e044_empty_event_rejects_the_trip_update() -> None:
    """E044.1: departure {} (neither time nor delay) at stop 20 of trip 124: the update is
    refused whole, so no stop of trip 124 pretends to be on time with no expected time."""
    path = ERRORS / "E044.trip_update-schedule_relationship.1.json"
    index = _index(CALTRAIN)
    result = merge_trip_updates(index, _snapshot(path).trip_updates, CT_NOW)
    assert result.rejected == {"empty_stop_time_event": 1}
    assert not result.trips
    tz, trips = load_static(str(CALTRAIN))
    seq, stop_id, _, dep = trips["124"][19]
    assert seq == 20 and stop_id == "70232"
    when = origin("20231107", tz) + dep
    entries = [e for e in _board(index, result, stop_id, when - 60, 120)
               if e.scheduled is not None and e.scheduled.trip == index.trips.index_of["124"]]
    assert [(e.status, e.realtime, e.expected) for e in entries] == [("scheduled", False, None)]


def test_e029_distances_from_shape() -> None:
    """The E029 files move vehicle 124 off its shape (p_1277318): measured, not assumed."""
    shape = sorted((int(r["shape_pt_sequence"]), float(r["shape_pt_lat"]),
                    float(r["shape_pt_lon"])) for r in _csv(CALTRAIN, "shapes.txt")
                   if r["shape_id"] == "p_1277318")

    def off(lat: float, lon: float) -> float:
        k = math.cos(math.radians(lat)) * 6371008.8 * math.pi / 180
        m = 6371008.8 * math.pi / 180
        best = math.inf
        for (_, a1, o1), (_, a2, o2) in itertools.pairwise(shape):
            ax, ay, bx, by = (o1 - lon) * k, (a1 - lat) * m, (o2 - lon) * k, (a2 - lat) * m
            dx, dy = bx - ax, by - ay
            t = 0.0 if dx == dy == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy)
                                                        / (dx * dx + dy * dy)))
            best = min(best, math.hypot(ax + t * dx, ay + t * dy))
        return best

    base = _pb(CT_VP).entity[0].vehicle.position
    assert off(base.latitude, base.longitude) < 20
    dists = [off(*_pos(_pb(ERRORS / f"E029.vehicle_position-position.{i}.json")))
             for i in (1, 2, 3)]
    assert 150 < dists[0] < 250 and 300 < dists[1] < 500 and dists[2] > 100_000
