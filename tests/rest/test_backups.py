"""Backup routes through the REST API: Trove's bodies and statuses, read-your-writes, tenancy, refusals."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from domain.context import OperationContext
from projections.backup_view import BackupQueries
from tests.rest.harness import TENANT, Api

CHECKSUM = "sha256:" + "ab" * 32


def _backup(api: Api, instance_id: str, name: str = "nightly", **extra: Any) -> dict[str, Any]:
    result = api.post(f"/v1.0/{TENANT}/backups", json={"backup": {"name": name, "instance": instance_id, **extra}})
    assert result.status_code == 202, result.text
    return result.json["backup"]


def _taken(api: Api, instance_id: str, backup_id: str, size: int = 3 * 1024 ** 2) -> None:
    """What the task manager and the conductor record for a backup the guest stored."""
    instance = api.instances.get(instance_id)
    request_id = instance.operation["request_id"]  # type: ignore[index]
    carried = OperationContext(request_id=request_id, tenant_id=TENANT).carried_by("taskmanager", "192.0.2.20")
    api.instances.record_backup(backup_id, lambda b: b.record_started(carried.recorded(), f"/backups/{backup_id}"))
    def close(i: Any) -> None:
        i.record_backup_taken(carried.recorded(), backup_id, size, CHECKSUM)
        i.succeed(carried.recorded())

    api.instances.record(instance_id, close)
    api.instances.record_backup(backup_id, lambda b: b.complete(carried.recorded(), size, CHECKSUM))
    api.projector.catch_up()


def test_a_backup_is_accepted_new_shows_at_once_and_puts_the_instance_in_backup(api: Api) -> None:
    instance = api.create("source")
    api.make_active(instance["id"])
    backup = _backup(api, instance["id"], description="before the upgrade")
    assert backup["status"] == "NEW" and backup["instance_id"] == instance["id"] and backup["size"] is None
    assert backup["description"] == "before the upgrade" and backup["datastore"]["type"] == "mysql"
    shown = api.get(f"/v1.0/{TENANT}/backups/{backup['id']}")
    assert shown.status_code == 200 and shown.json["backup"]["id"] == backup["id"], "read your writes"
    assert api.get(f"/v1.0/{TENANT}/instances/{instance['id']}").json["instance"]["status"] == "BACKUP"
    restart = api.post(f"/v1.0/{TENANT}/instances/{instance['id']}/action", json={"restart": {}})
    assert restart.status_code == 422 and "unprocessableEntity" in restart.json
    again = api.post(f"/v1.0/{TENANT}/backups", json={"backup": {"name": "second", "instance": instance["id"]}})
    assert again.status_code == 422, "one backup of an instance at a time"


def test_a_completed_backup_is_listed_with_its_size_and_can_be_deleted(api: Api) -> None:
    instance = api.create("source")
    api.make_active(instance["id"])
    backup = _backup(api, instance["id"])
    early = api.delete(f"/v1.0/{TENANT}/backups/{backup['id']}")
    assert early.status_code == 422 and "NEW" in early.json["unprocessableEntity"]["message"]
    _taken(api, instance["id"], backup["id"])
    listed = api.get(f"/v1.0/{TENANT}/backups").json["backups"]
    assert [(b["id"], b["status"], b["size"]) for b in listed] == [(backup["id"], "COMPLETED", 0.00293)]
    assert api.get(f"/v1.0/{TENANT}/backups?instance_id={instance['id']}").json["backups"] == listed
    assert api.get(f"/v1.0/{TENANT}/instances/{instance['id']}/backups").json["backups"] == listed
    assert api.get(f"/v1.0/{TENANT}/instances/{instance['id']}").json["instance"]["status"] == "ACTIVE"
    assert api.delete(f"/v1.0/{TENANT}/backups/{backup['id']}").status_code == 202
    assert api.delete(f"/v1.0/{TENANT}/backups/{backup['id']}").status_code == 202, "asking twice is harmless"


def test_a_running_backups_progress_moves_its_updated_time_in_the_view(api: Api) -> None:
    instance = api.create("source")
    api.make_active(instance["id"])
    backup = _backup(api, instance["id"])
    request_id = api.instances.get(instance["id"]).operation["request_id"]  # type: ignore[index]
    carried = OperationContext(request_id=request_id, tenant_id=TENANT).carried_by("taskmanager", "192.0.2.20")
    api.instances.record_backup(backup["id"], lambda b: b.record_started(carried.recorded(), "/backups/x"))
    api.projector.catch_up()
    started = BackupQueries(api.engine).get(backup["id"])
    api.instances.record(instance["id"], lambda i: i.report_backup_progress(carried.recorded(), backup["id"], 4096))
    api.projector.catch_up()
    progressed = BackupQueries(api.engine).get(backup["id"])
    assert started is not None and progressed is not None
    assert progressed.status == "BUILDING" and progressed.updated_at > started.updated_at
    assert replace(progressed, updated_at=started.updated_at) == started, "nothing else changes, not the version"


def test_backups_are_paginated_oldest_first(api: Api) -> None:
    ids = []
    for n in range(3):
        instance = api.create(f"source-{n}")
        api.make_active(instance["id"])
        ids.append(_backup(api, instance["id"], name=f"b{n}")["id"])
    api.projector.catch_up()
    first = api.get(f"/v1.0/{TENANT}/backups?limit=2").json
    assert [b["id"] for b in first["backups"]] == ids[:2] and first["links"][0]["rel"] == "next"
    rest = api.get(f"/v1.0/{TENANT}/backups?limit=2&marker={ids[1]}").json
    assert [b["id"] for b in rest["backups"]] == ids[2:] and "links" not in rest


def test_another_tenants_backups_and_instances_are_not_found(api: Api) -> None:
    theirs = api.create("theirs", tenant="t2", token=api.token("t2"))
    api.make_active(theirs["id"])
    result = api.post("/v1.0/t2/backups", token=api.token("t2"),
                      json={"backup": {"name": "x", "instance": theirs["id"]}})
    backup_id = result.json["backup"]["id"]
    api.projector.catch_up()
    assert api.get(f"/v1.0/{TENANT}/backups/{backup_id}").status_code == 404
    assert api.delete(f"/v1.0/{TENANT}/backups/{backup_id}").status_code == 404
    assert api.get(f"/v1.0/{TENANT}/backups").json["backups"] == []
    assert api.get(f"/v1.0/{TENANT}/instances/{theirs['id']}/backups").status_code == 404
    mine = api.post(f"/v1.0/{TENANT}/backups", json={"backup": {"name": "x", "instance": theirs["id"]}})
    assert mine.status_code == 404
    assert api.get(f"/v1.0/{TENANT}/backups/not-a-uuid").status_code == 404


def test_bad_backup_requests_are_refused_and_store_nothing(api: Api) -> None:
    instance = api.create("source")
    api.make_active(instance["id"])
    before = api.stored_events()
    for body in ({}, {"backup": {}}, {"backup": {"name": "x"}}, {"backup": {"instance": instance["id"]}},
                 {"backup": {"name": " ", "instance": instance["id"]}},
                 {"backup": {"name": "x" * 81, "instance": instance["id"]}},
                 {"backup": {"name": "x", "instance": instance["id"], "description": 7}},
                 {"backup": {"name": "x", "instance": instance["id"], "incremental": 1}},
                 {"backup": {"name": "x", "instance": instance["id"], "swift_container": "mine"}}):
        result = api.post(f"/v1.0/{TENANT}/backups", json=body)
        assert result.status_code == 400 and "badRequest" in result.json, (body, result.text)
    assert api.stored_events() == before


def test_the_backup_quota_is_enforced(api: Api) -> None:
    instance = api.create("source")
    api.make_active(instance["id"])
    api.put(f"/v1.0/admin-project/mgmt/quotas/{TENANT}", token="admin", json={"quotas": {"backups": 0}})
    result = api.post(f"/v1.0/{TENANT}/backups", json={"backup": {"name": "x", "instance": instance["id"]}})
    assert result.status_code == 413 and "overLimit" in result.json
    assert api.get(f"/v1.0/{TENANT}/instances/{instance['id']}").json["instance"]["status"] == "ACTIVE"


def test_an_instance_is_created_from_a_completed_backup_only(api: Api) -> None:
    instance = api.create("source")
    api.make_active(instance["id"])
    backup = _backup(api, instance["id"])
    body = {"name": "restored", "flavorRef": "2", "volume": {"size": 2}, "datastore": {"type": "mysql"},
            "restorePoint": {"backupRef": backup["id"]}}
    early = api.post(f"/v1.0/{TENANT}/instances", json={"instance": body})
    assert early.status_code == 400 and "cannot be restored" in early.json["badRequest"]["message"]
    _taken(api, instance["id"], backup["id"])
    small = api.post(f"/v1.0/{TENANT}/instances", json={"instance": {**body, "volume": {"size": 1}}})
    assert small.status_code == 400 and "at least 2 GB" in small.json["badRequest"]["message"]
    restored = api.post(f"/v1.0/{TENANT}/instances", json={"instance": body})
    assert restored.status_code == 200, restored.text
    assert api.instances.get(restored.json["instance"]["id"]).restore_backup_id == backup["id"]


def test_a_backup_id_is_no_instance_and_a_marker_must_be_a_backup_of_the_page(api: Api) -> None:
    instance = api.create("source")
    api.make_active(instance["id"])
    backup = _backup(api, instance["id"])
    api.projector.catch_up()
    for path in (f"/v1.0/{TENANT}/instances/{backup['id']}", f"/v1.0/{TENANT}/instances/{backup['id']}/backups",
                 f"/v1.0/{TENANT}/backups?instance_id={backup['id']}"):
        assert api.get(path).status_code == 404, path
    as_instance = api.post(f"/v1.0/{TENANT}/backups", json={"backup": {"name": "x", "instance": backup["id"]}})
    assert as_instance.status_code == 404 and "itemNotFound" in as_instance.json
    for marker in (instance["id"], "%00", "x" * 65):
        result = api.get(f"/v1.0/{TENANT}/backups?marker={marker}")
        assert result.status_code == 400 and "badRequest" in result.json, marker
    assert api.get(f"/v1.0/{TENANT}/instances?marker=%00").status_code == 400
