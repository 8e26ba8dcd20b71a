"""Real instances: ``trove-es up`` with the local compute driver, where each instance is a guest agent and a
real PostgreSQL or MariaDB server on this host. A user creates one through the API, with a database and a
user, and connects to it with that user's password at the address and port its view shows."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
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
from tests.support.stack import read_topic

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not datastore_binaries_installed(),
                                 reason="the PostgreSQL and MariaDB server binaries are not installed")]

PASSWORD = "An0ther-pa55word-for-the-app"
ANALYST_PASSWORD = "analyst-Pa55-word"
SHOPPER_PASSWORD = "shopper-Pa55-word"
# Every password this module's tests give or get; the last test looks for each everywhere the stack writes.
SECRETS = [PASSWORD, ANALYST_PASSWORD, SHOPPER_PASSWORD]


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


def _create(stack: FullStack, tenant: str, token: str, datastore: str, restore: str | None = None) -> dict[str, Any]:
    body = {"instance": {"name": f"{datastore}-real", "flavorRef": "1", "volume": {"size": 1},
                         "datastore": {"type": datastore},
                         "databases": [{"name": "inventory"}],
                         "users": [{"name": "app", "password": PASSWORD, "databases": [{"name": "inventory"}]}]}}
    if restore is not None:
        body["instance"]["restorePoint"] = {"backupRef": restore}
    code, created, _ = stack.call("POST", f"/v1.0/{tenant}/instances", token, body)
    assert code == 200, created
    assert PASSWORD not in str(created)
    instance_id = created["instance"]["id"]

    def settled() -> bool:
        shown = stack.show(tenant, token, instance_id)
        return isinstance(shown, dict) and shown["status"] in ("ACTIVE", "ERROR")

    stack.wait(settled, f"instance {instance_id} to be built", 120)
    shown = stack.show(tenant, token, instance_id)
    assert isinstance(shown, dict) and shown["status"] == "ACTIVE", f"{shown}\n{stack.worker_logs()}"
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

    # kill -9 of the database server: the guest's probes report it, and the restart action brings it back.
    home = local_stack.data_dir / "local-compute" / shown["id"]
    postmaster = int((home / "volume" / "data" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    local_stack.wait(lambda: local_stack.show(tenant, token, shown["id"])["operating_status"] == "SHUTDOWN",
                     "operating_status to follow the crashed server", 60)
    assert _rows(host, port) is None
    base = f"/v1.0/{tenant}/instances/{shown['id']}"
    _done(local_stack, token, "POST", f"{base}/action", {"restart": {}})
    local_stack.wait(lambda: local_stack.show(tenant, token, shown["id"])["operating_status"] == "HEALTHY",
                     "the restarted server to be healthy", 60)
    assert _rows(host, port) == 1, "the restarted server serves the same rows"

    # Databases, users and root through Trove's routes, carried out by the guest on the real server.
    root = _done(local_stack, token, "POST", f"{base}/root", code=200)
    SECRETS.append(root["user"]["password"])
    assert root["user"]["name"] == "postgres"

    def catalogue(query: str) -> set[str]:
        with psycopg.connect(host=host, port=port, user="postgres", password=root["user"]["password"],
                             dbname="postgres", connect_timeout=5) as connection:
            return {row[0] for row in connection.execute(query)}

    assert catalogue("SELECT rolname FROM pg_roles WHERE rolsuper AND rolname = current_user") == {"postgres"}
    _done(local_stack, token, "POST", f"{base}/databases", {"databases": [{"name": "reports"}, {"name": "scratch"}]})
    assert {"reports", "scratch"} <= catalogue("SELECT datname FROM pg_database")
    _done(local_stack, token, "DELETE", f"{base}/databases/scratch")
    assert "scratch" not in catalogue("SELECT datname FROM pg_database"), "dropped on the server itself"
    _done(local_stack, token, "POST", f"{base}/users", {"users": [
        {"name": "analyst", "password": ANALYST_PASSWORD, "databases": [{"name": "reports"}]}]})
    local_stack.wait(lambda: local_stack.call("GET", f"{base}/users/analyst", token)[0] == 200, "analyst listed")
    code, listed, _ = local_stack.call("GET", f"{base}/databases", token)  # projected before the user was
    assert code == 200 and [d["name"] for d in listed["databases"]] == ["inventory", "reports"]
    assert "analyst" in catalogue("SELECT rolname FROM pg_roles")
    with psycopg.connect(host=host, port=port, user="analyst", password=ANALYST_PASSWORD, dbname="reports",
                         connect_timeout=5) as connection:
        assert connection.execute("SELECT current_user").fetchone() == ("analyst",)
    _done(local_stack, token, "DELETE", f"{base}/users/analyst")
    assert "analyst" not in catalogue("SELECT rolname FROM pg_roles")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=host, port=port, user="analyst", password=ANALYST_PASSWORD, dbname="reports",
                        connect_timeout=3)

    agent_log = (home / "agent.log").read_text(errors="replace")
    assert not any(secret in agent_log for secret in SECRETS)
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
    _done(local_stack, token, "DELETE", f"{base}/users/app/databases/archive")
    with pymysql.connect(host=host, port=port, user="app", password=PASSWORD, connect_timeout=5) as revoked, \
            revoked.cursor() as cursor, pytest.raises(pymysql.err.OperationalError) as denied:
        cursor.execute("SELECT COUNT(*) FROM archive.kept")
    assert denied.value.args[0] == 1142, "a real permission error from the server"
    _done(local_stack, token, "PUT", f"{base}/users/app/databases", {"databases": [{"name": "archive"}]})
    _done(local_stack, token, "PUT", f"{base}/users", {"users": [{"name": "app", "password": ANALYST_PASSWORD}]})
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=host, port=port, user="app", password=PASSWORD, connect_timeout=3)
    root = _done(local_stack, token, "POST", f"{base}/root", code=200)
    SECRETS.append(root["user"]["password"])
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


def test_a_user_creates_postgresql_with_troveclient_and_connects_with_psql(local_stack: FullStack) -> None:
    """The issue's "done when": python-troveclient creates it with a database and a user; psql connects."""
    import warnings

    from keystoneauth1 import session as ks_session
    from keystoneauth1 import token_endpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from troveclient.v1 import client as trove_client

    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = local_stack.token(tenant, "grace")
    trove = trove_client.Client(session=ks_session.Session(auth=token_endpoint.Token(
        f"{local_stack.url}/v1.0/{tenant}", token)))
    created = trove.instances.create("shop", "1", volume={"size": 1}, datastore="postgresql",
                                     databases=[{"name": "shop"}],
                                     users=[{"name": "shopper", "password": SHOPPER_PASSWORD,
                                             "databases": [{"name": "shop"}]}])
    shown = local_stack.wait_status(tenant, token, created.id, "ACTIVE", timeout=120)
    port = str(shown["addresses"][0]["port"])
    answer = subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", "shopper", "-d", "shop", "-tA", "-c",
                             "CREATE TABLE basket (item text); INSERT INTO basket VALUES ('tea'); "
                             "SELECT current_user || ':' || count(*) FROM basket"],
                            env={**os.environ, "PGPASSWORD": SHOPPER_PASSWORD, "PGCONNECT_TIMEOUT": "5"},
                            capture_output=True, text=True, timeout=30, check=False)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip().splitlines()[-1] == "shopper:1"
    assert [d.name for d in trove.databases.list(created.id)] == ["shop"]
    assert [u.name for u in trove.users.list(created.id)] == ["shopper"]
    trove.instances.delete(created.id)
    local_stack.wait_status(tenant, token, created.id, 404, timeout=90)


def _connect(datastore: str, host: str, port: int) -> Any:
    if datastore == "postgresql":
        return psycopg.connect(host=host, port=port, user="app", password=PASSWORD, dbname="inventory",
                               connect_timeout=5, autocommit=True)
    return pymysql.connect(host=host, port=port, user="app", password=PASSWORD, database="inventory",
                           connect_timeout=5, autocommit=True)


@pytest.mark.parametrize("datastore", ["postgresql", "mysql"])
def test_a_backup_taken_through_the_api_restores_into_a_new_instance_with_the_same_rows(
        local_stack: FullStack, datastore: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = local_stack.token(tenant, "ada")
    source = _create(local_stack, tenant, token, datastore)
    with _connect(datastore, *_endpoint(source)) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE orders (id int PRIMARY KEY, item varchar(40))")
        cursor.execute("INSERT INTO orders VALUES (1, 'bolt'), (2, 'nut'), (3, 'washer')")

    code, answer, _ = local_stack.call("POST", f"/v1.0/{tenant}/backups", token,
                                       {"backup": {"name": "nightly", "instance": source["id"]}})
    assert code == 202 and answer["backup"]["status"] == "NEW", answer
    backup_id = answer["backup"]["id"]

    def backup_status() -> str:
        return local_stack.call("GET", f"/v1.0/{tenant}/backups/{backup_id}", token)[1]["backup"]["status"]

    local_stack.wait(lambda: backup_status() in ("COMPLETED", "FAILED"), "the backup to be taken", 120)
    shown = local_stack.call("GET", f"/v1.0/{tenant}/backups/{backup_id}", token)[1]["backup"]
    assert shown["status"] == "COMPLETED", f"{shown}\n{local_stack.worker_logs()}"
    assert shown["size"] > 0 and Path(shown["locationRef"]).is_file()

    restored = _create(local_stack, tenant, token, datastore, restore=backup_id)
    with _connect(datastore, *_endpoint(restored)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id, item FROM orders ORDER BY id")
        assert [tuple(row) for row in cursor.fetchall()] == [(1, "bolt"), (2, "nut"), (3, "washer")]

    _delete(local_stack, tenant, token, source["id"])
    _delete(local_stack, tenant, token, restored["id"])
    assert local_stack.call("DELETE", f"/v1.0/{tenant}/backups/{backup_id}", token)[0] == 202
    local_stack.wait(lambda: local_stack.call("GET", f"/v1.0/{tenant}/backups/{backup_id}", token)[0] == 404,
                     "the backup to be deleted")
    assert not Path(shown["locationRef"]).exists()


def test_no_password_reaches_an_event_a_notification_a_log_or_a_read_model(local_stack: FullStack) -> None:
    """After the tests above (same module, same stack): every place the control plane writes is scanned."""
    secrets = [secret.encode() for secret in SECRETS]
    settings = local_stack.settings

    def clean(what: str, blob: bytes) -> None:
        assert not any(secret in blob for secret in secrets), f"a password is in {what}"

    for notification in local_stack.store.recorder.select_notifications(1, 1_000_000):
        clean(f"stored event {notification.id} ({notification.topic})", notification.state)
    for topic in (settings.topics.events, settings.topics.notifications_info, settings.topics.notifications_error,
                  settings.topics.conductor):
        for record in read_topic(settings.kafka_bootstrap_servers, topic, idle_s=1.0):
            clean(f"{topic} offset {record.offset}", record.value or b"")
    for log_file in [*(local_stack.data_dir / "logs").glob("*.log"),
                     *(local_stack.data_dir / "local-compute").glob("*/agent.log")]:
        clean(str(log_file), log_file.read_bytes())
    read_models = settings.read_model_url.replace("postgresql+psycopg://", "postgresql://")

    def drops_left() -> int:
        with psycopg.connect(read_models) as connection:
            return connection.execute("SELECT count(*) FROM guest_secret_drops").fetchone()[0]

    # Even sealed, a password stays only while its operation runs: every one here has ended.
    local_stack.wait(lambda: drops_left() == 0, "the secret drop to be emptied")
    with psycopg.connect(read_models) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert "instance_view" in tables and "guest_secret_drops" in tables
        for table in tables:
            for (row,) in connection.execute(f'SELECT t::text FROM "{table}" t'):
                clean(f"read model table {table}", row.encode())
