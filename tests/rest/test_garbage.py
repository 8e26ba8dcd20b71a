"""Client mistakes are 4xx with a Trove fault body and store nothing, whatever the bytes; never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rest.harness import TENANT, Api

RAW_BODIES = [
    b"", b"   ", b"{", b"}", b"null", b"[]", b"42", b'"instance"', b"true", b"\xff\xfe\x00", b'{"instance":',
    b"[" * 50_000 + b"]" * 50_000, b'{"instance": NaN}', b'{"instance": Infinity}', b"{'single': 'quotes'}",
    b'{"a": 1}{"b": 2}', b"\xef\xbb\xbf{}", b"{}", b'{"x": "' + b"y" * 70_000 + b'"}',
    b'{"instance": {"name": "' + b"9" * 5000 + b'"}}', b'{"instance": ' + b"1" * 5000 + b"}",
]

JSON_BODIES = [
    {"instance": None}, {"instance": []}, {"instance": "x"}, {"instance": 1}, {"instance": {}},
    {"instance": {"name": None, "flavorRef": None, "volume": None}},
    {"instance": {"name": 5, "flavorRef": [], "volume": "3"}},
    {"instance": {"name": "", "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}}},
    {"instance": {"name": "   ", "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}}},
    {"instance": {"name": "a" * 256, "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}}},
    {"instance": {"name": "nul\x00", "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}}},
    {"instance": {"name": "x\ud800y", "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}}},
    {"resize": {"volume": {"size": -1}}}, {"resize": {"volume": {"size": 0}}}, {"resize": {"volume": {"size": 2.5}}},
    {"resize": {"volume": {"size": "abc"}}}, {"resize": {"volume": {"size": True}}},
    {"resize": {"volume": {"size": 10**30}}}, {"resize": {"volume": {"size": "1e3"}}},
    {"resize": {"volume": {"size": "٣"}}}, {"resize": {"volume": {}}}, {"resize": {"volume": []}},
    {"resize": {"flavorRef": True}}, {"resize": {"flavorRef": 2.0}}, {"resize": {"flavorRef": ""}},
    {"resize": {"flavorRef": {"id": 2}}}, {"resize": {"flavorRef": "2", "volume": {"size": 3}}}, {"resize": {}},
    {"resize": None}, {"restart": None}, {"restart": []}, {"restart": {}, "resize": {}}, {"frobnicate": {}},
    {"reset_password": {}}, {"promote_to_replica_source": {}},
    {"instance": {"name": "ok", "configuration": "some-group"}}, {"instance": {"replica_of": "x"}},
    {"instance": {"nmae": "typo"}}, {"instance": {"name": ["list"]}},
    {"instance": {"access": {"is_public": True}}},
    {"quotas": None}, {"quotas": []}, {"quotas": {"instances": "many"}}, {"quotas": {"instances": -5}},
    {"quotas": {"instances": 10**40}}, {"quotas": {"bogus": 1}}, {"quotas": {"instances": True}},
]

CREATE_VARIANTS = [
    {"flavorRef": "2", "volume": {"size": -1}}, {"flavorRef": "2", "volume": {"size": "3.5"}},
    {"flavorRef": "2", "volume": {"size": 2.5}}, {"flavorRef": "2", "volume": {"size": 10**30}},
    {"flavorRef": "2", "volume": {"size": 0}}, {"flavorRef": -1, "volume": {"size": 1}},
    {"flavorRef": "x" * 2000, "volume": {"size": 1}}, {"flavorRef": "../../etc/passwd", "volume": {"size": 1}},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": ""}},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql", "version": None}},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": "mysql"},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "databases": "db1"},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "users": [{"name": "u"}]},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "users": [{"password": "p"}]},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "databases": [{}] * 101},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "restorePoint": {"backupRef": "b"}},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "restorePoint": {"backupRef": 5}},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "restorePoint": "b"},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "restorePoint": {}},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "replica_count": 3},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "availability_zone": 7},
    {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "mysql"}, "nics": [{"net-id": 5}]},
]


@pytest.fixture(scope="module")
def module_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    harness = Api(Path(tmp_path_factory.mktemp("garbage")))
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def routes(module_api: Api) -> list[tuple[str, str, str]]:
    instance = module_api.create("target", size=2)
    module_api.make_active(instance["id"])
    base = f"/v1.0/{TENANT}/instances"
    return [("POST", base, "user"), ("PUT", f"{base}/{instance['id']}", "user"),
            ("PATCH", f"{base}/{instance['id']}", "user"), ("POST", f"{base}/{instance['id']}/action", "user"),
            ("PUT", f"/v1.0/{TENANT}/mgmt/quotas/{TENANT}", "admin")]


def _assert_refused(api: Api, method: str, path: str, token: str, **kwargs: object) -> None:
    before = api.stored_events()
    result = api.request(method, path, token=token, **kwargs)
    assert 400 <= result.status_code < 500, (method, path, kwargs.get("body", kwargs.get("json")), result.text)
    assert api.stored_events() == before, (method, path, result.text)


@pytest.mark.parametrize("raw", RAW_BODIES, ids=lambda raw: repr(raw[:24]))
def test_raw_garbage_to_every_body_route(module_api: Api, routes: list, raw: bytes) -> None:
    for method, path, token in routes:
        _assert_refused(module_api, method, path, token, body=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("body", JSON_BODIES, ids=lambda body: json.dumps(body, default=str)[:40])
def test_wrong_shapes_and_types_to_every_body_route(module_api: Api, routes: list, body: dict) -> None:
    for method, path, token in routes:
        _assert_refused(module_api, method, path, token, body=json.dumps(body).encode(),
                        headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("variant", CREATE_VARIANTS, ids=lambda v: json.dumps(v, default=str)[:50])
def test_create_refuses_bad_values(module_api: Api, variant: dict) -> None:
    _assert_refused(module_api, "POST", f"/v1.0/{TENANT}/instances", "user",
                    json={"instance": {"name": "bad", **variant}})


def test_non_json_media_types_are_415(module_api: Api, routes: list) -> None:
    for method, path, token in routes:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
            before = module_api.stored_events()
            result = module_api.request(method, path, token=token, body=b'{"instance": {}}',
                                        headers={"Content-Type": content_type})
            assert result.status_code == 415 and "badMediaType" in result.json
            assert module_api.stored_events() == before


def test_a_body_without_content_type_is_read_as_json(module_api: Api) -> None:
    result = module_api.request("POST", f"/v1.0/{TENANT}/instances", body=json.dumps(
        {"instance": {"name": "untyped", "flavorRef": 2, "volume": {"size": 1}, "datastore": {"type": "mysql"}}}))
    assert result.status_code == 200


def test_oversized_bodies_are_413(module_api: Api) -> None:
    result = module_api.request("POST", f"/v1.0/{TENANT}/instances", body=b" " * 70_000,
                                headers={"Content-Type": "application/json"})
    assert result.status_code == 413 and "overLimit" in result.json


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=JSON_VALUES | st.text(max_size=300), flavor=JSON_VALUES, size=JSON_VALUES, datastore=JSON_VALUES,
       extra=st.dictionaries(st.sampled_from(["users", "databases", "nics", "access", "replica_count",
                                              "availability_zone", "configuration", "region_name"]),
                             JSON_VALUES, max_size=3))
def test_fuzzed_creates_never_fail_on_the_server(module_api: Api, name: object, flavor: object, size: object,
                                                 datastore: object, extra: dict) -> None:
    body = {"instance": {"name": name, "flavorRef": flavor, "volume": {"size": size}, "datastore": datastore,
                         **extra}}
    result = module_api.request("POST", f"/v1.0/{TENANT}/instances", json=body)
    assert result.status_code in (200, 400, 404, 413), result.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.dictionaries(st.sampled_from(["restart", "resize", "reset_status", "x"]), JSON_VALUES, max_size=2))
def test_fuzzed_actions_never_fail_on_the_server(module_api: Api, routes: list, action: dict) -> None:
    _method, path, _token = routes[3]
    result = module_api.request("POST", path, json=action)
    assert result.status_code in (202, 400, 403, 404, 413, 422), result.text
