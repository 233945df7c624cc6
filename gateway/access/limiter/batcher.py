"""Sending the limiter's script calls in batches, on a connection of our own.

Calls wait in ``pending`` until the batch on the wire comes back (``max_inflight``), so that
requests arriving meanwhile make the next batch bigger; a batch's key checks go as one
script call. The breaker is told every batch's outcome here. A store that answers NOSCRIPT
gets the command again as EVAL (``gateway.access.limiter.scripts``); on a Redis Cluster or
over TLS the batch goes through redis-py instead of ``RespConnection``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import SSLConnection
from redis.exceptions import RedisError

from gateway.access.limiter.breaker import CircuitBreaker
from gateway.access.limiter.checks import CheckGroup, ChecksWire
from gateway.access.limiter.scripts import no_script
from gateway.access.limiter.wire import Call, CallWire, Pending, Wire
from gateway.errors import StoreUnavailable
from gateway.observability import metrics
from gateway.store.resp import RespConnection, address_of
from gateway.store.store import Store

log = logging.getLogger(__name__)


class Batcher:
    """Sends waiting calls in batches, at most ``max_inflight`` on the wire at once (so that
    requests arriving meanwhile make the next batch bigger); the key checks of one batch go
    as one script call (per Cluster slot on a cluster). Batches go on one ``RespConnection``
    of our own (``gateway.store.resp``), without a task or a future per batch; on a cluster or
    over TLS through redis-py. The breaker learns every batch's outcome here, whether or not
    its callers still wait (``monotonic`` dates its failures)."""

    def __init__(self, store: Store, breaker: CircuitBreaker, timeout: float,
                 monotonic: Callable[[], float] = time.monotonic, max_batch: int = 512,
                 max_inflight: int = 1) -> None:
        self.store = store
        self.breaker = breaker
        self.monotonic = monotonic
        self.timeout = timeout
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        pool = store.client.connection_pool if not store.cluster else None
        self._address = (None if pool is None else address_of(
            pool.connection_kwargs, issubclass(pool.connection_class, SSLConnection)))
        self._conn: RespConnection | None = None
        self._closed = False
        self._pending: list[Pending] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, call: Pending) -> None:
        self._pending.append(call)
        if not self._scheduled and self._inflight < self.max_inflight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)  # this loop turn joins in

    def _start(self) -> None:
        self._scheduled = False
        while self._pending and self._inflight < self.max_inflight:
            batch, self._pending = (self._pending[:self.max_batch],
                                    self._pending[self.max_batch:])
            self._inflight += 1
            wires = self._wires(batch)
            conn = self._conn
            if self._closed:
                self._finish(wires, StoreUnavailable("the limiter is closed"), time.perf_counter())
            elif conn is not None and not conn.closed:
                self._send_raw(conn, wires)
            else:  # connect first, or go through redis-py (cluster, TLS)
                self._spawn(self._send(wires))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wires(self, batch: list[Pending]) -> list[Wire]:
        """The batch as commands: the calls of their own first, then the key checks. So a
        reserve's hand-back goes before the check of the key whose request ended it, and that
        check sees what came back (and no reserve of its own process still held). On a
        cluster both go to the key's node, which runs them in this order too."""
        wires: list[Wire] = []
        checks: list[Wire] = []
        by_table: dict[str, list[CheckGroup]] = {}
        for pending in batch:
            if isinstance(pending, CheckGroup):
                if self.store.cluster:  # a script's keys must share a slot: one call per key
                    checks.append(ChecksWire([pending]))
                else:
                    by_table.setdefault(pending.table, []).append(pending)
            elif isinstance(pending, Call):
                wires.append(CallWire(pending))
        wires += checks
        wires += [ChecksWire(groups) for groups in by_table.values()]
        return wires

    def _send_raw(self, conn: RespConnection, wires: list[Wire]) -> None:
        started = time.perf_counter()

        def done(replies: list[Any] | BaseException) -> None:
            if isinstance(replies, BaseException):
                self._finish(wires, replies, started)
            elif any(no_script(r) for r in replies):  # first use, or the store restarted
                self._spawn(self._load_scripts(wires, replies, started))
            else:
                self._finish(wires, replies, started)

        conn.send(b"".join([wire.packed for wire in wires]), len(wires), done)

    async def _send(self, wires: list[Wire]) -> None:
        started = time.perf_counter()
        try:
            if self._address is None:
                replies: list[Any] | BaseException = await self._execute(wires)
            else:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = await RespConnection.open(self._address, self.timeout)
                    if self._closed:
                        conn.close()
                        raise StoreUnavailable("the limiter is closed")
                    if self._conn is not None and not self._conn.closed:
                        conn.close()  # another batch connected meanwhile: one is enough
                        conn = self._conn
                    self._conn = conn
                self._send_raw(conn, wires)
                return
        except BaseException as exc:  # every waiting request must get an answer, even when
            self._finish(wires, exc, started)  # this task is cancelled (the loop shuts down)
            if not isinstance(exc, Exception):
                raise
            return
        self._finish(wires, replies, started)

    async def _load_scripts(self, wires: list[Wire], replies: list[Any],
                            started: float) -> None:
        """The commands the store answered NOSCRIPT go again as EVAL (which loads the
        script); nothing of theirs ran, so sending them again counts nothing twice."""
        try:
            await self._eval_missing(wires, replies)
        except BaseException as exc:  # as in _send: answer everyone, then let cancelling on
            self._finish(wires, exc, started)
            if not isinstance(exc, Exception):
                raise
        else:
            self._finish(wires, replies, started)

    def _finish(self, wires: list[Wire], replies: list[Any] | BaseException,
                started: float) -> None:
        try:
            if isinstance(replies, BaseException):
                self.breaker.failure(self.monotonic())
                error: BaseException = replies
                if isinstance(replies, (RedisError, OSError)):
                    error = StoreUnavailable(f"store error: {replies}")
                for wire in wires:
                    wire.fail(error)
                return
            self.breaker.success()
            metrics.LIMITER_SECONDS.observe(time.perf_counter() - started)
            for wire, reply in zip(wires, replies, strict=True):
                if isinstance(reply, Exception):
                    wire.fail(StoreUnavailable(f"store error: {reply}"))
                    continue
                try:
                    wire.deliver(reply)
                except Exception:  # a reply we cannot read must not strand its requests
                    log.exception("unreadable limiter reply: %.200r", reply)
                    wire.fail(StoreUnavailable("unreadable reply from the store"))
        finally:
            self._inflight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._start)

    async def _execute(self, wires: list[Wire]) -> list[Any]:
        """Each command as EVAL of its script's text, in one redis-py pipeline (cluster,
        TLS). Not EVALSHA: a node that does not know a script yet answers NOSCRIPT, and the
        command sent again would run after the ones behind it, so a reserve's hand-back could
        come after the check it must precede (seen on a cluster, where every node, a
        promoted replica too, loads the scripts anew)."""
        pipe = self.store.client.pipeline(transaction=False)
        for wire in wires:
            keys, args = wire.command()
            pipe.eval(wire.script.text, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def _eval_missing(self, wires: list[Wire], replies: list[Any]) -> None:
        missing = [i for i, r in enumerate(replies) if no_script(r)]
        if missing:
            pipe = self.store.client.pipeline(transaction=False)
            for i in missing:
                keys, args = wires[i].command()
                pipe.eval(wires[i].script.text, len(keys), *keys, *args)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False),
                                strict=True):
                replies[i] = reply

    async def close(self) -> None:
        """Close the connection and stop the batches still connecting; nothing is sent after
        this (later checks fail with 503)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
