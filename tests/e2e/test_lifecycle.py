"""An instance's whole life through the gunicorn-served API, with every process of the stack running.

Waits are bounded polls (they stop a hung test); no assertion depends on how long anything took.
"""

from __future__ import annotations

import time
import uuid

import pytest

from adapters.rest.local_tokens import KEY_FILE_NAME, LocalTokenAuthority
from adapters.rest.middleware import REQUEST_ID_HEADER
from adapters.secret_files import load_or_create_key
from tests.e2e.full_stack import FullStack

pytestmark = pytest.mark.integration


def _tenant(stack: FullStack) -> tuple[str, str]:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    return tenant, stack.token(tenant, "alice")


def _create(stack: FullStack, tenant: str, token: str, name: str = "db", flavor: str = "2",
            size: int = 1, datastore: str = "postgresql") -> tuple[int, dict, str]:
    body = {"instance": {"name": name, "flavorRef": flavor, "volume": {"size": size},
                         "datastore": {"type": datastore}}}
    code, answer, headers = stack.call("POST", f"/v1.0/{tenant}/instances", token, body)
    return code, answer, headers[REQUEST_ID_HEADER]


def _act(stack: FullStack, tenant: str, token: str, instance_id: str, action: dict) -> str:
    code, answer, headers = stack.call("POST", f"/v1.0/{tenant}/instances/{instance_id}/action", token, action)
    assert code == 202, answer
    return headers[REQUEST_ID_HEADER]


def test_create_restart_resize_rename_and_delete(stack: FullStack) -> None:
    tenant, token = _tenant(stack)
    code, created, create_request = _create(stack, tenant, token)
    assert (code, created["instance"]["status"]) == (200, "BUILD"), created
    instance_id = created["instance"]["id"]
    shown = stack.show(tenant, token, instance_id)
    assert isinstance(shown, dict) and shown["status"] == "BUILD", "a show right after the create never 404s"
    assert _names(stack, tenant, token) == ["db"], "nor does a list miss it"

    active = stack.wait_status(tenant, token, instance_id, "ACTIVE")
    assert active["operating_status"] == "HEALTHY" and active["ip"], active
    assert type(stack.wait_closed(instance_id, create_request)).__name__ == "OperationSucceeded"

    restart = _act(stack, tenant, token, instance_id, {"restart": {}})
    assert stack.show(tenant, token, instance_id)["status"] == "REBOOT"
    stack.wait_status(tenant, token, instance_id, "ACTIVE")
    assert type(stack.wait_closed(instance_id, restart)).__name__ == "OperationSucceeded"

    grow = _act(stack, tenant, token, instance_id, {"resize": {"volume": {"size": 3}}})
    assert stack.show(tenant, token, instance_id)["status"] == "RESIZE"
    stack.wait_closed(instance_id, grow)
    resized = stack.wait_status(tenant, token, instance_id, "ACTIVE")
    assert resized["volume"]["size"] == 3

    bigger = _act(stack, tenant, token, instance_id, {"resize": {"flavorRef": "3"}})
    assert stack.show(tenant, token, instance_id)["status"] == "RESIZE"
    assert type(stack.wait_closed(instance_id, bigger)).__name__ == "OperationSucceeded"
    assert stack.wait_status(tenant, token, instance_id, "ACTIVE")["flavor"]["id"] == "3"

    code, _, headers = stack.call("PATCH", f"/v1.0/{tenant}/instances/{instance_id}", token,
                                  {"instance": {"name": "renamed"}})
    assert code == 202
    assert stack.show(tenant, token, instance_id)["name"] == "renamed"
    assert _names(stack, tenant, token) == ["renamed"]
    assert type(stack.wait_closed(instance_id, headers[REQUEST_ID_HEADER])).__name__ == "OperationSucceeded"

    code, _, headers = stack.call("DELETE", f"/v1.0/{tenant}/instances/{instance_id}", token)
    assert code == 202
    stack.wait_status(tenant, token, instance_id, 404)
    assert type(stack.wait_closed(instance_id, headers[REQUEST_ID_HEADER])).__name__ == "OperationSucceeded"
    code, listed, _ = stack.call("GET", f"/v1.0/{tenant}/instances", token)
    assert (code, listed["instances"]) == (200, [])

    # The quota counts nothing once the instance is gone, reserved or in use.
    code, quota, _ = stack.call("GET", f"/v1.0/admin/mgmt/quotas/{tenant}", stack.admin_token)
    assert code == 200
    usage = {q["resource"]: q for q in quota["quotas"]}
    assert (usage["instances"]["in_use"], usage["instances"]["reserved"]) == (0, 0), usage
    assert (usage["volumes"]["in_use"], usage["volumes"]["reserved"]) == (0, 0), usage


def test_a_compute_failure_leaves_the_instance_in_error_until_deleted(stack: FullStack) -> None:
    tenant, token = _tenant(stack)
    code, created, create_request = _create(stack, tenant, token, name="tiny", flavor="1")
    assert code == 200, created
    instance_id = created["instance"]["id"]
    failed = stack.wait_closed(instance_id, create_request)
    assert (type(failed).__name__, failed.task) == ("OperationFailed", "BUILDING_ERROR_SERVER")
    assert "Flavor's disk is too small for requested image" in failed.message
    errored = stack.wait_status(tenant, token, instance_id, "ERROR")
    assert errored["operating_status"] == ""
    code, refused, _ = stack.call("POST", f"/v1.0/{tenant}/instances/{instance_id}/action", token, {"restart": {}})
    assert code == 422 and "unprocessableEntity" in refused, refused

    code, _, _ = stack.call("DELETE", f"/v1.0/{tenant}/instances/{instance_id}", token)
    assert code == 202
    stack.wait_status(tenant, token, instance_id, 404)


def test_a_guest_that_never_becomes_healthy_times_the_build_out(stack: FullStack) -> None:
    tenant, token = _tenant(stack)
    code, created, create_request = _create(stack, tenant, token, name="db-fake-never-healthy")
    assert code == 200, created
    instance_id = created["instance"]["id"]
    failed = stack.wait_closed(instance_id, create_request)
    assert (type(failed).__name__, failed.task) == ("OperationFailed", "BUILDING_ERROR_TIMEOUT_GA")
    assert stack.wait_status(tenant, token, instance_id, "ERROR")["status"] == "ERROR"


def test_quota_exceeded_is_413_and_the_refused_create_stores_nothing(stack: FullStack) -> None:
    tenant, token = _tenant(stack)
    code, _, _ = stack.call("PUT", f"/v1.0/admin/mgmt/quotas/{tenant}", stack.admin_token,
                            {"quotas": {"instances": 1}})
    assert code == 200
    code, created, _ = _create(stack, tenant, token, name="first")
    assert code == 200, created
    code, refused, _ = _create(stack, tenant, token, name="second")
    assert code == 413, refused
    assert refused["overLimit"]["code"] == 413
    assert "Quota exceeded for resources: ['instances']" in refused["overLimit"]["message"]
    assert _names(stack, tenant, token) == ["first"], "a list right after a create shows it; the refused one never"
    code, quota, _ = stack.call("GET", f"/v1.0/admin/mgmt/quotas/{tenant}", stack.admin_token)
    assert {q["resource"]: q["in_use"] + q["reserved"] for q in quota["quotas"]}["instances"] == 1


def _names(stack: FullStack, tenant: str, token: str) -> list[str]:
    code, listed, _ = stack.call("GET", f"/v1.0/{tenant}/instances", token)
    assert code == 200, listed
    return [i["name"] for i in listed["instances"]]


def test_auth_matrix(stack: FullStack) -> None:
    tenant, token = _tenant(stack)
    other, other_token = _tenant(stack)
    code, created, _ = _create(stack, tenant, token)
    assert code == 200
    instance = f"/v1.0/{tenant}/instances/{created['instance']['id']}"

    assert stack.call("GET", instance)[0] == 401
    assert stack.call("GET", instance, "not-a-token")[0] == 401
    an_hour_ago = LocalTokenAuthority(load_or_create_key(stack.data_dir, KEY_FILE_NAME),
                                      clock=lambda: time.time() - 3600)
    expired = an_hour_ago.issue(project_id=tenant, user_id="alice", ttl_s=60)
    assert stack.call("GET", instance, expired)[0] == 401
    code, forbidden, _ = stack.call("GET", instance, other_token)
    assert code == 403 and "forbidden" in forbidden
    # Another tenant's instance id under one's own tenant is not found, not forbidden.
    assert stack.call("GET", f"/v1.0/{other}/instances/{created['instance']['id']}", other_token)[0] == 404
    assert stack.call("GET", instance, stack.admin_token)[0] == 200
    assert stack.call("GET", f"/v1.0/{tenant}/mgmt/instances", token)[0] == 403
    code, unauthorized, _ = stack.call("GET", f"/v1.0/{tenant}/instances", "forged." + token)
    assert code == 401 and "unauthorized" in unauthorized
