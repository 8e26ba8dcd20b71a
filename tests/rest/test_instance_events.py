"""``GET mgmt/instances/{id}/events``: an instance's history from the event store, paginated, admins only."""

from __future__ import annotations

from tests.rest.harness import TENANT, Api

ADMIN = "/v1.0/admin-project"


def test_an_admin_pages_through_every_event_of_an_instance_and_its_operations(api: Api) -> None:
    created = api.create("source")
    api.make_active(created["id"])
    assert api.patch(f"/v1.0/{TENANT}/instances/{created['id']}",
                     json={"instance": {"name": "renamed"}}).status_code == 202
    backup = api.post(f"/v1.0/{TENANT}/backups", json={"backup": {"name": "nightly", "instance": created["id"]}})
    assert backup.status_code == 202

    whole = api.get(f"{ADMIN}/mgmt/instances/{created['id']}/events?limit=100", token="admin").json
    events = whole["events"]
    assert "links" not in whole
    own = [e for e in events if e["aggregate_type"] == "Instance"]
    assert [e["version"] for e in own] == list(range(1, len(own) + 1)), "the instance's own events, in order"
    assert [e["type"] for e in own][:1] == ["CreateRequested"] and "Renamed" in [e["type"] for e in own]
    renamed = next(e for e in own if e["type"] == "Renamed")
    assert renamed["changes"]["name"] == "renamed" and renamed["tenant_id"] == TENANT and renamed["request_id"]
    assert {"Backup", "Quota"} <= {e["aggregate_type"] for e in events}, "its backup and quota reservations too"
    assert next(e for e in events if e["type"] == "BackupCreated")["aggregate_id"] == backup.json["backup"]["id"]
    assert all("password" not in str(e).lower() for e in events)

    pages, marker = [], None
    while True:
        query = f"limit=3&marker={marker}" if marker else "limit=3"
        page = api.get(f"{ADMIN}/mgmt/instances/{created['id']}/events?{query}", token="admin").json
        pages.extend(page["events"])
        if "links" not in page:
            break
        marker = page["events"][-1]["event_id"]
        assert f"marker={marker}" in page["links"][0]["href"]
    assert pages == events


def test_the_events_route_is_for_admins_and_refuses_unknown_instances_and_markers(api: Api) -> None:
    created = api.create("source")
    path = f"mgmt/instances/{created['id']}/events"
    assert api.get(f"/v1.0/{TENANT}/{path}").status_code == 403
    assert api.get(f"{ADMIN}/mgmt/instances/00000000-0000-0000-0000-000000000000/events",
                   token="admin").status_code == 404
    refused = api.get(f"{ADMIN}/{path}?marker=not-an-event", token="admin")
    assert refused.status_code == 400 and "marker" in refused.json["badRequest"]["message"]
