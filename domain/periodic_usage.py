"""The periodic notifications, sent when an audit period ends (``domain/usage_audit.py``).

- ``trove.instance.exists``: one per instance billed in the period (healthy at least once, not being
  deleted), with ``audit_period_beginning`` and ``audit_period_ending``. Ceilometer's
  ``trove.instance.exists`` meter bills the seconds between the two, so the beginning of an instance's
  first period is when it first became healthy, not the start of the audit period as in Trove (which
  bills a whole period for an instance created in its last minute). The payload is Trove's
  (``TroveBaseTraits`` and ``display_name``) plus ``instance_size`` and ``volume_size``, which a billing
  consumer needs to price the seconds.
- ``dbaas.quota``: one per tenant and resource, ``resource``, ``in_use``, ``reserved``, ``limit`` and
  ``updated`` as Trove's, plus ``tenant_id`` (Trove leaves it to the context).

A period's end is on one partition of the event stream and covers only the instances and quotas of
that partition, whose every earlier event this consumer has then folded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from datetime import datetime
from typing import Any

from domain.notifications import QUOTA_EVENT_TYPE
from domain.public_events import PublicEvent
from domain.quota import RESOURCES, UNLIMITED
from domain.usage import InstanceUsage, UsageNotification, iso_utc
from domain.usage_audit import EXISTS, QUOTA

EXISTS_EVENT_TYPE = "trove.instance.exists"

_QUOTA_EVENTS = frozenset({"QuotaOpened", "QuotaReserved", "QuotaCommitted", "QuotaReservationReleased",
                           "QuotaUsageReleased", "QuotaLimitsChanged"})


class QuotaUsage:
    """Folds quota events into what ``dbaas.quota`` reports; ``quotas`` (by quota id) is kept by the caller."""

    def __init__(self, quotas: MutableMapping[str, dict[str, Any]]) -> None:
        self._quotas = quotas

    def fold(self, event: PublicEvent) -> None:
        if event.aggregate_type != "Quota" or event.type not in _QUOTA_EVENTS:
            return
        data, key = event.data, event.aggregate_id
        if event.type == "QuotaOpened":
            quota = {"tenant_id": data["tenant_id"], "limits": {}, "in_use": dict.fromkeys(RESOURCES, 0),
                     "reservations": {}}
        else:
            quota = self._quotas.get(key)
            if quota is None:
                return  # opened before this consumer's history began
        if event.type == "QuotaReserved":
            quota["reservations"][data["request_id"]] = data["deltas"]
        elif event.type == "QuotaCommitted":
            quota["reservations"].pop(data["request_id"], None)
            for resource, delta in data["deltas"].items():
                quota["in_use"][resource] = quota["in_use"].get(resource, 0) + delta
        elif event.type == "QuotaReservationReleased":
            quota["reservations"].pop(data["request_id"], None)
        elif event.type == "QuotaUsageReleased":
            for resource, delta in data["deltas"].items():
                quota["in_use"][resource] = max(0, quota["in_use"].get(resource, 0) - delta)
        elif event.type == "QuotaLimitsChanged":
            quota["limits"].update(data["limits"])
        quota["updated"] = iso_utc(event.occurred_at)
        self._quotas[key] = quota


def period_notifications(event: PublicEvent, on_partition: Callable[[str], bool],
                         instances: Mapping[str, Mapping[str, Any]], quotas: Mapping[str, Mapping[str, Any]],
                         usage: InstanceUsage, quota_defaults: Mapping[str, int],
                         ) -> list[tuple[str, str, UsageNotification]]:
    """``(key, subject, notification)`` for each instance, or tenant and resource, the ended period
    reports on: ``key`` (the instance or quota id) keys the message, ``subject`` tells it from the
    period's other notifications (its message id derives from it and the period's end)."""
    if event.type != "PeriodEnded":
        return []
    kind, beginning, ending = event.data["kind"], event.data["beginning"], event.data["ending"]
    if kind == EXISTS:
        return _exists(beginning, ending, on_partition, instances, usage)
    if kind == QUOTA:
        return _quota(on_partition, quotas, quota_defaults)
    return []


def _exists(beginning: str, ending: str, on_partition: Callable[[str], bool],
            instances: Mapping[str, Mapping[str, Any]], usage: InstanceUsage,
            ) -> list[tuple[str, str, UsageNotification]]:
    period_start, period_end = datetime.fromisoformat(beginning), datetime.fromisoformat(ending)
    notes = []
    for instance_id, known in sorted(instances.items()):
        if not on_partition(instance_id) or not known.get("healthy_once") or known["state"] == "shutdown":
            continue
        billed_from = datetime.fromisoformat(known["billed_from"].replace("Z", "+00:00"))
        if billed_from >= period_end:
            continue
        start = max(period_start, billed_from)
        payload = {key: value for key, value in usage.payload(instance_id, known).items()
                   if key not in ("name", "availability_zone", "nova_volume_id")}
        payload.update(display_name=known["name"], audit_period_beginning=iso_utc(start.isoformat()),
                       audit_period_ending=iso_utc(period_end.isoformat()))
        notes.append((instance_id, instance_id, UsageNotification(EXISTS_EVENT_TYPE, payload)))
    return notes


def _quota(on_partition: Callable[[str], bool], quotas: Mapping[str, Mapping[str, Any]],
           defaults: Mapping[str, int]) -> list[tuple[str, str, UsageNotification]]:
    notes = []
    for quota_id, quota in sorted(quotas.items()):
        if not on_partition(quota_id):
            continue
        for resource in RESOURCES:
            reserved = sum(deltas.get(resource, 0) for deltas in quota["reservations"].values())
            notes.append((quota_id, f"{quota_id}/{resource}", UsageNotification(QUOTA_EVENT_TYPE, {
                "tenant_id": quota["tenant_id"], "resource": resource, "in_use": quota["in_use"].get(resource, 0),
                "reserved": reserved, "limit": quota["limits"].get(resource, defaults.get(resource, UNLIMITED)),
                "updated": quota["updated"]})))
    return notes
