"""The ceiling: a minimal aiohttp app (uvloop) returning a small orjson body.

``python -m bench.hello PORT``; ``GET /`` answers ``{"hello": "world", "n": 1}``.
"""

from __future__ import annotations

import sys

import orjson
import uvloop
from aiohttp import web

BODY = orjson.dumps({"hello": "world", "n": 1})


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/healthz", hello)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
