"""Typed application state (aiohttp AppKeys) and the JSON response helper."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from feeds.stops_search import StopSearch
from gateway.catalog import FeedCatalog
from gateway.clock import Clock
from gateway.feed_service import FeedService
from gateway.realtime import PollerManager
from gateway.settings import Settings
from gateway.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
CATALOG = web.AppKey("catalog", FeedCatalog)
FEEDS = web.AppKey("feed_service", FeedService)
SEARCH_CACHE = web.AppKey("search_cache", dict[str, StopSearch])
BOARD_CACHE = web.AppKey("board_cache", dict[tuple[object, ...], bytes])
POLLERS = web.AppKey("pollers", PollerManager)


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")
