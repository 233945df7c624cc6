"""Operator tokens and routes (POST/PATCH/DELETE /v1/feeds), the tiers/events/keys commands,
and /metrics, over real stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cluster import keys_on_every_node
from conftest import GTFS

from gateway import cli
from gateway.access.caller import require_operator
from gateway.access.key_issuing import create_key
from gateway.clock import FixedClock, parse_instant
from gateway.http.app import build_app
from gateway.settings import Settings
from gateway.store.store import Store

NOW = "2023-11-07T17:05:00-08:00"
CALTRAIN = str(GTFS / "caltrain-2023.zip")


async def make_client(store: Store, aiohttp_client: Any,
                      **settings: Any) -> tuple[TestClient[Any, Any], str, str]:
    clock = FixedClock(parse_instant(NOW))
    app = build_app(Settings(**settings), store, clock, follow_store=False)
    client = await aiohttp_client(app)
    operator, _ = await create_key(store, clock, kind="operator", email="ops@example.org",
                                   tier="unlimited")
    developer, _ = await create_key(store, clock, kind="developer", email="dev@example.org",
                                    tier="gold")
    return client, operator, developer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_operator_manages_feeds_over_http(store: Store, aiohttp_client: Any) -> None:
    client, operator, developer = await make_client(store, aiohttp_client,
                                                    allow_private_urls=True)
    config = {"id": "caltrain", "static": CALTRAIN, "poll_seconds": 20,
              "headers": {"Authorization": "secret"}}
    resp = await client.post("/v1/feeds", json=config, headers=bearer(developer))
    assert (resp.status, (await resp.json())["error"]["code"]) == (403, "forbidden")
    assert await store.feed_config("caltrain") is None

    resp = await client.post("/v1/feeds", json=config, headers=bearer(operator))
    body = await resp.json()
    assert resp.status == 201, body
    assert body["feed"]["headers"] == ["Authorization"]  # the value is a secret
    assert body["static"]["counts"]["trips"] > 0
    resp = await client.get("/v1/feeds/caltrain/stops/palo_alto/departures",
                            headers={"X-API-Key": developer})
    assert resp.status == 200 and (await resp.json())["departures"]
    resp = await client.post("/v1/feeds", json=config, headers=bearer(operator))
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "feed_exists")

    resp = await client.patch("/v1/feeds/caltrain", json={"poll_seconds": 30},
                              headers={"X-API-Key": operator})
    body = await resp.json()
    assert resp.status == 200, body
    assert (await store.feed_config("caltrain") or {})["poll_seconds"] == 30
    assert (await store.feed_config("caltrain") or {})["headers"] == {"Authorization": "secret"}
    resp = await client.patch("/v1/feeds/caltrain", json={"id": "other"},
                              headers=bearer(operator))
    assert (resp.status, (await resp.json())["error"]["code"]) == (400, "invalid_feed_config")
    resp = await client.patch("/v1/feeds/caltrain", json={"poll_seconds": 1},
                              headers=bearer(developer))
    assert resp.status == 403

    resp = await client.delete("/v1/feeds/caltrain", headers=bearer(developer))
    assert resp.status == 403
    # the feed's keys (found by SCAN, which on a cluster must visit every primary) all go
    stored = await keys_on_every_node(store, "tg:feed:caltrain:*")
    assert sum(map(len, stored.values())) >= 4, stored
    if store.cluster:
        assert sum(1 for keys in stored.values() if keys) >= 2, stored
    resp = await client.delete("/v1/feeds/caltrain", headers=bearer(operator))
    assert resp.status == 204
    assert await store.feed_config("caltrain") is None
    assert not any((await keys_on_every_node(store, "tg:feed:caltrain:*")).values())
    resp = await client.delete("/v1/feeds/caltrain", headers=bearer(operator))
    assert (resp.status, (await resp.json())["error"]["code"]) == (404, "feed_not_found")


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, "invalid_json"),
    (b'"a string"', 400, "invalid_json"),
    (b'{"id": "x", "static": "' + b"a" * 70_000 + b'"}', 413, "payload_too_large"),
    (b'{"id": "x", "static": "/etc/passwd"}', 400, "invalid_feed_config"),
    (b'{"id": "x", "static": "https://example.org/g.zip", "extra": 1}', 400,
     "invalid_feed_config"),
])
async def test_bad_feed_bodies(store: Store, aiohttp_client: Any, body: bytes, status: int,
                               code: str) -> None:
    client, operator, _ = await make_client(store, aiohttp_client)
    resp = await client.post("/v1/feeds", data=body,
                             headers={**bearer(operator), "Content-Type": "application/json"})
    got = await resp.json()
    assert (resp.status, got["error"]["code"]) == (status, code), got


async def test_require_operator_helper(store: Store, aiohttp_client: Any) -> None:
    from aiohttp import web

    from gateway.http.access_routes import GUARD
    from gateway.http.app import add_routes
    from gateway.http.json_io import json_response

    async def secret(request: web.Request) -> web.Response:
        return json_response({"by": require_operator(request).key_id})

    clock = FixedClock(parse_instant(NOW))
    mono = FixedClock(0.0)  # the limiter's monotonic clock, stepped below instead of sleeping
    app = build_app(Settings(), store, clock, follow_store=False, monotonic=mono.now)
    add_routes(app, [web.post("/v1/ops-only", secret)], app[GUARD], measure=False)
    client = await aiohttp_client(app)
    operator, record = await create_key(store, clock, kind="operator", email="o@example.org",
                                        tier="unlimited")
    developer, _ = await create_key(store, clock, kind="developer", email="d@example.org")
    assert (await client.post("/v1/ops-only", headers=bearer(developer))).status == 403
    resp = await client.post("/v1/ops-only", headers=bearer(operator))
    assert (resp.status, await resp.json()) == (200, {"by": record.key_id})
    assert (await client.post("/v1/ops-only")).status == 401
    # Sent often in X-API-Key, the key is admitted from a reserve counted ahead in this process
    # (Guard.admit_reserved): the handler still sees who calls.
    guard = app[GUARD]
    for _ in range(3):
        replies = await asyncio.gather(*(client.post("/v1/ops-only",
                                                     headers={"X-API-Key": operator})
                                         for _ in range(30)))
        assert [r.status for r in replies] == [200] * 30
        assert {(await r.json())["by"] for r in replies} == {record.key_id}
        mono.advance(0.12)  # a key's rate is measured over 0.1 s (reserves.RATE_WINDOW_S)
    assert guard.limiter._reserves, "no reserve was granted: the reserve path went untested"


async def test_metrics_count_decisions_signups_and_failures(store: Store,
                                                            aiohttp_client: Any) -> None:
    client, _, developer = await make_client(store, aiohttp_client)
    assert (await client.get("/v1/feeds", headers={"X-API-Key": developer})).status == 200
    assert (await client.get("/v1/feeds", headers={"X-API-Key": "tgw_typo"})).status == 401
    assert (await client.post("/v1/keys", json={"email": "m@example.org"})).status == 201
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert 'tg_ratelimit_decisions_total{result="ok",source="store",tier="gold"}' in text
    assert 'tg_auth_failures_total{code="invalid_api_key"}' in text
    assert 'tg_signups_total{result="created"}' in text
    assert "tg_limiter_store_seconds_bucket" in text


def test_tiers_events_and_keys_commands(store_url: str, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", store_url)
    monkeypatch.delenv("GATEWAY_CLOCK", raising=False)
    tier, code = f"team_{uuid.uuid4().hex[:8]}", f"OpenData-{uuid.uuid4().hex[:8]}"
    assert cli.main(["tiers", "set", tier, "--per-minute", "120", "--per-month", "5000"]) == 0
    assert cli.main(["tiers", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{tier}\tper_minute=120\tper_month=5000" in out
    assert "bronze\tper_minute=30\tper_month=100000" in out

    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    assert cli.main(["events", "create", code, "--tier", tier, "--expires", expires,
                     "--max-keys", "40"]) == 0
    assert cli.main(["events", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{code.lower()}\ttier={tier}\tkeys=0/40" in out and "\topen" in out
    assert cli.main(["events", "create", code.lower(), "--tier", tier, "--expires", expires,
                     "--max-keys", "1"]) == 2
    assert "event_exists" in capsys.readouterr().err
    assert cli.main(["events", "create", "x", "--tier", "nope", "--expires", expires,
                     "--max-keys", "1"]) == 2
    assert "unknown_tier" in capsys.readouterr().err

    assert cli.main(["keys", "create", "--email", "k@example.org", "--tier", "nope"]) == 2
    assert "unknown_tier" in capsys.readouterr().err
    assert cli.main(["keys", "create", "--email", "k@example.org", "--tier", tier]) == 0
    assert capsys.readouterr().out.startswith("tgw_")


async def test_bench_mode_is_off_the_record_and_loopback_only(store: Store,
                                                              aiohttp_client: Any) -> None:
    clock = FixedClock(parse_instant(NOW))
    with pytest.raises(SystemExit):
        build_app(Settings(bench_no_auth=True, host="0.0.0.0"), store, clock)
    client = await aiohttp_client(build_app(Settings(bench_no_auth=True), store, clock,
                                            follow_store=False))
    resp = await client.get("/v1/feeds")  # no key at all
    assert resp.status == 200 and "RateLimit" not in resp.headers
    resp = await client.post("/v1/feeds", json={"id": "x", "static": CALTRAIN})
    assert resp.status == 403  # no caller, so no operator


def test_bench_mode_needs_the_exact_variable() -> None:
    assert not Settings.from_env({"GATEWAY_BENCH_NO_AUTH": "true"}).bench_no_auth
    assert Settings.from_env({"GATEWAY_BENCH_NO_AUTH": "1"}).bench_no_auth
    assert not Settings.from_env({}).bench_no_auth


async def test_a_route_added_around_the_endpoint_wrapper_stops_the_start(store: Store) -> None:
    """A route added with app.router.add_* would serve without authentication: the app
    refuses to start rather than fail open."""
    from aiohttp import web

    async def raw(request: web.Request) -> web.Response:
        return web.Response(text="secret")

    app = build_app(Settings(), store, FixedClock(parse_instant(NOW)), follow_store=False)
    app.router.add_get("/v1/raw", raw)
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match=r"/v1/raw .* without authentication"):
        await runner.setup()
    await runner.cleanup()
