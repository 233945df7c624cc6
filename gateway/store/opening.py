"""Opening the store a command or server should use: REDIS_URL, or the embedded Valkey."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from gateway.settings import Settings
from gateway.store.embedded import EmbeddedValkey
from gateway.store.store import Store

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    embedded: EmbeddedValkey | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedValkey(settings.data_dir)
        url = embedded.ensure_running()
    store = await Store.connect(url)
    try:
        yield store
    finally:
        await store.close()
        if embedded is not None:
            embedded.stop()
