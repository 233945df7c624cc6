"""Realtime through the HTTP API, over real stores, with the real Caltrain captures.

Expected values come from a small reference in this file, written from the GTFS-Realtime
reference and DESIGN.md, that reads the fixture zip with ``csv`` and the captures with the
protobuf bindings; nothing is taken from the production code. Facts it rests on (checked in
``test_reference_facts``): the trip-updates capture's header is 1699405534 (2023-11-07 17:05:34
PST); every one of its 19 trips runs on 2023-11-07 (service 72982) and carries explicit
``time`` updates for a contiguous run of its stop_sequences; that run reaches the trip's last
stop except for trips 128, 129, 414 and 712, whose last delay propagates to the stops after it;
trip 126 has updates from sequence 5 to its last stop 23 (18 departure stops); Palo Alto is
station ``palo_alto`` with platforms 70171 and 70172.

Realtime reaches the API through the store's pub/sub (the app follows the store), so reads
retry for up to ~2 s. Each test holds the feed's ingest lease so the app's own pollers leave the
(unreachable) configured URLs alone.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import zipfile
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest
from aiohttp import web
from conftest import GTFS, RT, Gateway, catalog_settled, eventually
from google.transit import gtfs_realtime_pb2 as pb

from feeds.errors import FeedError
from feeds.schedule.index import ScheduleIndex
from gateway.access.key_issuing import create_key
from gateway.clock import FixedClock, parse_instant
from gateway.http.appkeys import CATALOG, POLLERS
from gateway.ingest.feed_service import iso_utc
from gateway.ingest.pollers import Poller
from gateway.ingest.realtime_feed import RealtimeFeed
from gateway.ingest.realtime_fetch import fetch_realtime
from gateway.ingest.replay import ReplayServer
from gateway.settings import Settings

TZ = ZoneInfo("America/Los_Angeles")
ORIGIN = dt.datetime(2023, 11, 7, tzinfo=TZ).timestamp()  # service day 2023-11-07, 00:00 PST
SERVICE = "72982"  # the weekday service, running on Tue 2023-11-07
TU_PATH = RT / "caltrain" / "trip-updates-2023-11-07.pb"
VP_PATH = RT / "caltrain" / "vehicle-positions-2023-11-07.pb"
HEADER_TS = 1699405534
VP_HEADER_TS = 1699405559
NOW = HEADER_TS + 30  # the clock in these tests: realtime 30 s old, fresh
PA = "/v1/feeds/caltrain/stops/palo_alto/departures"
PA_PLATFORMS = ("70171", "70172")
FEED = "/v1/feeds/caltrain"
UNREACHABLE = "http://127.0.0.1:9"  # configured but never polled (the test holds the lease)

T = TypeVar("T")


# --- the reference --------------------------------------------------------------------------

@dataclass(frozen=True)
class StopTime:
    trip_id: str
    seq: int
    stop_id: str
    arrival: int  # seconds after the service day's origin
    departure: int
    pickup: int


@dataclass(frozen=True)
class Static:
    stop_times: dict[str, list[StopTime]]  # by trip, ordered by stop_sequence
    trip_route: dict[str, str]
    trip_service: dict[str, str]
    parent: dict[str, str]


def _secs(text: str) -> int:
    h, m, s = (int(p) for p in text.split(":"))
    return h * 3600 + m * 60 + s


@cache
def static() -> Static:
    with zipfile.ZipFile(GTFS / "caltrain-2023.zip") as z:
        def rows(name: str) -> list[dict[str, str]]:
            return list(csv.DictReader(io.TextIOWrapper(z.open(name), "utf-8-sig")))

        stop_times: dict[str, list[StopTime]] = {}
        for r in rows("stop_times.txt"):
            stop_times.setdefault(r["trip_id"], []).append(StopTime(
                r["trip_id"], int(r["stop_sequence"]), r["stop_id"], _secs(r["arrival_time"]),
                _secs(r["departure_time"]), int(r["pickup_type"] or 0)))
        for rows_of_trip in stop_times.values():
            rows_of_trip.sort(key=lambda st: st.seq)
        trips = rows("trips.txt")
        parent = {r["stop_id"]: r["parent_station"] for r in rows("stops.txt")
                  if r["parent_station"]}
    return Static(stop_times, {t["trip_id"]: t["route_id"] for t in trips},
                  {t["trip_id"]: t["service_id"] for t in trips}, parent)


def capture() -> Any:
    message = pb.FeedMessage()
    message.ParseFromString(TU_PATH.read_bytes())
    return message


def trip_update(message: Any, trip_id: str) -> Any:
    for entity in message.entity:
        if entity.HasField("trip_update") and entity.trip_update.trip.trip_id == trip_id:
            return entity.trip_update
    raise KeyError(trip_id)


def iso(instant: float) -> str:
    return dt.datetime.fromtimestamp(instant, TZ).isoformat()


def status_of(delay: int) -> str:
    """DESIGN/issue: on_time when |delay| < 60 s, else delayed or early."""
    if abs(delay) < 60:
        return "on_time"
    return "delayed" if delay > 0 else "early"


@dataclass(frozen=True)
class Live:
    expected: int
    delay: int
    vehicle_id: str | None


def reference_realtime(message: Any) -> tuple[dict[tuple[str, int], Live], set[str]]:
    """(trip_id, stop_sequence) → realtime, and the cancelled trips, for a capture of trips that
    all run on 2023-11-07. ``time`` wins over ``delay``; a missing departure takes the
    arrival; the last delay propagates forward to later stops, never backwards."""
    out: dict[tuple[str, int], Live] = {}
    cancelled: set[str] = set()
    rel = pb.TripDescriptor.ScheduleRelationship
    for entity in message.entity:
        tu = entity.trip_update
        trip_id = tu.trip.trip_id
        assert tu.trip.start_date == "20231107"
        if tu.trip.schedule_relationship in (rel.Value("CANCELED"), rel.Value("DELETED")):
            cancelled.add(trip_id)
            continue
        vehicle = tu.vehicle.id or None if tu.HasField("vehicle") else None
        updates = {u.stop_sequence: u for u in tu.stop_time_update}
        delay: int | None = None
        for st in static().stop_times[trip_id]:
            scheduled = int(ORIGIN) + st.departure
            u = updates.get(st.seq)
            if u is not None:
                event = u.departure if u.HasField("departure") else u.arrival
                if event.HasField("time"):
                    delay = int(event.time) - scheduled
                elif event.HasField("delay"):
                    delay = int(event.delay)
            if delay is not None:
                out[(trip_id, st.seq)] = Live(scheduled + delay, delay, vehicle)
    return out, cancelled


@dataclass(frozen=True)
class RefDeparture:
    trip_id: str
    stop_id: str
    seq: int
    scheduled: int
    live: Live | None
    cancelled: bool

    @property
    def when(self) -> int:
        return self.live.expected if self.live and not self.cancelled else self.scheduled


def reference_board(message: Any, stops: tuple[str, ...], start: int, window_min: int = 60,
                    include_cancelled: bool = False) -> list[RefDeparture]:
    rt, cancelled = reference_realtime(message)
    out = []
    for trip_id, rows in static().stop_times.items():
        if static().trip_service[trip_id] != SERVICE:
            continue
        for st in rows[:-1]:  # the last stop is never a departure
            if st.stop_id not in stops or st.pickup == 1:
                continue
            d = RefDeparture(trip_id, st.stop_id, st.seq, int(ORIGIN) + st.departure,
                             rt.get((trip_id, st.seq)), trip_id in cancelled)
            if d.cancelled and not include_cancelled:
                continue
            if start <= d.when < start + window_min * 60:
                out.append(d)
    return sorted(out, key=lambda d: (d.when, d.trip_id))


def with_uniform_delay(message: Any, trip_id: str, delay: int) -> None:
    """Every update of the trip: time = scheduled + delay (arrival and departure)."""
    by_seq = {st.seq: st for st in static().stop_times[trip_id]}
    for u in trip_update(message, trip_id).stop_time_update:
        st = by_seq[u.stop_sequence]
        if u.HasField("arrival"):
            u.arrival.time = int(ORIGIN) + st.arrival + delay
        if u.HasField("departure"):
            u.departure.time = int(ORIGIN) + st.departure + delay


def test_reference_facts() -> None:
    message = capture()
    assert message.header.timestamp == HEADER_TS and len(message.entity) == 19
    short = set()
    for entity in message.entity:
        tu = entity.trip_update
        all_seqs = [st.seq for st in static().stop_times[tu.trip.trip_id]]
        assert static().trip_service[tu.trip.trip_id] == SERVICE
        seqs = [u.stop_sequence for u in tu.stop_time_update]
        first = all_seqs.index(seqs[0])
        assert seqs == all_seqs[first:first + len(seqs)]
        if seqs[-1] != all_seqs[-1]:
            short.add(tu.trip.trip_id)
        assert all((u.HasField("arrival") and u.arrival.HasField("time"))
                   or (u.HasField("departure") and u.departure.HasField("time"))
                   for u in tu.stop_time_update)
    assert short == {"128", "129", "414", "712"}
    seqs_126 = [u.stop_sequence for u in trip_update(message, "126").stop_time_update]
    assert (seqs_126[0], seqs_126[-1]) == (5, 23)
    assert {static().parent[p] for p in PA_PLATFORMS} == {"palo_alto"}


# --- fixtures and helpers -------------------------------------------------------------------

@dataclass
class RtGateway:
    gw: Gateway
    rt: RealtimeFeed
    key: str
    operator: str

    @property
    def index(self) -> ScheduleIndex:
        index = self.gw.app[CATALOG].feeds["caltrain"].index
        assert index is not None
        return index

    async def apply(self, kind: str, body: bytes | Any) -> dict[str, Any]:
        data = body if isinstance(body, bytes) else body.SerializeToString()
        return await self.rt.apply(kind, data, self.index)

    async def get(self, path: str, status: int = 200, **params: Any) -> Any:
        got, body = await self.gw.get(path, key=self.key, **params)
        assert got == status, body
        return body


async def _rt_gateway(gateway: Gateway, **urls: str | None) -> RtGateway:
    # This test is the feed's ingest replica: the app's own pollers leave it alone.
    assert await gateway.store.hold_lease("feed:caltrain", "tests", 600_000)
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip", **urls)
    gateway.clock.instant = float(NOW)
    key, _ = await create_key(gateway.store, gateway.clock, kind="developer",
                              email="rt-api@example.org", tier="unlimited")
    operator, _ = await create_key(gateway.store, gateway.clock, kind="operator",
                                   email="ops@example.org", tier="unlimited")
    return RtGateway(gateway, gateway.app[POLLERS].feed("caltrain"), key, operator)


@pytest.fixture
async def live(gateway: Gateway) -> RtGateway:
    return await _rt_gateway(gateway, trip_updates=f"{UNREACHABLE}/tu.pb",
                             vehicle_positions=f"{UNREACHABLE}/vp.pb",
                             alerts=f"{UNREACHABLE}/alerts.pb")


def assert_board(body: dict[str, Any], ref: list[RefDeparture]) -> None:
    got = [(d["trip_id"], d["stop_id"], d["stop_sequence"]) for d in body["departures"]]
    want = [(d.trip_id, d.stop_id, d.seq) for d in ref]
    assert sorted(got) == sorted(want)
    by_key = {(d.trip_id, d.stop_id, d.seq): d for d in ref}
    whens = []
    for d in body["departures"]:
        r = by_key[(d["trip_id"], d["stop_id"], d["stop_sequence"])]
        assert d["scheduled"] == iso(r.scheduled), d
        if r.cancelled:
            assert d["status"] == "cancelled" and d["realtime"] is True, d
        elif r.live is None:
            assert (d["realtime"], d["expected"], d["delay_s"], d["status"],
                    d["vehicle_id"]) == (False, None, None, "scheduled", None), d
        else:
            assert d["realtime"] is True, d
            assert d["expected"] == iso(r.live.expected), d
            assert type(d["delay_s"]) is int and d["delay_s"] == r.live.delay, d
            assert d["status"] == status_of(r.live.delay), d
            assert d["vehicle_id"] == r.live.vehicle_id, d
        whens.append(dt.datetime.fromisoformat(d["expected"] or d["scheduled"]).timestamp())
    assert whens == sorted(whens), "not sorted by expected, else scheduled"


async def board_matches(live: RtGateway, message: Any, **params: Any) -> dict[str, Any]:
    include = params.get("include_cancelled") == "true"
    ref = reference_board(message, PA_PLATFORMS, NOW, include_cancelled=include)

    async def check() -> dict[str, Any]:
        body = await live.get(PA, **params)
        assert body["realtime_stale"] is False, body
        assert body["realtime_age_s"] == NOW - message.header.timestamp, body
        assert_board(body, ref)
        return body
    return await eventually(check)


# --- departures -----------------------------------------------------------------------------

async def test_departures_with_realtime_match_the_capture(live: RtGateway) -> None:
    await live.apply("trip_updates", TU_PATH.read_bytes())
    body = await board_matches(live, capture())
    statuses = {d["status"] for d in body["departures"]}
    assert sum(d["realtime"] for d in body["departures"]) >= 5, body
    assert {"on_time", "delayed"} <= statuses, statuses
    assert all(d["expected"].endswith("-08:00") for d in body["departures"] if d["realtime"])


async def test_status_thresholds_and_time_wins_over_delay(live: RtGateway) -> None:
    message = capture()
    # Trips on the Palo Alto board at 17:05:34: 126 and 412 leave from 70172, 127 and 311
    # from 70171, 310 from 70172 (scheduled 17:14).
    for trip_id, delay in (("126", 60), ("412", -60), ("127", 59), ("311", -59),
                           ("310", 600)):
        with_uniform_delay(message, trip_id, delay)
    # An update giving both: ``time`` (+120 s) wins over ``delay`` (+30 s).
    st_411 = {st.stop_id: st for st in static().stop_times["411"]}["70171"]
    for u in trip_update(message, "411").stop_time_update:
        if u.stop_sequence == st_411.seq:
            u.departure.time = int(ORIGIN) + st_411.departure + 120
            u.departure.delay = 30
    await live.apply("trip_updates", message)
    body = await board_matches(live, message)
    by_trip = {d["trip_id"]: d for d in body["departures"]}
    assert [by_trip[t]["status"] for t in ("126", "412", "127", "311", "310", "411")] == [
        "delayed", "early", "on_time", "on_time", "delayed", "delayed"]
    assert by_trip["411"]["delay_s"] == 120
    assert by_trip["310"]["expected"] == iso(int(ORIGIN) + _secs("17:14:00") + 600)


async def test_cancelled_trip_is_hidden_unless_asked_for(live: RtGateway) -> None:
    message = capture()
    tu = trip_update(message, "126")
    tu.trip.schedule_relationship = pb.TripDescriptor.CANCELED
    del tu.stop_time_update[:]
    await live.apply("trip_updates", message)
    body = await board_matches(live, message)
    assert "126" not in {d["trip_id"] for d in body["departures"]}
    body = await board_matches(live, message, include_cancelled="true")
    cancelled = [d for d in body["departures"] if d["trip_id"] == "126"]
    assert len(cancelled) == 1 and cancelled[0]["status"] == "cancelled"
    assert [d["trip_id"] for d in body["departures"] if d["status"] == "cancelled"] == ["126"]


# --- vehicles -------------------------------------------------------------------------------

def _vehicles_capture() -> list[Any]:
    message = pb.FeedMessage()
    message.ParseFromString(VP_PATH.read_bytes())
    assert message.header.timestamp == VP_HEADER_TS
    return [e.vehicle for e in message.entity]


async def test_vehicles_with_bbox_and_route(live: RtGateway) -> None:
    await live.apply("vehicle_positions", VP_PATH.read_bytes())
    raw = _vehicles_capture()

    async def all_vehicles() -> Any:
        body = await live.get(f"{FEED}/vehicles")
        assert body["vehicles"], body
        return body
    body = await eventually(all_vehicles)
    assert body["realtime_stale"] is False and body["realtime_age_s"] == NOW - VP_HEADER_TS
    got = {v["id"]: v for v in body["vehicles"]}
    # Every vehicle of the capture is on its trip's line (all within 5 km of a stop of it).
    assert set(got) == {v.vehicle.id for v in raw}
    for v in raw:
        g = got[v.vehicle.id]
        assert g["trip_id"] == v.trip.trip_id and g["route_id"] == v.trip.route_id
        assert g["lat"] == pytest.approx(v.position.latitude, abs=1e-6)
        assert g["lon"] == pytest.approx(v.position.longitude, abs=1e-6)
        assert g["timestamp"] == v.timestamp
        assert g["age_s"] == NOW - v.timestamp == 15
        assert {"bearing", "speed"} <= set(g)

    # The peninsula between Millbrae and Redwood City: lat 37.45..37.62, lon -122.45..-122.2
    box = (-122.45, 37.45, -122.2, 37.62)
    inside = {v.vehicle.id for v in raw if box[0] <= v.position.longitude <= box[2]
              and box[1] <= v.position.latitude <= box[3]}
    assert 0 < len(inside) < len(raw)
    body = await live.get(f"{FEED}/vehicles", bbox=",".join(map(str, box)))
    assert {v["id"] for v in body["vehicles"]} == inside

    body = await live.get(f"{FEED}/vehicles", route="L4")
    assert {v["id"] for v in body["vehicles"]} == {v.vehicle.id for v in raw
                                                    if v.trip.route_id == "L4"} != set()
    body = await live.get(f"{FEED}/vehicles", route="L4", bbox=",".join(map(str, box)))
    assert {v["id"] for v in body["vehicles"]} == {
        v.vehicle.id for v in raw if v.trip.route_id == "L4" and v.vehicle.id in inside}

    # 91 s after the header the positions are stale: none is shown, and the answer says so.
    live.gw.clock.instant = float(VP_HEADER_TS + 91)
    body = await live.get(f"{FEED}/vehicles")
    assert (body["vehicles"], body["realtime_stale"]) == ([], True)


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", "-122,37,-123,38", "-122,-91,-121,37",
                                  "-122,37,-121,38,5", "-181,37,-121,38"])
async def test_vehicles_bad_bbox(live: RtGateway, bbox: str) -> None:
    body = await live.get(f"{FEED}/vehicles", status=400, bbox=bbox)
    assert body["error"]["code"] == "bad_parameter", body


# --- alerts ---------------------------------------------------------------------------------

def alerts_message(now: int) -> Any:
    message = pb.FeedMessage()
    message.header.gtfs_realtime_version = "2.0"
    message.header.incrementality = pb.FeedHeader.FULL_DATASET
    message.header.timestamp = now

    def add(alert_id: str, periods: list[tuple[int | None, int | None]],
            entities: list[dict[str, str]]) -> None:
        entity = message.entity.add()
        entity.id = alert_id
        alert = entity.alert
        for start, end in periods:
            p = alert.active_period.add()
            if start is not None:
                p.start = start
            if end is not None:
                p.end = end
        for fields in entities:
            e = alert.informed_entity.add()
            for name, value in fields.items():
                if name == "trip_id":
                    e.trip.trip_id = value
                else:
                    setattr(e, name, value)
        alert.header_text.translation.add(text=f"alert {alert_id}", language="en")
        alert.effect = pb.Alert.SIGNIFICANT_DELAYS

    add("stop-70172", [(now - 600, now + 3600)], [{"stop_id": "70172"}])
    add("station", [], [{"stop_id": "palo_alto"}])
    add("route-L4", [(None, now + 3600)], [{"route_id": "L4"}])
    add("trip-126", [(now - 60, None)], [{"trip_id": "126"}])
    add("route-L1-at-70171", [], [{"route_id": "L1", "stop_id": "70171"}])
    add("expired", [(now - 7200, now - 60)], [{"route_id": "L3"}, {"stop_id": "70171"}])
    add("later", [(now + 300, now + 900)], [{"stop_id": "70171"}])
    return message


async def test_alerts_filters_active_periods_and_departure_ids(live: RtGateway) -> None:
    await live.apply("trip_updates", TU_PATH.read_bytes())
    await live.apply("alerts", alerts_message(NOW))
    active = {"stop-70172", "station", "route-L4", "trip-126", "route-L1-at-70171"}

    async def listed() -> Any:
        body = await live.get(f"{FEED}/alerts")
        assert {a["id"] for a in body["alerts"]} == active, body
        return body
    body = await eventually(listed)
    assert body["realtime_stale"] is False
    one = {a["id"]: a for a in body["alerts"]}["stop-70172"]
    assert one["informed_entities"] == [{"stop_id": "70172"}]
    assert one["active_periods"] == [{"start": NOW - 600, "end": NOW + 3600}]
    assert one["header"] == {"en": "alert stop-70172"} and one["effect"] == "SIGNIFICANT_DELAYS"

    for params, want in (({"stop": "70172"}, {"stop-70172"}),
                         ({"stop": "palo_alto"}, {"station"}),
                         ({"stop": "70171"}, {"route-L1-at-70171"}),
                         ({"route": "L4"}, {"route-L4"}),
                         ({"route": "L1"}, {"route-L1-at-70171"}),
                         ({"trip": "126"}, {"trip-126"}),
                         ({"route": "L3"}, set()),
                         ({"trip": "127", "route": "L1"}, set())):
        body = await live.get(f"{FEED}/alerts", **params)
        assert {a["id"] for a in body["alerts"]} == want, params

    # Departures carry the ids of the alerts that concern them.
    body = await board_matches(live, capture())
    assert {"126", "411", "412"} <= {d["trip_id"] for d in body["departures"]}
    for d in body["departures"]:
        want = {"station"}
        if d["stop_id"] == "70172":
            want.add("stop-70172")
        if d["route_id"] == "L4":
            want.add("route-L4")
        if d["trip_id"] == "126":
            want.add("trip-126")
        if d["route_id"] == "L1" and d["stop_id"] == "70171":
            want.add("route-L1-at-70171")
        assert set(d["alerts"]) == want, d

    # active_period honoured as the clock moves: "later" starts at NOW + 300.
    live.gw.clock.advance(301)
    body = await live.get(f"{FEED}/alerts", stop="70171")
    assert {a["id"] for a in body["alerts"]} == {"route-L1-at-70171", "later"}


# --- the trip view --------------------------------------------------------------------------

async def test_trip_with_realtime(live: RtGateway) -> None:
    await live.apply("trip_updates", TU_PATH.read_bytes())
    rt, _ = reference_realtime(capture())
    rows = static().stop_times["126"]

    async def check() -> Any:
        body = await live.get(f"{FEED}/trips/126", date="2023-11-07")
        assert body["realtime_stale"] is False and body["realtime_age_s"] == 30
        assert body["vehicle_id"] == "126"
        assert len(body["stop_times"]) == len(rows)
        for st, got in zip(rows, body["stop_times"], strict=True):
            assert (got["stop_sequence"], got["stop_id"]) == (st.seq, st.stop_id)
            assert got["departure"] == iso(ORIGIN + st.departure)
            r = rt.get(("126", st.seq))
            if r is None:  # before the first update: nothing propagates backwards
                assert (got["expected_departure"], got["delay_s"], got["status"]) == (
                    None, None, "scheduled"), got
            elif st is not rows[-1]:
                assert got["expected_departure"] == iso(r.expected), got
                assert got["delay_s"] == r.delay, got
                assert got["status"] == status_of(r.delay), got
        return body
    body = await eventually(check)
    assert [s["delay_s"] for s in body["stop_times"][4:7]] == [580, 534, 422]
    # The last stop has only an arrival: 1699410300 = 18:25:00 PST.
    assert body["stop_times"][-1]["expected_arrival"] == "2023-11-07T18:25:00-08:00"


# --- feed health ----------------------------------------------------------------------------

def with_unknown_trip(message: Any) -> Any:
    entity = message.entity.add()
    entity.id = "ghost"
    entity.trip_update.trip.trip_id = "no-such-trip"
    entity.trip_update.trip.start_date = "20231107"
    u = entity.trip_update.stop_time_update.add()
    u.stop_sequence = 1
    u.departure.time = HEADER_TS + 600
    return message


async def test_feed_health_after_polls(live: RtGateway, aiohttp_server: Any) -> None:
    body = with_unknown_trip(capture()).SerializeToString()
    answers: list[int] = [200]

    async def serve(request: web.Request) -> web.StreamResponse:
        if answers[0] != 200:
            return web.Response(status=answers[0], text="down")
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_get("/tu.pb", serve)
    server = await aiohttp_server(app)
    settings = Settings(allow_private_urls=True, realtime_timeout_s=2.0)
    async with aiohttp.ClientSession() as session:
        poller = Poller(live.rt, live.gw.app[CATALOG], "trip_updates",
                        str(server.make_url("/tu.pb")), {}, 15, settings, session)
        assert await poller.poll_once() == 15

        async def polled() -> Any:
            feed = await live.get(FEED)
            health = feed["realtime"]["trip_updates"]
            assert health["last_fetch"] == iso_utc(NOW), health
            return feed
        feed = await eventually(polled)
        health = feed["realtime"]["trip_updates"]
        assert health["configured"] is True
        assert (health["http_status"], health["bytes"]) == (200, len(body))
        assert (health["entities"], health["matched"]) == (20, 19)
        assert health["match_rate"] == pytest.approx(19 / 20)
        assert health["rejected"] == {"trip_not_found": 1}
        assert (health["header_timestamp"], health["age_s"], health["stale"]) == (
            HEADER_TS, 30, False)
        assert health["last_error"] is None
        assert feed["realtime"]["vehicle_positions"]["header_timestamp"] is None
        listed = {f["id"]: f for f in (await live.get("/v1/feeds"))["feeds"]}
        assert listed["caltrain"]["realtime"]["trip_updates"] == health

        # Age moves with the clock; a failed poll is recorded without losing the numbers.
        live.gw.clock.advance(45)
        answers[0] = 503
        assert await poller.poll_once() >= 15

        async def failed() -> Any:
            h = (await live.get(FEED))["realtime"]["trip_updates"]
            assert h["last_error"] is not None and h["last_error"]["code"] == "fetch_failed", h
            return h
        h = await eventually(failed)
        assert (h["age_s"], h["stale"], h["entities"], h["rejected"]) == (
            75, False, 20, {"trip_not_found": 1})
        assert h["last_error"]["at"] == iso_utc(NOW + 45)
        assert h["last_fetch"] == iso_utc(NOW + 45)


async def test_vehicle_and_alert_health(live: RtGateway) -> None:
    await live.apply("vehicle_positions", VP_PATH.read_bytes())
    await live.apply("alerts", alerts_message(NOW))

    async def check() -> None:
        rt = (await live.get(FEED))["realtime"]
        vp, al = rt["vehicle_positions"], rt["alerts"]
        assert (vp["entities"], vp["matched"], vp["rejected"]) == (14, 14, {}), vp
        assert (vp["header_timestamp"], vp["age_s"], vp["stale"]) == (
            VP_HEADER_TS, NOW - VP_HEADER_TS, False), vp
        assert (al["entities"], al["header_timestamp"], al["age_s"]) == (7, NOW, 0), al
    await eventually(check)


# --- write only what changed ----------------------------------------------------------------

async def _overlays(live: RtGateway) -> dict[str, bytes | None]:
    store = live.gw.store
    ids = sorted(await store.stop_overlay_ids("caltrain"))
    return dict(zip(ids, await store.stop_overlays("caltrain", ids), strict=True))


async def test_write_only_what_changed(live: RtGateway) -> None:
    store = live.gw.store
    await live.apply("trip_updates", TU_PATH.read_bytes())
    first = (await store.realtime_meta("caltrain"))["trip_updates"]
    before = await _overlays(live)
    # Every departure stop of every trip with an update has an overlay.
    rt, _ = reference_realtime(capture())
    rows = {(st.trip_id, st.seq): st for r in static().stop_times.values() for st in r[:-1]}
    stops_with_rt = {rows[k].stop_id for k in rt if k in rows}
    assert set(before) == stops_with_rt
    assert first["changed_stops"] == len(stops_with_rt)

    events: list[dict[str, Any]] = []
    listening = asyncio.Event()

    async def listen() -> None:
        stream = store.events()
        listening.set()
        async for message in stream:
            if message.startswith("rt "):
                events.append(orjson.loads(message[3:]))

    task = asyncio.create_task(listen())
    try:
        await listening.wait()
        await asyncio.sleep(0.2)  # the subscription is in place
        # The same snapshot again: nothing to write.
        await live.apply("trip_updates", TU_PATH.read_bytes())
        assert (await store.realtime_meta("caltrain"))["trip_updates"]["changed_stops"] == 0
        assert await _overlays(live) == before

        # One trip two minutes later: exactly that trip's departure stops change.
        message = capture()
        for u in trip_update(message, "126").stop_time_update:
            for event in (u.arrival, u.departure):
                if event.HasField("time"):
                    event.time += 120
        await live.apply("trip_updates", message)
        meta = (await store.realtime_meta("caltrain"))["trip_updates"]
        after = await _overlays(live)
        trip_stops = {st.stop_id for st in static().stop_times["126"][:-1] if st.seq >= 5}
        assert len(trip_stops) == 18
        assert meta["changed_stops"] == 18
        assert {s for s in after if after[s] != before.get(s)} == trip_stops
        assert set(after) == set(before)

        async def announced() -> None:
            assert len(events) >= 2, events
        await eventually(announced)
        assert events[0]["stops"] == []
        assert sorted(events[1]["stops"]) == sorted(trip_stops)

        # An entity whose bytes change but whose board does not (only its own timestamp):
        # nothing is written.
        trip_update(message, "126").timestamp += 7
        await live.apply("trip_updates", message)
        assert (await store.realtime_meta("caltrain"))["trip_updates"]["changed_stops"] == 0
        assert await _overlays(live) == after
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # And the API shows the new time at Palo Alto (126 leaves 70172 at 17:40:29 now).
    async def shown() -> None:
        body = await live.get(PA)
        d = {x["trip_id"]: x for x in body["departures"]}["126"]
        assert (d["expected"], d["delay_s"]) == ("2023-11-07T17:40:29-08:00", 149), d
    await eventually(shown)


def stops_with_realtime(message: Any) -> set[str]:
    """The departure stops that have a realtime record for this capture (the reference)."""
    rt, _ = reference_realtime(message)
    rows = {(st.trip_id, st.seq): st for r in static().stop_times.values() for st in r[:-1]}
    return {rows[k].stop_id for k in rt if k in rows}


def without_trip(message: Any, trip_id: str) -> Any:
    keep = [e for e in message.entity if e.trip_update.trip.trip_id != trip_id]
    del message.entity[:]
    message.entity.extend(keep)
    return message


async def test_full_dataset_replaces_a_trip_that_disappears(live: RtGateway) -> None:
    await live.apply("trip_updates", TU_PATH.read_bytes())
    await board_matches(live, capture())
    # Without 126 (on the Palo Alto board) and 128 (the only realtime at stop 70032).
    message = without_trip(without_trip(capture(), "126"), "128")
    message.header.timestamp = HEADER_TS + 20
    await live.apply("trip_updates", message)
    assert "70032" in stops_with_realtime(capture())
    assert set(await _overlays(live)) == stops_with_realtime(message)
    body = await board_matches(live, message)
    d = {x["trip_id"]: x for x in body["departures"]}["126"]
    assert (d["realtime"], d["status"], d["expected"]) == (False, "scheduled", None)
    assert await live.gw.store.trip_realtime("caltrain", f"126|{ORDINAL}|-1") is None


ORDINAL = dt.date(2023, 11, 7).toordinal()


async def test_restart_then_snapshot_without_a_trip_deletes_its_overlays(
        live: RtGateway) -> None:
    await live.apply("trip_updates", TU_PATH.read_bytes())
    message = without_trip(capture(), "128")
    message.header.timestamp = HEADER_TS + 20
    # Trip 128 is the only trip of the capture with realtime at stop 70032.
    assert stops_with_realtime(capture()) - stops_with_realtime(message) == {"70032"}
    board = f"{FEED}/stops/70032/departures"

    async def shows_128(live_128: bool) -> None:
        body = await live.get(board, window=240)
        d = {x["trip_id"]: x for x in body["departures"]}["128"]
        assert d["realtime"] is live_128, d
    await eventually(lambda: shows_128(True))

    restarted = RealtimeFeed(live.gw.store, "caltrain", live.gw.clock)
    await restarted.apply("trip_updates", message.SerializeToString(), live.index)
    assert await live.gw.store.trip_realtime("caltrain", f"128|{ORDINAL}|-1") is None
    await eventually(lambda: shows_128(False))
    assert set(await _overlays(live)) == stops_with_realtime(message)


# --- the operator push route ----------------------------------------------------------------

async def test_push_realtime(live: RtGateway) -> None:
    client = live.gw.client
    url = f"{FEED}/realtime"
    body = TU_PATH.read_bytes()
    resp = await client.post(url, data=body, headers={"X-API-Key": live.key})
    assert resp.status == 403, await resp.text()
    assert (await resp.json())["error"]["code"] == "forbidden"
    resp = await client.post(url, data=body)
    assert resp.status == 401

    resp = await client.post(url, data=body, headers={"X-API-Key": live.operator})
    assert resp.status == 202, await resp.text()
    pushed = await resp.json()
    assert set(pushed["applied"]) == {"trip_updates"}
    assert pushed["applied"]["trip_updates"]["entities"] == 19
    await board_matches(live, capture())

    resp = await client.post(url, data=b"<html>nope</html>",
                             headers={"X-API-Key": live.operator})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "not_a_feed_message"
    await board_matches(live, capture())  # the refused body changed nothing


async def test_push_with_bearer_operator_token(live: RtGateway) -> None:
    """DESIGN.md: operator routes take ``Authorization: Bearer <token>``."""
    resp = await live.gw.client.post(f"{FEED}/realtime", data=TU_PATH.read_bytes(),
                                     headers={"Authorization": f"Bearer {live.operator}"})
    assert resp.status == 202, await resp.text()


@pytest.fixture
async def push_only(gateway: Gateway) -> RtGateway:
    return await _rt_gateway(gateway)


async def test_a_board_is_rendered_once_a_second_and_again_when_realtime_changes(
        push_only: RtGateway, board_renders: list[tuple[Any, ...]]) -> None:
    """Departure boards are cached per request target for the current second
    (``gateway.http.board_cache.BoardCache``): a second request in the same second is answered with
    the same bytes without rendering, a realtime change renders anew within that second, and so
    does the next second."""
    live, renders = push_only, board_renders

    async def board() -> bytes:
        resp = await live.gw.client.get(PA, headers={"X-API-Key": live.key})
        assert resp.status == 200, await resp.text()
        return await resp.read()

    await catalog_settled(live.gw.app, "caltrain")
    first = await board()
    assert await board() == first and len(renders) == 1  # the same second: from the cache
    assert not any(d["realtime"] for d in orjson.loads(first)["departures"])
    resp = await live.gw.client.post(f"{FEED}/realtime", data=TU_PATH.read_bytes(),
                                     headers={"X-API-Key": live.operator})
    assert resp.status == 202, await resp.text()
    await board_matches(live, capture())  # still the same second, rendered with realtime
    rendered = len(renders)
    assert rendered >= 2 and await board() == await board() and len(renders) == rendered
    live.gw.clock.advance(1)
    later = orjson.loads(await board())
    assert len(renders) == rendered + 1
    assert later["time"] == iso(NOW + 1)


async def test_pushed_realtime_shows_on_a_feed_without_urls(push_only: RtGateway) -> None:
    """A feed with no realtime URL, fed only by pushes, still shows them on its boards."""
    live = push_only
    resp = await live.gw.client.post(f"{FEED}/realtime", data=TU_PATH.read_bytes(),
                                     headers={"X-API-Key": live.operator})
    assert resp.status == 202, await resp.text()
    await board_matches(live, capture())


# --- the demo's replay server ---------------------------------------------------------------

async def test_replay_server_restamps_to_the_clock(embedded_gateway: Gateway) -> None:
    clock = FixedClock(parse_instant("2026-11-26T09:30:00+01:00"))
    shift = int(clock.now()) - HEADER_TS
    replay = ReplayServer(clock, {"/trip-updates.pb": TU_PATH})
    base = await replay.start()
    try:
        async with aiohttp.ClientSession() as session:
            got = await fetch_realtime(session, f"{base}/trip-updates.pb", max_bytes=1 << 20,
                                       timeout_s=5, allow_private=True)
            missing = await session.get(f"{base}/nope.pb")
            assert missing.status == 404
            missing.release()
            clock.advance(60)
            later = await fetch_realtime(session, f"{base}/trip-updates.pb",
                                         max_bytes=1 << 20, timeout_s=5, allow_private=True)
    finally:
        await replay.stop()
    assert got.body is not None and later.body is not None
    message = pb.FeedMessage()
    message.ParseFromString(got.body)
    original = capture()
    assert message.header.timestamp == int(clock.now()) - 60
    assert len(message.entity) == len(original.entity) == 19
    for a, b in zip(message.entity, original.entity, strict=True):
        assert a.trip_update.trip.trip_id == b.trip_update.trip.trip_id
        assert a.trip_update.timestamp == b.trip_update.timestamp + shift
        for ua, ub in zip(a.trip_update.stop_time_update, b.trip_update.stop_time_update,
                          strict=True):
            for ea, eb in ((ua.arrival, ub.arrival), (ua.departure, ub.departure)):
                assert ea.HasField("time") == eb.HasField("time")
                if eb.HasField("time"):
                    assert ea.time == eb.time + shift
    second = pb.FeedMessage()
    second.ParseFromString(later.body)
    assert second.header.timestamp == int(clock.now())
    # The restamped capture is accepted by the ingest at the replay clock.
    rt = RealtimeFeed(embedded_gateway.store, "replayed", clock)
    with pytest.raises(FeedError) as refused:  # no static here: refused only after decoding
        await rt.apply("trip_updates", got.body, None)
    assert refused.value.code == "static_not_loaded"
