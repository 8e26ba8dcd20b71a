"""Catch projections up straight from the event store, for tests of reads that do not need Kafka.

The production path is store → relay → broker → consumer runner; these tests exercise what a
projection and its queries make of the events, so they apply the same public envelopes in-process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from adapters.sql.schema import create_tables
from domain.context import OperationContext
from domain.public_events import to_public_event
from domain.statuses import ServiceStatus
from projections.base import Projection
from services.application import TroveApplication
from services.instances import InstanceService


class InlineProjector:
    def __init__(self, application: TroveApplication, engine: Engine, projections: Iterable[Projection],
                 engines: Mapping[str, Engine] | None = None) -> None:
        """``engines``: by projection name, a database of its own (as ``Settings.projection_url`` gives
        some on SQLite); the others use ``engine``."""
        self._app = application
        self._projections = list(projections)
        self._engines = {p.name: (engines or {}).get(p.name, engine) for p in self._projections}
        self._position = 0
        for projection in self._projections:
            create_tables(self._engines[projection.name], projection.metadata)

    def catch_up(self) -> int:
        """Apply every event saved since the last call; returns how many."""
        applied = 0
        while True:
            notifications = self._app.recorder.select_notifications(self._position + 1, 500)
            if not notifications:
                return applied
            events = [to_public_event(self._app.mapper.to_domain_event(n)) for n in notifications]
            for projection in self._projections:
                with Session(self._engines[projection.name]) as session, session.begin():
                    for public in events:
                        projection.apply(public, session)
            self._position = notifications[-1].id
            applied += len(notifications)


def record_build_success(instances: InstanceService, instance_id: str, address: str) -> None:
    """What the task manager and conductor record for a build that worked, without running them."""
    tm = OperationContext(request_id="req-taskmanager", tenant_id="system", server_type="taskmanager")
    instances.record(instance_id, lambda i: i.record_server_provisioned(
        tm.recorded(), "server-1", "volume-1", "ACTIVE", [{"address": address, "type": "private"}]))
    instances.change_service_status(tm, instance_id, ServiceStatus.HEALTHY)
    instances.record(instance_id, lambda i: i.succeed(tm.recorded()))
