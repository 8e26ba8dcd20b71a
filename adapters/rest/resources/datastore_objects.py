"""Trove's database, user and root routes under ``/instances/{id}``.

Lists come from the datastore-objects view: what the instance's operations have done. Changes are
checked against the instance's own record (a database or user just created can be dropped at once),
and are operations of the instance, answered 202 (root's enable 200, with the password once, as Trove) and
carried out by its guest; a user is named in paths as Trove names it, ``name`` or ``name@host``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import falcon

from adapters.rest import responses, schemas
from adapters.rest.media import load
from adapters.rest.reads import InstanceReads
from adapters.rest.resources import Operation, accepted, context, identity, instance_id, links
from adapters.rest.resources.instances import page_parameters
from domain.datastore_objects import split_user_id
from domain.errors import NotFound
from projections.datastore_objects import DatastoreObjectQueries, DatastoreUser
from services.datastore_objects import DatastoreObjects

DATABASES_REQUEST = schemas.DatabasesRequest()
USERS_REQUEST = schemas.UsersRequest()
USER_UPDATE_REQUEST = schemas.UserUpdateRequest()
ACCESS_REQUEST = schemas.AccessRequest()
ROOT_REQUEST = schemas.RootRequest()
PAGE_QUERY = (("limit", "integer", "Page size (default 20, at most 100)."),
              ("marker", "string", "The last name of the previous page."))
CHANGE_ERRORS = (400, 401, 403, 404, 415, 422)


class _OnInstance:
    def __init__(self, objects: DatastoreObjects, queries: DatastoreObjectQueries, reads: InstanceReads) -> None:
        self._objects = objects
        self._queries = queries
        self._reads = reads

    def _instance(self, req: falcon.Request, raw: str) -> str:
        """The caller's instance (any, for an admin), as show decides it: another tenant's is a 404."""
        key = instance_id(raw)
        self._reads.show(key, context(req), admin=identity(req).is_admin)
        return key

    def _user(self, key: str, user_id: str) -> DatastoreUser:
        name, host = split_user_id(user_id)
        user = self._queries.user(key, name, host)
        if user is None:
            raise NotFound(f"User {user_id[:80]} cannot be found on the instance.")
        return user

    def _done(self, req: falcon.Request, resp: falcon.Response, key: str, version: int) -> None:
        self._reads.wrote(context(req), key, version)
        accepted(resp)


def _user_view(user: DatastoreUser) -> dict[str, Any]:
    return {"name": user.name, "host": user.host, "databases": [{"name": d} for d in user.databases]}


class DatabasesResource(_OnInstance):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The instance's databases", response=responses.DatabaseList, errors=(400, 401, 403, 404),
                         query=PAGE_QUERY),
        "post": Operation("Create databases", status=202, request=schemas.DatabasesRequest, errors=CHANGE_ERRORS),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = self._instance(req, instance)
        limit, marker = page_parameters(req)
        names = self._queries.databases(key, limit=limit + 1, marker=marker)
        body: dict[str, Any] = {"databases": [{"name": name} for name in names[:limit]]}
        if len(names) > limit:
            body["links"] = links(req, tenant_id).next_page(f"instances/{key}/databases", limit, names[limit - 1])
        resp.media = body

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = self._instance(req, instance)
        body = load(DATABASES_REQUEST, req)
        version = self._objects.create_databases(context(req), key, body["databases"],
                                                 admin=identity(req).is_admin)
        self._done(req, resp, key, version)


class DatabaseResource(_OnInstance):
    operations: ClassVar[dict[str, Operation]] = {
        "delete": Operation("Drop a database", status=202, errors=CHANGE_ERRORS),
    }

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str,
                  database: str) -> None:
        key = self._instance(req, instance)
        version = self._objects.delete_database(context(req), key, database, admin=identity(req).is_admin)
        self._done(req, resp, key, version)


class UsersResource(_OnInstance):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The instance's users, with their hosts and databases", response=responses.UserList,
                         errors=(400, 401, 403, 404), query=PAGE_QUERY),
        "post": Operation("Create users, with access to databases", status=202, request=schemas.UsersRequest,
                          errors=CHANGE_ERRORS),
        "put": Operation("Change users' passwords", status=202, request=schemas.UsersRequest, errors=CHANGE_ERRORS),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = self._instance(req, instance)
        limit, marker = page_parameters(req)
        users = self._queries.users(key, limit=limit + 1, marker=split_user_id(marker) if marker else None)
        body: dict[str, Any] = {"users": [_user_view(user) for user in users[:limit]]}
        if len(users) > limit:
            last = users[limit - 1]
            body["links"] = links(req, tenant_id).next_page(f"instances/{key}/users", limit,
                                                            f"{last.name}@{last.host}")
        resp.media = body

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = self._instance(req, instance)
        users = [{"name": u["name"], "password": u["password"], "host": u.get("host"),
                  "databases": [d["name"] for d in u.get("databases") or []]}
                 for u in load(USERS_REQUEST, req)["users"]]
        version = self._objects.create_users(context(req), key, users, admin=identity(req).is_admin)
        self._done(req, resp, key, version)

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = self._instance(req, instance)
        users = load(USERS_REQUEST, req)["users"]
        version = self._objects.change_passwords(context(req), key, users, admin=identity(req).is_admin)
        self._done(req, resp, key, version)


class UserResource(_OnInstance):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("One user, with its host and databases", response=responses.UserShow,
                         errors=(401, 403, 404)),
        "put": Operation("Change a user's name, host or password", status=202, request=schemas.UserUpdateRequest,
                         errors=CHANGE_ERRORS),
        "delete": Operation("Drop a user", status=202, errors=CHANGE_ERRORS),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str, user: str) -> None:
        key = self._instance(req, instance)
        resp.media = {"user": _user_view(self._user(key, user))}

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str, user: str) -> None:
        key = self._instance(req, instance)
        attributes = load(USER_UPDATE_REQUEST, req)["user"]
        version = self._objects.update_user(context(req), key, *split_user_id(user), attributes,
                                            admin=identity(req).is_admin)
        self._done(req, resp, key, version)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str,
                  user: str) -> None:
        key = self._instance(req, instance)
        version = self._objects.delete_user(context(req), key, *split_user_id(user), admin=identity(req).is_admin)
        self._done(req, resp, key, version)


class UserAccessResource(_OnInstance):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The databases a user has access to", response=responses.DatabaseList,
                         errors=(401, 403, 404)),
        "put": Operation("Grant a user access to more databases", status=202, request=schemas.AccessRequest,
                         errors=CHANGE_ERRORS),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str, user: str) -> None:
        key = self._instance(req, instance)
        resp.media = {"databases": [{"name": d} for d in self._user(key, user).databases]}

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str, user: str) -> None:
        key = self._instance(req, instance)
        databases = [d["name"] for d in load(ACCESS_REQUEST, req)["databases"]]
        version = self._objects.grant_access(context(req), key, *split_user_id(user), databases,
                                             admin=identity(req).is_admin)
        self._done(req, resp, key, version)


class UserDatabaseAccessResource(_OnInstance):
    operations: ClassVar[dict[str, Operation]] = {
        "delete": Operation("Revoke a user's access to one database", status=202, errors=CHANGE_ERRORS),
    }

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str, user: str,
                  database: str) -> None:
        key = self._instance(req, instance)
        version = self._objects.revoke_access(context(req), key, *split_user_id(user), database,
                                              admin=identity(req).is_admin)
        self._done(req, resp, key, version)


class RootResource(_OnInstance):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Whether root is enabled", response=responses.RootEnabled, errors=(401, 403, 404)),
        "post": Operation("Enable root, or give it a new password; the password is in this answer only",
                          request=schemas.RootRequest, response=responses.RootCreated, errors=CHANGE_ERRORS),
        "delete": Operation("Disable root", status=204, errors=CHANGE_ERRORS),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = self._instance(req, instance)
        resp.media = {"rootEnabled": self._queries.root_enabled(key)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = self._instance(req, instance)
        # Trove's clients post no body at all; a JSON object may choose the password.
        body = load(ROOT_REQUEST, req) if req.content_length else {}
        version, name, password = self._objects.enable_root(context(req), key, body.get("password"),
                                                            admin=identity(req).is_admin)
        self._reads.wrote(context(req), key, version)
        resp.set_header("Cache-Control", "no-store")  # the password is in it
        resp.media = {"user": {"name": name, "password": password}}

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = self._instance(req, instance)
        version = self._objects.disable_root(context(req), key, admin=identity(req).is_admin)
        self._reads.wrote(context(req), key, version)
        resp.status = falcon.HTTP_204

