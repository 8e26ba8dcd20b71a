"""The PostgreSQL manager against a real PostgreSQL server run from this host's binaries.

Most tests share one prepared server (initdb takes a few seconds); each leaves it running. The server's
directories are made under /tmp and opened to the ``postgres`` account, which cannot pass through
pytest's own temporary directories (``/tmp/pytest-of-root`` is 0700).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from domain.statuses import ServiceStatus
from guest.backup_stream import verified_backup, write_backup
from guest.datastore import manager_for
from guest.datastore.base import DatastoreError, InstanceLayout, NewUser, UserInfo
from guest.datastore.postgresql import PostgreSQLManager, installed_versions

INSTALLED = installed_versions()
VERSION = max(INSTALLED, key=lambda v: tuple(int(p) for p in v.split(".")), default=None)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(VERSION is None, reason="no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"),
]

ALICE_PASSWORD = "alice-Secret-4711"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    manager: PostgreSQLManager
    layout: InstanceLayout
    root: Path
    passwords: list[str]  # every password the tests set: none may reach the server's log

    @property
    def port(self) -> int:
        return self.layout.port

    def admin_password(self) -> str:
        return json.loads((self.layout.run_dir / "admin.json").read_text())["password"]

    def connect(self, user: str, password: str, dbname: str = "postgres", **options: object) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname=dbname,
                               connect_timeout=2, autocommit=True, **options)

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return self.connect("os_admin", self.admin_password(), dbname)

    def password(self, secret: str) -> str:
        self.passwords.append(secret)
        return secret


@contextlib.contextmanager
def instance(run_dir_name: str = "run", memory_mb: int = 256) -> Iterator[tuple[InstanceLayout, Path]]:
    """A layout under a fresh /tmp directory, and whatever runs there stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="pgmgr-"))
    root.chmod(0o755)
    layout = InstanceLayout(volume=root / "volume", run_dir=root / run_dir_name, port=free_port(),
                            memory_mb=memory_mb, volume_size_gb=1)
    try:
        yield layout, root
    finally:
        _kill_server(layout)
        shutil.rmtree(root, ignore_errors=True)


def _kill_server(layout: InstanceLayout) -> None:
    with contextlib.suppress(Exception):
        PostgreSQLManager(layout, VERSION or "15").stop()
    with contextlib.suppress(Exception):  # stop failed or could not be asked: make sure nothing is left
        pid = int((layout.volume / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with instance() as (layout, root):
        manager = PostgreSQLManager(layout, VERSION)
        assert manager.status() is ServiceStatus.NEW
        manager.prepare(["shop", "stock"], [NewUser("alice", ALICE_PASSWORD, databases=("shop",))])
        yield Server(manager, layout, root, [ALICE_PASSWORD])


@pytest.fixture
def pg(server: Server) -> Server:
    """The shared server, running: a test that stopped or killed it and failed does not break the next."""
    if server.manager.status() is not ServiceStatus.HEALTHY:
        server.manager.start()
    return server


def postmaster_pid(layout: InstanceLayout) -> int:
    return int((layout.volume / "data" / "postmaster.pid").read_text().split("\n", 1)[0])


# ------------------------------------------------------------------------------------------------ prepare


def test_prepare_creates_databases_and_users_that_connect_over_tcp(pg: Server) -> None:
    assert pg.manager.status() is ServiceStatus.HEALTHY
    assert pg.manager.list_databases() == ["shop", "stock"]
    assert pg.manager.list_users() == [UserInfo("alice", "%", ("shop",))]
    with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
        connection.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        connection.execute("INSERT INTO orders VALUES (1, 'tea')")
        assert connection.execute("SELECT item FROM orders").fetchone() == ("tea",)
        connection.execute("DROP TABLE orders")
    with pytest.raises(psycopg.OperationalError):  # no access to the other database
        pg.connect("alice", ALICE_PASSWORD, "stock").close()
    with pytest.raises(psycopg.OperationalError):
        pg.connect("alice", "wrong-password", "shop").close()


def test_prepare_repeated_is_harmless_and_a_new_manager_finds_the_server(pg: Server) -> None:
    pg.manager.prepare(["shop", "stock"], [NewUser("alice", ALICE_PASSWORD, databases=("shop",))])
    restarted_agent = manager_for("postgresql", pg.layout, VERSION)
    assert restarted_agent.status() is ServiceStatus.HEALTHY
    assert restarted_agent.list_databases() == ["shop", "stock"]
    assert restarted_agent.list_users() == [UserInfo("alice", "%", ("shop",))]
    with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_the_server_runs_as_the_postgres_account_with_a_private_data_directory(pg: Server) -> None:
    data = pg.layout.volume / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        import pwd
        assert data.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        assert Path(f"/proc/{postmaster_pid(pg.layout)}").stat().st_uid == pwd.getpwnam("postgres").pw_uid
    assert (pg.layout.run_dir / f".s.PGSQL.{pg.port}").exists(), "a short run directory gets the Unix socket"
    with pg.admin() as connection:
        assert connection.execute("SHOW port").fetchone() == (str(pg.port),)
        assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert connection.execute("SHOW shared_buffers").fetchone() == ("64MB",)


def test_prepare_after_a_crash_mid_initdb_and_with_a_long_run_directory() -> None:
    """A staging directory left by an initdb that was cut short is made again; a run directory too long for
    a Unix socket gives a TCP-only server."""
    with instance(run_dir_name="r" * 110) as (layout, _):
        layout.volume.mkdir(parents=True)
        (layout.volume / "data.initdb").mkdir()
        (layout.volume / "data.initdb" / "PG_VERSION").write_text("half-written")
        manager = PostgreSQLManager(layout, VERSION)
        manager.prepare(["one"], [])
        assert manager.status() is ServiceStatus.HEALTHY
        assert manager.list_databases() == ["one"]
        assert not (layout.volume / "data.initdb").exists()
        assert not list(layout.run_dir.glob(".s.PGSQL.*"))
        # An agent that died after initdb but before the server was configured and started:
        manager.stop()
        (layout.volume / "data" / "trove.conf").unlink()
        PostgreSQLManager(layout, VERSION).prepare(["one", "two"], [NewUser("u1", "u1-password-x")])
        assert manager.status() is ServiceStatus.HEALTHY
        assert manager.list_databases() == ["one", "two"]
        assert [user.name for user in manager.list_users()] == ["u1"]


def test_a_version_not_installed_fails_prepare_clearly() -> None:
    with instance() as (layout, _):
        manager = PostgreSQLManager(layout, "99.1")
        installed = ", ".join(sorted(INSTALLED, key=lambda v: tuple(int(p) for p in v.split("."))))
        with pytest.raises(DatastoreError) as caught:
            manager.prepare([], [])
        assert str(caught.value) == f"PostgreSQL 99 is not installed on this host (installed: {installed})"
        assert manager.status() is ServiceStatus.NEW


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another account")
def test_a_volume_the_service_account_cannot_reach_is_refused_clearly() -> None:
    with instance() as (layout, root):
        closed = root / "closed"
        closed.mkdir(mode=0o700)
        hidden = InstanceLayout(closed / "volume", layout.run_dir, layout.port, 256, 1)
        with pytest.raises(DatastoreError, match=r"postgres account cannot reach .*closed \(mode 700\)"):
            PostgreSQLManager(hidden, VERSION).prepare([], [])


# ---------------------------------------------------------------------------------------------- lifecycle


def test_status_follows_stop_start_and_a_killed_postmaster(pg: Server) -> None:
    manager = pg.manager
    assert manager.status() is ServiceStatus.HEALTHY
    manager.stop()
    assert manager.status() is ServiceStatus.SHUTDOWN
    manager.stop()  # stopping a stopped server is nothing
    manager.start()
    assert manager.status() is ServiceStatus.HEALTHY
    manager.start()  # starting a running one too

    os.kill(postmaster_pid(pg.layout), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while manager.status() is not ServiceStatus.CRASHED and time.monotonic() < deadline:
        time.sleep(0.1)
    assert manager.status() is ServiceStatus.CRASHED
    manager.start()  # recovers, though the dead postmaster may not be reaped yet
    assert manager.status() is ServiceStatus.HEALTHY
    with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_restart_gives_a_new_postmaster(pg: Server) -> None:
    before = postmaster_pid(pg.layout)
    pg.manager.restart()
    assert pg.manager.status() is ServiceStatus.HEALTHY
    assert postmaster_pid(pg.layout) != before


def test_set_memory_takes_effect_at_the_next_start(pg: Server) -> None:
    pg.manager.set_memory(512)
    with pg.admin() as connection:
        assert connection.execute("SHOW shared_buffers").fetchone() == ("64MB",)
    pg.manager.restart()
    with pg.admin() as connection:
        assert connection.execute("SHOW shared_buffers").fetchone() == ("128MB",)
    pg.manager.set_memory(pg.layout.memory_mb)
    pg.manager.restart()
    with pg.admin() as connection:
        assert connection.execute("SHOW shared_buffers").fetchone() == ("64MB",)


def test_volume_used_bytes_grows_with_data(pg: Server) -> None:
    before = pg.manager.volume_used_bytes()
    assert before > 10 * 2**20  # an empty cluster's catalog and WAL already take tens of MB
    with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
        connection.execute("CREATE TABLE bulk (id int, filler text)")
        connection.execute("INSERT INTO bulk SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 12000) g")
    with pg.admin() as connection:
        connection.execute("CHECKPOINT")  # the table's pages reach its files, not just shared buffers
    try:
        assert pg.manager.volume_used_bytes() - before > 10 * 2**20
    finally:
        with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
            connection.execute("DROP TABLE bulk")


def test_read_only_refuses_a_new_sessions_writes_until_turned_off(pg: Server) -> None:
    with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
        connection.execute("CREATE TABLE notes (body text)")
    try:
        pg.manager.set_read_only(True)
        with pg.connect("alice", ALICE_PASSWORD, "shop") as connection, pytest.raises(
                psycopg.errors.ReadOnlySqlTransaction):
            connection.execute("INSERT INTO notes VALUES ('refused')")
        pg.manager.create_databases(["while_read_only"])  # the agent itself can still manage the server
        pg.manager.delete_database("while_read_only")
        pg.manager.restart()
        with pg.connect("alice", ALICE_PASSWORD, "shop") as connection, pytest.raises(
                psycopg.errors.ReadOnlySqlTransaction):
            connection.execute("INSERT INTO notes VALUES ('still refused after a restart')")
    finally:
        pg.manager.set_read_only(False)
    with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
        connection.execute("INSERT INTO notes VALUES ('accepted')")
        assert connection.execute("SELECT count(*) FROM notes").fetchone() == (1,)
        connection.execute("DROP TABLE notes")


# -------------------------------------------------------------------------------------------- databases


def test_databases_are_listed_created_and_deleted(pg: Server) -> None:
    pg.manager.create_databases(["zeta", "alpha", "shop"])  # shop exists: skipped
    assert pg.manager.list_databases() == ["alpha", "shop", "stock", "zeta"]
    pg.manager.create_databases(["latin"], character_set="LATIN1")
    pg.manager.create_databases(["utf"], character_set="utf8", collate="C.UTF-8")
    with pg.admin() as connection:
        found = connection.execute("SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype "
                                   "FROM pg_database WHERE datname IN ('latin', 'utf') ORDER BY 1").fetchall()
    assert found == [("latin", "LATIN1", "C", "C"), ("utf", "UTF8", "C.UTF-8", "C.UTF-8")]
    with pytest.raises(DatastoreError, match="creating database bad failed"):
        pg.manager.create_databases(["bad"], collate="no_such_locale")
    with pg.connect("alice", ALICE_PASSWORD, "shop"):  # a session in a database does not stop its deletion
        for name in ("zeta", "alpha", "latin", "utf"):
            pg.manager.delete_database(name)
    pg.manager.delete_database("zeta")  # already gone: nothing
    assert pg.manager.list_databases() == ["shop", "stock"]


def test_odd_names_are_quoted_not_interpolated(pg: Server) -> None:
    odd = 'we"ird; DROP DATABASE shop; --'
    pg.manager.create_databases([odd])
    pg.manager.create_users([NewUser("o'brien \"x\"", pg.password("obrien-pass-1"), databases=(odd,))])
    assert odd in pg.manager.list_databases()
    assert pg.manager.list_access("o'brien \"x\"") == [odd]
    with pg.connect("o'brien \"x\"", "obrien-pass-1", odd) as connection:
        assert connection.execute("SELECT current_database()").fetchone() == (odd,)
    pg.manager.delete_user("o'brien \"x\"")
    pg.manager.delete_database(odd)
    assert pg.manager.list_databases() == ["shop", "stock"]


# ------------------------------------------------------------------------------------------------ users


def test_users_are_created_updated_and_deleted(pg: Server) -> None:
    manager = pg.manager
    manager.create_users([NewUser("bob", pg.password("bob-pass-1"), host="10.0.0.%", databases=("shop", "stock"))])
    assert UserInfo("bob", "%", ("shop", "stock")) in manager.list_users()
    with pg.connect("bob", "bob-pass-1", "stock") as connection:
        connection.execute("CREATE TABLE bobs (id int)")  # bob owns something: deleting it must still work

    manager.create_users([NewUser("bob", pg.password("bob-pass-2"))])  # exists: its password is set
    with pg.connect("bob", "bob-pass-2", "shop"):
        pass

    manager.update_user("bob", new_name="robert")  # SCRAM passwords survive a rename
    with pg.connect("robert", "bob-pass-2", "shop"):
        pass
    manager.update_user("robert", new_name="rob", new_host="%", new_password=pg.password("rob-pass-3"))
    with pytest.raises(psycopg.OperationalError):
        pg.connect("robert", "bob-pass-2", "shop").close()
    with pg.connect("rob", "rob-pass-3", "shop"):
        pass
    assert UserInfo("rob", "%", ("shop", "stock")) in manager.list_users()

    manager.change_passwords([NewUser("rob", pg.password("rob-pass-4"))])
    with pg.connect("rob", "rob-pass-4", "shop"):
        pass
    with pytest.raises(DatastoreError, match="user nobody does not exist"):
        manager.change_passwords([NewUser("nobody", pg.password("nobody-pass-1"))])
    with pytest.raises(DatastoreError, match="that user exists"):
        manager.update_user("rob", new_name="alice")

    manager.delete_user("rob")
    manager.delete_user("rob")  # already gone: nothing
    assert [user.name for user in manager.list_users()] == ["alice"]
    with pg.admin("stock") as connection:  # what it owned is kept, now the admin's
        assert connection.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'bobs'").fetchone() == (
            "os_admin",)
        connection.execute("DROP TABLE bobs")


def test_a_user_owning_nothing_is_dropped_cleanly(pg: Server) -> None:
    pg.manager.create_users([NewUser("plain", pg.password("plain-pass-1"))])
    assert UserInfo("plain", "%", ()) in pg.manager.list_users()
    pg.manager.delete_user("plain", host="%")
    assert "plain" not in [user.name for user in pg.manager.list_users()]


def test_a_user_for_a_missing_database_is_refused_without_its_password(pg: Server) -> None:
    secret = pg.password("never-shown-pass-1")
    with pytest.raises(DatastoreError, match="ghost") as caught:
        pg.manager.create_users([NewUser("carl", secret, databases=("ghost",))])
    assert secret not in str(caught.value)
    assert "carl" not in [user.name for user in pg.manager.list_users()]


# ----------------------------------------------------------------------------------------------- access


def test_access_is_granted_listed_and_revoked(pg: Server) -> None:
    manager = pg.manager
    manager.create_databases(["reports"])
    manager.create_users([NewUser("carol", pg.password("carol-pass-1"))])
    try:
        assert manager.list_access("carol") == []
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            pg.connect("carol", "carol-pass-1", "reports").close()

        manager.grant_access("carol", "%", ["reports", "stock"])
        manager.grant_access("carol", "%", ["reports"])  # again: nothing more
        assert manager.list_access("carol") == ["reports", "stock"]
        with pg.connect("carol", "carol-pass-1", "reports") as connection:
            connection.execute("CREATE TABLE figures (n int)")  # PostgreSQL 15: needs CREATE on schema public

        manager.revoke_access("carol", "%", "reports")
        manager.revoke_access("carol", "%", "reports")  # again: nothing
        manager.revoke_access("carol", "%", "no_such_database")
        assert manager.list_access("carol") == ["stock"]
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            pg.connect("carol", "carol-pass-1", "reports").close()
        with pytest.raises(DatastoreError, match="do not exist"):
            manager.grant_access("carol", "%", ["ghost"])
        with pytest.raises(DatastoreError, match="user nobody does not exist"):
            manager.list_access("nobody")
    finally:
        manager.delete_user("carol")
        manager.delete_database("reports")
    assert manager.list_databases() == ["shop", "stock"]


# ------------------------------------------------------------------------------------------------- root


def test_root_is_enabled_and_disabled(pg: Server) -> None:
    manager = pg.manager
    assert manager.is_root_enabled() is False
    manager.enable_root(pg.password("root-pass-1"))
    assert manager.is_root_enabled() is True
    with pg.connect("postgres", "root-pass-1") as connection:
        assert connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
            True,)
    manager.enable_root(pg.password("root-pass-2"))  # a new password replaces the old one
    with pytest.raises(psycopg.OperationalError):
        pg.connect("postgres", "root-pass-1").close()
    with pg.connect("postgres", "root-pass-2"):
        pass
    assert "postgres" not in [user.name for user in manager.list_users()]

    manager.disable_root()
    assert manager.is_root_enabled() is False
    with pytest.raises(psycopg.OperationalError):
        pg.connect("postgres", "root-pass-2").close()
    manager.disable_root()  # again: nothing


# --------------------------------------------------------------------------------------- reserved names


@pytest.mark.parametrize("call, message", [
    (lambda m: m.create_databases(["postgres"]), "postgres is a reserved database name"),
    (lambda m: m.create_databases(["template0"]), "template0 is a reserved database name"),
    (lambda m: m.delete_database("template1"), "template1 is a reserved database name"),
    (lambda m: m.delete_database("os_admin"), "os_admin is a reserved database name"),
    (lambda m: m.create_users([NewUser("os_admin", "x-password-1")]), "os_admin is a reserved user name"),
    (lambda m: m.create_users([NewUser("root", "x-password-1")]), "root is a reserved user name"),
    (lambda m: m.create_users([NewUser("pg_monitor", "x-password-1")]), "pg_monitor is a reserved user name"),
    (lambda m: m.delete_user("postgres"), "postgres is a reserved user name"),
    (lambda m: m.update_user("alice", new_name="os_admin"), "os_admin is a reserved user name"),
    (lambda m: m.update_user("os_admin", new_password="x-password-1"), "os_admin is a reserved user name"),
    (lambda m: m.change_passwords([NewUser("postgres", "x-password-1")]), "postgres is a reserved user name"),
    (lambda m: m.grant_access("alice", "%", ["postgres"]), "postgres is a reserved database name"),
    (lambda m: m.list_access("os_admin"), "os_admin is a reserved user name"),
    (lambda m: m.create_databases(["x" * 64]), "longer than 63 bytes"),
    (lambda m: m.create_users([NewUser("", "x-password-1")]), "cannot be empty"),
])
def test_reserved_and_invalid_names_are_refused(pg: Server, call, message: str) -> None:
    with pytest.raises(DatastoreError, match=message):
        call(pg.manager)


def test_reserved_names_are_refused_before_prepare_touches_anything() -> None:
    with instance() as (layout, _):
        with pytest.raises(DatastoreError, match="os_admin is a reserved user name"):
            PostgreSQLManager(layout, VERSION).prepare(["shop"], [NewUser("os_admin", "x-password-1")])
        assert not layout.volume.exists()


# ---------------------------------------------------------------------------------------------- backups


def test_a_backup_restored_into_a_fresh_instance_brings_back_its_rows_and_users(pg: Server) -> None:
    """Through the guest's own stream (gzip, checksum, verify); the fresh instance already has a database and
    a user of the same names, as a prepare that restores makes them first."""
    pg.manager.create_users([NewUser("bea", pg.password("bea-pass-1"), databases=("stock",))])
    with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
        connection.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        connection.execute("INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 5000) g")
    target = {"kind": "file", "location": str(pg.root / "backups" / "b-1.gz"), "url": None}
    try:
        size, checksum = write_backup(target, pg.manager.backup)
    finally:
        with pg.connect("alice", ALICE_PASSWORD, "shop") as connection:
            connection.execute("DROP TABLE orders")
        pg.manager.delete_user("bea")
    text = gzip.decompress(Path(target["location"]).read_bytes()).decode()
    assert "ALTER ROLE os_admin" not in text and "CREATE ROLE os_admin" not in text, "the admin is not backed up"
    for secret in [pg.admin_password(), *pg.passwords]:
        assert secret not in text, "passwords travel only as SCRAM verifiers"

    with instance() as (layout, _):
        fresh = PostgreSQLManager(layout, VERSION)
        fresh.prepare(["shop"], [NewUser("alice", "prepared-pass-1", databases=("shop",))])
        restore = {"backup_id": "b-1", "source": target, "size": size, "checksum": checksum}
        with verified_backup(restore) as dump:
            fresh.restore(dump)
        assert fresh.list_databases() == ["shop", "stock"]
        assert fresh.list_users() == [UserInfo("alice", "%", ("shop",)), UserInfo("bea", "%", ("stock",))]
        restored = Server(fresh, layout, layout.volume.parent, [])
        with restored.connect("alice", ALICE_PASSWORD, "shop") as connection:  # the backup's password
            assert connection.execute("SELECT count(*), max(item) FROM orders").fetchone() == (5000, "item 999")
            assert connection.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'").fetchone() == (
                "alice",)
        with restored.connect("bea", "bea-pass-1", "stock") as connection:
            assert connection.execute("SELECT current_user").fetchone() == ("bea",)
        with pytest.raises(psycopg.OperationalError):
            restored.connect("bea", "bea-pass-1", "shop").close()
        assert fresh.status() is ServiceStatus.HEALTHY, "the fresh instance's admin still manages it"


# ---------------------------------------------------------------------------------------------- secrets


def test_secrets_stay_private_and_out_of_the_server_log(pg: Server) -> None:
    """Runs last in this module: by now every password the tests set has gone through the server."""
    credentials = pg.layout.run_dir / "admin.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert credentials.stat().st_uid == os.geteuid()
    assert not list(pg.layout.run_dir.glob("*.pw")), "initdb's password file is removed"
    admin_password = pg.admin_password()
    with pg.admin() as connection, contextlib.suppress(psycopg.Error):  # failed statements are logged
        connection.execute("SELECT no_such_column")
    log = (pg.layout.run_dir / "postgresql.log").read_text(errors="replace")
    assert "no_such_column" in log, "the log does record statements that fail: this test would see passwords"
    for secret in [admin_password, *pg.passwords]:
        assert secret not in log
    for config in (pg.layout.volume / "data").glob("*.conf"):
        text = config.read_text()
        for secret in [admin_password, *pg.passwords]:
            assert secret not in text
