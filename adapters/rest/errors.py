"""Every failure as Trove's fault body, ``{"<name>": {"code": N, "message": "..."}}``, and never a traceback.

One serializer renders every ``falcon.HTTPError``; the handlers below turn what the domain,
validation and authentication raise into those errors, so resources just raise.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
from eventsourcing.persistence import IntegrityError
from marshmallow import ValidationError

from adapters.rest.auth import IdentityUnavailable, InvalidToken
from domain.errors import ActionNotAllowed, DomainError, Forbidden, InvalidRequest, NotFound, QuotaExceeded

log = logging.getLogger(__name__)

# Trove's names (trove.common.wsgi.Fault); anything else is the lower-camel of the status title.
FAULT_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
    409: "conflictingRequest", 413: "overLimit", 415: "badMediaType", 422: "unprocessableEntity",
    500: "instanceFault", 501: "notImplemented", 503: "serviceUnavailable",
}
DEFAULT_MESSAGES = {
    400: "The request could not be understood.",
    404: "The resource could not be found.",
    405: "The method is not allowed for this resource.",
    500: "The server has either erred or is incapable of performing the requested operation.",
}
# Messages quote what the client sent (a flavor id, a name); keep an error body small whatever that was.
MESSAGE_MAX = 1000

_DOMAIN_STATUS: dict[type[DomainError], int] = {
    InvalidRequest: 400, Forbidden: 403, NotFound: 404, QuotaExceeded: 413, ActionNotAllowed: 422,
}


def fault_name(code: int, title: str | None) -> str:
    if code in FAULT_NAMES:
        return FAULT_NAMES[code]
    words = (title or "error").replace("-", " ").split()
    return words[0].lower() + "".join(word.capitalize() for word in words[1:])


def fault_body(code: int, message: str, title: str | None = None) -> dict[str, Any]:
    return {fault_name(code, title): {"code": code, "message": message[:MESSAGE_MAX]}}


def serialize_fault(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    code = error.status_code
    message = error.description or DEFAULT_MESSAGES.get(code) or error.title or "Error."
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(fault_body(code, message, error.title))


def _domain_error(req: falcon.Request, resp: falcon.Response, error: DomainError, params: dict[str, Any]) -> None:
    status = next((code for cls, code in _DOMAIN_STATUS.items() if isinstance(error, cls)), 400)
    raise falcon.HTTPError(falcon.code_to_http_status(status), description=error.message)


def _validation_error(req: falcon.Request, resp: falcon.Response, error: ValidationError,
                      params: dict[str, Any]) -> None:
    raise falcon.HTTPBadRequest(description=f"Invalid request body: {describe(error.messages)}")


def _invalid_token(req: falcon.Request, resp: falcon.Response, error: InvalidToken, params: dict[str, Any]) -> None:
    challenge = getattr(req.context, "auth_challenge", None)
    raise falcon.HTTPUnauthorized(description=str(error) or "The token is not valid.",
                                  challenges=[challenge] if challenge else None)


def _identity_unavailable(req: falcon.Request, resp: falcon.Response, error: IdentityUnavailable,
                          params: dict[str, Any]) -> None:
    log.warning("%s: %s", getattr(req.context, "request_id", "-"), error)
    raise falcon.HTTPServiceUnavailable(description="The identity service is unavailable; try again later.")


def _conflict(req: falcon.Request, resp: falcon.Response, error: IntegrityError, params: dict[str, Any]) -> None:
    raise falcon.HTTPConflict(description="The resource was changed by concurrent requests; try again.")


def _unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]) -> None:
    if isinstance(error, falcon.HTTPError):  # Falcon routes these here only if re-raised oddly; keep them
        raise error
    log.exception("%s: unexpected error on %s %s", getattr(req.context, "request_id", "-"), req.method, req.path)
    raise falcon.HTTPInternalServerError(description=DEFAULT_MESSAGES[500])


def describe(messages: Any, path: str = "") -> str:
    """marshmallow's nested messages as ``instance.volume.size: Not a valid integer.``"""
    if isinstance(messages, dict):
        parts = []
        for key, value in messages.items():
            here = path if key == "_schema" else (f"{path}.{key}" if path else str(key))
            parts.append(describe(value, here))
        return "; ".join(part for part in parts if part)
    if isinstance(messages, list):
        texts = [describe(m, path) if isinstance(m, (dict, list)) else str(m) for m in messages]
        joined = " ".join(texts)
        return f"{path}: {joined}" if path and all(not isinstance(m, (dict, list)) for m in messages) else joined
    return f"{path}: {messages}" if path else str(messages)


def install_error_handling(app: falcon.App) -> None:
    """Register the fault serializer and the handlers, most general first (Falcon picks by MRO)."""
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(DomainError, _domain_error)
    app.add_error_handler(ValidationError, _validation_error)
    app.add_error_handler(InvalidToken, _invalid_token)
    app.add_error_handler(IdentityUnavailable, _identity_unavailable)
    app.add_error_handler(IntegrityError, _conflict)
    app.set_error_serializer(serialize_fault)
