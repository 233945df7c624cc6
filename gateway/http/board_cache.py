"""Rendered departure boards, reused within the second they were rendered in."""

from __future__ import annotations

from aiohttp import web

from gateway.clock import Clock
from gateway.replica.feeds import FeedCatalog, LoadedFeed
from gateway.replica.realtime import RealtimeView


class _Board:
    __slots__ = ("body", "feed", "feed_id", "revision", "second", "view")

    def __init__(self, second: int, feed: LoadedFeed, view: RealtimeView, revision: int,
                 body: bytes) -> None:
        self.second, self.feed, self.view, self.revision, self.body = (second, feed, view,
                                                                        revision, body)
        self.feed_id = feed.config.id


class BoardCache:
    """Rendered departure boards by request target (path and query, as sent). A board is
    reused while all of these hold: the same second of the clock, the same loaded feed, and
    the same revision of its realtime view; so an answer is never older than the data it
    would be rendered from by more than a second. The feed and the view are held (not just
    their ids) so that an id cannot be reused while the entry lives. Full: emptied (entries
    live a second, dropping them all costs one render each)."""

    def __init__(self, catalog: FeedCatalog, clock: Clock, size: int = 4096) -> None:
        self.catalog = catalog
        self.clock = clock
        self.size = size
        self._boards: dict[str, _Board] = {}

    def get(self, target: str, second: int) -> bytes | None:
        board = self._boards.get(target)
        if board is None or board.second != second:
            return None
        catalog = self.catalog
        if (catalog.feeds.get(board.feed_id) is not board.feed
                or catalog.realtime.get(board.feed_id) is not board.view
                or board.view.revision != board.revision):
            return None
        return board.body

    def answer(self, request: web.Request) -> bytes | None:
        """The board for this request if one was rendered earlier in this second: the
        endpoint wrapper answers with it without running the handler (``gateway.http.app``)."""
        return self.get(request.raw_path, int(self.clock.now()))

    def put(self, target: str, second: int, feed: LoadedFeed, view: RealtimeView,
            revision: int, body: bytes) -> None:
        """``revision``: the view's revision read before rendering began (a change during
        the render leaves the entry stale at once)."""
        if len(self._boards) >= self.size:
            self._boards.clear()
        self._boards[target] = _Board(second, feed, view, revision, body)

    def forget(self, feed_id: str) -> None:
        """Drop the feed's boards (its index was replaced: they would pin the old one)."""
        for target in [t for t, b in self._boards.items() if b.feed_id == feed_id]:
            del self._boards[target]
