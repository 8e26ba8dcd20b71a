"""Admin instance views: every tenant, deleted ones on request, with the management fields."""

from __future__ import annotations

from sqlalchemy.orm import Session

from adapters.billing import billing_engine
from domain.billing import UsageMessage
from projections.billing_ledger import BillingLedger
from tests.rest.harness import TENANT, Api
from tests.unit.test_billing import BASE, T0, _wire

ADMIN = "/v1.0/admin-project"


def test_mgmt_list_spans_tenants_and_filters_by_project(api: Api) -> None:
    first = api.create("one")
    second = api.create("two", tenant="t2", token=api.token("t2"))
    api.projector.catch_up()
    listed = api.get(f"{ADMIN}/mgmt/instances", token="admin").json["instances"]
    assert [i["id"] for i in listed] == [first["id"], second["id"]]
    assert {i["tenant_id"] for i in listed} == {"t1", "t2"}
    only = api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"project_id": "t2"}).json["instances"]
    assert [i["id"] for i in only] == [second["id"]]
    paged = api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"limit": 1}).json
    assert paged["links"][0]["href"].endswith(f"/mgmt/instances?limit=1&marker={first['id']}")
    assert api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"deleted": "maybe"}).status_code == 400


def test_mgmt_show_has_server_and_status_details(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    shown = api.get(f"{ADMIN}/mgmt/instances/{created['id']}", token="admin").json["instance"]
    assert shown["tenant_id"] == "t1" and shown["deleted"] is False and shown["deleted_at"] is None
    assert shown["server"]["id"] == "server-1" and shown["server"]["addresses"][0]["address"] == "10.0.0.5"
    assert shown["service_status"] == "HEALTHY" and shown["task_description"] == "No tasks for the instance."
    assert shown["volume"] == {"size": 2, "id": "volume-1"}
    assert shown["server_id"] == "server-1"


def test_mgmt_show_of_a_fresh_instance_reads_the_aggregate(api: Api) -> None:
    created = api.create()
    shown = api.get(f"{ADMIN}/mgmt/instances/{created['id']}", token="admin").json["instance"]
    assert shown["status"] == "BUILD" and shown["server"] is None


def test_mgmt_usage_reports_the_billing_ledger_to_admins_only(api: Api) -> None:
    engine = billing_engine(api.settings)
    gone = {**BASE, "deleted_at": "2026-12-02T10:20:00Z"}
    with Session(engine) as session, session.begin():
        for value in (_wire("trove.instance.create", BASE, T0, "m-1"), _wire("trove.instance.delete", gone, T0, "m-2")):
            BillingLedger().apply(UsageMessage.from_wire(value), session)
    window = {"start": "2026-12-02T10:00:00Z", "end": "2026-12-02T11:00:00"}
    usage = api.get(f"{ADMIN}/mgmt/usage", token="admin", params={**window, "project_id": "t1"}).json["usage"]
    assert usage["project_id"] == "t1" and usage["start"] == "2026-12-02T10:00:00+00:00"
    assert usage["instances"] == [{"tenant_id": "t1", "instance_id": "i-1", "datastore": "postgresql",
                                   "flavor_id": "2", "instance_type": "m1.small", "instance_seconds": 1200.0,
                                   "volume_gb_seconds": 2400.0}]
    assert usage["totals"] == {"instance_seconds": 1200.0, "volume_gb_seconds": 2400.0}
    assert api.get(f"{ADMIN}/mgmt/usage", token="admin", params={**window, "project_id": "t2"}).json["usage"][
        "instances"] == []
    assert api.get(f"/v1.0/{TENANT}/mgmt/usage", params=window).status_code == 403
    for bad in ({"start": window["start"]}, {**window, "end": "yesterday"}, {**window, "end": window["start"]},
                {**window, "project_id": "not a project"}, {**window, "start": "0001-01-01T00:00:00+01:00"},
                {**window, "end": "9999-12-31T23:59:59-01:00"}):
        answer = api.get(f"{ADMIN}/mgmt/usage", token="admin", params=bad)
        assert answer.status_code == 400 and "badRequest" in answer.json, (bad, answer.json)
