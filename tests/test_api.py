"""The HTTP API through the app over real stores (embedded Valkey and Redis 7).

Expected values were read from the fixture zips (stops.txt, stop_times.txt, trips.txt) with a
csv script: Caltrain on Tue 2023-11-07 runs service 72982; Palo Alto (station ``palo_alto``)
has platforms 70171 (northbound) and 70172 (southbound).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import GTFS, Gateway, catalog_settled

from gateway.access import keys
from gateway.access.key_issuing import create_key

PA = "/v1/feeds/caltrain/stops/palo_alto/departures"
NOW = "2023-11-07T17:05:00-08:00"
# Palo Alto, Tue 2023-11-07, departures from 17:05 to 18:05 (trip, route, platform, time).
PA_PEAK = [
    ("411", "L4", "70171", "2023-11-07T17:09:00-08:00"),
    ("310", "L3", "70172", "2023-11-07T17:14:00-08:00"),
    ("709", "B7", "70171", "2023-11-07T17:19:00-08:00"),
    ("127", "L1", "70171", "2023-11-07T17:29:00-08:00"),
    ("126", "L1", "70172", "2023-11-07T17:38:00-08:00"),
    ("710", "B7", "70172", "2023-11-07T17:47:00-08:00"),
    ("311", "L3", "70171", "2023-11-07T17:52:00-08:00"),
    ("412", "L4", "70172", "2023-11-07T17:59:00-08:00"),
]
DEPARTURE_FIELDS = {
    "trip_id", "route_id", "route_short_name", "headsign", "direction_id", "stop_id",
    "stop_sequence", "platform", "service_date", "scheduled", "expected", "delay_s",
    "realtime", "status", "vehicle_id", "alerts",
}
STOP_FIELDS = {"id", "name", "lat", "lon", "location_type", "parent_station", "platform",
               "distance_m"}


@pytest.fixture
async def caltrain(gateway: Gateway) -> Gateway:
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip")
    return gateway


async def call(gw: Gateway, path: str, headers: dict[str, str] | None = None,
               **params: Any) -> tuple[int, str, Any]:
    resp = await gw.client.get(path, params=params, headers=headers or {})
    return resp.status, resp.content_type, await resp.json()


def assert_error(status: int, ctype: str, body: Any, want_status: int, code: str) -> None:
    assert (status, ctype) == (want_status, "application/json"), body
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# --- authentication ------------------------------------------------------------------------

async def test_missing_key(caltrain: Gateway) -> None:
    assert_error(*await call(caltrain, "/v1/feeds"), 401, "missing_api_key")


async def test_one_char_typo_fails_the_checksum(caltrain: Gateway) -> None:
    key = caltrain.key
    i = 10
    typo = key[:i] + ("A" if key[i] != "A" else "B") + key[i + 1:]
    assert not keys.well_formed(typo)
    got = await call(caltrain, "/v1/feeds", {"X-API-Key": typo})
    assert_error(*got, 401, "invalid_api_key")


async def test_well_formed_unknown_key(caltrain: Gateway) -> None:
    got = await call(caltrain, "/v1/feeds", {"X-API-Key": keys.generate_key()})
    assert_error(*got, 401, "invalid_api_key")


async def test_key_query_parameter(caltrain: Gateway) -> None:
    status, _, body = await call(caltrain, "/v1/feeds", key=caltrain.key)
    assert status == 200, body
    assert [f["id"] for f in body["feeds"]] == ["caltrain"]


async def test_operator_token_reads_developer_endpoints(caltrain: Gateway) -> None:
    token, _ = await create_key(caltrain.store, caltrain.clock, kind="operator",
                                email="ops@example.org")
    assert token.startswith("tgo_")
    status, body = await caltrain.get("/v1/feeds", key=token)
    assert status == 200, body


async def test_revoked_key_refused_at_once(caltrain: Gateway) -> None:
    assert (await caltrain.get("/v1/feeds"))[0] == 200
    await caltrain.store.update_key(keys.key_id_of(caltrain.key),
                                    {"revoked": "2023-11-08T01:05:00+00:00"})
    # Every request's script call reads the record: no process-side delay.
    got = await call(caltrain, "/v1/feeds", {"X-API-Key": caltrain.key})
    assert_error(*got, 401, "revoked_api_key")


async def test_expired_key(caltrain: Gateway) -> None:
    past, _ = await create_key(caltrain.store, caltrain.clock, kind="developer",
                               email="old@example.org", expires=caltrain.clock.now() - 60)
    assert_error(*await call(caltrain, "/v1/feeds", {"X-API-Key": past}), 401,
                 "expired_api_key")


async def test_key_expires_while_cached(caltrain: Gateway) -> None:
    soon, _ = await create_key(caltrain.store, caltrain.clock, kind="developer",
                               email="soon@example.org", expires=caltrain.clock.now() + 60)
    assert (await caltrain.get("/v1/feeds", key=soon))[0] == 200
    caltrain.clock.advance(61)
    assert_error(*await call(caltrain, "/v1/feeds", {"X-API-Key": soon}), 401,
                 "expired_api_key")


# --- not found -----------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "params", "code"), [
    ("/v1/feeds/nope", {}, "feed_not_found"),
    ("/v1/feeds/nope/stops/palo_alto/departures", {}, "feed_not_found"),
    ("/v1/feeds/caltrain/stops/nope/departures", {}, "stop_not_found"),
    ("/v1/feeds/caltrain/trips/nope", {}, "trip_not_found"),
    (PA, {"route": "L99"}, "route_not_found"),
    ("/v1/nope", {}, "not_found"),
])
async def test_not_found(caltrain: Gateway, path: str, params: dict[str, str],
                         code: str) -> None:
    got = await call(caltrain, path, {"X-API-Key": caltrain.key}, **params)
    assert_error(*got, 404, code)


async def test_unknown_path_outside_v1_needs_no_key(caltrain: Gateway) -> None:
    assert_error(*await call(caltrain, "/nope"), 404, "not_found")


async def test_unknown_path_is_404_without_a_key(caltrain: Gateway) -> None:
    # no route, no data: nothing to protect, and nothing counted against a quota
    assert_error(*await call(caltrain, "/v1/nope/deeper"), 404, "not_found")


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/v1/keys/me", {"GET", "HEAD"}),
    ("PUT", PA, {"GET", "HEAD"}),
    ("PUT", "/v1/feeds/caltrain", {"GET", "HEAD", "PATCH", "DELETE"}),
])
async def test_wrong_method_is_json_405_with_allow(caltrain: Gateway, method: str, path: str,
                                                  allow: set[str]) -> None:
    resp = await caltrain.client.request(method, path, headers={"X-API-Key": caltrain.key})
    assert_error(resp.status, resp.content_type, await resp.json(), 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(",")) == allow


# --- bad parameters ------------------------------------------------------------------------

STOPS = "/v1/feeds/caltrain/stops"


@pytest.mark.parametrize(("path", "params", "parameter"), [
    (PA, {"time": "tomorrow"}, "time"),
    (PA, {"time": "2023-11-07T17:05:00"}, "time"),
    (PA, {"window": "0"}, "window"),
    (PA, {"window": "100000"}, "window"),
    (PA, {"window": "abc"}, "window"),
    (PA, {"limit": "0"}, "limit"),
    (PA, {"limit": "501"}, "limit"),
    (PA, {"include_cancelled": "maybe"}, "include_cancelled"),
    (STOPS, {"near": "abc"}, "near"),
    (STOPS, {"near": "100,0"}, "near"),
    (STOPS, {"q": "palo", "radius": "500"}, "radius"),
    (STOPS, {"q": "palo", "limit": "501"}, "limit"),
    (STOPS, {}, "q"),
    ("/v1/feeds/caltrain/trips/411", {"date": "2023-13-01"}, "date"),
])
async def test_bad_parameter(caltrain: Gateway, path: str, params: dict[str, str],
                             parameter: str) -> None:
    status, ctype, body = await call(caltrain, path, {"X-API-Key": caltrain.key}, **params)
    assert_error(status, ctype, body, 400, "bad_parameter")
    assert body["error"]["parameter"] == parameter
    assert parameter in body["error"]["message"]


# --- departures ----------------------------------------------------------------------------

async def test_departures_default_to_clock_now(caltrain: Gateway) -> None:
    status, body = await caltrain.get(PA)
    assert status == 200, body
    assert {"feed", "stop", "time", "departures", "realtime_age_s"} <= set(body)
    assert body["feed"] == "caltrain"
    assert body["stop"] == {"id": "palo_alto", "name": "Palo Alto", "lat": 37.44322,
                            "lon": -122.16429}
    assert body["time"] == NOW
    assert body["realtime_age_s"] is None
    got = [(d["trip_id"], d["route_id"], d["stop_id"], d["scheduled"])
           for d in body["departures"]]
    assert got == PA_PEAK  # station → its platforms, with the platform's stop_id; sorted


async def test_departure_fields(caltrain: Gateway) -> None:
    status, body = await caltrain.get(PA, time=NOW, limit=1)
    assert status == 200, body
    (d,) = body["departures"]
    assert set(d) == DEPARTURE_FIELDS
    assert d == {
        "trip_id": "411", "route_id": "L4", "route_short_name": "L4",
        "headsign": "San Francisco", "direction_id": 0, "stop_id": "70171",
        "stop_sequence": 5, "platform": None, "service_date": "2023-11-07",
        "scheduled": "2023-11-07T17:09:00-08:00", "expected": None, "delay_s": None,
        "realtime": False, "status": "scheduled", "vehicle_id": None, "alerts": [],
    }


async def test_limit_and_window(caltrain: Gateway) -> None:
    _, body = await caltrain.get(PA, time=NOW, limit=3)
    assert [d["trip_id"] for d in body["departures"]] == ["411", "310", "709"]
    _, body = await caltrain.get(PA, time=NOW, window=10)  # [17:05, 17:15)
    assert [d["trip_id"] for d in body["departures"]] == ["411", "310"]
    _, body = await caltrain.get(PA, time="2023-11-08T01:05:00Z", window=5)  # Z = 17:05 PST
    assert [d["trip_id"] for d in body["departures"]] == ["411"]
    _, body = await caltrain.get(PA, time=NOW, window=4)  # 17:09 is the end: excluded
    assert body["departures"] == []
    status, body = await caltrain.get(PA, time=NOW, window=1440, limit=500)  # both maxima
    assert status == 200 and len(body["departures"]) == 104, len(body["departures"])


async def test_route_filter(caltrain: Gateway) -> None:
    status, body = await caltrain.get(PA, time=NOW, route="B7")
    assert status == 200, body
    assert [(d["trip_id"], d["route_id"]) for d in body["departures"]] == [
        ("709", "B7"), ("710", "B7")]


async def test_platform_alone_and_include_cancelled(caltrain: Gateway) -> None:
    status, body = await caltrain.get("/v1/feeds/caltrain/stops/70171/departures",
                                      time=NOW, include_cancelled="true")
    assert status == 200, body
    assert [d["trip_id"] for d in body["departures"]] == ["411", "709", "127", "311"]
    assert {d["direction_id"] for d in body["departures"]} == {0}


async def test_departures_past_midnight(caltrain: Gateway) -> None:
    _, body = await caltrain.get(PA, time="2023-11-07T23:40:00-08:00", window=120)
    got = [(d["trip_id"], d["service_date"], d["scheduled"]) for d in body["departures"]]
    assert got == [("145", "2023-11-07", "2023-11-07T23:46:00-08:00"),
                   ("144", "2023-11-07", "2023-11-07T23:47:00-08:00"),
                   ("146", "2023-11-07", "2023-11-08T01:04:00-08:00")]  # GTFS 25:04:00
    _, body = await caltrain.get(PA, time="2023-11-07T01:00:00-08:00", window=30)
    got = [(d["trip_id"], d["service_date"], d["scheduled"]) for d in body["departures"]]
    assert got == [("146", "2023-11-06", "2023-11-07T01:04:00-08:00")]  # Monday's trip


async def test_departures_across_the_fall_back(caltrain: Gateway) -> None:
    # Saturday 2023-11-04 trip 284 leaves Palo Alto (70172) at 25:09:00: noon-minus-12h of
    # the service day (00:00 PDT) + 25:09 = 08:09Z = the first 01:09, still PDT (-07:00).
    _, body = await caltrain.get(PA, time="2023-11-05T01:00:00-07:00", window=20)
    got = [(d["trip_id"], d["service_date"], d["scheduled"]) for d in body["departures"]]
    assert got == [("284", "2023-11-04", "2023-11-05T01:09:00-07:00")]
    _, body = await caltrain.get(PA, time="2023-11-05T01:00:00-08:00", window=20)
    assert body["departures"] == []  # the second 01:00 (PST) is an hour later


async def test_last_stop_is_not_a_departure(caltrain: Gateway) -> None:
    # San Francisco: every trip calling at 70011 ends there (88 of 88 rows), so it has no
    # departures at all; the southbound platform 70012 (first stop of its trips) has.
    _, body = await caltrain.get("/v1/feeds/caltrain/stops/70011/departures", time=NOW,
                                 window=1440)
    assert body["departures"] == []
    _, body = await caltrain.get("/v1/feeds/caltrain/stops/70012/departures", time=NOW)
    assert [(d["trip_id"], d["stop_sequence"], d["direction_id"])
            for d in body["departures"]] == [("412", 1, 1), ("312", 1, 1), ("128", 1, 1),
                                             ("712", 1, 1)]


# --- stops ---------------------------------------------------------------------------------

async def test_stop_search_accent_and_case_insensitive(gateway: Gateway) -> None:
    await gateway.add_feed("hsl", GTFS / "hsl-helsinki-2022-cropped.zip")
    for q in ("ASEMAPAALLIKON", "asemapäällikönkatu", "Asemapaällikönk"):
        status, body = await gateway.get("/v1/feeds/hsl/stops", q=q)
        assert status == 200, body
        assert sorted(s["id"] for s in body["stops"]) == ["1173112", "1173402", "1173434"]
        assert {s["name"] for s in body["stops"]} == {"Asemapäällikönkatu"}
    _, body = await gateway.get("/v1/feeds/hsl/stops", q="aidasmaki", limit=1)
    assert [s["name"] for s in body["stops"]] == ["Aidasmäki"]


async def test_stop_search_by_name_fields(caltrain: Gateway) -> None:
    status, body = await caltrain.get(STOPS, q="palo alto")
    assert status == 200, body
    ids = [s["id"] for s in body["stops"]]
    assert ids[0] == "palo_alto"  # names starting with the query first
    assert set(ids) == {"palo_alto", "70171", "70172", "PAS", "PAN"}
    station = body["stops"][0]
    assert (station["location_type"], station["parent_station"]) == (1, None)
    child = next(s for s in body["stops"] if s["id"] == "70171")
    assert (child["location_type"], child["parent_station"]) == (0, "palo_alto")


async def test_stop_search_by_name_has_every_design_field(caltrain: Gateway) -> None:
    _, body = await caltrain.get(STOPS, q="palo alto")
    assert set(body["stops"][0]) == STOP_FIELDS


async def test_stop_search_near(caltrain: Gateway) -> None:
    status, body = await caltrain.get(STOPS, near="37.44322,-122.16429", radius=200)
    assert status == 200, body
    assert [(s["id"], s["distance_m"]) for s in body["stops"]] == [
        ("palo_alto", 0.0), ("70171", 40.3), ("70172", 41.4), ("PAS", 155.3)]
    assert set(body["stops"][0]) == STOP_FIELDS
    _, body = await caltrain.get(STOPS, near="37.44322,-122.16429", radius=1000, limit=2)
    assert [s["id"] for s in body["stops"]] == ["palo_alto", "70171"]
    _, body = await caltrain.get(STOPS, near="37.44322,-122.16429", radius=1000)
    dists = [s["distance_m"] for s in body["stops"]]
    assert dists == sorted(dists) and max(dists) <= 1000 and len(dists) == 8


# --- trips ---------------------------------------------------------------------------------

async def test_trip_on_a_service_day(caltrain: Gateway) -> None:
    status, body = await caltrain.get("/v1/feeds/caltrain/trips/411", date="2023-11-07")
    assert status == 200, body
    trip = body["trip"]
    assert (trip["route_id"], trip["headsign"], trip["direction_id"]) == ("L4",
                                                                          "San Francisco", 0)
    assert (trip["service_id"], trip["service_date"], trip["runs_on_date"]) == (
        "72982", "2023-11-07", True)
    st = body["stop_times"]
    assert [s["stop_sequence"] for s in st] == list(range(1, 14))
    assert (st[0]["stop_id"], st[0]["departure"]) == ("70261", "2023-11-07T16:42:00-08:00")
    assert (st[4]["stop_id"], st[4]["arrival"]) == ("70171", "2023-11-07T17:09:00-08:00")
    assert (st[-1]["stop_id"], st[-1]["arrival"]) == ("70011", "2023-11-07T17:58:00-08:00")


async def test_trip_after_midnight_and_across_dst(caltrain: Gateway) -> None:
    _, body = await caltrain.get("/v1/feeds/caltrain/trips/146", date="2023-11-07")
    assert body["stop_times"][0]["departure"] == "2023-11-08T00:03:00-08:00"  # 24:03:00
    assert body["stop_times"][-1]["arrival"] == "2023-11-08T01:43:00-08:00"  # 25:43:00
    # Weekend trip 221 (07:12:00) the day before and the day of the 2023-11-05 fall back.
    _, body = await caltrain.get("/v1/feeds/caltrain/trips/221", date="2023-11-04")
    assert body["stop_times"][0]["departure"] == "2023-11-04T07:12:00-07:00"
    _, body = await caltrain.get("/v1/feeds/caltrain/trips/221", date="2023-11-05")
    assert body["stop_times"][0]["departure"] == "2023-11-05T07:12:00-08:00"


@pytest.mark.parametrize("date", ["2023-11-11", "2023-11-23"])  # Saturday; Thanksgiving
async def test_trip_not_running_on_date(caltrain: Gateway, date: str) -> None:
    status, body = await caltrain.get("/v1/feeds/caltrain/trips/411", date=date)
    assert status == 200, body
    assert (body["trip"]["service_date"], body["trip"]["runs_on_date"]) == (date, False)


# --- ops and feeds -------------------------------------------------------------------------

async def test_healthz_without_key(gateway: Gateway) -> None:
    status, ctype, body = await call(gateway, "/healthz")
    assert (status, ctype, body) == (200, "application/json", {"status": "ok"})


async def test_readyz(gateway: Gateway) -> None:
    status, _, body = await call(gateway, "/readyz")
    assert (status, body) == (200, {"status": "ready", "store": True, "feeds": {}})
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip")
    status, _, body = await call(gateway, "/readyz")
    assert (status, body) == (200, {"status": "ready", "store": True,
                                    "feeds": {"caltrain": True}})


async def test_feed_list_and_health(caltrain: Gateway) -> None:
    status, listing = await caltrain.get("/v1/feeds")
    assert status == 200, listing
    status, feed = await caltrain.get("/v1/feeds/caltrain")
    assert status == 200, feed
    assert listing == {"feeds": [feed]}
    assert (feed["id"], feed["agency"], feed["timezone"], feed["ready"]) == (
        "caltrain", "Caltrain", "America/Los_Angeles", True)
    static = feed["static"]
    assert static["version"] and len(static["version"]) == 16
    assert static["loaded_at"] == static["last_fetch"] == "2023-11-08T01:05:00+00:00"
    assert (static["service_from"], static["service_to"]) == ("2023-09-23", "2024-06-01")
    assert {k: static["counts"][k] for k in ("stops", "routes", "trips", "stop_times")} == {
        "stops": 109, "routes": 9, "trips": 176, "stop_times": 3498}
    assert static["last_error"] is None
    assert not any(feed["realtime"].get(k) for k in ("trip_updates", "vehicle_positions",
                                                     "alerts"))  # none configured


async def test_a_cached_board_goes_with_its_loaded_feed(
        caltrain: Gateway, board_renders: list[tuple[Any, ...]]) -> None:
    """A board is reused within its second only for the feed object it was rendered from:
    once the catalog installs the feed anew (a reload, a periodic refresh) it is rendered
    again, and once the feed is removed the same second answers 404."""
    from gateway.http.appkeys import CATALOG

    renders = board_renders
    await catalog_settled(caltrain.app, "caltrain")
    assert (await caltrain.get(PA))[0] == 200
    assert (await caltrain.get(PA))[0] == 200 and len(renders) == 1
    catalog = caltrain.app[CATALOG]
    before = catalog.feeds["caltrain"]
    await catalog.refresh()
    assert catalog.feeds["caltrain"] is not before  # installed anew, the same data
    assert (await caltrain.get(PA))[0] == 200 and len(renders) == 2
    await caltrain.feeds.remove("caltrain")
    status, body = await caltrain.get(PA)
    assert (status, body["error"]["code"]) == (404, "feed_not_found")
