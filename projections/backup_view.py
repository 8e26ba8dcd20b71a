"""The backup view: every backup's row as the API lists and shows it, folded from the Backup's events.

It lives beside the instance view and is written by the same projection (``InstanceView`` hands it
the Backup's events), so a tenant's backups cost no consumer of their own. Deleted backups keep
their row (``deleted``), out of every list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from domain import backup as backups
from domain.public_events import PublicEvent
from projections.prepared import PreparedRead

metadata = MetaData()

backup_view = Table(
    "backup_view",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("instance_id", String(36), nullable=False),
    Column("name", String(80), nullable=False),
    Column("description", String(512)),
    Column("parent_id", String(36)),
    Column("status", String(20), nullable=False),
    Column("location", String(1024)),
    Column("size", BigInteger),  # bytes stored
    Column("checksum", String(71)),
    Column("fail_reason", String(2000)),
    Column("datastore", String(64), nullable=False),
    Column("datastore_version", String(64), nullable=False),
    Column("datastore_version_id", String(36), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),
    Index("ix_backup_view_tenant_page", "tenant_id", "deleted", "created_at", "id"),
    Index("ix_backup_view_instance", "instance_id", "deleted", "created_at", "id"),
)


BACKUP_EVENT_TYPES = frozenset({"BackupCreated", "BackupStarted", "BackupCompleted", "BackupFailed",
                                "BackupDeleteRequested", "BackupDeleted", "BackupDeleteFailed"})


def apply_backup_event(event: PublicEvent, session: Session) -> None:
    table, data = backup_view, event.data
    if event.type == "BackupCreated":
        session.execute(insert(table).values(
            id=event.aggregate_id, tenant_id=data["tenant_id"], instance_id=data["instance_id"], name=data["name"],
            description=data.get("description"), parent_id=data.get("parent_id"), status=backups.NEW,
            datastore=data["datastore"], datastore_version=data["datastore_version"],
            datastore_version_id=data["datastore_version_id"], created_at=event.occurred_at,
            updated_at=event.occurred_at, deleted=False, version=event.version))
        return
    changes: dict[str, Any] = {
        "BackupStarted": lambda: {"status": backups.BUILDING, "location": data["location"]},
        "BackupCompleted": lambda: {"status": backups.COMPLETED, "size": data["size"], "checksum": data["checksum"]},
        "BackupFailed": lambda: {"status": backups.FAILED, "fail_reason": data["message"]},
        "BackupDeleteRequested": lambda: {},
        "BackupDeleted": lambda: {"deleted": True},
        "BackupDeleteFailed": lambda: {"status": backups.DELETE_FAILED, "fail_reason": data["message"]},
    }[event.type]()
    session.execute(update(table).where(table.c.id == event.aggregate_id)
                    .values(**changes, updated_at=event.occurred_at, version=event.version))


def apply_backup_progress(event: PublicEvent, session: Session) -> None:
    """The guest's progress (an instance's ``BackupProgressed``) shows as the backup's ``updated`` moving on:
    Trove's body has no progress of its own. The row's version stays the Backup's."""
    table = backup_view
    session.execute(update(table).where(table.c.id == event.data["backup_id"], table.c.status == backups.BUILDING)
                    .values(updated_at=event.occurred_at))


@dataclass(frozen=True)
class BackupRecord:
    id: str
    tenant_id: str
    instance_id: str
    name: str
    description: str | None
    parent_id: str | None
    status: str
    location: str | None
    size: int | None
    datastore: str
    datastore_version: str
    datastore_version_id: str
    created_at: str
    updated_at: str
    deleted: bool = False
    fail_reason: str | None = None


class BackupQueries:
    """Pages of backups (a tenant's, or an instance's) and single backups, oldest first."""

    def __init__(self, engine: Engine) -> None:
        table = self._table = backup_view
        columns = [table.c[name] for name in BackupRecord.__dataclass_fields__]
        by_id = select(*columns).where(table.c.id == bindparam("backup_id"))
        self._by_id = PreparedRead(engine, by_id)
        self._pages = {(scope, after): PreparedRead(engine, self._page(columns, scope, after))
                       for scope in ("tenant", "instance") for after in (True, False)}

    def get(self, backup_id: str) -> BackupRecord | None:
        row = self._by_id.first(backup_id=backup_id)
        return BackupRecord(**row) if row else None

    def page(self, *, tenant_id: str | None = None, instance_id: str | None = None, limit: int,
             marker: str | None = None) -> list[BackupRecord]:
        """Up to ``limit`` live backups after ``marker`` (a backup id) of a tenant or of an instance."""
        scope = "instance" if instance_id is not None else "tenant"
        read = self._pages[(scope, marker is not None)]
        rows = read.all(tenant_id=tenant_id, instance_id=instance_id, marker=marker, limit=limit)
        return [BackupRecord(**row) for row in rows]

    def _page(self, columns: list[Any], scope: str, after_marker: bool):  # type: ignore[no-untyped-def]
        table = self._table
        query = select(*columns).where(table.c.deleted.is_(False))
        query = query.where(table.c.instance_id == bindparam("instance_id") if scope == "instance"
                            else table.c.tenant_id == bindparam("tenant_id"))
        if after_marker:
            anchor = table.alias("anchor")
            anchored = select(anchor.c.created_at).where(anchor.c.id == bindparam("marker")).scalar_subquery()
            query = query.where(or_(anchored.is_(None), table.c.created_at > anchored,
                                    and_(table.c.created_at == anchored, table.c.id > bindparam("marker"))))
        return query.order_by(table.c.created_at, table.c.id).limit(bindparam("limit"))
