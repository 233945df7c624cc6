"""Registering feeds and publishing static versions (the write side of static ingest).

fetch → validate + index (worker thread) → write the new version whole → switch → announce.
A refused or failed update records the error in the feed's status and leaves the version that
was serving in place.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from feeds.errors import FeedError, FeedSourceError, StaticFeedRejected
from feeds.schedule.codec import chunks
from feeds.static.limits import SizeLimits
from gateway.clock import Clock
from gateway.errors import ApiError, Conflict, NotFound, PayloadTooLarge, Unprocessable
from gateway.feed_config import FeedConfig
from gateway.ingest import static_build
from gateway.ingest.static_fetch import fetch_static
from gateway.observability import feed_metrics
from gateway.replica.feeds import FeedCatalog, default_versions_dir
from gateway.replica.version_files import VersionFiles, file_blocks, map_index
from gateway.settings import Settings
from gateway.store.feed_records import CHUNK_BYTES
from gateway.store.store import Store

log = logging.getLogger(__name__)


def iso_utc(instant: float) -> str:
    return dt.datetime.fromtimestamp(instant, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class IngestResult:
    feed_id: str
    version: str
    changed: bool
    seconds: float
    status: dict[str, Any]


class FeedService:
    def __init__(self, store: Store, settings: Settings, clock: Clock,
                 catalog: FeedCatalog | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.catalog = catalog
        self.versions = catalog.versions if catalog is not None else VersionFiles(
            store, settings.versions_dir or default_versions_dir())
        self._locks: dict[str, asyncio.Lock] = {}

    async def add(self, config: FeedConfig, *, replace: bool = False) -> IngestResult:
        """Register a feed and ingest its static data now. A refused first version registers
        nothing, so a typo in ``feeds add`` leaves no half-made feed behind."""
        existing = await self.store.feed_config(config.id)
        if existing is not None and not replace:
            raise Conflict(f"feed {config.id!r} already exists; use PATCH or feeds reload",
                           code="feed_exists")
        await self.store.put_feed_config(config.id, config.to_json())
        try:
            return await self.ingest(config)
        except Exception:
            if existing is None:
                await self.store.remove_feed(config.id)
            elif replace:
                await self.store.put_feed_config(config.id, existing)
            raise

    async def reload(self, feed_id: str) -> IngestResult:
        return await self.ingest(await self.config(feed_id))

    async def remove(self, feed_id: str) -> None:
        if not await self.store.remove_feed(feed_id):
            raise NotFound(f"no feed {feed_id!r}", code="feed_not_found")
        if self.catalog is not None:
            self.catalog.drop(feed_id)

    async def config(self, feed_id: str) -> FeedConfig:
        raw = await self.store.feed_config(feed_id)
        if raw is None:
            raise NotFound(f"no feed {feed_id!r}", code="feed_not_found")
        return FeedConfig.from_json(raw)

    async def ingest(self, config: FeedConfig) -> IngestResult:
        lock = self._locks.setdefault(config.id, asyncio.Lock())
        async with lock:
            return await self._ingest(config)

    async def _ingest(self, config: FeedConfig) -> IngestResult:
        started = time.perf_counter()
        status = await self.store.feed_status(config.id)
        static = dict(status.get("static") or {})
        static["last_fetch"] = iso_utc(self.clock.now())
        static["source"] = config.static
        try:
            source = await fetch_static(
                config.static,
                max_bytes=self.settings.static_max_bytes,
                timeout_s=self.settings.static_timeout_s,
                headers=config.headers,
                etag=static.get("etag"),
                last_modified=static.get("last_modified"),
                allow_private=self.settings.allow_private_urls,
            )
            current = static.get("version")
            if source.not_modified or (current and source.digest[:16] == current):
                static["last_error"] = None
                status["static"] = static
                await self.store.put_feed_status(config.id, status)
                await self.store.publish_event(f"feed {config.id} {current}")
                return IngestResult(config.id, str(current), False,
                                    time.perf_counter() - started, status)
            version = source.digest[:16]
            staging = self.versions.staging(config.id, version)
            try:
                built = await static_build.build(
                    source.path, config.id, version, staging, self.settings.ingest_child_bytes,
                    SizeLimits(self.settings.static_max_bytes, self.settings.static_max_rows))
            except BaseException:
                staging.unlink(missing_ok=True)
                raise
            finally:
                if source.temporary:
                    source.path.unlink(missing_ok=True)
        except FeedError as exc:
            static["last_error"] = _error_record(exc, self.clock.now())
            status["static"] = static
            await self.store.put_feed_status(config.id, status)
            await self.store.publish_event(f"feed {config.id} {static.get('version') or '-'}")
            log.warning("feed %s: static update refused: %s", config.id, exc.message)
            feed_metrics.STATIC_ERRORS.labels(config.id, exc.code).inc()
            raise _to_api_error(exc) from exc

        first, last = built.service_range
        static.update(
            version=version,
            loaded_at=iso_utc(self.clock.now()),
            agency=built.agency_name,
            timezone=built.timezone,
            counts=built.counts,
            service_from=dt.date.fromordinal(first).isoformat(),
            service_to=dt.date.fromordinal(last).isoformat(),
            etag=source.etag,
            last_modified=source.last_modified,
            bytes=built.nbytes,
            last_error=None,
        )
        static["ingest_seconds"] = round(time.perf_counter() - started, 3)
        feed_metrics.STATIC_SECONDS.labels(config.id).observe(time.perf_counter() - started)
        status["static"] = static
        path = await asyncio.to_thread(self.versions.adopt, config.id, version, built.path)
        await self.store.publish_static(config.id, version,
                                        chunks(file_blocks(path), CHUNK_BYTES), status,
                                        keep=self.settings.keep_versions)
        if self.catalog is not None:  # this host maps the file it built: no copy of its own
            self.catalog.install(config, await asyncio.to_thread(map_index, path), status)
        log.info("feed %s: static version %s published (%s)", config.id, version, built.counts)
        return IngestResult(config.id, version, True, time.perf_counter() - started, status)


def _error_record(exc: FeedError, now: float) -> dict[str, Any]:
    record: dict[str, Any] = {"code": exc.code, "message": exc.message, "at": iso_utc(now)}
    if isinstance(exc, StaticFeedRejected):
        record["problems"] = [p.as_dict() for p in exc.problems]
    return record


def _to_api_error(exc: FeedError) -> ApiError:
    details: dict[str, Any] = {}
    if isinstance(exc, StaticFeedRejected):
        details["problems"] = [p.as_dict() for p in exc.problems]
    code = exc.code if isinstance(exc, (StaticFeedRejected, FeedSourceError)) else "feed_error"
    too_large = code == "feed_too_large"  # a size limit: 413, like any body over its limit
    return (PayloadTooLarge if too_large else Unprocessable)(exc.message, code=code,
                                                             details=details)
