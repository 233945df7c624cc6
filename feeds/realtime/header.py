"""Whether a snapshot's header can be trusted: full dataset, POSIX seconds, not in the future,
not older than the last accepted one. A body refused whole raises ``RealtimeRejected`` with a
stable code; the caller keeps the last good snapshot."""

from __future__ import annotations

from feeds.errors import FeedError
from feeds.realtime.model import FeedSnapshot

MAX_FUTURE_S = 60


class RealtimeRejected(FeedError):
    """A realtime body refused whole. Codes: empty_body, not_a_feed_message, missing_header,
    timestamp_regressed, timestamp_in_future, timestamp_not_posix, differential_unsupported."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_header(snapshot: FeedSnapshot, now: float, previous_timestamp: int | None) -> None:
    """Refuse a snapshot whose header cannot be trusted. Raises RealtimeRejected."""
    ts = snapshot.timestamp
    if snapshot.incrementality != "FULL_DATASET":
        raise RealtimeRejected("differential_unsupported",
                               "DIFFERENTIAL feeds are not supported; publish FULL_DATASET")
    if ts is None or ts <= 0:
        raise RealtimeRejected("missing_header", "the FeedMessage header has no timestamp")
    if ts > 10_000_000_000:
        raise RealtimeRejected("timestamp_not_posix",
                               f"header timestamp {ts} is not POSIX seconds (milliseconds?)")
    if ts > now + MAX_FUTURE_S:
        raise RealtimeRejected("timestamp_in_future",
                               f"header timestamp is {int(ts - now)} s in the future")
    if previous_timestamp is not None and ts < previous_timestamp:
        raise RealtimeRejected("timestamp_regressed",
                               f"header timestamp {ts} is older than the previous "
                               f"{previous_timestamp}")
