"""The task manager's work items in SQL: ``task_manager_work``, one row per operation in flight.

The consumer half writes rows in the consumer runner's session, beside the offsets it commits; the
driver reads due rows and moves them on in transactions of its own. ``metadata`` creates the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    bindparam,
    case,
    delete,
    literal,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from projections.prepared import InTransaction
from services.ports import WorkItem

metadata = MetaData()

work_items = Table(
    "task_manager_work",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("request_id", String(64), primary_key=True),
    Column("kind", String(32), primary_key=True),  # create, restart, resize_volume, resize_flavor, delete, settle
    Column("operation", String(32), nullable=False),  # Trove's operation name
    Column("step", String(32), nullable=False),
    Column("context", Text, nullable=False),  # JSON: the operation's recorded context
    Column("detail", Text, nullable=False),  # JSON: what the steps need (prepare arguments, new size...)
    Column("deadline", Float),  # the operation fails if not done by then (epoch seconds)
    Column("due_at", Float),  # when the driver runs the step next; NULL: parked until the closing event
    Column("wakes", Integer, nullable=False),  # bumped by events that make a waiting step worth re-running
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Index("ix_task_manager_work_due", "due_at"),
    Index("ix_task_manager_work_instance", "instance_id"),
)

_c = work_items.c
# Bound parameters carry a prefix: SQLAlchemy keeps bare column names for an UPDATE's own SET values.
_KEY = (_c.instance_id == bindparam("k_instance_id"), _c.request_id == bindparam("k_request_id"),
        _c.kind == bindparam("k_kind"))
_AT_STEP = (*_KEY, _c.step == bindparam("k_step"))

# The consumer half's writes run once per consumed event: compiled once, run on the transaction's cursor.
_ADD = {dialect: InTransaction(insert.on_conflict_do_nothing(), column_keys=[c.key for c in work_items.c])
        for dialect, insert in (("postgresql", postgresql.insert(work_items)), ("sqlite", sqlite.insert(work_items)))}
_WAKE = InTransaction(update(work_items)
                      .where(_c.instance_id == bindparam("k_instance_id"), _c.step == bindparam("k_step"),
                             _c.due_at.is_not(None))
                      .values(due_at=bindparam("k_now", type_=Float), wakes=_c.wakes + 1))


@lru_cache(maxsize=16)
def _remove_operation(kept: frozenset[str]):  # type: ignore[no-untyped-def]
    # One statement per set of kinds kept, with the kinds written in: an expanding parameter made
    # SQLAlchemy render the statement again on every execution, for every operation that closed.
    return InTransaction(delete(work_items)
                         .where(_c.instance_id == bindparam("k_instance_id"),
                                _c.request_id == bindparam("k_request_id"),
                                *(_c.kind != literal(kind) for kind in sorted(kept)))
                         .returning(_c.detail))


_DUE = (select(work_items).where(_c.due_at <= bindparam("k_now", type_=Float))
        .order_by(_c.due_at, _c.created_at).limit(bindparam("k_limit", type_=Integer)))
_GET = select(work_items).where(*_KEY)
_DONE = delete(work_items).where(*_AT_STEP)
_MOVED = {"step": bindparam("k_new_step"), "attempts": bindparam("k_attempts", type_=Integer),
          "last_error": bindparam("k_last_error", type_=Text)}
_SCHEDULE = update(work_items).where(*_AT_STEP).values(
    # A wake that landed while the step ran (wakes no longer what the driver read) makes the item due at once.
    due_at=case((_c.wakes != bindparam("k_wakes", type_=Integer), bindparam("k_now", type_=Float)),
                else_=bindparam("k_due_at", type_=Float)),
    **_MOVED).returning(work_items)
_PARK = update(work_items).where(*_AT_STEP).values(due_at=None, **_MOVED).returning(work_items)

_AFTER_COMMIT, _LISTENING = "trove_es_after_commit", "trove_es_after_commit_listening"


class SqlWorkItems:
    """``WorkItems`` in ``task_manager_work``: the consumer's session for its half, ``engine`` for the driver's.

    ``reader`` (``adapters.sql.engine.read_only`` of the same database) takes the driver's polls and
    look-ups, so they wait on no writer's lock.
    """

    def __init__(self, engine: Engine, reader: Engine | None = None) -> None:
        self._engine = engine
        self._reader = reader or engine

    # Consumer half ---------------------------------------------------------------------------------

    def add(self, transaction: Session, item: WorkItem) -> None:
        connection = transaction.connection()
        _ADD[connection.dialect.name].execute(connection, {
            "instance_id": item.instance_id, "request_id": item.request_id, "kind": item.kind,
            "operation": item.operation, "step": item.step, "context": json.dumps(item.context, sort_keys=True),
            "detail": json.dumps(item.detail, sort_keys=True), "deadline": item.deadline, "due_at": item.due_at,
            "wakes": item.wakes, "attempts": item.attempts, "last_error": item.last_error,
            "created_at": item.created_at}).close()

    def wake(self, transaction: Session, instance_id: str, step: str, now: float) -> None:
        _WAKE.execute(transaction.connection(), {"k_instance_id": instance_id, "k_step": step, "k_now": now}).close()

    def remove_operation(self, transaction: Session, instance_id: str, request_id: str,
                         kept_kinds: Collection[str]) -> dict[str, Any] | None:
        cursor = _remove_operation(frozenset(kept_kinds)).execute(transaction.connection(), {
            "k_instance_id": instance_id, "k_request_id": request_id})
        try:
            removed = cursor.fetchone()
        finally:
            cursor.close()
        return json.loads(removed[0]) if removed is not None else None

    def after_commit(self, transaction: Session, callback: Callable[[], None]) -> None:
        pending = transaction.info.setdefault(_AFTER_COMMIT, [])
        if not transaction.info.get(_LISTENING):
            # One listener per session however many events ask, whatever they ask for.
            transaction.info[_LISTENING] = True
            sa_event.listen(transaction, "after_commit", _run_after_commit)
        if callback not in pending:
            pending.append(callback)

    # Driver half -----------------------------------------------------------------------------------

    def due(self, limit: int, now: float) -> list[WorkItem]:
        with self._reader.connect() as connection:
            return [_item(row) for row in connection.execute(_DUE, {"k_now": now, "k_limit": limit})]

    def get(self, instance_id: str, request_id: str, kind: str) -> WorkItem | None:
        with self._reader.connect() as connection:
            row = connection.execute(_GET, {"k_instance_id": instance_id, "k_request_id": request_id,
                                            "k_kind": kind}).first()
        return _item(row) if row is not None else None

    def save(self, item: WorkItem, *, step: str, due_at: float | None, attempts: int, last_error: str | None,
             now: float, done: bool = False) -> WorkItem | None:
        at_step = {"k_instance_id": item.instance_id, "k_request_id": item.request_id, "k_kind": item.kind,
                   "k_step": item.step}
        with self._engine.begin() as connection:
            if done:
                connection.execute(_DONE, at_step)
                return None
            moved = {**at_step, "k_new_step": step, "k_attempts": attempts, "k_last_error": last_error}
            if due_at is None:
                row = connection.execute(_PARK, moved).first()
            else:
                row = connection.execute(_SCHEDULE, {**moved, "k_wakes": item.wakes, "k_now": now,
                                                     "k_due_at": due_at}).first()
        return _item(row) if row is not None else None


def _run_after_commit(session: Session) -> None:
    # SQLAlchemy reports a savepoint's release as a commit too; the rows are visible only after the outermost one.
    if session.in_nested_transaction():
        return
    for callback in session.info.pop(_AFTER_COMMIT, ()):
        callback()


def _item(row: Row[Any]) -> WorkItem:
    return WorkItem(instance_id=row.instance_id, request_id=row.request_id, kind=row.kind, operation=row.operation,
                    step=row.step, context=json.loads(row.context), detail=json.loads(row.detail),
                    deadline=row.deadline, due_at=row.due_at, wakes=row.wakes, attempts=row.attempts,
                    last_error=row.last_error, created_at=row.created_at)
