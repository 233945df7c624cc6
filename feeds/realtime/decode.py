"""Decoding GTFS-Realtime: bytes → FeedMessage (protobuf) → FeedSnapshot (our types), and the
re-stamping of recorded captures for replays.

The one place that imports the generated protobuf classes. A body that is empty, is not a
FeedMessage or has no usable header raises RealtimeRejected with a stable code; the caller keeps
the last good snapshot.

Trip updates are the bulk of a big feed (MTA's buses: 90,879 StopTimeUpdates in 3.1 MiB), and
reading them field by field through protobuf's Python objects costs ~30 times the parse. So
``decode`` and ``entity_trip_updates`` read them through a *view* of the same wire format
(``_View``): StopTimeEvents arrive as one list of varints each, so a StopTimeUpdate costs a few
attribute reads instead of a dozen. The view is trusted only when re-encoding it gives back the
exact input bytes and every event holds only known varint fields; anything else (an empty or
repeated event, unusual encodings) is decoded the plain way, so the result never differs.
"""

from __future__ import annotations

import gc
import hashlib
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import compress
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.transit import gtfs_realtime_pb2 as pb

from feeds.realtime.bulk_decode import ViewFeedMessage, stop_time_updates
from feeds.realtime.header import RealtimeRejected, check_header
from feeds.realtime.model import (
    Alert,
    FeedSnapshot,
    InformedEntity,
    StopTimeEvent,
    StopTimeUpdate,
    TripDescriptor,
    TripProperties,
    TripUpdate,
    VehiclePosition,
)
from feeds.realtime.wire import split_entities


def parse_message(body: bytes) -> Any:
    if not body:
        # upb parses b"" into an empty FeedMessage without complaint: refuse it here.
        raise RealtimeRejected("empty_body", "the realtime body is empty")
    message = pb.FeedMessage()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise RealtimeRejected("not_a_feed_message",
                               f"not a GTFS-Realtime FeedMessage: {exc}") from exc
    return message


def parse_json_message(text: str | bytes) -> Any:
    """The protobuf JSON mapping (either field-name style), as some agencies and tests use."""
    try:
        return json_format.Parse(text, pb.FeedMessage(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise RealtimeRejected("not_a_feed_message", f"not a FeedMessage in JSON: {exc}") from exc


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _enum(msg: Any, name: str, enum: Any) -> str | None:
    return str(enum.Name(getattr(msg, name))) if msg.HasField(name) else None


def _trip(msg: Any) -> TripDescriptor:
    # A value other than the default proves presence: HasField only for defaults.
    has = msg.HasField
    trip_id = msg.trip_id
    if not trip_id and not has("trip_id"):
        trip_id = None
    route_id = msg.route_id
    if not route_id and not has("route_id"):
        route_id = None
    direction_id = msg.direction_id
    if not direction_id and not has("direction_id"):
        direction_id = None
    start_date = msg.start_date
    if not start_date and not has("start_date"):
        start_date = None
    start_time = msg.start_time
    if not start_time and not has("start_time"):
        start_time = None
    # Absent reads as the default, SCHEDULED (0): the name either way.
    return TripDescriptor(trip_id, route_id, direction_id, start_date, start_time,
                          _TRIP_REL[msg.schedule_relationship])


def _translated(msg: Any) -> dict[str, str]:
    return {t.language or "": t.text for t in msg.translation}


_STU_REL = {v.number: v.name for v in
            pb.TripUpdate.StopTimeUpdate.ScheduleRelationship.DESCRIPTOR.values}
_TRIP_REL = {v.number: v.name for v in pb.TripDescriptor.ScheduleRelationship.DESCRIPTOR.values}
# Both enums default to SCHEDULED (number 0), what an absent relationship means to us: the name
# of the value read is then right whether or not the field is present.
assert _STU_REL[pb.TripUpdate.StopTimeUpdate().schedule_relationship] == "SCHEDULED"
assert _TRIP_REL[pb.TripDescriptor().schedule_relationship] == "SCHEDULED"

_new = tuple.__new__  # builds a NamedTuple without the Python-level __new__ call


def _updates(tu: Any) -> tuple[StopTimeUpdate, ...]:
    """The StopTimeUpdates of a protobuf TripUpdate (the plain way: see ``_view_updates``)."""
    out: list[StopTimeUpdate] = []
    append = out.append
    for u in tu.stop_time_update:
        has = u.HasField
        arrival = departure = None
        if has("arrival"):
            a = u.arrival
            time = a.time
            if not time and not a.HasField("time"):
                time = None
            delay = a.delay
            if not delay and not a.HasField("delay"):
                delay = None
            arrival = _new(StopTimeEvent, (time, delay))
        if has("departure"):
            d = u.departure
            dtime = d.time
            if not dtime and not d.HasField("time"):
                dtime = None
            ddelay = d.delay
            if not ddelay and not d.HasField("delay"):
                ddelay = None
            departure = _new(StopTimeEvent, (dtime, ddelay))
        seq = u.stop_sequence
        if not seq and not has("stop_sequence"):
            seq = None
        stop_id = u.stop_id
        if not stop_id and not has("stop_id"):
            stop_id = None
        append(_new(StopTimeUpdate, (seq, stop_id, arrival, departure,
                                     _STU_REL[u.schedule_relationship])))
    return tuple(out)


def _trip_update(entity_id: str, tu: Any,
                 updates: tuple[StopTimeUpdate, ...] | None = None) -> TripUpdate:
    """Our TripUpdate from a protobuf one (or its view, with its updates already read)."""
    if updates is None:
        updates = _updates(tu)
    props = None
    if tu.HasField("trip_properties"):
        p = tu.trip_properties
        props = TripProperties(_opt(p, "trip_id"), _opt(p, "start_date"), _opt(p, "start_time"))
    timestamp = tu.timestamp
    if not timestamp and not tu.HasField("timestamp"):
        timestamp = None
    delay = tu.delay
    if not delay and not tu.HasField("delay"):
        delay = None
    return TripUpdate(
        entity_id=entity_id,
        trip=_trip(tu.trip),
        updates=updates,
        vehicle_id=(tu.vehicle.id or None) if tu.HasField("vehicle") else None,
        timestamp=timestamp,
        delay=delay,
        properties=props,
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _view_trip_updates(entities: list[tuple[str, Any]]) -> list[TripUpdate]:
    """Our TripUpdates from (entity id, view TripUpdate) pairs: StopTimeUpdates in bulk; a
    TripUpdate the bulk path leaves is decoded the plain way, from its bytes re-encoded (the
    view keeps every field and unknown field, so protobuf reads them back the same)."""
    updates = stop_time_updates([tu.stop_time_update[:] for _, tu in entities])
    out: list[TripUpdate] = []
    for (entity_id, tu), stus in zip(entities, updates, strict=True):
        if stus is None:
            out.append(_trip_update(entity_id,
                                    pb.TripUpdate.FromString(tu.SerializePartialToString())))
        else:
            out.append(_trip_update(entity_id, tu, stus))
    return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a snapshot's ~100k records are built: NamedTuples stay
    tracked by the collector, and the full collections their number triggers would traverse
    every object of the process several times (a third of the decode). What is still alive
    afterwards is collected as usual; what was freed meanwhile never costs a collection.
    Nests: only the outermost pause turns collection back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _vehicle(entity_id: str, v: Any) -> VehiclePosition:
    pos = v.position if v.HasField("position") else None
    status = pb.VehiclePosition.VehicleStopStatus
    return VehiclePosition(
        entity_id=entity_id,
        vehicle_id=(_opt(v.vehicle, "id") or None) if v.HasField("vehicle") else None,
        label=(_opt(v.vehicle, "label") or None) if v.HasField("vehicle") else None,
        trip=_trip(v.trip) if v.HasField("trip") else None,
        lat=pos.latitude if pos is not None else None,
        lon=pos.longitude if pos is not None else None,
        bearing=_opt(pos, "bearing") if pos is not None else None,
        speed=_opt(pos, "speed") if pos is not None else None,
        timestamp=_opt(v, "timestamp"),
        stop_id=_opt(v, "stop_id"),
        current_stop_sequence=_opt(v, "current_stop_sequence"),
        current_status=_enum(v, "current_status", status),
    )


def _informed(e: Any) -> InformedEntity:
    """An informed entity; a route or direction given inside its trip descriptor (as MTA
    does) counts as the entity's own, or the alert would widen to the whole agency."""
    trip = e.trip if e.HasField("trip") else None
    return InformedEntity(
        agency_id=_opt(e, "agency_id"),
        route_id=_opt(e, "route_id") or (_opt(trip, "route_id") if trip is not None else None),
        route_type=_opt(e, "route_type"),
        direction_id=_opt(e, "direction_id") if e.HasField("direction_id") else (
            _opt(trip, "direction_id") if trip is not None else None),
        trip_id=_opt(trip, "trip_id") if trip is not None else None,
        stop_id=_opt(e, "stop_id"),
    )


def _alert(entity_id: str, a: Any) -> Alert:
    periods = tuple((_opt(p, "start"), _opt(p, "end")) for p in a.active_period)
    informed = tuple(_informed(e) for e in a.informed_entity)
    return Alert(
        alert_id=entity_id,
        active_periods=periods,
        informed=informed,
        cause=_enum(a, "cause", pb.Alert.Cause),
        effect=_enum(a, "effect", pb.Alert.Effect),
        severity=_enum(a, "severity_level", pb.Alert.SeverityLevel),
        header=_translated(a.header_text) if a.HasField("header_text") else {},
        description=_translated(a.description_text) if a.HasField("description_text") else {},
        url=_translated(a.url) if a.HasField("url") else {},
    )


def to_snapshot(message: Any, version: str) -> FeedSnapshot:
    """A parsed FeedMessage (protobuf's own classes) as our types."""
    return _snapshot(message, version, view=False)


def _snapshot(message: Any, version: str, view: bool) -> FeedSnapshot:
    """A FeedMessage as our types, from protobuf's classes or (``view``) the bulk view."""
    trip_updates: list[TripUpdate] = []
    vehicles: list[VehiclePosition] = []
    alerts: list[Alert] = []
    in_view: list[tuple[str, Any]] = []
    for entity in message.entity:
        if entity.is_deleted:
            continue
        if entity.HasField("trip_update"):
            if view:
                in_view.append((entity.id, entity.trip_update))
            else:
                trip_updates.append(_trip_update(entity.id, entity.trip_update))
        if entity.HasField("vehicle"):
            vehicles.append(_vehicle(entity.id, entity.vehicle))
        if entity.HasField("alert"):
            alerts.append(_alert(entity.id, entity.alert))
    if view:
        trip_updates = _view_trip_updates(in_view)
    # After the entities: a body that also fails to parse in one of them (which the view only
    # finds out here) is refused as not a FeedMessage, as a full parse refuses it.
    header = message.header
    if not header.HasField("gtfs_realtime_version"):
        raise RealtimeRejected("missing_header", "the FeedMessage has no header version")
    return FeedSnapshot(
        timestamp=_opt(header, "timestamp"),
        incrementality=pb.FeedHeader.Incrementality.Name(header.incrementality),
        version=version,
        trip_updates=tuple(trip_updates),
        vehicles=tuple(vehicles),
        alerts=tuple(alerts),
    )


def entity_kinds(message: Any) -> list[str]:
    """The kinds of entity a parsed FeedMessage carries (trip_updates, vehicle_positions,
    alerts: those ``to_snapshot`` would find), without converting any: a pushed body says what
    to apply from it for the cost of its parse. Refuses what ``to_snapshot`` refuses."""
    trip_updates = vehicles = alerts = False
    for entity in message.entity:
        if not entity.is_deleted:
            trip_updates = trip_updates or entity.HasField("trip_update")
            vehicles = vehicles or entity.HasField("vehicle")
            alerts = alerts or entity.HasField("alert")
    if not message.header.HasField("gtfs_realtime_version"):
        raise RealtimeRejected("missing_header", "the FeedMessage has no header version")
    return [kind for kind, present in (("trip_updates", trip_updates),
                                       ("vehicle_positions", vehicles),
                                       ("alerts", alerts)) if present]


def entity_trip_updates(body: bytes, now: float, previous_timestamp: int | None,
                        known: dict[str, bytes]) -> tuple[FeedSnapshot,
                                                          list[tuple[str, bytes,
                                                                     TripUpdate | None]]]:
    """Decode only the trip-update entities whose bytes differ from ``known``.

    Returns the header (as an entity-less snapshot) and, per trip-update entity in feed order,
    (key, its bytes, its TripUpdate — or None when the bytes equal ``known[key]``, so the
    caller reuses what it made of them last time). Keys are entity ids, made unique by order.
    The message is split into entities at the wire level, so an unchanged entity is never
    parsed: a snapshot costs in proportion to what changed in it.
    """
    if not body:
        raise RealtimeRejected("empty_body", "the realtime body is empty")
    try:
        header_bytes, entities = split_entities(body)
    except (ValueError, IndexError) as exc:
        raise RealtimeRejected("not_a_feed_message",
                               f"not a GTFS-Realtime FeedMessage: {exc}") from exc
    message = pb.FeedMessage()
    if header_bytes is not None:
        try:
            message.header.MergeFromString(header_bytes)
        except DecodeError as exc:
            raise RealtimeRejected("not_a_feed_message", f"bad FeedHeader: {exc}") from exc
    header = to_snapshot(message, hashlib.sha256(body).hexdigest()[:16])
    check_header(header, now, previous_timestamp)
    ids = [entity_id for entity_id, _ in entities]
    raws = [raw for _, raw in entities]
    if len(set(ids)) == len(ids):
        keys = ids  # the usual case, made in C
    else:
        keys = []
        seen: dict[str, int] = {}
        for entity_id in ids:
            n = seen.get(entity_id, 0)
            seen[entity_id] = n + 1
            keys.append(entity_id if n == 0 else f"{entity_id}#{n}")
    changed = list(compress(range(len(keys)), map(operator.ne, map(known.get, keys), raws)))
    updates: list[TripUpdate | None] = [None] * len(keys)
    with gc_paused():
        if changed:
            decoded = _entity_trip_updates([raws[k] for k in changed])
            for k, update in zip(changed, decoded, strict=True):
                updates[k] = update
        return header, list(zip(keys, raws, updates, strict=True))


def _entity_trip_updates(raws: list[bytes]) -> list[TripUpdate]:
    """The trip update of each FeedEntity (given as its bytes), read in bulk: the entities are
    parsed as one FeedMessage of them (field 2), which reads each exactly as on its own."""
    body = b"".join(part for raw in raws for part in (b"\x12", _varint(len(raw)), raw))
    try:
        message = ViewFeedMessage.FromString(body)
        return _view_trip_updates([(e.id, e.trip_update) for e in message.entity])
    except DecodeError:
        pass  # one of them is broken: find which, in the usual words
    out: list[TripUpdate] = []
    for raw in raws:
        try:
            entity = pb.FeedEntity.FromString(raw)
        except DecodeError as exc:
            raise RealtimeRejected("not_a_feed_message", f"bad FeedEntity: {exc}") from exc
        out.append(_trip_update(entity.id, entity.trip_update))
    return out


def decode(body: bytes, version: str, now: float,
           previous_timestamp: int | None = None) -> FeedSnapshot:
    if not body:
        parse_message(body)  # refused as empty
    try:
        with gc_paused():
            snapshot = _snapshot(ViewFeedMessage.FromString(body), version, view=True)
    except DecodeError:
        # Not a FeedMessage somewhere: a full parse says where, in the usual words.
        snapshot = to_snapshot(parse_message(body), version)
    check_header(snapshot, now, previous_timestamp)
    return snapshot


def restamp(body: bytes, shift: int) -> bytes:
    """The same FeedMessage with every timestamp moved by ``shift`` seconds (replays of
    recorded feeds: delays and order stay as recorded, the instants follow the replay clock)."""
    message = parse_message(body)
    if message.header.HasField("timestamp"):
        message.header.timestamp += shift
    for entity in message.entity:
        if entity.HasField("trip_update"):
            tu = entity.trip_update
            if tu.HasField("timestamp"):
                tu.timestamp += shift
            for u in tu.stop_time_update:
                for event in (u.arrival, u.departure):
                    if event.HasField("time"):
                        event.time += shift
        if entity.HasField("vehicle") and entity.vehicle.HasField("timestamp"):
            entity.vehicle.timestamp += shift
        if entity.HasField("alert"):
            for period in entity.alert.active_period:
                if period.HasField("start"):
                    period.start += shift
                if period.HasField("end"):
                    period.end += shift
    return bytes(message.SerializeToString())


def header_timestamp(body: bytes) -> int | None:
    message = parse_message(body)
    return int(message.header.timestamp) if message.header.HasField("timestamp") else None
