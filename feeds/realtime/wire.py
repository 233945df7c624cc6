"""FeedMessage bytes split into entities at the protobuf wire level, without parsing them.

What makes an incremental snapshot cheap: an entity whose bytes did not change since the last
snapshot is recognised by its bytes and never decoded (``decode.entity_trip_updates``). Field
numbers are those of gtfs-realtime.proto."""

from __future__ import annotations

from collections.abc import Iterator


def varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field in buf[start:end]."""
    i = start
    while i < end:
        tag, i = varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            s = i
            _, i = varint(buf, i)
        elif wire == 2:
            length, i = varint(buf, i)
            s, i = i, i + length
        elif wire == 1:
            s, i = i, i + 8
        elif wire == 5:
            s, i = i, i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > end or number == 0:
            raise ValueError("truncated or malformed field")
        yield number, wire, s, i


def split_entities(body: bytes) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """FeedMessage wire bytes → (header bytes, [(entity id, entity bytes)] of the live
    trip-update entities). Field numbers from gtfs-realtime.proto: FeedMessage.header = 1,
    .entity = 2; FeedEntity.id = 1, .is_deleted = 2, .trip_update = 3."""
    header: bytes | None = None
    entities: list[tuple[str, bytes]] = []
    for number, wire, s, e in _fields(body, 0, len(body)):
        if wire != 2:
            continue
        if number == 1:
            header = body[s:e]
        elif number == 2:
            entity_id, deleted, has_trip_update = "", False, False
            for f, w, fs, fe in _fields(body, s, e):
                if f == 1 and w == 2:
                    entity_id = body[fs:fe].decode("utf-8")
                elif f == 2 and w == 0:
                    deleted = varint(body, fs)[0] != 0
                elif f == 3 and w == 2:
                    has_trip_update = True
            if has_trip_update and not deleted:
                entities.append((entity_id, body[s:e]))
    return header, entities
