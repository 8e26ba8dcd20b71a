"""The MySQL manager: drives a real MariaDB server for Trove's ``mysql`` and ``mariadb`` managers.

Which server runs: this host's MariaDB (``/usr/sbin/mariadbd``, 10.11 here) for every catalog version,
"mysql 5.7" and "mysql 8.0" as much as "mariadb 10.11": the wire protocol, the SQL this manager uses and
what users see (databases, ``user@host`` accounts, ``GRANT ALL ON db.*``) are the same, and a guest image
carries one server. The version the catalog asked for is kept as ``version`` and, beside the version the
server reports, in ``admin.json``, so an operator can tell the two apart.

Where things are:

* ``<volume>/data``: the data directory, owned by the ``mysql`` account, 0700. It only appears once
  ``mariadb-install-db`` finished: it installs into ``<volume>/data.new`` and that is renamed, so "the data
  directory exists" is "initialised" and a crash mid-install leaves a staging directory that is redone.
* ``<run_dir>``: ``my.cnf`` (generated; the server reads nothing else, ``/etc/mysql`` is never read), the
  pid file, the unix socket, the error log and ``admin.json`` (the admin's password, 0600, the agent's). When
  the agent is root the directory is ``root:mysql`` 1770: the server creates its socket, pid file and log
  there, but cannot replace the agent's ``my.cnf`` or ``admin.json`` (the sticky bit), so a server made to
  write files cannot rewrite its own configuration or credentials.
* The socket is ``<run_dir>/mysqld.sock`` unless that path is longer than a unix socket address allows (107
  bytes); then it is ``/tmp/trove-es-mysql-<hash of run_dir>.sock``.

How the admin is made: ``mariadb-install-db --auth-root-authentication-method=socket`` leaves
``root@localhost`` usable only over the unix socket by the OS account of the same name (``unix_socket``
authentication; when the agent is not root, its own OS account gets such a MariaDB account too). The agent
is that OS account, so it connects over the socket with no password and creates ``os_admin@localhost`` and
``os_admin@127.0.0.1`` with a generated password. The password is written to ``admin.json`` *before* it is
set, and is set again on every ``prepare``, so a crash between the two is repaired by repeating ``prepare``.
No SQL file with the password (``--init-file``) ever exists. Everything else connects as ``os_admin`` over
TCP ``127.0.0.1:port``, with short connect timeouts.

Status is probed: ``SELECT 1`` as ``os_admin``; failing that, the pid file: no pid file is SHUTDOWN (the
server removes it at a clean shutdown), a pid file naming a live ``mariadbd`` started with *this* ``my.cnf``
is BLOCKED (running but not answering: starting, stopping, or its admin is gone), anything else CRASHED.

Access is what ``mysql.db`` says: the databases a user has database-level privileges on. Database names in
``GRANT`` are patterns (``_`` and ``%`` are wildcards), so they are escaped: access to ``app_db`` is not access
to ``appxdb``. Dropping a database revokes what was granted on it, so a new database of the same name does
not inherit the old one's users.

Passwords: sent only as query parameters (PyMySQL escaping), never logged, never in an exception's text (the
server's message is scrubbed of them, the PyMySQL exception is not chained), and stored only in
``admin.json``. The server keeps no query log and no binary log, so no statement with a password is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import pymysql
from pymysql.connections import Connection

from domain.statuses import ServiceStatus
from guest.datastore.base import (
    DatastoreError,
    InstanceLayout,
    NewUser,
    UserInfo,
    directory_size,
    dump_to,
    generate_password,
    load_from,
    own,
    private_file,
    run,
    service_account,
    spawn,
)

log = logging.getLogger(__name__)

MARIADBD = Path("/usr/sbin/mariadbd")
INSTALL_DB = Path("/usr/bin/mariadb-install-db")
MARIADB_DUMP = Path("/usr/bin/mariadb-dump")
MARIADB_CLIENT = Path("/usr/bin/mariadb")

ADMIN_USER = "os_admin"
ADMIN_HOSTS = ("localhost", "127.0.0.1")
ROOT_HOST = "%"  # Trove's root: root@'%', beside the socket-only root@localhost
# Trove's ignore_dbs: the server's own databases, never listed, created, dropped or granted.
RESERVED_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
# Trove's ignore_users and MariaDB's own accounts (compared case-insensitively: "Root" would only confuse).
RESERVED_USERS = frozenset({ADMIN_USER, "root", "mariadb.sys", "mysql", "public"})
MAX_USER_NAME = 80  # MariaDB's limit on user names
MAX_HOST = 255  # MariaDB's limit on the host part of an account
MAX_DATABASE_NAME = 64
DEFAULT_CHARACTER_SET = "utf8mb4"
SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) less the terminating NUL

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 2
STATUS_READ_TIMEOUT_S = 2
SQL_READ_TIMEOUT_S = 300  # DROP DATABASE of a large database takes a while

_MEMORY_KEYS = ("innodb_buffer_pool_size", "key_buffer_size", "tmp_table_size", "max_heap_table_size",
                "max_connections")
_ACCESS_DENIED = (1045, 1698)  # ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR
_NO_SUCH_GRANT = 1141
_NAME_PART = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # character set and collation names


class MySQLManager:
    """One instance's MariaDB server (see the module's docstring for where its files are and why)."""

    datastore = "mysql"

    def __init__(self, layout: InstanceLayout, version: str) -> None:
        self.layout = layout
        self.version = version  # what the catalog asked for; the server is this host's MariaDB whatever it is
        self._process: subprocess.Popen[bytes] | None = None  # ours to reap, when this agent started it
        run_dir = layout.run_dir
        self._data_dir = layout.volume / "data"
        self._staging_dir = layout.volume / "data.new"
        self._config = run_dir / "my.cnf"
        self._pid_file = run_dir / "mysqld.pid"
        self._log_file = run_dir / "mysqld.log"
        self._admin_file = run_dir / "admin.json"
        self._socket = _socket_path(run_dir)
        # The MariaDB account that unix_socket authentication maps this agent's OS account to.
        self._socket_user = "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._reserved_users = RESERVED_USERS | {self._socket_user.lower()}

    # -- lifecycle -----------------------------------------------------------------------------------

    def prepare(self, databases: Sequence[str], users: Sequence[NewUser]) -> None:
        """Each step checks what is already done, so a repeat after a crash anywhere finishes the rest;
        everything is validated before anything is changed, so a bad name leaves nothing half made."""
        for database in databases:
            self._check_database(database)
        for user in users:
            self._check_new_user(user)
        account = self._account()
        self._make_directories(account)
        self._write_config()
        if not self._data_dir.is_dir():
            self._initialise(account)
        self.start()
        self._bootstrap_admin()
        self._secure(keep_databases=databases)
        self.create_databases(databases)
        self.create_users(users)

    def start(self) -> None:
        """Starts the server unless it already runs, and returns once it answers; the configuration is
        regenerated first (paths and port from the layout, memory and read-only kept) so a start always
        runs what this agent would write."""
        if not self._data_dir.is_dir():
            raise DatastoreError("the MySQL server cannot start: its data directory is not initialised yet; "
                                 "prepare the instance first")
        log_from = self._log_size()
        if self._running_pid() is None:
            account = self._account()
            self._make_directories(account)
            self._write_config()
            self._pid_file.unlink(missing_ok=True)  # a crashed server's: it names a process that is gone
            # spawn() runs it as the mysql account already, so no --user (mariadbd warns about it when not root).
            self._process = spawn([MARIADBD, f"--defaults-file={self._config}"], account, self._log_file)
            log.info("started mariadbd (pid %s) for %s", self._process.pid, self.layout.volume)
        self._wait_until_answering(log_from)

    def stop(self) -> None:
        """SIGTERM is MariaDB's clean shutdown and needs no credentials, so a server whose admin is broken
        still stops; a stale pid file from a crash is removed, as stopped is what was asked for."""
        pid = self._running_pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        # The process, not the pid file: the server removes the file a moment before it exits, and a new
        # server started in that moment would find the old one still holding the data files.
        while self._is_our_server(pid):
            if time.monotonic() > deadline:
                raise DatastoreError(f"the MySQL server (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s; "
                                     f"last log line: {self._last_log_line()}")
            time.sleep(0.1)
        log.info("stopped mariadbd (pid %s) for %s", pid, self.layout.volume)

    def restart(self) -> None:
        self.stop()
        self.start()

    def status(self) -> ServiceStatus:
        """See the module docstring: a query first, then the pid file (BLOCKED: alive but not answering)."""
        if not self._data_dir.is_dir():
            return ServiceStatus.NEW
        if self._admin_answers():
            return ServiceStatus.HEALTHY
        if not self._pid_file.exists():
            return ServiceStatus.SHUTDOWN
        if self._running_pid() is not None:
            return ServiceStatus.BLOCKED
        return ServiceStatus.CRASHED

    def volume_used_bytes(self) -> int:
        return directory_size(self.layout.volume)

    def set_memory(self, memory_mb: int) -> None:
        """Only the configuration changes: the buffer pool is sized at start, so this takes effect at the
        next start, as a Trove resize restarts the server anyway."""
        if memory_mb <= 0:
            raise DatastoreError(f"memory must be a positive number of MB, not {memory_mb}")
        self._write_config(memory_mb=memory_mb)

    def set_read_only(self, read_only: bool) -> None:
        """``read_only`` stops every account without READ ONLY ADMIN (all users; os_admin and root keep
        it, so the agent can still clean up); it is written to ``my.cnf`` first so a restart keeps it."""
        self._write_config(read_only=read_only)
        if self._running_pid() is None:
            return  # the configuration is what the next start reads
        with self._admin() as connection, _sql_errors("setting the MySQL server read-only"):
            _execute(connection, f"SET GLOBAL read_only = {'ON' if read_only else 'OFF'}")

    # -- databases -----------------------------------------------------------------------------------

    def list_databases(self) -> list[str]:
        with self._admin() as connection, _sql_errors("listing databases"):
            rows = _query(connection, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        return sorted(name for (name,) in rows if name.lower() not in RESERVED_DATABASES)

    def create_databases(self, names: Sequence[str], character_set: str | None = None,
                         collate: str | None = None) -> None:
        """Without a character set it is utf8mb4 (the server's default collation for it), whatever the
        server's default: MySQL 5.7's latin1 default is not what anyone creating a database today wants."""
        for name in names:
            self._check_database(name)
        for part in (character_set, collate):
            if part is not None and not _NAME_PART.match(part):
                raise DatastoreError(f"{part!r} is not a character set or collation name")
        if not names:
            return
        options = ""
        if character_set is not None or collate is None:
            options += f" CHARACTER SET {_ident(character_set or DEFAULT_CHARACTER_SET)}"
        if collate is not None:
            options += f" COLLATE {_ident(collate)}"
        with self._admin() as connection:
            for name in names:
                with _sql_errors(f"creating the database {name!r}"):
                    _execute(connection, f"CREATE DATABASE IF NOT EXISTS {_ident(name)}{options}")

    def delete_database(self, name: str) -> None:
        self._check_database(name)
        with self._admin() as connection, _sql_errors(f"deleting the database {name!r}"):
            _execute(connection, f"DROP DATABASE IF EXISTS {_ident(name)}")
            grantees = _query(connection, "SELECT User, Host FROM mysql.db WHERE Db = %s", (_db_pattern(name),))
            for user, host in grantees:
                _revoke(connection, user, host, name)

    # -- users ---------------------------------------------------------------------------------------

    def list_users(self) -> list[UserInfo]:
        with self._admin() as connection, _sql_errors("listing users"):
            accounts = _query(connection, "SELECT User, Host FROM mysql.user WHERE is_role = 'N'")
            grants = _query(connection, "SELECT User, Host, Db FROM mysql.db")
        access: dict[tuple[str, str], set[str]] = {}
        for user, host, pattern in grants:
            access.setdefault((user, host.lower()), set()).add(_db_name(pattern))
        return sorted((UserInfo(user, host, tuple(sorted(access.get((user, host.lower()), ()))))
                       for user, host in accounts if user and user.lower() not in self._reserved_users),
                      key=lambda info: (info.name, info.host))

    def create_users(self, users: Sequence[NewUser]) -> None:
        """An existing user gets the new password (and the databases), so a repeated create converges."""
        for user in users:
            self._check_new_user(user)
        if not users:
            return
        with self._admin() as connection:
            for user in users:
                with _sql_errors(f"creating the user {user.name}@{user.host}", user.password):
                    verb = "ALTER USER" if _user_exists(connection, user.name, user.host) else "CREATE USER"
                    _execute(connection, f"{verb} %s@%s IDENTIFIED BY %s", (user.name, user.host, user.password))
                    for database in user.databases:
                        _grant(connection, user.name, user.host, database)

    def delete_user(self, name: str, host: str = "%") -> None:
        self._check_user(name, host)
        with self._admin() as connection, _sql_errors(f"deleting the user {name}@{host}"):
            _execute(connection, "DROP USER IF EXISTS %s@%s", (name, host))

    def update_user(self, name: str, host: str = "%", *, new_name: str | None = None,
                    new_host: str | None = None, new_password: str | None = None) -> None:
        """RENAME USER keeps the user's privileges. Repeated after it renamed (the old account gone, the new
        one there), it carries on with the password rather than failing."""
        self._check_user(name, host)
        target = (new_name if new_name is not None else name, new_host if new_host is not None else host)
        self._check_user(*target)
        if new_password is not None:
            _check_password(new_password, target[0])
        with self._admin() as connection:
            with _sql_errors(f"renaming the user {name}@{host}"):
                old_exists = _user_exists(connection, name, host)
                if target != (name, host) and not _same_account(target, (name, host)):
                    new_exists = _user_exists(connection, *target)
                    if old_exists and new_exists:
                        raise DatastoreError(f"the user {target[0]}@{target[1]} already exists")
                    if old_exists:
                        _execute(connection, "RENAME USER %s@%s TO %s@%s", (name, host, *target))
                    elif not new_exists:
                        raise _no_such_user(name, host)
                elif not old_exists:
                    raise _no_such_user(name, host)
            if new_password is not None:
                with _sql_errors(f"changing the password of {target[0]}@{target[1]}", new_password):
                    _execute(connection, "ALTER USER %s@%s IDENTIFIED BY %s", (*target, new_password))

    def change_passwords(self, users: Sequence[NewUser]) -> None:
        for user in users:
            self._check_user(user.name, user.host)
            _check_password(user.password, user.name)
        with self._admin() as connection:
            for user in users:
                with _sql_errors(f"changing the password of {user.name}@{user.host}", user.password):
                    if not _user_exists(connection, user.name, user.host):
                        raise _no_such_user(user.name, user.host)
                    _execute(connection, "ALTER USER %s@%s IDENTIFIED BY %s", (user.name, user.host, user.password))

    # -- access --------------------------------------------------------------------------------------

    def list_access(self, name: str, host: str = "%") -> list[str]:
        self._check_user(name, host)
        with self._admin() as connection, _sql_errors(f"listing the access of {name}@{host}"):
            if not _user_exists(connection, name, host):
                raise _no_such_user(name, host)
            rows = _query(connection, "SELECT Db FROM mysql.db WHERE User = %s AND LOWER(Host) = LOWER(%s)",
                          (name, host))
        return sorted({_db_name(pattern) for (pattern,) in rows})

    def grant_access(self, name: str, host: str, databases: Sequence[str]) -> None:
        self._check_user(name, host)
        for database in databases:
            self._check_database(database)
        with self._admin() as connection, _sql_errors(f"granting access to {name}@{host}"):
            if not _user_exists(connection, name, host):
                raise _no_such_user(name, host)
            for database in databases:
                _grant(connection, name, host, database)

    def revoke_access(self, name: str, host: str, database: str) -> None:
        self._check_user(name, host)
        self._check_database(database)
        with self._admin() as connection, _sql_errors(f"revoking access from {name}@{host}"):
            if not _user_exists(connection, name, host):
                raise _no_such_user(name, host)
            _revoke(connection, name, host, database)

    # -- root ----------------------------------------------------------------------------------------

    def enable_root(self, password: str) -> None:
        """Trove's MySQL root is ``root@'%'``; ``root@localhost`` stays socket-only for the agent's use."""
        _check_password(password, "root")
        with self._admin() as connection, _sql_errors("enabling root", password):
            verb = "ALTER USER" if _user_exists(connection, "root", ROOT_HOST) else "CREATE USER"
            _execute(connection, f"{verb} 'root'@'%%' IDENTIFIED BY %s", (password,))
            _execute(connection, "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%%' WITH GRANT OPTION")

    def disable_root(self) -> None:
        with self._admin() as connection, _sql_errors("disabling root"):
            _execute(connection, "DROP USER IF EXISTS 'root'@'%%'")

    def is_root_enabled(self) -> bool:
        with self._admin() as connection, _sql_errors("checking root"):
            return _user_exists(connection, "root", ROOT_HOST)

    # -- backups -------------------------------------------------------------------------------------

    def backup(self, out: BinaryIO) -> None:
        """``mariadb-dump --single-transaction`` of the users' databases (one consistent snapshot of InnoDB
        tables, without locking users out), then the users with their password hashes and grants. The
        server's own accounts (root, the admin, mariadb.sys) are left out: a restored instance keeps its own."""
        databases = self.list_databases()
        with self._admin() as connection, _sql_errors("listing the users to back up"):
            users = self._users_script(connection)
        out.write(b"-- trove-es backup of a MariaDB instance: a mariadb-dump of the users' databases, then the "
                  b"users.\n")
        if databases:
            with self._tool_login() as options:
                dump_to([MARIADB_DUMP, f"--defaults-file={options}", "--single-transaction", "--routines",
                         "--events", "--triggers", "--hex-blob", "--skip-dump-date",
                         f"--default-character-set={DEFAULT_CHARACTER_SET}", "--databases", "--", *databases],
                        out, env=_tool_environment(), what="mariadb-dump", secrets=self._secrets())
        out.write(users.encode())

    def restore(self, dump: BinaryIO | Path) -> None:
        """The client stops at the first error. Databases that exist (prepare's, still empty) are kept and
        filled, each table made again; users that exist are replaced by the backup's."""
        with self._tool_login() as options:
            load_from([MARIADB_CLIENT, f"--defaults-file={options}", "--binary-mode", "--batch"], dump,
                      env=_tool_environment(), what="restoring the backup with the mariadb client",
                      secrets=self._secrets())

    def _users_script(self, connection: Connection) -> str:
        lines = []
        for user, host in _query(connection, "SELECT User, Host FROM mysql.user WHERE is_role = 'N' "
                                             "ORDER BY User, Host"):
            if not user or user.lower() in self._reserved_users:
                continue
            ((create,),) = _query(connection, "SHOW CREATE USER %s@%s", (user, host))
            if not create.startswith("CREATE USER "):
                raise DatastoreError(f"cannot back up the user {user}@{host}: the server described it unexpectedly")
            lines.append("CREATE OR REPLACE USER " + create[len("CREATE USER "):] + ";")
            lines += [grant + ";" for (grant,) in _query(connection, "SHOW GRANTS FOR %s@%s", (user, host))]
        return "".join(line + "\n" for line in lines)

    @contextmanager
    def _tool_login(self) -> Iterator[Path]:
        """An option file (0600, the agent's) with the admin's login for the client tools, for as long as they
        run: never a password on their command line, which any local user can read."""
        credentials = self._read_admin()
        if credentials is None:
            raise DatastoreError("the MySQL server has no admin credentials yet; prepare the instance first")
        password = credentials["password"].replace("\\", "\\\\").replace('"', '\\"')
        options = private_file(self.layout.run_dir / "tools.cnf",
                               f'[client]\nuser = {ADMIN_USER}\npassword = "{password}"\nhost = 127.0.0.1\n'
                               f"port = {self.layout.port}\nprotocol = TCP\n")
        try:
            yield options
        finally:
            options.unlink(missing_ok=True)

    def _secrets(self) -> list[str]:
        credentials = self._read_admin()
        return [credentials["password"]] if credentials else []

    # -- preparing -----------------------------------------------------------------------------------

    def _account(self) -> pwd.struct_passwd | None:
        return service_account("mysql")

    def _make_directories(self, account: pwd.struct_passwd | None) -> None:
        own(self.layout.volume, account)
        if account is None:
            own(self.layout.run_dir, None)
        else:  # root:mysql, sticky: the server adds its files, cannot replace the agent's (see the docstring)
            own(self.layout.run_dir, None, 0o1770)
            os.chown(self.layout.run_dir, -1, account.pw_gid)
        _touch(self._log_file, account)

    def _initialise(self, account: pwd.struct_passwd | None) -> None:
        """Installs into a staging directory renamed when complete: an interrupted install is redone."""
        if self._staging_dir.exists():
            shutil.rmtree(self._staging_dir)
        own(self._staging_dir, account)
        log_from = self._log_size()
        try:
            run([INSTALL_DB, f"--defaults-file={self._config}", f"--datadir={self._staging_dir}",
                 "--auth-root-authentication-method=socket", f"--auth-root-socket-user={self._socket_user}",
                 "--skip-test-db"], account, timeout=300, what="initialising the MySQL data directory")
        except DatastoreError as exc:
            raise DatastoreError(f"{exc}; the server's log says: {self._last_log_line(log_from)}") from None
        os.rename(self._staging_dir, self._data_dir)
        log.info("initialised the MariaDB data directory %s", self._data_dir)

    def _bootstrap_admin(self) -> None:
        """Over the socket as the OS admin (see the docstring); the password is on disk before it is set."""
        credentials = self._read_admin()
        password = credentials["password"] if credentials else generate_password()
        if credentials is None:
            self._write_admin(password, server_version=None)
        try:
            connection = self._socket_connection()
        except DatastoreError:
            connection = self._admin_connection()  # root@localhost was dropped: the admin may still fix itself
        with connection, _sql_errors("creating the MySQL admin account", password):
            for host in ADMIN_HOSTS:
                _execute(connection, "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (ADMIN_USER, host, password))
                _execute(connection, "ALTER USER %s@%s IDENTIFIED BY %s", (ADMIN_USER, host, password))
                _execute(connection, "GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (ADMIN_USER, host))
            ((server_version,),) = _query(connection, "SELECT VERSION()")
        self._write_admin(password, server_version=server_version)

    def _secure(self, keep_databases: Sequence[str]) -> None:
        """What mysql_secure_installation does: no anonymous users, no test database (unless asked for),
        and no proxy grant for the build host's name, which the server warns about at every start."""
        with self._admin() as connection, _sql_errors("securing the MySQL server"):
            for user, host in _query(connection, "SELECT User, Host FROM mysql.user WHERE User = ''"):
                _execute(connection, "DROP USER IF EXISTS %s@%s", (user, host))
            if "test" not in keep_databases:
                _execute(connection, "DROP DATABASE IF EXISTS `test`")
                changed = _execute(connection, "DELETE FROM mysql.db WHERE Db IN (%s, %s)", ("test", "test\\_%"))
            else:
                changed = 0
            changed += _execute(connection, "DELETE FROM mysql.proxies_priv WHERE User = 'root' AND Host <> "
                                            "'localhost' AND Proxied_user = ''")
            if changed:
                _execute(connection, "FLUSH PRIVILEGES")

    # -- configuration -------------------------------------------------------------------------------

    def _write_config(self, *, memory_mb: int | None = None, read_only: bool | None = None) -> None:
        """Regenerated whole each time; the settings a caller changed (memory, read-only) are kept from the
        file when not given, so the file itself is the state and nothing else needs to be remembered."""
        current = _read_options(self._config)
        if memory_mb is not None:
            memory = _memory_settings(memory_mb)
        elif all(key in current for key in _MEMORY_KEYS):
            memory = {key: current[key] for key in _MEMORY_KEYS}
        else:
            memory = _memory_settings(self.layout.memory_mb)
        if read_only is None:
            read_only = current.get("read_only", "OFF").upper() in ("ON", "1", "TRUE")
        paths = {"datadir": self._data_dir, "socket": self._socket, "pid-file": self._pid_file,
                 "log-error": self._log_file}
        lines = [
            "# Written by the trove-es guest agent; rewritten at every start, edits are lost.",
            f"# Catalog version {self.version}; the server is this host's MariaDB ({MARIADBD}).",
            "[mysqld]",
            *(f"{key} = {_option_value(path)}" for key, path in paths.items()),
            f"port = {self.layout.port}",
            "bind-address = 127.0.0.1",
            "skip-name-resolve",
            "local-infile = 0",
            f"character-set-server = {DEFAULT_CHARACTER_SET}",
            "innodb_file_per_table = ON",
            "innodb_log_file_size = 32M",
            *(f"{key} = {value}" for key, value in memory.items()),
            f"read_only = {'ON' if read_only else 'OFF'}",
            "",
            "[client]",  # for an operator's `mariadb --defaults-file=<run_dir>/my.cnf` as root
            f"socket = {_option_value(self._socket)}",
            f"port = {self.layout.port}",
            "",
        ]
        _replace_file(self._config, "\n".join(lines), 0o644)

    # -- credentials and connections -----------------------------------------------------------------

    def _read_admin(self) -> dict[str, Any] | None:
        try:
            credentials = json.loads(self._admin_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a torn write before the password was ever set: a new one is made and set
        return credentials if isinstance(credentials, dict) and credentials.get("password") else None

    def _write_admin(self, password: str, server_version: str | None) -> None:
        text = json.dumps({"user": ADMIN_USER, "password": password, "host": "127.0.0.1", "port": self.layout.port,
                           "socket": str(self._socket), "catalog_version": self.version,
                           "server": f"MariaDB {server_version}" if server_version else "MariaDB"}, indent=2)
        staging = self._admin_file.with_name(self._admin_file.name + ".new")
        private_file(staging, text + "\n")
        os.replace(staging, self._admin_file)

    def _admin_connection(self, read_timeout: float = SQL_READ_TIMEOUT_S) -> Connection:
        credentials = self._read_admin()
        if credentials is None:
            raise DatastoreError("the MySQL server has no admin credentials yet; prepare the instance first")
        try:
            return pymysql.connect(host="127.0.0.1", port=self.layout.port, user=ADMIN_USER,
                                   password=credentials["password"], connect_timeout=CONNECT_TIMEOUT_S,
                                   read_timeout=read_timeout, write_timeout=read_timeout, autocommit=True,
                                   charset="utf8mb4")
        except pymysql.MySQLError as exc:
            raise DatastoreError(f"cannot connect to the MySQL server on port {self.layout.port} as its admin: "
                                 f"{_message(exc, credentials['password'])}") from None

    @contextmanager
    def _admin(self) -> Iterator[Connection]:
        connection = self._admin_connection()
        try:
            yield connection
        finally:
            connection.close()

    def _socket_connection(self) -> Connection:
        try:
            return pymysql.connect(unix_socket=str(self._socket), user=self._socket_user,
                                   connect_timeout=CONNECT_TIMEOUT_S, read_timeout=SQL_READ_TIMEOUT_S,
                                   autocommit=True, charset="utf8mb4")
        except pymysql.MySQLError as exc:
            raise DatastoreError(f"cannot connect to the MySQL server over {self._socket} as "
                                 f"{self._socket_user}: {_message(exc)}") from None

    def _admin_answers(self) -> bool:
        try:
            connection = self._admin_connection(read_timeout=STATUS_READ_TIMEOUT_S)
        except DatastoreError:
            return False
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone() == (1,)
        except pymysql.MySQLError:
            return False
        finally:
            with suppress(Exception):
                connection.close()

    def _answers(self) -> bool:
        """Readiness over this server's own socket (a TCP port could be another server's); an access denial
        is an answer too."""
        try:
            self._socket_connection().close()
        except DatastoreError:
            pass
        else:
            return True
        try:
            pymysql.connect(unix_socket=str(self._socket), user=ADMIN_USER, password="",
                            connect_timeout=CONNECT_TIMEOUT_S).close()
        except pymysql.MySQLError as exc:
            return bool(exc.args) and exc.args[0] in _ACCESS_DENIED
        return True

    # -- the process ---------------------------------------------------------------------------------

    def _wait_until_answering(self, log_from: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            process = self._process
            if process is not None and process.poll() is not None:
                raise DatastoreError(f"the MySQL server exited while starting (exit {process.returncode}): "
                                     f"{self._last_log_line(log_from)}")
            if process is None and self._running_pid() is None:
                raise DatastoreError(f"the MySQL server stopped while starting: {self._last_log_line(log_from)}")
            if time.monotonic() > deadline:
                raise DatastoreError(f"the MySQL server did not answer within {START_TIMEOUT_S:.0f} s: "
                                     f"{self._last_log_line(log_from)}")
            time.sleep(0.2)

    def _running_pid(self) -> int | None:
        """The pid in the pid file when it is a live mariadbd started with this instance's my.cnf (never the
        host's own MariaDB, nor a process that reused the pid); our own exited child is reaped here."""
        if self._process is not None and self._process.poll() is not None:
            self._process = None
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._is_our_server(pid) else None

    def _is_our_server(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid and self._process.poll() is not None:
            self._process = None  # reaped: it no longer exists, not even as a zombie
            return False
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return state not in ("Z", "X") and os.fsencode(f"--defaults-file={self._config}") in arguments

    def _log_size(self) -> int:
        try:
            return self._log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def _last_log_line(self, since: int | None = None) -> str:
        """What an operator would look for in the error log written since ``since`` (else its tail): the
        first error (the cause; "Aborting" follows every one), else the last line."""
        try:
            with open(self._log_file, "rb") as handle:
                end = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, end - 16384) if since is None else max(0, min(since, end), end - 65536))
                tail = handle.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return "no log"
        lines = [line.strip() for line in tail if line.strip()]
        errors = [line for line in lines if "[ERROR]" in line and not line.endswith("[ERROR] Aborting")]
        return errors[0] if errors else (lines or ["nothing in the log"])[-1]

    # -- validation ----------------------------------------------------------------------------------

    def _check_database(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise DatastoreError("a database name must not be empty")
        if name.lower() in RESERVED_DATABASES:
            raise DatastoreError(f"{name} is a reserved database name")
        if len(name) > MAX_DATABASE_NAME:
            raise DatastoreError(f"the database name {name[:MAX_DATABASE_NAME]}... is longer than "
                                 f"{MAX_DATABASE_NAME} characters")
        if name != name.rstrip() or any(char in name for char in "\0/\\") or _outside_bmp(name):
            raise DatastoreError(f"{name!r} is not a valid database name: it may not end with a space nor "
                                 f"contain '/', '\\' or NUL")

    def _check_user(self, name: str, host: str) -> None:
        if not isinstance(name, str) or not name:
            raise DatastoreError("a user name must not be empty (anonymous users are not allowed)")
        if name.lower() in self._reserved_users:
            raise DatastoreError(f"{name} is a reserved user name")
        if len(name) > MAX_USER_NAME:
            raise DatastoreError(f"the user name {name[:MAX_USER_NAME]}... is longer than {MAX_USER_NAME} "
                                 f"characters")
        if not isinstance(host, str) or not host:
            raise DatastoreError(f"the user {name} needs a host; '%' is any host")
        if len(host) > MAX_HOST:
            raise DatastoreError(f"the host of the user {name} is longer than {MAX_HOST} characters")
        if "\0" in name + host or _outside_bmp(name + host):
            raise DatastoreError(f"{name!r}@{host!r} is not a valid user: NUL and characters outside the basic "
                                 f"multilingual plane are not allowed")

    def _check_new_user(self, user: NewUser) -> None:
        self._check_user(user.name, user.host)
        _check_password(user.password, user.name)
        for database in user.databases:
            self._check_database(database)


# -- SQL helpers -------------------------------------------------------------------------------------

def _ident(name: str) -> str:
    """A quoted identifier, ready for ``_execute``: every statement goes through PyMySQL's parameter
    formatting, so ``%`` is doubled as well as the backticks."""
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


def _db_pattern(name: str) -> str:
    """A database name as GRANT reads it and ``mysql.db`` stores it: ``_`` and ``%`` are wildcards there."""
    return name.replace("_", "\\_").replace("%", "\\%")


def _db_name(pattern: str) -> str:
    return re.sub(r"\\(.)", r"\1", pattern)


def _execute(connection: Connection, sql: str, args: tuple[object, ...] = ()) -> int:
    """Values (user names, hosts, passwords) only ever as ``args``; identifiers only through ``_ident``."""
    with connection.cursor() as cursor:
        return cursor.execute(sql, args)


def _query(connection: Connection, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return list(cursor.fetchall())


def _user_exists(connection: Connection, name: str, host: str) -> bool:
    # Host names are case-insensitive in MariaDB accounts; the stored form may differ in case.
    return bool(_query(connection, "SELECT 1 FROM mysql.user WHERE User = %s AND LOWER(Host) = LOWER(%s)",
                       (name, host)))


def _same_account(first: tuple[str, str], second: tuple[str, str]) -> bool:
    return first[0] == second[0] and first[1].lower() == second[1].lower()


def _grant(connection: Connection, name: str, host: str, database: str) -> None:
    _execute(connection, f"GRANT ALL PRIVILEGES ON {_ident(_db_pattern(database))}.* TO %s@%s", (name, host))


def _revoke(connection: Connection, name: str, host: str, database: str) -> None:
    """Everything on the database, the grant option included, so no ``mysql.db`` row is left behind."""
    scope = f"{_ident(_db_pattern(database))}.*"
    for privileges in ("ALL PRIVILEGES", "GRANT OPTION"):
        try:
            _execute(connection, f"REVOKE {privileges} ON {scope} FROM %s@%s", (name, host))
        except pymysql.MySQLError as exc:
            if not (exc.args and exc.args[0] == _NO_SUCH_GRANT):
                raise


def _no_such_user(name: str, host: str) -> DatastoreError:
    return DatastoreError(f"the user {name}@{host} does not exist")


def _check_password(password: str, name: str) -> None:
    if not isinstance(password, str) or not password:
        raise DatastoreError(f"the password for {name} must not be empty")
    if "\0" in password:
        raise DatastoreError(f"the password for {name} may not contain NUL")


def _outside_bmp(text: str) -> bool:
    return any(ord(char) > 0xFFFF for char in text)  # MariaDB identifiers are utf8mb3


def _message(exc: BaseException, *secrets: str) -> str:
    """The server's message (not PyMySQL's tuple), with any secret blanked out."""
    args = getattr(exc, "args", ())
    text = str(args[1]) if len(args) > 1 else str(exc)
    if args and isinstance(args[0], int):
        text = f"{text} (error {args[0]})"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


@contextmanager
def _sql_errors(what: str, *secrets: str) -> Iterator[None]:
    """A server error as a ``DatastoreError`` for users; not chained, so no traceback carries a statement."""
    try:
        yield
    except pymysql.MySQLError as exc:
        raise DatastoreError(f"{what} failed: {_message(exc, *secrets)}") from None


# -- files -------------------------------------------------------------------------------------------

def _tool_environment() -> dict[str, str]:
    """Only what the client tools need: nothing of the agent's environment (MYSQL_HOST…) redirects them."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


def _socket_path(run_dir: Path) -> Path:
    preferred = run_dir / "mysqld.sock"
    if len(os.fsencode(preferred)) <= SOCKET_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(run_dir.resolve())).hexdigest()[:16]
    return Path("/tmp") / f"trove-es-mysql-{digest}.sock"


def _memory_settings(memory_mb: int) -> dict[str, str]:
    """Trove's template: half the flavor's RAM for InnoDB, 100 connections per 512 MB (at least 50)."""
    return {"innodb_buffer_pool_size": f"{max(32, memory_mb // 2)}M",
            "key_buffer_size": f"{max(8, memory_mb // 32)}M",
            "tmp_table_size": f"{max(16, memory_mb // 16)}M",
            "max_heap_table_size": f"{max(16, memory_mb // 16)}M",
            "max_connections": str(max(50, memory_mb * 100 // 512))}


def _read_options(path: Path) -> dict[str, str]:
    """The ``key = value`` lines of the ``[mysqld]`` section of a my.cnf this module wrote."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    options: dict[str, str] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == "mysqld" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            options[key.strip().replace("-", "_")] = value.strip()
    return options


def _option_value(path: Path) -> str:
    """A path as an option file value: quoted, and with the backslash escapes option files interpret."""
    text = str(path)
    if any(char in text for char in '"\n'):
        raise DatastoreError(f"the path {text!r} cannot be written to an option file")
    return '"' + text.replace("\\", "\\\\") + '"'


def _replace_file(path: Path, text: str, mode: int) -> None:
    """Written beside and renamed over, so a crash never leaves a half-written configuration."""
    staging = path.with_name(path.name + ".new")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(staging, mode)
    os.replace(staging, path)


def _touch(path: Path, account: pwd.struct_passwd | None) -> None:
    """The server's log, created as the service account's so the server (not root) can append to it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.close(descriptor)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
