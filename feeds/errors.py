"""Feed problems as values with stable codes, and the exceptions that carry them.

    FeedError
    ├── StaticFeedRejected   a static GTFS version was refused (carries its problems)
    └── FeedSourceError      the bytes could not be fetched or read (size, time, SSRF, I/O)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One coded problem found in a feed. ``code`` is stable and documented."""

    code: str
    message: str
    file: str | None = None
    count: int = 1

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "file": self.file, "count": self.count}


class FeedError(Exception):
    code = "feed_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StaticFeedRejected(FeedError):
    """The static feed is unusable; the previous version (if any) keeps serving."""

    code = "static_feed_rejected"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        summary = "; ".join(
            f"{p.code}: {p.message}" + (f" ({p.file})" if p.file else "") for p in problems[:5]
        )
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"static feed refused: {summary}{more}")

    def __reduce__(self) -> tuple[type[StaticFeedRejected], tuple[list[Problem]]]:
        # a build in a child process raises this across the process boundary
        return (type(self), (self.problems,))


class FeedSourceError(FeedError):
    """The feed source could not be read (network, size limit, timeout, forbidden address)."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status

    def __reduce__(self) -> tuple[type[FeedSourceError], tuple[str, str, int | None]]:
        return (type(self), (self.code, self.message, self.http_status))
