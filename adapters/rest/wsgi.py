"""The API as a WSGI application built from settings: ``gunicorn adapters.rest.wsgi:application``.

The app is built on a worker's first request, in that worker: eventsourcing applications and SQL
connection pools must not cross a fork, so nothing is built at import time (gunicorn's master may
import this module before forking its workers).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import falcon
from sqlalchemy import Engine

from adapters.billing import billing_queries
from adapters.bootstrap import marks_database, projection_engine, read_model_engine, secret_drop
from adapters.event_store import open_application
from adapters.rest.app import create_app
from adapters.rest.auth import Authenticator
from adapters.rest.errors import fault_body
from adapters.rest.keystone import KeystoneAuthenticator
from adapters.rest.local_tokens import LocalTokenAuthority
from adapters.settings import Settings, load_settings
from adapters.sql.engine import read_only
from adapters.sql.schema import create_tables
from adapters.sql.write_marks import WriteMarks, marks_seen_from
from projections.backup_view import BackupQueries
from projections.catalog_view import CatalogQueries
from projections.catalog_view import metadata as catalog_metadata
from projections.datastore_objects import DatastoreObjectQueries, DatastoreObjectsView
from projections.datastore_objects import metadata as objects_metadata
from projections.fault_history import FaultHistory, FaultQueries, OperationReports
from projections.fault_history import metadata as fault_metadata
from projections.instance_reports import InstanceReports
from projections.instance_view import InstanceViewQueries
from projections.instance_view import metadata as instance_metadata
from projections.instance_view import write_marks as instance_write_marks
from services.instances import InstanceService

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def build_authenticator(settings: Settings) -> Authenticator:
    if settings.auth_mode == "keystone":
        return KeystoneAuthenticator(settings.keystone_url, settings.keystone_cache_s)
    return LocalTokenAuthority.for_data_dir(settings.data_dir)


def build_api(settings: Settings) -> falcon.App:
    """The real app: the event store and read models the settings name, and their authenticator."""
    instances = open_application(InstanceService, settings.event_store_url,
                                 quota_defaults=settings.quota_defaults, region=settings.region,
                                 secret_drop=secret_drop(settings))
    engine = read_model_engine(settings)
    marks = write_marks(settings, engine)
    marks_table = marks_seen_from(engine, marks.engine)
    # The API may start before the projections: their tables must exist for reads to answer at all.
    create_tables(engine, instance_metadata)
    create_tables(engine, catalog_metadata)
    faults_engine = projection_engine(settings, FaultHistory.name)
    create_tables(faults_engine, fault_metadata)
    faults = read_only(faults_engine)
    objects_engine = projection_engine(settings, DatastoreObjectsView.name)
    create_tables(objects_engine, objects_metadata)
    reader = read_only(engine)
    views = InstanceViewQueries(reader, settings.agent_heartbeat_expiry_s, marks=marks_table)
    return create_app(instances=instances, instance_views=views, catalog=CatalogQueries(reader),
                      authenticator=build_authenticator(settings), settings=settings,
                      write_marks=marks, billing=billing_queries(settings),
                      faults=FaultQueries(faults), operation_reports=OperationReports(faults),
                      instance_reports=InstanceReports(reader, views, settings.agent_heartbeat_expiry_s),
                      datastore_objects=DatastoreObjectQueries(read_only(objects_engine)),
                      backups=BackupQueries(reader))


def write_marks(settings: Settings, view_engine: Engine) -> WriteMarks:
    marks_engine = marks_database(settings)
    create_tables(marks_engine, instance_metadata, tables=[instance_write_marks])
    return WriteMarks(marks_engine, view=view_engine)


class LazyApplication:
    """Builds the real app on first use in each process, then delegates every request to it.

    A build that fails (the database is not reachable yet) answers 503 in Trove's fault body and is
    tried again on the next request, rather than leaving a worker that can never serve.
    """

    def __init__(self, factory: Callable[[], WSGIApp]) -> None:
        self._factory = factory
        self._app: WSGIApp | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        app = self._app
        if app is None or self._pid != os.getpid():
            try:
                app = self._build()
            except Exception:
                log.exception("the API could not be built; answering 503 until it can")
                body = json.dumps(fault_body(503, "The service is starting or its database is unavailable; "
                                                  "try again later.")).encode()
                start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                                           ("Content-Length", str(len(body))), ("Retry-After", "1")])
                return [body]
        return app(environ, start_response)

    def _build(self) -> WSGIApp:
        with self._lock:
            if self._app is None or self._pid != os.getpid():
                self._app = self._factory()
                self._pid = os.getpid()
            return self._app


application = LazyApplication(lambda: build_api(load_settings()))
