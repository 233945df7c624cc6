"""The API reference: ``GET /openapi.json`` (OpenAPI 3.1) and ``GET /docs`` (a plain page).

Written by hand beside the routes it describes, so that what a user reads is what the handlers
promise; a test checks that every route the app serves is documented here and vice versa.
"""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.http.json_io import json_response

P = dict[str, Any]


def _param(name: str, where: str, description: str, schema: P | None = None,
           required: bool = False) -> P:
    return {"name": name, "in": where, "description": description,
            "required": required or where == "path", "schema": schema or {"type": "string"}}


FEED = _param("feed", "path", "feed id")
ERRORS: P = {
    "400": {"$ref": "#/components/responses/Error"},
    "401": {"$ref": "#/components/responses/Error"},
    "404": {"$ref": "#/components/responses/Error"},
    "429": {"$ref": "#/components/responses/Error"},
    "503": {"$ref": "#/components/responses/Error"},
}


def _op(summary: str, params: list[P] | None = None, keyed: bool = True,
        body: str | None = None, ok: str = "200") -> P:
    op: P = {"summary": summary, "parameters": params or [],
             "responses": {ok: {"description": "OK", "content": {"application/json": {}}},
                           **(ERRORS if keyed else {})}}
    if not keyed:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"content": {body: {}}}
    return op


PATHS: dict[str, dict[str, P]] = {
    "/v1/feeds": {
        "get": _op("Registered feeds with their health"),
        "post": _op("Register a feed (operator token): id, static, trip_updates, "
                    "vehicle_positions, alerts, poll_seconds, headers. 201 with the ingest; "
                    "202 with a job from a --role api process", body="application/json",
                    ok="201"),
    },
    "/v1/feeds/{feed}": {
        "get": _op("One feed: static version, service dates, counts, realtime health", [FEED]),
        "patch": _op("Change a feed's fields and re-ingest (operator token)", [FEED],
                     body="application/json"),
        "delete": _op("Remove a feed and its data (operator token)", [FEED], ok="204"),
    },
    "/v1/feeds/{feed}/stops": {"get": _op("Stop search by name and/or distance", [
        FEED, _param("q", "query", "name, case- and accent-insensitive"),
        _param("near", "query", "lat,lon"),
        _param("radius", "query", "metres around near (default 1000)", {"type": "number"}),
        _param("limit", "query", "default 50, max 500", {"type": "integer"})])},
    "/v1/feeds/{feed}/stops/{stop}/departures": {"get": _op("The departure board", [
        FEED, _param("stop", "path", "stop id; a station includes its platforms"),
        _param("time", "query", "ISO-8601 instant with offset (default: now)"),
        _param("window", "query", "minutes (default 60, max 1440)", {"type": "integer"}),
        _param("limit", "query", "default 50, max 500", {"type": "integer"}),
        _param("route", "query", "only this route_id"),
        _param("include_cancelled", "query", "default false", {"type": "boolean"})])},
    "/v1/feeds/{feed}/trips/{trip}": {"get": _op("A trip's stop times on a service date", [
        FEED, _param("trip", "path", "trip id"),
        _param("date", "query", "YYYY-MM-DD (default: its latest service date up to today)")])},
    "/v1/feeds/{feed}/vehicles": {"get": _op("Vehicle positions", [
        FEED, _param("bbox", "query", "minlon,minlat,maxlon,maxlat"),
        _param("route", "query", "route_id")])},
    "/v1/feeds/{feed}/alerts": {"get": _op("Active service alerts", [
        FEED, _param("stop", "query", "stop_id"), _param("route", "query", "route_id"),
        _param("trip", "query", "trip_id")])},
    "/v1/feeds/{feed}/jobs/{job}": {"get": _op(
        "A queued ingest (operator token): state queued|running|done|failed, outcome",
        [FEED, _param("job", "path", "job id, from the 202 of POST/PATCH /v1/feeds")])},
    "/v1/feeds/{feed}/realtime": {"post": _op(
        "Push a GTFS-Realtime FeedMessage (operator token)", [FEED],
        body="application/x-protobuf", ok="202")},
    "/v1/keys": {"post": _op("Self-service signup: email, name, event (optional)", keyed=False,
                             body="application/json", ok="201")},
    "/v1/keys/me": {"get": _op("The caller's tier, limits and usage")},
    "/": {"get": _op("Redirect to the signup page", keyed=False, ok="302")},
    "/signup": {"get": _op("Signup page (HTML, no JavaScript)", keyed=False),
                "post": _op("Signup form post (HTML)", keyed=False,
                            body="application/x-www-form-urlencoded")},
    "/healthz": {"get": _op("The process is alive", keyed=False)},
    "/readyz": {"get": _op("The store answers and every feed is loaded", keyed=False)},
    "/metrics": {"get": _op("Prometheus metrics", keyed=False)},
    "/openapi.json": {"get": _op("This document", keyed=False)},
    "/docs": {"get": _op("The API reference page", keyed=False)},
}


def document() -> P:
    return {
        "openapi": "3.1.0",
        "info": {"title": "transit-gateway", "version": __version__,
                 "description": "Public-transport departures, trips, vehicles and alerts from "
                                "GTFS and GTFS-Realtime, as JSON."},
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "keyParam": {"type": "apiKey", "in": "query", "name": "key"},
                "operator": {"type": "http", "scheme": "bearer"},
            },
            "responses": {"Error": {"description": 'Error: {"error": {"code", "message"}}',
                                    "content": {"application/json": {}}}},
        },
        "security": [{"key": []}, {"keyParam": []}, {"operator": []}],
    }


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document())


async def docs(request: web.Request) -> web.Response:
    rows = []
    for path, methods in PATHS.items():
        for method, op in methods.items():
            params = ", ".join(p["name"] for p in op["parameters"] if p["in"] == "query")
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op['summary'])}</td>"
                f"<td>{html.escape(params)}</td></tr>")
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>transit-gateway API</title><style>body{font-family:sans-serif;margin:2em}"
        "td{padding:.3em .8em;border-bottom:1px solid #ddd}</style></head><body>"
        "<h1>transit-gateway API</h1><p>Send your key as <code>X-API-Key</code> or "
        "<code>?key=</code>; get one at <a href='/signup'>/signup</a>. Errors are "
        "<code>{\"error\": {\"code\", \"message\"}}</code>. Machine-readable: "
        "<a href='/openapi.json'>/openapi.json</a>.</p><table><tr><th>method</th><th>path</th>"
        f"<th>what</th><th>query</th></tr>{''.join(rows)}</table></body></html>")
    return web.Response(text=page, content_type="text/html")
