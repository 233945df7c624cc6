"""Static ingests asked for over HTTP in an API process (``--role api``) are queued for an
ingest process, never built where requests are served: 202 with the job's URL, the job's
state and outcome, and the feed served once an ingest process has run it.

A real store (the suite's own servers); the "ingest process" is a ``JobRunner`` with a
``FeedService`` of its own, as ``serve --role ingest`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import GTFS
from test_keys_operator import bearer, make_client

from gateway.clock import FixedClock, parse_instant
from gateway.ingest import static_build
from gateway.ingest.feed_service import FeedService
from gateway.ingest.jobs import JobRunner
from gateway.settings import Settings
from gateway.store.store import Store

CALTRAIN = str(GTFS / "caltrain-2023.zip")


async def _run_queued(store: Store, tmp_path: Path) -> str:
    """What an ingest process does with the next job; the job's id."""
    clock = FixedClock(parse_instant("2023-11-07T17:05:00-08:00"))
    service = FeedService(store, Settings(role="ingest", allow_private_urls=True,
                                          versions_dir=tmp_path / "ingest-host"), clock)
    job_id = await store.next_job(1)
    assert job_id is not None, "no job was queued"
    await JobRunner(store, service, clock).run_one(job_id)
    return job_id


async def test_an_api_process_queues_the_ingest_for_an_ingest_process(
        store: Store, aiohttp_client: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, operator, developer = await make_client(
        store, aiohttp_client, role="api", allow_private_urls=True,
        versions_dir=tmp_path / "api-host")
    built_here: list[Path] = []
    build = static_build.build

    async def noted(source: Path, *args: Any) -> Any:
        built_here.append(source)
        return await build(source, *args)

    monkeypatch.setattr(static_build, "build", noted)

    resp = await client.post("/v1/feeds", json={"id": "queued", "static": CALTRAIN},
                             headers=bearer(operator))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    job = body["job"]
    assert job["state"] == "queued" and job["action"] == "add" and job["feed"] == "queued"
    assert resp.headers["Location"] == job["url"] == f"/v1/feeds/queued/jobs/{job['id']}"
    assert "config" not in job  # operators' headers may hold secrets
    assert await store.feed_config("queued") is None  # nothing registered before the ingest

    resp = await client.get(job["url"], headers=bearer(operator))
    assert resp.status == 200 and (await resp.json())["state"] == "queued"
    resp = await client.get(job["url"], headers={"X-API-Key": developer})
    assert resp.status == 403

    assert built_here == []  # answering the API calls built nothing
    assert await _run_queued(store, tmp_path) == job["id"]
    assert built_here == [Path(CALTRAIN)]  # the ingest process did
    resp = await client.get(job["url"], headers=bearer(operator))
    done = await resp.json()
    assert done["state"] == "done", done
    assert done["result"]["static"]["counts"]["trips"] > 0
    assert done["finished_at"] >= done["started_at"] >= done["requested_at"]
    assert await store.feed_config("queued") is not None

    # a feed that exists: answered at once, nothing queued
    resp = await client.post("/v1/feeds", json={"id": "queued", "static": CALTRAIN},
                             headers=bearer(operator))
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "feed_exists"
    assert await store.next_job(1) is None

    # PATCH queues a replace
    resp = await client.patch("/v1/feeds/queued", json={"poll_seconds": 30},
                              headers=bearer(operator))
    assert resp.status == 202
    replace = (await resp.json())["job"]
    assert replace["action"] == "replace"
    await _run_queued(store, tmp_path)
    resp = await client.get(replace["url"], headers=bearer(operator))
    assert (await resp.json())["state"] == "done"
    assert (await store.feed_config("queued") or {})["poll_seconds"] == 30


async def test_a_refused_queued_ingest_is_reported_and_registers_nothing(
        store: Store, aiohttp_client: Any, tmp_path: Path) -> None:
    client, operator, _ = await make_client(store, aiohttp_client, role="api",
                                            allow_private_urls=True)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    resp = await client.post("/v1/feeds", json={"id": "refused", "static": str(bad)},
                             headers=bearer(operator))
    assert resp.status == 202
    url = (await resp.json())["job"]["url"]
    await _run_queued(store, tmp_path)
    failed = await (await client.get(url, headers=bearer(operator))).json()
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "static_feed_rejected"
    assert [p["code"] for p in failed["error"]["problems"]] == ["not_a_zip"]
    assert await store.feed_config("refused") is None

    resp = await client.get("/v1/feeds/refused/jobs/0000000000000000",
                            headers=bearer(operator))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "job_not_found"
