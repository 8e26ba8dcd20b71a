"""What happened to one instance, and what it was at any moment, read from the event store alone.

The read models are projections that can lag or be rebuilt; an auditor's answer must not depend on
them. An instance's history is its own events and those of its operations that live in other
aggregates: its backups, and the tenant quota's reservations and settlements made for its requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.errors import InvalidRequest, NotFound
from domain.faults import scrubbed
from domain.instance import Instance
from domain.public_events import PublicEvent
from domain.quota import quota_id
from services.instances import InstanceService


@dataclass(frozen=True)
class PastInstance:
    """The instance as it was at ``moment``: the aggregate rebuilt from its events up to then."""

    moment: datetime
    instance: Instance
    events: list[PublicEvent]  # its own, up to the moment, oldest first


class InstanceHistory:
    def __init__(self, instances: InstanceService) -> None:
        self._instances = instances

    def events(self, instance_id: str) -> list[PublicEvent]:
        """Every event of the instance and of its operations, in the order they happened; ``NotFound`` for
        an id that never was an instance."""
        own = self._own(instance_id)
        requests = {e.request_id for e in own if e.request_id}
        related: list[PublicEvent] = []
        for backup_id in dict.fromkeys(e.data["backup_id"] for e in own if e.type == "BackupRequested"):
            related.extend(self._instances.history(backup_id))
        tenant_id = own[0].tenant_id
        if tenant_id:
            related.extend(e for e in self._instances.history(quota_id(tenant_id)) if e.request_id in requests)
        return sorted([*own, *related], key=lambda e: (_moment(e.occurred_at), e.aggregate_id, e.version))

    def as_of(self, instance_id: str, moment: datetime) -> PastInstance:
        """The instance rebuilt from the store as it was at ``moment`` (aware); ``NotFound`` before it existed."""
        if moment.tzinfo is None:
            raise InvalidRequest("The moment must say its time zone (for example 2026-12-04T10:00:00Z).")
        own = [e for e in self._own(instance_id) if _moment(e.occurred_at) <= moment]
        if not own:
            raise NotFound(f"Instance {instance_id} did not exist yet at {moment.isoformat()}.")
        instance = self._instances.repository.get(UUID(instance_id), version=own[-1].version)
        return PastInstance(moment, instance, own)

    def _own(self, instance_id: str) -> list[PublicEvent]:
        own = self._instances.history(instance_id)
        if not own or own[0].aggregate_type != "Instance":
            raise NotFound(f"Instance {instance_id} could not be found.")
        return own


def timeline_entry(event: PublicEvent) -> dict[str, Any]:
    """One event as a timeline shows it: who, when, and what changed (its data, without the context)."""
    data = _scrubbed(dict(event.data))
    context = data.pop("context", None) or {}
    return {"event_id": event.event_id, "occurred_at": event.occurred_at, "type": event.type,
            "aggregate_type": event.aggregate_type, "aggregate_id": event.aggregate_id, "version": event.version,
            "request_id": event.request_id, "user_id": event.user_id, "tenant_id": event.tenant_id,
            "context": context, "changes": data}


def _scrubbed(value: Any) -> Any:
    """What looks like a password, blanked, as fault history does: a guest's error may quote a statement."""
    if isinstance(value, str):
        return scrubbed(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item) for item in value]
    return value


def _moment(iso: str) -> datetime:
    return datetime.fromisoformat(iso)
