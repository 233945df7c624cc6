"""Settings: one frozen object, built once from the environment and the command line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Settings:
    """Process settings. Every field has a documented environment variable (see README)."""

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
    key_cache_seconds: float = 2.0
    """How long a verified API key is trusted without asking the store (revocation delay)."""
    static_max_bytes: int = 512 * 1024 * 1024
    """GATEWAY_STATIC_MAX_BYTES: the largest static GTFS zip accepted (download or file)."""
    static_timeout_s: float = 300.0
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        settings = cls(
            redis_url=env.get("REDIS_URL") or None,
            data_dir=Path(env.get("GATEWAY_DATA_DIR", ".transit-gateway")),
            clock=env.get("GATEWAY_CLOCK") or None,
            log_level=env.get("GATEWAY_LOG_LEVEL", "INFO").upper(),
            key_cache_seconds=float(env.get("GATEWAY_KEY_CACHE_SECONDS", "2")),
            static_max_bytes=int(env.get("GATEWAY_STATIC_MAX_BYTES", str(512 * 1024 * 1024))),
            allow_private_urls=env.get("GATEWAY_ALLOW_PRIVATE_URLS", "") in ("1", "true", "yes"),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **clean)  # type: ignore[arg-type]
