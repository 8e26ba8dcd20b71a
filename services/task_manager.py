"""The task manager: a process manager that turns requested operations into compute and guest work.

It has two halves in one process:

- ``apply(event, transaction)`` consumes ``trove.events`` through the effectively-once consumer runner
  and only writes work items (``services.ports.WorkItems``; in SQL the ``task_manager_work`` table),
  one per operation in flight (instance, operation, request_id, step, deadline), committed with the
  Kafka offset. It never calls a cloud or a guest, so a crash there cannot leave a half-done effect.
- A driver (threads beside the consumer) runs due work items: it calls the compute driver and the
  guests, records each outcome as an event through ``InstanceService``, then advances the item.

Every step checks the aggregate before acting and compute calls are idempotent per instance, so a
step repeated after ``kill -9`` does no harm and in-flight operations resume from their work items.
Builds and guest operations have deadlines, so nothing waits forever. Only one driver runs per
deployment (a lease); any number of processes may consume.

An operation's item is *parked* (no ``due_at``) once the driver has closed it or seen it closed; the
``OperationSucceeded``/``OperationFailed`` event then removes it and, for creates and volume
resizes, queues the quota settlement (a create is committed whether it succeeded or failed: the
instance exists, in ERROR, until deleted, as in Trove; a failed volume resize is released unless
the volume did grow). A delete releases the instance's quota in the same save as ``Deleted``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain import backup as backups
from domain import guest_protocol as protocol
from domain.backup import BACKUP_CREATE, Backup
from domain.catalog import domain_catalog
from domain.context import OperationContext
from domain.datastore_objects import WITH_PASSWORDS, user_key
from domain.errors import NotFound
from domain.instance import CREATE, RESIZE_VOLUME, Instance, initial_users
from domain.public_events import PublicEvent
from domain.quota import INSTANCES, VOLUMES
from domain.statuses import (
    SERVER_ACTIVE,
    SERVER_BUILD,
    SERVER_ERROR,
    SERVER_REBOOT,
    SERVER_RESIZE,
    SERVER_VERIFY_RESIZE,
    ServiceStatus,
)
from services.instances import InstanceService
from services.ports import (
    BackupStorage,
    BackupStorageError,
    BackupTarget,
    ComputeDriver,
    ComputeError,
    GuestChannel,
    GuestSealer,
    Lease,
    LeaseLost,
    SecretDrop,
    ServerSpec,
    WorkItem,
    WorkItems,
)
from services.usage_audit import UsageAuditor

log = logging.getLogger(__name__)

SETTLE, REFRESH = "settle", "refresh"
AWAIT_HEALTHY, AWAIT_CLOSE, CLOSED = "await_healthy", "await_close", "closed"
GUEST = "guest"  # the kind of a change to the datastore's databases, users or root
BACKUP, BACKUP_REMOVAL = "backup", "backup_delete"
_REQUESTS = {"CreateRequested": ("create", "create_server"), "RestartRequested": ("restart", "send"),
             "VolumeResizeRequested": ("resize_volume", "compute"),
             "FlavorResizeRequested": ("resize_flavor", "compute"), "DeleteRequested": ("delete", "stop_guest"),
             "GuestChangeRequested": (GUEST, "send"), "BackupRequested": (BACKUP, "send")}
# A backup's own delete: its work item is keyed by the backup's id (it outlives its instance).
_BACKUP_DELETES = frozenset({"BackupDeleteRequested"})
_CLOSES = frozenset({"OperationSucceeded", "OperationFailed"})
_SERVER_IN_TRANSITION = frozenset({SERVER_BUILD, SERVER_REBOOT, SERVER_RESIZE, SERVER_VERIFY_RESIZE})
_MAX_CHAIN = 12  # steps one worker runs back to back before giving others a turn


def sealed_target(target: BackupTarget, instance_id: str, sealer: GuestSealer | None) -> dict[str, Any]:
    """``target`` as a guest command carries it (``protocol.BACKUP_TARGET_FIELDS``): a signed URL, which
    lets whoever reads it fetch or overwrite the backup, only sealed for the instance's guest."""
    sealed_url = None
    if target.url is not None:
        if sealer is None:
            raise ValueError("a signed backup URL cannot go to a guest without a sealer for it")
        sealed_url = sealer.seal(instance_id, target.url)
    return {"kind": target.kind, "location": target.location, "sealed_url": sealed_url}


def local_ip() -> str:
    """This host's address, recorded as ``server_ip`` on the events this process writes."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@dataclass(frozen=True)
class Outcome:
    step: str
    due_at: float | None  # None: parked
    done: bool = False  # delete the item (settlements only; operations wait for their closing event)


class TaskManager:
    name = "task-manager"
    # What ``apply`` acts on; the consumer runner skips the rest of the stream unread.
    handles = frozenset({*_REQUESTS, "StatusReset", "ServiceStatusChanged", "BackupTaken", *_CLOSES,
                         *_BACKUP_DELETES})

    def __init__(self, *, instances: InstanceService, compute: ComputeDriver, guests: GuestChannel, work: WorkItems,
                 usage_timeout_s: float, operation_timeout_s: float | None = None, lease: Lease | None = None,
                 workers: int = 8, poll_s: float = 0.05, compute_poll_s: float = 0.1, recheck_s: float = 5.0,
                 server_ip: str | None = None, clock: Callable[[], float] = time.time,
                 auditor: UsageAuditor | None = None, secrets: SecretDrop | None = None,
                 backups: BackupStorage | None = None, sealer: GuestSealer | None = None) -> None:
        self.instances = instances
        self._backups = backups  # where guests stream backups to; without one, a backup fails at once
        self._sealer = sealer  # seals a backup's signed URL for its guest
        self._secrets = secrets  # a create's users' passwords, sealed for its guest by the API
        self._auditor = auditor  # ends the periodic notifications' audit periods, while this one drives
        self.compute = compute
        self.guests = guests
        self.catalog = domain_catalog()
        self._work = work
        self.usage_timeout_s = usage_timeout_s
        self.operation_timeout_s = operation_timeout_s if operation_timeout_s is not None else usage_timeout_s
        self._lease = lease
        self._workers = max(1, workers)
        self._poll_s = poll_s
        self._compute_poll_s = compute_poll_s
        self._recheck_s = recheck_s
        self.server_ip = server_ip or local_ip()
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._driver: threading.Thread | None = None
        self._images: dict[str, str] = {}
        self._steps: dict[tuple[str, str], Callable[[WorkItem], Outcome]] = {
            ("create", "create_server"): self._create_server, ("create", "wait_server"): self._wait_server,
            ("create", "prepare"): self._prepare, ("create", AWAIT_HEALTHY): self._await_healthy,
            ("restart", "send"): self._send_guest_command, ("restart", AWAIT_CLOSE): self._await_close,
            ("resize_volume", "compute"): self._resize_volume, ("resize_volume", "wait_compute"): self._volume_resized,
            ("resize_volume", "send"): self._send_guest_command, ("resize_volume", AWAIT_CLOSE): self._await_close,
            ("resize_flavor", "compute"): self._resize_flavor, ("resize_flavor", "wait_compute"): self._flavor_resized,
            ("resize_flavor", "send"): self._send_guest_command, ("resize_flavor", AWAIT_CLOSE): self._await_close,
            (GUEST, "send"): self._send_guest_change, (GUEST, AWAIT_CLOSE): self._await_close,
            (BACKUP, "send"): self._send_backup, (BACKUP, AWAIT_CLOSE): self._await_backup,
            (BACKUP_REMOVAL, BACKUP_REMOVAL): self._remove_backup,
            ("delete", "stop_guest"): self._stop_guest, ("delete", "delete_server"): self._delete_server,
            ("delete", "wait_gone"): self._wait_gone, ("delete", "remove_topic"): self._remove_topic,
            ("delete", "record"): self._record_deleted, (SETTLE, SETTLE): self._settle,
            (REFRESH, REFRESH): self._refresh_server_status,
        }

    # Consumer half: only this process's own rows, in the consumer's transaction ------------------------

    def apply(self, event: PublicEvent, transaction: Any) -> None:
        """Take ``event`` in the consumer runner's ``transaction``, handed to the work items untouched."""
        now = self._clock()
        if event.aggregate_type == "Backup" and event.type in _BACKUP_DELETES:
            self._add(transaction, event.aggregate_id, event.request_id or "", BACKUP_REMOVAL,
                      event.data["operation"], BACKUP_REMOVAL, _context_of(event), {}, None, now)
            self._work.after_commit(transaction, self._wake.set)
            return
        if event.aggregate_type != "Instance":
            return
        log.debug("event %s of %s v%d", event.type, event.aggregate_id, event.version)
        if event.type in _REQUESTS:
            kind, step = _REQUESTS[event.type]
            # Counted from when this task manager takes the work on, as Trove's usage_timeout is: the bound is
            # on the build itself, and a request that waited out a task-manager outage still gets its chance.
            timeout = self.usage_timeout_s if kind == "create" else self.operation_timeout_s
            self._add(transaction, event.aggregate_id, event.request_id or "", kind, event.data["operation"], step,
                      _context_of(event), _detail_of(event), now + timeout, now)
        elif event.type == "StatusReset":
            # The reset trusts nothing it knew; what the cloud says of the server is looked up again.
            self._add(transaction, event.aggregate_id, event.request_id or "", REFRESH, event.data["operation"],
                      REFRESH, _context_of(event), {}, now + self.operation_timeout_s, now)
        elif event.type == "ServiceStatusChanged":
            # Only a status that decides a build is worth a look; normally the same save closed the build
            # and the closing event, next in this batch, removes the item again.
            if ServiceStatus.from_description(event.data["service_status"]).build_outcome is not None:
                self._work.wake(transaction, event.aggregate_id, AWAIT_HEALTHY, now)
        elif event.type == "BackupTaken":
            self._work.wake(transaction, event.aggregate_id, AWAIT_CLOSE, now)  # storage is to be checked
        elif event.type in _CLOSES:
            self._operation_closed(event, transaction, now)
        else:
            return
        # Let the driver look as soon as this transaction commits, not at its next poll.
        self._work.after_commit(transaction, self._wake.set)

    def _operation_closed(self, event: PublicEvent, transaction: Any, now: float) -> None:
        operation, request_id = event.data["operation"], event.data["request_id"]
        detail = self._work.remove_operation(transaction, event.aggregate_id, request_id, (SETTLE, REFRESH)) or {}
        if operation in (CREATE, RESIZE_VOLUME, BACKUP_CREATE) or operation in WITH_PASSWORDS:
            detail.update(operation=operation, succeeded=event.type == "OperationSucceeded",
                          message=event.data.get("message") or "")
            self._add(transaction, event.aggregate_id, request_id, SETTLE, operation, SETTLE, _context_of(event),
                      detail, None, now)

    def _add(self, transaction: Any, instance_id: str, request_id: str, kind: str, operation: str, step: str,
             context: dict[str, Any], detail: dict[str, Any], deadline: float | None, now: float) -> None:
        self._work.add(transaction, WorkItem(
            instance_id=instance_id, request_id=request_id, kind=kind, operation=operation, step=step,
            context=context, detail=detail, deadline=deadline, due_at=now, wakes=0, attempts=0, last_error=None,
            created_at=now))

    # Driver half --------------------------------------------------------------------------------------

    def start_driver(self) -> None:
        self._driver = threading.Thread(target=self._drive, name="task-manager-driver", daemon=True)
        self._driver.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        if self._driver is not None:
            self._driver.join(timeout)

    def _drive(self) -> None:
        with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="task-manager-step") as pool:
            while not self._stop.is_set():
                if self._lease is not None and not self._lease.try_acquire():
                    self._stop.wait(1.0)  # another task manager drives; this one only consumes
                    continue
                log.info("task manager driver running")
                try:
                    self._drive_while_leased(pool)
                except LeaseLost as exc:
                    log.error("task manager lost its driver lease (%s); waiting to take it again", exc)
                finally:
                    self._release_lease()

    def _release_lease(self) -> None:
        if self._lease is None:
            return
        try:
            self._lease.release()
        except Exception as exc:  # a lease whose connection died is already gone
            log.warning("could not release the task manager lease cleanly: %s", exc)

    def _drive_while_leased(self, pool: ThreadPoolExecutor) -> None:
        checked = 0.0
        while not self._stop.is_set():
            if self._lease is not None and time.monotonic() - checked >= 1.0:
                self._lease.check()
                checked = time.monotonic()
            try:
                self._dispatch(pool)
            except Exception:
                log.exception("task manager driver could not read its work items; retrying")
                self._stop.wait(1.0)
            self._audit()
            self._wake.wait(self._poll_s)
            self._wake.clear()

    def _audit(self) -> None:
        if self._auditor is None:
            return
        try:
            self._auditor.tick()
        except Exception:  # the next loop tries again; instances must not wait for the audit
            log.exception("task manager could not end the due audit periods; retrying")

    def _dispatch(self, pool: ThreadPoolExecutor) -> None:
        for item in self._work.due(self._workers * 4, self._clock()):
            with self._busy_lock:
                if item.instance_id in self._busy or len(self._busy) >= self._workers:
                    continue  # one step per instance at a time keeps each instance's steps in order
                self._busy.add(item.instance_id)
            log.debug("dispatching %s %s (%s), %.0f ms after it fell due", item.kind, item.instance_id,
                      item.step, (self._clock() - item.due_at) * 1000)
            pool.submit(self._run_and_release, item)

    def _run_and_release(self, item: WorkItem) -> None:
        try:
            self._run_chain(item)
        except Exception:
            log.exception("task manager could not run or save a step of %s %s", item.kind, item.request_id)
        finally:
            with self._busy_lock:
                self._busy.discard(item.instance_id)
            self._wake.set()

    def _run_chain(self, item: WorkItem) -> None:
        """Run the item's step, then the next ones while they are due at once (no trip through the dispatcher)."""
        # Re-read once: the dispatcher's list may be older than a step another worker just saved. Later steps
        # run on the row each save returns, which is what a re-read would find.
        current = self._work.get(item.instance_id, item.request_id, item.kind)
        if current is None or current.step != item.step:
            return
        for _ in range(_MAX_CHAIN):
            if current is None or not self._due(current) or self._stop.is_set():
                return
            current = self._run(current)

    def _due(self, item: WorkItem) -> bool:
        return item.due_at is not None and item.due_at <= self._clock()

    def _run(self, item: WorkItem) -> WorkItem | None:
        step = self._steps.get((item.kind, item.step))
        error = None
        started = time.monotonic()
        try:
            if step is None:
                raise RuntimeError(f"no step {item.step!r} for {item.kind}")
            outcome = step(item)
        except Exception as exc:
            log.exception("%s %s of instance %s failed at step %s (attempt %d)", item.kind, item.request_id,
                          item.instance_id, item.step, item.attempts + 1)
            error = f"{exc.__class__.__name__}: {exc}"
            outcome = self._after_error(item, error)
        log.debug("%s %s: %s -> %s in %.0f ms", item.kind, item.instance_id, item.step, outcome.step,
                  (time.monotonic() - started) * 1000)
        return self._save(item, outcome, error)

    def _after_error(self, item: WorkItem, error: str) -> Outcome:
        deadline = item.deadline
        if deadline is not None and self._clock() >= deadline:
            try:
                if item.kind == "create":
                    return self._build_timed_out(item)
                self._fail(item, f"The {item.operation} operation could not be completed: {error}", "NONE")
                return self._park(item)
            except Exception:
                log.exception("could not record the failure of %s %s", item.kind, item.request_id)
        delay = min(0.5 * 2 ** min(item.attempts, 6), 30.0)
        return Outcome(item.step, self._clock() + delay)

    def _save(self, item: WorkItem, outcome: Outcome, error: str | None) -> WorkItem | None:
        """Store the outcome unless the item changed meanwhile; the item as now stored, None once it is gone."""
        return self._work.save(item, step=outcome.step, due_at=outcome.due_at,
                               attempts=item.attempts + 1 if error else 0, last_error=error, now=self._clock(),
                               done=outcome.done)

    # Helpers ---------------------------------------------------------------------------------------------

    def _now(self, step: str) -> Outcome:
        return Outcome(step, self._clock())

    def _park(self, item: WorkItem) -> Outcome:
        return Outcome(CLOSED, None)

    def _context(self, item: WorkItem) -> dict[str, Any]:
        return OperationContext.from_recorded(item.context).carried_by(
            "taskmanager", self.server_ip).recorded()

    def _open_instance(self, item: WorkItem, *, to_change: bool = False) -> Instance | None:
        """The instance, when the item's operation is still open on it; only to look at unless ``to_change``."""
        try:
            instance = self.instances.get(item.instance_id, to_change=to_change)
        except NotFound:
            return None
        return instance if instance.operation_open(item.request_id) else None

    def _record(self, item: WorkItem, change: Callable[[Instance, dict[str, Any]], Any]) -> bool:
        """Apply ``change`` if the operation is still open; False when it was closed meanwhile."""
        context = self._context(item)

        def guarded(instance: Instance) -> bool:
            if not instance.operation_open(item.request_id):
                return False
            change(instance, context)
            return True

        return bool(self.instances.record(item.instance_id, guarded))

    def _fail(self, item: WorkItem, message: str, task: str, traceback: list[str] | None = None) -> None:
        self._record(item, lambda i, c: i.fail(c, message=message, traceback=traceback or [], task=task))

    def _expired(self, item: WorkItem) -> bool:
        return item.deadline is not None and self._clock() >= item.deadline

    def _build_timed_out(self, item: WorkItem) -> Outcome:
        message = (f"Failed to create instance {item.instance_id}. Timeout waiting for instance to become "
                   f"active. No usage create-event was sent.")

        def change(instance: Instance, context: dict[str, Any]) -> None:
            # Failed first: the guest's new status would otherwise end the build with its own message.
            instance.fail(context, message=message, traceback=[], task="BUILDING_ERROR_TIMEOUT_GA")
            instance.change_service_status(context, ServiceStatus.FAILED_TIMEOUT_GUESTAGENT)

        self._record(item, change)
        return self._park(item)

    def _server_failed(self, item: WorkItem, status: str, fault: str | None) -> Outcome:
        message = f"Server not active, status: {status}, fault message: {fault or 'unknown'}"

        def change(instance: Instance, context: dict[str, Any]) -> None:
            if instance.server_status != status:
                instance.record_server_status(context, status, fault=fault)
            instance.fail(context, message=message, traceback=[], task="BUILDING_ERROR_SERVER")

        self._record(item, change)
        return self._park(item)

    # Create ----------------------------------------------------------------------------------------------

    def _create_server(self, item: WorkItem) -> Outcome:
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        if instance.server_id:
            return self._now("wait_server")
        if self._expired(item):
            return self._build_timed_out(item)
        spec = ServerSpec(instance_id=item.instance_id, name=instance.name, flavor=dict(instance.flavor),
                          volume_size=instance.volume_size, image_id=self._image_id(instance.datastore_version_id),
                          availability_zone=item.detail.get("availability_zone"),
                          datastore_manager=instance.datastore_manager or "")
        # The guest's topic first: a server that boots at once then finds it there, and its guest
        # attaches without waiting for a second look.
        topic = self.guests.ensure(item.instance_id)
        try:
            server = self.compute.create(spec)
        except ComputeError as exc:
            self._fail(item, exc.fault, "BUILDING_ERROR_SERVER", [f"{exc.__class__.__name__}: {exc.fault}"])
            return self._park(item)
        if server.status == SERVER_ERROR:
            return self._server_failed(item, server.status, server.fault)

        def provisioned(instance: Instance, context: dict[str, Any]) -> None:
            if instance.server_id is None:
                instance.record_server_provisioned(context, server.server_id, server.volume_id, server.status,
                                                   server.addresses)

        if server.status == SERVER_ACTIVE:
            return self._send_prepare(item, instance, provisioned, topic)  # booted at once: one save for both
        self._record(item, provisioned)
        return self._now("wait_server")

    def _wait_server(self, item: WorkItem) -> Outcome:
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        server = self.compute.get(item.instance_id)
        if server is None:
            return self._server_failed(item, SERVER_ERROR, "The server could not be found.")
        if server.status == SERVER_ERROR:
            return self._server_failed(item, server.status, server.fault)
        if server.status == SERVER_ACTIVE:
            def active(instance: Instance, context: dict[str, Any]) -> None:
                if instance.server_status != SERVER_ACTIVE:
                    # A cloud assigns addresses while it builds: Nova's are known once the server is ACTIVE.
                    instance.record_server_status(context, SERVER_ACTIVE, addresses=server.addresses or None)

            return self._send_prepare(item, instance, active)
        if self._expired(item):
            return self._build_timed_out(item)
        return Outcome("wait_server", self._clock() + self._compute_poll_s)

    def _prepare(self, item: WorkItem) -> Outcome:
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        return self._send_prepare(item, instance)

    def _send_prepare(self, item: WorkItem, instance: Instance,
                      also: Callable[[Instance, dict[str, Any]], None] | None = None,
                      topic: str | None = None) -> Outcome:
        """Record ``PrepareSent`` (with ``also``, in one save), then send prepare on the guest's topic.

        Recorded before it is sent, so the guest's first status always finds the build prepared and
        can end it. A crash in between re-runs this step, which sends again; guests answer a second
        prepare like the first.
        """
        topic = topic or self.guests.ensure(item.instance_id)

        def prepared(fresh: Instance, context: dict[str, Any]) -> None:
            if also is not None:
                also(fresh, context)
            if fresh.guest_topic is None:
                fresh.record_prepare_sent(context, topic)

        if not self._record(item, prepared):
            return self._park(item)
        users = initial_users(item.detail.get("users"))
        passwords = self._secrets.sealed(item.instance_id, item.request_id) if self._secrets and users else {}
        restore = self._restore_of(item.instance_id, instance)
        self.guests.send(protocol.prepare(
            item.instance_id, item.request_id, self._clock(), datastore=instance.datastore,
            datastore_version=instance.datastore_version, databases=item.detail.get("databases", []),
            users=users, volume_size=instance.volume_size,
            passwords={key: passwords[key] for key in (user_key(u["name"], u["host"]) for u in users)
                       if key in passwords},
            manager=instance.datastore_manager, restore=restore))
        return self._awaiting_healthy(item)

    def _restore_of(self, instance_id: str, instance: Instance) -> dict[str, Any] | None:
        """What a guest needs to build from the instance's backup: where to read it and what it must be.

        A backup deleted or gone since the create was accepted still goes to the guest as it was
        recorded: the guest finds it missing and the build fails with that fault, not silently empty.
        """
        if not instance.restore_backup_id:
            return None
        backup = self.instances.get_backup(instance.restore_backup_id)
        if self._backups is None or backup.location is None or backup.checksum is None:
            raise NotFound(f"Backup {backup.id} has nothing stored to restore.")
        source = self._backups.download_target(backup.location)
        return {"backup_id": str(backup.id), "size": backup.size, "checksum": backup.checksum,
                "source": sealed_target(source, instance_id, self._sealer)}

    def _awaiting_healthy(self, item: WorkItem) -> Outcome:
        # The guest's status ends the build where it is recorded; this step wakes for what that misses
        # (an outcome status with the build still open) and, at the latest, at the deadline.
        assert item.deadline is not None
        return Outcome(AWAIT_HEALTHY, min(item.deadline, self._clock() + self._recheck_s))

    def _await_healthy(self, item: WorkItem) -> Outcome:
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        # The guest's status normally ends the build as it is recorded (``Instance._end_build_on``); this
        # covers a build prepared before that rule, and the deadline.
        status = instance.service_status
        if status.build_outcome is True:
            self._record(item, lambda i, c: i.succeed(c))
            return self._park(item)
        if status.build_outcome is False:
            self._fail(item, f"Service not active, status: {status.description}", "BUILDING_ERROR_SERVER")
            return self._park(item)
        if self._expired(item):
            return self._build_timed_out(item)
        return self._awaiting_healthy(item)

    def _image_id(self, datastore_version_id: str) -> str:
        # A version's image never changes once registered, so one load per version is enough.
        if datastore_version_id not in self._images:
            try:
                image = str(self.instances.catalog.repository.get(UUID(datastore_version_id)).image_id)
            except Exception:  # the image only matters to a real cloud; the fake ignores it
                return ""
            self._images[datastore_version_id] = image
        return self._images[datastore_version_id]

    # Backups ---------------------------------------------------------------------------------------------

    def _send_backup(self, item: WorkItem) -> Outcome:
        """Hand the guest where to stream the backup; the conductor records what it stored (``BackupTaken``),
        which wakes ``_await_backup``."""
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        backup_id = item.detail["backup_id"]
        if self._backups is None:
            self._fail(item, "This deployment has no backup storage configured (TROVE_ES_BACKUP_STORAGE).", "NONE")
            return self._park(item)
        target = self._backups.upload_target(instance.tenant_id, backup_id)
        sent_target = sealed_target(target, item.instance_id, self._sealer)  # before anything is recorded
        context = self._context(item)

        def started(backup: Backup) -> None:
            if backup.status == backups.NEW:
                backup.record_started(context, target.location)

        self.instances.record_backup(backup_id, started)
        self.guests.ensure(item.instance_id)
        self.guests.send(protocol.command(protocol.BACKUP, item.instance_id, item.request_id, self._clock(),
                                          backup_id=backup_id, target=sent_target))
        return self._awaiting_backup(item)

    def _await_backup(self, item: WorkItem) -> Outcome:
        """Close the backup's operation once the guest's ``BackupTaken`` is recorded: a success when storage
        holds what the guest says it stored, a failure (a fault) when it does not."""
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        taken = instance.last_backup
        if taken is None or taken.get("backup_id") != item.detail["backup_id"]:
            return self._await_close(item) if self._expired(item) else self._awaiting_backup(item)
        mismatch = self._stored_otherwise(self.instances.get_backup(taken["backup_id"]), taken)
        if mismatch is None:
            self._record(item, lambda i, c: i.succeed(c))
        else:
            self._fail(item, mismatch, "NONE")
        return self._park(item)

    def _awaiting_backup(self, item: WorkItem) -> Outcome:
        # ``BackupTaken`` wakes this step; the recheck covers a wake that came before the step was saved.
        assert item.deadline is not None
        return Outcome(AWAIT_CLOSE, min(item.deadline, self._clock() + self._recheck_s))

    def _stored_otherwise(self, backup: Backup, taken: dict[str, Any]) -> str | None:
        """Why the storage does not hold the backup the guest reported; None when it does."""
        stored = self._backups.stat(backup.location) if self._backups is not None and backup.location else None
        if stored is not None and stored.size == taken["size"]:
            return None
        return (f"The guest reported {taken['size']} bytes stored for backup {backup.id} but the backup storage "
                f"holds {'nothing' if stored is None else f'{stored.size} bytes'} at its location; take the "
                f"backup again.")

    def _finish_backup(self, item: WorkItem, context: OperationContext) -> bool:
        """Record on the Backup what its operation came to; True when it was stored whole (the quota is kept)."""
        backup_id, detail = item.detail.get("backup_id"), item.detail
        if not backup_id:
            return False
        recorded = context.recorded()
        backup = self.instances.get_backup(backup_id)
        if detail["succeeded"]:  # closed by ``_await_backup``, which checked the storage
            taken = self.instances.get(item.instance_id, to_change=False).last_backup or {}
            if taken.get("backup_id") == backup_id:
                self.instances.record_backup(backup_id, lambda b: b.complete(recorded, taken["size"],
                                                                             taken["checksum"]))
                return True
        message = detail.get("message") or "The backup was not taken."
        self.instances.record_backup(backup_id, lambda b: b.fail(recorded, message))
        if self._backups is not None and backup.location:
            self._backups.delete(backup.location)  # what a failed backup left behind is of no use
        return False

    def _remove_backup(self, item: WorkItem) -> Outcome:
        backup = self.instances.get_backup(item.instance_id)
        context = OperationContext.from_recorded(item.context).carried_by("taskmanager", self.server_ip)
        recorded = context.recorded()
        if backup.deleted or not backup.deleting:
            return Outcome(BACKUP_REMOVAL, None, done=True)
        try:
            if backup.location and self._backups is not None:
                self._backups.delete(backup.location)
        except BackupStorageError as exc:
            reason = str(exc)
            self.instances.record_backup(backup.id, lambda b: b.record_delete_failed(recorded, reason))
            return Outcome(BACKUP_REMOVAL, None, done=True)
        self.instances.record_backup(backup.id, lambda b: b.record_deleted(recorded) if not b.deleted else None)
        if backup.counted:
            self.instances.release_backup_quota(context, backup)
        return Outcome(BACKUP_REMOVAL, None, done=True)

    # Guest operations: restart, and the guest half of resizes ------------------------------------------

    def _send_guest_command(self, item: WorkItem) -> Outcome:
        if self._open_instance(item) is None:
            return self._park(item)
        method = {"restart": protocol.RESTART, "resize_volume": protocol.RESIZE_VOLUME,
                  "resize_flavor": protocol.RESIZE_FLAVOR}[item.kind]
        args = {protocol.RESIZE_VOLUME: {"new_size": item.detail.get("new_volume_size")},
                protocol.RESIZE_FLAVOR: {"flavor": item.detail.get("new_flavor")}}.get(method, {})
        self.guests.ensure(item.instance_id)
        self.guests.send(protocol.command(method, item.instance_id, item.request_id, self._clock(), **args))
        # The guest's result reaches the conductor, which closes the operation.
        return Outcome(AWAIT_CLOSE, item.deadline)

    def _send_guest_change(self, item: WorkItem) -> Outcome:
        """A change to the datastore's databases, users or root: one guest command of the operation's name."""
        if self._open_instance(item) is None:
            return self._park(item)
        args = dict(item.detail.get("change") or {})
        if item.operation in WITH_PASSWORDS:
            args["passwords"] = self._secrets.sealed(item.instance_id, item.request_id) if self._secrets else {}
        self.guests.ensure(item.instance_id)
        self.guests.send(protocol.command(item.operation, item.instance_id, item.request_id, self._clock(), **args))
        return Outcome(AWAIT_CLOSE, item.deadline)

    def _await_close(self, item: WorkItem) -> Outcome:
        if self._open_instance(item) is None:
            return self._park(item)
        if self._expired(item):
            self._fail(item, f"Timed out waiting for the guest agent to complete {item.operation}.", "NONE")
            return self._park(item)
        return Outcome(AWAIT_CLOSE, item.deadline)

    def _resize_volume(self, item: WorkItem) -> Outcome:
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        new_size = int(item.detail["new_volume_size"])
        if (instance.volume_size or 0) >= new_size:
            return self._now("send")
        try:
            self.compute.resize_volume(item.instance_id, new_size)
        except ComputeError as exc:
            self._fail(item, exc.fault, "NONE", [f"{exc.__class__.__name__}: {exc.fault}"])
            return self._park(item)
        return self._now("wait_compute")

    def _volume_resized(self, item: WorkItem) -> Outcome:
        if self._open_instance(item) is None:
            return self._park(item)
        new_size = int(item.detail["new_volume_size"])
        server = self.compute.get(item.instance_id)
        if server is not None and (server.volume_size or 0) >= new_size:
            def resized(instance: Instance, context: dict[str, Any]) -> None:
                if instance.volume_size != new_size:
                    instance.record_volume_resized(context, old_volume_size=instance.volume_size,
                                                   volume_size=new_size)

            self._record(item, resized)
            return self._now("send")
        if self._expired(item) or server is None:
            self._fail(item, "The volume could not be extended.", "NONE")
            return self._park(item)
        return Outcome("wait_compute", self._clock() + self._compute_poll_s)

    def _resize_flavor(self, item: WorkItem) -> Outcome:
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        new_flavor = item.detail["new_flavor"]
        if str(instance.flavor["id"]) == str(new_flavor["id"]):
            return self._now("send")
        try:
            self.compute.resize_flavor(item.instance_id, new_flavor)
        except ComputeError as exc:
            self._fail(item, exc.fault, "NONE", [f"{exc.__class__.__name__}: {exc.fault}"])
            return self._park(item)
        return self._now("wait_compute")

    def _flavor_resized(self, item: WorkItem) -> Outcome:
        if self._open_instance(item) is None:
            return self._park(item)
        new_flavor = item.detail["new_flavor"]
        server = self.compute.get(item.instance_id)
        if server is not None and server.status == SERVER_ACTIVE and server.flavor_id == str(new_flavor["id"]):
            def resized(instance: Instance, context: dict[str, Any]) -> None:
                if str(instance.flavor["id"]) != str(new_flavor["id"]):
                    instance.record_flavor_resized(context, old_flavor=instance.flavor, flavor=new_flavor)

            self._record(item, resized)
            return self._now("send")
        if server is None or server.status == SERVER_ERROR or self._expired(item):
            fault = server.fault if server is not None else None
            self._fail(item, f"Resize of the server failed: {fault or 'the server did not become ACTIVE'}", "NONE")
            return self._park(item)
        return Outcome("wait_compute", self._clock() + self._compute_poll_s)

    # Delete -----------------------------------------------------------------------------------------------

    def _stop_guest(self, item: WorkItem) -> Outcome:
        if self._open_instance(item) is None:
            return self._park(item)
        try:
            if self.guests.exists(item.instance_id):
                self.guests.send(protocol.command(protocol.STOP, item.instance_id, item.request_id,
                                                  self._clock()))
        except Exception as exc:  # best effort, as Trove's stop_db before a delete
            log.warning("could not stop the guest of %s before deleting it: %s", item.instance_id, exc)
        return self._now("delete_server")

    def _delete_server(self, item: WorkItem) -> Outcome:
        if self._open_instance(item) is None:
            return self._park(item)
        self.compute.delete(item.instance_id)
        return self._now("wait_gone")

    def _wait_gone(self, item: WorkItem) -> Outcome:
        server = self.compute.get(item.instance_id)
        if server is None:
            return self._now("remove_topic")
        if self._expired(item):
            return self._delete_timed_out(item, server.status)
        return Outcome("wait_gone", self._clock() + self._compute_poll_s)

    def _delete_timed_out(self, item: WorkItem, server_status: str) -> Outcome:
        """The cloud kept the server: the delete fails (and says so) rather than hiding a live server."""
        message = (f"The server of instance {item.instance_id} was not deleted in time (it is "
                   f"{server_status}); delete the instance again.")

        def change(instance: Instance, context: dict[str, Any]) -> None:
            if instance.server_status != server_status:
                instance.record_server_status(context, server_status)
            instance.fail(context, message=message, traceback=[], task="NONE")

        self._record(item, change)
        return self._park(item)

    def _remove_topic(self, item: WorkItem) -> Outcome:
        self.guests.remove(item.instance_id)
        return self._now("record")

    def _record_deleted(self, item: WorkItem) -> Outcome:
        instance = self._open_instance(item)
        if instance is None:
            return self._park(item)
        quota = self.instances.quota(instance.tenant_id)
        unsettled = [request for request, r in (quota.reservations.items() if quota else ())
                     if r["instance_id"] == item.instance_id]
        if unsettled and not self._expired(item):
            # A reservation of this instance (its create, a resize) is still being settled; releasing the
            # usage first would let the later commit count the instance forever.
            return Outcome("record", self._clock() + 0.2)
        for request_id in unsettled:  # its settlement never came (its closing event was lost): settle it here
            log.warning("settling reservation %s of deleted instance %s itself", request_id, item.instance_id)
            self.instances.settle_quota(OperationContext.from_recorded(self._context(item)), instance.tenant_id,
                                        request_id, commit=True)
        context = self._context(item)
        for _ in range(5):
            instance = self._open_instance(item, to_change=True)
            if instance is None or instance.deleted:
                return self._park(item)
            instance.record_deleted(context)
            instance.succeed(context)
            quota = self.instances.quota(instance.tenant_id)
            aggregates: list[Any] = [instance]
            if quota is not None:
                quota.release_usage(context, str(instance.id), {INSTANCES: 1, VOLUMES: instance.volume_size or 0})
                aggregates.append(quota)
            try:
                # One save: the instance is gone and its quota freed, or neither (a retry then does both).
                self.instances.save(*aggregates)
                return self._park(item)
            except IntegrityError:
                continue
        raise RuntimeError("the instance or its quota kept changing while recording the delete")

    # Status reset -----------------------------------------------------------------------------------------

    def _refresh_server_status(self, item: WorkItem) -> Outcome:
        """Record the server's status as the cloud has it, following it until it settles."""
        server = self.compute.get(item.instance_id)
        status = server.status if server is not None else SERVER_ERROR
        context = self._context(item)

        def refreshed(instance: Instance) -> bool:
            if instance.deleted or instance.operation_open():
                return False  # gone, or a new operation owns the instance's status now
            if instance.server_status != status:
                instance.record_server_status(context, status, fault=server.fault if server else None)
            return True

        if self.instances.record(item.instance_id, refreshed) and status in _SERVER_IN_TRANSITION \
                and not self._expired(item):
            return Outcome(REFRESH, self._clock() + self._compute_poll_s)
        return Outcome(REFRESH, None, done=True)

    # Quota settlement -------------------------------------------------------------------------------------

    def _settle(self, item: WorkItem) -> Outcome:
        detail = item.detail
        if detail["operation"] in WITH_PASSWORDS:  # nothing reserved: only the passwords to forget
            if self._secrets is not None:
                self._secrets.discard(item.instance_id, item.request_id)
            return Outcome(SETTLE, None, done=True)
        context = OperationContext.from_recorded(item.context).carried_by("taskmanager", self.server_ip)
        if detail["operation"] == BACKUP_CREATE:
            commit = self._finish_backup(item, context)
            self.instances.settle_quota(context, context.tenant_id, item.request_id, commit=commit)
            return Outcome(SETTLE, None, done=True)
        commit = True
        if detail["operation"] == RESIZE_VOLUME and not detail["succeeded"]:
            # Keep the reservation only if the volume did grow before the failure.
            try:
                instance = self.instances.get(item.instance_id, to_change=False)
                commit = (instance.volume_size or 0) >= int(detail.get("new_volume_size") or 0) > 0
            except NotFound:
                commit = False
        self.instances.settle_quota(context, context.tenant_id, item.request_id, commit=commit)
        if detail["operation"] == CREATE and self._secrets is not None:
            self._secrets.discard(item.instance_id, item.request_id)  # the build is over: its guest needs them no more
        return Outcome(SETTLE, None, done=True)


def _context_of(event: PublicEvent) -> dict[str, Any]:
    rest = event.data.get("context") or {}
    return {"request_id": event.request_id or event.data.get("request_id"), "tenant_id": event.tenant_id,
            "user_id": event.user_id, **{k: v for k, v in rest.items() if k in ("client_ip", "server_ip",
                                                                             "server_type")}}


def _detail_of(event: PublicEvent) -> dict[str, Any]:
    data = event.data
    if event.type == "CreateRequested":
        return {"databases": data.get("databases", []), "users": data.get("users", []),
                "availability_zone": data.get("availability_zone")}
    if event.type == "VolumeResizeRequested":
        return {"old_volume_size": data["old_volume_size"], "new_volume_size": data["new_volume_size"]}
    if event.type == "FlavorResizeRequested":
        return {"old_flavor": data["old_flavor"], "new_flavor": data["new_flavor"]}
    if event.type == "GuestChangeRequested":
        return {"change": data["change"]}
    if event.type == "BackupRequested":
        return {"backup_id": data["backup_id"]}
    return {}
