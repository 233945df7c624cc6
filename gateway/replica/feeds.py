"""The in-process replica of the feeds: configs, statuses and decoded schedule indexes.

API processes answer from here without asking the store. It is kept current by the store's
events channel (a version switch is announced after it is written) and, as a safety net for a
lost subscription, by a periodic refresh that compares versions in one MGET.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from feeds.schedule.codec import CodecError
from feeds.schedule.index import ScheduleIndex
from gateway.errors import ApiError, FeedNotReady, NotFound
from gateway.feed_config import FeedConfig
from gateway.replica.realtime import RealtimeView
from gateway.replica.version_files import VersionFiles, VersionMissing
from gateway.store.store import Store

log = logging.getLogger(__name__)
REFRESH_SECONDS = 10.0


@dataclass(frozen=True)
class LoadedFeed:
    config: FeedConfig
    status: dict[str, Any]
    index: ScheduleIndex | None

    def ready_index(self) -> ScheduleIndex:
        if self.index is None:
            raise FeedNotReady(f"feed {self.config.id!r} has no static data loaded yet")
        return self.index


def default_versions_dir() -> Path:
    """Where version files live when no directory is set: one folder per user and host, so
    that every process of a host shares it."""
    return Path(tempfile.gettempdir()) / f"transit-gateway-{os.getuid()}" / "versions"


class FeedCatalog:
    def __init__(self, store: Store, after_load: Callable[[], None] | None = None,
                 versions_dir: Path | None = None) -> None:
        self.store = store
        self.versions = VersionFiles(store, versions_dir or default_versions_dir())
        self.feeds: dict[str, LoadedFeed] = {}
        self.realtime: dict[str, RealtimeView] = {}
        self.loaded_once = False
        self.after_load = after_load  # called once a refresh has loaded new schedule data
        # Called with a feed's id when its index is replaced or the feed dropped: caches that
        # hold the old index let go of it, so that its file mapping is released at once.
        self.on_replaced: list[Callable[[str], None]] = []

    def realtime_view(self, feed_id: str) -> RealtimeView:
        view = self.realtime.get(feed_id)
        if view is None:
            view = self.realtime[feed_id] = RealtimeView(feed_id)
        return view

    def get(self, feed_id: str) -> LoadedFeed:
        feed = self.feeds.get(feed_id)
        if feed is None:
            raise NotFound(f"no feed {feed_id!r}", code="feed_not_found")
        return feed

    def install(self, config: FeedConfig, index: ScheduleIndex | None,
                status: dict[str, Any]) -> None:
        current = self.feeds.get(config.id)
        self.feeds[config.id] = LoadedFeed(config, status, index)
        if current is not None and current.index is not index:
            self._replaced(config.id)

    def drop(self, feed_id: str) -> None:
        self.feeds.pop(feed_id, None)
        self.realtime.pop(feed_id, None)
        self._replaced(feed_id)

    def _replaced(self, feed_id: str) -> None:
        for listener in self.on_replaced:
            listener(feed_id)

    async def refresh(self, only: str | None = None) -> None:
        configs = await self.store.feed_configs()
        if only is not None:
            configs = {only: configs[only]} if only in configs else {}
            if not configs:
                self.drop(only)
                return
        else:
            for gone in set(self.feeds) - set(configs):
                self.drop(gone)
        versions = await self.store.feed_versions(list(configs))
        loaded = False
        for feed_id, raw in configs.items():
            try:
                config = FeedConfig.from_json(raw)
            except ApiError as exc:
                log.error("feed %s: stored config is invalid: %s", feed_id, exc.message)
                continue
            status = await self.store.feed_status(feed_id)
            current = self.feeds.get(feed_id)
            version = versions.get(feed_id)
            index = current.index if current is not None else None
            if version is None:
                index = None
            elif index is None or index.version != version:
                index = await self._load(feed_id, version) or index
                loaded = True
            self.install(config, index, status)
            await self.realtime_view(feed_id).reload(self.store)
        if only is None:
            self.loaded_once = True
        if loaded and self.after_load is not None:
            self.after_load()

    async def _load(self, feed_id: str, version: str) -> ScheduleIndex | None:
        """The version mapped from this host's file; None (the loaded one keeps serving)
        when it cannot be had whole."""
        try:
            return await self.versions.open(feed_id, version)
        except VersionMissing as exc:
            log.warning("%s", exc)
        except (CodecError, KeyError, ValueError, OSError) as exc:
            log.error("feed %s: version %s cannot be loaded: %s", feed_id, version, exc)
        return None

    async def run(self) -> None:
        """Follow the events channel until cancelled; never dies on store trouble."""
        while True:
            try:
                async for message in self.store.events():
                    if message.startswith("rt "):
                        event = orjson.loads(message[3:])
                        feed_id = event.get("feed")
                        if isinstance(feed_id, str) and feed_id in self.feeds:
                            await self.realtime_view(feed_id).apply_event(self.store, event)
                        continue
                    parts = message.split()
                    if len(parts) >= 2 and parts[0] == "feed":
                        await self.refresh(only=parts[1])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the follower must outlive store outages
                log.warning("catalog: events subscription failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await self.refresh()

    async def run_periodic(self) -> None:
        """Compare versions every few seconds: covers a lost or missed event."""
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001
                log.warning("catalog: refresh failed: %s", exc)
