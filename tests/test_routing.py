"""gateway.http.routing: the quicker match gives aiohttp's own answer for every path, and a router
built through ``routing.register`` resolves every request as one built by aiohttp does."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_urldispatcher import DynamicResource

from gateway.http import routing
from gateway.http.routing import QuickDynamicResource

PATTERNS = [
    "/v1/feeds/{feed}/stops/{stop}/departures",
    "/v1/feeds/{feed}",
    "/v1/feeds/{feed}/trips/{trip}",
    "/a%25b/{x}",  # a "%" in a literal part
    "/{a}-{b}",
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
    "/a%25b/c", "/a%25b/c%25d", "/x-y", "/x%25-y%2F",
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


def _handler(name: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=name)

    handler.__name__ = name
    return handler


# As in gateway.app: one path's routes registered apart (PATCH/DELETE, later GET), a route
# whose pattern overlaps another's, plain and named routes, a catch-all with an expression.
ROUTES = [
    web.get("/v1/feeds/{feed}/stops/{stop}/departures", _handler("departures")),
    web.patch("/v1/feeds/{feed}", _handler("patch_feed")),
    web.delete("/v1/feeds/{feed}", _handler("delete_feed")),
    web.post("/v1/feeds", _handler("create_feed")),
    web.get("/v1/feeds/{feed}/trips/{trip}", _handler("trip")),
    web.post("/v1/feeds/{any:.*}", _handler("overlap")),
    web.get("/v1/feeds", _handler("list_feeds")),
    web.get("/v1/feeds/{feed}", _handler("get_feed")),
    web.post("/v1/feeds/{feed}", _handler("post_feed_after_overlap")),
    web.get("/v1/keys/{key}", _handler("named"), name="key"),
    web.get("/v1/nohead/{x}", _handler("nohead"), allow_head=False),
    web.route("*", "/{tail:.*}", _handler("unmatched")),
]
REQUESTS = [p for p in PATHS if p] + [
    "/v1/feeds", "/v1/feeds/wmata/trips/T1", "/v1/feeds/wmata/x/y", "/v1/keys/abc",
    "/v1/nohead/1", "/elsewhere"]
METHODS = ["GET", "HEAD", "POST", "PATCH", "DELETE", "PUT"]


async def _resolve(router: web.UrlDispatcher, method: str, path: str) -> tuple[Any, ...]:
    info = await router.resolve(make_mocked_request(method, path))
    if info.http_exception is not None:
        exc = info.http_exception
        return ("error", exc.status, exc.headers.get("Allow"))
    return (info.handler.__name__, dict(info))


async def test_a_router_built_by_register_resolves_as_aiohttps() -> None:
    ours, theirs = web.Application().router, web.Application().router
    for route in ROUTES:
        routing.register(ours, route)
    theirs.add_routes(ROUTES)
    quick = [r.canonical for r in ours.resources() if isinstance(r, QuickDynamicResource)]
    assert "/v1/feeds/{feed}/stops/{stop}/departures" in quick
    assert "/{tail:.*}" not in quick and "/v1/keys/{key}" not in quick
    assert len(list(ours.resources())) == len(list(theirs.resources()))
    for method in METHODS:
        for path in REQUESTS:
            assert await _resolve(ours, method, path) == await _resolve(theirs, method, path), (
                method, path)
    # registered before it, the overlapping route answers first, as in aiohttp
    assert await _resolve(ours, "POST", "/v1/feeds/f") == ("overlap", {"any": "f"})


def test_what_aiohttp_refuses_is_refused() -> None:
    router = web.Application().router
    with pytest.raises(TypeError):
        routing.register(router, web.RouteDef("POST", "/a/{x}", _handler("a"),
                                              {"allow_head": False}))
    with pytest.raises(ValueError):
        routing.register(router, web.get("a/{x}", _handler("a")))
