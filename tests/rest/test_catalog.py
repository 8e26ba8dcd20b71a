"""Flavors and datastores, as Trove lists and shows them."""

from __future__ import annotations

from projections.catalog_view import CatalogQueries
from tests.rest.harness import TENANT, Api

BASE = f"/v1.0/{TENANT}"


def test_flavors_list_and_show(api: Api) -> None:
    flavors = api.get(f"{BASE}/flavors").json["flavors"]
    small = next(f for f in flavors if f["str_id"] == "2")
    assert small == {"id": 2, "str_id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20, "ephemeral": 0,
                     "links": [{"href": f"http://falconframework.org{BASE}/flavors/2", "rel": "self"},
                               {"href": "http://falconframework.org/flavors/2", "rel": "bookmark"}]}
    assert api.get(f"{BASE}/flavors/2").json["flavor"] == small
    missing = api.get(f"{BASE}/flavors/999")
    assert missing.status_code == 404 and "Flavor 999" in missing.json["itemNotFound"]["message"]


def test_datastores_list_with_versions_and_default(api: Api) -> None:
    stores = {d["name"]: d for d in api.get(f"{BASE}/datastores").json["datastores"]}
    assert set(stores) == {"mysql", "mariadb", "postgresql"}
    mysql = stores["mysql"]
    versions = {v["name"]: v for v in mysql["versions"]}
    assert set(versions) == {"8.0", "5.7"}
    assert mysql["default_version"] == versions["8.0"]["id"]
    assert versions["8.0"]["active"] is True and versions["8.0"]["packages"] == "mysql-server-8.0"
    assert "datastore" not in versions["8.0"]


def test_datastore_show_by_name_or_id(api: Api) -> None:
    by_name = api.get(f"{BASE}/datastores/postgresql").json["datastore"]
    assert api.get(f"{BASE}/datastores/{by_name['id']}").json["datastore"] == by_name
    assert api.get(f"{BASE}/datastores/oracle").status_code == 404


def test_versions_list_show_and_show_by_id(api: Api) -> None:
    versions = api.get(f"{BASE}/datastores/mysql/versions").json["versions"]
    store_id = api.get(f"{BASE}/datastores/mysql").json["datastore"]["id"]
    assert {v["datastore"] for v in versions} == {store_id}
    five_seven = next(v for v in versions if v["name"] == "5.7")
    assert api.get(f"{BASE}/datastores/mysql/versions/5.7").json["version"] == five_seven
    assert api.get(f"{BASE}/datastores/{store_id}/versions/{five_seven['id']}").json["version"] == five_seven
    assert api.get(f"{BASE}/datastores/versions/{five_seven['id']}").json["version"] == five_seven
    assert five_seven["links"][0]["href"].endswith(f"/datastores/versions/{five_seven['id']}")
    assert api.get(f"{BASE}/datastores/mysql/versions/4.0").status_code == 404
    assert api.get(f"{BASE}/datastores/oracle/versions").status_code == 404
    assert api.get(f"{BASE}/datastores/oracle/versions/1").status_code == 404
    assert api.get(f"{BASE}/datastores/versions/not-an-id").status_code == 404


def test_the_catalog_view_is_what_is_listed(api: Api) -> None:
    assert len(api.get(f"{BASE}/flavors").json["flavors"]) == len(CatalogQueries(api.engine).flavors())
