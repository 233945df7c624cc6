"""The events channel: version switches and realtime changes, announced to API processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable
from gateway.store.connection import StoreConnection
from gateway.store.names import EVENTS_CHANNEL


class PubSub(StoreConnection):
    """Publish on ``tg:events`` and follow it."""

    async def publish_event(self, message: str) -> None:
        await self._call("publish", EVENTS_CHANNEL, message)

    async def events(self) -> AsyncIterator[str]:
        """Messages on the events channel, until cancelled. Raises StoreUnavailable on loss."""
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(EVENTS_CHANNEL)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"].decode()
        except RedisError as exc:
            raise StoreUnavailable(f"events subscription lost: {exc}") from exc
        finally:
            with contextlib.suppress(RedisError):
                await pubsub.aclose()
