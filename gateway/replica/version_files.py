"""One file per static version on each host, memory-mapped by every process that serves it.

An API process does not hold a version in its own memory: the version's chunks are fetched from
the store once per host into ``<dir>/<feed>/<version>.idx`` (written under a temporary name,
checked against the manifest's size and SHA-256, then renamed into place), and each process
maps that file read-only and builds its index over the mapping (``feeds.schedule.codec``). The
pages are the kernel's page cache, shared by every process of the host: memory does not grow
with ``--workers``, and a version switch maps the new file while the old mapping is released
with the last reference to the old index.

A lock file per feed makes the processes of a host that start together fetch a version once:
the first takes the lock and writes the file, the others wait and map it. Files of versions
other than the newest few are deleted (a process that still maps one keeps its pages until it
lets go: unlinking a mapped file is safe on POSIX).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

from feeds.schedule.codec import CodecError, decode_index
from feeds.schedule.index import ScheduleIndex
from gateway.store.store import Store

log = logging.getLogger(__name__)
KEEP_FILES = 3  # version files kept per feed


class VersionMissing(Exception):
    """The store has no whole copy of the version (not yet, or no longer)."""


class VersionFiles:
    def __init__(self, store: Store, directory: Path) -> None:
        self.store = store
        self.directory = directory

    def path(self, feed_id: str, version: str) -> Path:
        return self.directory / feed_id / f"{version}.idx"

    async def open(self, feed_id: str, version: str) -> ScheduleIndex:
        """The version's index, mapped from this host's file (fetched first if needed).
        Raises VersionMissing, or CodecError for a file that is not a whole index."""
        path = self.path(feed_id, version)
        for attempt in (1, 2):
            if not path.exists():
                lock = await asyncio.to_thread(self._lock, feed_id)
                try:
                    if not path.exists():  # another process may have written it meanwhile
                        await self._fetch(feed_id, version, path)
                finally:
                    lock.close()
            try:
                return await asyncio.to_thread(map_index, path)
            except CodecError:
                if attempt == 2:
                    raise
                # written by another release of the gateway (a layout change): fetch anew
                path.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def staging(self, feed_id: str, version: str) -> Path:
        """Where a build writes a version before ``adopt`` puts it in place."""
        return self._temporary(self.path(feed_id, version))

    def adopt(self, feed_id: str, version: str, built: Path) -> Path:
        """Put a version this host built itself in place (the ingest side: no round trip
        through the store for the host that made it)."""
        path = self.path(feed_id, version)
        lock = self._lock(feed_id)
        try:
            os.replace(built, path)
        finally:
            lock.close()
        self._prune(feed_id, version)
        return path

    async def _fetch(self, feed_id: str, version: str, path: Path) -> None:
        manifest = await self.store.static_manifest(feed_id, version)
        if manifest is None:
            raise VersionMissing(f"feed {feed_id}: version {version} is not in the store")
        tmp = self._temporary(path)
        digest = hashlib.sha256()
        size = 0
        fh = await asyncio.to_thread(open, tmp, "wb")
        try:
            try:
                for n in range(int(manifest["chunks"])):
                    chunk = await self.store.static_chunk(feed_id, version, n)
                    if chunk is None:
                        raise VersionMissing(f"feed {feed_id}: chunk {n} of version {version} "
                                             "is gone (a newer version replaced it)")
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(fh.write, chunk)
            finally:
                fh.close()
            if size != manifest["bytes"] or digest.hexdigest() != manifest["sha256"]:
                raise VersionMissing(f"feed {feed_id}: version {version} does not match its "
                                     "manifest (written while it was being replaced?)")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self._prune(feed_id, version)

    def _temporary(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def _lock(self, feed_id: str) -> _Lock:
        folder = self.directory / feed_id
        folder.mkdir(parents=True, exist_ok=True)
        return _Lock(folder / ".lock")

    def _prune(self, feed_id: str, current: str) -> None:
        files = sorted((self.directory / feed_id).glob("*.idx"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in files if p.stem != current][KEEP_FILES - 1:]:
            old.unlink(missing_ok=True)


class _Lock:
    """An exclusive ``flock`` on a file, held until ``close``."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "a+b")  # noqa: SIM115 - held across awaits, closed by close()
        fcntl.flock(self._fh, fcntl.LOCK_EX)

    def close(self) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def map_index(path: Path) -> ScheduleIndex:
    """The index over a read-only mapping of ``path``. The mapping lives as long as the
    index's arrays do (they hold it); no explicit close, which would pull pages from under
    them."""
    with open(path, "rb") as fh:
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return decode_index(mapping)


def file_blocks(path: Path, size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
    """A version file's bytes in blocks (publishing reads it back from the page cache)."""
    with open(path, "rb") as fh:
        while block := fh.read(size):
            yield block
