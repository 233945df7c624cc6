"""Getting a static GTFS source onto local disk: a path, a ``file://`` URL, or http(s).

The I/O edge of static ingest. Downloads are streamed to a temporary file with a size cap and a
total timeout, use conditional GET (ETag / Last-Modified), and pass the SSRF guard of
``gateway.ingest.sources``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import aiohttp

from feeds.errors import FeedSourceError
from gateway.ingest.sources import check_public_host, conditional_headers, local_path

CHUNK = 1 << 16


@dataclass(frozen=True)
class StaticSource:
    path: Path
    digest: str  # sha256 of the bytes (directories: of names and bytes), names the version
    temporary: bool  # True when path is a download to delete after use
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False


def digest_of(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_file():
                h.update(child.name.encode() + b"\0")
                h.update(child.read_bytes())
    else:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


async def fetch_static(
    source: str,
    *,
    max_bytes: int,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    allow_private: bool = False,
    tmp_dir: Path | None = None,
) -> StaticSource:
    path = local_path(source)
    if path is not None:
        if not path.exists():
            raise FeedSourceError("source_not_found", f"no such file or directory: {path}")
        if path.is_file() and path.stat().st_size > max_bytes:
            raise FeedSourceError("source_too_large",
                                  f"{path} is {path.stat().st_size} bytes, over {max_bytes}")
        digest = await asyncio.to_thread(digest_of, path)
        return StaticSource(path=path, digest=digest, temporary=False)

    parsed = urlparse(source)
    await check_public_host(parsed.hostname or "", parsed.port or 443, allow_private)
    request_headers = conditional_headers(headers, etag, last_modified)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10)
    fd, name = tempfile.mkstemp(prefix="gtfs-", suffix=".zip", dir=tmp_dir)
    tmp = Path(name)
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                source, headers=request_headers, allow_redirects=False
            ) as resp:
                if resp.status == 304:
                    tmp.unlink(missing_ok=True)
                    return StaticSource(path=tmp, digest="", temporary=False, not_modified=True,
                                        etag=etag, last_modified=last_modified)
                if resp.status != 200:
                    raise FeedSourceError("fetch_failed",
                                          f"GET {source} answered HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise FeedSourceError("source_too_large", f"{source} announces "
                                          f"{resp.content_length} bytes, over {max_bytes}")
                async for chunk in resp.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FeedSourceError("source_too_large",
                                              f"{source} is over {max_bytes} bytes")
                    h.update(chunk)
                    out.write(chunk)
                return StaticSource(path=tmp, digest=h.hexdigest(), temporary=True,
                                    etag=resp.headers.get("ETag"),
                                    last_modified=resp.headers.get("Last-Modified"))
    except TimeoutError as exc:
        tmp.unlink(missing_ok=True)
        raise FeedSourceError("fetch_timeout", f"GET {source} took over {timeout_s}s") from exc
    except aiohttp.ClientError as exc:
        tmp.unlink(missing_ok=True)
        raise FeedSourceError("fetch_failed", f"GET {source} failed: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
