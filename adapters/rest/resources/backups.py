"""Backup routes: take a backup of an instance, list and show a tenant's backups, delete one, and list an
instance's backups. Lists come from the backup view; a show falls back to the Backup itself while the
view has not caught up with a create (read your writes)."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

import falcon

from adapters.rest import responses, schemas, views
from adapters.rest.media import load
from adapters.rest.reads import InstanceReads
from adapters.rest.resources import Operation, context, identity, instance_id, links
from adapters.rest.resources.instances import page_parameters
from domain.backup import Backup
from domain.errors import InvalidRequest, NotFound
from projections.backup_view import BackupQueries, BackupRecord
from services.instances import InstanceService

CREATE_REQUEST = schemas.CreateBackupRequest()
BACKUP_PAGE_QUERY = (("limit", "integer", "Page size (default 20, at most 100)."),
                     ("marker", "string", "The last backup id of the previous page."),
                     ("instance_id", "string", "Only this instance's backups."))


def backup_id(raw: str) -> str:
    try:
        return str(UUID(raw))
    except ValueError:
        raise NotFound(f"Backup {raw[:64]} could not be found.") from None


def record_of(backup: Backup) -> BackupRecord:
    return BackupRecord(
        id=str(backup.id), tenant_id=backup.tenant_id, instance_id=backup.instance_id, name=backup.name,
        description=backup.description, parent_id=backup.parent_id, status=backup.status,
        location=backup.location, size=backup.size, datastore=backup.datastore,
        datastore_version=backup.datastore_version, datastore_version_id=backup.datastore_version_id,
        created_at=backup.created_on.isoformat(), updated_at=backup.modified_on.isoformat(), deleted=backup.deleted,
        fail_reason=backup.fail_reason)


def _page(req: falcon.Request, tenant_id: str, backups: BackupQueries, path: str, *,
          instance: str | None = None) -> dict[str, Any]:
    limit, marker = page_parameters(req)
    if marker is not None:
        anchor = backups.get(marker)
        if anchor is None or anchor.tenant_id != tenant_id:
            raise InvalidRequest("The 'marker' parameter is not a backup id from a previous page.")
    rows = (backups.page(instance_id=instance, limit=limit + 1, marker=marker) if instance is not None
            else backups.page(tenant_id=tenant_id, limit=limit + 1, marker=marker))
    body: dict[str, Any] = {"backups": [views.backup(row) for row in rows[:limit]]}
    if len(rows) > limit:
        body["links"] = links(req, tenant_id).next_page(path, limit, rows[limit - 1].id)
    return body


class BackupsResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("List the tenant's backups, oldest first", response=responses.BackupList,
                         query=BACKUP_PAGE_QUERY, errors=(400, 401, 403, 404)),
        "post": Operation("Back up an instance (asynchronous: NEW, BUILDING, then COMPLETED or FAILED)", status=202,
                          request=schemas.CreateBackupRequest, response=responses.BackupEnvelope,
                          errors=(400, 401, 403, 404, 413, 415, 422)),
    }

    def __init__(self, instances: InstanceService, backups: BackupQueries, reads: InstanceReads) -> None:
        self._instances = instances
        self._backups = backups
        self._reads = reads

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        chosen = req.get_param("instance_id")
        if chosen is not None:
            key = instance_id(chosen)
            self._reads.show(key, context(req), admin=identity(req).is_admin)  # another tenant's is 404
            resp.media = _page(req, tenant_id, self._backups, "backups", instance=key)
            return
        resp.media = _page(req, tenant_id, self._backups, "backups")

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        body = load(CREATE_REQUEST, req)["backup"]
        if body.get("incremental") and not body.get("parent_id"):
            raise InvalidRequest("An incremental backup needs the parent_id of the backup it follows.")
        backup, version = self._instances.create_backup(
            context(req), instance_id(body["instance"]), body["name"], body.get("description"),
            body.get("parent_id"))
        self._reads.wrote(context(req), backup.instance_id, version)
        resp.status = falcon.HTTP_202
        resp.media = {"backup": views.backup(record_of(backup))}


class BackupResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Show a backup", response=responses.BackupEnvelope, errors=(401, 403, 404)),
        "delete": Operation("Delete a backup (asynchronous); one being taken cannot be", status=202,
                            errors=(401, 403, 404, 422)),
    }

    def __init__(self, instances: InstanceService, backups: BackupQueries) -> None:
        self._instances = instances
        self._backups = backups

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, backup: str) -> None:
        key = backup_id(backup)
        record = self._backups.get(key)
        if record is None:  # a create the view has not caught up with yet
            record = record_of(self._instances.get_backup(key, context(req), admin=identity(req).is_admin))
        if record.deleted or (record.tenant_id != context(req).tenant_id and not identity(req).is_admin):
            raise NotFound(f"Backup {key} could not be found.")
        resp.media = {"backup": views.backup(record)}

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, backup: str) -> None:
        self._instances.delete_backup(context(req), backup_id(backup), admin=identity(req).is_admin)
        resp.status = falcon.HTTP_202


class InstanceBackupsResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("List an instance's backups, oldest first", response=responses.BackupList,
                         query=BACKUP_PAGE_QUERY[:2], errors=(400, 401, 403, 404)),
    }

    def __init__(self, backups: BackupQueries, reads: InstanceReads) -> None:
        self._backups = backups
        self._reads = reads

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = instance_id(instance)
        self._reads.show(key, context(req), admin=identity(req).is_admin)  # another tenant's is 404
        resp.media = _page(req, tenant_id, self._backups, f"instances/{key}/backups", instance=key)
