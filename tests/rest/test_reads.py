"""Read-your-writes for a show: the view when it is current, a bounded wait, then the aggregate."""

from __future__ import annotations

import pytest

from adapters.rest.reads import InstanceReads
from domain.context import OperationContext
from domain.errors import NotFound
from tests.rest.harness import TENANT, Api


def _context(tenant: str = TENANT) -> OperationContext:
    return OperationContext(request_id="req-read", tenant_id=tenant)


def test_a_stale_row_is_waited_for_when_the_projection_catches_up(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    api.post(f"/v1.0/{TENANT}/instances/{created['id']}/action", json={"restart": {}})
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        api.projector.catch_up()

    reads = InstanceReads(api.instances, api.views, wait_s=5, sleep=sleep)
    record = reads.show(created["id"], _context(), admin=False)
    assert record.status == "REBOOT" and len(waits) == 1
    assert record.addresses  # from the view


def test_a_view_that_stays_behind_is_bypassed_keeping_what_only_it_knows(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    api.post(f"/v1.0/{TENANT}/instances/{created['id']}/action", json={"restart": {}})
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    reads = InstanceReads(api.instances, api.views, wait_s=0.1, clock=lambda: now[0], sleep=sleep)
    record = reads.show(created["id"], _context(), admin=False)
    assert record.status == "REBOOT"
    assert record.addresses == [{"address": "10.0.0.5", "type": "private"}]
    assert 0.1 <= now[0] < 0.2


def test_strangers_and_deleted_instances_are_not_found(api: Api) -> None:
    created = api.create()
    api.projector.catch_up()
    reads = InstanceReads(api.instances, api.views, wait_s=0)
    with pytest.raises(NotFound):
        reads.show(created["id"], _context("t2"), admin=False)
    assert reads.show(created["id"], _context("t2"), admin=True).tenant_id == TENANT
    api.make_active(created["id"])
    api.delete(f"/v1.0/{TENANT}/instances/{created['id']}")
    tm = OperationContext(request_id="req-tm", tenant_id="system", server_type="taskmanager")
    api.instances.record(created["id"], lambda i: (i.record_deleted(tm.recorded()), i.succeed(tm.recorded())))
    with pytest.raises(NotFound):
        reads.show(created["id"], _context(), admin=False)  # the view has not caught up: the store says gone
    api.projector.catch_up()
    with pytest.raises(NotFound):
        reads.show(created["id"], _context(), admin=False)
    # Admins still find it among the deleted.
    listed = api.get("/v1.0/admin-project/mgmt/instances", token="admin", params={"deleted": "true"}).json
    assert [i["deleted"] for i in listed["instances"]] == [True]
    assert api.get("/v1.0/admin-project/mgmt/instances", token="admin").json["instances"] == []
    shown = api.get(f"/v1.0/admin-project/mgmt/instances/{created['id']}", token="admin").json["instance"]
    assert shown["deleted"] is True and shown["deleted_at"]
