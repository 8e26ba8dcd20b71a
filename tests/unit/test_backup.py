"""Backups in the domain: the instance's backup operation (BACKUP, refusals, notifications) and the Backup's
own statuses."""

from __future__ import annotations

import pytest

from domain import backup as backups
from domain.api_lifecycle import ApiLifecycle
from domain.backup import Backup
from domain.errors import ActionNotAllowed, InvalidRequest
from domain.statuses import ServiceStatus, visible_status
from tests.unit.test_api_lifecycle import api, fold, new_instance, service


def _active():  # type: ignore[no-untyped-def]
    instance = new_instance()
    carried = instance.operation["context"]  # type: ignore[index]
    instance.record_server_provisioned(service(carried, "taskmanager"), "srv", "vol", "ACTIVE", [])
    instance.record_prepare_sent(service(carried, "taskmanager"), "topic")
    instance.change_service_status(service(carried, "conductor"), ServiceStatus.HEALTHY)
    return instance


def _backup(instance_id: str = "i-1") -> Backup:
    return Backup(context=api(), tenant_id="t1", instance_id=instance_id, name="nightly", description=None,
                  parent_id=None, datastore="mysql", datastore_version="8.0", datastore_version_id="v",
                  datastore_manager="mysql", volume_size=1)


def test_an_instance_backing_up_shows_backup_refuses_other_actions_and_notifies_start_and_end() -> None:
    instance = _active()
    lifecycle = ApiLifecycle("h1", {})
    fold(instance, lifecycle)
    instance.back_up(api("req-b"), "b-1", "nightly", "before the upgrade", None)
    assert instance.backup_running
    assert visible_status(instance.task, instance.server_status, instance.backup_running) == "BACKUP"
    with pytest.raises(ActionNotAllowed, match=r"instance status was BACKUP"):
        instance.restart(api())
    carried = instance.operation["context"]  # type: ignore[index]
    instance.record_backup_taken(service(carried, "conductor"), "b-1", 1234, "sha256:" + "a" * 64)
    instance.succeed(service(carried, "conductor"))
    assert not instance.backup_running and instance.last_backup == {
        "backup_id": "b-1", "size": 1234, "checksum": "sha256:" + "a" * 64}
    start, end = fold(instance, lifecycle)
    assert (start.event_type, end.event_type) == ("dbaas.backup_create.start", "dbaas.backup_create.end")
    assert start.payload["name"] == "nightly" and start.payload["description"] == "before the upgrade"
    assert start.payload["instance_id"] == str(instance.id) and end.payload["backup_id"] == "b-1"


def test_progress_is_recorded_for_the_running_backup_only_and_only_when_it_grows() -> None:
    instance = _active()
    assert not instance.report_backup_progress(api(), "b-1", 10), "no backup is running"
    instance.back_up(api("req-b"), "b-1", "nightly", None, None)
    carried = service(instance.operation["context"], "conductor")  # type: ignore[index]
    assert not instance.report_backup_progress(carried, "b-2", 10), "another backup's progress"
    assert instance.report_backup_progress(carried, "b-1", 0)
    assert instance.report_backup_progress(carried, "b-1", 4096)
    assert not instance.report_backup_progress(carried, "b-1", 4096) and not instance.report_backup_progress(
        carried, "b-1", 100), "no news, or less than already recorded"
    progressed = [e for e in instance.collect_events() if type(e).__name__ == "BackupProgressed"]
    assert [e.stored_bytes for e in progressed] == [0, 4096]
    assert instance.backup_running


def test_a_backup_goes_new_building_completed_and_cannot_be_deleted_while_being_taken() -> None:
    backup = _backup()
    assert backup.status == backups.NEW
    with pytest.raises(ActionNotAllowed, match="cannot be deleted while it is NEW"):
        backup.request_delete(api())
    backup.record_started(api(), "/backups/t1/b.gz")
    backup.complete(api(), 10, "sha256:" + "0" * 64)
    backup.fail(api(), "too late")  # a finished backup does not fail afterwards
    assert (backup.status, backup.size, backup.restorable) == (backups.COMPLETED, 10, True)
    backup.request_delete(api())
    assert backup.deleting and not backup.restorable
    backup.record_deleted(api())
    assert backup.deleted


def test_backup_names_and_descriptions_are_checked() -> None:
    with pytest.raises(InvalidRequest):
        backups.validate_backup_name(" ")
    with pytest.raises(InvalidRequest):
        backups.validate_backup_name("x" * 81)
    with pytest.raises(InvalidRequest):
        backups.validate_description(5)
    assert backups.validate_description(None) is None


def test_a_backup_counts_against_the_quota_from_stored_until_deleted_even_after_a_failed_delete() -> None:
    backup = _backup()
    backup.record_started(api(), "/backups/t1/b.gz")
    assert not backup.counted
    backup.complete(api(), 10, "sha256:" + "0" * 64)
    assert backup.counted
    backup.request_delete(api())
    backup.record_delete_failed(api(), "storage refused")
    assert backup.status == backups.DELETE_FAILED and backup.counted, "still stored, still counted"
    backup.request_delete(api())
    backup.record_deleted(api())
    assert not backup.counted
    failed = _backup()
    failed.fail(api(), "guest gone")
    assert not failed.counted, "a failed backup's reservation was released when it failed"
