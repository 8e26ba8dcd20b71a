"""Admin instance views: every tenant, deleted ones on request, with the management fields."""

from __future__ import annotations

from tests.rest.harness import Api

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
