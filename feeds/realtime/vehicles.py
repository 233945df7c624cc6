"""Vehicle positions: validated against the schedule and shaped for the API (pure)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feeds.realtime.model import VehiclePosition
from feeds.schedule.index import ScheduleIndex

MAX_POSIX = 10_000_000_000
FAR_FROM_TRIP_M = 5_000.0  # farther than this from its trip (shape, else stops): rejected
FAR_FROM_SHAPE_M = 150.0  # farther than this from its trip's shape: flagged (E029)


@dataclass
class VehicleResult:
    vehicles: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    total: int = 0

    @property
    def match_rate(self) -> float | None:
        return None if self.total == 0 else round(len(self.vehicles) / self.total, 4)


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6_371_008.8 * math.asin(math.sqrt(min(1.0, a)))


def distance_to_shape_m(index: ScheduleIndex, shape: int, lat: float, lon: float) -> float:
    """Distance from a point to a shape's polyline, on a local flat projection (metres)."""
    shapes = index.shapes
    lo, hi = int(shapes.offsets[shape]), int(shapes.offsets[shape + 1])
    m_per_deg = 6_371_008.8 * math.pi / 180
    x = (shapes.lon[lo:hi] - lon) * m_per_deg * math.cos(math.radians(lat))
    y = (shapes.lat[lo:hi] - lat) * m_per_deg
    if hi - lo == 1:
        return float(np.hypot(x[0], y[0]))
    ax, ay, bx, by = x[:-1], y[:-1], x[1:], y[1:]
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = np.clip(-(ax * dx + ay * dy) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
    return float(np.min(np.hypot(ax + t * dx, ay + t * dy)))


def off_shape_m(index: ScheduleIndex, trip: int, lat: float, lon: float) -> float | None:
    """How far the position is from its trip's shape, or None when the trip has no shape."""
    shape = int(index.trips.shape[trip])
    if shape < 0 or index.shapes.offsets[shape + 1] <= index.shapes.offsets[shape]:
        return None
    return distance_to_shape_m(index, shape, lat, lon)


def _near_trip(index: ScheduleIndex, trip: int, lat: float, lon: float) -> bool:
    """Within FAR_FROM_TRIP_M of the trip's shape, or of one of its stops when it has none."""
    off = off_shape_m(index, trip, lat, lon)
    if off is not None:
        return off <= FAR_FROM_TRIP_M
    st = index.stop_times
    lo, hi = int(st.offsets[trip]), int(st.offsets[trip + 1])
    stops = index.stops
    return any(
        _distance_m(lat, lon, float(stops.lat[s]), float(stops.lon[s])) <= FAR_FROM_TRIP_M
        for s in set(st.stop[lo:hi].tolist())
    )


def process_vehicles(index: ScheduleIndex, positions: tuple[VehiclePosition, ...]
                     ) -> VehicleResult:
    result = VehicleResult()
    for v in positions:
        result.total += 1
        code = _problem(index, v)
        if code is not None:
            result.rejected[code] += 1
            continue
        trip = index.trips.index_of.get(v.trip.trip_id) if v.trip and v.trip.trip_id else None
        flags = []
        if trip is not None and v.lat is not None and v.lon is not None:
            # Real vehicles stray from drawn shapes (Caltrain's capture has one 196 m off), so
            # this is a flag on the position, not a reason to drop it (E029).
            off = off_shape_m(index, trip, v.lat, v.lon)
            if off is not None and off > FAR_FROM_SHAPE_M:
                flags.append("position_off_shape")
                result.flagged["position_off_shape"] += 1
        route_id = v.trip.route_id if v.trip else None
        if route_id is None and trip is not None:
            r = int(index.trips.route[trip])
            route_id = index.routes.ids[r] if r >= 0 else None
        result.vehicles.append({
            "id": v.vehicle_id or v.entity_id,
            "label": v.label,
            "lat": v.lat, "lon": v.lon,
            "bearing": v.bearing, "speed": v.speed,
            "trip_id": v.trip.trip_id if v.trip else None,
            "route_id": route_id,
            "start_date": v.trip.start_date if v.trip else None,
            "stop_id": v.stop_id,
            "current_status": v.current_status,
            "timestamp": v.timestamp,
            "flags": flags,
        })
    return result


def _problem(index: ScheduleIndex, v: VehiclePosition) -> str | None:
    if v.lat is None or v.lon is None:
        return "missing_position"
    # Exactly 0 is how broken AVL units report "no fix"; no served stop sits on the equator
    # or the prime meridian to the last decimal.
    if not (-90 <= v.lat <= 90 and -180 <= v.lon <= 180) or v.lat == 0 or v.lon == 0:
        return "bad_position"  # E026
    if v.timestamp is not None and not 0 < v.timestamp < MAX_POSIX:
        return "timestamp_not_posix"
    if v.stop_id is not None and v.stop_id not in index.stops.index_of:
        return "stop_not_found"  # E011
    if v.trip is not None and v.trip.trip_id is not None:
        trip = index.trips.index_of.get(v.trip.trip_id)
        if trip is None:
            if v.trip.relationship not in ("ADDED", "NEW", "DUPLICATED"):
                return "trip_not_found"  # E003
        elif not _near_trip(index, trip, v.lat, v.lon):
            return "position_far_from_trip"  # E029
    if v.trip is not None and v.trip.route_id is not None \
            and v.trip.route_id not in index.routes.index_of:
        return "route_not_found"
    return None


def in_bbox(vehicle: dict[str, Any], bbox: tuple[float, float, float, float]) -> bool:
    min_lon, min_lat, max_lon, max_lat = bbox
    return bool(min_lon <= vehicle["lon"] <= max_lon and min_lat <= vehicle["lat"] <= max_lat)
