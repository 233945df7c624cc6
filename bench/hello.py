"""The ceiling: a minimal aiohttp app (uvloop) returning a fixed orjson body.

``python -m bench.hello PORT [BODY_FILE]``; ``GET /`` answers ``{"hello": "world", "n": 1}``.
With ``BODY_FILE`` (the bench passes the departures board the gateway serves), its bytes are
answered on ``/`` and on the gateway's departures route pattern, so what the body and the URL
(a dynamic route with two parameters, a query string) cost aiohttp itself, without any gateway
logic, is measured too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import uvloop
from aiohttp import web


def main() -> None:
    body = (Path(sys.argv[2]).read_bytes() if len(sys.argv) > 2
            else orjson.dumps({"hello": "world", "n": 1}))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/", hello)
    if len(sys.argv) > 2:
        app.router.add_get("/v1/feeds/{feed}/stops/{stop}/departures", hello)
    app.router.add_get("/healthz", hello)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
