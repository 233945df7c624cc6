"""Decoding GTFS-Realtime: bytes → FeedMessage (protobuf) → FeedSnapshot (our types), and the
re-stamping of recorded captures for replays.

The one place that imports the generated protobuf classes. A body that is empty, is not a
FeedMessage or has no usable header raises RealtimeRejected with a stable code; the caller keeps
the last good snapshot.
"""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.transit import gtfs_realtime_pb2 as pb

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
    rel = pb.TripDescriptor.ScheduleRelationship
    return TripDescriptor(
        trip_id=_opt(msg, "trip_id"),
        route_id=_opt(msg, "route_id"),
        direction_id=_opt(msg, "direction_id"),
        start_date=_opt(msg, "start_date"),
        start_time=_opt(msg, "start_time"),
        relationship=_enum(msg, "schedule_relationship", rel) or "SCHEDULED",
    )


def _translated(msg: Any) -> dict[str, str]:
    return {t.language or "": t.text for t in msg.translation}


_STU_REL = {v.number: v.name for v in
            pb.TripUpdate.StopTimeUpdate.ScheduleRelationship.DESCRIPTOR.values}


def _updates(tu: Any) -> tuple[StopTimeUpdate, ...]:
    """The hot loop of decoding (one pass per StopTimeUpdate): written flat on purpose."""
    out: list[StopTimeUpdate] = []
    append = out.append
    for u in tu.stop_time_update:
        has = u.HasField
        arrival = departure = None
        if has("arrival"):
            a = u.arrival
            arrival = StopTimeEvent(a.time if a.HasField("time") else None,
                                    a.delay if a.HasField("delay") else None)
        if has("departure"):
            d = u.departure
            departure = StopTimeEvent(d.time if d.HasField("time") else None,
                                      d.delay if d.HasField("delay") else None)
        append(StopTimeUpdate(
            u.stop_sequence if has("stop_sequence") else None,
            u.stop_id if has("stop_id") else None,
            arrival,
            departure,
            _STU_REL[u.schedule_relationship] if has("schedule_relationship") else "SCHEDULED",
        ))
    return tuple(out)


def _trip_update(entity_id: str, tu: Any) -> TripUpdate:
    updates = _updates(tu)
    props = None
    if tu.HasField("trip_properties"):
        p = tu.trip_properties
        props = TripProperties(_opt(p, "trip_id"), _opt(p, "start_date"), _opt(p, "start_time"))
    return TripUpdate(
        entity_id=entity_id,
        trip=_trip(tu.trip),
        updates=updates,
        vehicle_id=(_opt(tu.vehicle, "id") or None) if tu.HasField("vehicle") else None,
        timestamp=_opt(tu, "timestamp"),
        delay=_opt(tu, "delay"),
        properties=props,
    )


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
    header = message.header
    if not header.HasField("gtfs_realtime_version"):
        raise RealtimeRejected("missing_header", "the FeedMessage has no header version")
    incrementality = pb.FeedHeader.Incrementality.Name(header.incrementality)
    trip_updates: list[TripUpdate] = []
    vehicles: list[VehiclePosition] = []
    alerts: list[Alert] = []
    for entity in message.entity:
        if entity.is_deleted:
            continue
        if entity.HasField("trip_update"):
            trip_updates.append(_trip_update(entity.id, entity.trip_update))
        if entity.HasField("vehicle"):
            vehicles.append(_vehicle(entity.id, entity.vehicle))
        if entity.HasField("alert"):
            alerts.append(_alert(entity.id, entity.alert))
    return FeedSnapshot(
        timestamp=_opt(header, "timestamp"),
        incrementality=incrementality,
        version=version,
        trip_updates=tuple(trip_updates),
        vehicles=tuple(vehicles),
        alerts=tuple(alerts),
    )


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
    out: list[tuple[str, bytes, TripUpdate | None]] = []
    seen: dict[str, int] = {}
    for entity_id, raw in entities:
        n = seen.get(entity_id, 0)
        seen[entity_id] = n + 1
        key = entity_id if n == 0 else f"{entity_id}#{n}"
        if known.get(key) == raw:
            out.append((key, raw, None))
            continue
        try:
            entity = pb.FeedEntity.FromString(raw)
        except DecodeError as exc:
            raise RealtimeRejected("not_a_feed_message", f"bad FeedEntity: {exc}") from exc
        out.append((key, raw, _trip_update(entity.id, entity.trip_update)))
    return header, out


def decode(body: bytes, version: str, now: float,
           previous_timestamp: int | None = None) -> FeedSnapshot:
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
