"""The unauthenticated routes: API versions, health, and this API's OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import falcon

from adapters.rest import responses, views
from adapters.rest.resources import Operation, public_prefix


class VersionsResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("List the API versions", response=responses.Versions, public=True)}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = views.versions(public_prefix(req))


class VersionResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Show API version 1.0", response=responses.VersionShow, public=True)}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"version": views.api_version(public_prefix(req))}


class HealthcheckResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Liveness of this API process (oslo healthcheck style: text `OK`)", public=True)}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "OK"


class OpenApiResource:
    operations: ClassVar[dict[str, Operation]] = {"get": Operation("This document", public=True)}

    def __init__(self, document: Callable[[], dict[str, Any]]) -> None:
        self._document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document()
