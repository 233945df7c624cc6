"""Operator routes (``Authorization: Bearer tgo_…``; developer keys get 403 ``forbidden``):
``POST /v1/feeds`` (the fields of ``feeds add`` as JSON) → 201, ``PATCH /v1/feeds/{feed}``
(merge fields, ingest again) → 200, ``DELETE /v1/feeds/{feed}`` → 204, and
``POST /v1/feeds/{feed}/realtime`` (a pushed GTFS-RT FeedMessage) → 202."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from feeds.errors import FeedError
from gateway.access.caller import require_operator
from gateway.errors import BadRequest, Unprocessable
from gateway.feed_config import FeedConfig
from gateway.http.appkeys import (
    CATALOG,
    FEEDS,
    POLLERS,
)
from gateway.http.json_io import json_response, read_json
from gateway.ingest.sources import local_path


def _feed_config(request: web.Request, data: dict[str, Any]) -> FeedConfig:
    config = FeedConfig.from_json(data)
    if not request.app[FEEDS].settings.allow_private_urls:
        for name in ("static", "trip_updates", "vehicle_positions", "alerts"):
            value = getattr(config, name)
            if value is not None and local_path(value) is not None:
                raise BadRequest(f"{name}: local paths are refused over HTTP (set "
                                 "GATEWAY_ALLOW_PRIVATE_URLS=1 to allow them)",
                                 code="invalid_feed_config", details={"parameter": name})
    return config


def _ingested(config: FeedConfig, result: Any) -> dict[str, Any]:
    return {"feed": config.public(), "version": result.version, "changed": result.changed,
            "seconds": round(result.seconds, 3), "static": result.status.get("static")}


async def create_feed(request: web.Request) -> web.Response:
    require_operator(request)
    settings = request.app[FEEDS].settings
    config = _feed_config(request, await read_json(request, settings.max_json_bytes))
    result = await request.app[FEEDS].add(config)
    return json_response(_ingested(config, result), status=201)


async def patch_feed(request: web.Request) -> web.Response:
    require_operator(request)
    feed_id = request.match_info["feed"]
    service = request.app[FEEDS]
    body = await read_json(request, service.settings.max_json_bytes)
    if body.get("id", feed_id) != feed_id:
        raise BadRequest("a feed's id cannot be changed", code="invalid_feed_config",
                         details={"parameter": "id"})
    current = await service.config(feed_id)
    config = _feed_config(request, {**current.to_json(), **body, "id": feed_id})
    result = await service.add(config, replace=True)
    return json_response(_ingested(config, result))


async def delete_feed(request: web.Request) -> web.Response:
    require_operator(request)
    await request.app[FEEDS].remove(request.match_info["feed"])
    return web.Response(status=204)



async def push_realtime(request: web.Request) -> web.Response:
    """POST /v1/feeds/{feed}/realtime (operators): a GTFS-RT FeedMessage instead of a poll."""
    require_operator(request)
    feed = request.app[CATALOG].get(request.match_info["feed"])
    body = await request.read()
    rt = request.app[POLLERS].feed(feed.config.id)
    try:
        results = await rt.apply_pushed(body, feed.index)
    except FeedError as exc:
        raise Unprocessable(exc.message, code=exc.code) from exc
    return json_response({"feed": feed.config.id, "applied": results}, status=202)
