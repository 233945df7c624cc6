"""Feed ingestion is visible in GET /metrics (Prometheus text format)."""

from __future__ import annotations

import re

from conftest import GTFS, RT, Gateway

from gateway.http.appkeys import CATALOG
from gateway.ingest.realtime_feed import RealtimeFeed


def _value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}{{{re.escape(wanted)}}} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name}{{{wanted}}} not in /metrics"
    return float(match.group(1))


async def test_realtime_and_static_ingest_metrics(gateway: Gateway) -> None:
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip")
    body = (RT / "caltrain" / "trip-updates-2023-11-07.pb").read_bytes()
    gateway.clock.instant = 1699405534 + 30  # 30 s after the capture's header
    rt = RealtimeFeed(gateway.store, "caltrain", gateway.clock)
    await rt.apply("trip_updates", body, gateway.app[CATALOG].get("caltrain").index)

    resp = await gateway.client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    labels = {"feed": "caltrain", "kind": "trip_updates"}
    assert _value(text, "tg_feed_entities", **labels) == 19
    assert _value(text, "tg_feed_match_rate", **labels) == 1.0
    assert _value(text, "tg_feed_realtime_age_seconds", **labels) == 30
    assert _value(text, "tg_feed_merge_seconds_count", **labels) >= 1
    assert _value(text, "tg_static_ingest_seconds_count", feed="caltrain") >= 1

    gateway.clock.advance(60)  # the age grows while nothing new arrives
    text = await (await gateway.client.get("/metrics")).text()
    assert _value(text, "tg_feed_realtime_age_seconds", **labels) == 90
