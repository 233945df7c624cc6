"""GTFS-Realtime as our own types. Only ``rt_decode`` touches the protobuf classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


# The two most numerous records (a big city's feed has ~100k of them) are NamedTuples: a frozen
# dataclass's __init__ costs several times more, and decoding is dominated by building these.
class StopTimeEvent(NamedTuple):
    time: int | None = None  # absolute POSIX seconds; wins over delay
    delay: int | None = None  # seconds, relative to the schedule


class StopTimeUpdate(NamedTuple):
    stop_sequence: int | None
    stop_id: str | None
    arrival: StopTimeEvent | None
    departure: StopTimeEvent | None
    relationship: str = "SCHEDULED"  # SCHEDULED | SKIPPED | NO_DATA | UNSCHEDULED


@dataclass(frozen=True, slots=True)
class TripDescriptor:
    trip_id: str | None
    route_id: str | None = None
    direction_id: int | None = None
    start_date: str | None = None  # YYYYMMDD
    start_time: str | None = None  # HH:MM:SS
    # SCHEDULED, ADDED, UNSCHEDULED, CANCELED, REPLACEMENT, DUPLICATED, DELETED or NEW
    relationship: str = "SCHEDULED"


@dataclass(frozen=True, slots=True)
class TripProperties:
    trip_id: str | None = None
    start_date: str | None = None
    start_time: str | None = None


@dataclass(frozen=True, slots=True)
class TripUpdate:
    entity_id: str
    trip: TripDescriptor
    updates: tuple[StopTimeUpdate, ...]
    vehicle_id: str | None = None
    timestamp: int | None = None
    delay: int | None = None
    properties: TripProperties | None = None


@dataclass(frozen=True, slots=True)
class VehiclePosition:
    entity_id: str
    vehicle_id: str | None
    label: str | None
    trip: TripDescriptor | None
    lat: float | None
    lon: float | None
    bearing: float | None
    speed: float | None
    timestamp: int | None
    stop_id: str | None = None
    current_stop_sequence: int | None = None
    current_status: str | None = None


@dataclass(frozen=True, slots=True)
class InformedEntity:
    agency_id: str | None = None
    route_id: str | None = None
    route_type: int | None = None
    direction_id: int | None = None
    trip_id: str | None = None
    stop_id: str | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    active_periods: tuple[tuple[int | None, int | None], ...]
    informed: tuple[InformedEntity, ...]
    cause: str | None
    effect: str | None
    severity: str | None
    header: dict[str, str] = field(default_factory=dict)
    description: dict[str, str] = field(default_factory=dict)
    url: dict[str, str] = field(default_factory=dict)

    def active_at(self, now: float) -> bool:
        if not self.active_periods:
            return True
        return any((start is None or start <= now) and (end is None or now < end)
                   for start, end in self.active_periods)


@dataclass(frozen=True)
class FeedSnapshot:
    """One decoded FeedMessage: its header and entities, as our types."""

    timestamp: int | None
    incrementality: str  # FULL_DATASET | DIFFERENTIAL
    version: str
    trip_updates: tuple[TripUpdate, ...] = ()
    vehicles: tuple[VehiclePosition, ...] = ()
    alerts: tuple[Alert, ...] = ()

    @property
    def entity_count(self) -> int:
        return len(self.trip_updates) + len(self.vehicles) + len(self.alerts)
