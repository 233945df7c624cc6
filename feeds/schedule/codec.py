"""A ScheduleIndex as bytes and back: how a version travels through the store and lives on disk.

Layout (``TGIDX2``): the magic, a 4-byte little-endian header length, an orjson header (the
scalars, the small string lists, and the dtype, shape and offset of every array), padding to
64 bytes, then the arrays' raw buffers, each starting on a 64-byte boundary. No pickle: the
store may be shared, and loading must never execute code.

Everything large is an array (string tables too: ``feeds.schedule.strings``), so:

- ``encode_parts`` yields the version as a few dozen buffers without copying the arrays;
  ``chunks`` regroups them into pieces of a bounded size for the store (no stored value is
  ever larger than that, and the whole version is never one ``bytes`` in memory);
- ``decode_index`` builds an index *over* a buffer without copying it: given a memory-mapped
  file, every process of a host reads the same pages (``gateway.replica`` does that).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import orjson

from feeds.schedule.calendar import ServiceCalendar
from feeds.schedule.index import (
    Departures,
    Frequencies,
    Routes,
    ScheduleIndex,
    Shapes,
    Stops,
    StopTimes,
    Trips,
)
from feeds.schedule.strings import OptionalStrings, StringTable

MAGIC = b"TGIDX2"
ALIGN = 64
_NESTED: dict[str, type[Any]] = {
    "calendar": ServiceCalendar,
    "stops": Stops,
    "routes": Routes,
    "trips": Trips,
    "stop_times": StopTimes,
    "departures": Departures,
    "frequencies": Frequencies,
    "shapes": Shapes,
}
_TABLES: dict[str, type[StringTable] | type[OptionalStrings]] = {
    "strings": StringTable, "optional": OptionalStrings}
T = TypeVar("T")
Buffer = bytes | memoryview


class CodecError(ValueError):
    pass


def _pad(n: int) -> int:
    return -n % ALIGN


def encode_parts(index: ScheduleIndex) -> list[Buffer]:
    """The encoded version as buffers in order (header, padding, arrays): their concatenation
    is what ``decode_index`` reads. The arrays are not copied."""
    arrays: list[tuple[str, np.ndarray[Any, Any]]] = []

    def array(key: str, value: np.ndarray[Any, Any]) -> dict[str, str]:
        arrays.append((key, np.ascontiguousarray(value)))
        return {"$arr": key}

    def walk(obj: Any, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            key = prefix + f.name
            if dataclasses.is_dataclass(value):
                out[f.name] = {"$obj": walk(value, key + ".")}
            elif isinstance(value, StringTable | OptionalStrings):
                kind = "strings" if isinstance(value, StringTable) else "optional"
                out[f.name] = {"$str": kind, "data": array(key + ".data", value.data),
                               "offsets": array(key + ".offsets", value.offsets),
                               "slots": array(key + ".slots", value.slots),
                               "missing": (array(key + ".missing", value.missing)
                                           if value.missing is not None else None)}
            elif isinstance(value, np.ndarray):
                out[f.name] = array(key, value)
            else:
                out[f.name] = value
        return out

    tree = walk(index, "")
    descriptors = []
    offset = 0
    for key, arr in arrays:
        descriptors.append({"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape),
                            "offset": offset, "nbytes": arr.nbytes})
        offset += arr.nbytes + _pad(arr.nbytes)
    header = orjson.dumps({"tree": tree, "arrays": descriptors})
    head = MAGIC + struct.pack("<I", len(header)) + header
    parts: list[Buffer] = [head + b"\0" * _pad(len(head))]
    for _, arr in arrays:
        if arr.nbytes:
            parts.append(arr.data.cast("B"))
            if _pad(arr.nbytes):
                parts.append(b"\0" * _pad(arr.nbytes))
    return parts


def encode_index(index: ScheduleIndex) -> bytes:
    """The whole version as one ``bytes`` (small feeds and tests; the store takes ``chunks``)."""
    return b"".join(encode_parts(index))


def chunks(parts: Iterable[Buffer], size: int) -> Iterator[bytes]:
    """``parts`` regrouped into pieces of exactly ``size`` bytes (the last one shorter); one
    piece is built at a time."""
    if size <= 0:
        raise ValueError("chunk size must be positive")
    piece = bytearray()
    for part in parts:
        view = memoryview(part).cast("B")
        while len(view):
            take = min(size - len(piece), len(view))
            piece += view[:take]
            view = view[take:]
            if len(piece) == size:
                yield bytes(piece)
                piece = bytearray()
    if piece:
        yield bytes(piece)


def decode_index(blob: Buffer | Any) -> ScheduleIndex:
    """The index over ``blob`` (bytes, a memoryview or an ``mmap``), sharing its memory.
    Raises CodecError for anything that is not a whole index of this layout."""
    try:
        return _decode(memoryview(blob).cast("B") if not isinstance(blob, memoryview)
                       else blob.cast("B"))
    except CodecError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
        # A damaged blob, or one written by another version of the gateway during a rolling
        # upgrade: refuse it cleanly so the version already loaded keeps serving.
        raise CodecError(f"not a schedule index of this layout: {exc!r}") from exc


def _decode(blob: memoryview) -> ScheduleIndex:
    if len(blob) < len(MAGIC) + 4 or bytes(blob[:len(MAGIC)]) != MAGIC:
        raise CodecError("not a schedule index blob")
    (hlen,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        meta = orjson.loads(bytes(blob[start:start + hlen]))
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"bad index header: {exc}") from exc
    body_at = start + hlen + _pad(start + hlen)
    body = blob[body_at:]
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for d in meta["arrays"]:
        if d["offset"] + d["nbytes"] > len(body):
            raise CodecError(f"array {d['key']} runs past the end: a truncated version")
        chunk = body[d["offset"]:d["offset"] + d["nbytes"]]
        arrays[d["key"]] = np.frombuffer(chunk, dtype=np.dtype(d["dtype"])).reshape(d["shape"])

    def build(cls: type[T], node: dict[str, Any]) -> T:
        kwargs: dict[str, Any] = {}
        for name, value in node.items():
            if isinstance(value, dict) and "$obj" in value:
                kwargs[name] = build(_NESTED[name], value["$obj"])
            elif isinstance(value, dict) and "$str" in value:
                missing = value["missing"]
                kwargs[name] = _TABLES[value["$str"]](
                    arrays[value["data"]["$arr"]], arrays[value["offsets"]["$arr"]],
                    arrays[value["slots"]["$arr"]],
                    arrays[missing["$arr"]] if missing is not None else None)
            elif isinstance(value, dict) and "$arr" in value:
                kwargs[name] = arrays[value["$arr"]]
            else:
                kwargs[name] = value
        return cls(**kwargs)

    return build(ScheduleIndex, meta["tree"])
