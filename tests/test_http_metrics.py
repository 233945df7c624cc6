"""Request metrics: latency by canonical route and status, bytes out, off with GATEWAY_METRICS=0,
aggregated over processes when PROMETHEUS_MULTIPROC_DIR is set (serve --workers N)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import GTFS, Gateway

from gateway.clock import SystemClock
from gateway.http.app import build_app
from gateway.observability.request_metrics import (
    HTTP_METRICS,
    RESPONSE_BYTES,
    prepare_multiprocess_dir,
)
from gateway.settings import Settings
from gateway.store.store import Store

ROUTE = "/v1/feeds/{feed}/stops/{stop}/departures"


def _count(text: str, route: str, status: str, method: str = "GET") -> float:
    labels = f'method="{method}",route="{route}",status="{status}"'
    match = re.search(rf"^tg_http_request_seconds_count{{{re.escape(labels)}}} ([0-9.e+-]+)$",
                      text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_request_histogram_by_route_and_status(gateway: Gateway) -> None:
    await gateway.add_feed("caltrain", GTFS / "caltrain-2023.zip")
    before = _count(await (await gateway.client.get("/metrics")).text(), ROUTE, "200")
    status, _ = await gateway.get("/v1/feeds/caltrain/stops/palo_alto/departures")
    assert status == 200
    status, _ = await gateway.get("/v1/feeds/caltrain/stops/nowhere/departures")
    assert status == 404
    assert (await gateway.client.get("/no/such/path")).status == 404
    text = await (await gateway.client.get("/metrics")).text()
    assert _count(text, ROUTE, "200") == before + 1
    assert _count(text, ROUTE, "404") >= 1
    assert _count(text, "unmatched", "404") >= 1
    assert "/v1/feeds/caltrain/stops/palo_alto" not in text  # never the raw URL
    assert re.search(rf'^tg_http_response_bytes_total{{method="GET",route="{re.escape(ROUTE)}",'
                     r'status="200"} [1-9]', text, re.M)


async def test_metrics_can_be_turned_off(store: Store) -> None:
    on = build_app(Settings.from_env({}), store, SystemClock(), follow_store=False)
    off = build_app(Settings.from_env({"GATEWAY_METRICS": "0"}), store, SystemClock(),
                    follow_store=False)
    assert on[HTTP_METRICS] and not off[HTTP_METRICS]


def test_multiprocess_collection(tmp_path: Path, monkeypatch: Any) -> None:
    """Two processes write to one PROMETHEUS_MULTIPROC_DIR; /metrics sums both."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "stale.db").write_bytes(b"old")
    assert prepare_multiprocess_dir() == tmp_path / "prom"
    assert not (tmp_path / "prom" / "stale.db").exists()
    child = (
        "from gateway.observability.request_metrics import REQUEST_SECONDS\n"
        "REQUEST_SECONDS.labels('/x', 'GET', '200').observe(0.001)\n"
        "import sys\n"
        "from gateway.observability.metrics import _exposition\n"
        "sys.stdout.write(_exposition().decode())\n"
    )
    env = {**os.environ}
    outs = [subprocess.run([sys.executable, "-c", child], env=env, check=True,
                           capture_output=True, text=True).stdout for _ in range(2)]
    assert _count(outs[0], "/x", "200") == 1
    assert _count(outs[1], "/x", "200") == 2


def test_flushed_buckets_match_prometheus_observe() -> None:
    """The per-request counting + flush gives the same bucket counts as Histogram.observe."""
    from gateway.observability.request_metrics import BOUNDS, REQUEST_SECONDS, _Series

    local = REQUEST_SECONDS.labels("/test/flush", "GET", "200")
    reference = REQUEST_SECONDS.labels("/test/observe", "GET", "200")
    series = _Series(local, RESPONSE_BYTES.labels("/test/flush", "GET", "200"))
    from bisect import bisect_left

    for value in (0.0001, 0.0005, 0.0007, 0.002, 3.0, 0.01):
        series.counts[bisect_left(BOUNDS, value)] += 1
        series.seconds += value
        reference.observe(value)
    series.flush()
    assert [b.get() for b in local._buckets] == [b.get() for b in reference._buckets]
    assert local._sum.get() == reference._sum.get()
