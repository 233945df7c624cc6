"""Static ingest pipeline (CPU part): source path → checks → size limits → gtfs-kit → checks →
index.

Runs in a worker thread or process; pure apart from reading the local file it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from feeds.errors import Problem, StaticFeedRejected
from feeds.schedule.codec import Buffer, encode_index, encode_parts
from feeds.schedule.index import ScheduleIndex
from feeds.static.build import build_index
from feeds.static.limits import NO_LIMITS, SizeLimits, check_rows, check_source_size
from feeds.static.reader import read_gtfs
from feeds.static.validate import STRUCTURAL, check_feed, check_source


@dataclass(frozen=True)
class StaticBuild:
    index: ScheduleIndex

    def parts(self) -> list[Buffer]:
        """The encoded version as buffers, without one copy of the whole (``codec``)."""
        return encode_parts(self.index)

    @property
    def blob(self) -> bytes:
        """The encoded version whole: for small feeds and tests only."""
        return encode_index(self.index)


def build_static(path: Path, feed_id: str, version: str,
                 limits: SizeLimits = NO_LIMITS) -> StaticBuild:
    """Validate and index a GTFS zip or directory. Raises StaticFeedRejected with coded problems
    (FeedTooLarge, before the read where it can, for a feed over ``limits``)."""
    problems = check_source(path)
    # Ragged rows still read (pandas pads them), so go on and report the tables' problems
    # too: an operator should learn everything wrong with a feed in one round, not two.
    if any(p.code != "malformed_csv" for p in problems):
        raise StaticFeedRejected(problems)
    check_source_size(path, limits)
    try:
        feed = read_gtfs(path)
    except UnicodeDecodeError as exc:
        raise StaticFeedRejected([*problems, Problem("bad_encoding", f"not UTF-8: {exc}")]
                                 ) from exc
    except Exception as exc:
        raise StaticFeedRejected([*problems, Problem(
            "malformed_csv", f"{type(exc).__name__}: {str(exc).strip()[:300]}")]) from exc
    check_rows(feed, limits)
    problems += check_feed(feed)
    if any(p.code in STRUCTURAL or p.code == "malformed_csv" for p in problems):
        raise StaticFeedRejected(problems)
    index = build_index(feed, feed_id, version, problems, release=True)
    return StaticBuild(index=index)
