"""Hand-checked tests of the reference implementation (tests/reference/gtfs_reference.py).

Every expected value was looked up by hand in the fixture CSVs (quoted in the
comments) and converted to epoch seconds with `date -u -d <UTC time> +%s`.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

from reference.gtfs_reference import RefDeparture, load_feed, reference_departures

FIXTURES = Path(__file__).parent / "fixtures"
GTFS = FIXTURES / "gtfs"


@functools.cache
def feed(name: str):
    return load_feed(GTFS / name)


def trips_at(name: str, stop_id: str, start: int, window_s: int) -> list[tuple]:
    return [
        (d.trip_id, d.stop_id, d.stop_sequence, d.service_date, d.instant)
        for d in reference_departures(feed(name), stop_id, start, window_s)
    ]


def test_caltrain_weekday_instant_by_hand():
    # trips.txt: L4,72982,409,...  calendar.txt: 72982 = Mon-Fri 20230923..20240601
    # stop_times.txt: 409,16:52:00,16:52:00,70021,12,...
    # 2023-11-07 (Tue) 16:52 PST = 2023-11-08T00:52:00Z = 1699404720
    deps = reference_departures(feed("caltrain-2023.zip"), "70021", 1699404720 - 60, 120)
    assert RefDeparture("409", "70021", 12, "2023-11-07", 1699404720) in deps


def test_caltrain_calendar_dates_add_and_remove():
    # 70022 at 17:03:00: trip 256 (service 72981, Sat/Sun) and H656 (service 79159,
    # only in calendar_dates.txt). 2023-11-23 (Thu): 72982 -2, 72981 +1.
    # 2023-11-24 (Fri): 72982 -2, 79159 +1.
    thanksgiving = trips_at("caltrain-2023.zip", "70022", 1700787780, 60)  # 2023-11-24T01:03Z
    assert thanksgiving == [("256", "70022", 2, "2023-11-23", 1700787780)]
    friday = trips_at("caltrain-2023.zip", "70022", 1700874180, 60)  # 2023-11-25T01:03Z
    assert friday == [("H656", "70022", 2, "2023-11-24", 1700874180)]
    # A normal Tuesday: neither 256 (weekend) nor H656 (exception-only) runs.
    assert trips_at("caltrain-2023.zip", "70022", 1699405380, 60) == []  # 2023-11-07 17:03 PST
    # 409 (72982) does not run on Thanksgiving: 16:52 PST 2023-11-23 = 1700787120.
    assert trips_at("caltrain-2023.zip", "70021", 1700787120, 60) == []


def test_previous_service_day_after_midnight():
    # stop_times.txt: 281,24:46:00,24:46:00,70021,23,...  (service 72981, Sat+Sun)
    # Saturday 2023-11-11 + 24:46 = 2023-11-12 00:46 PST = 2023-11-12T08:46:00Z = 1699778760
    deps = trips_at("caltrain-2023.zip", "70021", 1699778760 - 600, 1200)
    assert ("281", "70021", 23, "2023-11-11", 1699778760) in deps
    # Not attributed to Sunday 2023-11-12 as well (that run is 24h later).
    assert [d for d in deps if d[0] == "281"] == [("281", "70021", 23, "2023-11-11", 1699778760)]


def test_dst_fall_back_caltrain():
    # Saturday 2023-11-04 (PDT) trip 281 at 70021, 24:46:00 -> noon-12h of 11-04 is
    # 00:00 PDT = 07:00Z, + 24:46 = 2023-11-05T07:46:00Z = 1699170360 (00:46 PDT, pre-change).
    deps = trips_at("caltrain-2023.zip", "70021", 1699170360, 60)
    assert deps == [("281", "70021", 23, "2023-11-04", 1699170360)]
    # Sunday 2023-11-05: stop_times.txt 221,7:12:00,7:12:00,70271,1 (one-digit hour).
    # noon PST = 20:00Z, minus 12h = 08:00Z; + 7:12 = 15:12Z = 1699197120 = 07:12 PST.
    deps = trips_at("caltrain-2023.zip", "70271", 1699197120, 60)
    assert deps == [("221", "70271", 1, "2023-11-05", 1699197120)]


def test_dst_spring_forward_caltrain():
    # Saturday 2024-03-09 (PST): noon-12h = 08:00Z; + 24:46 = 2024-03-10T08:46:00Z = 1710060360.
    deps = trips_at("caltrain-2023.zip", "70021", 1710060360, 60)
    assert deps == [("281", "70021", 23, "2024-03-09", 1710060360)]
    # Sunday 2024-03-10: noon PDT = 19:00Z, minus 12h = 07:00Z (23:00 PST on 03-09);
    # + 7:12 = 14:12Z = 1710079920 = 07:12 PDT (not 08:12 as counting from midnight would give).
    deps = trips_at("caltrain-2023.zip", "70271", 1710079920, 60)
    assert deps == [("221", "70271", 1, "2024-03-10", 1710079920)]


def test_last_stop_excluded():
    # stop_times.txt: 409,16:52:00,...,70021,12 and 409,16:58:00,...,70011,13 (last row).
    # 2023-11-07 16:58 PST = 1699405080.
    at_terminal = trips_at("caltrain-2023.zip", "70011", 1699405080 - 60, 120)
    assert all(d[0] != "409" for d in at_terminal)
    assert all(
        d[0] != "409" for d in trips_at("caltrain-2023.zip", "san_francisco", 1699405080 - 60, 120)
    )
    # USF trip 1 is a loop: 222 is both seq 1 (07:00:00) and seq 25 (07:19:43, last).
    # Runs every 600 s from 07:00; 2017-09-13 (Wed) 10:00 EDT = 1505311200.
    deps = trips_at("usf-bullrunner.zip", "222", 1505311200, 3600)
    trip1 = [d for d in deps if d[0] == "1"]
    assert trip1 == [("1", "222", 1, "2017-09-13", 1505311200 + k * 600) for k in range(6)]


def test_station_includes_children_wmata():
    # stops.txt: STN_A01_C01 (Metro Center, location_type 1); platforms PF_A01_1, PF_A01_2,
    # PF_C01_C have parent_station STN_A01_C01. 2026-05-05 only service 43_R is active.
    # stop_times.txt rows of 43_R trips in [08:00, 08:06) EDT; 08:00 EDT = 1777982400.
    t0 = 1777982400
    deps = trips_at("wmata-2026.zip", "STN_A01_C01", t0, 360)
    assert deps == [
        ("11509927_20576", "PF_C01_C", 13, "2026-05-05", t0),
        ("11509869_20576", "PF_C01_C", 14, "2026-05-05", t0 + 60),
        ("11505535_20576", "PF_A01_1", 15, "2026-05-05", t0 + 120),
        ("11505660_20576", "PF_A01_2", 13, "2026-05-05", t0 + 180),
        ("11509847_20576", "PF_C01_C", 21, "2026-05-05", t0 + 240),
        ("11509926_20576", "PF_C01_C", 14, "2026-05-05", t0 + 300),
    ]
    # A platform on its own only gives its own rows.
    assert trips_at("wmata-2026.zip", "PF_A01_2", t0, 360) == [deps[3]]


def test_frequencies_usf():
    # frequencies.txt: 1,07:00:00,24:00:00,600,0 ; stop_times.txt: 1,07:00:00,...,222,1 and
    # 1,07:02:56,07:02:56,102,5 -> at 102 runs depart 07:02:56 + k*600.
    # 2017-09-13 10:00 EDT = 1505311200; first run in window 10:02:56 = +176 s.
    deps = [d for d in trips_at("usf-bullrunner.zip", "102", 1505311200, 3600) if d[0] == "1"]
    assert deps == [("1", "102", 5, "2017-09-13", 1505311200 + 176 + k * 600) for k in range(6)]
    # Last run starts 23:50:00 (< end_time 24:00:00): 23:52:56 EDT = 1505361176; no 24:02:56 run.
    late = [d for d in trips_at("usf-bullrunner.zip", "102", 1505361176 - 300, 3600) if d[0] == "1"]
    assert late == [("1", "102", 5, "2017-09-13", 1505361176)]
    # Service Mo is Mon-Thu: Friday 2017-09-15 10:00 EDT has no trip 1.
    assert all(d[0] != "1" for d in trips_at("usf-bullrunner.zip", "102", 1505484000, 3600))


def test_pickup_type_1_excluded_hsl():
    # stop_times.txt trip 1006H6_20220204_Ti_1_1846: seq 18 1220410 19:13:00 (pickup ''),
    # seq 19 1220403 19:14:00 pickup_type 1 (not the last stop, seq 21 is).
    # 2022-02-22 19:13 EET = 17:13Z = 1645549980.
    trip = "1006H6_20220204_Ti_1_1846"
    kept = [
        d
        for d in trips_at("hsl-helsinki-2022-cropped.zip", "1220410", 1645549980, 60)
        if d[0] == trip
    ]
    assert kept == [(trip, "1220410", 18, "2022-02-22", 1645549980)]
    dropped = trips_at("hsl-helsinki-2022-cropped.zip", "1220403", 1645549980, 600)
    assert all(d[0] != trip for d in dropped)


def test_window_bounds_half_open():
    # 409 at 70021 at exactly 1699404720: included at start, excluded at end.
    assert trips_at("caltrain-2023.zip", "70021", 1699404720, 1)[0][0] == "409"
    assert all(d[0] != "409" for d in trips_at("caltrain-2023.zip", "70021", 1699404720 - 60, 60))


def test_bom_and_subfolder_zip(tmp_path):
    # transitfeed utf8bom/ has a BOM on agency.txt and stops.txt only. Build one zip with a
    # BOM on EVERY file (so stop_times.txt's first column trip_id is affected) and one with
    # none, both with the files in a sub-folder; they must load identically.
    src = FIXTURES / "edge" / "gtfs" / "transitfeed" / "utf8bom"
    bom = b"\xef\xbb\xbf"
    loaded = {}
    for variant in ("bom", "plain"):
        path = tmp_path / f"{variant}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for f in sorted(src.iterdir()):
                data = f.read_bytes().removeprefix(bom)
                zf.writestr(f"feed/{f.name}", bom + data if variant == "bom" else data)
        loaded[variant] = load_feed(path)
    assert str(loaded["bom"].timezone) == "America/Los_Angeles"
    assert loaded["bom"].rows_by_stop == loaded["plain"].rows_by_stop
    assert loaded["bom"].calendar == loaded["plain"].calendar
    # stop_times.txt: STBA,6:00:00,6:00:00,STAGECOACH,1 ;
    # frequencies.txt: STBA,6:00:00,22:00:00,1800
    assert (6 * 3600, "STBA", 1, "FULLW") in loaded["bom"].rows_by_stop["STAGECOACH"]
