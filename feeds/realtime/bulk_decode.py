"""StopTimeUpdates decoded in bulk: what makes decoding a national-size snapshot cheap.

Read one by one through protobuf's Python objects, a StopTimeUpdate costs a dozen attribute
reads and HasField calls (~4 µs; MTA's 90,879 buses' updates: 0.4 s). Here the StopTimeUpdates
of a whole message are read column-wise instead:

1. a *view* of the FeedMessage (same wire format, other declared types, in a pool of its own)
   hands each TripUpdate's StopTimeUpdates over as their bytes, exactly as protobuf delimits
   them;
2. StopTimeUpdates with the same layout (which fields, in which order, how each StopTimeEvent
   is made) are recognised together by one regular expression per layout, which mirrors the
   wire format byte for byte (tags, varints, lengths): a StopTimeUpdate it matches is read by
   protobuf exactly as the columns below read it;
3. the StopTimeUpdates of one layout are concatenated and parsed once as a message whose
   fields are all repeated (concatenated messages merge, repeated fields append): protobuf
   returns each field as one list, StopTimeEvents as packed varints [tag, value, ...];
4. our NamedTuples are made from the columns by ``map`` (no Python code per update), and equal
   StopTimeEvents are made once.

A StopTimeUpdate that no layout matches (an empty or repeated field, another field, an unusual
varint) leaves its TripUpdate to the plain decoder (``None`` in the result): the output is the
same either way, only its cost differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import compress, repeat
from operator import not_
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.transit import gtfs_realtime_pb2 as pb

from feeds.realtime.model import StopTimeEvent, StopTimeUpdate

# Wire tags (field number << 3 | wire type) of StopTimeUpdate and StopTimeEvent fields.
SEQ, ARRIVAL, DEPARTURE, STOP_ID, RELATIONSHIP = 0x08, 0x12, 0x1A, 0x22, 0x28
DELAY, TIME, UNCERTAINTY, SCHEDULED_TIME = 0x08, 0x10, 0x18, 0x20
# Varint lengths a layout's expression accepts per StopTimeEvent field (others: plain decoder).
# An int32 delay takes 1-5 bytes, 10 when negative; POSIX times from 1978 to 3058 take 5.
_EVENT_VARINT_LENGTHS = {DELAY: (1, 2, 3, 4, 5, 10), TIME: (5,), UNCERTAINTY: (1, 2, 3, 4, 5),
                         SCHEDULED_TIME: (5,)}
_MAX_LAYOUTS = 24  # per message; StopTimeUpdates beyond go to the plain decoder
_MAX_MISSES = 64  # updates of no readable layout looked at before giving up on the rest
_STU_REL = {v.number: v.name for v in
            pb.TripUpdate.StopTimeUpdate.ScheduleRelationship.DESCRIPTOR.values}
_new = tuple.__new__


def _view_classes() -> dict[str, Any]:
    """Copies of gtfs-realtime messages with some fields retyped (see the module docstring);
    every other field keeps its real type, so these accept and refuse what protobuf does."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb))
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="transit_gateway_view.proto", package="transit_gateway_view", syntax="proto2",
        dependency=[pb.DESCRIPTOR.name])

    def message(name: str, real: Any, changed: dict[str, tuple[int, int, str]]) -> None:
        m = file.message_type.add(name=name)
        for field in real.fields:
            out = m.field.add(name=field.name, number=field.number, type=field.type,
                              label=f.LABEL_REPEATED if field.is_repeated else f.LABEL_OPTIONAL)
            if field.message_type is not None:
                out.type_name = "." + field.message_type.full_name
            elif field.enum_type is not None:
                out.type_name = "." + field.enum_type.full_name
            if field.name in changed:
                out.type, out.label, type_name = changed[field.name]
                out.ClearField("type_name")
                if type_name:
                    out.type_name = type_name
                out.options.packed = out.type == f.TYPE_INT64
            elif name == "Columns":
                out.label = f.LABEL_REPEATED

    repeated, optional = f.LABEL_REPEATED, f.LABEL_OPTIONAL
    view = ".transit_gateway_view."
    message("Columns", pb.TripUpdate.StopTimeUpdate.DESCRIPTOR,
            {"arrival": (f.TYPE_INT64, repeated, ""), "departure": (f.TYPE_INT64, repeated, "")})
    message("TripUpdate", pb.TripUpdate.DESCRIPTOR,
            {"stop_time_update": (f.TYPE_BYTES, repeated, "")})
    message("FeedEntity", pb.FeedEntity.DESCRIPTOR,
            {"trip_update": (f.TYPE_MESSAGE, optional, view + "TripUpdate")})
    message("FeedMessage", pb.FeedMessage.DESCRIPTOR,
            {"entity": (f.TYPE_MESSAGE, repeated, view + "FeedEntity")})
    pool.Add(file)
    found = pool.FindFileByName(file.name).message_types_by_name
    return {name: message_factory.GetMessageClass(found[name])
            for name in ("Columns", "TripUpdate", "FeedEntity", "FeedMessage")}


_VIEW = _view_classes()
# FeedMessage / FeedEntity whose TripUpdates hold their StopTimeUpdates as bytes.
ViewFeedMessage: Any = _VIEW["FeedMessage"]
ViewFeedEntity: Any = _VIEW["FeedEntity"]
_Columns: Any = _VIEW["Columns"]


class Layout(NamedTuple):
    """Which fields a StopTimeUpdate has, in wire order; an event as its fields' tags."""

    seq: bool
    arrival: tuple[int, ...] | None
    departure: tuple[int, ...] | None
    stop_id: bool
    relationship: bool


def _varint_end(buf: bytes, i: int) -> int:
    """Where the varint at ``i`` ends; -1 when it runs off the end or past 10 bytes."""
    for k in range(i, min(len(buf), i + 10)):
        if buf[k] < 0x80:
            return k + 1
    return -1


def _event_tags(content: bytes) -> tuple[int, ...] | None:
    tags: list[int] = []
    i = 0
    while i < len(content):
        tag = content[i]
        if tag not in _EVENT_VARINT_LENGTHS or (tags and tag <= tags[-1]):
            return None
        end = _varint_end(content, i + 1)
        if end < 0 or end - i - 1 not in _EVENT_VARINT_LENGTHS[tag]:
            return None
        tags.append(tag)
        i = end
    return tuple(tags) if tags else None


def layout_of(stu: bytes) -> Layout | None:
    """The layout of one StopTimeUpdate's bytes, if it is one the bulk path reads."""
    i, n = 0, len(stu)
    seq = stop_id = relationship = False
    events: dict[int, tuple[int, ...] | None] = {ARRIVAL: None, DEPARTURE: None}
    if i < n and stu[i] == SEQ:
        i = _varint_end(stu, i + 1)
        if i < 0:
            return None
        seq = True
    for tag in (ARRIVAL, DEPARTURE):
        if i + 1 < n and stu[i] == tag:
            length = stu[i + 1]
            if not 0 < length < 0x80 or i + 2 + length > n:
                return None
            events[tag] = _event_tags(stu[i + 2:i + 2 + length])
            if events[tag] is None:
                return None
            i += 2 + length
    if i + 1 < n and stu[i] == STOP_ID:
        length = stu[i + 1]
        if length >= 0x80:
            return None
        i += 2 + length
        stop_id = True
    if i + 1 < n and stu[i] == RELATIONSHIP and stu[i + 1] in _STU_REL:
        i += 2
        relationship = True
    if i != n:
        return None
    return Layout(seq, events[ARRIVAL], events[DEPARTURE], stop_id, relationship)


def _varint(k: int) -> str:
    """A varint of exactly k bytes."""
    return r"[\x80-\xff]" * (k - 1) + r"[\x00-\x7f]"


def _event_pattern(tags: tuple[int, ...]) -> str:
    """One alternative per combination of varint lengths, each spelling out its length byte:
    the expression then delimits the event exactly as protobuf does."""
    alternatives: list[tuple[int, str]] = []

    def walk(k: int, size: int, body: str) -> None:
        if k == len(tags):
            alternatives.append((size, re.escape(bytes([size])).decode("latin-1") + body))
            return
        for length in _EVENT_VARINT_LENGTHS[tags[k]]:
            walk(k + 1, size + 1 + length,
                 body + re.escape(bytes([tags[k]])).decode("latin-1") + _varint(length))

    walk(0, 0, "")
    return "(?:" + "|".join(p for size, p in sorted(alternatives) if size < 0x80) + ")"


_STOP_ID_PATTERN = "(?:" + "|".join(
    re.escape(bytes([n])).decode("latin-1") + f".{{{n}}}" for n in range(0x80)) + ")"


@lru_cache(maxsize=256)
def _pattern(layout: Layout) -> Callable[[bytes], Any]:
    """The ``fullmatch`` of the expression that matches exactly the StopTimeUpdates of
    ``layout`` (the same fields, in the same order, no other)."""
    parts = []
    if layout.seq:
        parts.append(r"\x08[\x80-\xff]{0,9}[\x00-\x7f]")
    if layout.arrival is not None:
        parts.append(r"\x12" + _event_pattern(layout.arrival))
    if layout.departure is not None:
        parts.append(r"\x1a" + _event_pattern(layout.departure))
    if layout.stop_id:
        parts.append(r'"' + _STOP_ID_PATTERN)
    if layout.relationship:
        parts.append(r"\(" + "[" + "".join(re.escape(chr(v)) for v in sorted(_STU_REL)) + "]")
    expression = re.compile("".join(parts).encode("latin-1"), re.DOTALL)
    return expression.fullmatch


def _int32(values: list[int]) -> list[int]:
    """int64 varints read as int32, as protobuf reads them (the low 32 bits, signed)."""
    if not values or (min(values) >= -0x80000000 and max(values) < 0x80000000):
        return values
    return [((v & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000 for v in values]


def _events(column: list[int], tags: tuple[int, ...] | None, count: int,
            cache: dict[Any, StopTimeEvent]) -> list[StopTimeEvent | None]:
    """The events of ``count`` updates from their packed column: ``tags`` pairs per event.
    Equal events are made once (``cache``: by time alone when no event has a delay, which
    saves a tuple per event)."""
    if tags is None:
        return [None] * count
    stride = 2 * len(tags)
    times: Sequence[int | None] = [None] * count
    delays: Sequence[int | None] | None = None
    for k, tag in enumerate(tags):
        if tag == TIME:
            times = column[2 * k + 1::stride]
        elif tag == DELAY:
            delays = _int32(column[2 * k + 1::stride])
    keys: Sequence[Any] = times if delays is None else list(zip(times, delays, strict=True))
    for key in set(keys).difference(cache):
        # An int key is a time without delay; a tuple key is the event's (time, delay).
        cache[key] = _new(StopTimeEvent, (key, None) if delays is None else key)
    return list(map(cache.__getitem__, keys))


def _build(stus: list[bytes], layout: Layout,
           cache: dict[Any, StopTimeEvent]) -> list[StopTimeUpdate]:
    """The StopTimeUpdates of one layout, from their concatenated bytes."""
    count = len(stus)
    columns = _Columns.FromString(b"".join(stus))
    seqs = columns.stop_sequence[:] if layout.seq else [None] * count
    stop_ids = columns.stop_id[:] if layout.stop_id else [None] * count
    relationships = (list(map(_STU_REL.__getitem__, columns.schedule_relationship[:]))
                     if layout.relationship else ["SCHEDULED"] * count)
    arrivals = columns.arrival[:]
    arrival = _events(arrivals, layout.arrival, count, cache)
    if layout.departure == layout.arrival and columns.departure[:] == arrivals:
        departure = arrival  # the same events
    else:
        departure = _events(columns.departure[:], layout.departure, count, cache)
    return list(map(_new, repeat(StopTimeUpdate),
                    zip(seqs, stop_ids, arrival, departure, relationships, strict=True)))


def stop_time_updates(per_trip: list[list[bytes]]
                      ) -> list[tuple[StopTimeUpdate, ...] | None]:
    """Each TripUpdate's StopTimeUpdates (given as their bytes), or None for a TripUpdate the
    plain decoder must read. A StopTimeUpdate that protobuf would refuse is never accepted
    here: its TripUpdate gets None, and the plain decoder refuses it."""
    stus = [stu for trip in per_trip for stu in trip]
    total = len(stus)
    built: list[StopTimeUpdate | None] = [None] * total
    pending = list(range(total))  # positions not matched by a layout yet, and their bytes
    pending_stus = stus
    unreadable: list[int] = []
    cache: dict[Any, StopTimeEvent] = {}
    tried: set[Layout] = set()
    misses = 0  # updates of no readable layout met so far
    while pending and len(tried) < _MAX_LAYOUTS and misses < _MAX_MISSES:
        # The first pending update has a layout not tried yet (every update of a tried layout
        # matched it), unless it has none the bulk path reads: those stay for the plain path.
        layout = layout_of(pending_stus[0])
        if layout is None:
            misses += 1
            unreadable.append(pending.pop(0))
            pending_stus = pending_stus[1:]
            continue
        tried.add(layout)
        matches = list(map(bool, map(_pattern(layout), pending_stus)))
        group = _build(list(compress(pending_stus, matches)), layout, cache)
        if len(group) == total:
            built = list[StopTimeUpdate | None](group)
            pending = []
            break
        for position, update in zip(compress(pending, matches), group, strict=True):
            built[position] = update
        others = list(map(not_, matches))
        pending = list(compress(pending, others))
        pending_stus = list(compress(pending_stus, others))
    unreadable.extend(pending)
    left = set(unreadable)
    out: list[tuple[StopTimeUpdate, ...] | None] = []
    start = 0
    for trip in per_trip:
        end = start + len(trip)
        if left and not left.isdisjoint(range(start, end)):
            out.append(None)
        else:
            out.append(tuple(built[start:end]))  # type: ignore[arg-type]  # all built
        start = end
    return out
