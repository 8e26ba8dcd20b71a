"""Per-tenant quotas, event-sourced so that two concurrent creates cannot both take the last slot.

A reservation is saved in the same transaction as the request that needs it; the event store's
optimistic concurrency on the tenant's quota aggregate is what makes the check atomic. The task
manager later commits the reservation (the resource now exists) or releases it (the request failed);
a deletion releases what the instance held.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidRequest, QuotaExceeded

INSTANCES, VOLUMES, BACKUPS = "instances", "volumes", "backups"
RESOURCES = (INSTANCES, VOLUMES, BACKUPS)
UNLIMITED = -1

_NAMESPACE = uuid.UUID("0b8f3f0e-7d1c-4a43-9a59-1f6c2d9e5b11")


def quota_id(tenant_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, tenant_id)


class Quota(Aggregate):
    """One tenant's limits, usage and open reservations."""

    @staticmethod
    def create_id(tenant_id: str, **_: Any) -> uuid.UUID:
        return quota_id(tenant_id)

    @event("QuotaOpened")
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.limits: dict[str, int] = {}  # overrides; missing means the deployment default
        self.in_use: dict[str, int] = dict.fromkeys(RESOURCES, 0)
        self.reservations: dict[str, dict[str, Any]] = {}  # request_id → {instance_id, deltas}

    def limit(self, resource: str, defaults: dict[str, int]) -> int:
        return self.limits.get(resource, defaults.get(resource, UNLIMITED))

    def reserved(self, resource: str) -> int:
        return sum(r["deltas"].get(resource, 0) for r in self.reservations.values())

    def reserve(self, context: dict[str, Any], instance_id: str, deltas: dict[str, int],
                defaults: dict[str, int]) -> None:
        over = {}
        for resource, delta in deltas.items():
            limit = self.limit(resource, defaults)
            held = self.in_use[resource] + self.reserved(resource)
            if delta > 0 and limit != UNLIMITED and held + delta > limit:
                over[resource] = (limit, held, delta)
        if over:
            raise QuotaExceeded(f"Quota exceeded for resources: {sorted(over)}.", over)
        self._reserved(context, context["request_id"], instance_id, dict(deltas))

    @event("QuotaReserved")
    def _reserved(self, context: dict[str, Any], request_id: str, instance_id: str, deltas: dict[str, int]) -> None:
        self.reservations[request_id] = {"instance_id": instance_id, "deltas": deltas}

    def commit(self, context: dict[str, Any], request_id: str) -> bool:
        """The reserved resources now exist; False when there was nothing to commit (a redelivery)."""
        if request_id not in self.reservations:
            return False
        self._committed(context, request_id, self.reservations[request_id]["deltas"])
        return True

    @event("QuotaCommitted")
    def _committed(self, context: dict[str, Any], request_id: str, deltas: dict[str, int]) -> None:
        del self.reservations[request_id]
        for resource, delta in deltas.items():
            self.in_use[resource] += delta

    def release_reservation(self, context: dict[str, Any], request_id: str) -> bool:
        if request_id not in self.reservations:
            return False
        self._reservation_released(context, request_id, self.reservations[request_id]["deltas"])
        return True

    @event("QuotaReservationReleased")
    def _reservation_released(self, context: dict[str, Any], request_id: str, deltas: dict[str, int]) -> None:
        del self.reservations[request_id]

    @event("QuotaUsageReleased")
    def release_usage(self, context: dict[str, Any], instance_id: str, deltas: dict[str, int]) -> None:
        for resource, delta in deltas.items():
            self.in_use[resource] = max(0, self.in_use[resource] - delta)

    def change_limits(self, context: dict[str, Any], limits: dict[str, int]) -> None:
        for resource, value in limits.items():
            if resource not in RESOURCES:
                raise InvalidRequest(f"Quota resource '{resource}' is not one of {', '.join(RESOURCES)}.")
            if not isinstance(value, int) or isinstance(value, bool) or value < UNLIMITED:
                raise InvalidRequest(f"Quota limit for '{resource}' must be an integer of -1 or more.")
        self._limits_changed(context, dict(limits))

    @event("QuotaLimitsChanged")
    def _limits_changed(self, context: dict[str, Any], limits: dict[str, int]) -> None:
        self.limits.update(limits)


QUOTA_EVENTS: tuple[type, ...] = (
    Quota.QuotaOpened, Quota.QuotaReserved, Quota.QuotaCommitted, Quota.QuotaReservationReleased,
    Quota.QuotaUsageReleased, Quota.QuotaLimitsChanged,
)
