"""Fetching a realtime body: a local path, ``file://``, or http(s) (the I/O edge of realtime).

Cut-offs that a public feed server cannot get around: a total timeout (a server that drips one
byte a second is dropped when it expires), and a cap on the body *after* decompression, done
here rather than by aiohttp so that a gzip bomb is stopped after ``max_bytes`` of output.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import aiohttp

from feeds.errors import FeedSourceError
from gateway.ingest.sources import check_public_host, conditional_headers, local_path

CHUNK = 1 << 16


@dataclass(frozen=True)
class RealtimeBody:
    status: int
    body: bytes | None  # None when not modified
    etag: str | None = None
    last_modified: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.body is None


def _read_local(path: Path, max_bytes: int) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FeedSourceError("body_too_large", f"{path} is over {max_bytes} bytes")
    return data


class _Inflater:
    """Streaming gzip/deflate decoding with a hard cap on the output."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
                 "deflate": zlib.MAX_WBITS}.get(encoding)
        self._z = zlib.decompressobj(wbits) if wbits is not None else None
        self._max = max_bytes
        self.out = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._z is None:
            self.out += chunk
        else:
            # max_length bounds each step's output; the rest stays in unconsumed_tail.
            data = chunk
            while data:
                self.out += self._z.decompress(data, self._max + 1 - len(self.out))
                if len(self.out) > self._max:
                    break
                data = self._z.unconsumed_tail
        if len(self.out) > self._max:
            raise FeedSourceError("body_too_large",
                                  f"realtime body is over {self._max} bytes (decompressed)")

    def finish(self) -> None:
        """A compressed body must end with its stream's end: a connection cut between two
        entities would otherwise pass for a complete, smaller snapshot."""
        if self._z is not None and not self._z.eof:
            raise FeedSourceError("fetch_failed", "the compressed body is truncated")


async def fetch_realtime(
    session: aiohttp.ClientSession,
    source: str,
    *,
    max_bytes: int,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    allow_private: bool = False,
) -> RealtimeBody:
    path = local_path(source)
    if path is not None:
        try:
            data = await asyncio.to_thread(_read_local, path, max_bytes)
        except OSError as exc:
            raise FeedSourceError("source_not_found", f"cannot read {path}: {exc}") from exc
        return RealtimeBody(200, data)
    parsed = urlparse(source)
    await check_public_host(parsed.hostname or "", parsed.port or 443, allow_private)
    request_headers = {"Accept-Encoding": "gzip, deflate",
                       **conditional_headers(headers, etag, last_modified)}
    try:
        async with asyncio.timeout(timeout_s), session.get(
            source, headers=request_headers, allow_redirects=False, auto_decompress=False
        ) as resp:
            if resp.status == 304:
                return RealtimeBody(304, None, etag, last_modified)
            if resp.status != 200:
                raise FeedSourceError("fetch_failed", f"GET {source} answered HTTP {resp.status}",
                                      http_status=resp.status)
            inflater = _Inflater(resp.headers.get("Content-Encoding", "").lower(), max_bytes)
            async for chunk in resp.content.iter_chunked(CHUNK):
                inflater.feed(chunk)
            inflater.finish()
            return RealtimeBody(200, bytes(inflater.out), resp.headers.get("ETag"),
                                resp.headers.get("Last-Modified"))
    except TimeoutError as exc:
        raise FeedSourceError("fetch_timeout", f"GET {source} took over {timeout_s}s") from exc
    except zlib.error as exc:
        raise FeedSourceError("fetch_failed", f"bad compressed body: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise FeedSourceError("fetch_failed", f"GET {source} failed: {exc}") from exc
