"""The limiter's Lua scripts (``lua/*.lua``), read once at import, with their SHA1s.

Kept as ``.lua`` files so that they read, diff and lint as Lua rather than as Python strings.
They are sent by SHA1 (``EVALSHA``): a store that does not know a script yet (first use, or
it restarted) answers NOSCRIPT, and the batcher sends that command again as ``EVAL``, which
loads the script (``gateway.access.limiter.batcher``).

- ``CHECK``: authenticates and counts the requests of a whole batch, key after key;
- ``RETURN``: hands back what ended reserves did not use;
- ``GCRA``: one GCRA on one key (signups per client IP).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.exceptions import NoScriptError, ResponseError


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


def no_script(reply: Any) -> bool:
    """Whether the store answered NOSCRIPT (it does not know the script: nothing ran)."""
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"))
