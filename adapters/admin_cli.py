"""``trove-es admin …``: the operators' read-model queries on the command line, as a table or JSON.

Each reads the read models the settings name, as the admin API does, with the same queries.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from adapters.bootstrap import projection_engine, read_model_engine
from adapters.settings import Settings
from adapters.sql.engine import read_only
from domain.billing import window_time
from domain.statuses import VISIBLE_STATUSES
from projections.fault_history import FaultHistory, FaultQueries, OperationReports
from projections.instance_reports import InstanceFilter, InstanceReports
from projections.instance_view import InstanceRecord, InstanceViewQueries

LIMIT = 1000


def run(settings: Settings, args: argparse.Namespace) -> int:
    reader = read_only(read_model_engine(settings))
    faults = read_only(projection_engine(settings, FaultHistory.name))
    views = InstanceViewQueries(reader, settings.agent_heartbeat_expiry_s)
    reports = InstanceReports(reader, views, settings.agent_heartbeat_expiry_s)
    try:
        rows = _query(args, views, reports, OperationReports(faults), FaultQueries(faults))
    except ValueError as exc:
        print(f"trove-es admin {args.admin}: {exc}", file=sys.stderr)
        return 2
    if rows is None:
        print(f"trove-es admin show: no instance {args.instance_id}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=2, default=str) if args.format == "json" else table(rows))
    return 0


def _query(args: argparse.Namespace, views: InstanceViewQueries, reports: InstanceReports,
           operations: OperationReports, faults: FaultQueries) -> list[dict[str, Any]] | None:
    if args.admin == "instances":
        if args.status is not None and args.status not in VISIBLE_STATUSES:
            raise ValueError(f"--status must be one of {', '.join(sorted(VISIBLE_STATUSES))}")
        chosen = InstanceFilter(project_id=args.project, status=args.status, datastore=args.datastore,
                                include_deleted=args.deleted)
        return [_instance(r) for r in reports.instances(chosen, limit=LIMIT)]
    if args.admin == "show":
        record = views.get(args.instance_id, include_deleted=True) if len(args.instance_id) <= 64 else None
        if record is None:
            return None
        history = [{k: v for k, v in asdict(f).items() if k != "instance_id"}
                   for f in faults.history(record.id, limit=LIMIT)]
        return [{**asdict(record), "task_status": record.task_status.name,
                 "service_status": record.service_status.description, "fault_history": history}]
    if args.admin == "stuck-builds":
        return [_instance(r) for r in reports.stuck_builds(args.minutes, limit=LIMIT)]
    if args.admin == "silent-guests":
        return [_instance(r) for r in reports.silent_guests(limit=LIMIT)]
    start, end = window_time(args.start).isoformat(), window_time(args.end).isoformat()
    if end <= start:
        raise ValueError("--to must be later than --from")
    if args.admin == "faults":
        return [asdict(group) for group in operations.fault_groups(start, end, limit=LIMIT)]
    return [asdict(row) for row in operations.latency(start, end)]


def _instance(record: InstanceRecord) -> dict[str, Any]:
    return {"id": record.id, "tenant_id": record.tenant_id, "name": record.name, "status": record.status,
            "operating_status": record.operating_status, "datastore": record.datastore,
            "datastore_version": record.datastore_version, "task": record.task_status.name,
            "created_at": record.created_at, "deleted": record.deleted,
            "fault": record.fault["message"] if record.fault else None}


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as aligned columns; a nested value (a fault history) as JSON in its cell."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [columns] + [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in cells)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)
