"""Serialise a ScheduleIndex to bytes and back, for publishing a version through the store.

Layout: ``TGIDX1`` magic, 4-byte little-endian header length, an orjson header (scalars, string
tables, and the dtype/shape/offset of each array), then the raw array buffers. No pickle: the
store may be shared, and loading must never execute code.
"""

from __future__ import annotations

import dataclasses
import struct
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

MAGIC = b"TGIDX1"
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
T = TypeVar("T")


class CodecError(ValueError):
    pass


def encode_index(index: ScheduleIndex) -> bytes:
    arrays: list[tuple[str, np.ndarray[Any, Any]]] = []

    def walk(obj: Any, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            key = prefix + f.name
            if dataclasses.is_dataclass(value):
                out[f.name] = {"$obj": walk(value, key + ".")}
            elif isinstance(value, np.ndarray):
                arrays.append((key, np.ascontiguousarray(value)))
                out[f.name] = {"$arr": key}
            else:
                out[f.name] = value
        return out

    tree = walk(index, "")
    descriptors = []
    offset = 0
    for key, arr in arrays:
        descriptors.append({"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape),
                            "offset": offset, "nbytes": arr.nbytes})
        offset += arr.nbytes
    header = orjson.dumps({"tree": tree, "arrays": descriptors})
    parts = [MAGIC, struct.pack("<I", len(header)), header]
    parts.extend(arr.tobytes() for _, arr in arrays)
    return b"".join(parts)


def decode_index(blob: bytes) -> ScheduleIndex:
    """Raises CodecError for anything that is not a whole index of this layout."""
    try:
        return _decode(blob)
    except CodecError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
        # A damaged blob, or one written by another version of the gateway during a rolling
        # upgrade: refuse it cleanly so the version already loaded keeps serving.
        raise CodecError(f"not a schedule index of this layout: {exc!r}") from exc


def _decode(blob: bytes) -> ScheduleIndex:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise CodecError("not a schedule index blob")
    (hlen,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        meta = orjson.loads(blob[start : start + hlen])
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"bad index header: {exc}") from exc
    body = memoryview(blob)[start + hlen :]
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for d in meta["arrays"]:
        chunk = body[d["offset"] : d["offset"] + d["nbytes"]]
        arrays[d["key"]] = np.frombuffer(chunk, dtype=np.dtype(d["dtype"])).reshape(d["shape"])

    def build(cls: type[T], node: dict[str, Any]) -> T:
        kwargs: dict[str, Any] = {}
        for name, value in node.items():
            if isinstance(value, dict) and "$obj" in value:
                kwargs[name] = build(_NESTED[name], value["$obj"])
            elif isinstance(value, dict) and "$arr" in value:
                kwargs[name] = arrays[value["$arr"]]
            else:
                kwargs[name] = value
        return cls(**kwargs)

    return build(ScheduleIndex, meta["tree"])
