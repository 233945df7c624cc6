"""The wire-level split that lets unchanged trip-update entities go unparsed must agree with
a full protobuf decode on every real capture, and refuse what protobuf refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RT

from feeds.realtime.decode import entity_trip_updates, parse_message, to_snapshot
from feeds.realtime.header import RealtimeRejected

CAPTURES = sorted(p for p in RT.rglob("*.pb") if p.stat().st_size > 20)
FAR_FUTURE = 4_000_000_000


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_split_decode_equals_full_decode(path: Path) -> None:
    body = path.read_bytes()
    full = to_snapshot(parse_message(body), "v")
    header, entities = entity_trip_updates(body, FAR_FUTURE, None, {})
    assert header.timestamp == full.timestamp
    assert header.incrementality == full.incrementality
    assert [tu for _, _, tu in entities] == list(full.trip_updates)
    # Fed back its own bytes, nothing is decoded again, and the keys stay the same.
    known = {key: raw for key, raw, _ in entities}
    _, again = entity_trip_updates(body, FAR_FUTURE, None, known)
    assert [(k, tu) for k, _, tu in again] == [(k, None) for k, _, _ in entities]


def test_split_refuses_what_protobuf_refuses() -> None:
    corrupt = (RT / "edge" / "corrupt-wire-format.pb").read_bytes()
    with pytest.raises(RealtimeRejected) as exc:
        entity_trip_updates(corrupt, FAR_FUTURE, None, {})
    assert exc.value.code == "not_a_feed_message"
    with pytest.raises(RealtimeRejected) as exc:
        entity_trip_updates(b"", FAR_FUTURE, None, {})
    assert exc.value.code == "empty_body"


def test_split_truncated_bodies_never_pass_silently() -> None:
    """Cut a real capture anywhere: either refused, or (cut at an entity boundary) a valid
    shorter message, exactly as protobuf itself would read it."""
    body = (RT / "caltrain" / "trip-updates-2023-11-07.pb").read_bytes()
    for cut in range(1, len(body), 97):
        part = body[:cut]
        try:
            full = to_snapshot(parse_message(part), "v")
        except RealtimeRejected:
            with pytest.raises(RealtimeRejected):
                entity_trip_updates(part, FAR_FUTURE, None, {})
            continue
        _, entities = entity_trip_updates(part, FAR_FUTURE, None, {})
        assert [tu for _, _, tu in entities] == list(full.trip_updates)
