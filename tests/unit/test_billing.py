"""Billing segments from usage notifications, and what a window of them adds up to."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from domain.billing import NotANotification, Segment, UsageMessage, ledger_change, usage_lines
from domain.notifications import INFO, Notification, NotificationContext, oslo_timestamp

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
BASE = {"tenant_id": "t1", "instance_id": "i-1", "instance_type_id": "2", "instance_type": "m1.small",
        "instance_size": 2048, "volume_size": 2, "service_id": "ac277e0d-4f21-40aa-b347-1ea31e571720"}


def _wire(event_type: str, payload: dict, at: datetime, message_id: str = "m-1") -> bytes:
    return Notification(message_id=message_id, publisher_id="h1", event_type=event_type, priority=INFO,
                        payload=payload, timestamp=oslo_timestamp(at),
                        context=NotificationContext("req-1", "u1", "t1")).to_wire()


def test_a_notification_off_the_wire_keeps_its_id_type_time_and_payload() -> None:
    message = UsageMessage.from_wire(_wire("trove.instance.create", BASE, T0 + timedelta(microseconds=7)))
    assert (message.message_id, message.event_type, message.payload) == ("m-1", "trove.instance.create", BASE)
    assert message.timestamp == T0 + timedelta(microseconds=7)
    for garbage in (b"not json", b"{}", json.dumps({"oslo.message": "{}"}).encode()):
        with pytest.raises(NotANotification):
            UsageMessage.from_wire(garbage)


def test_create_opens_a_segment_when_healthy_and_a_resize_splits_it() -> None:
    create = ledger_change(UsageMessage.from_wire(_wire("trove.instance.create", BASE, T0)))
    assert create.closes_at is None and create.opens is not None
    assert (create.opens.datastore, create.opens.flavor_id, create.opens.volume_size) == ("postgresql", "2", 2)
    assert create.opens.started_at == T0
    resized = {**BASE, "instance_type_id": "3", "instance_type": "m1.medium", "instance_size": 4096,
               "old_instance_size": 2048, "modify_at": "2026-12-02T10:30:00Z"}
    split = ledger_change(UsageMessage.from_wire(_wire("trove.instance.modify_flavor", resized, T0)))
    assert split.closes_at == T0 + timedelta(minutes=30) and split.opens.flavor_id == "3"
    assert split.opens.started_at == split.closes_at
    gone = ledger_change(UsageMessage.from_wire(_wire("trove.instance.delete", {**BASE, "deleted_at":
                                                                                "2026-12-02T11:00:00Z"}, T0)))
    assert gone.closes_at == T0 + timedelta(hours=1) and gone.opens is None
    assert ledger_change(UsageMessage.from_wire(_wire("dbaas.instance_create.start", {}, T0))) == type(gone)()


def test_a_window_adds_up_each_segments_overlap_by_instance_and_flavor() -> None:
    small = Segment("t1", "i-1", "postgresql", "2", "m1.small", 2048, 2, T0, T0 + timedelta(minutes=30))
    medium = Segment("t1", "i-1", "postgresql", "3", "m1.medium", 4096, 5, T0 + timedelta(minutes=30))
    other = Segment("t2", "i-9", "mysql", "2", "m1.small", 2048, 1, T0 - timedelta(hours=5), T0 - timedelta(hours=4))
    lines = usage_lines([small, medium, other], T0 + timedelta(minutes=10), T0 + timedelta(hours=1))
    assert [(line.instance_id, line.flavor_id, line.instance_seconds, line.volume_gb_seconds) for line in lines] == [
        ("i-1", "2", 1200.0, 2400.0), ("i-1", "3", 1800.0, 9000.0)]
    with pytest.raises(ValueError):
        usage_lines([small], T0, T0)


def test_the_report_renders_as_a_table_json_or_csv() -> None:
    from adapters.billing import render_usage

    small = Segment("t1", "i-1", "postgresql", "2", "m1.small", 2048, 2, T0, T0 + timedelta(minutes=30))
    lines = usage_lines([small], T0, T0 + timedelta(hours=1))
    end = T0 + timedelta(hours=1)
    table = render_usage(lines, T0, end, "table").splitlines()
    assert table[0].split() == ["tenant_id", "instance_id", "datastore", "flavor_id", "instance_type",
                                "instance_seconds", "volume_gb_seconds"]
    assert table[1].split() == ["t1", "i-1", "postgresql", "2", "m1.small", "1800.0", "3600.0"]
    assert table[-1].startswith("total: 1800 instance-seconds, 3600 volume GB-seconds")
    as_json = json.loads(render_usage(lines, T0, end, "json"))
    assert as_json["totals"] == {"instance_seconds": 1800.0, "volume_gb_seconds": 3600.0}
    assert as_json["usage"][0]["instance_id"] == "i-1"
    assert render_usage(lines, T0, end, "csv").splitlines() == [
        "tenant_id,instance_id,datastore,flavor_id,instance_type,instance_seconds,volume_gb_seconds",
        "t1,i-1,postgresql,2,m1.small,1800.0,3600.0"]
    with pytest.raises(ValueError):
        render_usage(lines, T0, end, "xml")
