"""A built-in local feed server that replays recorded GTFS-Realtime captures (for the demo).

Each capture is served as if it had just been published: every timestamp in it is moved by the
distance between the replay clock and the capture's own header time. The gateway polls it over
HTTP like any real feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from feeds.realtime.decode import header_timestamp, restamp
from gateway.clock import Clock


@dataclass(frozen=True)
class Capture:
    path: str  # URL path, e.g. "/trip-updates.pb"
    body: bytes
    recorded_at: int


class ReplayServer:
    def __init__(self, clock: Clock, files: dict[str, Path]) -> None:
        self.clock = clock
        self.captures = {}
        for url_path, file in files.items():
            body = file.read_bytes()
            self.captures[url_path] = Capture(url_path, body, header_timestamp(body) or 0)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _serve(self, request: web.Request) -> web.Response:
        capture = self.captures.get(request.path)
        if capture is None:
            raise web.HTTPNotFound()
        shift = int(self.clock.now()) - capture.recorded_at
        return web.Response(body=restamp(capture.body, shift),
                            content_type="application/x-protobuf")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]  # the port given, or the one bound for port 0
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
