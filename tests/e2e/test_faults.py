"""Instance faults on the running stack (gunicorn, PostgreSQL, the broker, the fault-history projection):
an owner sees why a build failed, an admin the traceback, and python-troveclient shows both."""

from __future__ import annotations

import contextlib
import io
import uuid
import warnings
from typing import Any

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

from tests.e2e.full_stack import FullStack

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from troveclient.v1 import client as trove_client
    from troveclient.v1 import shell as trove_shell

pytestmark = pytest.mark.integration


def _build(stack: FullStack, tenant: str, token: str, name: str, flavor: str = "2") -> str:
    body = {"instance": {"name": name, "flavorRef": flavor, "volume": {"size": 1}, "datastore": {"type": "mysql"}}}
    code, created, _ = stack.call("POST", f"/v1.0/{tenant}/instances", token, body)
    assert code == 200, created
    assert "fault" not in created["instance"], "a create just accepted has no fault yet"
    stack.wait_status(tenant, token, created["instance"]["id"], "ERROR", timeout=90)
    return created["instance"]["id"]


def _client(stack: FullStack, project: str, token: str) -> Any:
    return trove_client.Client(session=ks_session.Session(auth=token_endpoint.Token(f"{stack.url}/v1.0/{project}",
                                                                                     token)))


def _printed(instance: Any) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trove_shell._print_instance(instance)  # what `trove show` prints
    return out.getvalue()


def test_an_owner_sees_the_message_and_an_admin_the_details_of_each_failed_build(stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = stack.token(tenant, "frank")
    too_small = _build(stack, tenant, token, "tiny", flavor="1")
    guest_failed = _build(stack, tenant, token, "db-fake-prepare-fails")
    over_quota = _build(stack, tenant, token, "db-fake-over-quota")

    def fault(instance_id: str, as_admin: bool) -> dict[str, Any]:
        path = (f"/v1.0/admin/mgmt/instances/{instance_id}" if as_admin
                else f"/v1.0/{tenant}/instances/{instance_id}")
        code, body, _ = stack.call("GET", path, stack.admin_token if as_admin else token)
        assert code == 200, body
        return body["instance"]["fault"]

    owner = fault(too_small, as_admin=False)
    assert "Flavor's disk is too small for requested image" in owner["message"] and owner["details"] is None
    assert len(owner["created"]) == 19, "naive ISO, as Trove's"
    prepare = fault(guest_failed, as_admin=True)
    assert "simulated guest fails its prepare" in prepare["message"]
    assert prepare["details"].startswith("Server type: conductor") and "GuestError" in prepare["details"]
    quota = fault(over_quota, as_admin=True)
    assert quota["message"].startswith("Quota exceeded for instances")
    assert quota["details"].startswith("Server type: taskmanager") and "ComputeQuotaExceeded" in quota["details"]
    assert fault(over_quota, as_admin=False)["details"] is None

    def history() -> list[dict[str, Any]]:
        code, body, _ = stack.call("GET", f"/v1.0/admin/mgmt/instances/{guest_failed}/faults", stack.admin_token)
        assert code == 200, body
        return body["faults"]

    # The history is its own projection and may lag the instance view that showed ERROR.
    stack.wait(lambda: bool(history()), "the fault history to record the failed prepare")
    assert [f["operation"] for f in history()] == ["create"]
    assert history()[0]["details"] == prepare["details"]

    users_view = _client(stack, tenant, token).instances.get(too_small)
    assert "Flavor's disk is too small" in users_view.fault["message"]
    shown = _printed(users_view)
    assert "fault_date" in shown and "Flavor's disk is too small" in shown and "fault_details" not in shown
    admins_view = _client(stack, "admin", stack.admin_token).instances.get(guest_failed)
    assert "fault_details" in _printed(admins_view) and "GuestError" in admins_view.fault["details"]


def test_a_status_reset_resolves_the_shown_fault_and_a_delete_soft_deletes_the_history(stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = stack.token(tenant, "grace")
    instance_id = _build(stack, tenant, token, "tiny", flavor="1")
    code, _, _ = stack.call("POST", f"/v1.0/admin/instances/{instance_id}/action", stack.admin_token,
                            {"reset_status": {}})
    assert code == 202
    stack.wait(lambda: "fault" not in stack.show(tenant, token, instance_id), "the reset to resolve the fault")

    def history() -> list[dict[str, Any]]:
        code, body, _ = stack.call("GET", f"/v1.0/{tenant}/instances/{instance_id}/faults", token)
        assert code == 200, body
        return body["faults"]

    # The fault history is its own projection, so it may catch up with the reset after the instance view does.
    stack.wait(lambda: [(f["operation"], f["resolved"]) for f in history()] == [("create", True)],
               "the fault history to mark the create's fault resolved")
    assert history()[0]["details"] is None, "owners never see details"

    code, _, _ = stack.call("DELETE", f"/v1.0/{tenant}/instances/{instance_id}", token)
    assert code == 202
    stack.wait_status(tenant, token, instance_id, 404)

    def soft_deleted() -> bool:
        code, body, _ = stack.call("GET", f"/v1.0/admin/mgmt/instances/{instance_id}/faults", stack.admin_token)
        return code == 200 and bool(body["faults"]) and all(f["deleted"] for f in body["faults"])

    stack.wait(soft_deleted, "the deleted instance's faults to be soft-deleted")
    code, _, _ = stack.call("GET", f"/v1.0/{tenant}/instances/{instance_id}/faults", token)
    assert code == 404, "to its owner a deleted instance is gone, faults and all"
