"""Ingest jobs: a static ingest asked for over HTTP by an API process, run by an ingest one.

An API process (``--role api``) does not build a version itself (gigabytes at national size):
it writes the job (``tg:job:<id>``, JSON, kept a day) and pushes its id on ``tg:jobs``; one
ingest process takes it (``BRPOP``: each job goes to exactly one) and records the outcome in
the job. Every command names one key.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.store.connection import StoreConnection
from gateway.store.names import JOBS_KEY, job_key

JOB_TTL_S = 86_400


class JobRecords(StoreConnection):
    """``tg:jobs`` (the queue) and ``tg:job:<id>`` (each job's record)."""

    async def enqueue_job(self, job_id: str, record: dict[str, Any]) -> None:
        await self._call("set", job_key(job_id), orjson.dumps(record), ex=JOB_TTL_S)
        await self._call("lpush", JOBS_KEY, job_id)

    async def next_job(self, wait_s: int) -> str | None:
        """The next job's id, waiting up to ``wait_s`` seconds for one."""
        popped = await self._call("brpop", [JOBS_KEY], timeout=wait_s)
        return None if popped is None else bytes(popped[1]).decode()

    async def job(self, job_id: str) -> dict[str, Any] | None:
        raw = await self._call("get", job_key(job_id))
        return None if raw is None else dict(orjson.loads(raw))

    async def put_job(self, job_id: str, record: dict[str, Any]) -> None:
        await self._call("set", job_key(job_id), orjson.dumps(record), ex=JOB_TTL_S)
