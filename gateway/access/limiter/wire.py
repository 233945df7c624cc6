"""What the batcher sends and whom the replies are for.

A caller hands the batcher a ``Pending`` (a share of a batch: a key's coalesced checks, or a
script call of its own); the batcher turns a batch of them into ``Wire`` commands, one
script call each, whose ``packed`` bytes are joined and written at once. Every ``Wire``
knows how to give its reply (or an error) to the callers waiting for it, so the batcher
never looks inside a reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.access.limiter.scripts import Script
from gateway.store.resp import Arg, pack


class Pending:
    """One caller's share of a batch (told the error here; its reply by ``Wire.deliver``)."""

    __slots__ = ()

    def fail(self, error: BaseException) -> None:
        raise NotImplementedError


class Call(Pending):
    """A script call of its own (a signup's GCRA, a hand-back of reserves): its reply, whole,
    goes to ``future``."""

    def __init__(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> None:
        self.script, self.keys, self.args = script, keys, args
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def resolve(self, reply: Any) -> None:
        if not self.future.done():
            self.future.set_result(reply)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class Wire:
    """One command on the wire (``packed``: EVALSHA of ``script``, RESP-encoded) and whom its
    reply is for."""

    __slots__ = ("packed",)
    packed: bytes  # set by each kind of wire

    @property
    def script(self) -> Script:
        raise NotImplementedError

    def command(self) -> tuple[list[Arg], list[Arg]]:
        """Keys and arguments unpacked (the cluster client and EVAL need them)."""
        raise NotImplementedError

    def deliver(self, reply: Any) -> None:
        raise NotImplementedError

    def fail(self, error: BaseException) -> None:
        raise NotImplementedError


class CallWire(Wire):
    """A ``Call`` on the wire alone."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.packed = pack("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
        self.call = call

    @property
    def script(self) -> Script:
        return self.call.script

    def command(self) -> tuple[list[Arg], list[Arg]]:
        return list(self.call.keys), list(self.call.args)

    def deliver(self, reply: Any) -> None:
        self.call.resolve(reply)

    def fail(self, error: BaseException) -> None:
        self.call.fail(error)
