"""Typed application state: the aiohttp AppKeys every module of the app reads its parts by."""

from __future__ import annotations

import asyncio

from aiohttp import web

from feeds.schedule.stop_search import StopSearch
from gateway.clock import Clock
from gateway.http.board_cache import BoardCache
from gateway.ingest.feed_service import FeedService
from gateway.ingest.pollers import PollerManager
from gateway.replica.feeds import FeedCatalog
from gateway.settings import Settings
from gateway.store.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
CATALOG = web.AppKey("catalog", FeedCatalog)
FEEDS = web.AppKey("feed_service", FeedService)
# by feed id: the version searched and its search (being built in a thread, or built)
SEARCH_CACHE = web.AppKey("search_cache", dict[str, tuple[str, "asyncio.Future[StopSearch]"]])
BOARD_CACHE = web.AppKey("board_cache", BoardCache)
POLLERS = web.AppKey("pollers", PollerManager)

