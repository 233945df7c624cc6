"""Building a static version away from the serving process.

A national feed takes gigabytes and tens of seconds to read and index; a process that serves
requests should not grow by that, nor keep the build's libraries (pandas, gtfs-kit) imported.
So a source larger than ``Settings.ingest_child_bytes`` is built in a child process (spawned,
one task, then it exits and its memory goes back to the system) that writes the encoded version
to a file; the parent publishes the file's bytes and maps it (``gateway.replica``). A small
source is built in a thread of this process: a child's start (about a second of imports) would
cost more than the build.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from feeds.static.limits import NO_LIMITS, SizeLimits


@dataclass(frozen=True)
class BuiltVersion:
    """A version built into a file, and what publishing it needs to know (the index itself
    stayed in the process that built it)."""

    path: Path
    nbytes: int
    counts: dict[str, int]
    service_range: tuple[int, int]
    agency_name: str
    timezone: str


def build_to_file(source: Path, feed_id: str, version: str, out: Path,
                  limits: SizeLimits = NO_LIMITS) -> BuiltVersion:
    """Validate and index ``source``, write the encoded version to ``out``. Raises
    StaticFeedRejected (picklable: it crosses the process boundary)."""
    from feeds.schedule.codec import encode_parts  # the build's imports stay in the builder
    from feeds.static.pipeline import build_static

    index = build_static(source, feed_id, version, limits).index
    size = 0
    with open(out, "wb") as fh:
        for part in encode_parts(index):
            size += fh.write(part)
    return BuiltVersion(out, size, index.counts(), index.service_range(), index.agency_name,
                        index.timezone)


async def build(source: Path, feed_id: str, version: str, out: Path,
                child_over_bytes: int, limits: SizeLimits = NO_LIMITS) -> BuiltVersion:
    """``build_to_file`` in a child process when ``source`` is over ``child_over_bytes``
    (a directory counts its files), else in a thread."""
    size = (sum(p.stat().st_size for p in source.iterdir() if p.is_file())
            if source.is_dir() else source.stat().st_size)
    if size <= child_over_bytes:
        return await asyncio.to_thread(build_to_file, source, feed_id, version, out, limits)
    # A pool of one, for one task: shut down (and its child joined) right after, off the loop.
    # Not max_tasks_per_child=1: its manager thread then starts a replacement child, racing
    # the shutdown.
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return await asyncio.get_running_loop().run_in_executor(
            pool, build_to_file, source, feed_id, version, out, limits)
    finally:
        await asyncio.to_thread(pool.shutdown, True)
