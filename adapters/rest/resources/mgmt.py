"""Admin (mgmt) routes: quotas, every tenant's instances with the management fields, and billed usage."""

from __future__ import annotations

import re
from typing import ClassVar

import falcon

from adapters.rest import responses, schemas, views
from adapters.rest.media import load
from adapters.rest.middleware import require_admin
from adapters.rest.reads import InstanceReads
from adapters.rest.resources import Operation, context, identity, instance_id, links, time_window
from adapters.rest.resources.instances import PAGE_QUERY, page_parameters
from domain.billing import usage_totals
from domain.errors import InvalidRequest
from domain.statuses import VISIBLE_STATUSES
from projections.billing_ledger import BillingQueries
from projections.instance_reports import InstanceFilter, InstanceReports
from projections.instance_view import InstanceViewQueries
from services.instances import InstanceService

_PROJECT_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
QUOTA_UPDATE_REQUEST = schemas.QuotaUpdateRequest()  # built once, as the instance routes do


class QuotaResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("A project's quotas with usage (admins: any project; others: their own)",
                         response=responses.QuotaShow, errors=(400, 401, 403)),
        "put": Operation("Change a project's limits (-1: unlimited; null: leave as is)",
                         request=schemas.QuotaUpdateRequest, response=responses.QuotaUpdated, admin=True,
                         errors=(400, 401, 403, 415)),
    }

    def __init__(self, instances: InstanceService) -> None:
        self._instances = instances

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, project_id: str) -> None:
        _check_project(project_id)
        # As Trove: a project may read its own quota; reading another's takes an admin.
        if project_id != identity(req).project_id:
            require_admin(req)
        quota = self._instances.quota(project_id)
        resp.media = {"quotas": views.quota_usages(quota, self._instances.quota_defaults)}

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, project_id: str) -> None:
        require_admin(req)
        _check_project(project_id)
        limits = {r: v for r, v in load(QUOTA_UPDATE_REQUEST, req)["quotas"].items() if v is not None}
        if limits:
            quota = self._instances.set_quota_limits(context(req), project_id, limits)
            resp.media = {"quotas": {r: quota.limit(r, self._instances.quota_defaults) for r in limits}}
        else:
            resp.media = {"quotas": {}}


def _check_project(project_id: str) -> None:
    if not _PROJECT_ID.match(project_id):
        raise InvalidRequest("The project id is not valid.")


class MgmtInstancesResource:
    admin_only = True
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Every tenant's instances with management fields", response=responses.MgmtInstanceList,
                         admin=True, errors=(400, 401, 403),
                         query=(*PAGE_QUERY, ("deleted", "boolean", "Include deleted instances."),
                                ("project_id", "string", "Only this project's instances."),
                                ("status", "string", "Only instances showing this status (ACTIVE, BUILD, ERROR…)."),
                                ("datastore", "string", "Only this datastore's instances."))),
    }

    def __init__(self, views_: InstanceViewQueries, reports: InstanceReports) -> None:
        self._views = views_
        self._reports = reports

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        project = req.get_param("project_id") or None
        if project is not None:
            _check_project(project)
        status = (req.get_param("status") or "").upper() or None
        if status is not None and status not in VISIBLE_STATUSES:
            raise InvalidRequest(f"The 'status' parameter must be one of {', '.join(sorted(VISIBLE_STATUSES))}.")
        datastore = req.get_param("datastore") or None
        if datastore is not None and len(datastore) > 64:
            raise InvalidRequest("The 'datastore' parameter is not a datastore name.")
        req.get_param_as_bool("include_clustered", default=False)  # accepted, as Trove's; there are no clusters
        chosen = InstanceFilter(project_id=project, status=status, datastore=datastore,
                                include_deleted=req.get_param_as_bool("deleted", default=False))
        limit, marker = page_parameters(req)
        if marker is not None and (len(marker) > 64 or self._views.get(marker, include_deleted=True) is None):
            raise InvalidRequest("The 'marker' parameter is not an instance id from a previous page.")
        rows = self._reports.instances(chosen, limit=limit + 1, marker=marker)
        link = links(req, tenant_id)
        body: dict[str, object] = {"instances": [views.mgmt_instance(row, link) for row in rows[:limit]]}
        if len(rows) > limit:
            body["links"] = link.next_page("mgmt/instances", limit, rows[limit - 1].id, project_id=project,
                                           status=status, datastore=datastore,
                                           deleted="true" if chosen.include_deleted else None)
        resp.media = body


class MgmtInstanceResource:
    admin_only = True
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Any instance with management fields, deleted ones included",
                         response=responses.MgmtInstanceEnvelope, admin=True, errors=(401, 403, 404)),
    }

    def __init__(self, views_: InstanceViewQueries, reads: InstanceReads) -> None:
        self._views = views_
        self._reads = reads

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = instance_id(instance)
        record = self._views.get(key, include_deleted=True)
        if record is None or not record.deleted:
            record = self._reads.show(key, context(req), admin=True)
        resp.media = {"instance": views.mgmt_instance(record, links(req, tenant_id))}


class UsageResource:
    admin_only = True
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Billed usage in a window, from the billing ledger: instance-seconds by flavor and "
                         "volume GB-seconds, per instance", response=responses.UsageShow, admin=True,
                         errors=(400, 401, 403),
                         query=(("start", "string", "Window start, ISO 8601 (UTC if no offset); required."),
                                ("end", "string", "Window end, ISO 8601 (UTC if no offset); required."),
                                ("project_id", "string", "Only this project's usage."))),
    }

    def __init__(self, billing: BillingQueries) -> None:
        self._billing = billing

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        start, end = time_window(req)
        project = req.get_param("project_id") or None
        if project is not None:
            _check_project(project)
        lines = self._billing.usage(start, end, project)
        resp.media = {"usage": {"start": start.isoformat(), "end": end.isoformat(), "project_id": project,
                                "instances": [line.as_dict() for line in lines], "totals": usage_totals(lines)}}
