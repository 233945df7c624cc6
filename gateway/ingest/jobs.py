"""Ingest jobs: static ingests asked for over HTTP in an API process, run in an ingest one.

``POST``/``PATCH /v1/feeds`` in a process of ``--role api`` must not build a version there (at
national size that is gigabytes and tens of seconds inside a serving process): the route
checks what it can answer at once (the config, 409 for a feed that exists, 404 for one that
does not), queues a job (``gateway.store.job_records``) and answers 202 with the job's URL.
A ``JobRunner`` in every process of ``--role ingest`` or ``all`` takes jobs one at a time and
runs them exactly as the synchronous routes do (``FeedService.add``), recording the outcome:
``done`` with what was ingested, or ``failed`` with the error body a synchronous call would
have answered.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from gateway.clock import Clock
from gateway.errors import ApiError, StoreUnavailable
from gateway.feed_config import FeedConfig
from gateway.ingest.feed_service import FeedService, IngestResult, iso_utc
from gateway.store.store import Store

log = logging.getLogger(__name__)
WAIT_S = 2  # a BRPOP's wait: how soon a stopping runner notices


def ingested(config: FeedConfig, result: IngestResult) -> dict[str, Any]:
    """What an ingest answers, over HTTP at once or in a job's outcome."""
    return {"feed": config.public(), "version": result.version, "changed": result.changed,
            "seconds": round(result.seconds, 3), "static": result.status.get("static")}


async def enqueue(store: Store, clock: Clock, config: FeedConfig, replace: bool
                  ) -> dict[str, Any]:
    """Queue the ingest of ``config`` (a new feed, or a replaced config); the job's record."""
    job_id = secrets.token_hex(8)
    record = {"id": job_id, "feed": config.id, "action": "replace" if replace else "add",
              "config": config.to_json(), "state": "queued",
              "requested_at": iso_utc(clock.now())}
    await store.enqueue_job(job_id, record)
    return record


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it (the config without its secrets)."""
    shown = {k: v for k, v in record.items() if k != "config"}
    shown["url"] = f"/v1/feeds/{record['feed']}/jobs/{record['id']}"
    return shown


class JobRunner:
    """Takes queued jobs one at a time, until cancelled; never dies on a failed job or a
    store outage."""

    def __init__(self, store: Store, service: FeedService, clock: Clock) -> None:
        self.store, self.service, self.clock = store, service, clock

    async def run(self) -> None:
        while True:
            try:
                job_id = await self.store.next_job(WAIT_S)
                if job_id is not None:
                    await self.run_one(job_id)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("ingest jobs: store unavailable (%s); retrying", exc.message)
                await asyncio.sleep(1.0)

    async def run_one(self, job_id: str) -> None:
        record = await self.store.job(job_id)
        if record is None:
            return  # expired before anyone took it
        record.update(state="running", started_at=iso_utc(self.clock.now()))
        await self.store.put_job(job_id, record)
        try:
            config = FeedConfig.from_json(record["config"])
            result = await self.service.add(config, replace=record["action"] == "replace")
        except ApiError as exc:
            record.update(state="failed", error=exc.body()["error"])
        except Exception as exc:
            log.exception("ingest job %s failed", job_id)
            record.update(state="failed", error={"code": "internal_error",
                                                 "message": f"{type(exc).__name__}: {exc}"})
        else:
            record.update(state="done", result=ingested(config, result))
        record["finished_at"] = iso_utc(self.clock.now())
        await self.store.put_job(job_id, record)
