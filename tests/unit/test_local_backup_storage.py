"""The local backup storage: files under one root, nothing outside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.backup_storage.local import LocalBackupStorage
from services.ports import BackupStorageError


def test_a_backup_is_a_file_under_the_tenants_directory_that_can_be_stated_and_deleted(tmp_path: Path) -> None:
    storage = LocalBackupStorage(tmp_path / "backups")
    target = storage.upload_target("t1", "b1")
    assert target.kind == "file" and target.location == str((tmp_path / "backups" / "t1" / "b1.gz").resolve())
    assert storage.stat(target.location) is None
    Path(target.location).write_bytes(b"12345")
    stored = storage.stat(target.location)
    assert stored is not None and stored.size == 5
    assert storage.download_target(target.location).location == target.location
    storage.delete(target.location)
    storage.delete(target.location)  # a second delete finds nothing and is fine
    assert storage.stat(target.location) is None


def test_no_location_outside_the_root_is_handed_out_stated_or_deleted(tmp_path: Path) -> None:
    storage = LocalBackupStorage(tmp_path / "backups")
    outside = tmp_path / "precious"
    outside.write_text("keep")
    with pytest.raises(BackupStorageError, match="not a backup location"):
        storage.upload_target("..", "precious")
    with pytest.raises(BackupStorageError):
        storage.delete(str(outside))
    with pytest.raises(BackupStorageError):
        storage.stat(str(tmp_path / "backups" / ".." / "precious"))
    assert outside.read_text() == "keep"
