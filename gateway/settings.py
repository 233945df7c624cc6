"""Settings: one frozen object, built once from the environment and the command line."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8080
# A reserve's lifetime starts when its grant reaches the process; it counts as held in the
# store for 2 s from the grant (limiter.HOLD_US): the round trip, event-loop stalls and the
# hand-back must fit in the rest.
MAX_RESERVE_SECONDS = 1.0
_TRUE = ("1", "true", "yes")


def _number(env: Mapping[str, str], name: str, kind: type[float] | type[int],
            default: str) -> Any:
    """A numeric setting: finite and not negative (every one of them is a size, a count or a
    duration), or a ValueError naming the variable."""
    text = env.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'} of 0 "
                         f"or more, not {text!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Process settings. Every field has a documented environment variable (docs/operations.md)."""

    redis_url: str | None = None
    """REDIS_URL: an external Redis/Valkey. None starts the embedded Valkey under data_dir."""
    data_dir: Path = Path(".transit-gateway")
    """--data-dir / GATEWAY_DATA_DIR: embedded store files (AOF) and its unix socket."""
    clock: str | None = None
    """GATEWAY_CLOCK: ISO-8601 instant the process clock starts at."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    role: str = "all"
    workers: int = 1
    log_level: str = "INFO"
    auth_grace_seconds: float = 30.0
    """GATEWAY_AUTH_GRACE_SECONDS: while the store is down, keys this process verified that
    recently keep working (all others get 503 store_unavailable)."""
    ratelimit_fail_open: bool = True
    """GATEWAY_RATELIMIT_FAIL_OPEN: while the store is down, serve those keys under a
    per-process limit at their tier's per-minute rate (1), or refuse them too (0)."""
    limiter_timeout_s: float = 0.25
    """GATEWAY_LIMITER_TIMEOUT_SECONDS: socket timeouts of the auth + rate-limit store calls."""
    breaker_seconds: float = 1.0
    """GATEWAY_BREAKER_SECONDS: after a store failure, requests skip the store this long, then
    one request probes it."""
    reserve_seconds: float = 1.0
    """GATEWAY_RESERVE_SECONDS: a key this process sees often (8 requests a second or more)
    is counted ahead in blocks that last this long, far from its limits only
    (``gateway.access.limiter``); revocation reaches such a key within it. 0 checks every request
    with the store; at most ``MAX_RESERVE_SECONDS``."""
    tier_cache_seconds: float = 5.0
    """GATEWAY_TIER_CACHE_SECONDS: how long a process uses its copy of the tier table."""
    signup_per_ip: int = 50
    """GATEWAY_SIGNUP_PER_IP: self-service signups per client IP (IPv6: per /64) per window."""
    signup_window_s: float = 3600.0
    """GATEWAY_SIGNUP_WINDOW_SECONDS: that window."""
    signup_tier: str = "bronze"
    """GATEWAY_SIGNUP_TIER: the tier of self-service keys (hackathon keys get the event's)."""
    trusted_proxies: tuple[str, ...] = ()
    """GATEWAY_TRUSTED_PROXIES: comma-separated IPs/CIDRs whose X-Forwarded-For is believed;
    empty: the client IP is the socket peer."""
    max_json_bytes: int = 64 * 1024
    """GATEWAY_MAX_JSON_BYTES: the largest JSON or form body accepted (413 beyond)."""
    bench_no_auth: bool = False
    """GATEWAY_BENCH_NO_AUTH=1: benchmarks only; no authentication or rate limits at all.
    Never from a flag; refused unless the API listens on a loopback address."""
    metrics: bool = True
    """GATEWAY_METRICS: request metrics (latency by route and status, bytes out) on (1, the
    default) or off (0: to measure what they cost)."""
    static_max_bytes: int = 512 * 1024 * 1024
    """GATEWAY_STATIC_MAX_BYTES: the largest static GTFS zip accepted (download or file)."""
    static_max_rows: int = 20_000_000
    """GATEWAY_STATIC_MAX_ROWS: the most stop_times rows a static feed may have; a feed over it
    is refused with ``feed_too_large`` (413), before its read where the file's lines show it.
    Building a version takes about 1.5 GiB and 15 CPU-seconds per 14 M rows (``python -m
    bench.ingest national``)."""
    static_timeout_s: float = 300.0
    ingest_child_bytes: int = 16 * 1024 * 1024
    """GATEWAY_INGEST_CHILD_BYTES: static sources larger than this are built in a child
    process (its memory goes back when it exits); smaller ones in a thread."""
    keep_versions: int = 3
    """GATEWAY_KEEP_VERSIONS: static versions kept in the store per feed (the serving one
    included; at least 1): a rollback, or a process still loading one, needs the others."""
    versions_dir: Path | None = None
    """GATEWAY_VERSIONS_DIR: where each host keeps one file per static version, mapped by
    all its processes (default: a folder of this user under the system's temp dir)."""
    allow_private_urls: bool = False
    """GATEWAY_ALLOW_PRIVATE_URLS: let feed URLs reach private/loopback addresses (SSRF guard)."""
    realtime_max_bytes: int = 64 * 1024 * 1024
    """GATEWAY_REALTIME_MAX_BYTES: the largest realtime body, after decompression."""
    realtime_timeout_s: float = 10.0
    """Total time allowed for one realtime fetch (a dripping server is cut off here)."""
    stale_trip_updates_s: float = 90.0
    """Realtime older than this (header timestamp) falls back to the schedule."""
    stale_vehicles_s: float = 90.0
    stale_alerts_s: float = 600.0
    max_limit: int = 500
    default_limit: int = 50
    default_window_min: int = 60
    max_window_min: int = 1440

    def __post_init__(self) -> None:
        if not 0 <= self.reserve_seconds <= MAX_RESERVE_SECONDS:
            raise ValueError(f"GATEWAY_RESERVE_SECONDS must be between 0 and "
                             f"{MAX_RESERVE_SECONDS}, not {self.reserve_seconds}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        settings = cls(
            redis_url=env.get("REDIS_URL") or None,
            data_dir=Path(env.get("GATEWAY_DATA_DIR", ".transit-gateway")),
            clock=env.get("GATEWAY_CLOCK") or None,
            log_level=env.get("GATEWAY_LOG_LEVEL", "INFO").upper(),
            auth_grace_seconds=_number(env, "GATEWAY_AUTH_GRACE_SECONDS", float, "30"),
            ratelimit_fail_open=env.get("GATEWAY_RATELIMIT_FAIL_OPEN", "1") in _TRUE,
            limiter_timeout_s=_number(env, "GATEWAY_LIMITER_TIMEOUT_SECONDS", float, "0.25"),
            breaker_seconds=_number(env, "GATEWAY_BREAKER_SECONDS", float, "1"),
            reserve_seconds=_number(env, "GATEWAY_RESERVE_SECONDS", float, "1"),
            tier_cache_seconds=_number(env, "GATEWAY_TIER_CACHE_SECONDS", float, "5"),
            signup_per_ip=_number(env, "GATEWAY_SIGNUP_PER_IP", int, "50"),
            signup_window_s=_number(env, "GATEWAY_SIGNUP_WINDOW_SECONDS", float, "3600"),
            signup_tier=env.get("GATEWAY_SIGNUP_TIER", "bronze"),
            trusted_proxies=tuple(p.strip() for p in env.get("GATEWAY_TRUSTED_PROXIES", "")
                                  .split(",") if p.strip()),
            max_json_bytes=_number(env, "GATEWAY_MAX_JSON_BYTES", int, str(64 * 1024)),
            bench_no_auth=env.get("GATEWAY_BENCH_NO_AUTH", "") == "1",
            metrics=env.get("GATEWAY_METRICS", "1") in _TRUE,
            static_max_bytes=_number(env, "GATEWAY_STATIC_MAX_BYTES", int, str(512 * 1024 * 1024)),
            static_max_rows=_number(env, "GATEWAY_STATIC_MAX_ROWS", int, "20000000"),
            realtime_max_bytes=_number(env, "GATEWAY_REALTIME_MAX_BYTES", int,
                                       str(64 * 1024 * 1024)),
            keep_versions=max(1, _number(env, "GATEWAY_KEEP_VERSIONS", int, "3")),
            ingest_child_bytes=_number(env, "GATEWAY_INGEST_CHILD_BYTES", int,
                                       str(16 * 1024 * 1024)),
            versions_dir=Path(env["GATEWAY_VERSIONS_DIR"]) if env.get("GATEWAY_VERSIONS_DIR")
            else None,
            allow_private_urls=env.get("GATEWAY_ALLOW_PRIVATE_URLS", "") in ("1", "true", "yes"),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **clean)  # type: ignore[arg-type]
