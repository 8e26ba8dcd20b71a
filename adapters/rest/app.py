"""The composition of the REST API: one ``create_app`` that takes its collaborators and wires routes,
middleware and error handling. It builds nothing itself, so tests pass real objects over SQLite and
``wsgi.py`` passes the ones built from settings."""

from __future__ import annotations

from functools import cache, partial
from typing import Any

import falcon
import orjson

from adapters.rest.auth import Authenticator
from adapters.rest.context import host_ip
from adapters.rest.errors import install_error_handling
from adapters.rest.middleware import AuthMiddleware, RequestIdMiddleware
from adapters.rest.openapi import build_document
from adapters.rest.reads import InstanceReads
from adapters.rest.resources.audit import MgmtInstanceEventsResource
from adapters.rest.resources.backups import BackupResource, BackupsResource, InstanceBackupsResource
from adapters.rest.resources.catalog import (
    DatastoreResource,
    DatastoresResource,
    DatastoreVersionByIdResource,
    DatastoreVersionResource,
    DatastoreVersionsResource,
    FlavorResource,
    FlavorsResource,
)
from adapters.rest.resources.datastore_objects import (
    DatabaseResource,
    DatabasesResource,
    RootResource,
    UserAccessResource,
    UserDatabaseAccessResource,
    UserResource,
    UsersResource,
)
from adapters.rest.resources.faults import InstanceFaultsResource, MgmtInstanceFaultsResource
from adapters.rest.resources.instances import (
    InstanceActionResource,
    InstanceResource,
    InstancesDetailResource,
    InstancesResource,
)
from adapters.rest.resources.limits import LimitsResource
from adapters.rest.resources.mgmt import MgmtInstanceResource, MgmtInstancesResource, QuotaResource, UsageResource
from adapters.rest.resources.reports import (
    FaultReportResource,
    OperationLatencyResource,
    SilentGuestsResource,
    StuckBuildsResource,
)
from adapters.rest.resources.versions import (
    HealthcheckResource,
    OpenApiResource,
    VersionResource,
    VersionsResource,
)
from adapters.settings import Settings
from adapters.sql.write_marks import WriteMarks
from projections.backup_view import BackupQueries
from projections.billing_ledger import BillingQueries
from projections.catalog_view import CatalogQueries
from projections.datastore_objects import DatastoreObjectQueries
from projections.fault_history import FaultQueries, OperationReports
from projections.instance_reports import InstanceReports
from projections.instance_view import InstanceViewQueries
from services.datastore_objects import DatastoreObjects
from services.instance_history import InstanceHistory
from services.instances import InstanceService

TENANT = "/v1.0/{tenant_id}"


def create_app(*, instances: InstanceService, instance_views: InstanceViewQueries, catalog: CatalogQueries,
               authenticator: Authenticator, settings: Settings, write_marks: WriteMarks,
               billing: BillingQueries, faults: FaultQueries, instance_reports: InstanceReports,
               operation_reports: OperationReports, datastore_objects: DatastoreObjectQueries,
               backups: BackupQueries, server_ip: str | None = None) -> falcon.App:
    """The WSGI app. ``settings`` supplies the region and the read-your-writes bound."""
    app = falcon.App(middleware=[RequestIdMiddleware(), AuthMiddleware(authenticator, server_ip or host_ip())])
    app.req_options.strip_url_path_trailing_slash = True
    # orjson writes bytes at a tenth of the json module's cost; the OpenAPI document has integer keys.
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(
        dumps=partial(orjson.dumps, option=orjson.OPT_NON_STR_KEYS), loads=orjson.loads)
    install_error_handling(app)

    reads = InstanceReads(instances, instance_views, settings.read_your_writes_wait_s, write_marks)
    routes: list[tuple[str, Any]] = []

    @cache
    def document() -> dict[str, Any]:
        return build_document(routes)

    def route(path: str, resource: Any) -> None:
        routes.append((path, resource))
        app.add_route(path, resource)

    route("/", VersionsResource())
    route("/v1.0", VersionResource())
    route("/healthcheck", HealthcheckResource())
    route("/v1.0/openapi.json", OpenApiResource(document))
    route(f"{TENANT}/instances", InstancesResource(instance_views, reads, instances, settings.region))
    route(f"{TENANT}/instances/detail", InstancesDetailResource(instance_views, reads))
    route(f"{TENANT}/instances/{{instance}}", InstanceResource(reads, instances))
    route(f"{TENANT}/instances/{{instance}}/action", InstanceActionResource(reads, instances))
    route(f"{TENANT}/instances/{{instance}}/faults", InstanceFaultsResource(faults, reads, instance_views))
    route(f"{TENANT}/instances/{{instance}}/backups", InstanceBackupsResource(backups, reads))
    route(f"{TENANT}/backups", BackupsResource(instances, backups, reads))
    route(f"{TENANT}/backups/{{backup}}", BackupResource(instances, backups))
    objects = DatastoreObjects(instances)
    on_instance = (objects, datastore_objects, reads)
    route(f"{TENANT}/instances/{{instance}}/databases", DatabasesResource(*on_instance))
    route(f"{TENANT}/instances/{{instance}}/databases/{{database}}", DatabaseResource(*on_instance))
    route(f"{TENANT}/instances/{{instance}}/users", UsersResource(*on_instance))
    route(f"{TENANT}/instances/{{instance}}/users/{{user}}", UserResource(*on_instance))
    route(f"{TENANT}/instances/{{instance}}/users/{{user}}/databases", UserAccessResource(*on_instance))
    route(f"{TENANT}/instances/{{instance}}/users/{{user}}/databases/{{database}}",
          UserDatabaseAccessResource(*on_instance))
    route(f"{TENANT}/instances/{{instance}}/root", RootResource(*on_instance))
    route(f"{TENANT}/flavors", FlavorsResource(catalog))
    route(f"{TENANT}/flavors/{{flavor_id}}", FlavorResource(catalog))
    route(f"{TENANT}/datastores", DatastoresResource(catalog))
    route(f"{TENANT}/datastores/versions/{{version_id}}", DatastoreVersionByIdResource(catalog))
    route(f"{TENANT}/datastores/{{datastore}}", DatastoreResource(catalog))
    route(f"{TENANT}/datastores/{{datastore}}/versions", DatastoreVersionsResource(catalog))
    route(f"{TENANT}/datastores/{{datastore}}/versions/{{version}}", DatastoreVersionResource(catalog))
    route(f"{TENANT}/limits", LimitsResource(instances))
    route(f"{TENANT}/mgmt/quotas/{{project_id}}", QuotaResource(instances))
    route(f"{TENANT}/mgmt/instances", MgmtInstancesResource(instance_views, instance_reports))
    route(f"{TENANT}/mgmt/instances/{{instance}}", MgmtInstanceResource(instance_views, reads))
    route(f"{TENANT}/mgmt/instances/{{instance}}/faults", MgmtInstanceFaultsResource(faults, reads, instance_views))
    route(f"{TENANT}/mgmt/instances/{{instance}}/events", MgmtInstanceEventsResource(InstanceHistory(instances)))
    route(f"{TENANT}/mgmt/usage", UsageResource(billing))
    route(f"{TENANT}/mgmt/reports/stuck-builds", StuckBuildsResource(instance_reports))
    route(f"{TENANT}/mgmt/reports/silent-guests", SilentGuestsResource(instance_reports))
    route(f"{TENANT}/mgmt/reports/faults", FaultReportResource(operation_reports))
    route(f"{TENANT}/mgmt/reports/operation-latency", OperationLatencyResource(operation_reports))
    return app
