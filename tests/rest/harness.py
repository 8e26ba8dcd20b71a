"""The REST API over a real SQLite event store and read model, driven through Falcon's TestClient.

Every response is checked on the way back: a request id, Trove's fault body for errors (never a
traceback), an empty body for 202s, and the declared response schema for everything else, loaded
strictly so an undocumented key fails the test that produced it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
from marshmallow import RAISE

from adapters.billing import billing_queries
from adapters.event_store import event_store_env
from adapters.rest.app import create_app
from adapters.rest.auth import Authenticator
from adapters.rest.errors import FAULT_NAMES
from adapters.rest.local_tokens import LocalTokenAuthority
from adapters.rest.wsgi import write_marks
from adapters.settings import Settings, load_settings
from adapters.sql.engine import create_sql_engine
from adapters.sql.write_marks import marks_seen_from
from projections.backup_view import BackupQueries
from projections.catalog_view import CatalogQueries, CatalogView
from projections.datastore_objects import DatastoreObjectQueries, DatastoreObjectsView
from projections.fault_history import FaultHistory, FaultQueries, OperationReports
from projections.instance_reports import InstanceReports
from projections.instance_view import InstanceView, InstanceViewQueries
from services.instances import InstanceService
from tests.support.inline import InlineProjector, record_build_success

CATALOG = json.loads((Path(__file__).resolve().parents[2] / "adapters" / "default_catalog.json").read_text())
REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TENANT = "t1"


class Api:
    def __init__(self, data_dir: Path, *, authenticator: Authenticator | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.settings: Settings = load_settings({"TROVE_ES_DATA_DIR": str(data_dir),
                                                 "TROVE_ES_READ_YOUR_WRITES_WAIT_S": "0.2", **(environ or {})})
        self.instances = InstanceService(env=event_store_env(self.settings.event_store_url),
                                         quota_defaults=self.settings.quota_defaults, region=self.settings.region)
        self.instances.catalog.seed(CATALOG)
        self.engine = create_sql_engine(self.settings.read_model_url)
        self.faults_engine = create_sql_engine(self.settings.projection_url(FaultHistory.name))
        self.objects_engine = create_sql_engine(self.settings.projection_url(DatastoreObjectsView.name))
        self.projector = InlineProjector(self.instances, self.engine,
                                         [InstanceView(), CatalogView(), FaultHistory(), DatastoreObjectsView()],
                                         engines={FaultHistory.name: self.faults_engine,
                                                  DatastoreObjectsView.name: self.objects_engine})
        self.projector.catch_up()
        self.authority = LocalTokenAuthority.for_data_dir(data_dir)
        self.marks = write_marks(self.settings, self.engine)  # as the API wires them: on SQLite, a file apart
        self.views = InstanceViewQueries(self.engine, self.settings.agent_heartbeat_expiry_s,
                                         marks=marks_seen_from(self.engine, self.marks.engine))
        self.app = create_app(instances=self.instances, instance_views=self.views, catalog=CatalogQueries(self.engine),
                              authenticator=authenticator or self.authority, settings=self.settings,
                              write_marks=self.marks, server_ip="192.0.2.10",
                              billing=billing_queries(self.settings), faults=FaultQueries(self.faults_engine),
                              operation_reports=OperationReports(self.faults_engine),
                              instance_reports=InstanceReports(self.engine, self.views,
                                                               self.settings.agent_heartbeat_expiry_s),
                              datastore_objects=DatastoreObjectQueries(self.objects_engine),
                              backups=BackupQueries(self.engine))
        self.client = falcon.testing.TestClient(self.app)
        self.user_token = self.token(TENANT, "u1")
        self.admin_token = self.token("admin-project", "root", roles=("admin",))

    def close(self) -> None:
        self.instances.close()
        self.engine.dispose()
        self.faults_engine.dispose()

    # Requests ----------------------------------------------------------------------------------------

    def token(self, project: str = TENANT, user: str = "u1", roles: Iterable[str] = (), ttl: int = 3600) -> str:
        return self.authority.issue(project_id=project, user_id=user, roles=roles, ttl_s=ttl)

    def request(self, method: str, path: str, *, token: str | None = "user", **kwargs: Any) -> falcon.testing.Result:
        headers = dict(kwargs.pop("headers", None) or {})
        if token == "user":
            token = self.user_token
        elif token == "admin":
            token = self.admin_token
        if token is not None:
            headers["X-Auth-Token"] = token
        result = self.client.simulate_request(method, path, headers=headers, **kwargs)
        check_response(self.app, method, path, result)
        return result

    def get(self, path: str, **kwargs: Any) -> falcon.testing.Result:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> falcon.testing.Result:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> falcon.testing.Result:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> falcon.testing.Result:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> falcon.testing.Result:
        return self.request("DELETE", path, **kwargs)

    # Fixtures of state ----------------------------------------------------------------------------------

    def create(self, name: str = "db1", tenant: str = TENANT, token: str | None = "user", size: Any = 2,
               **extra: Any) -> dict[str, Any]:
        body = {"instance": {"name": name, "flavorRef": "2", "volume": {"size": size},
                             "datastore": {"type": "mysql"}, **extra}}
        result = self.post(f"/v1.0/{tenant}/instances", json=body, token=token)
        assert result.status_code == 200, result.text
        return result.json["instance"]

    def make_active(self, instance_id: str) -> None:
        """What the task manager and conductor record for a build that worked."""
        record_build_success(self.instances, instance_id, "10.0.0.5")
        self.projector.catch_up()

    def stored_events(self) -> int:
        return self.instances.recorder.max_notification_id() or 0


def _without_fault_details(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: None if k == "details" else _without_fault_details(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_fault_details(v) for v in value]
    return value


def check_response(app: falcon.App, method: str, path: str, result: falcon.testing.Result) -> None:
    assert REQUEST_ID.match(result.headers.get("X-Openstack-Request-Id", "")), result.headers
    # No Python traceback of the API's own, ever; an instance fault's recorded ``details`` may hold the
    # traceback of what failed (for admins): that one is data.
    try:
        shown = json.dumps(_without_fault_details(json.loads(result.text)))
    except ValueError:
        shown = result.text
    assert "Traceback" not in shown, result.text
    code = result.status_code
    if code >= 400:
        body = result.json
        assert isinstance(body, dict) and len(body) == 1, result.text
        (name, fault), = body.items()
        assert name == FAULT_NAMES.get(code, name), (code, result.text)
        assert fault["code"] == code and isinstance(fault["message"], str) and fault["message"], result.text
        return
    found = app._router.find(path.split("?", 1)[0].rstrip("/") or "/")
    operation = getattr(found[0], "operations", {}).get(method.lower()) if found else None
    assert operation is not None, f"{method} {path} has no documented operation"
    assert code == operation.status, (code, operation.status, result.text)
    if operation.response is not None:
        operation.response(unknown=RAISE).load(result.json)
    elif code == 202:
        assert result.text == "", result.text  # Trove's asynchronous actions answer with no body
