"""A registered feed's configuration, as given to ``feeds add`` or ``POST /v1/feeds``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.errors import BadRequest
from gateway.store.names import FEED_ID_RE

MIN_POLL_SECONDS = 5
DEFAULT_POLL_SECONDS = 15


@dataclass(frozen=True)
class FeedConfig:
    id: str
    static: str
    trip_updates: str | None = None
    vehicle_positions: str | None = None
    alerts: str | None = None
    poll_seconds: int = DEFAULT_POLL_SECONDS
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """What developers may see: header values are often operator secrets."""
        data = asdict(self)
        data["headers"] = sorted(self.headers)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeedConfig:
        """Validate untrusted input (CLI or HTTP). Raises BadRequest(invalid_feed_config)."""
        def bad(message: str) -> BadRequest:
            return BadRequest(message, code="invalid_feed_config")

        if not isinstance(data, dict):
            raise bad("the feed config must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise bad(f"unknown field(s): {', '.join(sorted(unknown))}")
        feed_id = data.get("id")
        if not isinstance(feed_id, str) or not FEED_ID_RE.match(feed_id):
            raise bad("id must be 1-64 characters of letters, digits, '_', '.', '-'")
        static = data.get("static")
        if not isinstance(static, str) or not static.strip():
            raise bad("static (a path or URL of a GTFS zip) is required")
        urls: dict[str, str | None] = {}
        for name in ("trip_updates", "vehicle_positions", "alerts"):
            value = data.get(name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise bad(f"{name} must be a path or URL")
            urls[name] = value
        poll = data.get("poll_seconds", DEFAULT_POLL_SECONDS)
        if isinstance(poll, bool) or not isinstance(poll, int) or not (
            MIN_POLL_SECONDS <= poll <= 86400
        ):
            raise bad(f"poll_seconds must be an integer from {MIN_POLL_SECONDS} to 86400")
        headers = data.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k.strip() and "\n" not in k + v
            for k, v in headers.items()
        ):
            raise bad("headers must map header names to string values")
        return cls(id=feed_id, static=static.strip(), poll_seconds=poll, headers=headers, **urls)


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` → (name, value), for ``--header``."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise BadRequest(f"header must look like 'Name: value', got {text!r}",
                         code="invalid_feed_config")
    return name.strip(), value.strip()
