"""Self-service signup (POST /v1/keys, the HTML page), hackathon events, /v1/keys/me, limit
headers and the monthly quota, through the app over real stores (embedded Valkey, Redis 7)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.access.events import create_event
from gateway.access.key_issuing import create_key
from gateway.access.keys import key_id_of
from gateway.access.tiers import set_tier
from gateway.clock import FixedClock, parse_instant
from gateway.http.app import build_app
from gateway.settings import Settings
from gateway.store.store import Store

NOW = "2023-11-07T17:05:00-08:00"


async def make_client(store: Store, aiohttp_client: Any, clock: FixedClock | None = None,
                      **settings: Any) -> TestClient[Any, Any]:
    app = build_app(Settings(**settings), store, clock or FixedClock(parse_instant(NOW)),
                    follow_store=False)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def signup(client: TestClient[Any, Any], status: int = 201,
                 **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/keys", json={"email": "dev@example.org", **body})
    data = await resp.json()
    assert resp.status == status, data
    return data  # type: ignore[no-any-return]


async def test_signup_gives_a_working_key_once(store: Store, aiohttp_client: Any) -> None:
    client = await make_client(store, aiohttp_client)
    resp = await client.post("/v1/keys", json={"email": "ada@example.org", "name": "Ada"})
    body = await resp.json()
    assert resp.status == 201, body
    assert resp.headers["Cache-Control"] == "no-store"
    assert body["key"].startswith("tgw_") and body["key_id"] == key_id_of(body["key"])
    assert (body["tier"], body["limits"], body["expires"], body["event"]) == (
        "bronze", {"per_minute": 30, "per_month": 100_000}, None, None)
    record = await store.key(body["key_id"])
    assert record is not None and body["key"] not in str(record)  # only the hash is stored

    for _ in range(2):
        resp = await client.get("/v1/feeds", headers={"X-API-Key": body["key"]})
        assert resp.status == 200
    resp = await client.get("/v1/keys/me", headers={"Authorization": f"Bearer {body['key']}"})
    me = await resp.json()
    assert resp.status == 200, me
    assert (me["kind"], me["tier"], me["key_id"], me["expires"]) == (
        "developer", "bronze", body["key_id"], None)
    assert me["limits"] == {"per_minute": 30, "per_month": 100_000}
    assert me["usage"]["minute"] == 3 and me["usage"]["month"] == 3
    assert me["remaining"] == {"minute": 27, "month": 99_997}
    assert resp.headers["RateLimit-Policy"] == \
        '"minute";q=30;w=60, "month";q=100000;w=2592000'
    assert re.fullmatch(r'"minute";r=27;t=\d+, "month";r=99997;t=\d+', resp.headers["RateLimit"])


@pytest.mark.parametrize(("body", "status", "code"), [
    (b'{"email": "not-an-email"}', 400, "invalid_email"),
    (b'{"email": ', 400, "invalid_json"),
    (b'["a@b.c"]', 400, "invalid_json"),
    (b'{"email": 5}', 400, "bad_parameter"),
    (b'{"email": "a@b.c", "name": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large"),
])
async def test_signup_refusals(store: Store, aiohttp_client: Any, body: bytes, status: int,
                               code: str) -> None:
    client = await make_client(store, aiohttp_client)
    resp = await client.post("/v1/keys", data=body,
                             headers={"Content-Type": "application/json"})
    got = await resp.json()
    assert (resp.status, got["error"]["code"]) == (status, code), got


async def test_51st_signup_from_one_ip_is_refused(store: Store, aiohttp_client: Any) -> None:
    client = await make_client(store, aiohttp_client)
    for i in range(50):  # X-Forwarded-For is not believed without GATEWAY_TRUSTED_PROXIES
        resp = await client.post("/v1/keys", json={"email": f"d{i}@example.org"},
                                 headers={"X-Forwarded-For": f"198.51.100.{i}"})
        assert resp.status == 201, await resp.json()
    resp = await client.post("/v1/keys", json={"email": "d51@example.org"})
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (429, "rate_limited"), body
    assert int(resp.headers["Retry-After"]) >= 1
    assert len(await store.key_ids()) == 50


async def test_trusted_proxy_counts_the_forwarded_client(store: Store,
                                                         aiohttp_client: Any) -> None:
    client = await make_client(store, aiohttp_client, signup_per_ip=2,
                               trusted_proxies=("127.0.0.0/8",))
    for client_ip, want in [("203.0.113.5", 201), ("203.0.113.5", 201), ("203.0.113.5", 429),
                            ("203.0.113.6", 201)]:
        resp = await client.post("/v1/keys", json={"email": "a@example.org"},
                                 headers={"X-Forwarded-For": f"10.9.9.9, {client_ip}"})
        assert resp.status == want, (client_ip, await resp.json())


async def test_hackathon_event_gives_its_tier_and_expiry(store: Store,
                                                         aiohttp_client: Any) -> None:
    clock = FixedClock(parse_instant(NOW))
    client = await make_client(store, aiohttp_client, clock)
    await create_event(store, clock, "Hack-24", "silver", clock.now() + 3600, max_keys=2)

    first = await signup(client, event="HACK-24")  # codes are case-insensitive
    assert (first["tier"], first["event"]) == ("silver", "hack-24")
    assert first["expires"] == "2023-11-08T02:05:00+00:00"
    assert first["limits"] == {"per_minute": 300, "per_month": 1_000_000}
    resp = await client.get("/v1/keys/me", headers={"X-API-Key": first["key"]})
    me = await resp.json()
    assert (resp.status, me["tier"], me["expires"]) == (200, "silver", first["expires"])

    await signup(client, event="hack-24")
    full = await signup(client, 409, event="hack-24")
    assert full["error"]["code"] == "event_full"
    missing = await signup(client, 404, event="nope")
    assert missing["error"]["code"] == "event_not_found"

    clock.advance(3600)  # the event is over: its keys stop working, no new ones
    resp = await client.get("/v1/keys/me", headers={"X-API-Key": first["key"]})
    assert (resp.status, (await resp.json())["error"]["code"]) == (401, "expired_api_key")
    over = await signup(client, 410, event="hack-24")
    assert over["error"]["code"] == "event_expired"


async def test_signup_page_without_javascript(store: Store, aiohttp_client: Any) -> None:
    client = await make_client(store, aiohttp_client)
    resp = await client.get("/", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/signup")
    resp = await client.get("/signup?event=<b>x</b>")
    page = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert '<form method="post" action="/signup">' in page and "<script" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page

    nasty = "<script>alert(1)</script>"
    resp = await client.post("/signup", data={"email": "ada@example.org", "name": nasty})
    page = await resp.text()
    assert resp.status == 200, page
    assert resp.headers["Cache-Control"] == "no-store"
    assert "<script" not in page
    key = re.search(r"tgw_[0-9A-Za-z]{49}", page)
    assert key is not None
    assert html.escape(f"curl -H 'X-API-Key: {key.group()}' '") in page
    record = await store.key(key_id_of(key.group()))
    assert record is not None and record["name"] == nasty
    resp = await client.get("/v1/feeds", headers={"X-API-Key": key.group()})
    assert resp.status == 200

    resp = await client.post("/signup", data={"email": "nope", "name": nasty})
    page = await resp.text()
    assert resp.status == 400 and "not an email address" in page
    assert "<script" not in page and html.escape(nasty) in page  # the form keeps its values


async def test_limit_headers_on_error_responses_too(store: Store, aiohttp_client: Any) -> None:
    client = await make_client(store, aiohttp_client)
    key = (await signup(client))["key"]
    resp = await client.get("/v1/feeds/nope", headers={"X-API-Key": key})
    assert resp.status == 404
    assert "RateLimit-Policy" in resp.headers and "RateLimit" in resp.headers
    typo = key[:-1] + ("0" if key[-1] != "0" else "1")
    resp = await client.get("/v1/feeds", headers={"X-API-Key": typo})
    assert resp.status == 401 and "RateLimit" not in resp.headers


async def test_monthly_quota_and_the_month_boundary(store: Store, aiohttp_client: Any) -> None:
    """Two processes (apps): one at 23:59 on 30 Nov UTC, one already in December."""
    await set_tier(store, "five_a_month", per_minute=100, per_month=5)
    november = FixedClock(parse_instant("2023-11-30T23:59:00+00:00"))
    december = FixedClock(parse_instant("2023-12-01T00:00:30+00:00"))
    nov = await make_client(store, aiohttp_client, november)
    dec = await make_client(store, aiohttp_client, december)
    key, record = await create_key(store, november, kind="developer", email="q@example.org",
                                   tier="five_a_month")
    headers = {"X-API-Key": key}
    for i in range(5):
        resp = await nov.get("/v1/feeds", headers=headers)
        assert resp.status == 200
        assert resp.headers["RateLimit"].endswith(f'"month";r={4 - i};t=60')
    resp = await nov.get("/v1/feeds", headers=headers)
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (429, "quota_exceeded"), body
    assert resp.headers["Retry-After"] == "60"  # the month ends in a minute (process clock)

    resp = await dec.get("/v1/keys/me", headers=headers)  # a fresh month
    me = await resp.json()
    assert resp.status == 200, me
    assert me["usage"]["month"] == 1 and me["usage"]["month_name"] == "202312"
    assert (await nov.get("/v1/feeds", headers=headers)).status == 429  # November stays spent

    counters = await store.key_counters(record.key_id)
    assert {n.rsplit(":", 1)[1] for n in counters} == {"gcra", "202311", "202312"}
    assert all(ttl > 0 for ttl in counters.values()), counters


async def test_unknown_key_and_revoked_key(store: Store, aiohttp_client: Any) -> None:
    client = await make_client(store, aiohttp_client)
    key = (await signup(client))["key"]
    assert (await client.get("/v1/feeds", headers={"X-API-Key": key})).status == 200
    await store.update_key(key_id_of(key), {"revoked": "2023-11-08T01:05:00+00:00"})
    resp = await client.get("/v1/feeds", headers={"X-API-Key": key})  # at once: no cache
    assert (resp.status, (await resp.json())["error"]["code"]) == (401, "revoked_api_key")


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "want"), [
    ("203.0.113.9", "198.51.100.1", [], "203.0.113.9"),  # not believed without a trusted proxy
    ("10.0.0.2", "198.51.100.1, 10.0.0.1", ["10.0.0.0/8"], "198.51.100.1"),
    ("10.0.0.2", "garbage", ["10.0.0.0/8"], "10.0.0.2"),
    ("2001:db8:1:2:3:4:5:6", None, [], "2001:db8:1:2::/64"),  # IPv6: per /64
    (None, None, [], "local"),  # a unix socket
])
def test_client_ip(peer: str | None, forwarded: str | None, trusted: list[str],
                   want: str) -> None:
    import ipaddress

    from gateway.access.signup import client_ip

    nets = [ipaddress.ip_network(t) for t in trusted]
    assert client_ip(peer, forwarded, nets) == want
