"""Typed application state (aiohttp AppKeys) and the JSON response helper."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from aiohttp import web

from feeds.stops_search import StopSearch
from gateway.catalog import FeedCatalog, LoadedFeed
from gateway.clock import Clock
from gateway.feed_service import FeedService
from gateway.realtime import PollerManager
from gateway.rt_view import RealtimeView
from gateway.settings import Settings
from gateway.store import Store


class BoardEntry(NamedTuple):
    """A rendered board and what it was rendered from. It is reused while all of these hold:
    the same request target (path and query, as sent), the same second of the clock, the same
    loaded feed, and the same revision of its realtime view. The feed and the view are held
    (not just their ids) so that an id cannot be reused while the entry lives."""

    second: int
    feed: LoadedFeed
    view: RealtimeView
    revision: int
    body: bytes


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
CATALOG = web.AppKey("catalog", FeedCatalog)
FEEDS = web.AppKey("feed_service", FeedService)
SEARCH_CACHE = web.AppKey("search_cache", dict[str, StopSearch])
BOARD_CACHE = web.AppKey("board_cache", dict[str, BoardEntry])  # by request target
POLLERS = web.AppKey("pollers", PollerManager)


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")
