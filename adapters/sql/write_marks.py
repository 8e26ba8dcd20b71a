"""The API's note of the writes it accepted, so a client's next read shows them (read your writes).

Each write the API accepts leaves a mark (tenant, instance, version written). A show reads the row and
its mark and waits, within the read-your-writes bound, only while the row is older than the mark; a
list waits until the view holds every fresh mark of its tenant.

On PostgreSQL the marks live beside the instance view. On SQLite they live in a file of their own: a
mark is written on every accepted request, and in the view's file it waited behind the projections'
transactions for the one write lock. Either way a show reads row and mark in one query: on SQLite the
marks' file is attached to the API's view connections (``marks_seen_from``). Marks are bookkeeping,
not state: they expire after ``horizon_s`` (a view that far behind is an incident, not a read to wait
for) and losing one only loses the wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, MetaData, Table, bindparam, delete, event, func, or_, select

from adapters.sql.engine import read_only
from projections.instance_view import instance_view, write_marks
from projections.prepared import PreparedRead
from projections.upsert import upsert_statement

ATTACHED_AS = "trove_es_marks"


def marks_seen_from(view_engine: Engine, marks_engine: Engine) -> Table:
    """The marks table as the view engine's connections see it, for a show's one query of row and mark.

    Beside the view it is the table itself. In a SQLite file of its own, that file is attached to each
    of the view engine's connections (reading both in one statement locks neither for writing). Call it
    before the view engine serves reads: connections it opened earlier are closed, to reopen attached.
    """
    if marks_engine.url == view_engine.url:
        return write_marks
    if view_engine.dialect.name != "sqlite" or marks_engine.dialect.name != "sqlite":
        raise ValueError("write marks apart from the instance view are only supported on SQLite")
    path = marks_engine.url.database

    @event.listens_for(view_engine, "connect")
    def _attach(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"ATTACH DATABASE ? AS {ATTACHED_AS}", (path,))

    view_engine.dispose()
    return write_marks.to_metadata(MetaData(), schema=ATTACHED_AS)


class WriteMarks:
    def __init__(self, engine: Engine, horizon_s: float = 60.0, clock: Callable[[], float] = time.time, *,
                 view: Engine | None = None) -> None:
        """``engine`` holds the marks; ``view``, the instance view's database when it is another one."""
        self._engine = engine
        self._reader = read_only(engine)
        self._horizon_s = horizon_s
        self._clock = clock
        self.beside_view = view is None or view is engine
        # Before every list and show: compiled once.
        if self.beside_view:
            self._behind = PreparedRead(self._reader, select(write_marks.c.instance_id)
                                        .select_from(write_marks.outerjoin(
                                            instance_view, instance_view.c.id == write_marks.c.instance_id))
                                        .where(write_marks.c.tenant_id == bindparam("tenant_id"),
                                               write_marks.c.written_at >= bindparam("since"),
                                               or_(instance_view.c.version.is_(None),
                                                   instance_view.c.version < write_marks.c.version))
                                        .limit(1))
        else:
            assert view is not None
            self._fresh = PreparedRead(self._reader, select(write_marks.c.instance_id, write_marks.c.version)
                                       .where(write_marks.c.tenant_id == bindparam("tenant_id"),
                                              write_marks.c.written_at >= bindparam("since")))
            self._view_reader = read_only(view)
            self._marked = PreparedRead(self._reader, select(func.max(write_marks.c.version).label("version"))
                                        .where(write_marks.c.instance_id == bindparam("instance_id")))

    @property
    def engine(self) -> Engine:
        """The marks' own database."""
        return self._engine

    def mark(self, tenant_id: str, instance_id: str, version: int) -> None:
        now = self._clock()
        with self._engine.begin() as connection:
            upsert = upsert_statement(connection, write_marks, ["tenant_id", "instance_id"], ["written_at"],
                                      greatest=["version"])
            connection.execute(upsert.values(tenant_id=tenant_id, instance_id=instance_id, version=version,
                                             written_at=now))
            connection.execute(delete(write_marks).where(write_marks.c.written_at < now - self._horizon_s))

    def view_is_behind(self, tenant_id: str) -> bool:
        """True while the instance view lacks a fresh write of the tenant's."""
        since = self._clock() - self._horizon_s
        if self.beside_view:
            return self._behind.first(tenant_id=tenant_id, since=since) is not None
        fresh = {row["instance_id"]: row["version"] for row in self._fresh.all(tenant_id=tenant_id, since=since)}
        if not fresh:
            return False
        with self._view_reader.connect() as connection:
            seen = dict(connection.execute(select(instance_view.c.id, instance_view.c.version)
                                           .where(instance_view.c.id.in_(list(fresh)))).all())
        return any(seen.get(instance_id, 0) < version for instance_id, version in fresh.items())

    def marked(self, instance_id: str) -> int | None:
        """The latest version written to ``instance_id`` (marks apart from the view only; beside it, the
        view's ``get_marked`` reads row and mark together)."""
        row = self._marked.first(instance_id=instance_id)
        return row["version"] if row else None
