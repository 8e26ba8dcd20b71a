"""Fault bodies for framework-level errors, no leaked tracebacks, versions, and the OpenAPI document."""

from __future__ import annotations

import logging

import pytest

from adapters.rest.app import TENANT as TENANT_PREFIX
from tests.rest.harness import TENANT, Api

METHODS = ("get", "post", "put", "patch", "delete")


def test_unknown_routes_are_item_not_found(api: Api) -> None:
    for path in ("/nope", f"/v1.0/{TENANT}/clusters", "/v2.0/", f"/v1.0/{TENANT}/instances/x/y/z"):
        result = api.get(path)
        assert result.status_code == 404 and result.json["itemNotFound"]["code"] == 404


def test_unsupported_methods_are_bad_method(api: Api) -> None:
    result = api.delete(f"/v1.0/{TENANT}/instances")
    assert result.status_code == 405 and result.json == {
        "badMethod": {"code": 405, "message": "The method is not allowed for this resource."}}
    assert api.post(f"/v1.0/{TENANT}/flavors", json={}).status_code == 405
    assert api.put("/", json={}).status_code == 405


def test_an_unexpected_failure_is_an_instance_fault_without_details(api: Api, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(api.views, "page", broken)
    with caplog.at_level(logging.ERROR, logger="adapters.rest.errors"):
        result = api.get(f"/v1.0/{TENANT}/instances")
    assert result.status_code == 500
    assert result.json == {"instanceFault": {"code": 500, "message": (
        "The server has either erred or is incapable of performing the requested operation.")}}
    assert "hunter2" not in result.text
    request_id = result.headers["X-Openstack-Request-Id"]
    assert any(request_id in record.getMessage() for record in caplog.records), "the log names the request"


def test_request_ids_are_unique(api: Api) -> None:
    ids = {api.get("/").headers["X-Openstack-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


def test_versions_and_healthcheck(api: Api) -> None:
    versions = api.get("/", headers={"Host": "db.example:8779"}).json["versions"]
    assert versions == [{"id": "v1.0", "status": "CURRENT", "updated": "2012-08-01T00:00:00Z",
                         "links": [{"href": "http://db.example:8779/v1.0/", "rel": "self"}]}]
    self_link = versions[0]["links"][0]["href"].removeprefix("http://db.example:8779")
    assert api.get(self_link, token=None).json["version"]["id"] == "v1.0"
    health = api.get("/healthcheck")
    assert health.text == "OK"


def test_links_follow_the_forwarded_host(api: Api) -> None:
    result = api.post(f"/v1.0/{TENANT}/instances", headers={"X-Forwarded-Proto": "https",
                                                            "X-Forwarded-Host": "trove.example"},
                      json={"instance": {"name": "x", "flavorRef": 2, "volume": {"size": 1},
                                         "datastore": {"type": "mysql"}}})
    created = result.json["instance"]
    assert created["links"][0]["href"].startswith(f"https://trove.example/v1.0/{TENANT}/instances/")


def test_forwarded_garbage_never_reaches_a_link(api: Api) -> None:
    result = api.get("/", token=None, headers={"Forwarded": 'host="a b";proto=gopher'})
    href = result.json["versions"][0]["links"][0]["href"]
    assert href.startswith("http://") and " " not in href and "gopher" not in href


def test_the_openapi_document_covers_every_route_and_method(api: Api) -> None:
    document = api.get("/v1.0/openapi.json", token=None).json
    assert document["openapi"] == "3.1.0"
    routes = {path: resource for path, resource in _routes(api)}
    assert set(document["paths"]) == set(routes)
    for path, resource in routes.items():
        implemented = {m for m in METHODS if hasattr(resource, f"on_{m}")}
        assert set(resource.operations) == implemented, path
        assert set(document["paths"][path]) - {"parameters"} == implemented, path
        for method in implemented:
            operation = document["paths"][path][method]
            assert operation["summary"] and operation["responses"]
            if path.startswith(TENANT_PREFIX):
                assert operation["security"] == [{"token": []}]
            if method in ("post", "put", "patch"):
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.split("/")[-1] in document["components"]["schemas"]
    create = document["components"]["schemas"]["CreateInstance"]
    assert set(create["required"]) == {"name", "flavorRef", "volume"}
    assert create["properties"]["name"]["maxLength"] == 255
    show = document["paths"][f"{TENANT_PREFIX}/instances/{{instance}}"]["get"]
    assert show["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("InstanceEnvelope")


def _routes(api: Api) -> list[tuple[str, object]]:
    found = []

    def walk(nodes: list) -> None:
        for node in nodes:
            if node.resource is not None:
                found.append((node.uri_template, node.resource))
            walk(node.children)

    walk(api.app._router._roots)
    return found
