"""The public event schema: the versioned JSON envelope every consumer reads.

Consumers depend on this envelope, never on the event store's stored bytes, so the write side can
refactor its aggregates without breaking billing, notifications or audit. The envelope's ``type``
is the domain event's class name (unique across the domain, past tense), its ``aggregate_type`` the
aggregate's class name, and its ``schema_version`` the event class's ``class_version`` (the same
number the event store's upcasters use). A consumer refuses what it does not understand: an unknown
type, or a newer schema version than it knows, is an explicit error, never a silent skip.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

ENVELOPE_FIELDS = (
    "event_id", "type", "aggregate_type", "aggregate_id", "version", "occurred_at",
    "tenant_id", "request_id", "user_id", "schema_version", "data",
)

# Namespace for deterministic event ids: the same stored event always gets the same event_id, so
# a republished event (relay restart, broker loss) is recognisable downstream.
EVENT_ID_NAMESPACE = uuid.UUID("6f0d1c39-5b8e-4f0c-9d64-7d0b5a3f2e11")

# Attributes of a stored domain event that belong to the envelope, not to ``data``.
_ENVELOPE_ATTRIBUTES = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic",
                                  "context"})
_CONTEXT_IN_ENVELOPE = frozenset({"tenant_id", "request_id", "user_id"})


class PublicEventError(ValueError):
    """A message is not a public event this consumer can process."""


class MalformedEvent(PublicEventError):
    pass


class UnknownEventType(PublicEventError):
    pass


class UnsupportedSchemaVersion(PublicEventError):
    pass


@dataclass(frozen=True, slots=True)
class PublicEvent:
    event_id: str
    type: str
    aggregate_type: str
    aggregate_id: str
    version: int
    occurred_at: str
    tenant_id: str | None
    request_id: str | None
    user_id: str | None
    schema_version: int
    data: dict[str, Any]
    # Where the event stands in the store's hash chain (``domain.audit_chain``): its ``position`` in the
    # log, its ``hash`` and the ``previous_hash`` of its aggregate's chain; set by the relay.
    chain: dict[str, Any] | None = None

    @property
    def dedupe_key(self) -> tuple[str, int]:
        return (self.aggregate_id, self.version)

    def to_json(self) -> bytes:
        body = {name: getattr(self, name) for name in ENVELOPE_FIELDS}
        if self.chain is not None:
            body["chain"] = self.chain
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def event_id_for(aggregate_id: str, version: int) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{aggregate_id}/{version}"))


def public_type_of(event_class: type) -> tuple[str, str, int]:
    """``(type, aggregate_type, schema_version)`` of a domain event class."""
    qualname = event_class.__qualname__.split(".")
    aggregate_type = qualname[-2] if len(qualname) >= 2 else qualname[-1]
    return event_class.__name__, aggregate_type, int(getattr(event_class, "class_version", 1))


def to_public_event(domain_event: Any) -> PublicEvent:
    """Map a stored domain event to its public envelope.

    ``context`` on an event carries the operation context: request, tenant and user go to the
    envelope, the rest (client and server ip, server type) to ``data["context"]``; everything else
    the event holds becomes ``data``. Events never hold secrets, so nothing is redacted here.
    """
    event_type, aggregate_type, schema_version = public_type_of(type(domain_event))
    aggregate_id = str(domain_event.originator_id)
    version = int(domain_event.originator_version)
    context = getattr(domain_event, "context", None) or {}
    if not isinstance(context, Mapping):
        context = {k: getattr(context, k, None) for k in ("tenant_id", "request_id", "user_id")}
    data = {k: _jsonable(v) for k, v in vars(domain_event).items() if k not in _ENVELOPE_ATTRIBUTES}
    # The rest of the operation context (client_ip, server_ip, server_type) rides in data.
    rest = {k: _jsonable(v) for k, v in context.items() if k not in _CONTEXT_IN_ENVELOPE}
    if rest:
        data["context"] = rest
    return PublicEvent(
        event_id=event_id_for(aggregate_id, version),
        type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        version=version,
        occurred_at=_jsonable(domain_event.timestamp),
        tenant_id=context.get("tenant_id"),
        request_id=context.get("request_id"),
        user_id=context.get("user_id"),
        schema_version=schema_version,
        data=data,
    )


class EventCatalog:
    """The event types a consumer understands, with the newest schema version of each."""

    def __init__(self, versions: Mapping[str, int]) -> None:
        self._versions = dict(versions)

    @classmethod
    def of(cls, event_classes: Iterable[type]) -> EventCatalog:
        versions: dict[str, int] = {}
        owners: dict[str, str] = {}
        for event_class in event_classes:
            name, aggregate_type, version = public_type_of(event_class)
            if name in owners and owners[name] != aggregate_type:
                raise ValueError(f"event type {name!r} is defined by both {owners[name]} and {aggregate_type}")
            owners[name] = aggregate_type
            versions[name] = max(version, versions.get(name, 0))
        return cls(versions)

    def __contains__(self, event_type: str) -> bool:
        return event_type in self._versions

    def __or__(self, other: EventCatalog) -> EventCatalog:
        merged = dict(self._versions)
        for name, version in other._versions.items():
            merged[name] = max(version, merged.get(name, 0))
        return EventCatalog(merged)

    def types(self) -> list[str]:
        return sorted(self._versions)

    def decode(self, raw: bytes, loads: Callable[[bytes], Any] = json.loads) -> PublicEvent:
        """Parse and validate one envelope; raises a ``PublicEventError`` saying what is wrong. ``loads``: a
        faster JSON parser an adapter has (it must raise ``ValueError`` on bad input, as ``json`` does)."""
        try:
            body = loads(raw)
        except (ValueError, TypeError) as exc:
            raise MalformedEvent(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise MalformedEvent("envelope is not a JSON object")
        missing = [name for name in ENVELOPE_FIELDS if name not in body]
        if missing:
            raise MalformedEvent(f"envelope lacks {', '.join(missing)}")
        for name in ("event_id", "type", "aggregate_type", "aggregate_id", "occurred_at"):
            if not isinstance(body[name], str) or not body[name]:
                raise MalformedEvent(f"{name} must be a non-empty string")
        for name in ("version", "schema_version"):
            if not isinstance(body[name], int) or isinstance(body[name], bool) or body[name] < 1:
                raise MalformedEvent(f"{name} must be a positive integer")
        for name in ("tenant_id", "request_id", "user_id"):
            if body[name] is not None and not isinstance(body[name], str):
                raise MalformedEvent(f"{name} must be a string or null")
        if not isinstance(body["data"], dict):
            raise MalformedEvent("data must be a JSON object")
        chain = body.get("chain")
        if chain is not None and not isinstance(chain, dict):
            raise MalformedEvent("chain must be a JSON object when present")
        known = self._versions.get(body["type"])
        if known is None:
            raise UnknownEventType(f"unknown event type {body['type']!r}; upgrade this consumer")
        if body["schema_version"] > known:
            raise UnsupportedSchemaVersion(
                f"{body['type']} schema_version {body['schema_version']} is newer than the {known} "
                "this consumer understands; upgrade this consumer")
        return PublicEvent(**{name: body[name] for name in ENVELOPE_FIELDS}, chain=chain)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} into a public event")
