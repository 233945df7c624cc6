"""The limiter's Lua scripts (``lua/*.lua``), read once at import, with their SHA1s.

Kept as ``.lua`` files so that they read, diff and lint as Lua rather than as Python strings.
They are sent by SHA1 (``EVALSHA``): a store that does not know a script yet (first use, or
it restarted) answers NOSCRIPT, and the batcher sends that command again as ``EVAL``, which
loads the script (``gateway.access.limiter.batcher``).

- ``CHECK``: authenticates and counts the requests of a whole batch, key after key;
- ``RETURN``: hands back what ended reserves did not use;
- ``GCRA``: one GCRA on one key (signups per client IP).

Store time: each script call carries one argument for "now" in the store's clock (us). In
production it is empty and the script reads the store's ``TIME`` (so process clocks do not
matter); a limiter built with a ``store_clock`` (tests) passes that clock's instant instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from gateway.store.resp import Arg, bulk


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    text: str
    sha: str  # hex SHA1 of ``text``: the name EVALSHA knows it by


def _load(name: str) -> Script:
    text = files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return Script(name, text, hashlib.sha1(text.encode()).hexdigest())


CHECK = _load("check")
RETURN = _load("return")
GCRA = _load("gcra")


STORE_TIME = b""  # the store-time argument that means "the store's TIME" (production)
STORE_TIME_BULK = bulk(STORE_TIME)


def store_now_arg(store_clock: Callable[[], int] | None) -> Arg:
    """A script call's store-time argument: empty (the script reads ``TIME``), or the instant
    ``store_clock`` gives (us) when the limiter was built with one."""
    return STORE_TIME if store_clock is None else store_clock()


def no_script(reply: Any) -> bool:
    """Whether the store answered NOSCRIPT (it does not know the script: nothing ran)."""
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"))
