"""The instance view: one row per instance, everything the API's list, show and mgmt views need.

The visible ``status`` is not stored: it is computed on read from the task, server and service
statuses by the domain's one status function, and ``operating_status`` also looks at the guest's
last heartbeat, which changes far more often than anything worth an event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from domain import faults
from domain.backup import BACKUP_CREATE
from domain.catalog import domain_catalog
from domain.instance import DELETE, INSTANCE_EVENTS, Instance
from domain.public_events import EventCatalog, PublicEvent
from domain.statuses import ServiceStatus, TaskStatus, operating_status, visible_status
from projections.backup_view import BACKUP_EVENT_TYPES, apply_backup_event, apply_backup_progress, backup_view
from projections.guest_heartbeats import guest_heartbeats
from projections.prepared import PreparedRead, json_value

metadata = MetaData()

instance_view = Table(
    "instance_view",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("task_status", String(40), nullable=False),
    Column("server_status", String(40)),
    Column("service_status", String(64), nullable=False),
    Column("service_status_updated", String(40)),
    Column("flavor", JSON, nullable=False),
    Column("volume_size", Integer),
    Column("datastore", String(64), nullable=False),
    Column("datastore_version", String(64), nullable=False),
    Column("datastore_version_id", String(36), nullable=False),
    Column("region", String(64), nullable=False),
    Column("availability_zone", String(64)),
    Column("server_id", String(64)),
    Column("volume_id", String(64)),
    Column("addresses", JSON, nullable=False),
    Column("operation", String(40)),  # the open asynchronous operation, and its request
    Column("operation_request_id", String(64)),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("deleted_at", String(40)),
    Column("version", BigInteger, nullable=False),
    Column("open_faults", JSON),  # the faults not resolved yet (domain/faults.py); the latest is shown
    Index("ix_instance_view_tenant_page", "tenant_id", "deleted", "created_at", "id"),
    Index("ix_instance_view_task_created", "task_status", "created_at"),  # builds stuck for too long
)
guest_heartbeats.to_metadata(metadata)  # created with the view, so reads can join before the conductor runs
backup_view.to_metadata(metadata)  # the instances' backups, written by this projection too

# The API's note of the writes it accepted (tenant, instance, version), so its reads can wait for the view
# to hold them (read your writes); written by ``adapters.sql.write_marks``, read here beside the rows.
write_marks = Table(
    "instance_write_marks",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("instance_id", String(36), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("written_at", Float, nullable=False),
    Index("ix_instance_write_marks_written_at", "written_at"),
    Index("ix_instance_write_marks_instance", "instance_id"),
)

# Events that can record or resolve a fault.
FAULT_EVENTS = frozenset({"OperationFailed", "OperationSucceeded", "ServiceStatusChanged", "StatusReset",
                          "DeleteRequested", "GuestFaultReported", "GuestFaultCleared"})

# Events that open an operation and the task they set, as the aggregate does.
_OPENING_TASKS = {
    "RestartRequested": TaskStatus.REBOOTING, "VolumeResizeRequested": TaskStatus.RESIZING,
    "FlavorResizeRequested": TaskStatus.RESIZING, "DeleteRequested": TaskStatus.DELETING,
}


class InstanceView:
    """The projection. Its transitions mirror ``domain.instance.Instance``; a replay test holds them equal."""

    name = "instance-view"
    metadata = metadata
    # What its events write; the heartbeats (the conductor's) and write marks (the API's) only live beside.
    rebuilt_tables = ("instance_view", "backup_view")

    def __init__(self) -> None:
        self.catalog: EventCatalog = domain_catalog()
        self._types = {cls.__name__ for cls in INSTANCE_EVENTS}
        self.handles = frozenset(self._types | BACKUP_EVENT_TYPES)  # the runner skips the rest (quota, catalog)

    def apply(self, event: PublicEvent, session: Session) -> None:
        self.apply_batch([event], session)

    def apply_batch(self, events: list[PublicEvent], session: Session) -> None:
        """Fold the batch into the rows it touches in memory, then write each row once: one SELECT of the
        rows the batch changes and one executemany each of INSERTs and UPDATEs, not a statement per event."""
        rows = self._rows_of(events, session)
        created: set[str] = set()
        changed: set[str] = set()
        for event in events:
            if event.type in BACKUP_EVENT_TYPES:
                apply_backup_event(event, session)
                continue
            if event.type not in self._types:
                continue
            if event.type == "BackupProgressed":
                apply_backup_progress(event, session)  # and on: the instance's row keeps its version
            key = event.aggregate_id
            if event.type == "CreateRequested":
                if key not in rows:  # a repeat of a create already in the view changes nothing
                    rows[key] = _created_row(event)
                    created.add(key)
                continue
            row = rows.get(key)
            if row is None:
                continue  # an instance from before this projection's history began
            changes = _changes(event, row)
            if event.type in FAULT_EVENTS:
                changes.update(_faults(event, row))
            changes.update(updated_at=event.occurred_at, version=event.version)
            row.update(changes)
            changed.add(key)
        if created:
            session.execute(insert(instance_view), [rows[key] for key in created])
        updated = [{"b_id": key, **{k: v for k, v in rows[key].items() if k != "id"}} for key in changed - created]
        if updated:
            session.execute(_UPDATE_ROW, updated)

    @staticmethod
    def _rows_of(events: list[PublicEvent], session: Session) -> dict[str, dict[str, Any]]:
        wanted = {e.aggregate_id for e in events if e.aggregate_type == "Instance" and e.type != "CreateRequested"}
        created = {e.aggregate_id for e in events if e.type == "CreateRequested"}
        wanted |= created  # a create repeated after a crash finds its row
        if not wanted:
            return {}
        found = session.execute(select(instance_view).where(instance_view.c.id.in_(wanted))).mappings()
        return {row["id"]: {**row, "open_faults": json_value(row["open_faults"])} for row in found}


# One row's every column but its id, written back after a batch's fold.
_UPDATE_ROW = (update(instance_view).where(instance_view.c.id == bindparam("b_id"))
               .values({column.name: bindparam(column.name) for column in instance_view.columns
                        if column.name != "id"}))


def _created_row(event: PublicEvent) -> dict[str, Any]:
    data = event.data
    return dict(id=event.aggregate_id, tenant_id=data["tenant_id"], name=data["name"],
                task_status=TaskStatus.BUILDING.name, server_status="BUILD",
                service_status=ServiceStatus.NEW.description, service_status_updated=None, flavor=data["flavor"],
                volume_size=data["volume_size"], datastore=data["datastore"],
                datastore_version=data["datastore_version"], datastore_version_id=data["datastore_version_id"],
                region=data["region"], availability_zone=data.get("availability_zone"), server_id=None,
                volume_id=None, addresses=[], operation=data["operation"], operation_request_id=event.request_id,
                created_at=event.occurred_at, updated_at=event.occurred_at, deleted=False, deleted_at=None,
                version=event.version, open_faults=None)


def _faults(event: PublicEvent, row: dict[str, Any]) -> dict[str, Any]:
    state = {"healthy": row["service_status"] == faults.HEALTHY, "open": list(row["open_faults"] or [])}
    return {"open_faults": state["open"]} if faults.fold(state, event) else {}


def _changes(event: PublicEvent, row: dict[str, Any]) -> dict[str, Any]:
    """What ``event`` changes in the instance's ``row`` (its state before the event)."""
    data, kind = event.data, event.type
    if kind == "ServerProvisioned":
        return {"server_id": data["server_id"], "volume_id": data["volume_id"],
                "server_status": data["server_status"], "addresses": data["addresses"]}
    if kind == "ServerStatusChanged":
        if data.get("addresses") is not None:
            return {"server_status": data["server_status"], "addresses": data["addresses"]}
        return {"server_status": data["server_status"]}
    if kind == "ServiceStatusChanged":
        return {"service_status": data["service_status"], "service_status_updated": event.occurred_at}
    if kind in _OPENING_TASKS:
        return {"task_status": _OPENING_TASKS[kind].name, "operation": data["operation"],
                "operation_request_id": event.request_id}
    if kind in ("GuestChangeRequested", "BackupRequested"):  # operations that leave the task alone
        return {"operation": data["operation"], "operation_request_id": event.request_id}
    if kind == "VolumeResized":
        return {"volume_size": data["volume_size"]}
    if kind == "FlavorResized":
        return {"flavor": data["flavor"]}
    if kind == "Renamed":
        return {"name": data["name"]}
    if kind == "StatusReset":
        return {"task_status": TaskStatus.NONE.name, "service_status": ServiceStatus.UNKNOWN.description,
                "service_status_updated": event.occurred_at}
    if kind == "Deleted":
        return {"deleted": True, "deleted_at": event.occurred_at, "server_status": "DELETED",
                "service_status": ServiceStatus.DELETED.description}
    if kind in ("OperationSucceeded", "OperationFailed"):
        if row["operation_request_id"] != data["request_id"]:
            return {}  # a synchronous operation closing itself
        closed = {"operation": None, "operation_request_id": None}
        if kind == "OperationFailed":
            return {**closed, "task_status": data["task"]}
        keep_deleting = row["task_status"] == TaskStatus.DELETING.name and data["operation"] == DELETE
        return {**closed, **({} if keep_deleting else {"task_status": TaskStatus.NONE.name})}
    return {}  # PrepareSent: nothing a reader sees


@dataclass(frozen=True)
class InstanceRecord:
    """One instance as readers see it, statuses already computed."""

    id: str
    tenant_id: str
    name: str
    status: str
    operating_status: str
    task_status: TaskStatus
    server_status: str | None
    service_status: ServiceStatus
    service_status_updated: str | None
    flavor: dict[str, Any]
    volume_size: int | None
    datastore: str
    datastore_version: str
    datastore_version_id: str
    region: str
    availability_zone: str | None
    server_id: str | None
    volume_id: str | None
    addresses: list[dict[str, Any]]
    created_at: str
    updated_at: str
    deleted: bool
    deleted_at: str | None
    version: int
    fault: dict[str, Any] | None = None  # the latest open fault (domain/faults.py)
    volume_used_bytes: int | None = None  # as the guest last measured it


class InstanceViewQueries:
    """Reads of the instance view; ``heartbeat_expiry_s`` is Trove's ``agent_heartbeat_expiry``."""

    def __init__(self, engine: Engine, heartbeat_expiry_s: float, clock: Callable[[], float] = time.time, *,
                 marks: Table | None = None) -> None:
        """``marks`` is the API's write-marks table as ``engine``'s connections see it, when they do."""
        self._engine = engine
        self._expiry = heartbeat_expiry_s
        self._clock = clock
        # Built and compiled once: a show and a list are the API's hottest paths, and building the
        # statements cost more than running them.
        by_id = self.select_rows().where(instance_view.c.id == bindparam("instance_id"))
        self._by_id = {True: PreparedRead(engine, by_id),
                       False: PreparedRead(engine, by_id.where(instance_view.c.deleted.is_(False)))}
        self.reads_marks = marks is not None
        if marks is not None:
            marked = (select(func.max(marks.c.version)).where(marks.c.instance_id == instance_view.c.id)
                      .scalar_subquery().label("marked_version"))
            self._by_id_marked = PreparedRead(engine, by_id.add_columns(marked))
        self._pages = {(tenant, marker, deleted): PreparedRead(engine, self._page(tenant, marker, deleted))
                       for tenant in (True, False) for marker in (True, False) for deleted in (True, False)}

    def get(self, instance_id: str, *, include_deleted: bool = False) -> InstanceRecord | None:
        row = self._by_id[include_deleted].first(instance_id=instance_id)
        return self.record(row) if row else None

    def get_marked(self, instance_id: str) -> tuple[InstanceRecord | None, int | None]:
        """The row (deleted or not) and the latest version the API marked as written for it, in one read
        (only when built with the ``marks`` its engine sees)."""
        row = self._by_id_marked.first(instance_id=instance_id)
        return (self.record(row), row["marked_version"]) if row else (None, None)

    def page(self, tenant_id: str | None, *, limit: int, marker: str | None = None,
             include_deleted: bool = False) -> list[InstanceRecord]:
        """Up to ``limit`` instances after ``marker`` (an instance id), oldest first.

        The cost is bounded by ``limit``: the marker is found by its key and the page by the index. A
        marker that is not an instance's starts from the beginning.
        """
        read = self._pages[(tenant_id is not None, marker is not None, include_deleted)]
        rows = read.all(tenant_id=tenant_id, marker=marker, limit=limit)
        return [self.record(row) for row in rows]

    def _page(self, by_tenant: bool, after_marker: bool, include_deleted: bool):  # type: ignore[no-untyped-def]
        query = self.select_rows()
        if by_tenant:
            query = query.where(instance_view.c.tenant_id == bindparam("tenant_id"))
        if not include_deleted:
            query = query.where(instance_view.c.deleted.is_(False))
        if after_marker:
            anchor = instance_view.alias("anchor")
            anchored = (select(anchor.c.created_at).where(anchor.c.id == bindparam("marker"))
                        .scalar_subquery())
            query = query.where(or_(anchored.is_(None), instance_view.c.created_at > anchored,
                                    and_(instance_view.c.created_at == anchored,
                                         instance_view.c.id > bindparam("marker"))))
        return query.order_by(instance_view.c.created_at, instance_view.c.id).limit(bindparam("limit"))

    @staticmethod
    def select_rows():  # type: ignore[no-untyped-def]
        """The view's rows with their guest's last heartbeat, as every read selects them."""
        return (select(instance_view, guest_heartbeats.c.last_seen_at, guest_heartbeats.c.volume_used_bytes)
                .select_from(instance_view.outerjoin(guest_heartbeats,
                                                     guest_heartbeats.c.instance_id == instance_view.c.id)))

    def record(self, row: Any) -> InstanceRecord:
        """A record from a ``select_rows`` row mapping: SQLAlchemy's, or a ``PreparedRead``'s (driver values)."""
        row = getattr(row, "_mapping", row)
        task = TaskStatus[row["task_status"]]
        service = ServiceStatus.from_description(row["service_status"])
        server_status, updated = row["server_status"], row["service_status_updated"]
        last_seen = row["last_seen_at"]
        if updated:
            last_seen = max(last_seen or 0.0, _epoch(updated))
        expired = last_seen is None or self._clock() - last_seen > self._expiry
        return InstanceRecord(
            id=row["id"], tenant_id=row["tenant_id"], name=row["name"],
            status=visible_status(task, server_status, backup_running=row["operation"] == BACKUP_CREATE),
            operating_status=operating_status(task, server_status, service, expired),
            task_status=task, server_status=server_status, service_status=service,
            service_status_updated=updated, flavor=json_value(row["flavor"]), volume_size=row["volume_size"],
            datastore=row["datastore"], datastore_version=row["datastore_version"],
            datastore_version_id=row["datastore_version_id"], region=row["region"],
            availability_zone=row["availability_zone"], server_id=row["server_id"], volume_id=row["volume_id"],
            addresses=json_value(row["addresses"]), created_at=row["created_at"], updated_at=row["updated_at"],
            deleted=bool(row["deleted"]), deleted_at=row["deleted_at"], version=row["version"],
            fault=faults.current_fault({"open": json_value(row["open_faults"])}),
            volume_used_bytes=row["volume_used_bytes"])


def record_from_aggregate(instance: Instance, events: Iterable[PublicEvent] = ()) -> InstanceRecord:
    """The same record built from the aggregate, for a read that must not wait for the view (read-your-writes);
    its fault is folded from ``events``, the aggregate's own."""
    state = faults.new_state()
    for event in events:
        faults.fold(state, event)
    created = instance.created_on.isoformat()
    updated = instance.modified_on.isoformat()
    return InstanceRecord(
        id=str(instance.id), tenant_id=instance.tenant_id, name=instance.name,
        status=visible_status(instance.task, instance.server_status, backup_running=instance.backup_running),
        operating_status=operating_status(instance.task, instance.server_status, instance.service_status),
        task_status=instance.task, server_status=instance.server_status, service_status=instance.service_status,
        service_status_updated=None, flavor=dict(instance.flavor), volume_size=instance.volume_size,
        datastore=instance.datastore, datastore_version=instance.datastore_version,
        datastore_version_id=instance.datastore_version_id, region=instance.region, availability_zone=None,
        server_id=instance.server_id, volume_id=instance.volume_id, addresses=[], created_at=created,
        updated_at=updated, deleted=instance.deleted, deleted_at=updated if instance.deleted else None,
        version=instance.version, fault=faults.current_fault(state))


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
