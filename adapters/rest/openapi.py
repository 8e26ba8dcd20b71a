"""The OpenAPI 3.1 document, generated from the routes' declared operations and marshmallow schemas."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from adapters.rest import responses
from adapters.rest.errors import FAULT_NAMES

TITLE = "trove-es"
DESCRIPTION = ("An event-sourced, Trove-compatible Database-as-a-Service API. Asynchronous calls answer 202 with an "
               "empty body; errors are Trove fault bodies, `{\"<name>\": {\"code\": N, \"message\": \"...\"}}`.")


def _schema_name(schema: Any) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return cls.__name__


def build_document(routes: Iterable[tuple[str, object]], version: str = "1.0") -> dict[str, Any]:
    spec = APISpec(title=TITLE, version=version, openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
                   info={"description": DESCRIPTION})
    spec.components.security_scheme("token", {"type": "apiKey", "in": "header", "name": "X-Auth-Token"})
    spec.components.schema("FaultBody", schema=responses.FaultBody)
    for path, resource in routes:
        operations = {method: _operation(op) for method, op in getattr(resource, "operations", {}).items()}
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in re.findall(r"{(\w+)}", path)]
        spec.path(path=path, operations=operations, parameters=parameters)
    return spec.to_dict()


def _operation(op: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": op.summary, "responses": {}}
    if op.admin:
        operation["description"] = "Admin only."
    if not op.public:
        operation["security"] = [{"token": []}]
    if op.query:
        operation["parameters"] = [{"name": name, "in": "query", "required": False, "schema": {"type": kind},
                                    "description": text} for name, kind, text in op.query]
    if op.request is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.request}}}
    success: dict[str, Any] = {"description": "Accepted; the body is empty." if op.status == 202 else "OK"}
    if op.response is not None:
        success["content"] = {"application/json": {"schema": op.response}}
    operation["responses"][str(op.status)] = success
    for code in sorted({*op.errors, 500}):
        operation["responses"][str(code)] = {
            "description": FAULT_NAMES.get(code, "error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FaultBody"}}}}
    return operation
