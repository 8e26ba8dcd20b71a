"""Reading one instance so that a client always sees its own writes.

The instance view is a projection and lags the event store by the relay and consumer hops. A show
compares the view row's version with the aggregate's latest stored version (one indexed read of the
store): when the view is behind, it waits a bounded time for it to catch up, then renders from the
aggregate itself. A row the view does not have yet (the create just happened) goes straight to the
aggregate: there is nothing to wait for that the store cannot already answer.

A list cannot ask the store about rows it does not have; it waits, within the same bound, until the
view holds the writes the API marked for the tenant (``WriteMarks``), then reads the page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from uuid import UUID

from sqlalchemy.exc import SQLAlchemyError

from adapters.sql.write_marks import WriteMarks
from domain.context import OperationContext
from domain.errors import NotFound
from projections.instance_view import InstanceRecord, InstanceViewQueries, record_from_aggregate
from services.instances import InstanceService

log = logging.getLogger(__name__)

POLL_S = 0.02


class InstanceReads:
    def __init__(self, instances: InstanceService, views: InstanceViewQueries, wait_s: float,
                 marks: WriteMarks | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._instances = instances
        self._views = views
        self._marks = marks
        self._wait_s = wait_s
        self._clock = clock
        self._sleep = sleep

    def show(self, instance_id: str, context: OperationContext, *, admin: bool) -> InstanceRecord:
        """The instance as of at least the last write the store has, or ``NotFound`` (404) for strangers."""
        try:
            key = UUID(instance_id)
        except ValueError:
            raise NotFound(f"Instance {instance_id[:64]} could not be found.") from None
        latest = self._latest_version(key)
        if latest is None:
            raise NotFound(f"Instance {instance_id} could not be found.")
        row = self._views.get(str(key), include_deleted=True)
        if row is not None:
            deadline = self._clock() + self._wait_s
            while row is not None and row.version < latest and self._clock() < deadline:
                self._sleep(POLL_S)
                row = self._views.get(str(key), include_deleted=True)
            if row is not None and row.version >= latest:
                return self._visible(row, context, admin)
        instance = self._instances.get(key, context, admin=admin, include_deleted=True)
        fresh = record_from_aggregate(instance)
        if row is not None:
            # What only the view knows (addresses, heartbeat time) is still right for a slightly older row.
            fresh = replace(fresh, addresses=row.addresses, service_status_updated=row.service_status_updated,
                            availability_zone=row.availability_zone, operating_status=row.operating_status
                            if row.service_status is fresh.service_status else fresh.operating_status)
        return self._visible(fresh, context, admin)

    def wrote(self, context: OperationContext, instance_id: str, version: int) -> None:
        """Note a write the caller must see in its next list.

        The write is already stored: failing the request now would make the client retry a create
        that worked. A lost mark only loses the wait.
        """
        if self._marks is None:
            return
        try:
            self._marks.mark(context.tenant_id, instance_id, version)
        except SQLAlchemyError as exc:
            log.warning("could not mark write %s v%d for read-your-writes (a list may lag it): %s",
                        instance_id, version, exc)

    def settle(self, tenant_id: str) -> None:
        """Wait, within the bound, for the view to hold the tenant's marked writes (a list is next)."""
        if self._marks is None:
            return
        deadline = self._clock() + self._wait_s
        while self._marks.view_is_behind(tenant_id) and self._clock() < deadline:
            self._sleep(POLL_S)

    def _latest_version(self, key: UUID) -> int | None:
        stored = self._instances.recorder.select_events(key, desc=True, limit=1)
        return stored[0].originator_version if stored else None

    @staticmethod
    def _visible(record: InstanceRecord, context: OperationContext, admin: bool) -> InstanceRecord:
        if record.deleted or (not admin and record.tenant_id != context.tenant_id):
            raise NotFound(f"Instance {record.id} could not be found.")
        return record
