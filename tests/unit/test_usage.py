"""Usage notifications (trove.instance.*) folded from an instance's events, typed as Ceilometer reads them."""

from __future__ import annotations

from typing import Any

from domain.instance import CREATE, Instance
from domain.public_events import to_public_event
from domain.statuses import ServiceStatus
from domain.usage import SERVICE_IDS, InstanceUsage, UsageNotification

CONTEXT = {"request_id": "req-1", "tenant_id": "t1", "user_id": "u1", "client_ip": "203.0.113.7",
           "server_ip": "192.0.2.10", "server_type": "api"}
SMALL = {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20}
MEDIUM = {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40}


def _new() -> Instance:
    return Instance(context=CONTEXT, operation=CREATE, name="orders", tenant_id="t1", flavor=SMALL, volume_size=1,
                    datastore="mysql", datastore_version="8.0", datastore_version_id="v", availability_zone="az1",
                    region="RegionOne", databases=[], users=[], image_id="img-1",
                    datastore_manager="mysql")


def _fold(instance: Instance, usage: InstanceUsage) -> list[UsageNotification]:
    return [n for e in instance.collect_events() for n in usage.notifications(to_public_event(e))]


def _built(usage: InstanceUsage) -> tuple[Instance, list[UsageNotification]]:
    instance = _new()
    instance.record_server_provisioned(CONTEXT, "srv-1", "vol-1", "ACTIVE", [])
    instance.record_prepare_sent(CONTEXT, "topic")
    notes = _fold(instance, usage)
    instance.change_service_status(CONTEXT, ServiceStatus.HEALTHY)
    return instance, notes + _fold(instance, usage)


def test_create_is_sent_once_the_datastore_is_healthy_with_ceilometers_traits() -> None:
    usage = InstanceUsage({})
    instance, notes = _built(usage)
    [create] = notes
    assert create.event_type == "trove.instance.create"
    payload: dict[str, Any] = create.payload
    assert payload["instance_id"] == str(instance.id) and payload["nova_instance_id"] == "srv-1"
    assert payload["instance_type"] == "m1.small" and payload["instance_type_id"] == "2"
    assert payload["instance_size"] == 2048 and payload["volume_size"] == 1 and payload["nova_volume_id"] == "vol-1"
    assert payload["service_id"] == SERVICE_IDS["mysql"] and payload["state"] == "active"
    assert payload["tenant_id"] == "t1" and payload["user_id"] == "u1" and payload["availability_zone"] == "az1"
    assert payload["created_at"].endswith("Z") and payload["launched_at"] == payload["created_at"]
    instance.change_service_status(CONTEXT, ServiceStatus.SHUTDOWN)
    instance.change_service_status(CONTEXT, ServiceStatus.HEALTHY)
    assert _fold(instance, usage) == [], "healthy again is not a second create"


def test_resizes_and_delete_carry_old_and_new_sizes_and_times() -> None:
    usage = InstanceUsage({})
    instance, _ = _built(usage)
    instance.resize_volume(CONTEXT, 5)
    instance.record_volume_resized(CONTEXT, 1, 5)
    instance.succeed(CONTEXT)
    instance.resize_flavor(CONTEXT, MEDIUM)
    instance.record_flavor_resized(CONTEXT, SMALL, MEDIUM)
    instance.succeed(CONTEXT)
    instance.delete(CONTEXT)
    instance.record_deleted(CONTEXT)
    volume, flavor, delete = _fold(instance, usage)
    assert volume.event_type == "trove.instance.modify_volume"
    assert (volume.payload["old_volume_size"], volume.payload["volume_size"]) == (1, 5)
    assert flavor.event_type == "trove.instance.modify_flavor"
    assert (flavor.payload["old_instance_size"], flavor.payload["instance_size"]) == (2048, 4096)
    assert flavor.payload["instance_type"] == "m1.medium" and flavor.payload["modify_at"].endswith("Z")
    assert delete.event_type == "trove.instance.delete" and delete.payload["deleted_at"].endswith("Z")
    assert delete.payload["volume_size"] == 5


def test_a_build_that_fails_is_never_billed() -> None:
    usage: dict[str, Any] = {}
    fold = InstanceUsage(usage)
    instance = _new()
    instance.fail(CONTEXT, message="No valid host", traceback=[], task="BUILDING_ERROR_SERVER")
    instance.delete(CONTEXT)
    instance.record_deleted(CONTEXT)
    assert _fold(instance, fold) == []
    assert usage == {}, "a deleted instance leaves nothing behind"


def test_an_unknown_manager_gets_trove_unknown_service_id() -> None:
    usage = InstanceUsage({}, service_ids={})
    _, [create] = _built(usage)
    assert create.payload["service_id"] == "unknown-service-id-error"


def test_the_service_id_is_the_recorded_managers_not_the_datastores_name() -> None:
    usage = InstanceUsage({})
    instance = Instance(context=CONTEXT, operation=CREATE, name="pg", tenant_id="t1", flavor=SMALL, volume_size=1,
                        datastore="analytics", datastore_version="15", datastore_version_id="v",
                        availability_zone=None, region="RegionOne", databases=[], users=[], image_id="img-1",
                        datastore_manager="postgresql")
    instance.record_server_provisioned(CONTEXT, "srv-1", "vol-1", "ACTIVE", [])
    instance.record_prepare_sent(CONTEXT, "topic")
    instance.change_service_status(CONTEXT, ServiceStatus.HEALTHY)
    [create] = _fold(instance, usage)
    assert create.payload["service_id"] == SERVICE_IDS["postgresql"]
