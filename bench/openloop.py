"""Open-loop (constant arrival rate) load, like wrk2's ``-R``: ``bench/openloop.c``, compiled here.

Debian has no wrk2, and wrk paced by a Lua ``delay()`` is closed-loop: a connection stuck behind
a slow response sends nothing meanwhile, so the requests that would have queued behind it are
never measured (coordinated omission). ``openloop`` schedules request i at ``t0 + i/rate``
whatever happens, and times it from then.

``ensure_openloop()`` compiles the C source with gcc into ``~/.cache/transit-gateway``
(``$XDG_CACHE_HOME`` if set), keyed by the source's hash, so an edit rebuilds it;
``run_openloop(...)`` runs it and returns its figures (milliseconds, requests per second).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

SOURCE = Path(__file__).resolve().with_name("openloop.c")
DRAIN_SECONDS = 5  # openloop waits this long for the responses still missing at the end


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "transit-gateway"


def ensure_openloop() -> str:
    """Path of the compiled generator, built from ``bench/openloop.c`` if not cached yet."""
    source = SOURCE.read_bytes()
    binary = _cache_dir() / f"openloop-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return str(binary)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build bench/openloop.c (apt-get install gcc)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: a concurrent run never sees half a binary.
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    build = subprocess.run(
        [gcc, "-O2", "-Wall", "-Wextra", "-o", str(partial), str(SOURCE)],
        capture_output=True, text=True,
    )
    if build.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"cannot compile {SOURCE}:\n{build.stderr}")
    partial.replace(binary)
    return str(binary)


def run_openloop(binary_prefix: list[str], url: str, rate: float, seconds: int,
                 headers: dict[str, str] | None = None, connections: int = 64
                 ) -> dict[str, float]:
    """Load ``url`` with ``rate`` GETs per second for ``seconds``, open-loop.

    ``binary_prefix`` goes before the generator's path (e.g. ``["taskset", "-c", "1"]``).
    Returns ``scheduled``, ``completed``, ``rate`` (completed per second within the scheduling
    window), ``p50_ms``, ``p90_ms``, ``p99_ms``, ``p999_ms``, ``max_ms``, ``non2xx``,
    ``errors`` and ``timeouts``; raises RuntimeError if any request failed or went unanswered.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"openloop speaks plain http only: {url}")
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    args = [*binary_prefix, ensure_openloop(), parts.hostname, str(parts.port or 80), path,
            repr(float(rate)), str(seconds), str(connections)]
    args += [f"{name}: {value}" for name, value in (headers or {}).items()]
    out = subprocess.run(args, capture_output=True, text=True,
                         timeout=seconds + DRAIN_SECONDS + 60)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"openloop failed ({out.returncode}) on {url}:\n"
                           f"{out.stdout}{out.stderr}")
    result = {key: float(value) for key, value in json.loads(lines[-1]).items()}
    if result["non2xx"] or result["errors"] or result["timeouts"]:
        raise RuntimeError(f"openloop at {rate:g}/s on {url}: {int(result['non2xx'])} non-2xx, "
                           f"{int(result['errors'])} errors, {int(result['timeouts'])} "
                           f"timeouts:\n{out.stdout}{out.stderr}")
    return result
