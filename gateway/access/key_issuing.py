"""Creating API keys and their records (the write side; reading is ``auth``)."""

from __future__ import annotations

import datetime as dt

from gateway.access import keys
from gateway.access.keys import KeyRecord
from gateway.clock import Clock
from gateway.errors import BadRequest
from gateway.store.store import Store

MAX_EMAIL = 254


def _iso(instant: float) -> str:
    return dt.datetime.fromtimestamp(instant, dt.UTC).isoformat(timespec="seconds")


async def create_key(store: Store, clock: Clock, *, kind: str, email: str, name: str = "",
                     tier: str = "bronze", expires: float | None = None,
                     event: str = "") -> tuple[str, KeyRecord]:
    email = email.strip()
    if "@" not in email or len(email) > MAX_EMAIL or any(c.isspace() for c in email):
        raise BadRequest(f"not an email address: {email!r}", code="invalid_email")
    key = keys.generate_key(kind)
    record = KeyRecord(
        key_id=keys.key_id_of(key),
        hash=keys.key_hash(key),
        kind=kind,
        email=email,
        name=name.strip()[:200],
        tier=tier,
        created=_iso(clock.now()),
        expires=_iso(expires) if expires is not None else "",
        revoked="",
        event=event,
    )
    # expires_at (epoch seconds) lets the limiter script refuse an expired key by itself
    await store.put_key(record.key_id, {**record.to_store(),
                                        "expires_at": repr(expires) if expires is not None else ""})
    return key, record
