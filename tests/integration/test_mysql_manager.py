"""The MySQL manager against a real MariaDB server (this host's ``mariadbd``), run as the ``mysql`` account on a
free port in a throwaway directory: never the host's own MariaDB on 3306.

One prepared server is shared by most tests (each starts from a healthy server); the tests that need a
server of their own (a fresh prepare, a resumed one) make one. Directories are made under /tmp with 0755
parents, as the ``mysql`` account must traverse them (pytest's tmp_path is private to root)."""

from __future__ import annotations

import gzip
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest

from domain.statuses import ServiceStatus
from guest.backup_stream import verified_backup, write_backup
from guest.datastore import manager_for
from guest.datastore.base import DatastoreError, InstanceLayout, NewUser, UserInfo
from guest.datastore.mysql import MARIADBD, MySQLManager

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (MARIADBD.exists() and Path("/usr/bin/mariadb-install-db").exists()),
                       reason=f"MariaDB is not installed here ({MARIADBD} and /usr/bin/mariadb-install-db)"),
]

ALICE_PASSWORD = "alice-Secret-4f1c9e"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect(manager: MySQLManager, user: str, password: str, database: str | None = None) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=manager.layout.port, user=user, password=password,
                           database=database, connect_timeout=2, autocommit=True)


def admin_password(manager: MySQLManager) -> str:
    return json.loads((manager.layout.run_dir / "admin.json").read_text())["password"]


def admin(manager: MySQLManager) -> pymysql.Connection:
    return connect(manager, "os_admin", admin_password(manager))


def scalar(connection: pymysql.Connection, sql: str, args: tuple[object, ...] | None = None) -> object:
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        row = cursor.fetchone()
        return None if row is None else row[0]


def can_login(manager: MySQLManager, user: str, password: str) -> bool:
    try:
        connect(manager, user, password).close()
    except pymysql.err.OperationalError as exc:
        assert exc.args[0] in (1045, 1698), exc  # denied (1698: no such account, MariaDB)
        return False
    return True


def server_pid(manager: MySQLManager) -> int:
    return int((manager.layout.run_dir / "mysqld.pid").read_text())


def kill_leftover(manager: MySQLManager) -> None:
    """SIGKILL the instance's mariadbd when a clean stop failed: only a process started with its my.cnf."""
    try:
        pid = server_pid(manager)
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError):
        return
    if os.fsencode(f"--defaults-file={manager.layout.run_dir / 'my.cnf'}") in arguments:
        os.kill(pid, signal.SIGKILL)


def new_manager(base: Path, *, run_dir: Path | None = None, version: str = "8.0") -> MySQLManager:
    layout = InstanceLayout(volume=base / "volume", run_dir=run_dir or base / "run", port=free_port(),
                            memory_mb=256, volume_size_gb=None)
    return MySQLManager(layout, version)


def make_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="trove-es-mysql-", dir="/tmp"))
    base.chmod(0o755)
    return base


def clean_up(manager: MySQLManager, base: Path) -> None:
    try:
        manager.stop()
    except Exception:
        kill_leftover(manager)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def prepared() -> Iterator[MySQLManager]:
    base = make_base()
    manager = new_manager(base)
    try:
        manager.prepare(["appdb", "shop"], [NewUser("alice", ALICE_PASSWORD, databases=("appdb",))])
        yield manager
    finally:
        clean_up(manager, base)


@pytest.fixture
def mysql(prepared: MySQLManager) -> MySQLManager:
    """The shared server, healthy and writable whatever the test before left it."""
    if prepared.status() is not ServiceStatus.HEALTHY:
        prepared.start()
    prepared.set_read_only(False)
    return prepared


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# -- prepare ---------------------------------------------------------------------------------------

def test_manager_for_gives_this_manager_for_mysql_and_mariadb() -> None:
    layout = InstanceLayout(Path("/nonexistent/volume"), Path("/nonexistent/run"), 1, 256, None)
    for name in ("mysql", "mariadb"):
        manager = manager_for(name, layout, "10.11")
        assert isinstance(manager, MySQLManager) and manager.datastore == "mysql"
    assert MySQLManager(layout, "8.0").status() is ServiceStatus.NEW


def test_prepare_creates_the_databases_and_users_who_can_use_them_over_tcp(mysql: MySQLManager) -> None:
    assert mysql.status() is ServiceStatus.HEALTHY
    assert mysql.list_databases() == ["appdb", "shop"]
    assert UserInfo("alice", "%", ("appdb",)) in mysql.list_users()
    with connect(mysql, "alice", ALICE_PASSWORD, "appdb") as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS notes (id INT PRIMARY KEY, body TEXT)")
        cursor.execute("REPLACE INTO notes VALUES (1, 'hello')")
        cursor.execute("SELECT body FROM notes WHERE id = 1")
        assert cursor.fetchone() == ("hello",)
        with pytest.raises(pymysql.err.OperationalError) as denied:
            cursor.execute("CREATE TABLE shop.t (id INT)")
        assert denied.value.args[0] in (1142, 1044), "alice was given appdb only"


def test_the_server_is_secured_and_says_which_server_runs(mysql: MySQLManager) -> None:
    with admin(mysql) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT User, Host FROM mysql.user ORDER BY User, Host")
        accounts = set(cursor.fetchall())
        assert not [account for account in accounts if account[0] == ""], "no anonymous users"
        assert {("os_admin", "localhost"), ("os_admin", "127.0.0.1")} <= accounts
        cursor.execute("SHOW DATABASES LIKE 'test'")
        assert cursor.fetchall() == ()
        cursor.execute("SELECT @@port, @@bind_address, @@datadir")
        port, bind, datadir = cursor.fetchone()
    assert (port, bind) == (mysql.layout.port, "127.0.0.1")
    assert Path(datadir) == mysql.layout.volume / "data"
    data = mysql.layout.volume / "data"
    info = data.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == (pwd.getpwnam("mysql").pw_uid if os.geteuid() == 0 else os.geteuid())
    credentials = json.loads((mysql.layout.run_dir / "admin.json").read_text())
    assert credentials["catalog_version"] == "8.0" and credentials["server"].startswith("MariaDB 10.")
    config = (mysql.layout.run_dir / "my.cnf").read_text()
    assert "bind-address = 127.0.0.1" in config and f"port = {mysql.layout.port}" in config
    assert "innodb_buffer_pool_size = 128M" in config, "half the flavor's 256 MB"


def test_prepare_repeated_is_harmless(mysql: MySQLManager) -> None:
    password = admin_password(mysql)
    pid = server_pid(mysql)
    mysql.prepare(["appdb", "shop"], [NewUser("alice", ALICE_PASSWORD, databases=("appdb",))])
    assert admin_password(mysql) == password, "the admin keeps its password"
    assert server_pid(mysql) == pid, "a running server is not restarted"
    assert mysql.status() is ServiceStatus.HEALTHY
    assert mysql.list_databases() == ["appdb", "shop"]
    assert can_login(mysql, "alice", ALICE_PASSWORD)


def test_prepare_resumes_an_interrupted_install_and_a_lost_admin_password() -> None:
    base = make_base()
    # A run directory deep enough that its socket path would not fit a unix socket address.
    run_dir = base / ("r" * 60) / ("u" * 60) / "run"
    manager = new_manager(base, run_dir=run_dir, version="5.7")
    try:
        assert manager.status() is ServiceStatus.NEW
        with pytest.raises(DatastoreError, match="not initialised"):
            manager.start()
        staging = manager.layout.volume / "data.new"
        staging.mkdir(parents=True)
        (staging / "half-written").write_text("an install the agent crashed in")
        manager.prepare(["first"], [])
        assert not staging.exists() and manager.status() is ServiceStatus.HEALTHY
        config = (run_dir / "my.cnf").read_text()
        socket_line = next(line for line in config.splitlines() if line.startswith("socket = "))
        assert len(socket_line.split('"')[1].encode()) <= 107 and '"/tmp/' in socket_line

        # Crashed after the admin was created, before its password reached admin.json.
        os.kill(server_pid(manager), signal.SIGKILL)
        assert wait_for(lambda: manager.status() is ServiceStatus.CRASHED)
        (run_dir / "admin.json").unlink()
        manager.prepare(["first", "second"], [NewUser("erin", "erin-pw-9a7", databases=("second",))])
        assert manager.status() is ServiceStatus.HEALTHY
        assert manager.list_databases() == ["first", "second"]
        assert manager.list_users() == [UserInfo("erin", "%", ("second",))]
        assert can_login(manager, "erin", "erin-pw-9a7")
    finally:
        clean_up(manager, base)


# -- lifecycle -------------------------------------------------------------------------------------

def test_stop_and_start(mysql: MySQLManager) -> None:
    assert mysql.status() is ServiceStatus.HEALTHY
    mysql.stop()
    assert mysql.status() is ServiceStatus.SHUTDOWN
    assert not (mysql.layout.run_dir / "mysqld.pid").exists()
    mysql.stop()  # nothing to stop
    mysql.start()
    assert mysql.status() is ServiceStatus.HEALTHY
    mysql.start()  # already running
    assert mysql.status() is ServiceStatus.HEALTHY
    assert can_login(mysql, "alice", ALICE_PASSWORD)


def test_a_killed_server_is_crashed_and_starts_again_with_its_data(mysql: MySQLManager) -> None:
    with connect(mysql, "alice", ALICE_PASSWORD, "appdb") as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS survivors (id INT PRIMARY KEY)")
        cursor.execute("REPLACE INTO survivors VALUES (42)")
    os.kill(server_pid(mysql), signal.SIGKILL)
    assert wait_for(lambda: mysql.status() is ServiceStatus.CRASHED)
    mysql.start()
    assert mysql.status() is ServiceStatus.HEALTHY
    with connect(mysql, "alice", ALICE_PASSWORD, "appdb") as connection:
        assert scalar(connection, "SELECT id FROM survivors") == 42


def test_a_crashed_server_stopped_is_shut_down(mysql: MySQLManager) -> None:
    os.kill(server_pid(mysql), signal.SIGKILL)
    assert wait_for(lambda: mysql.status() is ServiceStatus.CRASHED)
    mysql.stop()
    assert mysql.status() is ServiceStatus.SHUTDOWN


def test_restart_runs_a_new_server_process(mysql: MySQLManager) -> None:
    before = server_pid(mysql)
    mysql.restart()
    assert mysql.status() is ServiceStatus.HEALTHY
    assert server_pid(mysql) != before


def test_a_server_that_cannot_start_says_why(mysql: MySQLManager) -> None:
    config = mysql.layout.run_dir / "my.cnf"
    mysql.stop()
    blocker = socket.socket()
    try:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped server's port may linger
        blocker.bind(("127.0.0.1", mysql.layout.port))  # the port taken: the server refuses to start
        blocker.listen()
        with pytest.raises(DatastoreError, match=r"exited while starting.*(Address already in use|Bind|port)"):
            mysql.start()
    finally:
        blocker.close()
    assert mysql.status() is ServiceStatus.SHUTDOWN
    mysql.start()
    assert mysql.status() is ServiceStatus.HEALTHY and config.exists()


def test_volume_used_bytes_grows_with_the_data(mysql: MySQLManager) -> None:
    before = mysql.volume_used_bytes()
    assert before > 0
    with connect(mysql, "alice", ALICE_PASSWORD, "appdb") as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bulk (id INT AUTO_INCREMENT PRIMARY KEY, payload LONGBLOB)")
        for _ in range(8):
            cursor.execute("INSERT INTO bulk (payload) VALUES (%s)", (os.urandom(512 * 1024),))
        try:
            assert wait_for(lambda: mysql.volume_used_bytes() >= before + 3 * 1024 * 1024), \
                (before, mysql.volume_used_bytes())
        finally:
            cursor.execute("DROP TABLE bulk")


def test_set_memory_takes_effect_at_the_next_start(mysql: MySQLManager) -> None:
    try:
        mysql.set_memory(512)
        assert "innodb_buffer_pool_size = 256M" in (mysql.layout.run_dir / "my.cnf").read_text()
        mysql.restart()
        with admin(mysql) as connection:
            assert scalar(connection, "SELECT @@innodb_buffer_pool_size") == 256 * 1024 * 1024
            assert scalar(connection, "SELECT @@max_connections") == 100
        mysql.set_read_only(False)
        assert "innodb_buffer_pool_size = 256M" in (mysql.layout.run_dir / "my.cnf").read_text(), \
            "another setting's change keeps the memory"
        with pytest.raises(DatastoreError):
            mysql.set_memory(0)
    finally:
        mysql.set_memory(256)
        mysql.restart()


def test_read_only_stops_users_writing_not_the_admin_and_survives_a_restart(mysql: MySQLManager) -> None:
    with connect(mysql, "alice", ALICE_PASSWORD, "appdb") as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS writes (id INT AUTO_INCREMENT PRIMARY KEY)")
    try:
        mysql.set_read_only(True)
        with connect(mysql, "alice", ALICE_PASSWORD, "appdb") as connection, connection.cursor() as cursor:
            with pytest.raises(pymysql.err.OperationalError) as refused:
                cursor.execute("INSERT INTO writes VALUES ()")
            assert refused.value.args[0] == 1290, "ER_OPTION_PREVENTS_STATEMENT (read-only)"
        with admin(mysql) as connection:
            assert scalar(connection, "SELECT @@read_only") == 1
            connection.cursor().execute("INSERT INTO appdb.writes VALUES ()")  # the admin still can
        assert "read_only = ON" in (mysql.layout.run_dir / "my.cnf").read_text()
        mysql.restart()
        with admin(mysql) as connection:
            assert scalar(connection, "SELECT @@read_only") == 1, "read-only survives the restart"
        mysql.stop()
        mysql.set_read_only(False)  # while stopped: the next start reads it
        mysql.start()
        with connect(mysql, "alice", ALICE_PASSWORD, "appdb") as connection, connection.cursor() as cursor:
            cursor.execute("INSERT INTO writes VALUES ()")
        assert "read_only = OFF" in (mysql.layout.run_dir / "my.cnf").read_text()
    finally:
        mysql.set_read_only(False)


# -- databases -------------------------------------------------------------------------------------

def test_databases_are_listed_created_and_deleted(mysql: MySQLManager) -> None:
    mysql.create_databases(["zeta", "beta"])
    mysql.create_databases(["latin"], character_set="latin1", collate="latin1_bin")
    mysql.create_databases(["zeta"])  # exists: skipped
    try:
        assert mysql.list_databases() == ["appdb", "beta", "latin", "shop", "zeta"]
        with admin(mysql) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
                           "information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('zeta', 'latin')")
            charsets = {name: (charset, collation) for name, charset, collation in cursor.fetchall()}
        assert charsets["latin"] == ("latin1", "latin1_bin")
        assert charsets["zeta"][0] == "utf8mb4"
        mysql.delete_database("beta")
        mysql.delete_database("beta")  # gone already
        assert "beta" not in mysql.list_databases()
        with pytest.raises(DatastoreError, match="character set or collation"):
            mysql.create_databases(["x"], character_set="utf8mb4; DROP DATABASE appdb")
        with pytest.raises(DatastoreError, match="Unknown character set"):
            mysql.create_databases(["x"], character_set="klingon")
        assert "x" not in mysql.list_databases()
        mysql.create_databases(["d" * 64])
        assert "d" * 64 in mysql.list_databases()
        mysql.delete_database("d" * 64)
        with pytest.raises(DatastoreError, match="longer than 64"):
            mysql.create_databases(["d" * 65])
    finally:
        for name in ("zeta", "beta", "latin", "x"):
            mysql.delete_database(name)


def test_odd_database_names_are_quoted_and_grants_are_not_wildcards(mysql: MySQLManager) -> None:
    odd = "we`ird%_db; DROP DATABASE appdb"
    mysql.create_databases([odd, "a_b", "axb"])
    try:
        mysql.create_users([NewUser("dave", "dave-pw-x1", databases=(odd, "a_b"))])
        assert mysql.list_access("dave") == sorted([odd, "a_b"])
        with connect(mysql, "dave", "dave-pw-x1", odd) as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE t (id INT)")
            cursor.execute("CREATE TABLE a_b.t (id INT)")
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cursor.execute("CREATE TABLE axb.t (id INT)")
            assert denied.value.args[0] in (1044, 1142), "access to a_b is not access to axb"
        assert "appdb" in mysql.list_databases()
        mysql.delete_database(odd)
        assert odd not in mysql.list_databases()
        assert mysql.list_access("dave") == ["a_b"], "dropping a database revokes what was granted on it"
    finally:
        mysql.delete_user("dave")
        for name in (odd, "a_b", "axb"):
            mysql.delete_database(name)


# -- users and access ------------------------------------------------------------------------------

def test_users_are_created_updated_and_deleted(mysql: MySQLManager) -> None:
    try:
        mysql.create_users([NewUser("bob", "bob-pw-1", databases=("shop",))])
        assert UserInfo("bob", "%", ("shop",)) in mysql.list_users()
        assert can_login(mysql, "bob", "bob-pw-1")
        mysql.create_users([NewUser("bob", "bob-pw-2", databases=("shop",))])  # exists: new password
        assert not can_login(mysql, "bob", "bob-pw-1") and can_login(mysql, "bob", "bob-pw-2")

        mysql.update_user("bob", new_name="carol")
        mysql.update_user("bob", new_name="carol")  # repeated after it renamed: done already
        assert mysql.list_access("carol") == ["shop"], "a rename keeps the privileges"
        assert can_login(mysql, "carol", "bob-pw-2") and not can_login(mysql, "bob", "bob-pw-2")
        mysql.update_user("carol", "%", new_host="127.0.0.1", new_password="carol-pw-3")
        assert UserInfo("carol", "127.0.0.1", ("shop",)) in mysql.list_users()
        assert can_login(mysql, "carol", "carol-pw-3")
        mysql.change_passwords([NewUser("carol", "carol-pw-4", host="127.0.0.1")])
        assert can_login(mysql, "carol", "carol-pw-4") and not can_login(mysql, "carol", "carol-pw-3")

        mysql.grant_access("carol", "127.0.0.1", ["appdb"])
        assert mysql.list_access("carol", "127.0.0.1") == ["appdb", "shop"]
        mysql.revoke_access("carol", "127.0.0.1", "shop")
        mysql.revoke_access("carol", "127.0.0.1", "shop")  # not granted any more: nothing to do
        assert mysql.list_access("carol", "127.0.0.1") == ["appdb"]
        with connect(mysql, "carol", "carol-pw-4") as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS appdb.carols (id INT)")
            with pytest.raises(pymysql.err.OperationalError):
                cursor.execute("CREATE TABLE shop.carols (id INT)")

        with pytest.raises(DatastoreError, match="does not exist") as missing:
            mysql.change_passwords([NewUser("nobody", "never-shown-pw")])
        assert "never-shown-pw" not in str(missing.value)
        with pytest.raises(DatastoreError, match="does not exist"):
            mysql.update_user("nobody", new_password="never-shown-pw")
        with pytest.raises(DatastoreError, match="does not exist"):
            mysql.grant_access("nobody", "%", ["appdb"])
        with pytest.raises(DatastoreError, match="does not exist"):
            mysql.list_access("nobody")
        mysql.create_users([NewUser("frank", "frank-pw")])
        with pytest.raises(DatastoreError, match="already exists"):
            mysql.update_user("frank", new_name="carol", new_host="127.0.0.1")
    finally:
        mysql.delete_user("carol", "127.0.0.1")
        mysql.delete_user("carol", "127.0.0.1")  # gone already
        mysql.delete_user("frank")
        mysql.delete_user("bob")
    names = [user.name for user in mysql.list_users()]
    assert "carol" not in names and "bob" not in names
    assert names == ["alice"], "os_admin, root, mariadb.sys and the like are never listed"


def test_root_is_enabled_and_disabled(mysql: MySQLManager) -> None:
    assert not mysql.is_root_enabled()
    try:
        mysql.enable_root("root-pw-first")
        assert mysql.is_root_enabled()
        with connect(mysql, "root", "root-pw-first") as connection:
            assert scalar(connection, "SELECT COUNT(*) FROM mysql.user") > 0
            assert scalar(connection, "SELECT CURRENT_USER()") == "root@%"
        mysql.enable_root("root-pw-second")  # again: a new password
        assert can_login(mysql, "root", "root-pw-second") and not can_login(mysql, "root", "root-pw-first")
        assert "root" not in [user.name for user in mysql.list_users()]
    finally:
        mysql.disable_root()
    assert not mysql.is_root_enabled() and not can_login(mysql, "root", "root-pw-second")
    mysql.disable_root()  # disabled already
    assert mysql.status() is ServiceStatus.HEALTHY, "the agent's own root (the socket) is untouched"


@pytest.mark.parametrize("name", ["os_admin", "root", "mariadb.sys", "mysql", "PUBLIC", "OS_ADMIN"])
def test_reserved_user_names_are_refused(mysql: MySQLManager, name: str) -> None:
    for attempt in (lambda: mysql.create_users([NewUser(name, "x-pw")]),
                    lambda: mysql.delete_user(name, "localhost"),
                    lambda: mysql.update_user(name, "localhost", new_password="x-pw"),
                    lambda: mysql.update_user("alice", new_name=name),
                    lambda: mysql.change_passwords([NewUser(name, "x-pw", host="localhost")]),
                    lambda: mysql.grant_access(name, "localhost", ["appdb"]),
                    lambda: mysql.prepare([], [NewUser(name, "x-pw")])):
        with pytest.raises(DatastoreError, match=f"^{name} is a reserved user name$"):
            attempt()
    assert mysql.status() is ServiceStatus.HEALTHY and can_login(mysql, "alice", ALICE_PASSWORD)


def test_reserved_and_invalid_names_are_refused(mysql: MySQLManager) -> None:
    for database in ("mysql", "information_schema", "performance_schema", "sys", "MySQL"):
        with pytest.raises(DatastoreError, match="is a reserved database name"):
            mysql.create_databases([database])
        with pytest.raises(DatastoreError, match="is a reserved database name"):
            mysql.delete_database(database)
        with pytest.raises(DatastoreError, match="is a reserved database name"):
            mysql.grant_access("alice", "%", [database])
    with pytest.raises(DatastoreError, match="longer than 80"):
        mysql.create_users([NewUser("u" * 81, "x-pw")])
    with pytest.raises(DatastoreError, match="must not be empty"):
        mysql.create_users([NewUser("", "x-pw")])
    with pytest.raises(DatastoreError, match="password"):
        mysql.create_users([NewUser("empty-password", "")])
    with pytest.raises(DatastoreError, match="not a valid database name"):
        mysql.create_databases(["trailing "])
    mysql.create_users([NewUser("u" * 80, "x-pw")])
    try:
        assert can_login(mysql, "u" * 80, "x-pw")
    finally:
        mysql.delete_user("u" * 80)
    with pytest.raises(DatastoreError):
        mysql.create_users([NewUser("good", "x-pw"), NewUser("root", "x-pw")])
    assert "good" not in [user.name for user in mysql.list_users()], "validated before anything is made"


# -- backups ---------------------------------------------------------------------------------------

def test_a_backup_restored_into_a_fresh_instance_brings_back_its_rows_and_users(mysql: MySQLManager) -> None:
    """Through the guest's own stream (gzip, checksum, verify); the fresh instance already has a database and
    a user of the same names, as a prepare that restores makes them first."""
    mysql.create_users([NewUser("bea", "bea-Secret-5e2d", databases=("shop",))])
    with connect(mysql, "alice", ALICE_PASSWORD, "appdb") as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB")
        cursor.executemany("INSERT INTO orders VALUES (%s, %s)", [(n, f"item {n}") for n in range(1, 2001)])
    storage = make_base()
    target = {"kind": "file", "location": str(storage / "backups" / "b-1.gz"), "url": None}
    fresh = new_manager(make_base())
    try:
        try:
            size, checksum = write_backup(target, mysql.backup)
        finally:
            with admin(mysql) as connection, connection.cursor() as cursor:
                cursor.execute("DROP TABLE IF EXISTS appdb.orders")
            mysql.delete_user("bea")
        text = gzip.decompress(Path(target["location"]).read_bytes()).decode()
        assert "CREATE TABLE `orders`" in text
        assert "os_admin" not in text and "`root`@" not in text, "the server's own accounts are not backed up"
        for secret in (admin_password(mysql), ALICE_PASSWORD, "bea-Secret-5e2d"):
            assert secret not in text, "passwords travel only as hashes"

        fresh.prepare(["appdb"], [NewUser("alice", "prepared-Secret-1", databases=("appdb",))])
        restore = {"backup_id": "b-1", "source": target, "size": size, "checksum": checksum}
        with verified_backup(restore) as dump:
            fresh.restore(dump)
        assert fresh.list_databases() == ["appdb", "shop"]
        assert fresh.list_users() == [UserInfo("alice", "%", ("appdb",)), UserInfo("bea", "%", ("shop",))]
        with connect(fresh, "alice", ALICE_PASSWORD, "appdb") as connection:  # the backup's password
            assert scalar(connection, "SELECT COUNT(*) FROM orders") == 2000
            assert scalar(connection, "SELECT item FROM orders WHERE id = 1234") == "item 1234"
        assert not can_login(fresh, "alice", "prepared-Secret-1")
        with connect(fresh, "bea", "bea-Secret-5e2d", "shop") as connection:
            assert scalar(connection, "SELECT CURRENT_USER()") == "bea@%"
        assert fresh.status() is ServiceStatus.HEALTHY, "the fresh instance's admin still manages it"
    finally:
        clean_up(fresh, fresh.layout.volume.parent)
        shutil.rmtree(storage, ignore_errors=True)


def test_passwords_are_only_in_admin_json(mysql: MySQLManager) -> None:
    passwords = {admin_password(mysql), ALICE_PASSWORD, "leak-check-user-pw", "leak-check-new-pw",
                 "leak-check-root-pw"}
    mysql.create_users([NewUser("leaky", "leak-check-user-pw", databases=("appdb",))])
    mysql.change_passwords([NewUser("leaky", "leak-check-new-pw")])
    mysql.enable_root("leak-check-root-pw")
    mysql.disable_root()
    mysql.delete_user("leaky")
    mysql.restart()  # whatever the server writes at shutdown and start is in the files too
    admin_file = mysql.layout.run_dir / "admin.json"
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600 and admin_file.stat().st_uid == os.geteuid()
    log_file = mysql.layout.run_dir / "mysqld.log"
    assert log_file.stat().st_size > 0, "the error log is there to be checked"
    checked = []
    for top in (mysql.layout.run_dir, mysql.layout.volume):
        for root, _, files in os.walk(top):
            for name in files:
                path = Path(root, name)
                if path == admin_file or stat.S_ISSOCK(path.lstat().st_mode):
                    continue
                content = path.read_bytes()
                checked.append(path)
                leaked = [secret for secret in passwords if secret.encode() in content]
                assert not leaked, f"{path} holds a password"
    assert log_file in checked and mysql.layout.run_dir / "my.cnf" in checked
