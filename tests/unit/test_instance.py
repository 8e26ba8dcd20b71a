"""The instance aggregate's rules, and the view that mirrors it."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import ActionNotAllowed, InvalidRequest
from domain.instance import Instance
from domain.public_events import to_public_event
from domain.statuses import ServiceStatus, TaskStatus

FLAVOR = {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20}
BIGGER = {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40}
OPENING = {"CreateRequested", "RestartRequested", "VolumeResizeRequested", "FlavorResizeRequested", "Renamed",
           "StatusReset", "DeleteRequested"}
CLOSING = {"OperationSucceeded", "OperationFailed"}


def ctx(request_id: str = "req-1") -> dict[str, Any]:
    return {"request_id": request_id, "tenant_id": "t1", "user_id": "u1", "client_ip": "10.0.0.9",
            "server_ip": "10.0.0.1", "server_type": "api"}


def new_instance() -> Instance:
    return Instance(context=ctx(), operation="create", name="orders", tenant_id="t1", flavor=FLAVOR, volume_size=2,
                    datastore="mysql", datastore_version="8.0", datastore_version_id="v", availability_zone=None,
                    region="RegionOne", databases=["orders"], users=["app"], image_id="img-1",
                    datastore_manager="mysql")


def active_instance() -> Instance:
    instance = new_instance()
    instance.record_server_provisioned(ctx(), "srv-1", "vol-1", "ACTIVE", [])
    instance.record_prepare_sent(ctx(), "trove.guest.x")
    instance.change_service_status(ctx(), ServiceStatus.HEALTHY)
    return instance


def test_a_new_instance_is_building_with_its_create_operation_open() -> None:
    instance = new_instance()
    assert instance.task is TaskStatus.BUILDING
    assert instance.operation_open("req-1")


def test_a_prepared_guest_reporting_healthy_ends_the_build_in_the_same_change() -> None:
    instance = new_instance()
    instance.record_server_provisioned(ctx(), "srv-1", "vol-1", "ACTIVE", [])
    instance.record_prepare_sent(ctx(), "trove.guest.x")
    instance.change_service_status(ctx(), ServiceStatus.BUILDING)
    assert instance.operation_open("req-1"), "building is not an outcome"
    instance.change_service_status(ctx(), ServiceStatus.HEALTHY)
    names = [type(e).__name__ for e in instance.collect_events()]
    assert names[-2:] == ["ServiceStatusChanged", "OperationSucceeded"]
    assert instance.task is TaskStatus.NONE and not instance.operation_open()


def test_a_prepared_guest_reporting_failure_fails_the_build() -> None:
    instance = new_instance()
    instance.record_server_provisioned(ctx(), "srv-1", "vol-1", "ACTIVE", [])
    instance.record_prepare_sent(ctx(), "trove.guest.x")
    instance.change_service_status(ctx(), ServiceStatus.FAILED)
    failed = instance.collect_events()[-1]
    assert type(failed).__name__ == "OperationFailed"
    assert failed.message == "Service not active, status: failed to spawn"
    assert instance.task is TaskStatus.BUILDING_ERROR_SERVER


def test_a_status_before_prepare_or_outside_a_build_closes_nothing() -> None:
    instance = new_instance()
    instance.change_service_status(ctx(), ServiceStatus.HEALTHY)
    assert instance.operation_open("req-1"), "no guest was prepared yet"
    active = active_instance()
    active.restart(ctx("req-2"))
    active.change_service_status(ctx("req-2"), ServiceStatus.RESTARTING)
    active.change_service_status(ctx("req-2"), ServiceStatus.HEALTHY)
    assert active.operation_open("req-2"), "a restart is closed by the guest's result, not its status"


def test_actions_are_refused_while_building_with_trove_message() -> None:
    instance = new_instance()
    with pytest.raises(ActionNotAllowed, match=r"is not currently available for an action to be performed "
                                                r"\(instance status was BUILD\)"):
        instance.restart(ctx("req-2"))


def test_restart_opens_an_operation_that_succeeds_back_to_no_task() -> None:
    instance = active_instance()
    instance.restart(ctx("req-2"))
    assert instance.task is TaskStatus.REBOOTING
    with pytest.raises(ActionNotAllowed, match=r"task status was REBOOTING"):
        instance.resize_volume(ctx("req-3"), 5)
    instance.succeed(ctx("req-2"))
    assert instance.task is TaskStatus.NONE and not instance.operation_open()


@pytest.mark.parametrize("size", [1, 2])
def test_volume_can_only_grow(size: int) -> None:
    with pytest.raises(InvalidRequest, match="must be larger than the current volume size of '2'"):
        active_instance().resize_volume(ctx("req-2"), size)


def test_flavor_must_change() -> None:
    with pytest.raises(InvalidRequest, match="must be different"):
        active_instance().resize_flavor(ctx("req-2"), dict(FLAVOR))


@pytest.mark.parametrize("name", ["", "   ", "x" * 256, None, 7])
def test_bad_names_are_refused(name: Any) -> None:
    with pytest.raises(InvalidRequest):
        active_instance().rename(ctx("req-2"), name)


def test_rename_is_an_operation_that_closes_at_once() -> None:
    instance = active_instance()
    instance.collect_events()
    instance.rename(ctx("req-2"), "billing")
    assert [type(e).__name__ for e in instance.collect_events()] == ["Renamed", "OperationSucceeded"]
    assert instance.name == "billing"


def test_delete_during_a_build_closes_the_build_as_failed_first() -> None:
    instance = new_instance()
    instance.collect_events()
    instance.delete(ctx("req-9"))
    events = instance.collect_events()
    assert [type(e).__name__ for e in events] == ["OperationFailed", "DeleteRequested"]
    assert events[0].request_id == "req-1" and events[0].context["request_id"] == "req-1"
    assert instance.task is TaskStatus.DELETING
    with pytest.raises(ActionNotAllowed, match="is being deleted"):
        instance.delete(ctx("req-10"))


def test_events_carry_the_whole_operation_context_and_no_secrets() -> None:
    public = to_public_event(new_instance().collect_events()[0])
    assert (public.tenant_id, public.request_id, public.user_id) == ("t1", "req-1", "u1")
    assert public.data["context"] == {"client_ip": "10.0.0.9", "server_ip": "10.0.0.1", "server_type": "api"}
    assert "password" not in public.to_json().decode()


# Any sequence of commands keeps the operation invariant: every opened operation is closed exactly once.
COMMANDS = st.lists(st.sampled_from(
    ["provision", "prepare", "healthy", "failed", "succeed", "fail", "restart", "grow", "flavor", "rename",
     "reset", "delete", "deleted"]), max_size=14)


def run(instance: Instance, command: str, n: int) -> None:
    c = ctx(f"cmd-{n}")  # never the create's own request id
    with contextlib.suppress(ActionNotAllowed, InvalidRequest):
        {
            "provision": lambda: instance.record_server_provisioned(c, "srv", "vol", "ACTIVE", []),
            "prepare": lambda: instance.record_prepare_sent(c, "trove.guest.x"),
            "healthy": lambda: instance.change_service_status(c, ServiceStatus.HEALTHY),
            "failed": lambda: instance.change_service_status(c, ServiceStatus.FAILED),
            "succeed": lambda: instance.succeed(c),
            "fail": lambda: instance.fail(c, "boom", ["Traceback"], task="NONE"),
            "restart": lambda: instance.restart(c),
            "grow": lambda: instance.resize_volume(c, instance.volume_size + 1),
            "flavor": lambda: instance.resize_flavor(c, BIGGER if instance.flavor["id"] == "2" else FLAVOR),
            "rename": lambda: instance.rename(c, f"name{n}"),
            "reset": lambda: instance.reset_status(c),
            "delete": lambda: instance.delete(c),
            "deleted": lambda: instance.record_deleted(c) if instance.task is TaskStatus.DELETING else None,
        }[command]()


@given(COMMANDS)
def test_every_operation_opens_once_and_closes_once(commands: list[str]) -> None:
    instance = new_instance()
    for n, command in enumerate(commands):
        run(instance, command, n)
    names = [type(e).__name__ for e in instance.collect_events()]
    opened = sum(name in OPENING for name in names)
    closed = sum(name in CLOSING for name in names)
    assert opened == closed + (1 if instance.operation_open() else 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(COMMANDS)
def test_the_view_agrees_with_the_aggregate(commands: list[str]) -> None:
    from sqlalchemy.orm import Session

    from adapters.sql.engine import create_sql_engine
    from adapters.sql.schema import create_tables
    from projections.instance_view import InstanceView, InstanceViewQueries, record_from_aggregate

    instance = new_instance()
    for n, command in enumerate(commands):
        run(instance, command, n)
    with tempfile.TemporaryDirectory() as directory:
        engine = create_sql_engine(f"sqlite:///{Path(directory) / 'view.db'}")
        view = InstanceView()
        create_tables(engine, view.metadata)
        events = [to_public_event(event) for event in instance.collect_events()]
        with Session(engine) as session, session.begin():
            for event in events:
                view.apply(event, session)
        seen = InstanceViewQueries(engine, heartbeat_expiry_s=1e9).get(str(instance.id), include_deleted=True)
        engine.dispose()
    expected = record_from_aggregate(instance, events)
    assert seen is not None
    for field in ("name", "status", "task_status", "server_status", "service_status", "flavor", "volume_size",
                  "deleted", "version", "fault"):
        assert getattr(seen, field) == getattr(expected, field), field


def test_addresses_a_cloud_assigns_once_the_server_is_active_reach_the_view() -> None:
    from sqlalchemy.orm import Session

    from adapters.sql.engine import create_sql_engine
    from adapters.sql.schema import create_tables
    from projections.instance_view import InstanceView, InstanceViewQueries

    instance = new_instance()
    instance.record_server_provisioned(ctx(), "srv-1", "vol-1", "BUILD", [])  # Nova: none while it builds
    instance.record_server_status(ctx(), "ACTIVE", addresses=[{"address": "10.0.0.5", "type": "private"}])
    instance.record_server_status(ctx(), "REBOOT")  # a later change without addresses keeps them
    with tempfile.TemporaryDirectory() as directory:
        engine = create_sql_engine(f"sqlite:///{Path(directory) / 'view.db'}")
        view = InstanceView()
        create_tables(engine, view.metadata)
        with Session(engine) as session, session.begin():
            for event in instance.collect_events():
                view.apply(to_public_event(event), session)
        seen = InstanceViewQueries(engine, heartbeat_expiry_s=1e9).get(str(instance.id))
        engine.dispose()
    assert seen is not None and seen.addresses == [{"address": "10.0.0.5", "type": "private"}]


def test_the_create_keeps_the_image_and_a_version_1_create_still_loads_without_one() -> None:
    from eventsourcing.application import Application
    from eventsourcing.persistence import StoredEvent

    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    instance = new_instance()
    created = instance.pending_events[0]
    assert to_public_event(created).schema_version == 2
    assert to_public_event(created).data["image_id"] == "img-1"
    app.save(instance)
    assert app.repository.get(instance.id).image_id == "img-1"

    stored = app.mapper.to_stored_event(created)
    state = app.mapper.transcoder.decode(stored.state)
    del state["image_id"], state["datastore_manager"], state["class_version"]  # what version 1 wrote
    old = StoredEvent(originator_id=stored.originator_id, originator_version=1, topic=stored.topic,
                      state=app.mapper.transcoder.encode(state))
    restored = app.mapper.to_domain_event(old).mutate(None)
    assert restored is not None and restored.name == "orders"
    assert restored.image_id is None and restored.datastore_manager is None
