"""API errors: a small typed tree, mapped to HTTP status + stable code in one place (the
endpoint wrapper of ``gateway.http.app``).

    ApiError
    ├── BadRequest          400  bad_parameter, invalid_json, invalid_feed_config, ...
    ├── Unauthorized        401  missing_api_key, invalid_api_key, revoked_api_key, expired_api_key
    ├── Forbidden           403  forbidden
    ├── NotFound            404  feed_not_found, stop_not_found, trip_not_found, not_found
    ├── Conflict            409  feed_exists, event_exists, event_full
    ├── Gone                410  event_expired
    ├── PayloadTooLarge     413  payload_too_large, feed_too_large (a static feed's limits)
    ├── Unprocessable       422  static_feed_rejected (carries the feed's coded problems)
    ├── RateLimited         429  rate_limited, quota_exceeded
    ├── StoreUnavailable    503  store_unavailable (the store did not answer)
    │   └── StoreRefused    507  store_refused: it answered with an error, out of memory or a
    │                       500  value too large (507), anything else (500)
    └── FeedNotReady        503  feed_not_ready
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, code: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        error.update(self.details)
        return {"error": error}


class BadRequest(ApiError):
    status = 400
    code = "bad_parameter"


class Unauthorized(ApiError):
    status = 401
    code = "invalid_api_key"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Gone(ApiError):
    status = 410
    code = "gone"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Unprocessable(ApiError):
    status = 422
    code = "unprocessable"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class StoreUnavailable(ApiError):
    status = 503
    code = "store_unavailable"


class StoreRefused(StoreUnavailable):
    """The store answered a command with an error reply: the store is there, and refused.

    507 Insufficient Storage when it is out of room (``OOM command not allowed when used memory
    > 'maxmemory'``) or the value is over what it stores (``proto-max-bulk-len``, 512 MiB by
    default): the request cannot succeed until the store is given room or the value shrinks,
    and saying "unavailable, try again" (503) would send clients and operators after a network
    problem that is not there. 500 for any other refusal (wrong type, a cross-slot command, an
    ACL): a bug or a misconfiguration here, which no retry fixes.

    A subclass of StoreUnavailable for the callers that degrade when the store cannot serve
    them (the access guard, the limiter, the catalog): a refusal leaves them as unserved as an
    outage does. What is answered and logged says which of the two it was.
    """

    code = "store_refused"

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.status = 507 if full else 500
        self.full = full


class FeedNotReady(ApiError):
    status = 503
    code = "feed_not_ready"
