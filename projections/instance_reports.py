"""Operators' questions about instances, answered from the instance view and its indexes: every tenant's
instances filtered as the mgmt list allows, builds stuck for too long, guests gone silent."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, false, or_, select

from domain.statuses import KNOWN_SERVER_STATUSES, ServiceStatus, TaskStatus, showing
from projections.guest_heartbeats import guest_heartbeats
from projections.instance_view import InstanceRecord, InstanceViewQueries, instance_view


@dataclass(frozen=True)
class InstanceFilter:
    project_id: str | None = None
    status: str | None = None
    datastore: str | None = None
    include_deleted: bool = False


def status_condition(status: str):  # type: ignore[no-untyped-def]
    """The stored columns' condition for a visible ``status`` (``domain.statuses.showing``)."""
    clauses = []
    for pairs in showing(status):
        server = []
        if pairs.server_statuses:
            server.append(instance_view.c.server_status.in_(pairs.server_statuses))
        if pairs.without_server:
            server.append(instance_view.c.server_status.is_(None))
        if pairs.unknown_servers:
            server.append(and_(instance_view.c.server_status.is_not(None),
                               instance_view.c.server_status.not_in(KNOWN_SERVER_STATUSES)))
        clauses.append(and_(instance_view.c.task_status == pairs.task.name, or_(*server)))
    return or_(*clauses) if clauses else false()


class InstanceReports:
    def __init__(self, reader: Engine, views: InstanceViewQueries, heartbeat_expiry_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        """``reader``: an engine for queries only; ``views`` turns rows into records."""
        self._reader = reader
        self._views = views
        self._expiry = heartbeat_expiry_s
        self._clock = clock

    def instances(self, chosen: InstanceFilter, *, limit: int, marker: str | None = None) -> list[InstanceRecord]:
        """Every tenant's instances that ``chosen`` admits, oldest first, ``limit`` after ``marker``."""
        query = InstanceViewQueries.select_rows()
        if chosen.project_id is not None:
            query = query.where(instance_view.c.tenant_id == chosen.project_id)
        if chosen.status is not None:
            query = query.where(status_condition(chosen.status))
        if chosen.datastore is not None:
            query = query.where(instance_view.c.datastore == chosen.datastore)
        if not chosen.include_deleted:
            query = query.where(instance_view.c.deleted.is_(False))
        if marker is not None:
            anchor = instance_view.alias("anchor")
            created = select(anchor.c.created_at).where(anchor.c.id == marker).scalar_subquery()
            query = query.where(or_(instance_view.c.created_at > created,
                                    and_(instance_view.c.created_at == created, instance_view.c.id > marker)))
        return self._records(query.order_by(instance_view.c.created_at, instance_view.c.id).limit(limit))

    def stuck_builds(self, minutes: float, *, limit: int) -> list[InstanceRecord]:
        """Instances still building (no build error yet) that were created more than ``minutes`` ago."""
        cutoff = datetime.fromtimestamp(self._clock() - minutes * 60, UTC).isoformat()
        query = (InstanceViewQueries.select_rows()
                 .where(instance_view.c.task_status == TaskStatus.BUILDING.name,
                        instance_view.c.created_at < cutoff, instance_view.c.deleted.is_(False))
                 .order_by(instance_view.c.created_at, instance_view.c.id).limit(limit))
        return self._records(query)

    def silent_guests(self, *, limit: int) -> list[InstanceRecord]:
        """Instances whose guest has not been heard from for ``agent_heartbeat_expiry``, as the API's
        ``operating_status`` decides it: neither a heartbeat nor a status change since. Only guests that
        ever reported (a build that never reached its guest is another question: ``stuck_builds``)."""
        cutoff = self._clock() - self._expiry
        cutoff_iso = datetime.fromtimestamp(cutoff, UTC).isoformat()
        heartbeat, changed = guest_heartbeats.c.last_seen_at, instance_view.c.service_status_updated
        query = (InstanceViewQueries.select_rows()
                 .where(or_(heartbeat.is_(None), heartbeat < cutoff), or_(changed.is_(None), changed < cutoff_iso),
                        instance_view.c.service_status != ServiceStatus.NEW.description,
                        instance_view.c.deleted.is_(False))
                 .order_by(instance_view.c.created_at, instance_view.c.id).limit(limit))
        return self._records(query)

    def _records(self, query) -> list[InstanceRecord]:  # type: ignore[no-untyped-def]
        with self._reader.connect() as connection:
            return [self._views.record(row) for row in connection.execute(query)]

