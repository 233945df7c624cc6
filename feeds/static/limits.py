"""Size limits of a static feed: the source's bytes and the rows of stop_times.

A national feed takes gigabytes and tens of seconds to read; a feed over what a deployment is
sized for should be refused before that, not by the kernel's OOM killer half way. So
``check_source_size`` runs before gtfs-kit reads anything: the source's bytes against
``max_bytes``, then stop_times.txt's rows against ``max_rows``. The rows are known without
reading when the file is too small to hold that many (``MIN_ROW_BYTES`` each), and otherwise
counted as lines while the member is streamed (about 2 s per 14 M rows, in constant memory,
stopping at the first line over the limit: an archive that inflates without end is not read to
its end). ``check_rows`` checks the rows pandas actually read, exactly, after the read.

Either refusal is ``FeedTooLarge``: a StaticFeedRejected with the one problem
``feed_too_large``, whose message names the limit and the setting that sets it.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from feeds.errors import Problem, StaticFeedRejected

STOP_TIMES = "stop_times.txt"
MIN_ROW_BYTES = 8
"""The shortest stop_times row: trip_id, stop_id and stop_sequence of one character, empty
times, four commas and the newline (``a,,,b,1\\n``)."""
_BLOCK = 1 << 22


@dataclass(frozen=True)
class SizeLimits:
    """The limits of one build; None: no limit. The setting names go into the refusal."""

    max_bytes: int | None = None
    max_rows: int | None = None
    bytes_setting: str = "GATEWAY_STATIC_MAX_BYTES"
    rows_setting: str = "GATEWAY_STATIC_MAX_ROWS"


NO_LIMITS = SizeLimits()


class FeedTooLarge(StaticFeedRejected):
    """A static feed over a size limit (one ``feed_too_large`` problem)."""

    code = "feed_too_large"


def _too_large(message: str, file: str | None = None) -> FeedTooLarge:
    return FeedTooLarge([Problem("feed_too_large", message, file)])


def source_bytes(path: Path) -> int:
    """A zip's size; a directory's: the sum of its files'."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


def check_source_size(path: Path, limits: SizeLimits) -> None:
    """Before the read: raise FeedTooLarge when the source is over ``max_bytes`` or its
    stop_times.txt has over ``max_rows`` rows (counted as lines after the header). ``path``
    passed ``validate.check_source``: a readable zip or a directory, with a stop_times.txt."""
    if limits.max_bytes is not None:
        size = source_bytes(path)
        if size > limits.max_bytes:
            raise _too_large(f"the source is {size} bytes, over the limit of {limits.max_bytes} "
                             f"bytes ({limits.bytes_setting})")
    if limits.max_rows is None:
        return
    with _stop_times(path) as (fh, size):
        if size <= MIN_ROW_BYTES * (limits.max_rows + 1):  # header included
            return
        rows, counted_all = _count_rows(fh, limits.max_rows)
    if rows > limits.max_rows:
        at_least = "" if counted_all else "at least "
        raise _too_large(f"{STOP_TIMES} has {at_least}{rows} rows, over the limit of "
                         f"{limits.max_rows} rows ({limits.rows_setting})", STOP_TIMES)


def check_rows(feed: Any, limits: SizeLimits) -> None:
    """After the read: the rows pandas read, exactly."""
    stop_times = getattr(feed, "stop_times", None)
    rows = 0 if stop_times is None else len(stop_times)
    if limits.max_rows is not None and rows > limits.max_rows:
        raise _too_large(f"{STOP_TIMES} has {rows} rows, over the limit of {limits.max_rows} "
                         f"rows ({limits.rows_setting})", STOP_TIMES)


@contextlib.contextmanager
def _stop_times(path: Path) -> Iterator[tuple[IO[bytes], int]]:
    """stop_times.txt as a binary stream, and its size (uncompressed)."""
    if path.is_dir():
        member = path / STOP_TIMES
        with open(member, "rb") as fh:
            yield fh, member.stat().st_size
        return
    with zipfile.ZipFile(path) as zf, zf.open(STOP_TIMES) as fh:
        yield fh, zf.getinfo(STOP_TIMES).file_size


def _count_rows(fh: IO[bytes], max_rows: int) -> tuple[int, bool]:
    """Lines after the header (a last line without a newline counts), and whether all were
    counted: counting stops at the first block that takes it over ``max_rows``. Blank lines
    and newlines inside quotes count too: a few more than pandas' rows, never fewer."""
    lines = 0
    last = b"\n"
    while block := fh.read(_BLOCK):
        lines += block.count(b"\n")
        last = block[-1:]
        if lines > max_rows + 1:
            return lines - 1, False
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0), True
