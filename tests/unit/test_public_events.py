"""The public event envelope: mapping from domain events and strict decoding."""

from __future__ import annotations

import json

import pytest

from domain.public_events import (
    ENVELOPE_FIELDS,
    EventCatalog,
    MalformedEvent,
    UnknownEventType,
    UnsupportedSchemaVersion,
    event_id_for,
    to_public_event,
)
from tests.support.counter import COUNTER_EVENTS, Counter

CATALOG = EventCatalog.of(COUNTER_EVENTS)


def _events() -> list:
    counter = Counter("orders")
    counter.increment(5)
    return counter.collect_events()


def test_domain_events_map_to_the_versioned_envelope() -> None:
    opened, incremented = (to_public_event(e) for e in _events())
    assert opened.type == "CounterOpened" and incremented.type == "CounterIncremented"
    assert opened.aggregate_type == "Counter"
    assert (opened.version, incremented.version) == (1, 2)
    assert opened.data == {"name": "orders"}, "library internals such as originator_topic stay out"
    assert incremented.data == {"by": 5}
    assert opened.schema_version == 1
    assert opened.occurred_at.endswith("+00:00")
    body = json.loads(incremented.to_json())
    assert sorted(body) == sorted(ENVELOPE_FIELDS)


def test_event_ids_are_deterministic_so_republished_events_are_recognisable() -> None:
    first = to_public_event(_events()[0])
    assert first.event_id == event_id_for(first.aggregate_id, 1)
    assert event_id_for(first.aggregate_id, 1) != event_id_for(first.aggregate_id, 2)


def test_operation_context_fills_the_envelope() -> None:
    event = _events()[1]
    object.__setattr__(event, "context", {"tenant_id": "t1", "request_id": "req-1", "user_id": "u1"})
    public = to_public_event(event)
    assert (public.tenant_id, public.request_id, public.user_id) == ("t1", "req-1", "u1")
    assert "context" not in public.data


def test_decode_round_trips() -> None:
    public = to_public_event(_events()[1])
    assert CATALOG.decode(public.to_json()) == public
    assert CATALOG.decode(public.to_json()).dedupe_key == (public.aggregate_id, 2)


def _envelope(**changes: object) -> bytes:
    body = json.loads(to_public_event(_events()[1]).to_json())
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(("raw", "error", "message"), [
    (b"{not json", MalformedEvent, "not JSON"),
    (b"[1, 2]", MalformedEvent, "not a JSON object"),
    (json.dumps({"type": "CounterIncremented"}).encode(), MalformedEvent, "envelope lacks"),
    (_envelope(version="2"), MalformedEvent, "version must be a positive integer"),
    (_envelope(version=True), MalformedEvent, "version must be a positive integer"),
    (_envelope(schema_version=0), MalformedEvent, "schema_version must be a positive integer"),
    (_envelope(data=[]), MalformedEvent, "data must be a JSON object"),
    (_envelope(tenant_id=7), MalformedEvent, "tenant_id must be a string or null"),
    (_envelope(aggregate_id=""), MalformedEvent, "aggregate_id must be a non-empty string"),
    (_envelope(type="CounterExploded"), UnknownEventType, "unknown event type 'CounterExploded'"),
    (_envelope(schema_version=2), UnsupportedSchemaVersion, "schema_version 2 is newer than the 1"),
])
def test_decode_refuses_what_it_does_not_understand(raw: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        CATALOG.decode(raw)


def test_a_newer_class_version_raises_the_catalog_version() -> None:
    class Renamed:  # a stand-in event class carrying the library's class_version
        class_version = 3

    Renamed.__qualname__ = "Counter.CounterIncremented"
    Renamed.__name__ = "CounterIncremented"
    catalog = CATALOG | EventCatalog.of([Renamed])
    assert catalog.decode(_envelope(schema_version=3)).schema_version == 3
    with pytest.raises(UnsupportedSchemaVersion):
        catalog.decode(_envelope(schema_version=4))


def test_one_event_type_name_cannot_belong_to_two_aggregates() -> None:
    class Other:
        pass

    Other.__qualname__ = "Gauge.CounterOpened"
    Other.__name__ = "CounterOpened"
    with pytest.raises(ValueError, match="defined by both"):
        EventCatalog.of([*COUNTER_EVENTS, Other])


def test_values_that_json_cannot_carry_are_refused_at_the_source() -> None:
    event = _events()[1]
    object.__setattr__(event, "by", object())
    with pytest.raises(TypeError, match="cannot put object into a public event"):
        to_public_event(event)
