"""Flavor and datastore routes, read from the catalog view."""

from __future__ import annotations

from typing import ClassVar

import falcon

from adapters.rest import responses, views
from adapters.rest.resources import Operation, identity, links
from domain.errors import NotFound
from projections.catalog_view import CatalogQueries, DatastoreRecord

READ_ERRORS = (401, 403, 404)


class _Catalog:
    def __init__(self, catalog: CatalogQueries) -> None:
        self._catalog = catalog

    def _datastore(self, name_or_id: str) -> DatastoreRecord:
        found = self._catalog.datastore(name_or_id)
        if found is None:
            raise NotFound(f"Datastore '{name_or_id}' cannot be found.")
        return found


class FlavorsResource(_Catalog):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("List flavors", response=responses.FlavorList, errors=(401, 403))}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        link = links(req, tenant_id)
        resp.media = {"flavors": [views.flavor(f, link) for f in self._catalog.flavors()]}


class FlavorResource(_Catalog):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Show a flavor", response=responses.FlavorEnvelope, errors=READ_ERRORS)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, flavor_id: str) -> None:
        found = self._catalog.flavor(flavor_id)
        if found is None:
            raise NotFound(f"Flavor {flavor_id} could not be found.")
        resp.media = {"flavor": views.flavor(found, links(req, tenant_id))}


class DatastoresResource(_Catalog):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("List datastores with their versions (active ones, unless admin)",
                         response=responses.DatastoreList, errors=(401, 403))}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        admin, link = identity(req).is_admin, links(req, tenant_id)
        stores = [s for s in self._catalog.datastores() if admin or any(v.active for v in s.versions)]
        resp.media = {"datastores": [views.datastore(s, link, admin=admin) for s in stores]}


class DatastoreResource(_Catalog):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Show a datastore, by id or name", response=responses.DatastoreEnvelope,
                         errors=READ_ERRORS)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, datastore: str) -> None:
        found = self._datastore(datastore)
        resp.media = {"datastore": views.datastore(found, links(req, tenant_id), admin=identity(req).is_admin)}


class DatastoreVersionsResource(_Catalog):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("List a datastore's versions", response=responses.VersionList, errors=READ_ERRORS)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, datastore: str) -> None:
        found, admin, link = self._datastore(datastore), identity(req).is_admin, links(req, tenant_id)
        resp.media = {"versions": [views.version(v, link) for v in found.versions if admin or v.active]}


class DatastoreVersionResource(_Catalog):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Show a datastore version, by id or name", response=responses.VersionEnvelope,
                         errors=READ_ERRORS)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, datastore: str,
               version: str) -> None:
        self._datastore(datastore)
        found = self._catalog.version(datastore, version)
        if found is None:
            raise NotFound(f"Datastore version '{version}' cannot be found.")
        resp.media = {"version": views.version(found, links(req, tenant_id))}


class DatastoreVersionByIdResource(_Catalog):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Show a datastore version by its id alone", response=responses.VersionEnvelope,
                         errors=READ_ERRORS)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, version_id: str) -> None:
        found = self._catalog.version_by_id(version_id)
        if found is None:
            raise NotFound(f"Datastore version '{version_id}' cannot be found.")
        resp.media = {"version": views.version(found, links(req, tenant_id))}
