"""Self-service keys over HTTP: ``POST /v1/keys`` (JSON) and the signup page (``GET/POST
/signup``), a plain HTML form (no JavaScript) that shows the new key once with a copyable
``curl`` line. The rules (limits per client IP, hackathon seats) are ``gateway.access.signup``'s."""

from __future__ import annotations

import html
import urllib.parse
from typing import Any

from aiohttp import web

from gateway.access.caller import RETRY_AFTER
from gateway.access.keys import KeyRecord
from gateway.access.limits import Limits
from gateway.access.signup import SignupService
from gateway.errors import ApiError, BadRequest
from gateway.http.json_io import json_response, read_body, read_json

SIGNUP = web.AppKey("signup", SignupService)


def _key_json(key: str, record: KeyRecord, limits: Limits) -> dict[str, Any]:
    return {
        "key": key, "key_id": record.key_id, "kind": record.kind, "tier": record.tier,
        "limits": limits.to_json(), "expires": record.expires or None,
        "event": record.event or None, "email": record.email, "name": record.name,
        "created": record.created,
        "note": "the key is shown only this once: store it now",
    }


async def post_keys(request: web.Request) -> web.Response:
    """POST /v1/keys {"email", "name", "event"?} → 201 with the key, shown once."""
    body = await read_json(request, request.app[SIGNUP].settings.max_json_bytes)
    fields = {}
    for name in ("email", "name", "event"):
        value = body.get(name) or ""
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a string", details={"parameter": name})
        fields[name] = value
    key, record, limits = await request.app[SIGNUP].signup(
        request, fields["email"], fields["name"], fields["event"])
    return json_response(_key_json(key, record, limits), status=201,
                         headers={"Cache-Control": "no-store"})


_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'",
}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · transit-gateway</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;
color:#1b1b1b}}
label{{display:block;margin:.8rem 0 .2rem;font-weight:600}}
input[type=text],input[type=email]{{width:100%;padding:.5rem;font:inherit;box-sizing:border-box}}
button{{margin-top:1rem;padding:.5rem 1.2rem;font:inherit}}
.error{{background:#fdecea;border-left:4px solid #c62828;padding:.6rem 1rem}}
.key{{background:#e8f5e9;border-left:4px solid #2e7d32;padding:.6rem 1rem}}
pre,textarea{{background:#f4f4f4;padding:.6rem;white-space:pre-wrap;word-break:break-all;
font:14px/1.4 ui-monospace,monospace;width:100%;box-sizing:border-box;border:1px solid #ccc}}
small{{color:#555}}
</style></head><body>
<h1>{title}</h1>
{content}
</body></html>
"""


_FORM = """<p>Get an API key for the transit-gateway API: departure boards, stops and trips as
JSON. It is free; the key is shown once, right after you sign up.</p>
{error}
<form method="post" action="/signup">
<label for="email">Email</label>
<input type="email" id="email" name="email" required maxlength="254" value="{email}">
<label for="name">Name or project <small>(optional)</small></label>
<input type="text" id="name" name="name" maxlength="200" value="{name}">
<label for="event">Hackathon code <small>(optional: gives the event's tier; the key
expires with the event)</small></label>
<input type="text" id="event" name="event" maxlength="64" value="{event}">
<button type="submit">Get my key</button>
</form>
"""


_DONE = """<div class="key"><p><strong>Your API key</strong> (tier <b>{tier}</b>{limits}{expires}).
It is shown only this once: copy it now.</p>
<textarea readonly rows="2" aria-label="API key">{key}</textarea></div>
<p>Key id <code>{key_id}</code> (quote it when asking for help; it is not the key).</p>
<p>Try it:</p>
<textarea readonly rows="4" aria-label="curl example">{curl}</textarea>
<p><small>Send the key in the <code>X-API-Key</code> header (or <code>?key=</code>). Your
usage: <code>GET /v1/keys/me</code>.</small></p>
"""


def _page(title: str, content: str, status: int = 200) -> web.Response:
    return web.Response(text=_PAGE.format(title=html.escape(title), content=content),
                        status=status, headers=_HEADERS)


def _form(email: str = "", name: str = "", event: str = "", error: str = "") -> str:
    e = html.escape
    box = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    return _FORM.format(email=e(email), name=e(name), event=e(event), error=box)


async def signup_page(request: web.Request) -> web.Response:
    """GET /signup (``?event=CODE`` fills in the hackathon code)."""
    return _page("Get an API key", _form(event=request.query.get("event", "")[:64]))


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/signup")


async def signup_form(request: web.Request) -> web.Response:
    """POST /signup (form-encoded): the key once, or the form again with the error."""
    service = request.app[SIGNUP]
    email = name = event = ""
    try:
        raw = await read_body(request, service.settings.max_json_bytes)
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        email, name, event = ((form.get(f) or [""])[0] for f in ("email", "name", "event"))
        key, record, limits = await service.signup(request, email, name, event)
    except ApiError as exc:
        retry = request.get(RETRY_AFTER)
        message = exc.message + (f" (retry in {retry} s)" if retry else "")
        return _page("Get an API key", _form(email, name, event, message), status=exc.status)
    e = html.escape
    base = f"{request.scheme}://{request.host}"
    curl = f"curl -H 'X-API-Key: {key}' '{base}/v1/feeds'"
    per = []
    if limits.per_minute:
        per.append(f"{limits.per_minute:,}/minute")
    if limits.per_month:
        per.append(f"{limits.per_month:,}/month")
    content = _DONE.format(
        tier=e(record.tier), key=e(key), key_id=e(record.key_id), curl=e(curl),
        limits=e(": " + ", ".join(per)) if per else "",
        expires=e(f"; expires {record.expires}") if record.expires else "")
    return _page("Your API key", content)
