"""Hackathon events: a code that gives self-service keys the event's tier and expiry.

``transit-gateway events create CODE --tier T --expires ISO --max-keys N`` makes one; a signup
naming the code (``POST /v1/keys`` ``"event"``, or the signup page) takes one of its ``N`` seats
atomically and gets a key of tier ``T`` that expires with the event. Codes are
case-insensitive. A signup is refused with ``event_not_found`` (404), ``event_expired`` (410)
or ``event_full`` (409).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from gateway.access.tiers import require_tier
from gateway.clock import Clock
from gateway.errors import BadRequest, Conflict, Gone, NotFound
from gateway.store.store import Store

EVENT_CODE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _iso(instant: float) -> str:
    return dt.datetime.fromtimestamp(instant, dt.UTC).isoformat(timespec="seconds")


def normalize_code(code: str) -> str:
    return code.strip().lower()


@dataclass(frozen=True)
class Hackathon:
    code: str
    tier: str
    expires: str
    expires_at: float
    max_keys: int
    signups: int
    created: str

    @classmethod
    def from_store(cls, raw: dict[str, str]) -> Hackathon:
        return cls(raw["code"], raw.get("tier", ""), raw.get("expires", ""),
                   float(raw.get("expires_at") or 0), int(raw.get("max_keys") or 0),
                   int(raw.get("signups") or 0), raw.get("created", ""))

    def public(self, now: float) -> dict[str, Any]:
        return {"code": self.code, "tier": self.tier, "expires": self.expires,
                "max_keys": self.max_keys, "signups": self.signups, "created": self.created,
                "expired": self.expires_at <= now}


async def create_event(store: Store, clock: Clock, code: str, tier: str, expires_at: float,
                       max_keys: int) -> Hackathon:
    code = normalize_code(code)
    if not EVENT_CODE_RE.match(code):
        raise BadRequest("event codes are 1-64 of a-z, 0-9, '_' and '-', starting with a "
                         "letter or digit", code="bad_parameter", details={"parameter": "code"})
    await require_tier(store, tier)
    if max_keys < 1:
        raise BadRequest("--max-keys must be at least 1", details={"parameter": "max_keys"})
    now = clock.now()
    if expires_at <= now:
        raise BadRequest(f"the event would already be over ({_iso(expires_at)})",
                         details={"parameter": "expires"})
    event = Hackathon(code, tier, _iso(expires_at), expires_at, max_keys, 0, _iso(now))
    fields = {"tier": tier, "expires": event.expires, "expires_at": repr(expires_at),
              "max_keys": str(max_keys), "signups": "0", "created": event.created}
    if not await store.put_hackathon(code, fields):
        raise Conflict(f"there is already an event {code!r}", code="event_exists")
    return event


async def list_events(store: Store) -> list[Hackathon]:
    events = []
    for code in await store.hackathon_codes():
        raw = await store.hackathon(code)
        if raw is not None:
            events.append(Hackathon.from_store(raw))
    return events


async def take_seat(store: Store, code: str, now: float) -> Hackathon:
    """Reserve one key of the event for a signup (give it back with ``release_seat``)."""
    code = normalize_code(code)
    result = "event_not_found"
    if EVENT_CODE_RE.match(code):
        result = await store.reserve_hackathon_seat(code, now)
    if result == "event_not_found":
        raise NotFound(f"no event {code!r}", code="event_not_found",
                       details={"parameter": "event"})
    if result == "event_expired":
        raise Gone(f"the event {code!r} is over", code="event_expired")
    if result == "event_full":
        raise Conflict(f"the event {code!r} has given out all its keys", code="event_full")
    raw = await store.hackathon(code)
    if raw is None:  # deleted in between
        raise NotFound(f"no event {code!r}", code="event_not_found")
    return Hackathon.from_store(raw)


async def release_seat(store: Store, code: str) -> None:
    await store.release_hackathon_seat(normalize_code(code))
