"""The task manager's and conductor's ports: a cloud, the guests' transport, a lease, a ledger of guest messages,
the task manager's work items.

Adapters implement them (``adapters/compute``, ``adapters/kafka``); the task manager sees only these.

Every compute call is keyed by the *instance* id, not the server id, so the task manager can repeat
any step after a crash without remembering what the cloud answered: ``create`` for an instance that
already has a server returns that server, ``delete`` of a missing one does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from domain.guest_protocol import GuestCommand

GIB = 1024 ** 3


@dataclass(frozen=True)
class ServerSpec:
    """What to boot for one instance."""

    instance_id: str
    name: str
    flavor: dict[str, Any]  # the instance's flavor summary: id, name, ram, vcpus, disk (GB)
    volume_size: int | None  # GB; None for an instance without a volume
    image_id: str = ""
    availability_zone: str | None = None
    datastore_manager: str = ""  # postgresql, mysql, mariadb: a cloud opens the datastore's port for it


@dataclass(frozen=True)
class Server:
    instance_id: str
    server_id: str
    status: str  # Nova's: BUILD, ACTIVE, REBOOT, RESIZE, ERROR, ...
    name: str
    flavor_id: str
    volume_id: str | None
    volume_size: int | None
    addresses: list[dict[str, Any]] = field(default_factory=list)
    fault: str | None = None  # Nova's ``server.fault['message']`` when the server is in ERROR
    image_id: str = ""


class ComputeError(RuntimeError):
    """The cloud refused or failed a request; ``fault`` is its message as Nova would word it."""

    def __init__(self, fault: str) -> None:
        super().__init__(fault)
        self.fault = fault


class ComputeQuotaExceeded(ComputeError):
    """The project's compute quota (servers, cores, ram, volumes) has no room left."""


class ComputeDriver(Protocol):
    def create(self, spec: ServerSpec) -> Server:
        """Boot a server (and its volume) for ``spec.instance_id``; the existing one if already booted.

        A server that fails to build is returned in ERROR with its ``fault``; a request the cloud
        refuses outright (quota) raises ``ComputeError``.
        """
        ...

    def get(self, instance_id: str) -> Server | None:
        """The instance's server as the cloud sees it now, or None when it has none."""
        ...

    def reboot(self, instance_id: str) -> Server: ...

    def resize_volume(self, instance_id: str, new_size: int) -> Server:
        """Extend the volume to ``new_size`` GB; ``get`` shows the new size once done.

        Asking again for the size it has, or is being extended to, does nothing (a step repeated
        after a crash must not extend twice).
        """
        ...

    def resize_flavor(self, instance_id: str, flavor: dict[str, Any]) -> Server:
        """Resize (and confirm) to ``flavor``; ``get`` shows ACTIVE with the new flavor once done.

        Asking again for the flavor it has, or is being resized to, does nothing.
        """
        ...

    def delete(self, instance_id: str) -> None:
        """Delete the server and its volume; nothing happens when there is none."""
        ...


class GuestChannel(Protocol):
    """Commands to one guest, on a channel of its own that exists before its first command."""

    def topic(self, instance_id: str) -> str: ...
    def ensure(self, instance_id: str) -> str: ...
    def exists(self, instance_id: str) -> bool: ...
    def send(self, command: GuestCommand) -> None: ...
    def remove(self, instance_id: str) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class BackupTarget:
    """Where a guest streams one backup to, or reads it back from, without the deployment's credentials.

    ``kind`` is ``file`` (``location`` is a path on a filesystem the guest shares, the local storage)
    or ``url`` (``url`` is a time-limited signed URL the guest PUTs or GETs, Swift's temp URLs).
    ``location`` is how the storage names the object; it is what a backup's record keeps.
    """

    kind: str
    location: str
    url: str | None = field(default=None, repr=False)  # a bearer credential: never in a log line


@dataclass(frozen=True)
class StoredBackup:
    """What the storage holds for a location: its size in bytes (the guest's checksum is kept beside it)."""

    location: str
    size: int


class BackupStorageError(RuntimeError):
    """The storage refused or failed a request; the text says what and what to do next."""


class BackupStorage(Protocol):
    """Where backups are kept (a local directory, a Swift container), seen by the task manager.

    Guests move the bytes; the task manager only hands out targets, checks what arrived, and deletes.
    """

    def upload_target(self, tenant_id: str, backup_id: str) -> BackupTarget:
        """Where the guest writes backup ``backup_id`` of ``tenant_id`` (a new object; an old one is replaced)."""
        ...

    def download_target(self, location: str) -> BackupTarget:
        """Where a restoring guest reads the backup stored at ``location``."""
        ...

    def stat(self, location: str) -> StoredBackup | None:
        """What is stored at ``location``, or None when nothing is."""
        ...

    def delete(self, location: str) -> None:
        """Delete what is stored at ``location``; nothing happens when nothing is."""
        ...


class GuestSealer(Protocol):
    """Seals a secret so that only one instance's guest (and the control plane) can open it."""

    def seal(self, instance_id: str, secret: str) -> str: ...


class SecretDrop(Protocol):
    """Secrets on their way to one guest, sealed for it, outside the event stream (which keeps everything)."""

    def put(self, instance_id: str, request_id: str, passwords: Mapping[str, str]) -> None:
        """Seal ``passwords`` (user name → password) for the instance's guest and keep them for the request."""
        ...

    def sealed(self, instance_id: str, request_id: str) -> dict[str, str]:
        """What was dropped for the request, still sealed: only the guest can open it."""
        ...

    def discard(self, instance_id: str, request_id: str) -> None: ...


class LeaseLost(RuntimeError):
    """The lease was taken away (its connection died); whoever held it must stop acting as the one."""


class Lease(Protocol):
    """Only one holder at a time across the deployment (one task manager driver, one relay)."""

    def try_acquire(self) -> bool: ...
    def check(self) -> None: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class LastSeen:
    """The latest message the conductor took from one guest for one method (Trove's ``conductor_lastseen``)."""

    instance_id: str
    method: str
    sent_at: float  # the guest's clock, so a message delayed in flight can be told from a newer one
    # Heartbeats only: the reported status last reconciled with the aggregate, and when (conductor's clock).
    reconciled_status: str | None = None
    reconciled_at: float | None = None


@dataclass(frozen=True)
class GuestLiveness:
    """A guest is alive and reports ``service_status``: the heartbeat read model's row for one instance."""

    instance_id: str
    service_status: str
    last_seen_at: float  # the conductor's clock, when it took the heartbeat
    sent_at: float
    volume_used_bytes: int | None = None  # the datastore's files, as the guest measured them


class GuestLedger(Protocol):
    """What the conductor keeps about guests' messages, written in the consumer's own transaction.

    ``transaction`` is whatever the consumer runner applies a batch in; the ledger writes in it, so its
    rows commit (or roll back) with the batch's offsets and a redelivered batch sees them as they were.
    """

    def last_seen(self, transaction: Any, keys: set[tuple[str, str]]) -> dict[tuple[str, str], LastSeen]:
        """The stored rows for these (instance_id, method) keys; a key never seen is absent."""
        ...

    def record_seen(self, transaction: Any, rows: list[LastSeen]) -> None:
        """Store these rows, replacing any with the same (instance_id, method)."""
        ...

    def record_liveness(self, transaction: Any, beats: list[GuestLiveness]) -> None:
        """Refresh these guests' liveness, replacing any earlier row for the instance."""
        ...


@dataclass(frozen=True)
class WorkItem:
    """One operation in flight (or a quota settlement, a status refresh) as the task manager tracks it.

    Keyed by (instance_id, request_id, kind): a request has at most one item of each kind.
    """

    instance_id: str
    request_id: str
    kind: str  # create, restart, resize_volume, resize_flavor, delete, settle, refresh
    operation: str  # Trove's operation name
    step: str
    context: dict[str, Any]  # the operation's recorded context
    detail: dict[str, Any]  # what the steps need (prepare arguments, new size...)
    deadline: float | None  # the operation fails if not done by then (epoch seconds)
    due_at: float | None  # when the driver runs the step next; None: parked until the closing event
    wakes: int  # bumped by events that make a waiting step worth re-running
    attempts: int  # failed runs of the current step in a row
    last_error: str | None
    created_at: float


class WorkItems(Protocol):
    """The task manager's work items: written by its consumer half, run and moved on by its driver.

    The consumer half writes in ``transaction``, whatever the consumer runner applies a batch in, so
    the items commit (or roll back) with the offsets of the events that made them. The driver's
    calls stand alone.
    """

    def add(self, transaction: Any, item: WorkItem) -> None:
        """Store ``item`` unless one with its key exists; the first one stays as it is."""
        ...

    def wake(self, transaction: Any, instance_id: str, step: str, now: float) -> None:
        """Make the instance's items waiting at ``step`` due at ``now`` and count the wake; parked ones stay."""
        ...

    def remove_operation(self, transaction: Any, instance_id: str, request_id: str,
                         kept_kinds: Collection[str]) -> dict[str, Any] | None:
        """Remove the request's item, except those of ``kept_kinds``; its detail, or None if there was none."""
        ...

    def after_commit(self, transaction: Any, callback: Callable[[], None]) -> None:
        """Call ``callback`` once ``transaction`` has committed; the same callback again in it is a no-op."""
        ...

    def due(self, limit: int, now: float) -> list[WorkItem]:
        """Up to ``limit`` items due by ``now``, those due first (then the oldest) first."""
        ...

    def get(self, instance_id: str, request_id: str, kind: str) -> WorkItem | None:
        """The stored item with this key, or None."""
        ...

    def save(self, item: WorkItem, *, step: str, due_at: float | None, attempts: int, last_error: str | None,
             now: float, done: bool = False) -> WorkItem | None:
        """Move ``item`` on to ``step``, due at ``due_at`` (None: parked), if it is still at ``item.step``.

        A wake since ``item`` was read (its ``wakes`` changed) makes it due at ``now`` instead, so an
        event that came while the step ran is not missed. ``done`` removes the item. Returns the item
        as now stored; None when done, or when it was removed or moved on meanwhile (nothing changes then).
        """
        ...
