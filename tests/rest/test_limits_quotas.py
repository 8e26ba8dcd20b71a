"""Absolute limits for tenants, and the admin quota API."""

from __future__ import annotations

from tests.rest.harness import TENANT, Api

ADMIN = "/v1.0/admin-project"


def test_limits_show_the_deployment_defaults_then_overrides(api: Api) -> None:
    limits = api.get(f"/v1.0/{TENANT}/limits").json["limits"]
    assert limits == [{"verb": "ABSOLUTE", "max_instances": 5, "max_volumes": 20, "max_backups": 50}]
    assert api.put(f"{ADMIN}/mgmt/quotas/{TENANT}", token="admin",
                   json={"quotas": {"instances": 7, "volumes": None}}).json == {"quotas": {"instances": 7}}
    assert api.get(f"/v1.0/{TENANT}/limits").json["limits"][0]["max_instances"] == 7


def test_quota_show_has_usage_and_reservations(api: Api) -> None:
    api.create(size=3)
    shown = {q["resource"]: q for q in api.get(f"{ADMIN}/mgmt/quotas/{TENANT}", token="admin").json["quotas"]}
    assert shown["instances"] == {"resource": "instances", "in_use": 0, "reserved": 1, "limit": 5}
    assert shown["volumes"] == {"resource": "volumes", "in_use": 0, "reserved": 3, "limit": 20}
    assert shown["backups"]["limit"] == 50
    # As in Trove, a project may read its own quota.
    own = api.get(f"/v1.0/{TENANT}/mgmt/quotas/{TENANT}").json["quotas"]
    assert {q["resource"] for q in own} == {"instances", "volumes", "backups"}


def test_quota_update_is_validated(api: Api) -> None:
    path = f"{ADMIN}/mgmt/quotas/{TENANT}"
    before = api.stored_events()
    for body in ({"quotas": {"instances": -2}}, {"quotas": {"cores": 4}}, {"quotas": {"instances": "5"}},
                 {"quotas": {"instances": 1.5}}, {"quotas": []}, {"quota": {"instances": 1}}, {"quotas": None}):
        assert api.put(path, token="admin", json=body).status_code == 400, body
    assert api.stored_events() == before
    assert api.put(path, token="admin", json={"quotas": {"backups": None}}).json == {"quotas": {}}
    assert api.stored_events() == before
    assert api.put(f"{ADMIN}/mgmt/quotas/{'x' * 80}", token="admin",
                   json={"quotas": {"instances": 1}}).status_code == 400
    assert api.put(path, token="admin", json={"quotas": {"instances": -1, "volumes": 100, "backups": 0}}).json == {
        "quotas": {"instances": -1, "volumes": 100, "backups": 0}}
