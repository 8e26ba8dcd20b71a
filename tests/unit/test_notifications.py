"""The DBaaS API notification catalogue against Trove's (trove-source-behaviour §1.3), and the payload rule."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from domain import instance
from domain.notifications import (
    API_NOTIFICATIONS,
    BASE_TRAITS,
    MissingTraits,
    Notification,
    NotificationContext,
    message_id_for,
    notification_for,
    opened_operation,
    oslo_timestamp,
)
from domain.public_events import PublicEvent, to_public_event
from domain.statuses import ServiceStatus

# (operation, Trove's event_type(), required start traits, required end traits), transcribed from §1.3.
TROVE_TABLE = [
    ("create", "instance_create", {"name", "flavor_id", "datastore", "datastore_version", "image_id",
                                   "availability_zone", "region_name"}, {"instance_id"}),
    ("reboot", "instance_reboot", {"instance_id"}, set()),
    ("restart", "instance_restart", {"instance_id"}, set()),
    ("resize_volume", "instance_resize_volume", {"instance_id", "new_size"}, set()),
    ("resize_instance", "instance_resize_instance", {"instance_id", "new_flavor_id"}, set()),
    ("delete", "instance_delete", {"instance_id"}, set()),
    ("reset_status", "instance_reset_status", {"instance_id"}, set()),
    ("detach", "instance_detach", {"instance_id"}, set()),
    ("attach_configuration", "instance_attach_configuration", {"instance_id", "configuration_id"}, set()),
    ("detach_configuration", "instance_detach_configuration", {"instance_id"}, set()),
    ("upgrade", "upgrade", {"instance_id", "datastore_version_id"}, set()),
    ("cluster_create", "cluster_create", {"name", "datastore", "datastore_version"}, {"cluster_id"}),
    ("cluster_delete", "cluster_delete", {"cluster_id"}, set()),
    ("cluster_restart", "cluster_restart", {"cluster_id"}, set()),
    ("cluster_upgrade", "cluster_upgrade", {"cluster_id", "datastore_version"}, set()),
    ("cluster_reset_status", "cluster_reset_status", {"cluster_id"}, set()),
    ("cluster_add_shard", "cluster_add_shard", {"cluster_id"}, set()),
    ("cluster_grow", "cluster_grow", {"cluster_id"}, {"cluster_id"}),
    ("cluster_shrink", "cluster_shrink", {"cluster_id"}, {"cluster_id"}),
    ("cluster_attach_configuration", "cluster_attach_configuration", {"cluster_id", "configuration_id"}, set()),
    ("cluster_detach_configuration", "cluster_detach_configuration", {"cluster_id"}, set()),
    ("backup_create", "backup_create", {"name", "instance_id", "description", "parent_id"}, {"backup_id"}),
    ("backup_delete", "backup_delete", {"backup_id"}, set()),
    ("database_create", "database_create", {"instance_id", "dbname"}, set()),
    ("database_delete", "database_delete", {"instance_id", "dbname"}, set()),
    ("user_create", "user_create", {"instance_id", "username"}, set()),
    ("user_delete", "user_delete", {"instance_id", "username"}, set()),
    ("user_update_attributes", "user_update_attributes", {"instance_id", "username"}, set()),
    ("user_change_password", "user_change_password", {"instance_id", "username"}, set()),
    ("user_grant", "user_grant", {"instance_id", "username", "database"}, set()),
    ("user_revoke", "user_revoke", {"instance_id", "username", "database"}, set()),
    ("configuration_create", "configuration_create", {"name", "datastore", "datastore_version"},
     {"configuration_id"}),
    ("configuration_delete", "configuration_delete", {"configuration_id"}, set()),
    ("configuration_update", "configuration_update", {"configuration_id", "name", "description"}, set()),
    ("configuration_edit", "configuration_edit", {"configuration_id"}, set()),
]


@pytest.mark.parametrize(("operation", "event_type", "start", "end"), TROVE_TABLE)
def test_each_operation_notifies_as_trove_declares(operation: str, event_type: str, start: set[str],
                                                   end: set[str]) -> None:
    notification = notification_for(operation)
    assert notification is not None
    assert notification.event_type == event_type
    assert set(notification.required_start) == start
    assert set(notification.required_end) == end
    assert notification.qualified("start") == f"dbaas.{event_type}.start"


def test_promote_and_eject_are_not_swapped_as_in_trove() -> None:
    assert notification_for("promote_to_replica_source").event_type == "instance_promote"  # type: ignore[union-attr]
    assert notification_for("eject_replica_source").event_type == "instance_eject"  # type: ignore[union-attr]


def test_every_operation_the_instance_aggregate_records_has_a_mapping() -> None:
    for operation in (instance.CREATE, instance.RESTART, instance.RESIZE_VOLUME, instance.RESIZE_FLAVOR,
                      instance.RESET_STATUS, instance.DELETE):
        assert notification_for(operation) is not None, operation
    assert notification_for(instance.UPDATE) is None, "Trove sends nothing for a rename"
    with pytest.raises(KeyError, match="no notification mapping"):
        notification_for("reticulate_splines")


def test_the_catalogue_has_nothing_beyond_the_table_but_the_replica_actions() -> None:
    assert set(API_NOTIFICATIONS) - {row[0] for row in TROVE_TABLE} == {"promote_to_replica_source",
                                                                        "eject_replica_source"}


BASE = {"tenant_id": "t1", "client_ip": "10.0.0.9", "server_ip": "10.0.0.1", "server_type": "api",
        "request_id": "req-1"}


def test_a_payload_holds_the_declared_traits_only() -> None:
    resize = notification_for("resize_volume")
    assert resize is not None
    traits = {**BASE, "instance_id": "i1", "new_size": 5, "locality": "affinity", "old_size": 1}
    assert resize.payload("start", traits) == {**BASE, "instance_id": "i1", "new_size": 5}
    error = resize.payload("error", {**traits, "message": "boom", "exception": ["Traceback", "Boom"]})
    assert error == {**BASE, "instance_id": "i1", "new_size": 5, "message": "boom",
                     "exception": ["Traceback", "Boom"]}


def test_optional_traits_appear_only_with_a_value_and_required_ones_may_be_null() -> None:
    create = notification_for("create")
    assert create is not None
    traits = {**BASE, "name": "db1", "flavor_id": "2", "datastore": "mysql", "datastore_version": "8.0",
              "image_id": None, "availability_zone": None, "region_name": "RegionOne", "volume_size": 1,
              "backup_id": None}
    start = create.payload("start", traits)
    assert start["availability_zone"] is None and start["volume_size"] == 1
    assert "backup_id" not in start
    with pytest.raises(MissingTraits, match=r"dbaas\.instance_create\.end lacks instance_id"):
        create.payload("end", traits)
    assert create.payload("end", {**traits, "instance_id": "i1"})["instance_id"] == "i1"


def test_every_stage_requires_the_base_traits() -> None:
    delete = notification_for("delete")
    assert delete is not None
    for stage in ("start", "end", "error"):
        required, _ = delete.declared(stage)
        assert set(BASE_TRAITS) <= set(required)
    partial = {key: value for key, value in BASE.items() if key != "request_id"}
    with pytest.raises(MissingTraits, match="request_id"):
        delete.payload("start", {**partial, "instance_id": "i1"})
    with pytest.raises(ValueError, match="unknown notification stage"):
        delete.qualified("middle")


def _notification(priority: str = "INFO") -> Notification:
    return Notification(
        message_id=message_id_for("ev-1", "dbaas.instance_delete.start"), publisher_id="api.h1",
        event_type="dbaas.instance_delete.start", priority=priority, payload={"instance_id": "i1"},
        timestamp=oslo_timestamp(datetime(2026, 8, 14, 12, 47, 45, 123456, tzinfo=timezone(timedelta(hours=2)))),
        context=NotificationContext(request_id="req-1", user_id="u1", project_id="t1", roles=("member",)))


def test_the_wire_is_messagingv2_with_the_message_as_a_json_string() -> None:
    wire = json.loads(_notification().to_wire())
    assert set(wire) == {"oslo.version", "oslo.message"} and wire["oslo.version"] == "2.0"
    message = json.loads(wire["oslo.message"])
    assert set(message) == {"message_id", "publisher_id", "event_type", "priority", "payload", "timestamp",
                            "_context"}
    assert message["timestamp"] == "2026-08-14 10:47:45.123456", "UTC, oslo's format"
    assert message["_context"] == {"request_id": "req-1", "user_id": "u1", "project_id": "t1",
                                   "roles": ["member"], "is_admin": False}


def test_message_ids_are_deterministic_per_source_event_and_type() -> None:
    start = "dbaas.instance_delete.start"
    assert message_id_for("ev-1", start) == _notification().message_id
    assert message_id_for("ev-1", "dbaas.instance_delete.end") != message_id_for("ev-1", start)
    assert message_id_for("ev-2", start) != message_id_for("ev-1", start)
    assert _notification().to_wire() == _notification().to_wire(), "a replay emits identical bytes"


def test_errors_go_to_the_error_topic_unless_told_to_follow_trove() -> None:
    assert _notification().topic() == "notifications.info"
    assert _notification("ERROR").topic() == "notifications.error"
    assert _notification("ERROR").topic(errors_on_info=True) == "notifications.info"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        oslo_timestamp(datetime(2026, 1, 1))


def _events_of(instance_: instance.Instance) -> list[PublicEvent]:
    return [to_public_event(event) for event in instance_.collect_events()]


CONTEXT = {"request_id": "req-1", "tenant_id": "t1", "user_id": "u1", "client_ip": "10.0.0.9",
           "server_ip": "10.0.0.1", "server_type": "api"}


def _built() -> instance.Instance:
    return instance.Instance(
        context=CONTEXT, operation=instance.CREATE, name="orders", tenant_id="t1",
        flavor={"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20}, volume_size=2,
        datastore="mysql", datastore_version="8.0", datastore_version_id="v", availability_zone=None,
        region="RegionOne", databases=["orders"], users=[], image_id="img-1",
                    datastore_manager="mysql")


def test_a_create_event_gives_the_create_start_traits_from_its_own_data() -> None:
    created = _built()
    operation, traits = opened_operation(_events_of(created)[0])  # type: ignore[misc]
    assert operation == "create"
    start = notification_for(operation).payload("start", traits)  # type: ignore[union-attr]
    assert start == {**BASE, "name": "orders", "flavor_id": "2", "datastore": "mysql", "datastore_version": "8.0",
                     "image_id": "img-1", "availability_zone": None, "region_name": "RegionOne",
                     "volume_size": 2, "databases": ["orders"]}
    end = notification_for(operation).payload("end", traits)  # type: ignore[union-attr]
    assert end["instance_id"] == str(created.id)


def test_instance_actions_give_their_start_traits() -> None:
    built = _built()
    built.record_server_provisioned(CONTEXT, "srv", "vol", "ACTIVE", [])
    built.record_prepare_sent(CONTEXT, "topic")
    built.change_service_status(CONTEXT, ServiceStatus.HEALTHY)
    built.collect_events()
    resize = {**CONTEXT, "request_id": "req-2"}
    built.resize_volume(resize, 5)
    [opened] = _events_of(built)
    operation, traits = opened_operation(opened)  # type: ignore[misc]
    assert operation == "resize_volume"
    assert notification_for(operation).payload("start", traits) == {  # type: ignore[union-attr]
        **BASE, "request_id": "req-2", "instance_id": str(built.id), "new_size": 5}
    assert all(opened_operation(event) is None for event in _events_of(_built())[1:])


def test_the_context_reports_the_callers_recorded_roles_and_admin_by_the_admin_role() -> None:
    by_admin = instance.Instance(**{**_create_arguments(), "context": {**CONTEXT, "roles": ["admin", "member"]}})
    context = NotificationContext.of(_events_of(by_admin)[0]).as_dict()
    assert context == {"request_id": "req-1", "user_id": "u1", "project_id": "t1", "roles": ["admin", "member"],
                       "is_admin": True}
    assert NotificationContext.of(_events_of(_built())[0]).as_dict()["is_admin"] is False, \
        "an event recorded before roles were (no roles) is not an admin's"
    assert "auth_token" not in context


def _create_arguments() -> dict:
    return {"context": CONTEXT, "operation": instance.CREATE, "name": "orders", "tenant_id": "t1",
            "flavor": {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20}, "volume_size": 2,
            "datastore": "mysql", "datastore_version": "8.0", "datastore_version_id": "v",
            "availability_zone": None, "region": "RegionOne", "databases": [], "users": [], "image_id": "img-1",
            "datastore_manager": "mysql"}
