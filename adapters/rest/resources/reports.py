"""Admin reports (``/mgmt/reports/...``): builds stuck too long, guests gone silent, faults grouped in a
window, operation latency by type. Each is a read-model query on an index, never a scan of the store."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import falcon

from adapters.rest import responses, views
from adapters.rest.resources import Operation, links, time_window
from domain.errors import InvalidRequest
from projections.fault_history import OperationReports
from projections.instance_reports import InstanceReports

REPORT_LIMIT = 500
WINDOW_QUERY = (("start", "string", "Window start, ISO 8601 (UTC if no offset); required."),
                ("end", "string", "Window end, ISO 8601 (UTC if no offset); required."))


class StuckBuildsResource:
    admin_only = True
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Instances still building more than `minutes` after they were created",
                         response=responses.MgmtInstanceList, admin=True, errors=(400, 401, 403),
                         query=(("minutes", "number", "How long a build may take (default 30)."),)),
    }

    def __init__(self, reports: InstanceReports) -> None:
        self._reports = reports

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        try:
            minutes = float(req.get_param("minutes") or 30)
        except ValueError:
            raise InvalidRequest("The 'minutes' parameter must be a number of minutes.") from None
        if not 0 <= minutes <= 525_600:
            raise InvalidRequest("The 'minutes' parameter must be between 0 and 525600 (a year).")
        link = links(req, tenant_id)
        resp.media = {"instances": [views.mgmt_instance(r, link)
                                    for r in self._reports.stuck_builds(minutes, limit=REPORT_LIMIT)]}


class SilentGuestsResource:
    admin_only = True
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Instances whose guest has sent nothing for `agent_heartbeat_expiry`",
                         response=responses.MgmtInstanceList, admin=True, errors=(401, 403)),
    }

    def __init__(self, reports: InstanceReports) -> None:
        self._reports = reports

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        link = links(req, tenant_id)
        resp.media = {"instances": [views.mgmt_instance(r, link)
                                    for r in self._reports.silent_guests(limit=REPORT_LIMIT)]}


class FaultReportResource:
    admin_only = True
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Faults recorded in a window, grouped by datastore version and message",
                         response=responses.FaultReport, admin=True, errors=(400, 401, 403), query=WINDOW_QUERY),
    }

    def __init__(self, reports: OperationReports) -> None:
        self._reports = reports

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        start, end = time_window(req)
        groups = self._reports.fault_groups(start.isoformat(), end.isoformat(), limit=REPORT_LIMIT)
        resp.media = {"start": start.isoformat(), "end": end.isoformat(),
                      "faults": [_fault_group(asdict(group)) for group in groups]}


class OperationLatencyResource:
    admin_only = True
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Per operation type, how long the operations that ended in a window took (p50, p95)",
                         response=responses.LatencyReport, admin=True, errors=(400, 401, 403), query=WINDOW_QUERY),
    }

    def __init__(self, reports: OperationReports) -> None:
        self._reports = reports

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        start, end = time_window(req)
        resp.media = {"start": start.isoformat(), "end": end.isoformat(),
                      "operations": [asdict(row) for row in self._reports.latency(start.isoformat(),
                                                                                  end.isoformat())]}


def _fault_group(group: dict[str, Any]) -> dict[str, Any]:
    return {**group, "first": views.trove_time(group["first"]), "last": views.trove_time(group["last"])}
