"""Where a feed's bytes may come from, shared by the static and realtime fetchers: local paths,
conditional GET headers, and the SSRF guard (an API that fetches URLs given by its users must
not become a way into the operator's own network: hosts that resolve to private, loopback or
link-local addresses are refused unless ``GATEWAY_ALLOW_PRIVATE_URLS`` allows them)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from urllib.parse import unquote, urlparse

from feeds.errors import FeedSourceError


def local_path(source: str) -> Path | None:
    """The local path a source names, or None when it is a network URL."""
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    return Path(source)


def conditional_headers(headers: dict[str, str] | None, etag: str | None,
                        last_modified: str | None) -> dict[str, str]:
    """The operator's headers plus a conditional GET on what the last fetch returned."""
    out = dict(headers or {})
    if etag:
        out["If-None-Match"] = etag
    if last_modified:
        out["If-Modified-Since"] = last_modified
    return out


async def check_public_host(host: str, port: int, allow_private: bool) -> None:
    if allow_private:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FeedSourceError("fetch_failed", f"cannot resolve {host}: {exc}") from exc
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_global:
            raise FeedSourceError(
                "forbidden_address",
                f"{host} resolves to {addr}, a non-public address; set "
                "GATEWAY_ALLOW_PRIVATE_URLS=1 to allow feeds on private networks",
            )
