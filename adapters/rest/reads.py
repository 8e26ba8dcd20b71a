"""Reads that always show the caller's own writes, though the views are projections.

The instance view lags the event store by the relay and consumer hops. Every write the API accepts
is marked (``WriteMarks``) with the version it produced. A show reads the view row and its mark in
one query: a row at or past the mark is served at once; an older one is waited for, within a bound,
then rendered from the aggregate itself. A row the view does not have yet (the create just happened)
goes straight to the aggregate. A list waits, within the same bound, until the view holds the
tenant's marks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy.exc import SQLAlchemyError

from adapters.sql.write_marks import WriteMarks
from domain.context import OperationContext
from domain.errors import NotFound
from projections.instance_view import InstanceRecord, InstanceViewQueries, record_from_aggregate
from services.instances import InstanceService

log = logging.getLogger(__name__)

POLL_S = 0.02


class InstanceReads:
    def __init__(self, instances: InstanceService, views: InstanceViewQueries, wait_s: float, marks: WriteMarks,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._instances = instances
        self._views = views
        self._marks = marks
        self._wait_s = wait_s
        self._clock = clock
        self._sleep = sleep

    def show(self, instance_id: str, context: OperationContext, *, admin: bool) -> InstanceRecord:
        """The instance as of at least the API's last write to it, or ``NotFound`` (404) for strangers.

        ``instance_id`` is a path's id as ``resources.instance_id`` checked and normalised it.
        """
        key = instance_id
        if self._views.reads_marks:
            row, marked = self._views.get_marked(key)
        else:
            row, marked = self._views.get(key, include_deleted=True), self._marks.marked(key)
        if row is not None and marked is not None and row.version < marked:
            deadline = self._clock() + self._wait_s
            while row is not None and row.version < marked and self._clock() < deadline:
                self._sleep(POLL_S)
                row = self._views.get(key, include_deleted=True)
        if row is not None and (marked is None or row.version >= marked):
            return self._visible(row, context, admin)
        instance = self._instances.get(key, context, admin=admin, include_deleted=True, to_change=False)
        fresh = record_from_aggregate(instance, self._instances.history(key))
        if row is not None:
            # What only the view knows (addresses, heartbeat time) is still right for a slightly older row.
            fresh = replace(fresh, addresses=row.addresses, service_status_updated=row.service_status_updated,
                            volume_used_bytes=row.volume_used_bytes,
                            availability_zone=row.availability_zone, operating_status=row.operating_status
                            if row.service_status is fresh.service_status else fresh.operating_status)
        return self._visible(fresh, context, admin)

    def wrote(self, context: OperationContext, instance_id: str, version: int) -> None:
        """Note a write the caller must see in its next read.

        The write is already stored: failing the request now would make the client retry a create
        that worked. A lost mark only loses the wait.
        """
        try:
            self._marks.mark(context.tenant_id, instance_id, version)
        except SQLAlchemyError as exc:
            log.warning("could not mark write %s v%d for read-your-writes (a read may lag it): %s",
                        instance_id, version, exc)

    def settle(self, tenant_id: str) -> None:
        """Wait, within the bound, for the view to hold the tenant's marked writes (a list is next)."""
        deadline = self._clock() + self._wait_s
        while self._marks.view_is_behind(tenant_id) and self._clock() < deadline:
            self._sleep(POLL_S)

    @staticmethod
    def _visible(record: InstanceRecord, context: OperationContext, admin: bool) -> InstanceRecord:
        if record.deleted or (not admin and record.tenant_id != context.tenant_id):
            raise NotFound(f"Instance {record.id} could not be found.")
        return record
