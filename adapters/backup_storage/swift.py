"""``SwiftBackupStorage``: backups as objects in one Swift container, moved by guests through temp URLs.

Layout: the container (``TROVE_ES_SWIFT_CONTAINER``, created on first upload) holds one object per
backup, ``<tenant_id>/<backup_id>.gz``; a backup's location is ``swift://<container>/<object>``, so it
does not depend on the endpoint's address. Guests never hold the deployment's credentials: each gets a
temp URL for the one object, signed for PUT (upload) or GET (download), valid for a bounded time.

The URLs are signed with the account's temp-URL key. ``temp_url_key`` (``TROVE_ES_SWIFT_TEMP_URL_KEY``)
is set on the account when neither of its two key slots holds it; left empty, the account's own key is
used. The key is read from the account for every URL, so a key rotated on the account takes effect at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import openstack
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions
from openstack.connection import Connection

from services.ports import BackupStorageError, BackupTarget, StoredBackup

SCHEME = "swift://"
DEFAULT_CONTAINER = "trove-es-backups"
# Names that need no quoting: Swift checks a signature against the path as it decodes it.
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SwiftBackupStorage:
    def __init__(self, connection: Connection, *, container: str = DEFAULT_CONTAINER, temp_url_key: str = "",
                 temp_url_lifetime_s: int = 3600) -> None:
        self._conn = connection
        self._container = _checked(container, "container")
        self._configured_key = temp_url_key
        self._lifetime_s = int(temp_url_lifetime_s)

    @classmethod
    def from_cloud(cls, cloud: str | None, region: str | None, **options: Any) -> SwiftBackupStorage:
        """Storage on ``cloud`` of clouds.yaml (None: ``OS_CLOUD`` or the ``OS_*`` variables)."""
        return cls(openstack.connect(cloud=cloud, region_name=region), **options)

    # BackupStorage ----------------------------------------------------------------------------------

    def upload_target(self, tenant_id: str, backup_id: str) -> BackupTarget:
        name = f"{_checked(tenant_id, 'tenant id')}/{_checked(backup_id, 'backup id')}.gz"
        with _faults("hand out an upload URL"):
            self._ensure_container()
            url = self._temp_url("PUT", self._container, name)
        return BackupTarget(kind="url", location=f"{SCHEME}{self._container}/{name}", url=url)

    def download_target(self, location: str) -> BackupTarget:
        container, name = _parse(location)
        with _faults("hand out a download URL"):
            url = self._temp_url("GET", container, name)
        return BackupTarget(kind="url", location=location, url=url)

    def stat(self, location: str) -> StoredBackup | None:
        container, name = _parse(location)
        with _faults(f"look at {location}"):
            try:
                found = self._conn.object_store.get_object_metadata(name, container=container)
            except exceptions.NotFoundException:
                return None
        return StoredBackup(location=location, size=int(found.content_length or 0))

    def delete(self, location: str) -> None:
        container, name = _parse(location)
        with _faults(f"delete {location}"):
            self._conn.object_store.delete_object(name, container=container, ignore_missing=True)

    # ------------------------------------------------------------------------------------------------

    def _ensure_container(self) -> None:
        try:
            self._conn.object_store.get_container_metadata(self._container)
        except exceptions.NotFoundException:
            self._conn.object_store.create_container(name=self._container)

    def _temp_url(self, method: str, container: str, name: str) -> str:
        endpoint = urlsplit(self._conn.object_store.get_endpoint())
        path = f"{endpoint.path.rstrip('/')}/{container}/{name}"
        signed = self._conn.object_store.generate_temp_url(path, self._lifetime_s, method,
                                                           temp_url_key=self._temp_url_key())
        return f"{endpoint.scheme}://{endpoint.netloc}{_text(signed)}"

    def _temp_url_key(self) -> str:
        store = self._conn.object_store
        account = store.get_account_metadata()
        primary, secondary = account.meta_temp_url_key, account.meta_temp_url_key_2
        if not self._configured_key:
            if not (secondary or primary):
                raise BackupStorageError("The Swift account has no temp-URL key, so guests cannot be handed URLs: "
                                         "set TROVE_ES_SWIFT_TEMP_URL_KEY (trove-es then sets it on the account).")
            return str(secondary or primary)
        if self._configured_key not in (primary, secondary):
            if primary and secondary:
                raise BackupStorageError("Both temp-URL keys of the Swift account are set and neither is "
                                         "TROVE_ES_SWIFT_TEMP_URL_KEY: set one of them to it, or leave the "
                                         "setting empty to sign with the account's key.")
            # A free slot: a key someone else relies on stays as it is.
            store.set_account_temp_url_key(self._configured_key, secondary=bool(primary))
        return self._configured_key


def _parse(location: str) -> tuple[str, str]:
    container, _, name = location.removeprefix(SCHEME).partition("/")
    if not location.startswith(SCHEME) or not container or not name:
        raise BackupStorageError(f"{location!r} is not a Swift backup location (swift://<container>/<object>); "
                                 f"the backup was stored elsewhere, so use the storage that stored it.")
    return container, name


def _checked(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise BackupStorageError(f"The {what} {value!r} cannot name a Swift object: use letters, digits, "
                                 f"'_', '.' and '-' only.")
    return value


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def _faults(action: str) -> Iterator[None]:
    """Swift's refusals as ``BackupStorageError``, saying what to do about them."""
    try:
        yield
    except exceptions.HttpException as exc:
        if exc.status_code in (401, 403):
            advice = "give the deployment's cloud user a role that may use Swift in its project (e.g. swiftoperator)"
        elif exc.status_code == 413:
            advice = "the account's quota is full: delete old backups or have the quota raised"
        else:
            advice = "check the object store's health, then retry"
        raise BackupStorageError(f"Swift could not {action}: {exc.details or exc}; {advice}.") from exc
    except (exceptions.SDKException, ks_exceptions.ClientException) as exc:
        raise BackupStorageError(f"Swift could not {action}: {exc}; check the cloud's object-store endpoint "
                                 f"and credentials (TROVE_ES_OS_CLOUD), then retry.") from exc
