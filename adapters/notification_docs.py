"""Writes docs/notifications.md, the notification catalogue, from the code that sends the notifications.

``python -m adapters.notification_docs`` (or ``make docs``) regenerates it; a test fails when the
committed page differs from what the code would write, so the page cannot drift. The trait lists of
the usage and periodic notifications are not typed in here: they are read off notifications the real
folds produce for a sample instance.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from domain.api_lifecycle import ApiLifecycle
from domain.instance import CREATE, Instance
from domain.notifications import (
    API_NOTIFICATIONS,
    BASE_TRAITS,
    ERROR_OPTIONAL,
    ERROR_REQUIRED,
    INFO,
    SILENT_OPERATIONS,
    START,
    Notification,
    NotificationContext,
)
from domain.periodic_usage import QuotaUsage, period_notifications
from domain.public_events import PublicEvent, to_public_event
from domain.quota import Quota
from domain.statuses import ServiceStatus
from domain.usage import InstanceUsage, UsageNotification
from domain.usage_audit import EXISTS, QUOTA, UsageAudit, period_boundary

PAGE = Path(__file__).resolve().parents[1] / "docs" / "notifications.md"

_CONTEXT = {"request_id": "req-doc", "tenant_id": "t1", "user_id": "u1", "client_ip": "203.0.113.7",
            "server_ip": "192.0.2.10", "server_type": "api", "roles": ["member"]}
_SMALL = {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20}
_MEDIUM = {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40}

FIXED_IN_TROVE = (
    "`promote_to_replica_source` notifies `dbaas.instance_promote.*` and `eject_replica_source` "
    "`dbaas.instance_eject.*` (Trove swaps the two).",
    "Every `.start` is followed by exactly one `.end` or `.error`: the instance aggregate closes every "
    "operation it opens once, and a delete or a status reset first fails what was open.",
    "A build that times out ends with `dbaas.instance_create.error` (Trove sends nothing).",
    "`trove.instance.modify_volume` is sent on a volume resize (Trove dropped it in 2020; Ceilometer "
    "still defines it).",
    "`.error` notifications have priority ERROR and go to the error topic (Trove sends them at INFO); "
    "`TROVE_ES_NOTIFICATION_ERRORS_ON_INFO=true` puts them on the info topic for consumers that expect "
    "Trove's.",
    "Payloads hold the declared traits only (Trove sends every key it accumulated).",
    "`dbaas.quota` is sent once per period for the whole deployment (Trove: by every task manager), and "
    "audit periods are contiguous across restarts.",
    "`trove.instance.create` is sent once, when the datastore is first healthy, never for a build that "
    "fails; `trove.instance.delete` only for an instance that was billed.",
)


def _events(*aggregates: Any) -> list[PublicEvent]:
    return [to_public_event(event) for aggregate in aggregates for event in aggregate.collect_events()]


def sample_usage() -> dict[str, UsageNotification]:
    """One usage notification of each type, from the real folds over a sample instance's life."""
    instances: dict[str, Any] = {}
    quotas: dict[str, Any] = {}
    usage, quota_usage = InstanceUsage(instances), QuotaUsage(quotas)
    produced: dict[str, UsageNotification] = {}

    def fold(events: Iterable[PublicEvent]) -> None:
        for event in events:
            quota_usage.fold(event)
            for note in usage.notifications(event):
                produced.setdefault(note.event_type, note)
            for _, _, note in period_notifications(event, lambda _key: True, instances, quotas, usage, {}):
                produced.setdefault(note.event_type, note)

    start = datetime(2026, 1, 1, tzinfo=UTC)
    audits = [UsageAudit(_CONTEXT, kind, 0, 0, start.isoformat()) for kind in (EXISTS, QUOTA)]
    quota = Quota(tenant_id="t1")
    instance = Instance(context=_CONTEXT, operation=CREATE, name="orders", tenant_id="t1", flavor=_SMALL,
                        volume_size=1, datastore="mysql", datastore_version="8.0", datastore_version_id="v",
                        availability_zone="nova", region="RegionOne", databases=[], users=[], image_id="img",
                        datastore_manager="mysql")
    quota.reserve(_CONTEXT, str(instance.id), {"instances": 1, "volumes": 1}, {})
    instance.record_server_provisioned(_CONTEXT, "srv", "vol", "ACTIVE", [])
    instance.record_prepare_sent(_CONTEXT, "topic")
    instance.change_service_status(_CONTEXT, ServiceStatus.HEALTHY)
    instance.resize_volume(_CONTEXT, 2)
    instance.record_volume_resized(_CONTEXT, 1, 2)
    instance.succeed(_CONTEXT)
    instance.resize_flavor(_CONTEXT, _MEDIUM)
    instance.record_flavor_resized(_CONTEXT, _SMALL, _MEDIUM)
    instance.succeed(_CONTEXT)
    fold(_events(*audits, quota, instance))
    for audit in audits:
        audit.end_period(_CONTEXT, period_boundary(datetime.now(UTC) + timedelta(hours=1), 3600))
    instance.delete(_CONTEXT)
    instance.record_deleted(_CONTEXT)
    fold(_events(*audits, instance))
    return produced


def _traits(payload: dict[str, Any]) -> str:
    def kind(value: Any) -> str:
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, int):
            return "int"
        if isinstance(value, str) and value.endswith("Z") and value[:4].isdigit():
            return "ISO 8601 time"
        return "string"

    return ", ".join(f"`{name}` ({kind(value)})" for name, value in sorted(payload.items()))


def _names(names: Iterable[str]) -> str:
    listed = ", ".join(f"`{name}`" for name in names)
    return listed or "—"


def _example() -> str:
    lifecycle = ApiLifecycle("h1", {})
    instance = Instance(context=_CONTEXT, operation=CREATE, name="orders", tenant_id="t1", flavor=_SMALL,
                        volume_size=1, datastore="mysql", datastore_version="8.0", datastore_version_id="v",
                        availability_zone=None, region="RegionOne", databases=[], users=[], image_id="img",
                        datastore_manager="mysql")
    [event] = _events(instance)
    [start] = lifecycle.notifications(event)
    fixed = Notification(message_id="4f0c5b1e-8d3a-5c7e-9b2f-1a6d8e0c3b57", publisher_id=start.publisher_id,
                         event_type=start.event_type, priority=start.priority,
                         payload=start.payload, timestamp="2026-12-02 10:47:45.123456",
                         context=NotificationContext("req-doc", "u1", "t1", ("member",)))
    wire = json.loads(fixed.to_wire())
    return "\n".join(["```json", json.dumps(wire, indent=2), "```", "", "whose `oslo.message`, decoded, is", "",
                      "```json", json.dumps(json.loads(wire["oslo.message"]), indent=2), "```"])


def render() -> str:
    lines = [
        "# Notification catalogue",
        "",
        "Generated from the code by `python -m adapters.notification_docs` (`make docs`); a test fails when",
        "this page and the code disagree. How they are produced: [architecture.md](architecture.md#notifications-"
        "projectionsnotifierpy-projection-notifications).",
        "",
        "## Envelope and topics",
        "",
        "oslo.messaging's messagingv2 format on Kafka: a JSON object with `oslo.version` `\"2.0\"` and",
        "`oslo.message`, the message as a JSON string. The message has `message_id` (derived from the source",
        "event and the event type, so a replay re-emits identical messages), `publisher_id`, `event_type`,",
        "`priority`, `payload`, `timestamp` (UTC, `YYYY-MM-DD HH:MM:SS.ffffff`) and `_context` (`request_id`,",
        "`user_id`, `project_id`, `roles`, `is_admin`; never a token).",
        "",
        f"- Priority {INFO} goes to `notifications.info`, ERROR to `notifications.error`"
        " (`TROVE_ES_TOPIC_NOTIFICATIONS_INFO`, `TROVE_ES_TOPIC_NOTIFICATIONS_ERROR`).",
        "- Messages are keyed by instance id (`dbaas.quota` by the tenant's quota id).",
        "- `publisher_id`: `<server_type>.<host>` for API lifecycle notifications (the service that opened or",
        "  closed the operation), `taskmanager.<host>` for `trove.instance.exists`, the bare host for the",
        "  other usage notifications and `dbaas.quota`, as Trove's.",
        "",
        "Example (`dbaas.instance_create.start`):",
        "",
        _example(),
        "",
        "## API lifecycle: `dbaas.<event type>.start`, `.end`, `.error`",
        "",
        f"Every stage carries the base traits {_names(BASE_TRAITS)}. `.end` repeats the start traits and adds",
        f"its own; `.error` repeats them and adds {_names(ERROR_REQUIRED)} (the traceback as a list of lines)",
        f"and, when known, {_names(ERROR_OPTIONAL)}. Optional traits appear only with a value.",
        "",
        "| operation | event type | start: required | start: optional | end adds |",
        "|---|---|---|---|---|",
    ]
    for operation, notification in API_NOTIFICATIONS.items():
        end_adds = list(notification.required_end) + [f"{name} (optional)" for name in notification.optional_end]
        lines.append(f"| `{operation}` | `{notification.qualified(START)[:-len(START)]}*` | "
                     f"{_names(notification.required_start)} | {_names(notification.optional_start)} | "
                     f"{_names(end_adds)} |")
    lines += [
        "",
        f"Silent (Trove does not notify them): {_names(sorted(SILENT_OPERATIONS))}.",
        "",
        "## Usage (billing)",
        "",
        "| event type | when | payload |",
        "|---|---|---|",
    ]
    when = {
        "trove.instance.create": "the datastore is first healthy (never for a build that fails)",
        "trove.instance.modify_volume": "a volume resize is done",
        "trove.instance.modify_flavor": "a flavor resize is done",
        "trove.instance.delete": "the server and volume are released (only for an instance that was billed)",
        "trove.instance.exists": "an audit period ends (`TROVE_ES_EXISTS_NOTIFICATION_INTERVAL_S`), for each "
                                 "instance billed in it; the first period of an instance begins when it was "
                                 "first healthy",
        "dbaas.quota": "a quota period ends (`TROVE_ES_QUOTA_NOTIFICATION_INTERVAL_S`), per tenant and "
                       "resource, once for the deployment",
    }
    samples = sample_usage()
    for event_type, description in when.items():
        lines.append(f"| `{event_type}` | {description} | {_traits(samples[event_type].payload)} |")
    lines += ["", "## Where this differs from Trove", ""]
    lines += [f"- {fixed}" for fixed in FIXED_IN_TROVE]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is not what the code writes")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
