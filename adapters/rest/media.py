"""Reading a request body: JSON only, bounded in size, and always a JSON object."""

from __future__ import annotations

import json
from typing import Any

import falcon
from marshmallow import Schema

MAX_BODY_BYTES = 64 * 1024


def json_object(req: falcon.Request) -> dict[str, Any]:
    """The body as a dict, or the 4xx that says why not (never a 500, whatever the bytes)."""
    content_type = req.content_type
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise falcon.HTTPUnsupportedMediaType(description="Request bodies must be JSON (application/json).")
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(description=f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    if not raw.strip():
        raise falcon.HTTPBadRequest(description="The request body is empty; a JSON object is required.")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise falcon.HTTPBadRequest(description="The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(description="The request body must be a JSON object.")
    return body


def load(schema: Schema, req: falcon.Request) -> dict[str, Any]:
    """The body validated by ``schema``; a ``ValidationError`` becomes a 400 in the error handlers."""
    return schema.load(json_object(req))
