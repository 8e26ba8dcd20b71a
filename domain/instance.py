"""The instance aggregate: one database instance's whole life, as events.

Every state-changing API call is an *operation*: the event that accepts it names the operation
(Trove's notification names: ``create``, ``restart``, ``resize_volume``, ``resize_instance``,
``update``, ``reset_status``, ``delete``) and the operation ends with exactly one
``OperationSucceeded`` or ``OperationFailed``. Notifications and fault history are projections of
those pairs, so they hold however many processes took part in between.

Each event carries the operation's ``context`` (see ``domain.context``). Nothing here is a secret:
the initial users are recorded by name, host and databases only. Their passwords reach the guest by
another way than the event stream: sealed under the instance's key in a drop the task manager empties
into the guest's ``prepare`` and discards once the build is over (``services.ports.SecretDrop``).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.backup import BACKUP_CREATE
from domain.datastore_objects import apply_change, new_objects
from domain.errors import ActionNotAllowed, InvalidRequest
from domain.statuses import (
    SERVER_ACTIVE,
    SERVER_BUILD,
    SERVER_DELETED,
    ServiceStatus,
    TaskStatus,
    action_refusal,
)

Context = dict[str, Any]

# Trove's operation names, as its DBaaS notifications use them.
CREATE, RESTART, RESIZE_VOLUME, RESIZE_FLAVOR = "create", "restart", "resize_volume", "resize_instance"
UPDATE, RESET_STATUS, DELETE = "update", "reset_status", "delete"

NAME_MAX_LENGTH = 255


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("Instance name must be a non-empty string.")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidRequest(f"Instance name must be at most {NAME_MAX_LENGTH} characters.")
    return name


def initial_users(recorded: list[Any] | None) -> list[dict[str, Any]]:
    """A create's users as ``{"name", "host", "databases"}``; creates recorded before hosts and databases
    were kept hold bare names."""
    users = []
    for user in recorded or []:
        if isinstance(user, str):
            user = {"name": user}
        users.append({"name": user["name"], "host": user.get("host") or "%",
                      "databases": list(user.get("databases") or [])})
    return users


class Instance(Aggregate):
    @event("CreateRequested")
    def __init__(self, *, context: Context, operation: str, name: str, tenant_id: str, flavor: dict[str, Any],
                 volume_size: int | None, datastore: str, datastore_version: str, datastore_version_id: str,
                 availability_zone: str | None, region: str, databases: list[str], users: list[Any],
                 image_id: str | None, datastore_manager: str | None) -> None:
        self.name = name
        self.restore_backup_id: str | None = None  # the backup the guest builds the datastore from
        # The datastore version's, as accepted: Trove's create notification names the image, and its
        # usage notifications identify the datastore by its manager's service id.
        self.image_id = image_id
        self.datastore_manager = datastore_manager
        self.tenant_id = tenant_id
        self.flavor = flavor
        self.volume_size = volume_size
        self.datastore = datastore
        self.datastore_version = datastore_version
        self.datastore_version_id = datastore_version_id
        self.region = region
        self.server_id: str | None = None
        self.volume_id: str | None = None
        self.task = TaskStatus.BUILDING
        self.server_status: str | None = SERVER_BUILD
        self.service_status = ServiceStatus.NEW
        self.deleted = False
        self.guest_topic: str | None = None  # set once prepare has been handed to the guest's channel
        self.operation: dict[str, Any] | None = {"name": operation, "request_id": context["request_id"],
                                                 "context": context}
        self.pending_change: dict[str, Any] = {}
        self.guest_faults: dict[str, str] = {}  # conditions the guest reports (its volume full), by name
        self.last_backup: dict[str, Any] | None = None  # what the guest last stored (``record_backup_taken``)
        # The datastore's databases, users and root as its operations left them; the create's count once built.
        self.datastore_objects = new_objects()
        self.pending_change = {"objects": (CREATE, {"databases": list(databases), "users": initial_users(users)})}

    @event("RestorePointChosen")
    def restore_from(self, context: Context, backup_id: str) -> None:
        """Build the datastore from this backup (``restorePoint``), saved with the create."""
        self.restore_backup_id = backup_id

    # Provisioning, recorded by the task manager -----------------------------------------------

    @event("ServerProvisioned")
    def _server_provisioned(self, context: Context, server_id: str, volume_id: str | None,
                            server_status: str, addresses: list[dict[str, Any]]) -> None:
        self.server_id, self.volume_id, self.server_status = server_id, volume_id, server_status

    def record_server_provisioned(self, context: Context, server_id: str, volume_id: str | None,
                                  server_status: str, addresses: list[dict[str, Any]]) -> None:
        self._server_provisioned(context, server_id, volume_id, server_status, addresses)

    @event("ServerStatusChanged")
    def record_server_status(self, context: Context, server_status: str, fault: str | None = None,
                             addresses: list[dict[str, Any]] | None = None) -> None:
        """``addresses`` when the cloud assigned them since the server was provisioned (Nova does once ACTIVE)."""
        self.server_status = server_status

    @event("PrepareSent")
    def record_prepare_sent(self, context: Context, guest_topic: str) -> None:
        self.guest_topic = guest_topic

    @event("ServiceStatusChanged")
    def _service_status_changed(self, context: Context, service_status: str, previous: str) -> None:
        self.service_status = ServiceStatus.from_description(service_status)

    def change_service_status(self, context: Context, status: ServiceStatus) -> bool:
        """Record a change of the guest's datastore status; False (nothing recorded) when unchanged."""
        if status is self.service_status or self.deleted:
            return False
        self._service_status_changed(context, status.description, self.service_status.description)
        self._end_build_on(context, status)
        return True

    def _end_build_on(self, context: Context, status: ServiceStatus) -> None:
        """A build ends when its guest, once prepared, reports the datastore up or failed.

        This is Trove's task manager waiting on the guest's status, decided where the status is
        recorded: the same save closes the build, with no further round through the task manager.
        """
        if self.operation is None or self.operation["name"] != CREATE or self.guest_topic is None:
            return
        if status.build_outcome is True:
            self.succeed(context)
        elif status.build_outcome is False:
            self.fail(context, message=f"Service not active, status: {status.description}", traceback=[],
                      task="BUILDING_ERROR_SERVER")

    def report_guest_fault(self, context: Context, condition: str, message: str) -> bool:
        """Record a condition the guest raised (its volume is full); False when it was already recorded."""
        if self.deleted or condition in self.guest_faults:
            return False
        self._guest_fault_reported(context, condition, message)
        return True

    @event("GuestFaultReported")
    def _guest_fault_reported(self, context: Context, condition: str, message: str) -> None:
        self.guest_faults = {**self.guest_faults, condition: message}

    def clear_guest_fault(self, context: Context, condition: str) -> bool:
        if condition not in self.guest_faults:
            return False
        self._guest_fault_cleared(context, condition)
        return True

    @event("GuestFaultCleared")
    def _guest_fault_cleared(self, context: Context, condition: str) -> None:
        self.guest_faults = {name: text for name, text in self.guest_faults.items() if name != condition}

    # User operations ------------------------------------------------------------------------------

    def _check_can_act(self) -> None:
        self._check_not_deleting()
        refusal = action_refusal(self.task, self.server_status, self.service_status, self.backup_running)
        if refusal is not None:
            status_type, status = refusal
            raise ActionNotAllowed(
                f"Instance {self.id} is not currently available for an action to be performed "
                f"({status_type} status was {status}).")

    def _check_not_deleting(self) -> None:
        if self.deleted or self.task is TaskStatus.DELETING:
            raise ActionNotAllowed(f"Instance {self.id} is being deleted.")

    def restart(self, context: Context) -> None:
        self._check_can_act()
        self._restart_requested(context, RESTART)

    @event("RestartRequested")
    def _restart_requested(self, context: Context, operation: str) -> None:
        self._open(context, operation, TaskStatus.REBOOTING)

    def resize_volume(self, context: Context, new_size: int) -> None:
        self._check_can_act()
        if self.volume_size is None:
            raise InvalidRequest("This instance has no volume to resize.")
        if new_size <= self.volume_size:
            raise InvalidRequest(f"The new volume 'size' must be larger than the current volume size of "
                                 f"'{self.volume_size}'.")
        self._volume_resize_requested(context, RESIZE_VOLUME, self.volume_size, new_size)

    @event("VolumeResizeRequested")
    def _volume_resize_requested(self, context: Context, operation: str, old_volume_size: int,
                                 new_volume_size: int) -> None:
        self._open(context, operation, TaskStatus.RESIZING)
        self.pending_change = {"volume_size": new_volume_size}

    @event("VolumeResized")
    def record_volume_resized(self, context: Context, old_volume_size: int, volume_size: int) -> None:
        self.volume_size = volume_size

    def resize_flavor(self, context: Context, new_flavor: dict[str, Any]) -> None:
        self._check_can_act()
        if str(new_flavor["id"]) == str(self.flavor["id"]):
            raise InvalidRequest("The new flavor id must be different than the current flavor id of "
                                 f"'{self.flavor['id']}'.")
        self._flavor_resize_requested(context, RESIZE_FLAVOR, self.flavor, new_flavor)

    @event("FlavorResizeRequested")
    def _flavor_resize_requested(self, context: Context, operation: str, old_flavor: dict[str, Any],
                                 new_flavor: dict[str, Any]) -> None:
        self._open(context, operation, TaskStatus.RESIZING)
        self.pending_change = {"flavor": new_flavor}

    @event("FlavorResized")
    def record_flavor_resized(self, context: Context, old_flavor: dict[str, Any], flavor: dict[str, Any]) -> None:
        self.flavor = flavor

    def request_guest_change(self, context: Context, operation: str, change: dict[str, Any]) -> None:
        """A change of the datastore's databases, users or root, for the guest to carry out (validated by the
        caller against ``domain.datastore_objects``). It leaves the task as it is, as Trove's do, but it is
        the instance's one open operation until its guest answers."""
        self._check_can_act()
        if self.operation is not None:
            raise ActionNotAllowed(f"Instance {self.id} is busy with its {self.operation['name']} operation; "
                                   f"try again when it has finished.")
        self._guest_change_requested(context, operation, change)

    @event("GuestChangeRequested")
    def _guest_change_requested(self, context: Context, operation: str, change: dict[str, Any]) -> None:
        self.operation = {"name": operation, "request_id": context["request_id"], "context": context}
        self.pending_change = {"objects": (operation, change)}

    def back_up(self, context: Context, backup_id: str, name: str, description: str | None,
                parent_id: str | None) -> None:
        """Open the backup's operation: the instance shows BACKUP and refuses other actions until it closes:
        the guest's failure fails it, or its ``record_backup_taken`` and then the task manager's check of
        the storage (``succeed`` or ``fail``)."""
        self._check_can_act()
        if self.operation is not None:
            raise ActionNotAllowed(f"Instance {self.id} is busy with its {self.operation['name']} operation; "
                                   f"try again when it has finished.")
        self._backup_requested(context, BACKUP_CREATE, backup_id, name, description, parent_id)

    @event("BackupRequested")
    def _backup_requested(self, context: Context, operation: str, backup_id: str, name: str,
                          description: str | None, parent_id: str | None) -> None:
        self.operation = {"name": operation, "request_id": context["request_id"], "context": context,
                          "backup_id": backup_id}

    def report_backup_progress(self, context: Context, backup_id: str, stored_bytes: int) -> bool:
        """Record how much of its running backup the guest has stored; False (nothing recorded) when that
        backup is not running or the figure is no news."""
        if not self._running_backup(backup_id):
            return False
        if stored_bytes <= self.operation.get("stored_bytes", -1):
            return False
        self._backup_progressed(context, backup_id, stored_bytes)
        return True

    @event("BackupProgressed")
    def _backup_progressed(self, context: Context, backup_id: str, stored_bytes: int) -> None:
        assert self.operation is not None
        self.operation = {**self.operation, "stored_bytes": stored_bytes}

    def record_backup_taken(self, context: Context, backup_id: str, size: int, checksum: str) -> bool:
        """What the guest stored for the running backup (bytes and ``sha256:<hex>`` of them), before its
        operation closes; False (nothing recorded) when it is not running or this was recorded already."""
        if not self._running_backup(backup_id):
            return False
        if (self.last_backup or {}).get("backup_id") == backup_id:
            return False
        self._backup_taken(context, backup_id, size, checksum)
        return True

    @event("BackupTaken")
    def _backup_taken(self, context: Context, backup_id: str, size: int, checksum: str) -> None:
        self.last_backup = {"backup_id": backup_id, "size": size, "checksum": checksum}

    @property
    def backup_running(self) -> bool:
        return self.operation is not None and self.operation["name"] == BACKUP_CREATE

    def _running_backup(self, backup_id: str) -> bool:
        return self.operation is not None and self.operation["name"] == BACKUP_CREATE and \
            self.operation["backup_id"] == backup_id

    def rename(self, context: Context, name: str) -> None:
        """Synchronous: the operation opens and succeeds in one save, leaving any open operation alone."""
        self._check_not_deleting()
        self._renamed(context, UPDATE, self.name, validate_name(name))
        self._operation_succeeded(context, UPDATE, context["request_id"])

    @event("Renamed")
    def _renamed(self, context: Context, operation: str, old_name: str, name: str) -> None:
        self.name = name

    def reset_status(self, context: Context) -> None:
        """Admin escape hatch (Trove ``reset_status``): task NONE, datastore status UNKNOWN.

        Any open operation is closed as failed first, so its notification stream still ends.
        """
        if self.deleted:
            raise ActionNotAllowed(f"Instance {self.id} has been deleted.")
        if self.operation is not None:
            self.fail(self.operation["context"], message="The operation was interrupted by a status reset.",
                      traceback=[], task=self.task.name if self.task.is_error else TaskStatus.NONE.name)
        self._status_reset(context, RESET_STATUS)
        self._operation_succeeded(context, RESET_STATUS, context["request_id"])

    @event("StatusReset")
    def _status_reset(self, context: Context, operation: str) -> None:
        self.task = TaskStatus.NONE
        self.service_status = ServiceStatus.UNKNOWN

    def delete(self, context: Context) -> None:
        self._check_not_deleting()
        if self.operation is not None:
            # A delete supersedes whatever was going on (a stuck build, a resize): close it first.
            self.fail(self.operation["context"], message="The operation was superseded by a delete request.",
                      traceback=[], task=self.task.name if self.task.is_error else TaskStatus.NONE.name)
        self._delete_requested(context, DELETE)

    @event("DeleteRequested")
    def _delete_requested(self, context: Context, operation: str) -> None:
        self._open(context, operation, TaskStatus.DELETING)

    @event("Deleted")
    def record_deleted(self, context: Context) -> None:
        self.deleted = True
        self.server_status = SERVER_DELETED
        self.service_status = ServiceStatus.DELETED

    # Operation outcomes -----------------------------------------------------------------------------

    def _open(self, context: Context, operation: str, task: TaskStatus) -> None:
        self.operation = {"name": operation, "request_id": context["request_id"], "context": context}
        self.task = task

    def succeed(self, context: Context) -> None:
        if self.operation is None:
            return
        self._operation_succeeded(context, self.operation["name"], self.operation["request_id"])

    @event("OperationSucceeded")
    def _operation_succeeded(self, context: Context, operation: str, request_id: str) -> None:
        if not self.operation_open(request_id):
            return  # a synchronous operation (rename, reset) closing itself
        if "objects" in self.pending_change:
            done, change = self.pending_change["objects"]
            if done == CREATE:
                self.datastore_objects = new_objects(change["databases"], change["users"])
            else:
                apply_change(self.datastore_objects, done, change)
        self.operation = None
        self.pending_change = {}
        if self.task is not TaskStatus.DELETING or operation != DELETE:
            self.task = TaskStatus.NONE

    def fail(self, context: Context, message: str, traceback: list[str], task: str = "NONE") -> None:
        """Close the open operation as failed; ``task`` is the task status it leaves (an error one for builds)."""
        if self.operation is None:
            return
        self._operation_failed(context, self.operation["name"], self.operation["request_id"], message,
                               list(traceback), task)

    @event("OperationFailed")
    def _operation_failed(self, context: Context, operation: str, request_id: str, message: str,
                          traceback: list[str], task: str) -> None:
        if not self.operation_open(request_id):
            return
        self.operation = None
        self.pending_change = {}
        self.task = TaskStatus[task]

    # Queries ------------------------------------------------------------------------------------------

    def operation_open(self, request_id: str | None = None) -> bool:
        return self.operation is not None and (request_id is None or self.operation["request_id"] == request_id)

    @property
    def is_active(self) -> bool:
        return self.server_status == SERVER_ACTIVE and self.task is TaskStatus.NONE


def _create_requested_v1_to_v2(state: dict[str, Any]) -> None:
    # Version 1 kept neither; they are not known now.
    state["image_id"] = None
    state["datastore_manager"] = None


# Event classes named in ``@event`` are made by the decorator, so their versions are declared here.
Instance.CreateRequested.class_version = 2  # type: ignore[attr-defined]
Instance.CreateRequested.upcast_v1_v2 = staticmethod(_create_requested_v1_to_v2)  # type: ignore[attr-defined]

INSTANCE_EVENTS: tuple[type, ...] = (
    Instance.CreateRequested, Instance.ServerProvisioned, Instance.ServerStatusChanged, Instance.PrepareSent,
    Instance.ServiceStatusChanged, Instance.RestartRequested, Instance.VolumeResizeRequested,
    Instance.VolumeResized, Instance.FlavorResizeRequested, Instance.FlavorResized, Instance.Renamed,
    Instance.StatusReset, Instance.DeleteRequested, Instance.Deleted, Instance.OperationSucceeded,
    Instance.OperationFailed, Instance.GuestChangeRequested, Instance.GuestFaultReported, Instance.GuestFaultCleared,
    Instance.BackupRequested, Instance.BackupProgressed, Instance.BackupTaken, Instance.RestorePointChosen,
)
