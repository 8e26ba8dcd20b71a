"""Instance routes: create, show, list and detail with pagination, rename, delete and actions."""

from __future__ import annotations

import uuid

from domain.context import OperationContext
from tests.rest.harness import TENANT, Api

BASE = f"/v1.0/{TENANT}/instances"


def test_create_answers_200_with_the_detail_view_in_build(api: Api) -> None:
    result = api.post(BASE, json={"instance": {"name": "orders", "flavorRef": "2", "volume": {"size": "3"},
                                               "datastore": {"type": "mysql", "version": "5.7"}}})
    assert result.status_code == 200
    instance = result.json["instance"]
    assert instance["status"] == "BUILD" and instance["operating_status"] == ""
    assert instance["name"] == "orders" and instance["volume"] == {"size": 3}
    assert instance["datastore"] == {"type": "mysql", "version": "5.7", "version_number": "5.7"}
    assert instance["flavor"]["id"] == "2"
    assert instance["region"] == "RegionOne"
    host = "http://falconframework.org"
    assert instance["links"] == [
        {"href": f"{host}/v1.0/{TENANT}/instances/{instance['id']}", "rel": "self"},
        {"href": f"{host}/instances/{instance['id']}", "rel": "bookmark"}]
    assert instance["flavor"]["links"][1] == {"href": f"{host}/flavors/2", "rel": "bookmark"}
    assert "ip" not in instance and "tenant_id" not in instance
    assert len(instance["created"]) == 19 and instance["created"] == instance["updated"]


def test_flavor_ref_may_be_an_int_or_a_url_and_the_datastore_version_defaults(api: Api) -> None:
    first = api.post(BASE, json={"instance": {"name": "a", "flavorRef": 3, "volume": {"size": 1},
                                              "datastore": {"type": "postgresql"}}})
    second = api.post(BASE, json={"instance": {"name": "b", "flavorRef": "http://h:8779/v1.0/t1/flavors/4",
                                               "volume": {"size": 1}, "datastore": {"type": "mysql"}}})
    assert first.json["instance"]["flavor"]["id"] == "3"
    assert first.json["instance"]["datastore"]["version"] == "15"
    assert second.json["instance"]["flavor"]["id"] == "4"


def test_a_show_right_after_create_never_404s(api: Api) -> None:
    created = api.create("fresh")
    shown = api.get(f"{BASE}/{created['id']}")  # the projection has not run
    assert shown.status_code == 200
    assert shown.json["instance"]["id"] == created["id"] and shown.json["instance"]["status"] == "BUILD"


def test_a_show_after_a_rename_sees_the_new_name_before_the_view_does(api: Api) -> None:
    created = api.create("before")
    api.projector.catch_up()
    assert api.put(f"{BASE}/{created['id']}", json={"instance": {"name": "after"}}).status_code == 202
    assert api.get(f"{BASE}/{created['id']}").json["instance"]["name"] == "after"
    api.projector.catch_up()
    assert api.get(f"{BASE}/{created['id']}").json["instance"]["name"] == "after"


def test_show_of_an_active_instance_has_addresses_and_operating_status(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    instance = api.get(f"{BASE}/{created['id']}").json["instance"]
    assert instance["status"] == "ACTIVE" and instance["operating_status"] == "HEALTHY"
    assert instance["ip"] == ["10.0.0.5"]
    assert instance["addresses"] == [{"address": "10.0.0.5", "type": "private"}]
    assert instance["service_status_updated"] >= instance["created"]


def test_list_pages_with_limit_and_marker_and_a_next_link(api: Api) -> None:
    ids = [api.create(f"db{n}")["id"] for n in range(5)]
    api.projector.catch_up()
    first = api.get(BASE, params={"limit": "2"})
    assert [i["id"] for i in first.json["instances"]] == ids[:2]
    (link,) = first.json["links"]
    assert link["rel"] == "next"
    assert link["href"] == f"http://falconframework.org/v1.0/{TENANT}/instances?limit=2&marker={ids[1]}"
    second = api.get(BASE, params={"limit": "2", "marker": ids[1]})
    assert [i["id"] for i in second.json["instances"]] == ids[2:4]
    last = api.get(BASE, params={"limit": "2", "marker": ids[3]})
    assert [i["id"] for i in last.json["instances"]] == ids[4:]
    assert "links" not in last.json
    everything = api.get(BASE, params={"include_clustered": "False"})
    assert [i["id"] for i in everything.json["instances"]] == ids and "links" not in everything.json
    assert "created" not in everything.json["instances"][0]


def test_detail_list_carries_the_detail_view_and_pages_too(api: Api) -> None:
    ids = [api.create(f"db{n}")["id"] for n in range(3)]
    api.projector.catch_up()
    page = api.get(f"{BASE}/detail", params={"limit": 2})
    assert [i["id"] for i in page.json["instances"]] == ids[:2]
    assert page.json["instances"][0]["created"]
    assert page.json["links"][0]["href"].endswith(f"/instances/detail?limit=2&marker={ids[1]}")


def test_list_shows_only_the_tenants_own_instances(api: Api) -> None:
    mine = api.create("mine")
    api.create("theirs", tenant="t2", token=api.token("t2"))
    api.projector.catch_up()
    assert [i["id"] for i in api.get(BASE).json["instances"]] == [mine["id"]]


def test_bad_paging_parameters_are_400(api: Api) -> None:
    for params in ({"limit": "0"}, {"limit": "x"}, {"limit": "-3"}, {"marker": "nope"}, {"marker": "x" * 500}):
        assert api.get(BASE, params=params).status_code == 400, params
    other = api.create("other", tenant="t2", token=api.token("t2"))
    api.projector.catch_up()
    assert api.get(BASE, params={"marker": other["id"]}).status_code == 400


def test_rename_with_put_or_patch_is_202_and_empty(api: Api) -> None:
    created = api.create("old")
    result = api.patch(f"{BASE}/{created['id']}", json={"instance": {"name": "new"}})
    assert result.status_code == 202 and result.text == ""
    assert result.headers["content-type"] == "application/json"
    api.put(f"{BASE}/{created['id']}", json={"instance": {"name": "newer"}})
    api.projector.catch_up()
    assert api.get(f"{BASE}/{created['id']}").json["instance"]["name"] == "newer"


def test_detaching_a_configuration_that_cannot_exist_changes_nothing(api: Api) -> None:
    created = api.create()
    before = api.stored_events()
    assert api.put(f"{BASE}/{created['id']}", json={"instance": {"configuration": None}}).status_code == 202
    assert api.stored_events() == before
    assert api.put(f"{BASE}/{uuid.uuid4()}", json={"instance": {"configuration": None}}).status_code == 404


def test_delete_is_202_and_the_instance_shows_shutdown_until_gone(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    result = api.delete(f"{BASE}/{created['id']}")
    assert result.status_code == 202 and result.text == ""
    assert api.get(f"{BASE}/{created['id']}").json["instance"]["status"] == "SHUTDOWN"
    assert api.delete(f"{BASE}/{created['id']}").status_code == 422


def test_a_deleted_instance_is_not_found_by_every_route(api: Api) -> None:
    created = api.create()
    api.make_active(created["id"])
    path = f"{BASE}/{created['id']}"
    assert api.delete(path).status_code == 202
    tm = OperationContext(request_id="req-taskmanager", tenant_id="system", server_type="taskmanager")
    api.instances.record(created["id"], lambda i: i.record_deleted(tm.recorded()))
    api.instances.record(created["id"], lambda i: i.succeed(tm.recorded()))
    api.projector.catch_up()
    assert api.get(path).status_code == 404
    assert api.delete(path).status_code == 404
    assert api.patch(path, json={"instance": {"name": "x"}}).status_code == 404
    for action in ({"restart": {}}, {"resize": {"volume": {"size": 9}}}, {"resize": {"flavorRef": "3"}}):
        assert api.post(f"{path}/action", json=action).status_code == 404, action
    assert api.post(f"{path}/action", json={"reset_status": {}}, token="admin").status_code == 404


def test_restart_and_resizes_are_202_and_show_the_transient_status(api: Api) -> None:
    created = api.create(size=2)
    path = f"{BASE}/{created['id']}"
    api.make_active(created["id"])
    assert api.post(f"{path}/action", json={"restart": {}}).status_code == 202
    assert api.get(path).json["instance"]["status"] == "REBOOT"
    assert api.post(f"{path}/action", json={"restart": {}}).status_code == 422  # busy rebooting

    other = api.create("other", size=2)
    api.make_active(other["id"])
    assert api.post(f"{BASE}/{other['id']}/action", json={"resize": {"volume": {"size": "4"}}}).status_code == 202
    shown = api.get(f"{BASE}/{other['id']}").json["instance"]
    assert shown["status"] == "RESIZE"

    third = api.create("third", size=2)
    api.make_active(third["id"])
    assert api.post(f"{BASE}/{third['id']}/action", json={"resize": {"flavorRef": 3}}).status_code == 202
    assert api.get(f"{BASE}/{third['id']}").json["instance"]["status"] == "RESIZE"


def test_actions_on_a_building_instance_are_422(api: Api) -> None:
    created = api.create()
    result = api.post(f"{BASE}/{created['id']}/action", json={"restart": {}})
    assert result.status_code == 422
    assert "not currently available" in result.json["unprocessableEntity"]["message"]


def test_resize_refusals(api: Api) -> None:
    created = api.create(size=4)
    api.make_active(created["id"])
    action = f"{BASE}/{created['id']}/action"
    assert api.post(action, json={"resize": {"volume": {"size": 3}}}).status_code == 400  # smaller
    assert api.post(action, json={"resize": {"flavorRef": "2"}}).status_code == 400  # same flavor
    assert api.post(action, json={"resize": {"flavorRef": "999"}}).status_code == 404
    over = api.post(action, json={"resize": {"volume": {"size": 500}}})
    assert over.status_code == 413 and "overLimit" in over.json


def test_reset_status_is_for_admins(api: Api) -> None:
    created = api.create()
    action = f"{BASE}/{created['id']}/action"
    assert api.post(action, json={"reset_status": {}}).status_code == 403
    assert api.post(f"/v1.0/admin-project/instances/{created['id']}/action", json={"reset_status": {}},
                    token="admin").status_code == 202
    api.projector.catch_up()
    shown = api.get(f"{BASE}/{created['id']}").json["instance"]
    assert shown["status"] == "BUILD" and shown["operating_status"] == ""  # task NONE, Nova still says BUILD


def test_quota_exceeded_is_413_and_stores_nothing(api: Api) -> None:
    for n in range(api.settings.quota_instances):
        api.create(f"db{n}", size=1)
    before = api.stored_events()
    result = api.post(BASE, json={"instance": {"name": "one-too-many", "flavorRef": "2", "volume": {"size": 1},
                                               "datastore": {"type": "mysql"}}})
    assert result.status_code == 413
    assert "instances" in result.json["overLimit"]["message"]
    assert api.stored_events() == before


def test_unknown_references_are_4xx_and_store_nothing(api: Api) -> None:
    before = api.stored_events()
    cases = [
        ({"flavorRef": "999", "datastore": {"type": "mysql"}}, 404, "Flavor 999"),
        ({"flavorRef": "2", "datastore": {"type": "oracle"}}, 404, "oracle"),
        ({"flavorRef": "2", "datastore": {"type": "mysql", "version": "3.23"}}, 404, "3.23"),
        ({"flavorRef": "2"}, 400, "datastore"),
        ({"flavorRef": "2", "datastore": {"type": "mysql"}, "region_name": "Elsewhere"}, 400, "region"),
    ]
    for extra, code, text in cases:
        result = api.post(BASE, json={"instance": {"name": "x", "volume": {"size": 1}, **extra}})
        assert result.status_code == code, (extra, result.text)
        assert text in next(iter(result.json.values()))["message"], result.text
    assert api.stored_events() == before


def test_missing_volume_is_trove_400(api: Api) -> None:
    result = api.post(BASE, json={"instance": {"name": "x", "flavorRef": "2", "datastore": {"type": "mysql"}}})
    assert result.status_code == 400
    assert "Volume size was not specified." in result.json["badRequest"]["message"]


def test_user_passwords_are_accepted_but_never_stored_or_returned(api: Api) -> None:
    created = api.create(users=[{"name": "app", "password": "s3cret-pw", "databases": [{"name": "orders"}]}],
                         databases=[{"name": "orders", "character_set": "utf8"}])
    assert "s3cret-pw" not in str(created)
    stored = api.instances.recorder.select_events(uuid.UUID(created["id"]))
    assert all(b"s3cret-pw" not in event.state for event in stored)


def test_unknown_and_malformed_instance_ids_are_404(api: Api) -> None:
    api.create()
    quota_aggregate = str(api.instances.quota(TENANT).id)
    for bad in (str(uuid.uuid4()), "not-a-uuid", quota_aggregate, "0" * 32):
        assert api.get(f"{BASE}/{bad}").status_code == 404, bad
        assert api.delete(f"{BASE}/{bad}").status_code == 404, bad
        assert api.post(f"{BASE}/{bad}/action", json={"restart": {}}).status_code == 404, bad
        assert api.patch(f"{BASE}/{bad}", json={"instance": {"name": "x"}}).status_code == 404, bad


def test_the_create_records_the_datastore_versions_image_for_its_notification(api: Api) -> None:
    created = api.create("imaged")
    instance = api.instances.get(created["id"], OperationContext(request_id="req-x", tenant_id=TENANT),
                                 admin=True, to_change=False)
    version = api.instances.catalog.datastore_version("mysql", None)  # the default, as the create asked
    assert instance.image_id == version.image_id == "trove-guest-ubuntu-jammy"
