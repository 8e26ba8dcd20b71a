"""Fault history and the operation log: what became of every operation on every instance.

- ``instance_faults``: every fault (``domain/faults.py``), in Trove's columns plus what an operator
  asks of them (request, operation, service, datastore version, when and by what it was resolved).
  Rows are never overwritten, only resolved and, with their instance, soft-deleted. An owner reads
  their instance's history without ``details``; an admin with them, deleted instances included.
- ``instance_operations``: each operation's start, end and outcome, for latency by operation type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
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
    Text,
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
from domain.catalog import domain_catalog
from domain.notifications import OPENING_EVENTS
from domain.public_events import PublicEvent
from projections.json_rows import JsonRows, json_rows_table
from projections.upsert import upsert_statement

metadata = MetaData()

instance_faults = Table(
    "instance_faults",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("instance_id", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("message", String(255), nullable=False),
    Column("details", Text, nullable=False),
    Column("created", String(40), nullable=False),
    Column("updated", String(40), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("deleted_at", String(40)),
    Column("request_id", String(64)),
    Column("event_type", String(64), nullable=False),  # the operation that failed
    Column("server_type", String(40), nullable=False),
    Column("datastore", String(64)),
    Column("datastore_version", String(64)),
    Column("resolved_at", String(40)),
    Column("resolved_by", String(64)),
    Column("version", BigInteger, nullable=False),  # of the instance event that recorded it, for a stable order
    # An instance's history, newest first; the faults of a time window.
    Index("ix_instance_faults_instance", "instance_id", "created", "id"),
    Index("ix_instance_faults_created", "created"),
)
instance_operations = Table(
    "instance_operations",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("request_id", String(64), primary_key=True),
    Column("operation", String(64), nullable=False),
    Column("tenant_id", String(64)),
    Column("started_at", String(40), nullable=False),
    Column("ended_at", String(40)),
    Column("outcome", String(16)),  # succeeded, failed; null while running
    Index("ix_instance_operations_ended", "ended_at", "operation"),
)
# instance id → the fold's state (open faults, datastore health) and the instance's datastore version.
fault_instances = json_rows_table("fault_instances", metadata)

OPENING = OPENING_EVENTS
CLOSING = {"OperationSucceeded": "succeeded", "OperationFailed": "failed"}
HANDLED = frozenset({*OPENING, *CLOSING, "ServiceStatusChanged", "Deleted", "GuestFaultReported",
                     "GuestFaultCleared"})


class FaultHistory:
    name = "fault-history"
    metadata = metadata
    handles = HANDLED

    def __init__(self) -> None:
        self.catalog = domain_catalog()

    def apply(self, event: PublicEvent, session: Session) -> None:
        if event.type not in HANDLED or event.aggregate_type != "Instance":
            return
        self._log(event, session)
        known = JsonRows(session, fault_instances)
        key = event.aggregate_id
        if event.type == "CreateRequested":
            known[key] = {**faults.new_state(), "datastore": event.data["datastore"],
                          "datastore_version": event.data["datastore_version"]}
            return
        state = known.get(key)
        if state is None:
            return  # an instance from before this projection's history began
        changes = faults.fold(state, event)
        for change in changes:
            self._record(session, key, state, change)
        if event.type == "Deleted":
            del known[key]  # its faults are all soft-deleted; nothing more can happen to it
        elif changes or event.type == "ServiceStatusChanged":
            known[key] = state

    @staticmethod
    def _log(event: PublicEvent, session: Session) -> None:
        if event.type in OPENING:
            connection = session.connection()
            connection.execute(upsert_statement(connection, instance_operations, ["instance_id", "request_id"],
                                                ["operation", "started_at"]),
                               [{"instance_id": event.aggregate_id, "request_id": event.request_id,
                                 "operation": event.data["operation"], "tenant_id": event.tenant_id,
                                 "started_at": event.occurred_at}])
        elif event.type in CLOSING:
            session.execute(update(instance_operations)
                            .where(instance_operations.c.instance_id == event.aggregate_id,
                                   instance_operations.c.request_id == event.data["request_id"],
                                   instance_operations.c.ended_at.is_(None))
                            .values(ended_at=event.occurred_at, outcome=CLOSING[event.type]))

    @staticmethod
    def _record(session: Session, instance_id: str, state: dict[str, Any], change: faults.FaultChange) -> None:
        if isinstance(change, faults.FaultRecorded):
            fault = change.fault
            session.execute(insert(instance_faults).values(
                id=fault["id"], instance_id=instance_id, tenant_id=fault["tenant_id"], message=fault["message"],
                details=fault["details"], created=fault["created"], updated=fault["created"], deleted=False,
                request_id=fault["request_id"], event_type=fault["operation"], server_type=fault["server_type"],
                datastore=state.get("datastore"), datastore_version=state.get("datastore_version"),
                version=fault["version"]))
        elif isinstance(change, faults.FaultsResolved):
            session.execute(update(instance_faults).where(instance_faults.c.id.in_(change.fault_ids))
                            .values(resolved_at=change.resolved_at, resolved_by=change.resolved_by))
        elif isinstance(change, faults.FaultsDeleted):
            session.execute(update(instance_faults).where(instance_faults.c.instance_id == instance_id)
                            .values(deleted=True, deleted_at=change.deleted_at))


@dataclass(frozen=True)
class FaultRecord:
    id: str
    instance_id: str
    message: str
    details: str
    created: str
    updated: str
    deleted: bool
    deleted_at: str | None
    request_id: str | None
    event_type: str
    server_type: str
    datastore: str | None
    datastore_version: str | None
    resolved_at: str | None
    resolved_by: str | None


class FaultQueries:
    def __init__(self, reader: Engine) -> None:
        """``reader``: an engine for queries only (``adapters.sql.engine.read_only``)."""
        self._reader = reader
        anchor = instance_faults.alias("anchor")
        marker_created = select(anchor.c.created).where(anchor.c.id == bindparam("marker")).scalar_subquery()
        marker_version = select(anchor.c.version).where(anchor.c.id == bindparam("marker")).scalar_subquery()
        newest_first = (instance_faults.c.created.desc(), instance_faults.c.version.desc(), instance_faults.c.id)
        by_instance = select(instance_faults).where(instance_faults.c.instance_id == bindparam("instance_id"))
        self._first_page = by_instance.order_by(*newest_first).limit(bindparam("limit"))
        self._next_page = (by_instance.where(or_(
            instance_faults.c.created < marker_created,
            and_(instance_faults.c.created == marker_created, instance_faults.c.version < marker_version)))
            .order_by(*newest_first).limit(bindparam("limit")))

    def has(self, instance_id: str, fault_id: str) -> bool:
        query = select(instance_faults.c.id).where(instance_faults.c.instance_id == instance_id,
                                                   instance_faults.c.id == fault_id[:64])
        with self._reader.connect() as connection:
            return connection.execute(query).first() is not None

    def history(self, instance_id: str, *, limit: int, marker: str | None = None) -> list[FaultRecord]:
        """An instance's faults, newest first, ``limit`` of them after ``marker`` (a fault id)."""
        query, params = ((self._next_page, {"marker": marker}) if marker else (self._first_page, {}))
        with self._reader.connect() as connection:
            rows = connection.execute(query, {"instance_id": instance_id, "limit": limit, **params}).all()
        return [_record(row) for row in rows]


@dataclass(frozen=True)
class FaultGroup:
    datastore: str | None
    datastore_version: str | None
    message: str
    faults: int
    instances: int
    first: str
    last: str


@dataclass(frozen=True)
class OperationLatency:
    operation: str
    count: int
    failed: int
    p50_s: float
    p95_s: float
    max_s: float


class OperationReports:
    """Faults and operation latency in a time window, from the fault history's tables and indexes."""

    def __init__(self, reader: Engine) -> None:
        self._reader = reader

    def fault_groups(self, start: str, end: str, *, limit: int = 100) -> list[FaultGroup]:
        """Faults recorded in [start, end) (ISO 8601 UTC), grouped by datastore version and message, most first."""
        faults_ = instance_faults.c
        query = (select(faults_.datastore, faults_.datastore_version, faults_.message,
                        func.count().label("faults"), func.count(faults_.instance_id.distinct()).label("instances"),
                        func.min(faults_.created).label("first"), func.max(faults_.created).label("last"))
                 .where(faults_.created >= start, faults_.created < end)
                 .group_by(faults_.datastore, faults_.datastore_version, faults_.message)
                 .order_by(func.count().desc(), faults_.message).limit(limit))
        with self._reader.connect() as connection:
            return [FaultGroup(**row._mapping) for row in connection.execute(query)]

    def latency(self, start: str, end: str) -> list[OperationLatency]:
        """Per operation type, how long the operations that ended in [start, end) took, start to end."""
        ops = instance_operations.c
        query = (select(ops.operation, ops.started_at, ops.ended_at, ops.outcome)
                 .where(ops.ended_at >= start, ops.ended_at < end))
        took: dict[str, list[tuple[float, bool]]] = {}
        with self._reader.connect() as connection:
            for row in connection.execute(query):
                ended, started = datetime.fromisoformat(row.ended_at), datetime.fromisoformat(row.started_at)
                seconds = (ended - started).total_seconds()
                took.setdefault(row.operation, []).append((max(0.0, seconds), row.outcome == "failed"))
        return [OperationLatency(operation, len(runs), sum(failed for _, failed in runs),
                                 _percentile([s for s, _ in runs], 50), _percentile([s for s, _ in runs], 95),
                                 max(s for s, _ in runs))
                for operation, runs in sorted(took.items())]


def _percentile(values: list[float], percent: float) -> float:
    """Nearest rank: the smallest value with at least ``percent`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _record(row: Any) -> FaultRecord:
    return FaultRecord(**{name: row._mapping[name] for name in FaultRecord.__dataclass_fields__})
