"""Instance routes: list, detail list, create, show, update (rename), delete and actions."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon

from adapters.rest import responses, schemas, views
from adapters.rest.media import load
from adapters.rest.middleware import require_admin
from adapters.rest.reads import InstanceReads
from adapters.rest.resources import Operation, accepted, context, identity, instance_id, links
from domain.datastore_objects import ANY_HOST, user_key
from domain.errors import InvalidRequest
from projections.instance_view import InstanceRecord, InstanceViewQueries, record_from_aggregate
from services.instances import CreateInstance, InstanceService

# Built once: a schema's fields (and its nested schemas) are set up when it is made, which cost a create
# a tenth of its time; loading with one instance from many threads is safe.
CREATE_REQUEST = schemas.CreateInstanceRequest()
UPDATE_REQUEST = schemas.UpdateInstanceRequest()
ACTION_REQUEST = schemas.ActionRequest()

PAGE_SIZE = 20  # Trove's instances_page_size
MAX_PAGE_SIZE = 100
PAGE_QUERY = (("limit", "integer", f"Page size (default {PAGE_SIZE}, at most {MAX_PAGE_SIZE})."),
              ("marker", "string", "The last instance id of the previous page."),
              ("include_clustered", "boolean", "Accepted for compatibility; there are no clusters."))


def page_parameters(req: falcon.Request) -> tuple[int, str | None]:
    raw = req.get_param("limit")
    if raw in (None, ""):
        limit = PAGE_SIZE
    else:
        try:
            limit = int(raw)
        except ValueError:
            raise InvalidRequest("The 'limit' parameter must be a positive integer.") from None
        if limit < 1:
            raise InvalidRequest("The 'limit' parameter must be a positive integer.")
    marker = req.get_param("marker") or None
    if marker is not None and (len(marker) > 64 or "\x00" in marker):  # no id is; a database refuses NUL
        raise InvalidRequest("The 'marker' parameter is not an id from a previous page.")
    return min(limit, MAX_PAGE_SIZE), marker


def paged(views_: InstanceViewQueries, tenant_id: str | None, req: falcon.Request, *,
          include_deleted: bool = False) -> tuple[list[InstanceRecord], int, str | None]:
    """One page and, when there is more, the marker of the next (asks for one row more than it shows)."""
    limit, marker = page_parameters(req)
    if marker is not None:
        anchor = views_.get(marker, include_deleted=True)
        if anchor is None or (tenant_id is not None and anchor.tenant_id != tenant_id):
            raise InvalidRequest("The 'marker' parameter is not an instance id from a previous page.")
    rows = views_.page(tenant_id, limit=limit + 1, marker=marker, include_deleted=include_deleted)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, limit, rows[-1].id if more and rows else None


class _InstanceList:
    detail = False
    path = "instances"

    def __init__(self, views_: InstanceViewQueries, reads: InstanceReads) -> None:
        self._views = views_
        self._reads = reads

    def body(self, req: falcon.Request, tenant_id: str) -> dict[str, Any]:
        self._reads.settle(tenant_id)
        rows, limit, next_marker = paged(self._views, tenant_id, req)
        link = links(req, tenant_id)
        admin = identity(req).is_admin
        render = views.instance_detail if self.detail else views.instance_summary
        body: dict[str, Any] = {"instances": [render(row, link, admin=admin) for row in rows]}
        if next_marker:
            body["links"] = link.next_page(self.path, limit, next_marker)
        return body


class InstancesResource(_InstanceList):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("List the tenant's instances, oldest first", response=responses.InstanceList,
                         query=PAGE_QUERY, errors=(400, 401, 403)),
        "post": Operation("Create an instance; answers at once with status BUILD",
                          request=schemas.CreateInstanceRequest, response=responses.InstanceEnvelope,
                          errors=(400, 401, 403, 404, 413, 415)),
    }

    def __init__(self, views_: InstanceViewQueries, reads: InstanceReads, instances: InstanceService,
                 region: str) -> None:
        super().__init__(views_, reads)
        self._instances = instances
        self._region = region

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        resp.media = self.body(req, tenant_id)

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        body = load(CREATE_REQUEST, req)["instance"]
        if body.get("region_name") not in (None, self._region):
            raise InvalidRequest(f"This API serves region {self._region}, not {body['region_name'][:64]}.")
        datastore = body.get("datastore") or {}
        request = CreateInstance(
            name=body["name"], flavor_ref=body["flavorRef"], volume_size=body["volume"]["size"],
            datastore=datastore.get("type"),
            datastore_version=datastore.get("version") or datastore.get("version_number"),
            availability_zone=body.get("availability_zone"),
            databases=[database["name"] for database in body.get("databases") or []],
            users=[{"name": user["name"], "host": user.get("host") or "%",
                    "databases": [database["name"] for database in user.get("databases") or []]}
                   for user in body.get("users") or []],
            passwords={user_key(user["name"], user.get("host") or ANY_HOST): user["password"]
                       for user in body.get("users") or []},
            restore_backup_id=(body.get("restorePoint") or {}).get("backupRef"))
        instance, version = self._instances.create(context(req), request)
        self._reads.wrote(context(req), str(instance.id), version)
        record = record_from_aggregate(instance)
        resp.media = {"instance": views.instance_detail(record, links(req, tenant_id), admin=identity(req).is_admin)}


class InstancesDetailResource(_InstanceList):
    detail = True
    path = "instances/detail"
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("List the tenant's instances with details", response=responses.InstanceDetailList,
                         query=PAGE_QUERY, errors=(400, 401, 403)),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        resp.media = self.body(req, tenant_id)


class InstanceResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Show an instance", response=responses.InstanceEnvelope, errors=(401, 403, 404)),
        "put": Operation("Rename an instance", status=202, request=schemas.UpdateInstanceRequest,
                         errors=(400, 401, 403, 404, 415, 422)),
        "patch": Operation("Rename an instance (Trove's older edit)", status=202,
                           request=schemas.UpdateInstanceRequest, errors=(400, 401, 403, 404, 415, 422)),
        "delete": Operation("Delete an instance (asynchronous)", status=202, errors=(401, 403, 404, 422)),
    }

    def __init__(self, reads: InstanceReads, instances: InstanceService) -> None:
        self._reads = reads
        self._instances = instances

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        admin = identity(req).is_admin
        record = self._reads.show(instance_id(instance), context(req), admin=admin)
        resp.media = {"instance": views.instance_detail(record, links(req, tenant_id), admin=admin)}

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = instance_id(instance)
        changes = load(UPDATE_REQUEST, req)["instance"]
        admin = identity(req).is_admin
        if "name" in changes:
            self._reads.wrote(context(req), key, self._instances.rename(context(req), key, changes["name"],
                                                                        admin=admin))
        else:
            # A rename of nothing still needs an instance.
            self._instances.get(key, context(req), admin=admin, to_change=False)
        accepted(resp)

    on_patch = on_put

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = instance_id(instance)
        self._reads.wrote(context(req), key, self._instances.delete(context(req), key, admin=identity(req).is_admin))
        accepted(resp)


class InstanceActionResource:
    operations: ClassVar[dict[str, Operation]] = {
        "post": Operation("Run an action: restart, resize (volume or flavorRef), reset_status (admin)",
                          status=202, request=schemas.ActionRequest, errors=(400, 401, 403, 404, 413, 415, 422)),
    }

    def __init__(self, reads: InstanceReads, instances: InstanceService) -> None:
        self._reads = reads
        self._instances = instances

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = instance_id(instance)
        action = load(ACTION_REQUEST, req)
        ctx, admin = context(req), identity(req).is_admin
        if "restart" in action:
            version = self._instances.restart(ctx, key, admin=admin)
        elif "resize" in action:
            resize = action["resize"]
            if "volume" in resize:
                version = self._instances.resize_volume(ctx, key, resize["volume"]["size"], admin=admin)
            else:
                version = self._instances.resize_flavor(ctx, key, resize["flavorRef"], admin=admin)
        else:
            require_admin(req)
            version = self._instances.reset_status(ctx, key)
        self._reads.wrote(ctx, key, version)
        accepted(resp)
