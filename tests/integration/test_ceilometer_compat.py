"""Every notification of an instance's whole life, as the notifier publishes it, read through Ceilometer's
trove event definitions and its trove.instance.exists meter (tests/support/ceilometer.py): every trait
resolves with its type, and the meter bills the seconds of each audit period."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from adapters.sql.engine import create_sql_engine
from adapters.sql.schema import create_tables
from domain.instance import CREATE, Instance
from domain.public_events import to_public_event
from domain.quota import Quota
from domain.statuses import ServiceStatus
from domain.usage_audit import EXISTS, QUOTA, UsageAudit, period_boundary
from projections.notifier import Notifier, metadata
from tests.integration.test_notifier import CONTEXT, RecordingPublisher
from tests.support.ceilometer import TraitError, event_traits, exists_sample

pytestmark = pytest.mark.integration

SMALL = {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20}
MEDIUM = {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40}


def test_every_notification_of_an_instances_life_resolves_every_ceilometer_trait(tmp_path: Path) -> None:
    engine = create_sql_engine(f"sqlite:///{tmp_path}/read.db")
    create_tables(engine, metadata)
    publisher = RecordingPublisher()
    notifier = Notifier(publisher, "h1", quota_defaults={"instances": 5, "volumes": 20, "backups": 50})

    def publish(*aggregates: object) -> None:
        events = [to_public_event(e) for a in aggregates for e in a.collect_events()]  # type: ignore[attr-defined]
        with Session(engine) as session, session.begin():
            notifier.apply_batch(events, session)

    now = datetime.now(UTC)
    audit_context = {"request_id": "req-audit", "tenant_id": None, "user_id": None, "client_ip": None,
                     "server_ip": "192.0.2.10", "server_type": "taskmanager"}  # as services/usage_audit.py's
    audits = [UsageAudit(audit_context, kind, 0, 0, period_boundary(now - timedelta(hours=2), 3600).isoformat())
              for kind in (EXISTS, QUOTA)]
    quota = Quota(tenant_id="t1")
    instance = Instance(context=CONTEXT, operation=CREATE, name="orders", tenant_id="t1", flavor=SMALL,
                        volume_size=1, datastore="mysql", datastore_version="8.0", datastore_version_id="v",
                        availability_zone="nova", region="RegionOne", databases=[], users=[], image_id="img-1",
                        datastore_manager="mysql")
    quota.reserve(CONTEXT, str(instance.id), {"instances": 1, "volumes": 1}, {})
    publish(*audits, quota, instance)
    carried = {**CONTEXT, "server_type": "taskmanager"}
    instance.record_server_provisioned(carried, "srv-1", "vol-1", "ACTIVE", [])
    instance.record_prepare_sent(carried, "topic")
    instance.change_service_status({**CONTEXT, "server_type": "conductor"}, ServiceStatus.HEALTHY)
    quota.commit(carried, "req-1")
    publish(instance, quota)
    instance.resize_volume(CONTEXT, 5)
    instance.record_volume_resized(carried, 1, 5)
    instance.succeed(carried)
    instance.resize_flavor(CONTEXT, MEDIUM)
    instance.record_flavor_resized(carried, SMALL, MEDIUM)
    instance.succeed(carried)
    publish(instance)
    for audit in audits:  # an audit period ends after the instance became healthy
        audit.end_period(audit_context, period_boundary(now + timedelta(hours=1), 3600))
    publish(*audits)
    instance.delete(CONTEXT)
    instance.record_deleted(carried)
    instance.succeed(carried)  # as the task manager records a delete
    quota.release_usage(carried, str(instance.id), {"instances": 1, "volumes": 5})
    publish(instance, quota)

    messages = publisher.messages()
    types = [m["event_type"] for m in messages]
    for expected in ("trove.instance.create", "trove.instance.modify_volume", "trove.instance.modify_flavor",
                     "trove.instance.exists", "trove.instance.delete", "dbaas.quota", "dbaas.instance_create.start",
                     "dbaas.instance_resize_volume.end", "dbaas.instance_delete.end"):
        assert expected in types, f"{expected} was not published: {types}"
    for message in messages:
        try:
            traits = event_traits(message)
        except TraitError as exc:
            pytest.fail(f"{exc}\n{json.dumps(message, indent=1)}")
        assert traits["project_id"] == "t1" and traits["service"], message
        assert traits["request_id"], "every notification names the request it comes from"
        datetime.strptime(message["timestamp"], "%Y-%m-%d %H:%M:%S.%f")  # Ceilometer's `generated`
    delete = next(m for m in messages if m["event_type"] == "trove.instance.delete")
    assert event_traits(delete)["deleted_at"] >= event_traits(delete)["created_at"]
    assert event_traits(delete)["instance_size"] == 4096 and event_traits(delete)["volume_size"] == 5
    [exists] = [m for m in messages if m["event_type"] == "trove.instance.exists"]
    sample = exists_sample(exists)
    assert sample["resource_id"] == str(instance.id) and sample["project_id"] == "t1" and sample["user_id"] == "u1"
    healthy = datetime.fromisoformat(exists["payload"]["audit_period_beginning"].replace("Z", "+00:00"))
    assert sample["volume"] == (period_boundary(now + timedelta(hours=1), 3600) - healthy).total_seconds() > 0
    engine.dispose()
