"""String tables that live in shared memory: ids and names of a schedule version.

A national feed has hundreds of thousands of trip ids; as Python ``str`` objects with a dict
to find them they cost every API process tens of megabytes of its own, and the memory of a
host would grow with ``--workers``. A ``StringTable`` keeps its strings as one UTF-8 buffer,
their offsets, and an open-addressing hash table of their positions: four flat arrays that a
memory-mapped version file holds once for every process on the host (``feeds.schedule.codec``).
A string becomes a Python object only when it is read, and finding one costs a CRC32 and a
probe or two, never a Python-level search.

The hash is CRC32 of the UTF-8 bytes: stable across processes (Python's ``hash`` of a ``str``
is salted per process), computed in C.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


class _Strings:
    """``n`` strings (or None, where ``missing`` says so), in the order given.

    Reads like a list; ``find``, and ``get``/``in``/``[key]`` on ``lookup``, find a string's
    position. Built once by ``of``; rebuilt from its arrays by the codec.
    """

    __slots__ = ("_data", "_missing", "_offsets", "_slots", "data", "missing", "offsets",
                 "slots")

    def __init__(self, data: U8, offsets: I64, slots: I32, missing: U8 | None = None) -> None:
        # The arrays, for the codec; memoryviews of them for reads (indexing a memoryview
        # gives a Python int or a slice without numpy's per-item overhead).
        self.data, self.offsets, self.slots, self.missing = data, offsets, slots, missing
        self._data = memoryview(data.data) if len(data) else memoryview(b"")
        self._offsets = memoryview(offsets.data)
        self._slots = memoryview(slots.data)
        self._missing = memoryview(missing.data) if missing is not None else None

    @classmethod
    def _build(cls, values: Iterable[str | None]) -> tuple[U8, I64, I32, U8 | None]:
        encoded: list[bytes] = []
        missing: list[bool] = []
        for value in values:
            missing.append(value is None)
            encoded.append(b"" if value is None else value.encode("utf-8"))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        if encoded:
            np.cumsum([len(b) for b in encoded], out=offsets[1:])
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        size = 8
        while size < 2 * len(encoded):
            size *= 2
        slots = [0] * size  # position + 1; 0: empty
        mask = size - 1
        for i, raw in enumerate(encoded):
            if missing[i]:
                continue
            h = zlib.crc32(raw) & mask
            while slots[h]:
                if encoded[slots[h] - 1] == raw:  # a repeated string: the first one is found
                    break
                h = (h + 1) & mask
            else:
                slots[h] = i + 1
        return (data, offsets, np.array(slots, dtype=np.int32),
                np.array(missing, dtype=np.uint8) if any(missing) else None)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _get(self, i: int) -> str | None:
        offsets = self._offsets
        if self._missing is not None and self._missing[i]:
            return None
        return str(self._data[offsets[i]:offsets[i + 1]], "utf-8")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Strings):
            other = [other._get(i) for i in range(len(other))]
        if isinstance(other, list | tuple):
            return [self._get(i) for i in range(len(self))] == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like a list

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} strings)"

    def find(self, key: str) -> int | None:
        """The position of ``key`` (its first occurrence), or None."""
        raw = key.encode("utf-8")
        slots, data, offsets = self._slots, self._data, self._offsets
        mask = len(slots) - 1
        h = zlib.crc32(raw) & mask
        while True:
            slot = slots[h]
            if not slot:
                return None
            i = slot - 1
            if data[offsets[i]:offsets[i + 1]] == raw:
                return i
            h = (h + 1) & mask

    def index(self, key: Any, start: int = 0, stop: int | None = None) -> int:
        found = self.find(key) if isinstance(key, str) and start == 0 and stop is None else None
        if found is None:
            raise ValueError(f"{key!r} is not in the table")
        return found

    @property
    def lookup(self) -> Lookup:
        return Lookup(self)


class StringTable(_Strings, Sequence[str]):
    """Strings none of which is missing: ids, stop names."""

    __slots__ = ()

    @classmethod
    def of(cls, values: Iterable[str]) -> StringTable:
        built = cls._build(values)
        if built[3] is not None:
            raise ValueError("a StringTable holds no None: use OptionalStrings")
        return cls(*built)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        offsets = self._offsets
        return str(self._data[offsets[i]:offsets[i + 1]], "utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


class OptionalStrings(_Strings, Sequence[str | None]):
    """Strings that may be missing: platform codes, route names, headsigns."""

    __slots__ = ()

    @classmethod
    def of(cls, values: Iterable[str | None]) -> OptionalStrings:
        return cls(*cls._build(values))

    @overload
    def __getitem__(self, i: int) -> str | None: ...
    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...

    def __getitem__(self, i: int | slice) -> str | list[str | None] | None:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(len(self)))]
        return self._get(i if i >= 0 else i + len(self))

    def __iter__(self) -> Iterator[str | None]:
        return (self._get(i) for i in range(len(self)))


class Lookup:
    """A string's position by the string, as a read-only mapping would answer (``get``,
    ``[key]``, ``in``): what ``index_of`` offered when it was a dict."""

    __slots__ = ("table",)

    def __init__(self, table: _Strings) -> None:
        self.table = table

    def get(self, key: str, default: int | None = None) -> int | None:
        found = self.table.find(key)
        return default if found is None else found

    def __getitem__(self, key: str) -> int:
        found = self.table.find(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.table.find(key) is not None

    def __len__(self) -> int:
        return len(self.table)


def strings(values: Iterable[str] | StringTable) -> StringTable:
    return values if isinstance(values, StringTable) else StringTable.of(values)


def optional_strings(values: Iterable[str | None] | OptionalStrings) -> OptionalStrings:
    return values if isinstance(values, OptionalStrings) else OptionalStrings.of(values)
