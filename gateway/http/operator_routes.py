"""Operator routes (``Authorization: Bearer tgo_…``; developer keys get 403 ``forbidden``):
``POST /v1/feeds`` (the fields of ``feeds add`` as JSON) → 201, ``PATCH /v1/feeds/{feed}``
(merge fields, ingest again) → 200, ``DELETE /v1/feeds/{feed}`` → 204, and
``POST /v1/feeds/{feed}/realtime`` (a pushed GTFS-RT FeedMessage) → 202."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from feeds.errors import FeedError
from gateway.access.caller import require_operator
from gateway.errors import BadRequest, Conflict, NotFound, Unprocessable
from gateway.feed_config import FeedConfig
from gateway.http.appkeys import (
    CATALOG,
    FEEDS,
    POLLERS,
)
from gateway.http.json_io import json_response, read_json
from gateway.ingest import jobs
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


async def _queued(request: web.Request, config: FeedConfig, replace: bool) -> web.Response:
    """An API process (``--role api``) queues the ingest for an ingest process: 202."""
    service = request.app[FEEDS]
    record = jobs.public(await jobs.enqueue(service.store, service.clock, config, replace))
    return json_response({"feed": config.public(), "job": record}, status=202,
                         headers={"Location": record["url"]})


async def create_feed(request: web.Request) -> web.Response:
    require_operator(request)
    service = request.app[FEEDS]
    config = _feed_config(request, await read_json(request, service.settings.max_json_bytes))
    if service.settings.role == "api":
        if await service.store.feed_config(config.id) is not None:
            raise Conflict(f"feed {config.id!r} already exists; use PATCH or feeds reload",
                           code="feed_exists")
        return await _queued(request, config, replace=False)
    result = await service.add(config)
    return json_response(jobs.ingested(config, result), status=201)


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
    if service.settings.role == "api":
        return await _queued(request, config, replace=True)
    result = await service.add(config, replace=True)
    return json_response(jobs.ingested(config, result))


async def get_job(request: web.Request) -> web.Response:
    """GET /v1/feeds/{feed}/jobs/{job}: a queued ingest's state and outcome."""
    require_operator(request)
    record = await request.app[FEEDS].store.job(request.match_info["job"])
    if record is None or record.get("feed") != request.match_info["feed"]:
        raise NotFound("no such job (jobs are kept a day)", code="job_not_found")
    return json_response(jobs.public(record))


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
