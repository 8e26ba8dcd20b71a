"""Read-your-writes: for a show, the view when it holds the API's last write, else a bounded wait, then the
aggregate; for a list, a bounded wait for the view to hold the tenant's marked writes."""

from __future__ import annotations

import time

import pytest

from adapters.rest.reads import InstanceReads
from adapters.sql.engine import create_sql_engine
from adapters.sql.write_marks import WriteMarks
from domain.context import OperationContext
from domain.errors import NotFound
from projections.instance_view import InstanceViewQueries, write_marks
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

    reads = InstanceReads(api.instances, api.views, 5, api.marks, sleep=sleep)
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

    reads = InstanceReads(api.instances, api.views, 0.1, api.marks, clock=lambda: now[0],
                          sleep=sleep)
    record = reads.show(created["id"], _context(), admin=False)
    assert record.status == "REBOOT"
    assert record.addresses == [{"address": "10.0.0.5", "type": "private"}]
    assert 0.1 <= now[0] < 0.2


def test_strangers_and_deleted_instances_are_not_found(api: Api) -> None:
    created = api.create()
    api.projector.catch_up()
    reads = InstanceReads(api.instances, api.views, 0, api.marks)
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


# Read-your-writes for a list: the API marks each write, a list waits for the view to hold them.

def _list_reads(api: Api, sleep: object, clock: object = None, wait_s: float = 5) -> InstanceReads:
    kwargs = {"clock": clock} if clock else {}
    return InstanceReads(api.instances, api.views, wait_s=wait_s, marks=api.marks, sleep=sleep,
                         **kwargs)


def _names(api: Api, tenant: str = TENANT) -> list[str]:
    return [i["name"] for i in api.get(f"/v1.0/{tenant}/instances").json["instances"]]


def test_a_list_waits_for_the_view_to_hold_the_tenants_marked_writes(api: Api) -> None:
    api.create(name="fresh")  # the API marks it; the view has not seen it
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        api.projector.catch_up()

    _list_reads(api, sleep).settle(TENANT)
    assert len(waits) == 1, "waited once, until the projector caught up"
    assert _names(api) == ["fresh"]

    api.patch(f"/v1.0/{TENANT}/instances/{api.views.page(TENANT, limit=1)[0].id}",
              json={"instance": {"name": "renamed"}})
    _list_reads(api, sleep).settle(TENANT)
    assert len(waits) == 2 and _names(api) == ["renamed"], "a rename is a marked write too"


def test_a_list_whose_view_stays_behind_gives_up_at_the_bound(api: Api) -> None:
    api.create(name="fresh")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    _list_reads(api, sleep, clock=lambda: now[0], wait_s=0.1).settle(TENANT)
    assert 0.1 <= now[0] < 0.2


def test_only_the_tenants_own_fresh_writes_make_a_list_wait(api: Api) -> None:
    api.create(name="elsewhere", tenant="t2", token=api.token("t2", "u2"))
    marks = api.marks
    assert not marks.beside_view, "on SQLite the API keeps its marks in a file apart from the view"
    assert not marks.view_is_behind(TENANT)
    assert marks.view_is_behind("t2")
    marks_file = create_sql_engine(api.settings.write_marks_url)
    later = WriteMarks(marks_file, clock=lambda: time.time() + 3600, view=api.engine)
    assert not later.view_is_behind("t2"), "a mark older than the horizon is not waited for"
    marks_file.dispose()
    api.projector.catch_up()
    assert not marks.view_is_behind("t2")


def test_marks_beside_the_view_read_row_and_mark_together(api: Api) -> None:
    created = api.create(name="joined")
    beside = WriteMarks(api.engine)  # PostgreSQL's arrangement, here on the view's SQLite file
    assert beside.beside_view
    beside.mark(TENANT, created["id"], 5)
    assert beside.view_is_behind(TENANT)
    api.projector.catch_up()
    views = InstanceViewQueries(api.engine, api.settings.agent_heartbeat_expiry_s, marks=write_marks)
    row, marked = views.get_marked(created["id"])
    assert marked == 5 and row is not None and row.version < 5, "the join reads the mark with the row"
    reads = InstanceReads(api.instances, views, 0, beside)
    assert reads.show(created["id"], _context(), admin=False).version >= 1, "behind the mark: from the aggregate"


def test_a_write_that_cannot_be_marked_still_succeeds_once(api: Api) -> None:
    with api.engine.begin() as connection:
        write_marks.drop(connection)
    before = api.stored_events()
    result = api.post(f"/v1.0/{TENANT}/instances", json={"instance": {
        "name": "kept", "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}}})
    assert result.status_code == 200, "the create is stored: failing it now would make the client retry"
    assert api.stored_events() > before


def test_on_sqlite_the_marks_file_is_attached_so_a_show_reads_row_and_mark_at_once(api: Api) -> None:
    created = api.create(name="attached")
    assert api.views.reads_marks and not api.marks.beside_view, "a file of their own, read with the view"
    api.projector.catch_up()
    api.marks.mark(TENANT, created["id"], 9)
    row, marked = api.views.get_marked(created["id"])
    assert marked == 9 and row is not None and row.version < 9
    assert api.get(f"/v1.0/{TENANT}/instances/{created['id']}").status_code == 200, "behind: from the aggregate"
