"""Pure unit tests of the core (no store, no network): GTFS times and service days, the service
calendar, the index codec, stop search, API key format and feed configs, plus Hypothesis
properties of time parsing and of the scheduled departure board over the real Caltrain feed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import struct
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.schedule.board import ScheduledDeparture, scheduled_departures
from feeds.schedule.calendar import CalendarException, CalendarRule, ServiceCalendar
from feeds.schedule.codec import MAGIC, CodecError, decode_index, encode_index
from feeds.schedule.index import ScheduleIndex
from feeds.schedule.service_time import (
    NO_TIME,
    local_date_ordinal,
    parse_gtfs_date,
    parse_time,
    service_day_origin,
)
from feeds.schedule.stop_search import StopSearch, fold
from feeds.static.pipeline import StaticBuild, build_static
from gateway.access import keys
from gateway.errors import BadRequest
from gateway.feed_config import FeedConfig, parse_header

GTFS = Path(__file__).parent / "fixtures" / "gtfs"
LA = "America/Los_Angeles"
UTC = dt.UTC


@functools.cache
def caltrain() -> StaticBuild:
    """The Caltrain feed, validated and indexed once for the whole module."""
    return build_static(GTFS / "caltrain-2023.zip", "caltrain", "v1")


def utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=UTC).timestamp())


# --- GTFS times ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7:12:00", 7 * 3600 + 12 * 60),
        ("07:12:00", 7 * 3600 + 12 * 60),
        ("25:49:00", 25 * 3600 + 49 * 60),
        ("0:00:00", 0),
        ("24:00:00", 86400),
        ("23:59:59", 86399),
        (" 7:12:00 ", 7 * 3600 + 12 * 60),
    ],
)
def test_parse_time_valid(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["7:2:00", "7:02:0", "ab", "10:60:00", "10:00:60", "", "7:12", "7:12:00:00", "-1:00:00",
     "7:12:00.5", "a:bc:de", "+7:12:00"],
)
def test_parse_time_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


@given(st.integers(min_value=0, max_value=48 * 3600), st.booleans())
def test_parse_time_round_trips(seconds: int, pad_hours: bool) -> None:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    text = f"{h:02d}:{m:02d}:{s:02d}" if pad_hours else f"{h}:{m:02d}:{s:02d}"
    assert parse_time(text) == seconds


def test_parse_gtfs_date() -> None:
    assert parse_gtfs_date("20231107") == dt.date(2023, 11, 7)
    for bad in ("2023-11-07", "2023117", "20231307", "abcdefgh", ""):
        with pytest.raises(ValueError):
            parse_gtfs_date(bad)


# --- service-day origins (noon minus 12 h) across daylight-saving changes --------------------


def test_service_day_origin_ordinary_day_is_local_midnight() -> None:
    day = dt.date(2023, 11, 7).toordinal()
    # 2023-11-07 00:00 PST (-08:00) = 2023-11-07T08:00Z
    assert service_day_origin(day, LA) == utc(2023, 11, 7, 8, 0)


def test_service_day_origin_fall_back_day() -> None:
    # 2023-11-05 is 25 hours long in Los Angeles (PDT -> PST at 02:00 PDT = 09:00Z).
    # Noon PST = 20:00Z; minus 12 h = 08:00Z, which is still PDT: 01:00-07:00, one hour AFTER
    # local midnight (00:00-07:00 = 07:00Z).
    origin = service_day_origin(dt.date(2023, 11, 5).toordinal(), LA)
    assert origin == utc(2023, 11, 5, 8, 0)
    local = dt.datetime.fromtimestamp(origin, ZoneInfo(LA))
    assert local.isoformat() == "2023-11-05T01:00:00-07:00"
    midnight = dt.datetime(2023, 11, 5, tzinfo=ZoneInfo(LA)).timestamp()
    assert origin - midnight == 3600
    # a 10:00:00 stop time is then 10:00 PST local, as the spec intends
    assert dt.datetime.fromtimestamp(origin + 36000, ZoneInfo(LA)).hour == 10


def test_service_day_origin_spring_forward_day() -> None:
    # 2024-03-10 is 23 hours long (PST -> PDT at 02:00 PST = 10:00Z).
    # Noon PDT = 19:00Z; minus 12 h = 07:00Z = 23:00 PST on the day BEFORE.
    origin = service_day_origin(dt.date(2024, 3, 10).toordinal(), LA)
    assert origin == utc(2024, 3, 10, 7, 0)
    local = dt.datetime.fromtimestamp(origin, ZoneInfo(LA))
    assert local.isoformat() == "2024-03-09T23:00:00-08:00"
    assert dt.datetime.fromtimestamp(origin + 8 * 3600, ZoneInfo(LA)).hour == 8


def test_local_date_ordinal() -> None:
    # 2023-11-08T07:59:59Z is still 2023-11-07 in Los Angeles
    assert local_date_ordinal(utc(2023, 11, 8, 7, 59, 59), LA) == dt.date(2023, 11, 7).toordinal()
    assert local_date_ordinal(utc(2023, 11, 8, 8, 0, 0), LA) == dt.date(2023, 11, 8).toordinal()


# --- service calendar ------------------------------------------------------------------------

WEEKDAYS_ONLY = (True, True, True, True, True, False, False)
MONDAYS = (True, False, False, False, False, False, False)


def _calendar() -> ServiceCalendar:
    rules = [
        CalendarRule(0, WEEKDAYS_ONLY, dt.date(2023, 11, 1), dt.date(2023, 11, 30)),
        CalendarRule(1, MONDAYS, dt.date(2023, 11, 1), dt.date(2023, 11, 30)),
    ]
    exceptions = [
        CalendarException(0, dt.date(2023, 11, 23), added=False),  # Thanksgiving (Thu) removed
        CalendarException(1, dt.date(2023, 11, 25), added=True),  # a Saturday added
        CalendarException(2, dt.date(2023, 12, 3), added=True),  # calendar_dates-only service
    ]
    return ServiceCalendar.build(3, rules, exceptions)


def _runs(cal: ServiceCalendar, day: dt.date) -> list[bool] | None:
    active = cal.services_on(day.toordinal())
    return None if active is None else [bool(x) for x in active]


def test_calendar_rules_and_exceptions() -> None:
    cal = _calendar()
    assert cal.first_ordinal == dt.date(2023, 11, 1).toordinal()
    assert cal.last_ordinal == dt.date(2023, 12, 3).toordinal()
    assert _runs(cal, dt.date(2023, 11, 6)) == [True, True, False]  # Monday
    assert _runs(cal, dt.date(2023, 11, 7)) == [True, False, False]  # Tuesday
    assert _runs(cal, dt.date(2023, 11, 4)) == [False, False, False]  # Saturday
    assert _runs(cal, dt.date(2023, 11, 23)) == [False, False, False]  # removed
    assert _runs(cal, dt.date(2023, 11, 25)) == [False, True, False]  # added
    assert _runs(cal, dt.date(2023, 12, 1)) == [False, False, False]  # past the rule's end
    assert _runs(cal, dt.date(2023, 12, 3)) == [False, False, True]
    assert cal.dates_of(1) == [dt.date(2023, 11, d) for d in (6, 13, 20, 25, 27)]


def test_calendar_outside_range_is_none() -> None:
    cal = _calendar()
    assert cal.services_on(dt.date(2023, 10, 31).toordinal()) is None
    assert cal.services_on(dt.date(2023, 12, 4).toordinal()) is None


def test_calendar_empty() -> None:
    cal = ServiceCalendar.build(2, [], [])
    assert cal.services_on(dt.date(2023, 11, 7).toordinal()) is None


def test_calendar_weekday_alignment_over_years() -> None:
    # one rule per weekday over two years: each date runs exactly its own weekday's service
    rules = [
        CalendarRule(d, tuple(i == d for i in range(7)), dt.date(2023, 1, 1),  # type: ignore[arg-type]
                     dt.date(2024, 12, 31))
        for d in range(7)
    ]
    cal = ServiceCalendar.build(7, rules, [])
    day = dt.date(2023, 1, 1)
    while day <= dt.date(2024, 12, 31):
        assert _runs(cal, day) == [i == day.weekday() for i in range(7)], day
        day += dt.timedelta(days=1)


def test_caltrain_calendar_from_the_feed() -> None:
    index = caltrain().index
    weekday = index.service_ids.index("72982")
    weekend = index.service_ids.index("72981")
    tue = index.calendar.services_on(dt.date(2023, 11, 7).toordinal())
    sat = index.calendar.services_on(dt.date(2023, 11, 11).toordinal())
    assert tue is not None and sat is not None
    assert tue[weekday] and not tue[weekend]
    assert sat[weekend] and not sat[weekday]
    assert index.calendar.services_on(dt.date(2023, 9, 1).toordinal()) is None


# --- codec -------------------------------------------------------------------------------------


def _assert_same(a: Any, b: Any, path: str = "index") -> None:
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype, path
        assert a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    else:
        assert type(a) is type(b), path
        assert a == b, path


def test_codec_round_trip_caltrain() -> None:
    built = caltrain()
    decoded = decode_index(built.blob)
    _assert_same(built.index, decoded)
    assert decoded.counts() == built.index.counts()
    # derived lookups are rebuilt, not serialised
    assert decoded.stops.index_of["palo_alto"] == built.index.stops.index_of["palo_alto"]
    assert decoded.stops.children == built.index.stops.children
    # and the decoded index encodes to the same bytes
    assert encode_index(decoded) == built.blob


def _with_header(meta: Any, body: bytes = b"") -> bytes:
    header = orjson.dumps(meta)
    return MAGIC + struct.pack("<I", len(header)) + header + body


def _header_of(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (hlen,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    return orjson.loads(blob[start : start + hlen]), blob[start + hlen :]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda blob: b"", id="empty"),
        pytest.param(lambda blob: b"PK\x03\x04 a zip, not an index", id="other-bytes"),
        pytest.param(lambda blob: MAGIC, id="magic-only"),
        pytest.param(lambda blob: MAGIC + struct.pack("<I", 10), id="header-missing"),
        pytest.param(lambda blob: MAGIC + struct.pack("<I", 3) + b"abc", id="header-not-json"),
        pytest.param(lambda blob: blob.replace(MAGIC, b"TGIDX0", 1), id="other-magic"),
        pytest.param(lambda blob: _with_header({"tree": {}, "arrays": []}), id="empty-tree"),
        pytest.param(lambda blob: _extra_field(blob), id="unknown-field-from-a-newer-version"),
    ],
)
def test_codec_refuses_garbage(make: Any) -> None:
    with pytest.raises(CodecError):
        decode_index(make(caltrain().blob))


def _truncated(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def _extra_field(blob: bytes) -> bytes:
    meta, body = _header_of(blob)
    meta["tree"]["field_from_a_newer_version"] = 1
    return _with_header(meta, body)


def _bad_dtype(blob: bytes) -> bytes:
    meta, body = _header_of(blob)
    meta["arrays"][0]["dtype"] = "not-a-dtype"
    return _with_header(meta, body)




@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_truncated, id="truncated"),
        pytest.param(lambda blob: _with_header({}), id="header-without-arrays"),
        pytest.param(lambda blob: _with_header([]), id="header-is-a-list"),
        pytest.param(_bad_dtype, id="bad-dtype"),
    ],
)
def test_codec_damaged_blobs_raise_what_the_catalog_handles(make: Any) -> None:
    """gateway/catalog.py skips a version whose decode raises CodecError, KeyError or ValueError
    (CodecError is a ValueError); anything else escapes and aborts the whole refresh."""
    with pytest.raises((KeyError, ValueError)):
        decode_index(make(caltrain().blob))


# --- stop search -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Göteborg", "goteborg"),
        ("Töölö", "toolo"),
        ("Øster", "oster"),
        ("Göteborg Centralstation", "goteborg centralstation"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("Łódź", "lodz"),
        ("Ærø", "aero"),
        ("São Paulo", "sao paulo"),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def test_stop_search_by_name() -> None:
    index = caltrain().index
    search = StopSearch(index.stops)
    found = search.search("palo")
    ids = [index.stops.ids[i] for i, _ in found]
    assert ids[0] == "palo_alto"
    assert {"palo_alto", "70171", "70172", "PAS", "PAN"} <= set(ids)
    assert all("palo" in fold(index.stops.names[i]) for i, _ in found)
    assert all(d is None for _, d in found)
    # case and accents do not matter; several words must all match
    assert [i for i, _ in search.search("PALÓ")] == [i for i, _ in found]
    assert {index.stops.ids[i] for i, _ in search.search("palo station")} == {"70171", "70172"}
    assert search.search("palo", limit=2) == found[:2]
    assert search.search("no such stop anywhere") == []


def test_stop_search_near_with_radius() -> None:
    index = caltrain().index
    search = StopSearch(index.stops)
    i = index.stops.index_of["palo_alto"]
    lat, lon = float(index.stops.lat[i]), float(index.stops.lon[i])
    radius = 250.0
    found = search.search(near=(lat, lon), radius_m=radius)
    assert found[0] == (i, 0.0)
    distances = [d for _, d in found]
    assert distances == sorted(distances)
    expected = {
        j for j in range(len(index.stops))
        if _haversine(lat, lon, float(index.stops.lat[j]), float(index.stops.lon[j])) <= radius
    }
    assert {j for j, _ in found} == expected
    assert {"palo_alto", "70171", "70172"} <= {index.stops.ids[j] for j, _ in found}
    for j, d in found:
        assert d == pytest.approx(
            _haversine(lat, lon, float(index.stops.lat[j]), float(index.stops.lon[j])), abs=0.01)
    # name and distance together
    named = search.search("temporary", near=(lat, lon), radius_m=radius)
    assert {index.stops.ids[j] for j, _ in named} == {"PAS", "PAN"} & {
        index.stops.ids[j] for j in expected}


# --- API keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["developer", "operator"])
def test_generate_key(kind: str) -> None:
    key = keys.generate_key(kind)
    assert key.startswith(keys.PREFIXES[kind])
    assert len(key) == 4 + keys.BODY_LEN + keys.CHECK_LEN
    assert keys.well_formed(key)
    assert keys.kind_of(key) == kind
    assert keys.key_id_of(key) == keys.key_hash(key)[:16]
    assert len(keys.key_id_of(key)) == 16
    assert keys.generate_key(kind) != key


def test_every_single_character_substitution_is_refused() -> None:
    key = keys.generate_key()
    n = len(key)
    positions = [4, 5, 20, 4 + keys.BODY_LEN - 1, 4 + keys.BODY_LEN, n - 2, n - 1]
    for pos in positions:
        for c in keys.ALPHABET:
            if c == key[pos]:
                continue
            typo = key[:pos] + c + key[pos + 1 :]
            assert not keys.well_formed(typo), (pos, c)


def test_malformed_keys_refused() -> None:
    key = keys.generate_key()
    other = keys.generate_key("operator")
    assert not keys.well_formed("tgo_" + key[4:])  # prefix is covered by the checksum
    assert not keys.well_formed("tgx_" + key[4:])
    assert not keys.well_formed("TGW_" + key[4:])
    assert not keys.well_formed(key[:-1])
    assert not keys.well_formed(key + "0")
    assert not keys.well_formed("")
    assert not keys.well_formed(key[:10] + "-" + key[11:])
    assert not keys.well_formed(key[:47] + other[47:])  # someone else's checksum
    # swapping two adjacent different characters is a typo too
    i = next(p for p in range(4, 40) if key[p] != key[p + 1])
    assert not keys.well_formed(key[:i] + key[i + 1] + key[i] + key[i + 2 :])


def test_non_ascii_checksum_is_refused_not_raised() -> None:
    key = keys.generate_key()
    assert not keys.well_formed(key[:47] + "é" * 6)


def test_non_ascii_body_is_refused() -> None:
    key = keys.generate_key()
    assert not keys.well_formed(key[:10] + "é" + key[11:])


def test_key_record() -> None:
    key = keys.generate_key()
    record = keys.KeyRecord(
        key_id=keys.key_id_of(key), hash=keys.key_hash(key), kind="developer",
        email="a@example.org", name="n", tier="bronze", created="2023-11-07T00:00:00+00:00",
        expires="", revoked="", event="",
    )
    assert record.matches(key)
    assert not record.matches(keys.generate_key())
    assert not record.matches(key + " ")
    assert keys.KeyRecord.from_store(record.to_store()) == record
    assert "hash" not in record.public()
    assert key not in str(record.to_store())  # the key itself is never stored


# --- feed configs ------------------------------------------------------------------------------


def test_feed_config_valid_round_trip() -> None:
    data = {"id": "caltrain.sf-1", "static": " https://example.org/gtfs.zip ",
            "trip_updates": "https://example.org/tu", "poll_seconds": 30,
            "headers": {"Authorization": "Bearer x"}}
    config = FeedConfig.from_json(data)
    assert config.static == "https://example.org/gtfs.zip"
    assert config.poll_seconds == 30
    assert FeedConfig.from_json(config.to_json()) == config
    assert config.public()["headers"] == ["Authorization"]
    assert "Bearer x" not in str(config.public())
    minimal = FeedConfig.from_json({"id": "a", "static": "x.zip"})
    assert minimal.poll_seconds == 15 and minimal.headers == {} and minimal.alerts is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"id": "a b", "static": "x.zip"}, id="id-space"),
        pytest.param({"id": "{x}", "static": "x.zip"}, id="id-hash-tag"),
        pytest.param({"id": "x*", "static": "x.zip"}, id="id-wildcard"),
        pytest.param({"id": "", "static": "x.zip"}, id="id-empty"),
        pytest.param({"id": "-x", "static": "x.zip"}, id="id-leading-dash"),
        pytest.param({"id": "a" * 65, "static": "x.zip"}, id="id-too-long"),
        pytest.param({"id": 5, "static": "x.zip"}, id="id-not-str"),
        pytest.param({"static": "x.zip"}, id="id-missing"),
        pytest.param({"id": "abc\n", "static": "x.zip"}, id="id-trailing-newline"),
        pytest.param({"id": "a"}, id="static-missing"),
        pytest.param({"id": "a", "static": "   "}, id="static-blank"),
        pytest.param({"id": "a", "static": 3}, id="static-not-str"),
        pytest.param({"id": "a", "static": "x", "alerts": ""}, id="alerts-blank"),
        pytest.param({"id": "a", "static": "x", "trip_updates": 1}, id="trip-updates-not-str"),
        pytest.param({"id": "a", "static": "x", "poll_seconds": 1}, id="poll-too-small"),
        pytest.param({"id": "a", "static": "x", "poll_seconds": 86401}, id="poll-too-big"),
        pytest.param({"id": "a", "static": "x", "poll_seconds": "x"}, id="poll-str"),
        pytest.param({"id": "a", "static": "x", "poll_seconds": "30"}, id="poll-numeric-str"),
        pytest.param({"id": "a", "static": "x", "poll_seconds": True}, id="poll-bool"),
        pytest.param({"id": "a", "static": "x", "poll_seconds": 30.0}, id="poll-float"),
        pytest.param({"id": "a", "static": "x", "colour": "red"}, id="unknown-field"),
        pytest.param({"id": "a", "static": "x", "headers": ["A: b"]}, id="headers-list"),
        pytest.param({"id": "a", "static": "x", "headers": "A: b"}, id="headers-str"),
        pytest.param({"id": "a", "static": "x", "headers": {"A": 1}}, id="header-value-int"),
        pytest.param({"id": "a", "static": "x", "headers": {"A": "b\nX: y"}},
                     id="header-injection"),
        pytest.param({"id": "a", "static": "x", "headers": {" ": "b"}}, id="header-name-blank"),
        pytest.param(["id", "a"], id="not-an-object"),
    ],
)
def test_feed_config_refused(data: Any) -> None:
    with pytest.raises(BadRequest) as info:
        FeedConfig.from_json(data)
    assert info.value.code == "invalid_feed_config"
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc", ("Authorization", "Bearer abc")),
        ("X-Api-Key:abc", ("X-Api-Key", "abc")),
        ("  Name :  value with: colon  ", ("Name", "value with: colon")),
        ("Empty:", ("Empty", "")),
    ],
)
def test_parse_header(text: str, expected: tuple[str, str]) -> None:
    assert parse_header(text) == expected


@pytest.mark.parametrize("text", ["no colon", ": value", "   : value", ""])
def test_parse_header_refused(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_header(text)
    assert info.value.code == "invalid_feed_config"


# --- the scheduled board: properties over the real Caltrain index ------------------------------

BOARD_STOPS = ["palo_alto", "70021", "70022", "san_francisco", "70012", "gilroy", "22nd_street"]
START_MIN = utc(2023, 11, 1, 7, 0)  # 2023-11-01 00:00 PDT
START_MAX = utc(2023, 11, 11, 8, 0)  # 2023-11-11 00:00 PST (through the fall-back weekend)


def _board(index: ScheduleIndex, stop_id: str, start: int,
           window_s: int) -> list[ScheduledDeparture]:
    return scheduled_departures(index, index.stops.index_of[stop_id], start, window_s)


def test_board_stops_exist() -> None:
    index = caltrain().index
    for stop_id in BOARD_STOPS:
        assert stop_id in index.stops.index_of


def test_board_known_departures() -> None:
    """Hand-checked in the CSV: trip 411 departs Palo Alto at 17:09:00 on weekdays."""
    index = caltrain().index
    start = utc(2023, 11, 8, 1, 5)  # 2023-11-07 17:05 PST (Tue)
    found = _board(index, "palo_alto", start, 600)
    assert [index.trips.ids[d.trip] for d in found][:1] == ["411"]
    assert found[0].instant == utc(2023, 11, 8, 1, 9)
    assert found[0].service_date == dt.date(2023, 11, 7).toordinal()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stop_id=st.sampled_from(BOARD_STOPS),
    start=st.integers(min_value=START_MIN, max_value=START_MAX),
    window_min=st.integers(min_value=1, max_value=180),
)
def test_board_properties(stop_id: str, start: int, window_min: int) -> None:
    index = caltrain().index
    window = window_min * 60
    found = _board(index, stop_id, start, window)

    # sorted, and inside [start, start + window)
    assert [d.sort_key() for d in found] == sorted(d.sort_key() for d in found)
    assert all(start <= d.instant < start + window for d in found)
    # no duplicates
    assert len({(d.trip, d.row, d.service_date) for d in found}) == len(found)

    # each departure is its stop time on a day its trip runs, at a boardable row of this stop
    members = set(index.stops.board_members(index.stops.index_of[stop_id]))
    st_ = index.stop_times
    for d in found:
        assert int(st_.trip[d.row]) == d.trip
        assert int(st_.stop[d.row]) in members
        assert int(st_.pickup[d.row]) != 1
        assert d.row + 1 < int(st_.offsets[d.trip + 1])  # not the trip's last stop
        when = int(st_.departure[d.row])
        when = when if when != NO_TIME else int(st_.arrival[d.row])
        assert d.instant == service_day_origin(d.service_date, index.timezone) + when
        running = index.calendar.services_on(d.service_date)
        assert running is not None and bool(running[int(index.trips.service[d.trip])])

    # splitting the window in two gives the same departures
    half = window // 2
    first = _board(index, stop_id, start, half)
    second = _board(index, stop_id, start + half, window - half)
    assert first + second == found
