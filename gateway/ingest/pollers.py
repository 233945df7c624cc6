"""Realtime polling: one never-dying loop per realtime URL, with backoff, for the feeds this
process leads (leases in the store decide which ingest process polls which feed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

import aiohttp

from feeds.errors import FeedError, FeedSourceError
from gateway.clock import Clock
from gateway.errors import ApiError
from gateway.ingest.realtime_feed import RealtimeFeed
from gateway.ingest.realtime_fetch import fetch_realtime
from gateway.observability import feed_metrics
from gateway.replica.feeds import FeedCatalog
from gateway.settings import Settings
from gateway.store.store import Store

MAX_BACKOFF_S = 300.0

log = logging.getLogger(__name__)


class Poller:
    """One loop per realtime URL. Never dies: every failure is logged, counted and recorded."""

    def __init__(self, rt: RealtimeFeed, catalog: FeedCatalog, kind: str, url: str,
                 headers: dict[str, str], poll_seconds: float, settings: Settings,
                 session: aiohttp.ClientSession) -> None:
        self.rt, self.catalog, self.kind, self.url = rt, catalog, kind, url
        self.headers, self.poll_seconds = headers, poll_seconds
        self.settings, self.session = settings, session
        self.failures = 0
        self.etag: str | None = None
        self.last_modified: str | None = None

    async def run(self) -> None:
        while True:
            delay = await self.poll_once()
            await asyncio.sleep(delay)

    async def poll_once(self) -> float:
        """One fetch + apply; returns how long to wait before the next."""
        started = time.perf_counter()
        fetch: dict[str, Any] = {"url_kind": self.kind}
        try:
            result = await fetch_realtime(
                self.session, self.url, max_bytes=self.settings.realtime_max_bytes,
                timeout_s=min(self.settings.realtime_timeout_s, self.poll_seconds * 2),
                headers=self.headers, etag=self.etag, last_modified=self.last_modified,
                allow_private=self.settings.allow_private_urls)
            fetch.update(http_status=result.status,
                         fetch_ms=round((time.perf_counter() - started) * 1000, 1))
            feed_metrics.fetched(self.rt.feed_id, self.kind, time.perf_counter() - started,
                                 len(result.body) if result.body is not None else None)
            if result.not_modified:
                await self.rt.record_fetch(self.kind, fetch, None)
            else:
                assert result.body is not None
                fetch["bytes"] = len(result.body)
                feed = self.catalog.feeds.get(self.rt.feed_id)
                await self.rt.apply(self.kind, result.body, feed.index if feed else None, fetch)
                self.etag, self.last_modified = result.etag, result.last_modified
            self.failures = 0
            return self.poll_seconds
        except asyncio.CancelledError:
            raise
        except FeedError as exc:
            self.failures += 1
            log.warning("feed %s %s: %s: %s", self.rt.feed_id, self.kind, exc.code, exc.message)
            if isinstance(exc, FeedSourceError):  # apply() records its own refusals
                feed_metrics.refused(self.rt.feed_id, self.kind, exc.code)
                fetch["http_status"] = exc.http_status
                with contextlib.suppress(FeedError, ApiError):
                    await self.rt.record_fetch(self.kind, fetch, exc)
        except Exception:
            self.failures += 1
            log.exception("feed %s %s: poll failed", self.rt.feed_id, self.kind)
        return self.backoff()

    def backoff(self) -> float:
        """Exponential in consecutive failures, with full jitter, capped."""
        ceiling = min(MAX_BACKOFF_S, self.poll_seconds * (2 ** min(self.failures, 8)))
        return max(1.0, random.uniform(self.poll_seconds, ceiling))


class PollerManager:
    """Keeps one Poller per configured realtime URL running, for the feeds this process leads."""

    def __init__(self, store: Store, catalog: FeedCatalog, settings: Settings,
                 clock: Clock) -> None:
        self.store, self.catalog, self.settings, self.clock = store, catalog, settings, clock
        self.feeds: dict[str, RealtimeFeed] = {}
        self.tasks: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}
        self.owner = f"{settings.host}:{settings.port}:{id(self)}:{random.random()}"
        self.session: aiohttp.ClientSession | None = None

    def feed(self, feed_id: str) -> RealtimeFeed:
        if feed_id not in self.feeds:
            self.feeds[feed_id] = RealtimeFeed(self.store, feed_id, self.clock)
        return self.feeds[feed_id]

    async def run(self) -> None:
        self.session = aiohttp.ClientSession()
        try:
            while True:
                try:
                    await self.reconcile()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    log.warning("realtime scheduler: %s", exc)
                await asyncio.sleep(2.0)
        finally:
            for _, task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*(t for _, t in self.tasks.values()), return_exceptions=True)
            await self.session.close()

    async def reconcile(self) -> None:
        wanted: dict[tuple[str, str], str] = {}
        for feed_id, loaded in self.catalog.feeds.items():
            urls = {"trip_updates": loaded.config.trip_updates,
                    "vehicle_positions": loaded.config.vehicle_positions,
                    "alerts": loaded.config.alerts}
            if not any(urls.values()):
                continue
            # One poller per feed across all ingest processes: a lease, renewed each round.
            if not await self.store.hold_lease(f"feed:{feed_id}", self.owner, 10_000):
                continue
            for kind, url in urls.items():
                if url:
                    wanted[(feed_id, kind)] = url
        for key, (url, task) in list(self.tasks.items()):
            if wanted.get(key) != url or task.done():
                task.cancel()
                del self.tasks[key]
        for key, url in wanted.items():
            if key in self.tasks:
                continue
            feed_id, kind = key
            loaded = self.catalog.feeds[feed_id]
            assert self.session is not None
            poller = Poller(self.feed(feed_id), self.catalog, kind, url, loaded.config.headers,
                            loaded.config.poll_seconds, self.settings, self.session)
            self.tasks[key] = (url, asyncio.create_task(poller.run(),
                                                       name=f"poll-{feed_id}-{kind}"))
