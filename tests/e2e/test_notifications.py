"""Trove's API lifecycle notifications from the running stack, read off the broker as Ceilometer would."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer

from adapters.rest.middleware import REQUEST_ID_HEADER
from tests.e2e.full_stack import FullStack

pytestmark = pytest.mark.integration


def _notifications(stack: FullStack, request_ids: set[str], expected: int, timeout_s: float = 60,
                   instance_ids: frozenset[str] = frozenset()) -> list[dict]:
    """Every notification of ``request_ids`` (API lifecycle) or of ``instance_ids`` (usage) on both topics,
    by message id (a consumer that dedupes)."""
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
                    payload = message["payload"]
                    if payload.get("request_id") in request_ids or (
                            message["event_type"].startswith("trove.") and payload["instance_id"] in instance_ids):
                        seen[message["message_id"]] = {**message, "topic": record.topic, "key": record.key}
            if len(seen) >= expected:
                break
    finally:
        consumer.close()
    return sorted(seen.values(), key=lambda m: m["timestamp"])


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

    notes = _notifications(stack, {create, restart, failed_create}, expected=6)
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
    body = {"instance": {"name": "billed", "flavorRef": "2", "volume": {"size": 2},
                         "datastore": {"type": "postgresql"}}}
    code, created, _ = stack.call("POST", f"/v1.0/{tenant}/instances", token, body)
    assert code == 200, created
    instance_id = created["instance"]["id"]
    stack.wait_status(tenant, token, instance_id, "ACTIVE")
    code, _, _ = stack.call("DELETE", f"/v1.0/{tenant}/instances/{instance_id}", token)
    assert code == 202
    stack.wait_status(tenant, token, instance_id, 404)
    notes = [n for n in _notifications(stack, set(), expected=2, instance_ids=frozenset({instance_id}))]
    assert [n["event_type"] for n in notes] == ["trove.instance.create", "trove.instance.delete"]
    create, delete = (n["payload"] for n in notes)
    assert create["tenant_id"] == tenant and create["user_id"] == "bob" and create["state"] == "active"
    assert (create["instance_size"], create["volume_size"]) == (2048, 2)
    assert create["service_id"] == "ac277e0d-4f21-40aa-b347-1ea31e571720", "Trove's id for postgresql"
    assert create["nova_instance_id"] and create["nova_volume_id"]
    assert delete["deleted_at"].endswith("Z") and delete["deleted_at"] >= create["created_at"]
    assert all(n["publisher_id"] == stack.settings.notification_host for n in notes)
