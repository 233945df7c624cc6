"""Ops endpoints without a key: ``/healthz`` (alive), ``/readyz`` (store reachable, feeds
loaded)."""

from __future__ import annotations

from aiohttp import web

from gateway.http.appkeys import CATALOG, STORE
from gateway.http.json_io import json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    try:
        await request.app[STORE].ping()
        store_ok = True
    except Exception:  # noqa: BLE001 - any failure means not ready
        store_ok = False
    feeds_ok = catalog.loaded_once and all(f.index is not None for f in catalog.feeds.values())
    ok = store_ok and feeds_ok
    return json_response(
        {"status": "ready" if ok else "not_ready", "store": store_ok,
         "feeds": {k: f.index is not None for k, f in catalog.feeds.items()}},
        status=200 if ok else 503,
    )
