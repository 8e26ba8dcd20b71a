"""The task manager, conductor and simulated guests as real processes, on PostgreSQL and a real broker.

Each test drives the write side through ``InstanceService`` and waits (with a generous bound, not a
timed assertion) for the events the processes record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.bootstrap import fake_cloud_engine
from adapters.compute.fake import FakeCompute
from adapters.guest_sim import fake_guests
from adapters.kafka.broker import EmbeddedBroker
from adapters.kafka.topics import admin_client, topic_id
from domain.statuses import ServiceStatus, TaskStatus
from services.ports import ComputeQuotaExceeded, ServerSpec
from tests.support.trove_processes import TENANT, WriteSide, write_side

pytestmark = pytest.mark.integration

ALL = ("relay", "task-manager", "conductor", "fake-guests")
NOVA_DISK_FAULT = ("Flavor's disk is too small for requested image. Flavor disk is 1073741824 bytes, "
                   "image is 2147483648 bytes.")


@pytest.fixture
def side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url)


def _active(side: WriteSide, instance_id: str) -> bool:
    instance = side.get(instance_id)
    return (instance.task is TaskStatus.NONE and instance.server_status == "ACTIVE"
            and instance.service_status is ServiceStatus.HEALTHY)


def _quota_settled(side: WriteSide, instances: int, volumes: int) -> bool:
    quota = side.instances.quota(TENANT)
    return (quota is not None and not quota.reservations
            and (quota.in_use["instances"], quota.in_use["volumes"]) == (instances, volumes))


def test_an_instance_is_built_restarted_resized_and_deleted(side: WriteSide) -> None:
    side.start(*ALL)
    instance_id = side.create(request_id="req-create")

    closed = side.wait_closed(instance_id, "req-create")
    assert type(closed).__name__ == "OperationSucceeded"
    assert _active(side, instance_id)
    types = side.event_types(instance_id)
    for expected in ("ServerProvisioned", "PrepareSent", "ServiceStatusChanged"):
        assert expected in types
    provisioned = next(e for e in side.events(instance_id) if type(e).__name__ == "ServerProvisioned")
    assert provisioned.context["server_type"] == "taskmanager"
    # The guest's healthy status ends the build where it is recorded: by the conductor, in one save.
    healthy = [e for e in side.events(instance_id) if type(e).__name__ == "ServiceStatusChanged"][-1]
    assert healthy.service_status == "healthy" and closed.originator_version == healthy.originator_version + 1
    assert closed.context["server_type"] == "conductor" and closed.context["request_id"] == "req-create"
    assert provisioned.context["request_id"] == "req-create" and provisioned.context["client_ip"] == "192.0.2.7"
    side.wait(lambda: _quota_settled(side, 1, 2), "the create's quota to be committed")

    side.instances.restart(side.context("req-restart"), instance_id)
    assert type(side.wait_closed(instance_id, "req-restart")).__name__ == "OperationSucceeded"
    statuses = [e.service_status for e in side.events(instance_id) if type(e).__name__ == "ServiceStatusChanged"]
    assert statuses[-2:] == ["restarting", "healthy"]
    assert _active(side, instance_id)

    side.instances.resize_volume(side.context("req-volume"), instance_id, 5)
    assert type(side.wait_closed(instance_id, "req-volume")).__name__ == "OperationSucceeded"
    assert side.get(instance_id).volume_size == 5
    side.wait(lambda: _quota_settled(side, 1, 5), "the resize's quota to be committed")

    side.instances.resize_flavor(side.context("req-flavor"), instance_id, "3")
    assert type(side.wait_closed(instance_id, "req-flavor")).__name__ == "OperationSucceeded"
    assert side.get(instance_id).flavor["id"] == "3"
    assert "FlavorResized" in side.event_types(instance_id)
    side.wait(lambda: _active(side, instance_id), "the guest to be healthy after the resize")

    side.instances.delete(side.context("req-delete"), instance_id)
    assert type(side.wait_closed(instance_id, "req-delete")).__name__ == "OperationSucceeded"
    assert side.get(instance_id).deleted
    assert side.event_types(instance_id)[-2:] == ["Deleted", "OperationSucceeded"]
    assert _quota_settled(side, 0, 0), "the delete released the instance's quota in the same save"
    engine = fake_cloud_engine(side.settings)
    assert FakeCompute(engine).get(instance_id) is None

    def guest_gone() -> bool:
        with engine.connect() as connection:
            return connection.execute(select(fake_guests).where(fake_guests.c.instance_id == instance_id)).first() \
                is None

    side.wait(guest_gone, "the simulated guest to stop with its server")
    with admin_client(side.settings.kafka_bootstrap_servers) as admin:
        assert topic_id(admin, f"{side.settings.topics.guest_prefix}{instance_id}") is None, "guest topic deleted"
    assert side.stop_all() == [0, 0, 0, 0], "SIGTERM stops every process cleanly"


@pytest.fixture
def failing_side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    # The fake image needs 2 GB of disk (m1.tiny has 1) and the fake cloud has room for one server.
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url,
                          TROVE_ES_FAKE_IMAGE_MIN_DISK_GB="2", TROVE_ES_FAKE_COMPUTE_MAX_SERVERS="1")


def test_compute_failures_fail_the_build_with_novas_fault(failing_side: WriteSide) -> None:
    side = failing_side
    side.start(*ALL)
    too_small = side.create(name="tiny", flavor="1", request_id="req-tiny")
    failed = side.wait_closed(too_small, "req-tiny")
    assert type(failed).__name__ == "OperationFailed"
    assert failed.task == "BUILDING_ERROR_SERVER"
    assert NOVA_DISK_FAULT in failed.message
    server_error = next(e for e in side.events(too_small) if type(e).__name__ == "ServerStatusChanged")
    assert (server_error.server_status, server_error.fault) == ("ERROR", NOVA_DISK_FAULT)
    assert side.get(too_small).task is TaskStatus.BUILDING_ERROR_SERVER
    # As in Trove, the failed instance exists (in ERROR) until deleted, so it stays counted.
    side.wait(lambda: _quota_settled(side, 1, 2), "the failed create's quota to be committed")

    # The server in ERROR holds the fake cloud's only slot.
    over = side.create(name="over", flavor="2", request_id="req-over")
    failed = side.wait_closed(over, "req-over")
    assert (type(failed).__name__, failed.task) == ("OperationFailed", "BUILDING_ERROR_SERVER")
    assert failed.message == "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"

    # Deleting a failed instance frees the cloud and the quota.
    side.instances.delete(side.context("req-delete"), too_small)
    assert type(side.wait_closed(too_small, "req-delete")).__name__ == "OperationSucceeded"
    side.wait(lambda: side.get(over).task is TaskStatus.BUILDING_ERROR_SERVER, "the second build to have failed")
    side.wait(lambda: _quota_settled(side, 1, 2), "only the second failed instance to count")


@pytest.fixture
def timeout_side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url, TROVE_ES_USAGE_TIMEOUT_S="4")


def test_a_guest_that_never_becomes_healthy_times_the_build_out(timeout_side: WriteSide) -> None:
    side = timeout_side
    side.start(*ALL)
    side.start_notifier()
    instance_id = side.create(name="db-fake-never-healthy", request_id="req-hung")
    failed = side.wait_closed(instance_id, "req-hung")
    assert (type(failed).__name__, failed.task) == ("OperationFailed", "BUILDING_ERROR_TIMEOUT_GA")
    assert "Timeout waiting for instance to become active" in failed.message
    events = side.events(instance_id)
    statuses = [e.service_status for e in events if type(e).__name__ == "ServiceStatusChanged"]
    assert "building" in statuses, "the guest did start preparing"
    assert "guestagent error" in statuses, "the timeout marks the guest agent as failed"
    assert side.get(instance_id).task is TaskStatus.BUILDING_ERROR_TIMEOUT_GA
    side.wait(lambda: _quota_settled(side, 1, 2), "the timed-out create's quota to be committed")
    side.wait(lambda: len(side.notifications("req-hung")) >= 2, "the create's notifications")
    start, error = side.notifications("req-hung")
    assert (start["event_type"], error["event_type"]) == ("dbaas.instance_create.start", "dbaas.instance_create.error")
    assert "Timeout waiting for instance to become active" in error["payload"]["message"], \
        "no silent build timeout, as Trove's"


def test_a_delete_the_cloud_never_completes_fails_at_its_deadline(timeout_side: WriteSide) -> None:
    side = timeout_side
    side.start(*ALL)
    instance_id = side.create(name="db-fake-undeletable", request_id="req-create")
    assert type(side.wait_closed(instance_id, "req-create")).__name__ == "OperationSucceeded"
    side.instances.delete(side.context("req-delete"), instance_id)
    failed = side.wait_closed(instance_id, "req-delete")
    assert type(failed).__name__ == "OperationFailed", "a delete that cannot finish ends, and says so"
    assert "was not deleted in time" in failed.message and "delete the instance again" in failed.message
    instance = side.get(instance_id)
    assert not instance.deleted and instance.task is TaskStatus.NONE, "the server still exists: so does the instance"


@pytest.fixture
def slow_side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    # Servers take a while to build, so the task manager is caught in the middle of one.
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url, TROVE_ES_FAKE_COMPUTE_DELAY_S="3")


def test_a_build_resumes_after_the_task_manager_is_killed(slow_side: WriteSide) -> None:
    side = slow_side
    side.start(*ALL)
    side.start_notifier()
    instance_id = side.create(request_id="req-create")
    side.wait(lambda: side.get(instance_id).server_id is not None, "the server to be requested")
    assert side.get(instance_id).operation_open("req-create"), "caught mid-build"
    side.processes["task-manager"].kill9()

    side.restart("task-manager")
    closed = side.wait_closed(instance_id, "req-create", timeout=90)
    assert type(closed).__name__ == "OperationSucceeded"
    assert _active(side, instance_id)
    assert side.event_types(instance_id).count("ServerProvisioned") == 1, "the server was not requested twice"
    side.wait(lambda: _quota_settled(side, 1, 2), "the create's quota to be committed")
    side.wait(lambda: len(side.notifications("req-create")) >= 2, "the create's notifications")
    assert [n["event_type"] for n in side.notifications("req-create")] == [
        "dbaas.instance_create.start", "dbaas.instance_create.end"], "a start the crash interrupted still ends, once"


def test_a_status_reset_mid_build_follows_the_server_until_it_settles(slow_side: WriteSide) -> None:
    side = slow_side
    side.start(*ALL)
    instance_id = side.create(request_id="req-create")
    side.wait(lambda: side.get(instance_id).server_id is not None, "the server to be requested")
    assert side.get(instance_id).server_status == "BUILD"
    side.instances.reset_status(side.context("req-reset"), instance_id)
    assert type(side.wait_closed(instance_id, "req-create")).__name__ == "OperationFailed", "the reset closed it"
    # Nothing else would ever look at the server again: the reset makes the task manager follow it.
    side.wait(lambda: side.get(instance_id).server_status == "ACTIVE", "the reset instance to show its server ACTIVE")
    assert side.get(instance_id).task is TaskStatus.NONE


def test_fake_compute_is_idempotent_and_injects_failures(postgres_url: str) -> None:
    from adapters.sql.engine import create_sql_engine

    engine = create_sql_engine(postgres_url)
    now = [1000.0]
    compute = FakeCompute(engine, delay_s=2.0, max_servers=2, image_min_disk_gb=2, clock=lambda: now[0])
    spec = ServerSpec(instance_id="i-1", name="db", flavor={"id": "2", "disk": 20}, volume_size=3)
    first = compute.create(spec)
    assert first.status == "BUILD" and compute.create(spec) == first, "create is idempotent per instance"
    now[0] += 2.0
    assert compute.get("i-1").status == "ACTIVE"
    compute.resize_volume("i-1", 5)
    assert compute.get("i-1").volume_size == 3
    now[0] += 1.0
    compute.resize_volume("i-1", 5)  # repeated after a crash: the extension under way goes on, not again
    now[0] += 1.0
    assert compute.get("i-1").volume_size == 5
    compute.resize_flavor("i-1", {"id": "3", "disk": 40})
    now[0] += 1.0
    assert compute.resize_flavor("i-1", {"id": "3", "disk": 40}).status == "RESIZE"
    now[0] += 1.0
    assert (compute.get("i-1").status, compute.get("i-1").flavor_id) == ("ACTIVE", "3")

    broken = compute.create(ServerSpec(instance_id="i-2", name="tiny", flavor={"id": "1", "disk": 1},
                                       volume_size=1))
    assert (broken.status, broken.fault) == ("ERROR", NOVA_DISK_FAULT)
    with pytest.raises(ComputeQuotaExceeded, match="already used 2 of 2 instances"):
        compute.create(ServerSpec(instance_id="i-3", name="db", flavor={"id": "2", "disk": 20}, volume_size=1))
    compute.delete("i-2")
    compute.delete("i-2")
    assert compute.get("i-2") is None
    engine.dispose()
