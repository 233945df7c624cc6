"""Self-service keys: who may sign up, how often, and with which tier.

No API key is needed; signups are limited per client IP (``GATEWAY_SIGNUP_PER_IP`` per
``GATEWAY_SIGNUP_WINDOW_SECONDS``, a GCRA in the store; IPv6 clients per /64). The client IP is
the socket peer; ``X-Forwarded-For`` is believed only from ``GATEWAY_TRUSTED_PROXIES``.
The routes are ``gateway.http.signup_routes``.
"""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from gateway.access.caller import RETRY_AFTER
from gateway.access.events import release_seat, take_seat
from gateway.access.key_issuing import create_key
from gateway.access.keys import KeyRecord
from gateway.access.limiter import KeyLimiter
from gateway.access.limits import Limits
from gateway.access.tiers import TierCache
from gateway.clock import Clock
from gateway.errors import ApiError, RateLimited, StoreUnavailable
from gateway.observability import metrics
from gateway.settings import Settings
from gateway.store.store import Store

log = logging.getLogger(__name__)
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str | None, forwarded_for: str | None,
              trusted: list[IpNetwork]) -> str:
    """The address signups are counted against: the socket peer, or, when the peer is a trusted
    proxy, the right-most X-Forwarded-For entry that is not one. IPv6 is grouped per /64."""
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(peer or "")
    except ValueError:
        return "local"  # a unix socket: only this host can connect
    if trusted and forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        while hops and any(addr in net for net in trusted):
            try:
                addr = ipaddress.ip_address(hops.pop())
            except ValueError:
                break
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class SignupService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, limiter: KeyLimiter,
                 tiers: TierCache) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.limiter = limiter
        self.tiers = tiers
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    def ip_of(self, request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        host = peer[0] if isinstance(peer, tuple) and peer else None
        return client_ip(host, request.headers.get("X-Forwarded-For"), self.trusted)

    async def signup(self, request: web.Request, email: str, name: str,
                     event_code: str) -> tuple[str, KeyRecord, Limits]:
        try:
            result = await self._signup(request, email, name, event_code)
        except ApiError as exc:
            metrics.SIGNUPS.labels(exc.code).inc()
            raise
        metrics.SIGNUPS.labels("created").inc()
        return result

    async def _signup(self, request: web.Request, email: str, name: str,
                      event_code: str) -> tuple[str, KeyRecord, Limits]:
        if not self.limiter.available():
            raise StoreUnavailable("the key store is unreachable; try again in a few seconds")
        wait = await self.limiter.admit_signup(self.ip_of(request), self.settings.signup_per_ip,
                                               self.settings.signup_window_s)
        if wait:
            request[RETRY_AFTER] = max(1, int(-(-wait // 1)))
            raise RateLimited(f"too many signups from your address; retry in "
                              f"{request[RETRY_AFTER]} s", code="rate_limited")
        tier, expires, code = self.settings.signup_tier, None, ""
        if event_code.strip():
            event = await take_seat(self.store, event_code, self.clock.now())
            tier, expires, code = event.tier, event.expires_at, event.code
        try:
            key, record = await create_key(self.store, self.clock, kind="developer",
                                           email=email, name=name, tier=tier, expires=expires,
                                           event=code)
        except BaseException:
            if code:
                await release_seat(self.store, code)
            raise
        return key, record, self.tiers.get(record.tier)


# --- the signup page -------------------------------------------------------------------------


