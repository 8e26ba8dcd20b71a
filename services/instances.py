"""Instance commands: what the API asks for and what the task manager and conductor record.

Each method loads the aggregates it needs, lets the domain decide, and saves every resulting event
in one transaction. A concurrent writer to the same aggregate (the conductor recording a status while
a user restarts) makes the save fail on the event store's version check; the command is then run
again on fresh state, so no caller sees a spurious conflict.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain import datastore_objects as objects
from domain.backup import Backup, validate_backup_name, validate_description
from domain.context import OperationContext
from domain.errors import InvalidRequest, NotFound
from domain.instance import CREATE, Instance, initial_users, validate_name
from domain.public_events import PublicEvent, to_public_event
from domain.quota import BACKUPS, INSTANCES, VOLUMES, Quota, quota_id
from domain.statuses import ServiceStatus
from services.application import TroveApplication
from services.catalog import CatalogService
from services.ports import SecretDrop

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ATTEMPTS = 12


@dataclass
class _Settlement:
    """One quota settlement waiting to be saved, maybe together with others of its tenant."""

    context: dict[str, Any]
    request_id: str
    commit: bool
    changed: bool = False
    finished: bool = False
    error: BaseException | None = None


@dataclass(frozen=True)
class CreateInstance:
    """A validated create request: shapes and types are the API's job, meaning is the domain's."""

    name: str
    flavor_ref: Any
    volume_size: int | None
    datastore: str | None
    datastore_version: str | None
    availability_zone: str | None = None
    databases: list[str] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)  # name, host, databases: never a password
    # User name → password: only ever sealed into the secret drop, never in an event.
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    restore_backup_id: str | None = None  # ``restorePoint.backupRef``: build from this backup


class InstanceService(TroveApplication):
    # A tenant's quota is written by every create and delete it ever had; a snapshot every 50 events
    # keeps loading it short however old the tenant is.
    snapshotting_intervals: ClassVar[dict[type[Aggregate], int]] = {Quota: 50}

    def __init__(self, *args: Any, quota_defaults: dict[str, int] | None = None, region: str = "RegionOne",
                 secret_drop: SecretDrop | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Where a create's passwords wait, sealed, for its guest; without one they are accepted and dropped.
        self.secret_drop = secret_drop
        self._load_locks = [threading.Lock() for _ in range(64)]  # striped: bounded however many aggregates
        self._quota_locks = [threading.Lock() for _ in range(64)]  # striped, like the load locks
        self._settlements: dict[str, list[_Settlement]] = {}  # by tenant, waiting for its quota
        self._settlements_lock = threading.Lock()
        self.quota_defaults = dict(quota_defaults or {})
        self.region = region
        self.catalog = CatalogService(env=self.env)

    def close(self) -> None:
        self.catalog.close()
        super().close()

    # Reads --------------------------------------------------------------------------------------

    def get(self, instance_id: UUID | str, context: OperationContext | None = None, *,
            admin: bool = False, include_deleted: bool = False, to_change: bool = True) -> Instance:
        """The instance, or ``NotFound`` when it does not exist or belongs to another tenant.

        For a caller's request (``context`` given) a deleted instance does not exist either, as in
        Trove: scripts wait for NotFound after a delete. The stack's own processes see it.

        ``to_change=False`` hands out the cached aggregate itself rather than a copy, for callers that
        only look at it: a deep copy per look was a large part of the task manager's time. Later loads
        may move it on meanwhile, which is safe because an Instance's events only assign attributes.
        """
        try:
            instance: Instance = self._load(_uuid(instance_id), copy=to_change)
        except (AggregateNotFoundError, ValueError):
            raise NotFound(f"Instance {instance_id} could not be found.") from None
        if not isinstance(instance, Instance):  # a backup's id: random like an instance's, but no instance
            raise NotFound(f"Instance {instance_id} could not be found.")
        if context is not None and not admin and instance.tenant_id != context.tenant_id:
            raise NotFound(f"Instance {instance_id} could not be found.")
        if context is not None and instance.deleted and not include_deleted:
            raise NotFound(f"Instance {instance_id} could not be found.")
        return instance

    def history(self, instance_id: UUID | str) -> list[PublicEvent]:
        """The instance's events as the stream carries them, oldest first (empty for an unknown id)."""
        try:
            return [to_public_event(event) for event in self.repository.event_store.get(_uuid(instance_id))]
        except ValueError:
            return []

    def quota(self, tenant_id: str) -> Quota | None:
        """A copy of the tenant's quota (its events change its dicts in place, so it is never shared)."""
        try:
            return self._load(quota_id(tenant_id), copy=True)
        except AggregateNotFoundError:
            return None

    # User commands ------------------------------------------------------------------------------

    def create(self, context: OperationContext, request: CreateInstance) -> tuple[Instance, int]:
        """Accept a create: the instance (BUILD) and its quota reservation are saved together.

        Returns the instance and its version after the write (what a reader must see, to read its writes).
        """
        name = validate_name(request.name)
        if request.volume_size is not None and request.volume_size < 1:
            raise InvalidRequest("Volume size must be a positive integer.")
        flavor = self.catalog.flavor(request.flavor_ref)
        version = self.catalog.datastore_version(request.datastore, request.datastore_version)
        databases, users = _initial_objects(request, version.manager, version.datastore)
        if request.restore_backup_id is not None:
            self._check_restorable(context, request, version.manager)

        def attempt() -> tuple[Instance, int]:
            instance = Instance(
                context=context.recorded(), operation=CREATE, name=name, tenant_id=context.tenant_id,
                flavor=flavor.summary(), volume_size=request.volume_size, datastore=version.datastore,
                datastore_version=version.name, datastore_version_id=str(version.id),
                availability_zone=request.availability_zone, region=self.region,
                databases=databases, users=users, image_id=version.image_id,
                datastore_manager=version.manager)
            if request.restore_backup_id is not None:
                instance.restore_from(context.recorded(), request.restore_backup_id)
            quota = self.quota(context.tenant_id) or Quota(tenant_id=context.tenant_id)
            deltas = {INSTANCES: 1, VOLUMES: request.volume_size or 0}
            quota.reserve(context.recorded(), str(instance.id), deltas, self.quota_defaults)
            if self.secret_drop is not None and request.passwords:
                # Before the create is saved, so its task manager always finds them; a save that then
                # fails leaves a drop for an instance that never was, which the drop purges.
                self.secret_drop.put(str(instance.id), context.request_id, request.passwords)
            self.save(instance, quota)
            return instance, instance.version

        with self._quota_writes(context.tenant_id):
            return retrying(attempt)

    def _check_restorable(self, context: OperationContext, request: CreateInstance, manager: str | None) -> None:
        """As Trove: the backup must be the caller's, COMPLETED, of the same datastore, and fit the volume."""
        backup = self.get_backup(str(request.restore_backup_id), context)
        if not backup.restorable:
            raise InvalidRequest(f"Backup {backup.id} cannot be restored: it is {backup.status}"
                                 f"{' and being deleted' if backup.deleting else ''}.")
        if (backup.datastore_manager or backup.datastore) != (manager or backup.datastore):
            raise InvalidRequest(f"Backup {backup.id} is of datastore {backup.datastore} {backup.datastore_version}; "
                                 "restore it into an instance of the same datastore.")
        if backup.volume_size and (request.volume_size or 0) < backup.volume_size:
            raise InvalidRequest(f"Backup {backup.id} needs a volume of at least {backup.volume_size} GB.")

    def restart(self, context: OperationContext, instance_id: UUID | str, *, admin: bool = False) -> int:
        return self._command(context, instance_id, admin, lambda i: i.restart(context.recorded()))

    def resize_volume(self, context: OperationContext, instance_id: UUID | str, new_size: int, *,
                      admin: bool = False) -> int:
        def attempt() -> int:
            instance = self.get(instance_id, context, admin=admin)
            instance.resize_volume(context.recorded(), new_size)
            quota = self.quota(instance.tenant_id) or Quota(tenant_id=instance.tenant_id)
            quota.reserve(context.recorded(), str(instance.id), {VOLUMES: new_size - (instance.volume_size or 0)},
                          self.quota_defaults)
            self.save(instance, quota)
            return instance.version

        return retrying(attempt)

    def resize_flavor(self, context: OperationContext, instance_id: UUID | str, flavor_ref: Any, *,
                      admin: bool = False) -> int:
        flavor = self.catalog.flavor(flavor_ref)
        return self._command(context, instance_id, admin, lambda i: i.resize_flavor(context.recorded(),
                                                                                     flavor.summary()))

    def rename(self, context: OperationContext, instance_id: UUID | str, name: str, *, admin: bool = False) -> int:
        return self._command(context, instance_id, admin, lambda i: i.rename(context.recorded(), name))

    def reset_status(self, context: OperationContext, instance_id: UUID | str) -> int:
        return self._command(context, instance_id, True, lambda i: i.reset_status(context.recorded()))

    def delete(self, context: OperationContext, instance_id: UUID | str, *, admin: bool = False) -> int:
        return self._command(context, instance_id, admin, lambda i: i.delete(context.recorded()))

    # Backups ----------------------------------------------------------------------------------------

    def create_backup(self, context: OperationContext, instance_id: UUID | str, name: Any,
                      description: Any = None, parent_id: str | None = None) -> tuple[Backup, int]:
        """Accept a backup of the instance: the Backup (NEW), the instance's backup operation and the backup
        quota's reservation are saved together. Returns the backup and the instance's version after the write."""
        name = validate_backup_name(name)
        description = validate_description(description)
        if parent_id is not None:
            parent = self.get_backup(parent_id, context)
            if str(parent.instance_id) != str(instance_id):
                raise InvalidRequest(f"Backup {parent_id} is not a backup of instance {instance_id}.")
            raise InvalidRequest("Incremental backups are not supported by this deployment's datastores; "
                                 "create a full backup (no parent_id).")

        def attempt() -> tuple[Backup, int]:
            instance = self.get(instance_id, context)
            backup = Backup(context=context.recorded(), tenant_id=instance.tenant_id, instance_id=str(instance.id),
                            name=name, description=description, parent_id=parent_id,
                            datastore=instance.datastore, datastore_version=instance.datastore_version,
                            datastore_version_id=instance.datastore_version_id,
                            datastore_manager=instance.datastore_manager, volume_size=instance.volume_size)
            instance.back_up(context.recorded(), str(backup.id), name, description, parent_id)
            quota = self.quota(instance.tenant_id) or Quota(tenant_id=instance.tenant_id)
            quota.reserve(context.recorded(), str(instance.id), {BACKUPS: 1}, self.quota_defaults)
            self.save(instance, backup, quota)
            return backup, instance.version

        with self._quota_writes(context.tenant_id):
            return retrying(attempt)

    def get_backup(self, backup_id: UUID | str, context: OperationContext | None = None, *,
                   admin: bool = False) -> Backup:
        """The backup, or ``NotFound`` when it does not exist, is deleted, or belongs to another tenant."""
        try:
            backup: Backup = self._load(_uuid(backup_id), copy=True)
        except (AggregateNotFoundError, ValueError):
            raise NotFound(f"Backup {backup_id} could not be found.") from None
        if not isinstance(backup, Backup) or (context is not None and (
                backup.deleted or (not admin and backup.tenant_id != context.tenant_id))):
            raise NotFound(f"Backup {backup_id} could not be found.")
        return backup

    def delete_backup(self, context: OperationContext, backup_id: UUID | str, *, admin: bool = False) -> None:
        def attempt() -> None:
            backup = self.get_backup(backup_id, context, admin=admin)
            backup.request_delete(context.recorded())
            self.save(backup)

        retrying(attempt)

    def record_backup(self, backup_id: UUID | str, change: Callable[[Backup], Any]) -> Any:
        """Apply ``change`` to the backup and save (the task manager's record of what storage holds)."""
        return self._changed(lambda: self.get_backup(backup_id), change)

    def release_backup_quota(self, context: OperationContext, backup: Backup) -> None:
        self._release_usage(context, backup.tenant_id, backup.instance_id, {BACKUPS: 1})

    def set_quota_limits(self, context: OperationContext, tenant_id: str, limits: dict[str, int]) -> Quota:
        def attempt() -> Quota:
            quota = self.quota(tenant_id) or Quota(tenant_id=tenant_id)
            quota.change_limits(context.recorded(), limits)
            self.save(quota)
            return quota

        with self._quota_writes(tenant_id):
            return retrying(attempt)

    # Recorded by the task manager and the conductor ------------------------------------------------

    def record(self, instance_id: UUID | str, change: Callable[[Instance], Any]) -> Any:
        """Apply ``change`` to the instance and save; retried on a concurrent write."""
        return self._changed(lambda: self.get(instance_id), change)

    def changes(self) -> InstanceChanges:
        """Changes to several instances, saved together (``InstanceChanges``)."""
        return InstanceChanges(self)

    def change_service_status(self, context: OperationContext, instance_id: UUID | str,
                              status: ServiceStatus) -> bool:
        return bool(self.record(instance_id, lambda i: i.change_service_status(context.recorded(), status)))

    def settle_quota(self, context: OperationContext, tenant_id: str, request_id: str, *, commit: bool) -> bool:
        """Commit (the resource exists) or release a reservation; False when already settled.

        Settlements of one tenant that wait for its quota together are saved together: whoever takes
        the quota next settles every one queued by then, in one save, and the others find theirs done.
        A burst of builds ending then costs the event store a few saves, not one per build.
        """
        mine = _Settlement(context.recorded(), request_id, commit)
        with self._settlements_lock:
            self._settlements.setdefault(tenant_id, []).append(mine)
        with self._quota_writes(tenant_id):
            if not mine.finished:
                with self._settlements_lock:
                    batch = self._settlements.pop(tenant_id, [])
                try:
                    retrying(lambda: self._settle_together(tenant_id, batch))
                except BaseException as error:
                    for settlement in batch:
                        settlement.error, settlement.finished = error, True
                    raise
        if mine.error is not None:
            raise mine.error
        return mine.changed

    def _settle_together(self, tenant_id: str, batch: list[_Settlement]) -> None:
        quota = self.quota(tenant_id)
        for settlement in batch:
            settlement.changed = quota is not None and (
                quota.commit(settlement.context, settlement.request_id) if settlement.commit
                else quota.release_reservation(settlement.context, settlement.request_id))
        if quota is not None and quota.pending_events:
            self.save(quota)
        for settlement in batch:
            settlement.finished = True

    def release_instance_quota(self, context: OperationContext, instance: Instance) -> None:
        self._release_usage(context, instance.tenant_id, str(instance.id),
                            {INSTANCES: 1, VOLUMES: instance.volume_size or 0})

    def _release_usage(self, context: OperationContext, tenant_id: str, instance_id: str,
                       deltas: dict[str, int]) -> None:
        def attempt() -> None:
            quota = self.quota(tenant_id)
            if quota is not None:
                quota.release_usage(context.recorded(), instance_id, deltas)
                self.save(quota)

        with self._quota_writes(tenant_id):
            retrying(attempt)

    def _changed(self, load: Callable[[], Any], change: Callable[[Any], T]) -> T:
        """Load an aggregate, apply ``change`` and save what it recorded; run again on a concurrent write."""
        def attempt() -> T:
            aggregate = load()
            result = change(aggregate)
            if aggregate.pending_events:
                self.save(aggregate)
            return result

        return retrying(attempt)

    # ------------------------------------------------------------------------------------------------

    def _load(self, aggregate_id: UUID, *, copy: bool) -> Any:
        """The aggregate from the library's cache, moved on to its latest version.

        The library moves a cached aggregate on in place and copies it outside the lock that guards
        that: one thread could copy it while another applied new events to it ("dictionary changed
        size during iteration", a 500 under concurrent creates). Loads of one aggregate take turns.
        """
        with self._load_locks[hash(aggregate_id) % len(self._load_locks)]:
            return self.repository.get(aggregate_id, deepcopy_from_cache=copy)

    def _quota_writes(self, tenant_id: str) -> threading.Lock:
        """Held while this process writes a tenant's quota.

        Every create and settlement of a tenant writes its one Quota aggregate. Threads of one process
        (the API's, the task manager's) then take turns instead of colliding on its version and
        retrying the whole command; writers in other processes still collide and retry.
        """
        return self._quota_locks[hash(tenant_id) % len(self._quota_locks)]

    def _command(self, context: OperationContext, instance_id: UUID | str, admin: bool,
                 change: Callable[[Instance], None]) -> int:
        """Run a user command; returns the instance's version after the write."""
        def attempt() -> int:
            instance = self.get(instance_id, context, admin=admin)
            change(instance)
            self.save(instance)
            return instance.version

        return retrying(attempt)


def _initial_objects(request: CreateInstance, manager: str | None,
                     datastore: str) -> tuple[list[str], list[dict[str, Any]]]:
    """A create's databases and users, their names checked as the datastore takes them."""
    if not request.databases and not request.users:
        return [], []
    rules = objects.rules_for(manager, datastore)
    databases = [objects.database_name(rules, name) for name in request.databases]
    users = [{"name": objects.user_name(rules, user["name"]), "host": objects.user_host(rules, user["host"]),
              "databases": [objects.database_name(rules, name) for name in user["databases"]]}
             for user in initial_users(request.users)]
    return databases, users


class InstanceChanges:
    """Changes to several instances, applied in order and saved in one transaction.

    Twenty guests reporting at once then cost one write, not twenty; each instance is loaded once
    however many of the changes touch it. If another process wrote one of them meanwhile, the save
    fails as a whole and every change is applied again one instance at a time, each retried like
    ``InstanceService.record``: a change must be safe to apply to fresher state (check, then act).
    """

    def __init__(self, instances: InstanceService) -> None:
        self._instances = instances
        self._loaded: dict[str, Instance] = {}
        self._applied: list[tuple[str, Callable[[Instance], Any]]] = []

    def apply(self, instance_id: UUID | str, change: Callable[[Instance], T]) -> T:
        """``change``'s result on the instance as this batch has it; ``NotFound`` for an unknown one."""
        key = str(instance_id)
        instance = self._loaded.get(key)
        if instance is None:
            instance = self._loaded[key] = self._instances.get(key)
        self._applied.append((key, change))
        return change(instance)

    def save(self) -> None:
        changed = [instance for instance in self._loaded.values() if instance.pending_events]
        if changed:
            try:
                self._instances.save(*changed)
            except IntegrityError:
                log.info("an instance changed meanwhile; applying %d changes one instance at a time",
                         len(self._applied))
                for key, change in self._applied:
                    with contextlib.suppress(NotFound):  # deleted meanwhile: nothing left to change
                        self._instances.record(key, change)
        self._loaded.clear()
        self._applied.clear()


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def retrying(attempt: Callable[[], T]) -> T:
    """Run ``attempt`` until its save wins the version check.

    Concurrent creates in one tenant all write its Quota aggregate, so they collide by design; a short,
    growing, jittered pause spreads the retries out instead of letting them collide again in step.
    """
    for tried in range(1, MAX_ATTEMPTS + 1):
        try:
            return attempt()
        except IntegrityError:
            if tried == MAX_ATTEMPTS:
                raise
            log.info("concurrent write to the same aggregate; running the command again on fresh state")
            time.sleep(random.uniform(0, 0.002 * 2 ** min(tried, 6)))
    raise AssertionError("unreachable")
