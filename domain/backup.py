"""A backup of one instance's datastore: what was asked for, where it is kept, and what arrived.

The backup outlives its instance (a deleted instance's backups can still be restored), so it is an
aggregate of its own. Taking it is an operation *of the instance* (``Instance.back_up``: the instance
shows BACKUP meanwhile and refuses other actions, as Trove's); this aggregate records the outcome the
task manager saw: ``BUILDING`` once the guest has a target, then ``COMPLETED`` with the size and
checksum of the stored bytes, or ``FAILED`` with why. Deleting it is an operation of its own.

Statuses are Trove's: NEW, BUILDING, COMPLETED, FAILED, DELETE_FAILED (a deleted backup is gone).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import ActionNotAllowed, InvalidRequest

Context = dict[str, Any]

NEW, BUILDING, COMPLETED, FAILED, DELETE_FAILED = "NEW", "BUILDING", "COMPLETED", "FAILED", "DELETE_FAILED"
STATUSES = (NEW, BUILDING, COMPLETED, FAILED, DELETE_FAILED)
BACKUP_CREATE, BACKUP_DELETE = "backup_create", "backup_delete"

NAME_MAX_LENGTH = 80  # Trove's backups.name column
DESCRIPTION_MAX_LENGTH = 512


def validate_backup_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("Backup name must be a non-empty string.")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidRequest(f"Backup name must be at most {NAME_MAX_LENGTH} characters.")
    return name


def validate_description(description: Any) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX_LENGTH:
        raise InvalidRequest(f"Backup description must be a string of at most {DESCRIPTION_MAX_LENGTH} characters.")
    return description


class Backup(Aggregate):
    @event("BackupCreated")
    def __init__(self, *, context: Context, tenant_id: str, instance_id: str, name: str, description: str | None,
                 parent_id: str | None, datastore: str, datastore_version: str, datastore_version_id: str,
                 datastore_manager: str | None, volume_size: int | None) -> None:
        self.tenant_id = tenant_id
        self.instance_id = instance_id
        self.name = name
        self.description = description
        self.parent_id = parent_id
        self.datastore = datastore
        self.datastore_version = datastore_version
        self.datastore_version_id = datastore_version_id
        self.datastore_manager = datastore_manager
        # What a restore needs at least: Trove refuses a restore onto a smaller volume.
        self.volume_size = volume_size
        self.request_id: str = context["request_id"]
        self.status = NEW
        self.location: str | None = None
        self.size: int | None = None
        self.checksum: str | None = None
        self.fail_reason: str | None = None
        self.deleting = False
        self.deleted = False

    @event("BackupStarted")
    def record_started(self, context: Context, location: str) -> None:
        """The guest was handed where to write it."""
        self.status = BUILDING
        self.location = location

    def complete(self, context: Context, size: int, checksum: str) -> None:
        if self.status in (NEW, BUILDING):
            self._completed(context, size, checksum)

    @event("BackupCompleted")
    def _completed(self, context: Context, size: int, checksum: str) -> None:
        self.status = COMPLETED
        self.size = size
        self.checksum = checksum

    def fail(self, context: Context, message: str) -> None:
        if self.status in (NEW, BUILDING):
            self._failed(context, message[:2000])

    @event("BackupFailed")
    def _failed(self, context: Context, message: str) -> None:
        self.status = FAILED
        self.fail_reason = message

    def request_delete(self, context: Context) -> None:
        """As Trove: a backup still being taken cannot be deleted (422)."""
        if self.deleted:
            return
        if self.status in (NEW, BUILDING):
            raise ActionNotAllowed(f"Backup {self.id} cannot be deleted while it is {self.status}; "
                                   "wait until it is COMPLETED or FAILED.")
        self._delete_requested(context, BACKUP_DELETE)

    @event("BackupDeleteRequested")
    def _delete_requested(self, context: Context, operation: str) -> None:
        self.deleting = True
        self.request_id = context["request_id"]

    @event("BackupDeleted")
    def record_deleted(self, context: Context) -> None:
        self.deleted = True
        self.deleting = False

    @event("BackupDeleteFailed")
    def record_delete_failed(self, context: Context, message: str) -> None:
        self.status = DELETE_FAILED
        self.deleting = False
        self.fail_reason = message[:2000]

    @property
    def counted(self) -> bool:
        """It holds a unit of the tenant's backup quota: it was stored whole, and a delete has not removed it
        (a delete that failed leaves it stored, and counted)."""
        return self.checksum is not None and not self.deleted

    @property
    def restorable(self) -> bool:
        return self.status == COMPLETED and not self.deleted and not self.deleting


BACKUP_EVENTS: tuple[type, ...] = (
    Backup.BackupCreated, Backup.BackupStarted, Backup.BackupCompleted, Backup.BackupFailed,  # type: ignore[attr-defined]
    Backup.BackupDeleteRequested, Backup.BackupDeleted, Backup.BackupDeleteFailed,  # type: ignore[attr-defined]
)
