"""python-troveclient against the gunicorn-served API: every call it makes must parse.

Nothing here runs the task manager; where an action needs an ACTIVE instance, the test records what
the task manager and conductor would have recorded, in the same SQLite event store.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

from adapters.event_store import event_store_env
from adapters.settings import load_settings
from adapters.sql.engine import create_sql_engine
from projections.catalog_view import CatalogView
from projections.instance_view import InstanceView
from services.instances import InstanceService
from tests.rest.served import ServedApi
from tests.support.inline import InlineProjector, record_build_success

with warnings.catch_warnings():  # osc_lib, imported by the client, warns about its own version module
    warnings.simplefilter("ignore", DeprecationWarning)
    from troveclient import exceptions as trove_exceptions
    from troveclient.v1 import client as trove_client


class Backstage:
    """The parts of the stack this test stands in for: projections and the task manager's records."""

    def __init__(self, data_dir: Path) -> None:
        settings = load_settings({"TROVE_ES_DATA_DIR": str(data_dir)})
        self.instances = InstanceService(env=event_store_env(settings.event_store_url))
        self.engine = create_sql_engine(settings.read_model_url)
        self.projector = InlineProjector(self.instances, self.engine, [InstanceView(), CatalogView()])

    def activate(self, instance_id: str) -> None:
        record_build_success(self.instances, instance_id, "10.1.0.9")
        self.projector.catch_up()

    def close(self) -> None:
        self.instances.close()
        self.engine.dispose()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServedApi, Backstage]]:
    served = ServedApi(tmp_path / "var")
    backstage = Backstage(served.data_dir)
    try:
        yield served, backstage
    finally:
        backstage.close()
        assert served.stop() == 0, served.log()


def _client(served: ServedApi, project: str, token: str) -> Any:
    auth = token_endpoint.Token(f"{served.url}/v1.0/{project}", token)
    return trove_client.Client(session=ks_session.Session(auth=auth))


def test_troveclient_lists_creates_shows_acts_renames_and_deletes(stack: tuple[ServedApi, Backstage]) -> None:
    served, backstage = stack
    trove = _client(served, "t1", served.issue_token("t1", "alice"))
    backstage.projector.catch_up()

    assert {f.name for f in trove.flavors.list()} >= {"m1.small", "m1.medium"}
    assert trove.flavors.get("2").ram == 2048
    mysql = trove.datastores.get("mysql")
    assert {v["name"] for v in mysql.versions} == {"8.0", "5.7"}
    assert {d.name for d in trove.datastores.list()} == {"mysql", "mariadb", "postgresql"}
    version = trove.datastore_versions.get("mysql", "8.0")
    assert trove.datastore_versions.get_by_uuid(version.id).name == "8.0"
    assert {v.name for v in trove.datastore_versions.list("mysql")} == {"8.0", "5.7"}
    (absolute,) = trove.limits.list()
    assert absolute.verb == "ABSOLUTE" and absolute.max_instances == 5

    created = trove.instances.create("tc-db", "2", volume={"size": 2}, datastore="mysql", datastore_version="8.0",
                                     databases=[{"name": "app"}],
                                     users=[{"name": "app", "password": "pw", "databases": [{"name": "app"}]}])
    assert created.status == "BUILD" and created.flavor["id"] == "2" and created.volume == {"size": 2}
    shown = trove.instances.get(created.id)
    assert (shown.name, shown.status, shown.datastore["version"]) == ("tc-db", "BUILD", "8.0")

    second = trove.instances.create("tc-db-2", 2, volume={"size": "1"}, datastore="postgresql")
    backstage.projector.catch_up()
    first_page = trove.instances.list(limit=1)
    assert [i.id for i in first_page] == [created.id] and first_page.next == created.id
    assert [i.id for i in trove.instances.list(marker=first_page.next)] == [second.id]
    assert {i.id for i in trove.instances.list(detailed=True)} == {created.id, second.id}

    with pytest.raises(trove_exceptions.UnprocessableEntity):
        trove.instances.restart(created.id)  # still building
    backstage.activate(created.id)
    active = trove.instances.get(created.id)
    assert (active.status, active.operating_status, active.ip) == ("ACTIVE", "HEALTHY", ["10.1.0.9"])
    trove.instances.restart(created.id)
    assert trove.instances.get(created.id).status == "REBOOT"

    backstage.activate(second.id)
    trove.instances.resize_volume(second.id, 3)
    assert trove.instances.get(second.id).status == "RESIZE"
    third = trove.instances.create("tc-db-3", "2", volume={"size": 1}, datastore="mariadb")
    backstage.activate(third.id)
    trove.instances.resize_instance(third.id, "3")
    assert trove.instances.get(third.id).status == "RESIZE"

    trove.instances.update(created.id, name="tc-renamed")
    assert trove.instances.get(created.id).name == "tc-renamed"

    trove.instances.delete(third.id)
    assert trove.instances.get(third.id).status == "SHUTDOWN"

    with pytest.raises(trove_exceptions.NotFound):
        trove.instances.get(str(uuid.uuid4()))
    with pytest.raises(trove_exceptions.BadRequest, match="Volume size was not specified"):
        trove.instances.create("no-volume", "2", datastore="mysql")
    with pytest.raises(trove_exceptions.NotFound):
        trove.instances.create("no-flavor", "999", volume={"size": 1}, datastore="mysql")


def test_troveclient_admin_calls(stack: tuple[ServedApi, Backstage]) -> None:
    served, backstage = stack
    user = _client(served, "t1", served.issue_token("t1", "alice"))
    admin = _client(served, "admin-project", served.issue_token("admin-project", "root", "admin"))
    created = user.instances.create("tc-db", "2", volume={"size": 2}, datastore="mysql")
    backstage.projector.catch_up()

    usages = {q.resource: q for q in admin.quota.show("t1")}
    assert (usages["instances"].reserved, usages["volumes"].reserved) == (1, 2)
    assert admin.quota.update("t1", {"instances": 9}) == {"instances": 9}
    assert [i.id for i in admin.mgmt_instances.index()] == [created.id]
    assert admin.mgmt_instances.show(created.id).tenant_id == "t1"

    with pytest.raises(trove_exceptions.Forbidden):
        user.quota.update("t1", {"instances": 100})
    with pytest.raises(trove_exceptions.Forbidden):
        user.instances.reset_status(created.id)
    admin.instances.reset_status(created.id)


def test_troveclient_takes_lists_shows_and_deletes_backups(stack: tuple[ServedApi, Backstage]) -> None:
    served, backstage = stack
    trove = _client(served, "t1", served.issue_token("t1", "alice"))
    created = trove.instances.create("tc-db", "2", volume={"size": 2}, datastore="mysql")
    backstage.activate(created.id)

    backup = trove.backups.create("nightly", created.id, description="before the upgrade")
    assert (backup.name, backup.status, backup.instance_id) == ("nightly", "NEW", created.id)
    assert trove.backups.get(backup.id).description == "before the upgrade"
    assert trove.instances.get(created.id).status == "BACKUP"
    backstage.projector.catch_up()
    assert [b.id for b in trove.backups.list()] == [backup.id]
    assert [b.id for b in trove.instances.backups(created.id)] == [backup.id]
    with pytest.raises(trove_exceptions.UnprocessableEntity):
        trove.backups.delete(backup.id)  # still NEW: Trove refuses it too
    with pytest.raises(trove_exceptions.NotFound):
        trove.backups.get("00000000-0000-4000-8000-000000000000")
