"""The API's note of the writes it accepted, so a client's next read shows them (read your writes).

Each write the API accepts leaves a mark (tenant, instance, version written) in the read-model
database, beside the instance view. A show reads the row and its mark in one query and waits, within
the read-your-writes bound, only while the row is older than the mark; a list waits until the view
holds every fresh mark of its tenant. Marks are bookkeeping, not state: they expire after
``horizon_s`` (a view that far behind is an incident, not a read to wait for) and losing one only
loses the wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, bindparam, delete, or_, select

from adapters.sql.engine import read_only
from projections.instance_view import instance_view, write_marks
from projections.prepared import PreparedRead
from projections.upsert import upsert_statement


class WriteMarks:
    def __init__(self, engine: Engine, horizon_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._horizon_s = horizon_s
        self._clock = clock
        # Before every list: compiled once.
        self._behind = PreparedRead(self._reader, select(write_marks.c.instance_id)
                                    .select_from(write_marks.outerjoin(instance_view,
                                                                       instance_view.c.id == write_marks.c.instance_id))
                                    .where(write_marks.c.tenant_id == bindparam("tenant_id"),
                                           write_marks.c.written_at >= bindparam("since"),
                                           or_(instance_view.c.version.is_(None),
                                               instance_view.c.version < write_marks.c.version))
                                    .limit(1))

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
        return self._behind.first(tenant_id=tenant_id, since=self._clock() - self._horizon_s) is not None
