from conftest import GTFS, Gateway


async def test_caltrain_board_through_the_api(gateway: Gateway) -> None:
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip")
    status, body = await gateway.get("/v1/feeds/caltrain/stops/palo_alto/departures",
                                     time="2023-11-07T17:05:00-08:00", limit=2)
    assert status == 200, body
    assert [d["trip_id"] for d in body["departures"]] == ["411", "310"]
    assert body["departures"][0]["scheduled"] == "2023-11-07T17:09:00-08:00"
