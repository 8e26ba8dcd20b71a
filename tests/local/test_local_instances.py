"""Real instances: ``trove-es up`` with the local compute driver, where each instance is a guest agent and a
real PostgreSQL or MariaDB server on this host. A user creates one through the API, with a database and a
user, and connects to it with that user's password at the address and port its view shows."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from adapters.compute.local import datastore_binaries_installed, kill_processes_under
from adapters.kafka.broker import EmbeddedBroker
from tests.conftest import fresh_database
from tests.e2e.full_stack import FullStack

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not datastore_binaries_installed(),
                                 reason="the PostgreSQL and MariaDB server binaries are not installed")]

PASSWORD = "An0ther-pa55word-for-the-app"
ANALYST_PASSWORD = "analyst-Pa55-word"


# A package of its own: its stack runs after the e2e package's has stopped, not beside it (each holds
# connections to the shared PostgreSQL service, whose limit two stacks and a suite together can reach).
@pytest.fixture(scope="module")
def local_stack(broker: EmbeddedBroker, postgres_admin: str) -> Iterator[FullStack]:
    # Not under pytest's own temporary directory: the datastores' accounts cannot traverse that (0700).
    work_dir = Path(tempfile.mkdtemp(prefix="trove-es-local-", dir="/tmp"))
    work_dir.chmod(0o755)
    running = None
    try:
        with fresh_database(postgres_admin) as database_url:
            running = FullStack(work_dir, broker.bootstrap_servers, database_url, TROVE_ES_COMPUTE_DRIVER="local",
                                TROVE_ES_REPORT_INTERVAL_S="1", TROVE_ES_USAGE_TIMEOUT_S="120",
                                TROVE_ES_LOCAL_COMPUTE_PORTS="23100-23199")
            try:
                yield running
            finally:
                code = running.stop()
            assert code == 0, f"`trove-es up` exited with {code}:\n{running.up.log()}"
    finally:
        # Instances outlive the control plane by design; a test run must not leave its databases behind.
        kill_processes_under(work_dir)
        shutil.rmtree(work_dir, ignore_errors=True)


def _create(stack: FullStack, tenant: str, token: str, datastore: str) -> dict[str, Any]:
    body = {"instance": {"name": f"{datastore}-real", "flavorRef": "1", "volume": {"size": 1},
                         "datastore": {"type": datastore},
                         "databases": [{"name": "inventory"}],
                         "users": [{"name": "app", "password": PASSWORD, "databases": [{"name": "inventory"}]}]}}
    code, created, _ = stack.call("POST", f"/v1.0/{tenant}/instances", token, body)
    assert code == 200, created
    assert PASSWORD not in str(created)
    shown = stack.wait_status(tenant, token, created["instance"]["id"], "ACTIVE", timeout=120)
    assert isinstance(shown, dict)
    return shown


def _endpoint(shown: dict[str, Any]) -> tuple[str, int]:
    address = shown["addresses"][0]
    assert address["address"] == "127.0.0.1" and shown["ip"] == ["127.0.0.1"]
    return address["address"], address["port"]


def _done(stack: FullStack, token: str, method: str, path: str, body: Any = None, code: int = 202) -> Any:
    """Call the API, then wait for the operation it opened to be closed by the guest; the answer's body."""
    answered, answer, headers = stack.call(method, path, token, body)
    assert answered == code, answer
    instance_id = path.split("/instances/")[1].split("/")[0]
    request_id = headers["X-Openstack-Request-Id"]
    stack.wait(lambda: bool(stack.closing_events(instance_id, request_id)), f"{method} {path} to be done", 90)
    closed = stack.wait_closed(instance_id, request_id)
    assert type(closed).__name__ == "OperationSucceeded", getattr(closed, "message", closed)
    return answer


def _delete(stack: FullStack, tenant: str, token: str, instance_id: str) -> None:
    code, _, _ = stack.call("DELETE", f"/v1.0/{tenant}/instances/{instance_id}", token)
    assert code == 202
    stack.wait_status(tenant, token, instance_id, 404, timeout=90)
    home = stack.data_dir / "local-compute" / instance_id
    stack.wait(lambda: not home.exists(), "the instance's files to be removed")


def test_a_postgresql_instance_is_a_real_server_its_user_can_use(local_stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = local_stack.token(tenant, "ada")
    shown = _create(local_stack, tenant, token, "postgresql")
    host, port = _endpoint(shown)
    with psycopg.connect(host=host, port=port, user="app", password=PASSWORD, dbname="inventory",
                         connect_timeout=5, autocommit=True) as connection:
        connection.execute("CREATE TABLE parts (id int PRIMARY KEY, name text)")
        connection.execute("INSERT INTO parts VALUES (1, 'bolt')")
        assert connection.execute("SELECT name FROM parts").fetchone() == ("bolt",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=host, port=port, user="app", password="wrong", dbname="inventory", connect_timeout=5)

    def used() -> float:
        shown_now = local_stack.show(tenant, token, shown["id"])
        return shown_now["volume"].get("used", 0.0) if isinstance(shown_now, dict) else 0.0

    # The guest measures its data directory (a fresh PostgreSQL cluster is some tens of MB) and reports it.
    local_stack.wait(lambda: 0.0 < used() < 1.0, "the show to give the volume's real use")

    code, _, headers = local_stack.call("POST", f"/v1.0/{tenant}/instances/{shown['id']}/action", token,
                                        {"restart": {}})
    assert code == 202
    restart = headers["X-Openstack-Request-Id"]
    local_stack.wait(lambda: bool(local_stack.closing_events(shown["id"], restart)), "the restart to end", 90)
    assert type(local_stack.wait_closed(shown["id"], restart)).__name__ == "OperationSucceeded"
    local_stack.wait_status(tenant, token, shown["id"], "ACTIVE", timeout=90)
    assert _rows(host, port) == 1, "the restarted server serves the same rows"

    # Databases, users and root through Trove's routes, carried out by the guest on the real server.
    base = f"/v1.0/{tenant}/instances/{shown['id']}"
    _done(local_stack, token, "POST", f"{base}/databases", {"databases": [{"name": "reports"}]})
    _done(local_stack, token, "POST", f"{base}/users", {"users": [
        {"name": "analyst", "password": ANALYST_PASSWORD, "databases": [{"name": "reports"}]}]})
    local_stack.wait(lambda: local_stack.call("GET", f"{base}/users/analyst", token)[0] == 200, "analyst listed")
    code, listed, _ = local_stack.call("GET", f"{base}/databases", token)  # projected before the user was
    assert code == 200 and [d["name"] for d in listed["databases"]] == ["inventory", "reports"]
    with psycopg.connect(host=host, port=port, user="analyst", password=ANALYST_PASSWORD, dbname="reports",
                         connect_timeout=5) as connection:
        assert connection.execute("SELECT current_user").fetchone() == ("analyst",)
    root = _done(local_stack, token, "POST", f"{base}/root", code=200)
    assert root["user"]["name"] == "postgres"
    with psycopg.connect(host=host, port=port, user="postgres", password=root["user"]["password"],
                         dbname="postgres", connect_timeout=5) as connection:
        assert connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    _done(local_stack, token, "DELETE", f"{base}/users/analyst")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=host, port=port, user="analyst", password=ANALYST_PASSWORD, dbname="reports",
                        connect_timeout=3)

    secrets = (PASSWORD, ANALYST_PASSWORD, root["user"]["password"])
    for log_file in (local_stack.data_dir / "logs").glob("*.log"):
        text = log_file.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), f"a password is in {log_file.name}"
    home = local_stack.data_dir / "local-compute" / shown["id"]
    agent_log = (home / "agent.log").read_text(errors="replace")
    assert not any(secret in agent_log for secret in secrets)
    _delete(local_stack, tenant, token, shown["id"])
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=host, port=port, user="app", password=PASSWORD, dbname="inventory", connect_timeout=3)


def _rows(host: str, port: int) -> int | None:
    try:
        with psycopg.connect(host=host, port=port, user="app", password=PASSWORD, dbname="inventory",
                             connect_timeout=2) as connection:
            return connection.execute("SELECT count(*) FROM parts").fetchone()[0]
    except psycopg.OperationalError:
        return None


def test_a_mysql_instance_is_a_real_mariadb_server_its_user_can_use(local_stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = local_stack.token(tenant, "grace")
    shown = _create(local_stack, tenant, token, "mysql")
    host, port = _endpoint(shown)
    connection = pymysql.connect(host=host, port=port, user="app", password=PASSWORD, database="inventory",
                                 connect_timeout=5, autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE parts (id int PRIMARY KEY, name varchar(32))")
            cursor.execute("INSERT INTO parts VALUES (1, 'nut')")
            cursor.execute("SELECT name FROM parts")
            assert cursor.fetchone() == ("nut",)
            # The user was given its own database, not the server.
            with pytest.raises(pymysql.err.OperationalError):
                cursor.execute("CREATE DATABASE other")
    finally:
        connection.close()

    base = f"/v1.0/{tenant}/instances/{shown['id']}"
    _done(local_stack, token, "POST", f"{base}/databases", {"databases": [{"name": "archive"}]})
    _done(local_stack, token, "PUT", f"{base}/users/app/databases", {"databases": [{"name": "archive"}]})

    def access() -> list[str]:
        code, listed, _ = local_stack.call("GET", f"{base}/users/app/databases", token)
        assert code == 200, listed
        return [d["name"] for d in listed["databases"]]

    # The lists are a projection of the operations: they follow the operation's end, not with it.
    local_stack.wait(lambda: access() == ["archive", "inventory"], "the grant to be listed")
    with pymysql.connect(host=host, port=port, user="app", password=PASSWORD, database="archive",
                         connect_timeout=5) as granted, granted.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (id int)")
    _done(local_stack, token, "PUT", f"{base}/users", {"users": [{"name": "app", "password": ANALYST_PASSWORD}]})
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=host, port=port, user="app", password=PASSWORD, connect_timeout=3)
    root = _done(local_stack, token, "POST", f"{base}/root", code=200)
    with pymysql.connect(host=host, port=port, user="root", password=root["user"]["password"],
                         connect_timeout=5) as as_root, as_root.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM archive.kept")
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT @@innodb_buffer_pool_size")
        small_pool = cursor.fetchone()[0]

    # A bigger flavor: the guest rewrites the server's memory settings and restarts it; a bigger volume.
    _done(local_stack, token, "POST", f"{base}/action", {"resize": {"flavorRef": "2"}})
    _done(local_stack, token, "POST", f"{base}/action", {"resize": {"volume": {"size": 2}}})
    resized = local_stack.wait_status(tenant, token, shown["id"], "ACTIVE")
    assert resized["flavor"]["id"] == "2" and resized["volume"]["size"] == 2
    with pymysql.connect(host=host, port=port, user="root", password=root["user"]["password"],
                         connect_timeout=5) as as_root, as_root.cursor() as cursor:
        cursor.execute("SELECT @@innodb_buffer_pool_size")
        assert cursor.fetchone()[0] > small_pool, "m1.small's memory, not m1.tiny's"
    home = local_stack.data_dir / "local-compute" / shown["id"]
    assert '"volume_size_gb": 2' in (home / "run" / "agent-state.json").read_text(), "the guest's new limit"
    _delete(local_stack, tenant, token, shown["id"])
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=host, port=port, user="app", password=PASSWORD, connect_timeout=3)
