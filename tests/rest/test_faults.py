"""Instance faults through the API (real SQLite stores, projections applied inline): what an owner and an
admin see on show and in the history, how faults resolve, and what deletion does to them."""

from __future__ import annotations

from typing import Any

from domain.context import OperationContext
from domain.statuses import ServiceStatus
from tests.rest.harness import TENANT, Api

ADMIN = "/v1.0/admin-project"
NOVA_FAULT = ("Server not active, status: ERROR, fault message: Flavor's disk is too small for requested image. "
              "Flavor disk is 1073741824 bytes, image is 2147483648 bytes.")
TM = {"request_id": "req-tm", "tenant_id": "system", "server_type": "taskmanager", "server_ip": "192.0.2.20"}


def _fail(api: Api, instance_id: str, message: str, traceback: list[str], task: str = "NONE",
          server_type: str = "taskmanager") -> None:
    context = {**TM, "server_type": server_type}
    api.instances.record(instance_id, lambda i: i.fail(i.operation["context"] | context if i.operation else context,
                                                        message=message, traceback=traceback, task=task))
    api.projector.catch_up()


def _show(api: Api, instance_id: str, token: str = "user") -> dict[str, Any]:
    answer = api.get(f"/v1.0/{TENANT}/instances/{instance_id}", token=token)
    assert answer.status_code == 200, answer.text
    return answer.json["instance"]


def _restart(api: Api, instance_id: str) -> None:
    assert api.post(f"/v1.0/{TENANT}/instances/{instance_id}/action", json={"restart": {}}).status_code == 202
    api.projector.catch_up()


def test_an_owner_sees_why_a_build_failed_and_an_admin_also_sees_the_traceback(api: Api) -> None:
    created = api.create()
    assert "fault" not in created, "a create that was just accepted has no fault"
    _fail(api, created["id"], NOVA_FAULT, ["Traceback (most recent call last):", "ComputeError: disk too small"],
          task="BUILDING_ERROR_SERVER")
    shown = _show(api, created["id"])
    assert shown["status"] == "ERROR"
    assert shown["fault"]["message"] == NOVA_FAULT and shown["fault"]["details"] is None
    assert len(shown["fault"]["created"]) == 19 and "Z" not in shown["fault"]["created"], "naive, as Trove's"
    as_admin = api.get(f"{ADMIN}/mgmt/instances/{created['id']}", token="admin").json["instance"]
    assert as_admin["fault"]["details"].splitlines() == [
        "Server type: taskmanager", "Traceback (most recent call last):", "ComputeError: disk too small"]
    detailed = api.get(f"/v1.0/{TENANT}/instances/detail").json["instances"]
    assert detailed[0]["fault"]["message"] == NOVA_FAULT
    listed = api.get(f"/v1.0/{TENANT}/instances").json["instances"]
    assert "fault" not in listed[0], "the plain list has no fault, as Trove's"


def test_a_long_message_is_cut_at_255_and_no_password_survives(api: Api) -> None:
    created = api.create()
    secret = "s3cr3t-Passw0rd"
    message = (f"ERROR 1396 (HY000): Operation CREATE USER failed for 'app'@'%' IDENTIFIED BY '{secret}' "
               + "x" * 300)
    _fail(api, created["id"], message, [f"mysql -u root --password={secret} -e 'CREATE USER'", "GuestError"],
          server_type="conductor")
    fault = api.get(f"{ADMIN}/mgmt/instances/{created['id']}", token="admin").json["instance"]["fault"]
    assert len(fault["message"]) == 255 and fault["message"].endswith("...")
    assert secret not in fault["message"] and secret not in fault["details"]
    assert "IDENTIFIED BY '***'" in fault["message"] and "--password=***" in fault["details"]


def test_history_is_newest_first_paginated_and_resolved_by_a_later_success(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    for attempt in range(3):
        _restart(api, created["id"])
        _fail(api, created["id"], f"restart failed ({attempt})", ["GuestError"], server_type="conductor")
    assert _show(api, created["id"])["fault"]["message"] == "restart failed (2)"
    page = api.get(f"/v1.0/{TENANT}/instances/{created['id']}/faults", params={"limit": 2}).json
    assert [f["message"] for f in page["faults"]] == ["restart failed (2)", "restart failed (1)"]
    assert all(f["details"] is None and f["operation"] == "restart" and not f["resolved"] for f in page["faults"])
    marker = page["faults"][-1]["id"]
    assert page["links"][0]["href"].endswith(f"/instances/{created['id']}/faults?limit=2&marker={marker}")
    rest = api.get(f"/v1.0/{TENANT}/instances/{created['id']}/faults", params={"limit": 2, "marker": marker}).json
    assert [f["message"] for f in rest["faults"]] == ["restart failed (0)"] and "links" not in rest

    _restart(api, created["id"])
    tm = OperationContext(request_id="req-ok", tenant_id="system", server_type="taskmanager")
    api.instances.record(created["id"], lambda i: i.succeed(tm.recorded()))
    api.projector.catch_up()
    assert "fault" not in _show(api, created["id"]), "a later successful restart resolves the restart faults"
    history = api.get(f"/v1.0/{TENANT}/instances/{created['id']}/faults").json["faults"]
    assert len(history) == 3 and all(f["resolved"] for f in history), "resolved, and kept"
    admin = api.get(f"{ADMIN}/mgmt/instances/{created['id']}/faults", token="admin").json["faults"]
    assert admin[0]["resolved_by"] == "OperationSucceeded" and admin[0]["details"].startswith("Server type: conductor")
    bad = api.get(f"/v1.0/{TENANT}/instances/{created['id']}/faults", params={"marker": "nope"})
    assert bad.status_code == 400 and "badRequest" in bad.json


def test_a_status_reset_and_a_recovered_datastore_resolve_faults_but_a_failed_build_stays(api: Api) -> None:
    broken = api.create("broken")
    _fail(api, broken["id"], "Timeout waiting for instance to become active.", [], task="BUILDING_ERROR_TIMEOUT_GA")
    tm = OperationContext(request_id="req-tm", tenant_id="system", server_type="taskmanager")
    api.instances.change_service_status(tm, broken["id"], ServiceStatus.HEALTHY)  # the guest came up late
    api.projector.catch_up()
    assert _show(api, broken["id"])["fault"]["message"].startswith("Timeout"), "a failed build stays failed"
    assert api.post(f"{ADMIN}/instances/{broken['id']}/action", token="admin",
                    json={"reset_status": {}}).status_code == 202
    api.projector.catch_up()
    assert "fault" not in _show(api, broken["id"]), "a status reset resolves it"

    crashed = api.create("crashed")
    api.make_active(crashed["id"])
    _restart(api, crashed["id"])
    api.instances.change_service_status(tm, crashed["id"], ServiceStatus.SHUTDOWN)
    _fail(api, crashed["id"], "The guest could not restart the datastore.", ["GuestError"], server_type="conductor")
    assert _show(api, crashed["id"])["fault"]["message"].startswith("The guest could not restart")
    api.instances.change_service_status(tm, crashed["id"], ServiceStatus.HEALTHY)
    api.projector.catch_up()
    assert "fault" not in _show(api, crashed["id"]), "the datastore recovered: the restart fault is resolved"


def test_deleting_an_instance_soft_deletes_its_faults_which_admins_still_see(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    _restart(api, created["id"])
    _fail(api, created["id"], "restart failed", [], server_type="conductor")
    other = api.token("t2")
    assert api.get(f"/v1.0/t2/instances/{created['id']}/faults", token=other).status_code == 404
    assert api.get(f"/v1.0/{TENANT}/instances/{created['id']}/faults", token=other).status_code == 403
    assert api.delete(f"/v1.0/{TENANT}/instances/{created['id']}").status_code == 202
    tm = OperationContext(request_id="req-tm", tenant_id="system", server_type="taskmanager")
    api.instances.record(created["id"], lambda i: i.record_deleted(tm.recorded()))
    api.instances.record(created["id"], lambda i: i.succeed(tm.recorded()))
    api.projector.catch_up()
    assert api.get(f"/v1.0/{TENANT}/instances/{created['id']}/faults").status_code == 404
    [fault] = api.get(f"{ADMIN}/mgmt/instances/{created['id']}/faults", token="admin").json["faults"]
    assert fault["deleted"] is True and fault["deleted_at"] and fault["message"] == "restart failed"


def test_a_full_volume_the_guest_reports_is_a_fault_until_the_guest_clears_it(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    message = ("The volume is full: the data takes 2.01 GB of its 2 GB. The datastore refuses writes until the "
               "volume is resized.")
    conductor = {**TM, "server_type": "conductor"}
    assert api.instances.record(created["id"], lambda i: i.report_guest_fault(conductor, "volume_full", message))
    assert not api.instances.record(created["id"], lambda i: i.report_guest_fault(conductor, "volume_full", message)), \
        "a condition already recorded is not recorded again"
    api.projector.catch_up()
    shown = _show(api, created["id"])
    assert shown["status"] == "ACTIVE" and shown["fault"]["message"] == message
    history = api.get(f"{ADMIN}/mgmt/instances/{created['id']}/faults", token="admin").json["faults"]
    assert [(f["operation"], f["resolved"], f["server_type"]) for f in history] == [("volume_full", False, "guest")]

    api.instances.record(created["id"], lambda i: i.clear_guest_fault(conductor, "volume_full"))
    api.projector.catch_up()
    assert "fault" not in _show(api, created["id"])
    history = api.get(f"/v1.0/{TENANT}/instances/{created['id']}/faults").json["faults"]
    assert [(f["operation"], f["resolved"]) for f in history] == [("volume_full", True)]
