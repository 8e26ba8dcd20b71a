"""Fault history routes: an instance's faults, newest first, for its owner (no details) and for admins
(details, deleted instances included)."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon

from adapters.rest import responses, views
from adapters.rest.reads import InstanceReads
from adapters.rest.resources import Operation, context, identity, instance_id, links
from adapters.rest.resources.instances import page_parameters
from domain.errors import InvalidRequest
from projections.fault_history import FaultQueries, FaultRecord
from projections.instance_view import InstanceViewQueries

FAULT_PAGE_QUERY = (("limit", "integer", "Page size (default 20, at most 100)."),
                    ("marker", "string", "The last fault id of the previous page."))


def fault_entry(record: FaultRecord, *, admin: bool) -> dict[str, Any]:
    entry = {**views.fault({"message": record.message, "created": record.created, "updated": record.updated,
                            "details": record.details}, admin=admin),
             "id": record.id, "operation": record.event_type, "request_id": record.request_id,
             "resolved": record.resolved_at is not None, "resolved_at": views.trove_time(record.resolved_at)}
    if admin:
        entry.update(server_type=record.server_type, resolved_by=record.resolved_by, deleted=record.deleted,
                     deleted_at=views.trove_time(record.deleted_at))
    return entry


class _FaultHistory:
    admin = False
    path = "instances/{}/faults"

    def __init__(self, faults: FaultQueries, reads: InstanceReads, views_: InstanceViewQueries) -> None:
        self._faults = faults
        self._reads = reads
        self._views = views_

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = instance_id(instance)
        self._authorize(req, key)
        limit, marker = page_parameters(req)
        if marker is not None and not self._faults.has(key, marker):
            raise InvalidRequest("The 'marker' parameter is not a fault id from a previous page.")
        rows = self._faults.history(key, limit=limit + 1, marker=marker)
        body: dict[str, Any] = {"faults": [fault_entry(row, admin=self.admin) for row in rows[:limit]]}
        if len(rows) > limit:
            body["links"] = links(req, tenant_id).next_page(self.path.format(key), limit, rows[limit - 1].id)
        resp.media = body

    def _authorize(self, req: falcon.Request, key: str) -> None:
        # The caller's instance (any, for an admin), as show decides it: another tenant's is 404.
        self._reads.show(key, context(req), admin=identity(req).is_admin)


class InstanceFaultsResource(_FaultHistory):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("An instance's faults, newest first, without details", response=responses.FaultList,
                         errors=(400, 401, 403, 404), query=FAULT_PAGE_QUERY),
    }


class MgmtInstanceFaultsResource(_FaultHistory):
    admin_only = True
    admin = True
    path = "mgmt/instances/{}/faults"
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Any instance's faults, newest first, with details, deleted instances included",
                         response=responses.FaultList, admin=True, errors=(400, 401, 403, 404),
                         query=FAULT_PAGE_QUERY),
    }

    def _authorize(self, req: falcon.Request, key: str) -> None:
        if self._views.get(key, include_deleted=True) is None:
            self._reads.show(key, context(req), admin=True)  # not in the view yet: the aggregate decides
