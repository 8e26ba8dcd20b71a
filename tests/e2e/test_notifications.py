"""Trove's API lifecycle notifications from the running stack, read off the broker as Ceilometer would."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from kafka import KafkaConsumer

from adapters.rest.middleware import REQUEST_ID_HEADER
from tests.e2e.conftest import STACK_SETTINGS
from tests.e2e.full_stack import FullStack

pytestmark = pytest.mark.integration


def _notifications(stack: FullStack, match: Callable[[dict[str, Any]], bool], expected: int,
                   timeout_s: float = 60) -> list[dict]:
    """Every notification on both topics that ``match`` (given the message) accepts, by message id (a
    consumer that dedupes), oldest first; once ``expected`` are in, or at ``timeout_s``."""
    consumer = KafkaConsumer(stack.settings.topics.notifications_info, stack.settings.topics.notifications_error,
                             bootstrap_servers=stack.settings.kafka_bootstrap_servers, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    wire = json.loads(record.value)
                    message = json.loads(wire["oslo.message"])
                    if match(message):
                        seen[message["message_id"]] = {**message, "topic": record.topic, "key": record.key}
            if len(seen) >= expected:
                break
    finally:
        consumer.close()
    return sorted(seen.values(), key=lambda m: m["timestamp"])


def _of_requests(request_ids: set[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message["payload"].get("request_id") in request_ids


def _usage_of(instance_id: str, event_types: set[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message["event_type"] in event_types and message["payload"]["instance_id"] == instance_id


def test_create_and_restart_notify_start_and_end_and_a_failed_build_notifies_an_error(stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = stack.token(tenant, "alice")
    body = {"instance": {"name": "db", "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}}}
    code, created, headers = stack.call("POST", f"/v1.0/{tenant}/instances", token, body)
    assert code == 200, created
    create, instance_id = headers[REQUEST_ID_HEADER], created["instance"]["id"]
    stack.wait_status(tenant, token, instance_id, "ACTIVE")
    code, _, headers = stack.call("POST", f"/v1.0/{tenant}/instances/{instance_id}/action", token, {"restart": {}})
    assert code == 202
    restart = headers[REQUEST_ID_HEADER]
    tiny = {"instance": {**body["instance"], "name": "tiny", "flavorRef": "1"}}  # disk too small: server ERROR
    code, failed, headers = stack.call("POST", f"/v1.0/{tenant}/instances", token, tiny)
    assert code == 200, failed
    failed_create = headers[REQUEST_ID_HEADER]

    notes = _notifications(stack, _of_requests({create, restart, failed_create}), expected=6)
    by_request = {request: [n["event_type"] for n in notes if n["payload"]["request_id"] == request]
                  for request in (create, restart, failed_create)}
    assert by_request == {
        create: ["dbaas.instance_create.start", "dbaas.instance_create.end"],
        restart: ["dbaas.instance_restart.start", "dbaas.instance_restart.end"],
        failed_create: ["dbaas.instance_create.start", "dbaas.instance_create.error"],
    }, by_request
    start = next(n for n in notes if n["event_type"] == "dbaas.instance_create.start")
    assert start["publisher_id"].startswith("api.") and start["priority"] == "INFO"
    assert start["payload"]["flavor_id"] == "2" and start["payload"]["datastore"] == "mysql"
    assert start["payload"]["image_id"] == "trove-guest-ubuntu-jammy"
    assert start["_context"]["project_id"] == tenant and "auth_token" not in start["_context"]
    assert start["key"] == instance_id.encode()
    error = next(n for n in notes if n["event_type"] == "dbaas.instance_create.error")
    assert error["topic"] == stack.settings.topics.notifications_error and error["priority"] == "ERROR"
    assert "Flavor's disk is too small" in error["payload"]["message"]
    assert error["payload"]["instance_id"] == failed["instance"]["id"]


def test_billing_sees_create_once_healthy_and_delete_once_released(stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = stack.token(tenant, "bob")
    instance_id = stack.create(tenant, token, "billed", size=2, datastore="postgresql")
    code, _, _ = stack.call("DELETE", f"/v1.0/{tenant}/instances/{instance_id}", token)
    assert code == 202
    stack.wait_status(tenant, token, instance_id, 404)
    notes = _notifications(stack, _usage_of(instance_id, {"trove.instance.create", "trove.instance.delete"}),
                           expected=2)
    assert [n["event_type"] for n in notes] == ["trove.instance.create", "trove.instance.delete"]
    create, delete = (n["payload"] for n in notes)
    assert create["tenant_id"] == tenant and create["user_id"] == "bob" and create["state"] == "active"
    assert (create["instance_size"], create["volume_size"]) == (2048, 2)
    assert create["service_id"] == "ac277e0d-4f21-40aa-b347-1ea31e571720", "Trove's id for postgresql"
    assert create["nova_instance_id"] and create["nova_volume_id"]
    assert delete["deleted_at"].endswith("Z") and delete["deleted_at"] >= create["created_at"]
    assert all(n["publisher_id"] == stack.settings.notification_host for n in notes)


def test_each_live_instance_gets_contiguous_exists_periods_and_each_tenant_its_quota(stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = stack.token(tenant, "carol")
    instance_id = stack.create(tenant, token, "metered", size=3)

    interval = int(STACK_SETTINGS["TROVE_ES_EXISTS_NOTIFICATION_INTERVAL_S"])
    exists = _notifications(stack, _usage_of(instance_id, {"trove.instance.exists"}), expected=3)
    assert len(exists) >= 3, exists
    periods = [(n["payload"]["audit_period_beginning"], n["payload"]["audit_period_ending"]) for n in exists]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(periods)), f"not contiguous: {periods}"
    for beginning, ending in periods[1:]:
        assert _seconds(ending) - _seconds(beginning) == interval and _seconds(ending) % interval == 0
    [create] = _notifications(stack, _usage_of(instance_id, {"trove.instance.create"}), expected=1)
    assert periods[0][0] >= create["payload"]["created_at"], "billed from when it became healthy"
    first = exists[0]
    assert first["publisher_id"] == f"taskmanager.{stack.settings.notification_host}" and first["key"] == \
        instance_id.encode()
    assert first["payload"]["tenant_id"] == tenant and first["payload"]["volume_size"] == 3
    assert first["_context"]["project_id"] == tenant and first["priority"] == "INFO"

    quota = _notifications(stack, lambda m: m["event_type"] == "dbaas.quota" and m["payload"]["tenant_id"] == tenant,
                           expected=3)
    latest = {n["payload"]["resource"]: n["payload"] for n in quota}
    assert set(latest) == {"instances", "volumes", "backups"}
    assert (latest["instances"]["in_use"], latest["volumes"]["in_use"]) == (1, 3)
    assert latest["instances"]["limit"] == stack.settings.quota_instances and latest["backups"]["reserved"] == 0


def _seconds(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def test_a_guest_that_fails_its_prepare_and_a_build_that_times_out_each_end_with_one_error(stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = stack.token(tenant, "erin")
    requests: dict[str, str] = {}
    instance_ids: dict[str, str] = {}
    for name in ("db-fake-prepare-fails", "db-fake-never-healthy"):
        body = {"instance": {"name": name, "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}}}
        code, created, headers = stack.call("POST", f"/v1.0/{tenant}/instances", token, body)
        assert code == 200, created
        requests[name], instance_ids[name] = headers[REQUEST_ID_HEADER], created["instance"]["id"]
    for instance_id in instance_ids.values():
        stack.wait_status(tenant, token, instance_id, "ERROR", timeout=90)
    notes = _notifications(stack, _of_requests(set(requests.values())), expected=4, timeout_s=90)
    by_request = {request: [n for n in notes if n["payload"]["request_id"] == request] for request in requests.values()}
    for name, request in requests.items():
        assert [n["event_type"] for n in by_request[request]] == [
            "dbaas.instance_create.start", "dbaas.instance_create.error"], (name, by_request[request])
        error = by_request[request][1]["payload"]
        assert error["instance_id"] == instance_ids[name] and isinstance(error["exception"], list)
    failed = by_request[requests["db-fake-prepare-fails"]][1]["payload"]
    assert "simulated guest fails its prepare" in failed["message"], failed
    assert any("GuestError" in line for line in failed["exception"]), "the guest's traceback, line by line"
    timed_out = by_request[requests["db-fake-never-healthy"]][1]["payload"]
    assert "Timeout waiting for instance to become active" in timed_out["message"], timed_out
    usage = _notifications(stack, lambda m: m["event_type"].startswith("trove.instance.")
                           and m["payload"]["instance_id"] in instance_ids.values(), expected=1, timeout_s=5)
    assert usage == [], "a build that never came up is never billed"
