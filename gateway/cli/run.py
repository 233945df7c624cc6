"""Running the gateway: ``serve`` (one process or a pre-forked group) and ``demo``."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from gateway.access.key_issuing import create_key
from gateway.clock import Clock, ShiftedClock, clock_from_setting, parse_instant
from gateway.feed_config import FeedConfig
from gateway.http.app import build_app
from gateway.http.appkeys import CATALOG, CLOCK, FEEDS, STORE
from gateway.ingest.replay import ReplayServer
from gateway.observability.request_metrics import prepare_multiprocess_dir, remove_multiprocess_dir
from gateway.replica.feeds import FeedCatalog
from gateway.settings import Settings
from gateway.store.embedded import EmbeddedValkey
from gateway.store.store import Store

log = logging.getLogger(__name__)
Setup = Callable[[web.Application], AsyncIterator[None]]

SAMPLE_DIR = Path(__file__).parent.parent / "sample"
SAMPLE_FEED = SAMPLE_DIR / "caltrain-2023.zip"
DEMO_CLOCK = "2023-11-07T17:05:34-08:00"  # the recorded trip updates' header time


def settle_heap() -> None:
    """Take what is alive now (a feed's schedule index, the imported libraries: 120k objects
    with WMATA loaded) out of the cyclic garbage collector's reach. A full collection traverses
    all of them: measured at 64-72 ms on this machine, a stall every few thousand requests that
    showed in the p99. The index is freed by reference counting when it is replaced; the one
    collection here (the same 70 ms) runs only when a new version has been loaded."""
    gc.collect()
    gc.freeze()


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


async def _make_app(settings: Settings, clock: Clock, setup: Setup | None = None,
                    embedded: EmbeddedValkey | None = None) -> web.Application:
    if settings.redis_url is None and embedded is None:
        embedded = EmbeddedValkey(settings.data_dir)
    url = settings.redis_url or embedded.ensure_running()  # type: ignore[union-attr]
    store = await Store.connect(url)
    app = build_app(settings, store, clock, FeedCatalog(store, after_load=settle_heap,
                                                 versions_dir=settings.versions_dir))

    async def close(app: web.Application) -> None:
        await store.close()
        if embedded is not None:
            embedded.stop()

    app.on_cleanup.append(close)
    if setup is not None:
        app.cleanup_ctx.append(setup)
    return app


def _run(settings: Settings, clock: Clock, setup: Setup | None = None,
         reuse_port: bool = False, embedded: EmbeddedValkey | None = None) -> None:
    _use_uvloop()
    web.run_app(
        _make_app(settings, clock, setup, embedded),
        host=settings.host,
        port=settings.port,
        access_log=None,
        reuse_port=reuse_port or None,
        shutdown_timeout=10.0,
        print=lambda msg: log.info("%s", msg.strip()),
    )


def _worker(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    _run(settings, clock_from_setting(settings.clock), reuse_port=True)


def serve(settings: Settings) -> int:
    clock = clock_from_setting(settings.clock)
    if settings.workers <= 1:
        _run(settings, clock)
        return 0
    # Pre-fork: the parent owns the embedded store (if any); each worker binds the same port
    # with SO_REUSEPORT and the kernel spreads connections over them.
    embedded = None
    if settings.redis_url is None:
        embedded = EmbeddedValkey(settings.data_dir)
        settings = dataclasses.replace(settings, redis_url=embedded.ensure_running())
    # Metrics of all workers, aggregated by whichever one answers GET /metrics.
    metrics_dir = prepare_multiprocess_dir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings,), name=f"worker-{i}")
             for i in range(settings.workers)]
    for p in procs:
        p.start()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A worker that ends on its own (its port taken, a crash) leaves the group unable to serve
    # as configured: stop the others and exit non-zero, so the supervisor (systemd,
    # Kubernetes) sees the failure and restarts the whole group.
    failed: list[str] = []
    running = list(procs)
    while running:
        ended = multiprocessing.connection.wait([p.sentinel for p in running])
        for p in [p for p in running if p.sentinel in ended]:
            p.join()
            running.remove(p)
            if not stopping:
                log.error("%s exited on its own (exit code %s); stopping the others", p.name,
                          p.exitcode)
                failed.append(p.name)
                stop(signal.SIGTERM, None)
    remove_multiprocess_dir(metrics_dir)
    if embedded is not None:
        embedded.stop()
    return 1 if failed else 0


def demo(settings: Settings) -> int:
    """Embedded store, the bundled Caltrain sample, the clock at the recording, a demo key."""
    if settings.redis_url is None:
        settings = dataclasses.replace(settings, data_dir=settings.data_dir / "demo")
    # The replay server is on loopback: the demo may poll a private address.
    settings = dataclasses.replace(settings, allow_private_urls=True)
    clock = ShiftedClock(parse_instant(settings.clock or DEMO_CLOCK))
    base = f"http://{settings.host}:{settings.port}"
    replay = ReplayServer(clock, {f"/{name}.pb": SAMPLE_DIR / f"caltrain-{name}.pb"
                                  for name in ("trip-updates", "vehicle-positions", "alerts")})

    async def setup(app: web.Application) -> AsyncIterator[None]:
        feeds = await replay.start()
        config = FeedConfig(id="caltrain", static=str(SAMPLE_FEED),
                            trip_updates=f"{feeds}/trip-updates.pb",
                            vehicle_positions=f"{feeds}/vehicle-positions.pb",
                            alerts=f"{feeds}/alerts.pb", poll_seconds=15)
        await app[FEEDS].add(config, replace=True)
        key, _ = await create_key(app[STORE], app[CLOCK], kind="developer",
                                  email="demo@localhost", name="demo", tier="gold")
        await app[CATALOG].refresh()
        lines = [
            "",
            "transit-gateway demo is running, offline: the Caltrain 2023 timetable, its recorded",
            "realtime replayed by a local feed server and polled every 15 s, the clock set to",
            "the recording (2023-11-07 17:05 Pacific).",
            f"  demo key: {key}",
            "",
            "Try:",
            f"  curl -H 'X-API-Key: {key}' '{base}/v1/feeds/caltrain/stops?q=palo+alto'",
            f"  curl -H 'X-API-Key: {key}' {base}/v1/feeds/caltrain/vehicles",
            f"  curl -H 'X-API-Key: {key}' "
            f"{base}/v1/feeds/caltrain/stops/palo_alto/departures",
            "",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        yield
        await replay.stop()

    _run(settings, clock, setup)
    return 0

