"""Trove's DBaaS API lifecycle notifications: which operations notify, under which event types, with
which traits (``trove/common/notification.py``; trove-source-behaviour §1.2 and §1.3).

Every state-changing API operation notifies ``dbaas.<event_type>.start`` when it is accepted and
then exactly one ``.end`` or ``.error``. This module is the catalogue and the payload rule; the
notifier projection (issue 4) decides *when* from the operation events.

Where Trove is wrong, this catalogue is not, and says so:

- payloads hold the base traits and the stage's declared traits only (Trove sends every key it ever
  accumulated, including undeclared ones such as ``locality``);
- ``promote_to_replica_source`` notifies ``instance_promote`` and ``eject_replica_source``
  ``instance_eject`` (Trove swaps the two);
- ``.end`` and ``.error`` repeat the start traits (as Trove's do), so a consumer that saw only the
  end still knows what ended.

Trove's own odd names are kept, because Ceilometer and existing consumers match on them:
``dbaas.upgrade.*`` for an instance upgrade, and ``dbaas.quota`` (not an API notification; see
``QUOTA_EVENT_TYPE``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.context import ADMIN_ROLE
from domain.datastore_objects import ROOT_DISABLE, ROOT_ENABLE, notified_traits
from domain.instance import initial_users
from domain.public_events import PublicEvent

BASE_TRAITS = ("tenant_id", "client_ip", "server_ip", "server_type", "request_id")
ERROR_REQUIRED = ("message", "exception")
ERROR_OPTIONAL = ("instance_id",)
START, END, ERROR = "start", "end", "error"
QUOTA_EVENT_TYPE = "dbaas.quota"


class MissingTraits(ValueError):
    """A notification lacks a trait its stage requires: a bug in what built it, never a client's."""


@dataclass(frozen=True)
class ApiNotification:
    event_type: str  # Trove's ``event_type()``: ``instance_create`` → ``dbaas.instance_create.*``
    required_start: tuple[str, ...]
    optional_start: tuple[str, ...] = ()
    required_end: tuple[str, ...] = ()
    optional_end: tuple[str, ...] = ()

    def qualified(self, stage: str) -> str:
        if stage not in (START, END, ERROR):
            raise ValueError(f"unknown notification stage {stage!r}")
        return f"dbaas.{self.event_type}.{stage}"

    def declared(self, stage: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(required, optional) traits of ``stage``, the base traits included."""
        start = (BASE_TRAITS + self.required_start, self.optional_start)
        if stage == START:
            return start
        if stage == END:
            return start[0] + self.required_end, start[1] + self.optional_end
        if stage == ERROR:
            return start[0] + ERROR_REQUIRED, start[1] + ERROR_OPTIONAL
        raise ValueError(f"unknown notification stage {stage!r}")

    def payload(self, stage: str, traits: Mapping[str, Any]) -> dict[str, Any]:
        """The declared traits of ``stage`` from ``traits``: every required one (its value may be null,
        as Trove's availability zone is when none was asked for), and the optional ones that have a value."""
        required, optional = self.declared(stage)
        missing = [name for name in required if name not in traits]
        if missing:
            raise MissingTraits(f"{self.qualified(stage)} lacks {', '.join(missing)}")
        chosen = {name: traits[name] for name in required}
        chosen.update((name, traits[name]) for name in optional if traits.get(name) is not None)
        return chosen


def _n(event_type: str, *required_start: str, optional: Iterable[str] = (), end: Iterable[str] = (),
       optional_end: Iterable[str] = ()) -> ApiNotification:
    return ApiNotification(event_type, tuple(required_start), tuple(optional), tuple(end), tuple(optional_end))


# By the operation name the domain records on its operation events (``Instance`` and, as they land,
# the aggregates for databases, users, backups, configurations and clusters).
API_NOTIFICATIONS: dict[str, ApiNotification] = {
    # instances
    "create": _n("instance_create", "name", "flavor_id", "datastore", "datastore_version", "image_id",
                 "availability_zone", "region_name",
                 optional=("databases", "users", "volume_size", "restore_point", "replica_of", "replica_count",
                           "cluster_id", "backup_id", "nics"),
                 end=("instance_id",)),
    "delete": _n("instance_delete", "instance_id"),
    "restart": _n("instance_restart", "instance_id"),
    "reboot": _n("instance_reboot", "instance_id"),
    "resize_volume": _n("instance_resize_volume", "instance_id", "new_size"),
    "resize_instance": _n("instance_resize_instance", "instance_id", "new_flavor_id"),
    "reset_status": _n("instance_reset_status", "instance_id"),
    "detach": _n("instance_detach", "instance_id"),
    "attach_configuration": _n("instance_attach_configuration", "instance_id", "configuration_id"),
    "detach_configuration": _n("instance_detach_configuration", "instance_id"),
    "promote_to_replica_source": _n("instance_promote", "instance_id"),
    "eject_replica_source": _n("instance_eject", "instance_id"),
    "upgrade": _n("upgrade", "instance_id", "datastore_version_id"),
    # databases and users
    "database_create": _n("database_create", "instance_id", "dbname"),
    "database_delete": _n("database_delete", "instance_id", "dbname"),
    "user_create": _n("user_create", "instance_id", "username"),
    "user_delete": _n("user_delete", "instance_id", "username"),
    "user_update_attributes": _n("user_update_attributes", "instance_id", "username"),
    "user_change_password": _n("user_change_password", "instance_id", "username"),
    "user_grant": _n("user_grant", "instance_id", "username", "database"),
    "user_revoke": _n("user_revoke", "instance_id", "username", "database"),
    # backups
    "backup_create": _n("backup_create", "name", "instance_id", "description", "parent_id", end=("backup_id",)),
    "backup_delete": _n("backup_delete", "backup_id"),
    # configurations
    "configuration_create": _n("configuration_create", "name", "datastore", "datastore_version",
                               end=("configuration_id",)),
    "configuration_delete": _n("configuration_delete", "configuration_id"),
    "configuration_update": _n("configuration_update", "configuration_id", "name", "description"),
    "configuration_edit": _n("configuration_edit", "configuration_id"),
    # clusters
    "cluster_create": _n("cluster_create", "name", "datastore", "datastore_version", end=("cluster_id",)),
    "cluster_delete": _n("cluster_delete", "cluster_id"),
    "cluster_restart": _n("cluster_restart", "cluster_id"),
    "cluster_upgrade": _n("cluster_upgrade", "cluster_id", "datastore_version"),
    "cluster_reset_status": _n("cluster_reset_status", "cluster_id"),
    "cluster_grow": _n("cluster_grow", "cluster_id", end=("cluster_id",), optional_end=("instance_ids",)),
    "cluster_shrink": _n("cluster_shrink", "cluster_id", optional=("instance_ids",), end=("cluster_id",),
                         optional_end=("instance_ids",)),
    "cluster_add_shard": _n("cluster_add_shard", "cluster_id"),
    "cluster_attach_configuration": _n("cluster_attach_configuration", "cluster_id", "configuration_id"),
    "cluster_detach_configuration": _n("cluster_detach_configuration", "cluster_id"),
}

# Operations that change state but that Trove does not notify: a rename (``PUT`` with only a name).
# Nor enabling or disabling root, which Trove audits only in its root history.
SILENT_OPERATIONS = frozenset({"update", ROOT_ENABLE, ROOT_DISABLE})


def notification_for(operation: str) -> ApiNotification | None:
    """The notification an operation sends, ``None`` for one Trove keeps silent; unknown names are a bug."""
    if operation in SILENT_OPERATIONS:
        return None
    try:
        return API_NOTIFICATIONS[operation]
    except KeyError:
        raise KeyError(f"operation {operation!r} has no notification mapping; add it to "
                       "domain/notifications.API_NOTIFICATIONS or SILENT_OPERATIONS") from None


# The wire: oslo.messaging's "messagingv2" notification, as its Kafka driver sends it -------------------

OSLO_VERSION = "2.0"
INFO, ERROR_PRIORITY = "INFO", "ERROR"
# Message ids derive from the event a notification comes from, so a replay re-emits identical messages.
NOTIFICATION_ID_NAMESPACE = uuid.UUID("0b7c2a4e-3f51-4d0e-9a8b-5c1e6f2d7a90")


def message_id_for(source_event_id: str, event_type: str) -> str:
    return str(uuid.uuid5(NOTIFICATION_ID_NAMESPACE, f"{source_event_id}/{event_type}"))


def oslo_timestamp(moment: datetime) -> str:
    """oslo's ``str(timeutils.utcnow())``: UTC, a space, microseconds, no zone (``2026-08-14 10:47:45.123456``)."""
    if moment.tzinfo is None:
        raise ValueError("a notification's time must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class NotificationContext:
    """What ``_context`` carries: who asked, never how they proved it (no token, no catalog)."""

    request_id: str | None
    user_id: str | None
    project_id: str | None
    roles: tuple[str, ...] = ()
    is_admin: bool = False

    @classmethod
    def of(cls, event: PublicEvent) -> NotificationContext:
        """The context of the request ``event`` belongs to; ``is_admin`` as Trove's policy decides it, by
        the ``admin`` role."""
        roles = tuple((event.data.get("context") or {}).get("roles") or ())
        return cls(request_id=event.request_id, user_id=event.user_id, project_id=event.tenant_id, roles=roles,
                   is_admin=ADMIN_ROLE in roles)

    def as_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "user_id": self.user_id, "project_id": self.project_id,
                "roles": list(self.roles), "is_admin": self.is_admin}


@dataclass(frozen=True)
class Notification:
    message_id: str
    publisher_id: str  # ``<server_type>.<host>``, e.g. ``api.h1``
    event_type: str
    priority: str
    payload: dict[str, Any]
    timestamp: str
    context: NotificationContext

    def message(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "publisher_id": self.publisher_id, "event_type": self.event_type,
                "priority": self.priority, "payload": self.payload, "timestamp": self.timestamp,
                "_context": self.context.as_dict()}

    def to_wire(self) -> bytes:
        """``{"oslo.version": "2.0", "oslo.message": "<json>"}``: the message is a JSON string inside JSON."""
        return json.dumps({"oslo.version": OSLO_VERSION,
                           "oslo.message": json.dumps(self.message(), sort_keys=True, separators=(",", ":"))},
                          separators=(",", ":")).encode()

    def topic(self, info: str = "notifications.info", error: str = "notifications.error", *,
              errors_on_info: bool = False) -> str:
        """The info or the error topic by priority; ``errors_on_info`` sends errors to info, as Trove does."""
        return error if self.priority == ERROR_PRIORITY and not errors_on_info else info


# From instance events to the traits their notifications carry -------------------------------------------

def base_traits(event: PublicEvent) -> dict[str, Any]:
    """Trove's base traits from an event's operation context (the envelope and ``data["context"]``)."""
    rest = event.data.get("context") or {}
    return {"tenant_id": event.tenant_id, "request_id": event.request_id, "client_ip": rest.get("client_ip"),
            "server_ip": rest.get("server_ip"), "server_type": rest.get("server_type")}


def _create_traits(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": data["name"], "flavor_id": str(data["flavor"]["id"]), "datastore": data["datastore"],
            "datastore_version": data["datastore_version"], "image_id": data.get("image_id"),
            "availability_zone": data.get("availability_zone"), "region_name": data["region"],
            "volume_size": data.get("volume_size"), "databases": data.get("databases") or None,
            "users": [user["name"] for user in initial_users(data.get("users"))] or None}


# The instance events that open an operation, and the start traits each gives beyond the base ones.
_OPENING_INSTANCE_EVENTS: dict[str, Any] = {
    "CreateRequested": _create_traits,
    "RestartRequested": lambda data: {},
    "VolumeResizeRequested": lambda data: {"new_size": data["new_volume_size"]},
    "FlavorResizeRequested": lambda data: {"new_flavor_id": str(data["new_flavor"]["id"])},
    "StatusReset": lambda data: {},
    "DeleteRequested": lambda data: {},
    "Renamed": lambda data: {},
    "GuestChangeRequested": lambda data: notified_traits(data["operation"], data["change"]),
    "BackupRequested": lambda data: {"backup_id": data["backup_id"], "name": data["name"],
                                     "description": data["description"], "parent_id": data["parent_id"]},
}


# Every instance event that opens an operation: the projections that follow operations take exactly these.
OPENING_EVENTS = frozenset(_OPENING_INSTANCE_EVENTS)


def opened_operation(event: PublicEvent) -> tuple[str, dict[str, Any]] | None:
    """The operation an instance event opens and its start traits (base traits included), or ``None``
    for an event that opens none."""
    traits_of = _OPENING_INSTANCE_EVENTS.get(event.type)
    if traits_of is None or event.aggregate_type != "Instance":
        return None
    # Always the instance id: where a stage does not declare it (a create's start), ``payload`` leaves it out.
    traits = {**base_traits(event), **traits_of(event.data), "instance_id": event.aggregate_id}
    return event.data["operation"], traits
