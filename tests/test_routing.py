"""gateway.routing: the quicker match gives aiohttp's own answer for every path, and routes
registered through it behave as aiohttp's (HEAD with GET, shared paths, the app's routes)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.web_urldispatcher import DynamicResource

from gateway import routing
from gateway.routing import QuickDynamicResource

PATTERNS = [
    "/v1/feeds/{feed}/stops/{stop}/departures",
    "/v1/feeds/{feed}",
    "/v1/feeds/{feed}/trips/{trip}",
    "/{tail:.*}",
    "/files/{name:[a-z]+}.{ext}",
]
PATHS = [
    "/v1/feeds/wmata/stops/STN_A01_C01/departures",
    "/v1/feeds/wmata/stops//departures",
    "/v1/feeds/wmata/stops/a/b/departures",
    "/v1/feeds/wmata/stops/STN_A01_C01/departures/",
    "/v1/feeds/wm%2Fata/stops/a%25b%2Fc/departures",  # path_safe keeps %2F and %25 encoded
    "/v1/feeds/%25/stops/%2F/departures",
    "/v1/feeds/w{x}/stops/s/departures",
    "/v1/feeds/wmata",
    "/v1/feeds/wmata/",
    "/v1/feeds/",
    "/v1/feeds/wmata/trips/T%2F1",
    "/v1/feeds/Ästa/trips/tåg",
    "/files/abc.json",
    "/files/ABC.json",
    "/",
    "",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_quick_match_is_aiohttps_match(pattern: str) -> None:
    theirs, ours = DynamicResource(pattern), QuickDynamicResource(pattern)
    for path in PATHS:
        assert ours._match(path) == theirs._match(path), (pattern, path)
    assert ours.canonical == theirs.canonical
    assert ours.url_for(**dict.fromkeys(theirs._pattern.groupindex, "x")) == theirs.url_for(
        **dict.fromkeys(theirs._pattern.groupindex, "x"))


async def _ok(request: web.Request) -> web.Response:
    return web.json_response(dict(request.match_info))


async def test_routes_resolve_as_aiohttp_would_register_them(aiohttp_client: Any) -> None:
    """A GET answers HEAD unless told not to; routes of one path share one resource (so its
    methods make up one ``Allow``); plain and named routes are left to aiohttp."""
    app = web.Application()
    resources: dict[str, QuickDynamicResource] = {}
    for route in [web.get("/a/{x}", _ok), web.post("/a/{x}", _ok),
                  web.get("/b/{x}", _ok, allow_head=False), web.get("/c", _ok),
                  web.get("/d/{x}", _ok, name="named")]:
        routing.register(app.router, route, resources)
    kinds = {r.canonical: type(r).__name__ for r in app.router.resources()}
    assert kinds == {"/a/{x}": "QuickDynamicResource", "/b/{x}": "QuickDynamicResource",
                     "/c": "PlainResource", "/d/{x}": "DynamicResource"}
    methods = {(r.method, r.resource.canonical if r.resource else "") for r in
               app.router.routes()}
    assert methods == {("HEAD", "/a/{x}"), ("GET", "/a/{x}"), ("POST", "/a/{x}"),
                       ("GET", "/b/{x}"), ("HEAD", "/c"), ("GET", "/c"), ("HEAD", "/d/{x}"),
                       ("GET", "/d/{x}")}
    client = await aiohttp_client(app)
    resp = await client.get("/a/v%2F1%25")
    assert resp.status == 200 and await resp.json() == {"x": "v/1%"}
    assert (await client.head("/a/1")).status == 200
    resp = await client.put("/a/1")
    assert resp.status == 405 and set(resp.headers["Allow"].split(",")) == {"GET", "HEAD",
                                                                            "POST"}
    assert (await client.head("/b/1")).status == 405
    assert (await client.get("/b/1/2")).status == 404
