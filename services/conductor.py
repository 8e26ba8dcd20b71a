"""The conductor: ingests guest heartbeats and results from the conductor topic.

- A heartbeat refreshes the guest's liveness (the heartbeat read model, read by the instance view).
  Only a *change* of the datastore status becomes a ``ServiceStatusChanged`` event; while the status
  is RESTART_REQUIRED heartbeats change nothing (Trove).
- A result closes the instance's open operation, and only when that operation has the result's
  request_id and is the one the command serves, so a redelivered or late result does nothing.
  A successful ``backup`` records what the guest stored (``BackupTaken``) and leaves the operation to
  the task manager, which closes it once it has checked the storage.
  A successful ``prepare`` closes nothing: a build ends on the guest's reported status, in the
  same save that records it (``Instance.change_service_status``).
- A progress report of a running backup becomes a ``BackupProgressed`` event, at most one per
  ``progress_every_s`` of the guest's clock for each instance, however often the guest reports.
- A message older (by the guest's ``sent_at``) than the last one seen for the same
  (instance, method) is dropped, so a delayed heartbeat cannot roll a status back.

Reconciling a heartbeat with the instance means loading the aggregate. Thousands of guests report
every few seconds with the same status, so a status already reconciled within ``reconcile_s`` is
trusted without a load. The price: a status changed by someone else (an admin ``reset_status``)
while the guest keeps reporting the same thing is put right up to ``reconcile_s`` later.

The instances a batch changes are saved together in one write (``InstanceChanges``): a burst of
guests reporting costs one transaction, not one each.

What was last seen and the liveness are kept by a ``GuestLedger``, written in the transaction the
consumer runner applies the batch in, so they commit with the batch's offsets.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from domain import guest_protocol as protocol
from domain.backup import BACKUP_CREATE
from domain.context import OperationContext
from domain.datastore_objects import GUEST_OPERATIONS
from domain.errors import NotFound
from domain.guest_protocol import GuestFault, GuestMessage, Heartbeat, Progress, Result
from domain.instance import CREATE, RESIZE_FLAVOR, RESIZE_VOLUME, RESTART, Instance
from domain.statuses import ServiceStatus
from services.instances import InstanceChanges, InstanceService
from services.ports import GuestLedger, GuestLiveness, LastSeen
from services.task_manager import local_ip

log = logging.getLogger(__name__)

# The operation each command serves: a result may close that operation and no other.
_OPERATION_OF = {protocol.PREPARE: CREATE, protocol.RESTART: RESTART, protocol.RESIZE_VOLUME: RESIZE_VOLUME,
                 protocol.RESIZE_FLAVOR: RESIZE_FLAVOR, protocol.BACKUP: BACKUP_CREATE,
                 # A change to databases, users or root is carried by the command of its operation's name.
                 **{operation: operation for operation in GUEST_OPERATIONS}}


@dataclass
class ConductorStats:
    heartbeats: int = 0
    results: int = 0
    stale: int = 0
    reconciled: int = 0  # heartbeats checked against the aggregate (a load)
    status_changes: int = 0
    operations_closed: int = 0
    progress_recorded: int = 0
    progress_skipped: int = 0  # too soon after the last one recorded, or no news
    unknown_instances: int = 0
    unauthenticated: int = 0  # refused: unsigned, or not signed with their instance's key


class Conductor:
    name = "conductor"

    def __init__(self, instances: InstanceService, ledger: GuestLedger, *, secret: bytes, reconcile_s: float = 60.0,
                 progress_every_s: float = 60.0, server_ip: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``secret``: the deployment's guest secret; a message counts only if signed with its instance's key."""
        self.instances = instances
        self.progress_every_s = progress_every_s
        self._secret = secret
        self.ledger = ledger
        self.reconcile_s = reconcile_s
        self.server_ip = server_ip or local_ip()
        self._clock = clock
        self.stats = ConductorStats()

    def decode(self, raw: bytes) -> GuestMessage:
        """A guest's message, or ``GuestProtocolError`` with why not: the runner dead-letters it with that
        reason, so a forged or unsigned message is refused, recorded, and changes nothing."""
        try:
            return protocol.parse_guest_message(raw, self._key_for)
        except protocol.Unauthenticated as exc:
            self.stats.unauthenticated += 1
            log.warning("conductor refused a guest message: %s", exc)
            raise

    def _key_for(self, instance_id: str) -> bytes:
        return protocol.instance_key(self._secret, instance_id)

    def apply(self, message: GuestMessage, transaction: Any) -> None:
        self.apply_batch([message], transaction)

    def apply_batch(self, messages: list[GuestMessage], transaction: Any) -> None:
        """Take a batch in the consumer's ``transaction``, which is handed to the ledger untouched."""
        if not messages:
            return
        log.debug("conductor: batch of %d messages", len(messages))
        seen = self.ledger.last_seen(transaction, {(m.instance_id, m.method) for m in messages})
        instances = self.instances.changes()  # every instance the batch changes, saved in one write
        changed: dict[tuple[str, str], LastSeen] = {}
        beats: dict[str, GuestLiveness] = {}
        for message in messages:
            key = (message.instance_id, message.method)
            previous = seen.get(key)
            if previous is not None and message.sent_at < previous.sent_at:
                self.stats.stale += 1
                continue
            if isinstance(message, Heartbeat):
                reconciled = self._heartbeat(message, previous, instances)
                if reconciled is None:
                    continue
                status, reconciled_at = reconciled
                row = LastSeen(message.instance_id, message.method, message.sent_at, status, reconciled_at)
                beats[message.instance_id] = GuestLiveness(message.instance_id, message.service_status,
                                                           last_seen_at=self._clock(), sent_at=message.sent_at,
                                                           volume_used_bytes=message.volume_used_bytes)
            elif isinstance(message, Progress):
                if previous is not None and message.sent_at - previous.sent_at < self.progress_every_s:
                    self.stats.progress_skipped += 1
                    continue
                if not self._progress(message, instances):
                    continue
                row = LastSeen(message.instance_id, message.method, message.sent_at)
            elif isinstance(message, GuestFault):
                if not self._guest_fault(message, instances):
                    continue
                row = LastSeen(message.instance_id, message.method, message.sent_at)
            elif self._result(message, instances):
                row = LastSeen(message.instance_id, message.method, message.sent_at)
            else:
                continue
            seen[key] = changed[key] = row
        instances.save()
        if changed:
            self.ledger.record_seen(transaction, list(changed.values()))
        if beats:
            self.ledger.record_liveness(transaction, list(beats.values()))

    # -----------------------------------------------------------------------------------------------

    def _heartbeat(self, beat: Heartbeat, previous: LastSeen | None,
                   instances: InstanceChanges) -> tuple[str, float] | None:
        """Reconcile the reported status: the (status, when) last reconciled, None when the instance is unknown."""
        self.stats.heartbeats += 1
        now = self._clock()
        if (previous is not None and previous.reconciled_status == beat.service_status
                and previous.reconciled_at is not None and now - previous.reconciled_at < self.reconcile_s):
            return beat.service_status, previous.reconciled_at
        status = beat.status
        self.stats.reconciled += 1

        def change(instance: Instance) -> bool:
            if instance.service_status is ServiceStatus.RESTART_REQUIRED:
                return False
            return instance.change_service_status(self._context(instance), status)

        try:
            if instances.apply(beat.instance_id, change):
                self.stats.status_changes += 1
        except NotFound:
            self.stats.unknown_instances += 1
            log.warning("heartbeat from unknown instance %s dropped", beat.instance_id)
            return None
        return beat.service_status, now

    def _result(self, result: Result, instances: InstanceChanges) -> bool:
        self.stats.results += 1
        operation = _OPERATION_OF.get(result.method)

        def change(instance: Instance) -> bool:
            if operation is None or not instance.operation_open(result.request_id):
                return False
            assert instance.operation is not None
            if instance.operation["name"] != operation:
                return False
            context = self._context(instance)
            if result.ok:
                if result.method == protocol.PREPARE:
                    return False
                if result.method == protocol.BACKUP:
                    # The task manager closes it, once storage holds what the guest says it stored.
                    return instance.record_backup_taken(context, instance.operation["backup_id"],
                                                        result.details["size"], result.details["checksum"])
                instance.succeed(context)
            else:
                task = "BUILDING_ERROR_SERVER" if result.method == protocol.PREPARE else "NONE"
                instance.fail(context, message=result.message or f"The guest agent failed to {result.method}.",
                              traceback=list(result.traceback), task=task)
            return True

        try:
            if instances.apply(result.instance_id, change) and (result.method != protocol.BACKUP or not result.ok):
                self.stats.operations_closed += 1  # a backup's is closed by the task manager
        except NotFound:
            self.stats.unknown_instances += 1
            log.warning("result from unknown instance %s dropped", result.instance_id)
            return False
        return True

    def _progress(self, progress: Progress, instances: InstanceChanges) -> bool:
        """Record the progress on the running backup it reports; False when nothing was recorded."""
        def change(instance: Instance) -> bool:
            if not instance.operation_open(progress.request_id) or not instance.backup_running:
                return False
            assert instance.operation is not None
            return instance.report_backup_progress(self._context(instance), instance.operation["backup_id"],
                                                   progress.stored_bytes)

        try:
            recorded = instances.apply(progress.instance_id, change)
        except NotFound:
            self.stats.unknown_instances += 1
            return False
        if recorded:
            self.stats.progress_recorded += 1
        else:
            self.stats.progress_skipped += 1
        return recorded

    def _guest_fault(self, fault: GuestFault, instances: InstanceChanges) -> bool:
        """Record a condition the guest raised or cleared; False when the instance is unknown."""
        def change(instance: Instance) -> bool:
            # Its own request: a condition belongs to no operation, even while one is open.
            context = OperationContext(request_id=f"req-{uuid.uuid4()}", tenant_id=instance.tenant_id).carried_by(
                "conductor", self.server_ip).recorded()
            if fault.active:
                return instance.report_guest_fault(context, fault.condition, fault.message)
            return instance.clear_guest_fault(context, fault.condition)

        try:
            instances.apply(fault.instance_id, change)
        except NotFound:
            self.stats.unknown_instances += 1
            log.warning("fault from unknown instance %s dropped", fault.instance_id)
            return False
        return True

    def _context(self, instance: Instance) -> dict[str, Any]:
        if instance.operation is not None:
            context = OperationContext.from_recorded(instance.operation["context"])
        else:
            # A status change outside any operation (a crash noticed by the guest): a request of its own.
            context = OperationContext(request_id=f"req-{uuid.uuid4()}", tenant_id=instance.tenant_id)
        return context.carried_by("conductor", self.server_ip).recorded()
