"""Request-scoped concerns applied to every route: the request id, and who may call what."""

from __future__ import annotations

import re
import uuid
from typing import Any

import falcon

from adapters.rest.auth import Authenticator
from adapters.rest.context import operation_context

REQUEST_ID_HEADER = "X-Openstack-Request-Id"
# Tenant ids end up in events and in VARCHAR(64) view columns; refuse what could not be stored.
_TENANT_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class RequestIdMiddleware:
    """Gives each request Trove's ``req-<uuid>`` id and returns it, error or not."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = f"req-{uuid.uuid4()}"
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)


class AuthMiddleware:
    """Every route under ``/v1.0/{tenant_id}`` needs a valid ``X-Auth-Token`` for that tenant (or an admin's).

    Resources say ``admin_only = True`` when every method is for admins; per-method admin checks use
    ``require_admin``. The operation context is built here, once, for the resource to pass on.
    """

    def __init__(self, authenticator: Authenticator, server_ip: str) -> None:
        self._authenticator = authenticator
        self._server_ip = server_ip

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.auth_challenge = self._authenticator.challenge
        req.context.identity = None

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         params: dict[str, Any]) -> None:
        tenant_id = params.get("tenant_id")
        if resource is None or tenant_id is None:
            return
        if not _TENANT_ID.match(tenant_id):
            raise falcon.HTTPBadRequest(description="The tenant id in the path is not valid.")
        token = req.get_header("X-Auth-Token")
        if not token:
            raise falcon.HTTPUnauthorized(description="Authentication required: send an X-Auth-Token header.",
                                          challenges=[self._authenticator.challenge])
        identity = self._authenticator.authenticate(token)
        if identity.project_id != tenant_id and not identity.is_admin:
            raise falcon.HTTPForbidden(description=f"The token is not valid for project {tenant_id}.")
        if getattr(resource, "admin_only", False) and not identity.is_admin:
            raise falcon.HTTPForbidden(description="This operation is for administrators only.")
        req.context.identity = identity
        req.context.operation = operation_context(req, tenant_id, identity, self._server_ip)


def require_admin(req: falcon.Request) -> None:
    identity = req.context.identity
    if identity is None or not identity.is_admin:
        raise falcon.HTTPForbidden(description="This operation is for administrators only.")
