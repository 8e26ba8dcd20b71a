"""One resource class per route. Each declares its ``operations`` (documentation and OpenAPI)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import falcon
from marshmallow import Schema

from adapters.rest.auth import Identity
from adapters.rest.views import Links
from domain.billing import window_time
from domain.context import OperationContext
from domain.errors import InvalidRequest, NotFound


@dataclass(frozen=True)
class Operation:
    summary: str
    status: int = 200
    request: type[Schema] | None = None
    response: type[Schema] | None = None
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, str, str], ...] = ()  # (name, OpenAPI type, description)
    admin: bool = False
    public: bool = False


_PUBLIC_PREFIX = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")


def public_prefix(req: falcon.Request) -> str:
    """Where clients reach the API, for links: as a proxy forwards it (``Forwarded``, ``X-Forwarded-*``),
    unless what arrived is not a plain http(s) address, which would put a client's garbage in links."""
    forwarded = req.forwarded_prefix
    return forwarded if _PUBLIC_PREFIX.match(forwarded) else req.prefix


def links(req: falcon.Request, tenant_id: str) -> Links:
    return Links(public_prefix(req), tenant_id)


def identity(req: falcon.Request) -> Identity:
    return req.context.identity


def context(req: falcon.Request) -> OperationContext:
    return req.context.operation


def instance_id(raw: str) -> str:
    """A path's instance id, or 404. Instances have random (version 4) ids; the deterministic ids of
    quotas and catalog entries are never instances, so they are refused before anything loads them."""
    try:
        parsed = UUID(raw)
    except ValueError:
        raise NotFound(f"Instance {raw[:64]} could not be found.") from None
    if parsed.version != 4:
        raise NotFound(f"Instance {raw} could not be found.")
    return str(parsed)


def accepted(resp: falcon.Response) -> None:
    """Trove's 202 for asynchronous work: an empty body, still typed JSON."""
    resp.status = falcon.HTTP_202
    resp.content_type = falcon.MEDIA_JSON
    resp.text = ""


def time_window(req: falcon.Request) -> tuple[datetime, datetime]:
    """The ``start`` and ``end`` query parameters: required ISO 8601 times (UTC if naive), end after start."""
    bounds = []
    for name in ("start", "end"):
        value = req.get_param(name)
        if not value:
            raise InvalidRequest(f"The '{name}' parameter is required: an ISO 8601 time such as 2026-12-01T00:00:00Z.")
        try:
            bounds.append(window_time(value))
        except ValueError as exc:
            raise InvalidRequest(f"The '{name}' parameter: {exc}.") from None
    start, end = bounds
    if end <= start:
        raise InvalidRequest("The window's end must be later than its start.")
    return start, end
