"""Trove's usage notifications (``trove.instance.*``), what Ceilometer's billing reads, folded from an
instance's events (trove-source-behaviour §1.1 and §5).

- ``trove.instance.create`` once the datastore is first healthy, never for a build that fails;
- ``trove.instance.modify_volume`` and ``trove.instance.modify_flavor`` when a resize is done (Trove
  dropped the volume one in 2020; Ceilometer still defines it, and billing needs it);
- ``trove.instance.delete`` once the server and volume are released, with ``deleted_at``.

Payloads are ``TroveBaseTraits`` + ``TroveCommonTraits`` with the types Ceilometer's event definitions
declare: ``instance_size``, ``volume_size`` and the ``old_*`` sizes are ints; every time is an ISO 8601
UTC string Ceilometer parses as a datetime. ``state`` is the lower-cased Trove status at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.public_events import PublicEvent

# Trove's ``notification_service_id`` defaults: one static id per datastore manager.
SERVICE_IDS: Mapping[str, str] = {
    "mysql": "2f3ff068-2bfb-4f70-9a9d-a6bb65bc084b",
    "percona": "fd1723f5-68d2-409c-994f-a4a197892a17",
    "pxc": "75a628c3-f81b-4ffb-b10a-4087c26bc854",
    "redis": "b216ffc5-1947-456c-a4cf-70f94c05f7d0",
    "cassandra": "459a230d-4e97-4344-9067-2a54a310b0ed",
    "couchbase": "fa62fe68-74d9-4779-a24e-36f19602c415",
    "mongodb": "c8c907af-7375-456f-b929-b637ff9209ee",
    "postgresql": "ac277e0d-4f21-40aa-b347-1ea31e571720",
    "couchdb": "f0a9ab7b-66f7-4352-93d7-071521d44c7c",
    "db2": "e040cd37-263d-4869-aaa6-c62aa97523b5",
    "mariadb": "7a4f82cc-10d2-4bc6-aadc-d9aacc2a3cb5",
}
UNKNOWN_SERVICE_ID = "unknown-service-id-error"

CREATE, MODIFY_VOLUME, MODIFY_FLAVOR, DELETE = (
    "trove.instance.create", "trove.instance.modify_volume", "trove.instance.modify_flavor", "trove.instance.delete")


@dataclass(frozen=True)
class UsageNotification:
    event_type: str
    payload: dict[str, Any]


def iso_utc(occurred_at: str) -> str:
    """Trove's ``timeutils.isotime``: ``2026-08-14T10:47:45Z``."""
    return datetime.fromisoformat(occurred_at).strftime("%Y-%m-%dT%H:%M:%SZ")


class InstanceUsage:
    """Folds instance events into usage notifications; ``instances`` (by instance id) is what it must
    remember between events, kept by the caller (a read model) so a restarted notifier goes on."""

    def __init__(self, instances: MutableMapping[str, dict[str, Any]], service_ids: Mapping[str, str] = SERVICE_IDS,
                 ) -> None:
        self._instances = instances
        self._service_ids = service_ids

    def notifications(self, event: PublicEvent) -> list[UsageNotification]:
        if event.aggregate_type != "Instance":
            return []
        data, key = event.data, event.aggregate_id
        if event.type == "CreateRequested":
            self._instances[key] = {
                "name": data["name"], "tenant_id": event.tenant_id, "user_id": event.user_id,
                "created_at": iso_utc(event.occurred_at), "flavor": data["flavor"],
                "volume_size": data.get("volume_size"),
                "region": data["region"], "availability_zone": data.get("availability_zone"),
                # Events from before the manager was kept: the default catalog names datastores by manager.
                "manager": data.get("datastore_manager") or data["datastore"], "server_id": None, "volume_id": None,
                "state": "build", "healthy_once": False,
            }
            return []
        known = self._instances.get(key)
        if known is None:
            return []  # an instance created before this notifier's history began: nothing to bill from
        notes: list[UsageNotification] = []
        if event.type == "ServerProvisioned":
            known.update(server_id=data.get("server_id"), volume_id=data.get("volume_id"))
        elif event.type == "OperationSucceeded" and data.get("operation") == "create" and not known["healthy_once"]:
            known.update(healthy_once=True, state="active", billed_from=iso_utc(event.occurred_at))
            notes.append(UsageNotification(CREATE, self.payload(key, known)))
        elif event.type == "OperationFailed" and data.get("operation") == "create":
            known["state"] = "error"
        elif event.type == "VolumeResized":
            known["volume_size"] = data["volume_size"]
            notes.append(UsageNotification(MODIFY_VOLUME, {
                **self.payload(key, known), "old_volume_size": int(data["old_volume_size"]),
                "modify_at": iso_utc(event.occurred_at)}))
        elif event.type == "FlavorResized":
            known["flavor"] = data["flavor"]
            notes.append(UsageNotification(MODIFY_FLAVOR, {
                **self.payload(key, known), "old_instance_size": int(data["old_flavor"]["ram"]),
                "modify_at": iso_utc(event.occurred_at)}))
        elif event.type == "DeleteRequested":
            known["state"] = "shutdown"
        elif event.type == "Deleted":
            del self._instances[key]
            if known["healthy_once"]:  # a build that never came up was never billed as created
                notes.append(UsageNotification(DELETE, {**self.payload(key, known),
                                                        "deleted_at": iso_utc(event.occurred_at)}))
            return notes
        self._instances[key] = known  # a persisted mapping must see the change
        return notes

    def payload(self, instance_id: str, known: Mapping[str, Any]) -> dict[str, Any]:
        """``TroveBaseTraits`` + ``TroveCommonTraits`` of an instance as remembered."""
        flavor = known["flavor"]
        payload = {
            # TroveBaseTraits
            "created_at": known["created_at"], "launched_at": known["created_at"], "name": known["name"],
            "instance_id": instance_id, "instance_name": known["name"], "instance_type_id": str(flavor["id"]),
            "instance_type": flavor.get("name"), "nova_instance_id": known["server_id"], "region": known["region"],
            "state": known["state"], "state_description": known["state"], "tenant_id": known["tenant_id"],
            "user_id": known["user_id"], "service_id": self._service_ids.get(known["manager"], UNKNOWN_SERVICE_ID),
            # TroveCommonTraits
            "instance_size": int(flavor["ram"]), "availability_zone": known["availability_zone"],
        }
        if known["volume_size"] is not None:
            payload.update(volume_size=int(known["volume_size"]), nova_volume_id=known["volume_id"])
        return payload
