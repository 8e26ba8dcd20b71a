"""trove.instance.exists and dbaas.quota when an audit period ends: who is reported, with which period and traits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from domain.periodic_usage import QuotaUsage, period_notifications
from domain.public_events import PublicEvent, to_public_event
from domain.quota import Quota
from domain.statuses import ServiceStatus
from domain.usage import InstanceUsage
from domain.usage_audit import EXISTS, QUOTA
from tests.unit.test_usage import CONTEXT, _built, _fold, _new

DEFAULTS = {"instances": 5, "volumes": 20, "backups": 50}


def _period_end(kind: str, beginning: datetime, ending: datetime, partition: int = 0) -> PublicEvent:
    return PublicEvent(event_id="e-1", type="PeriodEnded", aggregate_type="UsageAudit", aggregate_id="a-1",
                       version=2, occurred_at=ending.isoformat(), tenant_id=None, request_id="req-audit",
                       user_id=None, schema_version=1,
                       data={"kind": kind, "partition": partition, "beginning": beginning.isoformat(),
                             "ending": ending.isoformat()})


def _healthy_at(instance_usage: InstanceUsage, store: dict[str, Any]) -> tuple[str, datetime]:
    instance, _ = _built(instance_usage)
    _fold(instance, instance_usage)
    instance_id = str(instance.id)
    return instance_id, datetime.fromisoformat(store[instance_id]["billed_from"].replace("Z", "+00:00"))


def test_exists_reports_each_billed_instance_from_when_it_became_healthy_then_whole_periods() -> None:
    store: dict[str, Any] = {}
    usage = InstanceUsage(store)
    instance_id, healthy = _healthy_at(usage, store)
    first_end = healthy.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    [(key, _, exists)] = period_notifications(_period_end(EXISTS, first_end - timedelta(hours=1), first_end),
                                           lambda _: True, store, {}, usage, DEFAULTS)
    assert key == instance_id and exists.event_type == "trove.instance.exists"
    payload = exists.payload
    assert payload["audit_period_beginning"] == healthy.strftime("%Y-%m-%dT%H:%M:%SZ"), \
        "the first period bills from the first healthy moment, not the period's start"
    assert payload["audit_period_ending"] == first_end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert payload["display_name"] == "orders" and payload["instance_id"] == instance_id
    assert payload["tenant_id"] == "t1" and payload["user_id"] == "u1" and payload["state"] == "active"
    assert payload["instance_size"] == 2048 and payload["volume_size"] == 1
    for trait in ("instance_type", "instance_type_id", "launched_at", "instance_name", "nova_instance_id",
                  "service_id", "created_at", "region"):
        assert trait in payload, f"Ceilometer's trove base trait {trait} resolves"
    [(_, _, second)] = period_notifications(_period_end(EXISTS, first_end, first_end + timedelta(hours=1)),
                                         lambda _: True, store, {}, usage, DEFAULTS)
    assert second.payload["audit_period_beginning"] == payload["audit_period_ending"], "contiguous"


def test_exists_skips_instances_not_billed_being_deleted_or_on_another_partition() -> None:
    store: dict[str, Any] = {}
    usage = InstanceUsage(store)
    never_healthy = _new()
    _fold(never_healthy, usage)
    billed_id, healthy = _healthy_at(usage, store)
    later = healthy + timedelta(hours=2)
    period = _period_end(EXISTS, later - timedelta(hours=1), later)
    reported = period_notifications(period, lambda _: True, store, {}, usage, DEFAULTS)
    assert [key for key, _, _ in reported] == [billed_id]
    assert period_notifications(period, lambda key: key != billed_id, store, {}, usage, DEFAULTS) == []
    earlier = _period_end(EXISTS, healthy - timedelta(hours=2), healthy - timedelta(hours=1))
    assert period_notifications(earlier, lambda _: True, store, {}, usage, DEFAULTS) == [], \
        "a period that ended before the instance was healthy does not bill it"
    deleting, _ = _built(usage)
    deleting.change_service_status(CONTEXT, ServiceStatus.HEALTHY)
    deleting.delete(CONTEXT)
    _fold(deleting, usage)
    assert str(deleting.id) not in [key for key, _, _ in
                                    period_notifications(period, lambda _: True, store, {}, usage, DEFAULTS)]


def test_quota_reports_every_resource_of_every_tenant_with_in_use_reserved_and_limit() -> None:
    quotas: dict[str, Any] = {}
    fold = QuotaUsage(quotas)
    quota = Quota(tenant_id="t1")
    quota.reserve(CONTEXT, "i-1", {"instances": 1, "volumes": 2}, DEFAULTS)
    quota.commit(CONTEXT, "req-1")
    quota.reserve({**CONTEXT, "request_id": "req-2"}, "i-2", {"instances": 1, "volumes": 3}, DEFAULTS)
    quota.change_limits(CONTEXT, {"volumes": 40})
    for event in quota.collect_events():
        fold.fold(to_public_event(event))
    now = datetime(2026, 12, 2, 11, tzinfo=UTC)
    notes = period_notifications(_period_end(QUOTA, now - timedelta(hours=1), now), lambda _: True, {}, quotas,
                                 InstanceUsage({}), DEFAULTS)
    by_resource = {note.payload["resource"]: note.payload for _, _, note in notes}
    assert {note.event_type for _, _, note in notes} == {"dbaas.quota"}
    assert len({subject for _, subject, _ in notes}) == 3, "each resource's notification has its own message id"
    assert by_resource["instances"] == {"tenant_id": "t1", "resource": "instances", "in_use": 1, "reserved": 1,
                                        "limit": 5, "updated": by_resource["instances"]["updated"]}
    assert (by_resource["volumes"]["in_use"], by_resource["volumes"]["reserved"], by_resource["volumes"]["limit"]) \
        == (2, 3, 40)
    assert by_resource["backups"]["limit"] == 50 and by_resource["backups"]["updated"].endswith("Z")
    assert {key for key, _, _ in notes} == {str(quota.id)}
