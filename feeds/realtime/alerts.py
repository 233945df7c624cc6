"""Service alerts: shaped for the API and matched to departures (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from feeds.realtime.model import Alert


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.alert_id,
        "active_periods": [{"start": s, "end": e} for s, e in alert.active_periods],
        "informed_entities": [
            {k: v for k, v in (("agency_id", e.agency_id), ("route_id", e.route_id),
                               ("route_type", e.route_type), ("direction_id", e.direction_id),
                               ("trip_id", e.trip_id), ("stop_id", e.stop_id)) if v is not None}
            for e in alert.informed
        ],
        "cause": alert.cause,
        "effect": alert.effect,
        "severity": alert.severity,
        "header": alert.header,
        "description": alert.description,
        "url": alert.url,
    }


@dataclass(frozen=True)
class AlertIndex:
    """Active-period-aware lookup of alerts by the route, stop and trip they inform."""

    alerts: tuple[dict[str, Any], ...]

    def active(self, now: float) -> list[dict[str, Any]]:
        return [a for a in self.alerts if _active(a, now)]

    def matching(self, now: float, stop_ids: Iterable[str] = (), route_id: str | None = None,
                 trip_id: str | None = None, agency_id: str | None = None,
                 direction_id: int | None = None, route_type: int | None = None
                 ) -> list[dict[str, Any]]:
        """Alerts with an informed entity that selects this departure: every field the entity
        names must match (so an entity naming only an agency selects all of its departures,
        one naming a route and a stop selects that route at that stop). A departure field that
        is unknown (None) does not exclude."""
        stops = set(stop_ids)
        here = {"route_id": route_id, "trip_id": trip_id, "agency_id": agency_id,
                "direction_id": direction_id, "route_type": route_type}
        out = []
        for a in self.active(now):
            for e in a["informed_entities"]:
                if not e:
                    continue
                if "stop_id" in e and e["stop_id"] not in stops:
                    continue
                if any(key in e and value is not None and e[key] != value
                       for key, value in here.items()):
                    continue
                if ("route_id" in e and route_id is None) or ("trip_id" in e and trip_id is None):
                    continue
                out.append(a)
                break
        return out

    def filter(self, now: float, stop: str | None, route: str | None,
               trip: str | None) -> list[dict[str, Any]]:
        """For GET /alerts: alerts informing any entity with the given stop/route/trip."""
        out = []
        for a in self.active(now):
            ents = a["informed_entities"]
            if stop is not None and not any(e.get("stop_id") == stop for e in ents):
                continue
            if route is not None and not any(e.get("route_id") == route for e in ents):
                continue
            if trip is not None and not any(e.get("trip_id") == trip for e in ents):
                continue
            out.append(a)
        return out


def _active(alert: dict[str, Any], now: float) -> bool:
    periods = alert["active_periods"]
    if not periods:
        return True
    return any((p["start"] is None or p["start"] <= now) and (p["end"] is None or now < p["end"])
               for p in periods)
