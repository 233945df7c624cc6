"""JSON in and out: request bodies with a size cap (413 ``payload_too_large`` beyond it, 400
``invalid_json``), and JSON responses encoded with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, refused as soon as it is known to be over ``max_bytes``."""
    too_large = PayloadTooLarge(f"the request body is over {max_bytes} bytes",
                                code="payload_too_large")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > max_bytes:
            raise too_large
    return bytes(data)


async def read_json(request: web.Request, max_bytes: int) -> dict[str, Any]:
    body = await read_body(request, max_bytes)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return value

def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")
