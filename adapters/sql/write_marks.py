"""The API's note of each tenant's latest writes, so a list right after a write shows it.

A show can compare one instance's view row with the event store; a list cannot know which of the
tenant's instances the view still lacks, so each write the API accepts leaves a mark (tenant,
instance, version written). A list waits, within the read-your-writes bound, until the instance
view holds every fresh mark of its tenant. Marks are bookkeeping, not state: they expire after
``horizon_s`` (a view that far behind is an incident, not a read to wait for) and losing them only
loses the wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import BigInteger, Column, Engine, Float, Index, MetaData, String, Table, delete, or_, select

from adapters.sql.engine import read_only
from adapters.sql.upsert import upsert_statement
from projections.instance_view import instance_view

metadata = MetaData()

write_marks = Table(
    "instance_write_marks",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("instance_id", String(36), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("written_at", Float, nullable=False),
    Index("ix_instance_write_marks_written_at", "written_at"),
)


class WriteMarks:
    def __init__(self, engine: Engine, horizon_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._horizon_s = horizon_s
        self._clock = clock

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
        query = (select(write_marks.c.instance_id)
                 .select_from(write_marks.outerjoin(instance_view, instance_view.c.id == write_marks.c.instance_id))
                 .where(write_marks.c.tenant_id == tenant_id,
                        write_marks.c.written_at >= self._clock() - self._horizon_s,
                        or_(instance_view.c.version.is_(None), instance_view.c.version < write_marks.c.version))
                 .limit(1))
        with self._reader.connect() as connection:
            return connection.execute(query).first() is not None
