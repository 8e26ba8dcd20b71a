"""API lifecycle notifications folded from instance events: every start ends exactly once, traits complete."""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.api_lifecycle import ApiLifecycle
from domain.errors import ActionNotAllowed, InvalidRequest
from domain.instance import CREATE, Instance
from domain.notifications import API_NOTIFICATIONS, BASE_TRAITS, Notification
from domain.public_events import to_public_event
from domain.statuses import ServiceStatus

FLAVORS = [{"id": str(n), "name": f"m{n}", "ram": 1024 * n, "vcpus": n, "disk": 10 * n} for n in (1, 2, 3)]
_requests = itertools.count()


def api(request_id: str | None = None) -> dict[str, Any]:
    return {"request_id": request_id or f"req-{next(_requests)}", "tenant_id": "t1", "user_id": "u1",
            "client_ip": "203.0.113.7", "server_ip": "192.0.2.10", "server_type": "api"}


def service(carried: dict[str, Any], server_type: str) -> dict[str, Any]:
    return {**carried, "server_type": server_type, "server_ip": "192.0.2.20"}


def new_instance() -> Instance:
    return Instance(context=api(), operation=CREATE, name="orders", tenant_id="t1", flavor=FLAVORS[0],
                    volume_size=1, datastore="mysql", datastore_version="8.0", datastore_version_id="v",
                    availability_zone=None, region="RegionOne", databases=[], users=[], image_id="img-1",
                    datastore_manager="mysql")


def fold(instance: Instance, lifecycle: ApiLifecycle) -> list[Notification]:
    return [n for event in instance.collect_events() for n in lifecycle.notifications(to_public_event(event))]


def test_a_build_notifies_start_then_end_from_the_closing_service() -> None:
    lifecycle = ApiLifecycle("h1", {})
    instance = new_instance()
    notes = fold(instance, lifecycle)
    carried = instance.operation["context"]  # type: ignore[index]
    instance.record_server_provisioned(service(carried, "taskmanager"), "srv", "vol", "ACTIVE", [])
    instance.record_prepare_sent(service(carried, "taskmanager"), "topic")
    instance.change_service_status(service(carried, "conductor"), ServiceStatus.HEALTHY)
    notes += fold(instance, lifecycle)
    assert [n.event_type for n in notes] == ["dbaas.instance_create.start", "dbaas.instance_create.end"]
    start, end = notes
    assert start.publisher_id == "api.h1" and end.publisher_id == "conductor.h1"
    assert start.payload["name"] == "orders" and "instance_id" not in start.payload
    assert end.payload["instance_id"] == str(instance.id) and end.payload["image_id"] == "img-1"
    assert end.payload["client_ip"] == "203.0.113.7", "the caller's address is the start's"
    assert end.payload["request_id"] == start.payload["request_id"] == start.context.request_id


def test_a_failed_build_notifies_an_error_with_message_and_traceback() -> None:
    lifecycle = ApiLifecycle("h1", {})
    instance = new_instance()
    fold(instance, lifecycle)
    instance.fail(service(instance.operation["context"], "taskmanager"),  # type: ignore[index]
                  message="No valid host was found.", traceback=["Traceback (most recent call last):", "Boom"],
                  task="BUILDING_ERROR_SERVER")
    [error] = fold(instance, lifecycle)
    assert error.event_type == "dbaas.instance_create.error" and error.priority == "ERROR"
    assert error.payload["message"] == "No valid host was found."
    assert error.payload["exception"] == ["Traceback (most recent call last):", "Boom"]
    assert error.payload["instance_id"] == str(instance.id)
    assert error.topic() == "notifications.error" and error.topic(errors_on_info=True) == "notifications.info"


def test_replaying_the_stream_emits_identical_messages() -> None:
    instance = new_instance()
    instance.fail(instance.operation["context"], message="m", traceback=[])  # type: ignore[index]
    events = [to_public_event(event) for event in instance.collect_events()]
    first = [n.to_wire() for e in events for n in ApiLifecycle("h1", {}).notifications(e)]
    replay_state: dict[str, Any] = {}
    replay = [n.to_wire() for e in events for n in ApiLifecycle("h1", replay_state).notifications(e)]
    assert first != [] and replay[0] == first[0]


ACTIONS = ("restart", "resize_volume", "resize_flavor", "rename", "reset_status", "delete", "succeed", "fail",
           "guest_healthy", "guest_failed")


def act(instance: Instance, action: str, step: int) -> None:
    carried = instance.operation["context"] if instance.operation else api()
    with contextlib.suppress(ActionNotAllowed, InvalidRequest):
        if action == "restart":
            instance.restart(api())
        elif action == "resize_volume":
            instance.resize_volume(api(), (instance.volume_size or 1) + 1)
        elif action == "resize_flavor":
            instance.resize_flavor(api(), FLAVORS[step % 3])
        elif action == "rename":
            instance.rename(api(), f"name-{step}")
        elif action == "reset_status":
            instance.reset_status(api())
        elif action == "delete":
            instance.delete(api())
        elif action == "succeed":
            instance.succeed(service(carried, "taskmanager"))
        elif action == "fail":
            instance.fail(service(carried, "taskmanager"), message=f"failure {step}", traceback=["tb"])
        elif action == "guest_healthy":
            instance.change_service_status(service(carried, "conductor"), ServiceStatus.HEALTHY)
        elif action == "guest_failed":
            instance.change_service_status(service(carried, "conductor"), ServiceStatus.FAILED)


@settings(max_examples=200, deadline=None)
@given(actions=st.lists(st.sampled_from(ACTIONS), max_size=25), restart_notifier_at=st.integers(0, 25),
       crash_before_commit_at=st.integers(0, 25), built=st.booleans())
def test_every_start_is_followed_by_exactly_one_end_or_error(actions: list[str], restart_notifier_at: int,
                                                             crash_before_commit_at: int, built: bool) -> None:
    """Random operations with failures (task manager, guest), a notifier restart, and a notifier killed
    after publishing a batch but before committing it (the batch is folded again from the last committed
    state): deduped by message id, every start has exactly one end or error."""
    open_operations: dict[str, Any] = {}  # what a persisted notifier keeps across its restarts
    lifecycle = ApiLifecycle("h1", open_operations)
    instance = new_instance()
    if built:
        carried = instance.operation["context"]  # type: ignore[index]
        instance.record_server_provisioned(service(carried, "taskmanager"), "srv", "vol", "ACTIVE", [])
        instance.record_prepare_sent(service(carried, "taskmanager"), "topic")
    notes = fold(instance, lifecycle)
    for step, action in enumerate(actions):
        if step == restart_notifier_at:
            lifecycle = ApiLifecycle("h1", json.loads(json.dumps(open_operations)))  # a restart reloads its state
            open_operations = lifecycle._open  # type: ignore[assignment]
        act(instance, action, step)
        events = [to_public_event(event) for event in instance.collect_events()]
        if step == crash_before_commit_at:
            committed = json.loads(json.dumps(open_operations))
            published = [n for event in events for n in lifecycle.notifications(event)]
            open_operations.clear()
            open_operations.update(committed)  # the kill: the batch's state change is rolled back
            again = [n for event in events for n in lifecycle.notifications(event)]
            assert [n.to_wire() for n in again] == [n.to_wire() for n in published], "republished byte for byte"
            notes += published + again
        else:
            notes += [n for event in events for n in lifecycle.notifications(event)]
    instance.fail(instance.operation["context"] if instance.operation else api(), message="end of test",
                  traceback=[])  # whatever is still open ends (the build timeout, in the real system)
    notes += fold(instance, lifecycle)

    notes = list({note.message_id: note for note in notes}.values())  # a consumer that dedupes
    by_request: dict[str, list[str]] = {}
    for note in notes:
        by_request.setdefault(note.payload["request_id"], []).append(note.event_type)
        assert set(BASE_TRAITS) <= set(note.payload), note
        assert len(json.loads(note.to_wire())["oslo.message"]) > 0
    for request_id, types in by_request.items():
        assert len(types) == 2, (request_id, types)
        start, close = types
        assert start.endswith(".start") and close.rsplit(".", 1)[0] == start.rsplit(".", 1)[0], types
        assert close.endswith((".end", ".error")), types
    assert not open_operations, "nothing is left open once every operation has closed"
    known = {n.event_type for n in API_NOTIFICATIONS.values()}
    assert all(note.event_type.split(".")[1] in known for note in notes)
