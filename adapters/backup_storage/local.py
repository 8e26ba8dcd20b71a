"""``LocalBackupStorage``: backups as files under one directory of this host (the embedded default).

Layout: ``<root>/<tenant_id>/<backup_id>.gz``; a backup's location is that path. Guests of the ``local``
and ``fake`` drivers run on this host and write the file themselves (a ``file`` target), so no byte goes
through the task manager. A location outside the root is refused: a record, or a tenant id such as
``..``, must never point the task manager at another file to stat or delete.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.ports import BackupStorageError, BackupTarget, StoredBackup


class LocalBackupStorage:
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    def upload_target(self, tenant_id: str, backup_id: str) -> BackupTarget:
        path = self._inside(self._root / tenant_id / f"{backup_id}.gz")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return BackupTarget(kind="file", location=str(path))

    def download_target(self, location: str) -> BackupTarget:
        return BackupTarget(kind="file", location=str(self._inside(Path(location))))

    def stat(self, location: str) -> StoredBackup | None:
        try:
            size = os.stat(self._inside(Path(location))).st_size
        except FileNotFoundError:
            return None
        return StoredBackup(location=location, size=size)

    def delete(self, location: str) -> None:
        self._inside(Path(location)).unlink(missing_ok=True)

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self._root) or resolved == self._root:
            raise BackupStorageError(f"{path} is not a backup location under {self._root}; "
                                     "check TROVE_ES_DATA_DIR and the backup's record")
        return resolved
