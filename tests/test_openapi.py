"""The API reference documents exactly the routes the app serves."""

from __future__ import annotations

from conftest import Gateway


async def test_every_route_is_documented_and_nothing_else(gateway: Gateway) -> None:
    served = {(r.method.lower(), r.resource.canonical)
              for r in gateway.app.router.routes()
              if r.method not in ("HEAD", "*") and r.resource is not None}
    resp = await gateway.client.get("/openapi.json")  # no key needed
    assert resp.status == 200
    doc = await resp.json()
    documented = {(m, path) for path, ops in doc["paths"].items() for m in ops}
    assert documented == served
    # the catch-all route only turns unknown paths and methods into JSON 404 and 405
    assert [r.resource.canonical for r in gateway.app.router.routes()
            if r.method == "*" and r.resource is not None] == ["/{tail}"]
    assert doc["openapi"].startswith("3.1")


async def test_docs_page_lists_the_departures_route(gateway: Gateway) -> None:
    resp = await gateway.client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "/v1/feeds/{feed}/stops/{stop}/departures" in await resp.text()
