"""Backups through the task manager, conductor and simulated guests as real processes, on PostgreSQL and a real
broker: the instance shows BACKUP meanwhile, the Backup ends COMPLETED with what storage holds, a delete
removes the file and gives the quota back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.kafka.broker import EmbeddedBroker
from domain import backup as backups
from domain.errors import ActionNotAllowed, InvalidRequest, NotFound
from services.instances import CreateInstance
from tests.integration.test_task_manager import ALL, _active
from tests.support.trove_processes import TENANT, WriteSide, write_side

pytestmark = pytest.mark.integration


@pytest.fixture
def side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url)


def test_a_backup_is_taken_stored_whole_and_deleted(side: WriteSide) -> None:
    side.start(*ALL)
    instance_id = side.create(request_id="req-create")
    side.wait(lambda: _active(side, instance_id), "the instance to be ACTIVE")

    backup, _ = side.instances.create_backup(side.context("req-backup"), instance_id, "nightly", "first")
    assert side.get(instance_id).backup_running
    with pytest.raises(ActionNotAllowed):
        side.instances.restart(side.context("req-restart"), instance_id)
    assert type(side.wait_closed(instance_id, "req-backup")).__name__ == "OperationSucceeded"

    def completed() -> bool:
        return side.instances.get_backup(backup.id).status == backups.COMPLETED

    side.wait(completed, "the backup to be COMPLETED")
    taken = side.instances.get_backup(backup.id)
    stored = Path(taken.location or "")
    assert stored.is_relative_to(side.settings.data_dir / "backups" / TENANT)
    assert taken.size == stored.stat().st_size
    assert taken.checksum == "sha256:" + hashlib.sha256(stored.read_bytes()).hexdigest()
    progressed = [e for e in side.events(instance_id) if type(e).__name__ == "BackupProgressed"]
    assert [(e.backup_id, e.stored_bytes) for e in progressed] == [(str(backup.id), taken.size)], \
        "the guest's progress came back through the conductor as an event"
    side.wait(lambda: _backups_in_use(side) == 1, "the backup's quota to be committed")

    side.instances.delete_backup(side.context("req-backup-delete"), backup.id)
    side.wait(lambda: side.instances.get_backup(backup.id).deleted, "the backup to be deleted")
    assert not stored.exists()
    side.wait(lambda: _backups_in_use(side) == 0, "the deleted backup's quota to be given back")


def test_a_backup_storage_does_not_hold_as_the_guest_reported_fails_with_a_fault(side: WriteSide) -> None:
    side.start(*ALL)
    instance_id = side.create(name="fake-backup-miscounts", request_id="req-create")
    side.wait(lambda: _active(side, instance_id), "the instance to be ACTIVE")
    backup, _ = side.instances.create_backup(side.context("req-backup"), instance_id, "nightly")
    failed = side.wait_closed(instance_id, "req-backup")
    assert type(failed).__name__ == "OperationFailed", "the operation fails: a fault, and an error notification"
    assert failed.context["server_type"] == "taskmanager"
    assert failed.message.startswith("The guest reported ") and "but the backup storage holds" in failed.message
    side.wait(lambda: side.instances.get_backup(backup.id).status == backups.FAILED, "the backup to be FAILED")
    shown = side.instances.get_backup(backup.id)
    assert shown.fail_reason == failed.message
    assert not Path(shown.location or "").exists(), "what it left in storage is deleted"
    side.wait(lambda: _backups_in_use(side) == 0, "the failed backup's reservation to be released")
    assert not side.get(instance_id).backup_running


def _backups_in_use(side: WriteSide) -> int | None:
    # Settled after the backup's status is recorded: a reader waits for it rather than racing it.
    quota = side.instances.quota(TENANT)
    return None if quota is None or quota.reservations else quota.in_use["backups"]


def _taken_backup(side: WriteSide) -> tuple[str, str]:
    source = side.create(request_id="req-source")
    side.wait(lambda: _active(side, source), "the source instance to be ACTIVE")
    backup, _ = side.instances.create_backup(side.context("req-backup"), source, "nightly")
    side.wait(lambda: side.instances.get_backup(backup.id).status == backups.COMPLETED, "the backup")
    return source, str(backup.id)


def _restore(side: WriteSide, backup_id: str, request_id: str) -> str:
    instance, _ = side.instances.create(side.context(request_id), CreateInstance(
        name="restored", flavor_ref="2", volume_size=2, datastore="mysql", datastore_version=None,
        restore_backup_id=backup_id))
    return str(instance.id)


def test_an_instance_is_built_from_a_backup_whose_checksum_the_guest_verified(side: WriteSide) -> None:
    side.start(*ALL)
    _, backup_id = _taken_backup(side)
    restored = _restore(side, backup_id, "req-restore")
    assert type(side.wait_closed(restored, "req-restore")).__name__ == "OperationSucceeded"
    assert side.get(restored).restore_backup_id == backup_id


def test_a_corrupt_backup_fails_the_build_with_a_fault_that_says_so(side: WriteSide) -> None:
    side.start(*ALL)
    _, backup_id = _taken_backup(side)
    stored = Path(side.instances.get_backup(backup_id).location or "")
    stored.write_bytes(b"\x00" + stored.read_bytes()[1:])  # one byte changed in storage
    restored = _restore(side, backup_id, "req-restore")
    failed = side.wait_closed(restored, "req-restore")
    assert type(failed).__name__ == "OperationFailed" and "corrupt" in failed.message


def test_a_restore_of_another_datastore_or_an_unfinished_backup_is_refused(side: WriteSide) -> None:
    side.start(*ALL)
    source = side.create(request_id="req-source")
    side.wait(lambda: _active(side, source), "the source instance to be ACTIVE")
    backup, _ = side.instances.create_backup(side.context("req-backup"), source, "nightly")
    with pytest.raises(InvalidRequest, match="cannot be restored"):
        _restore(side, str(backup.id), "req-too-early")  # still NEW or BUILDING
    side.wait(lambda: side.instances.get_backup(backup.id).status == backups.COMPLETED, "the backup")
    with pytest.raises(InvalidRequest, match="same datastore"):
        side.instances.create(side.context("req-other"), CreateInstance(
            name="elsewhere", flavor_ref="2", volume_size=2, datastore="postgresql", datastore_version=None,
            restore_backup_id=str(backup.id)))
    with pytest.raises(NotFound):
        side.instances.create(side.context("req-stranger"), CreateInstance(
            name="x", flavor_ref="2", volume_size=2, datastore="mysql", datastore_version=None,
            restore_backup_id="00000000-0000-0000-0000-000000000000"))
