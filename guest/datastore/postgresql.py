"""The PostgreSQL manager: one real PostgreSQL server whose data directory is on the instance's volume.

The server runs as the ``postgres`` OS account (PostgreSQL refuses root) from this host's own binaries
(``/usr/lib/postgresql/<major>/bin``). The agent speaks to it as ``os_admin``, the superuser ``initdb``
creates, over TCP on 127.0.0.1 with SCRAM: that path works whatever the length of the run directory (a Unix
socket path is limited to 107 bytes) and it is the same path the users take, so a probe that passes means
users can connect too. The admin password lives in ``run_dir/admin.json`` (0600, the agent's own), so a
restarted agent finds it again; the server itself never sees it in plaintext, nor any user's: passwords are
sent as SCRAM verifiers computed by libpq, so neither a statement log nor an error report can show them.

Trove's PostgreSQL conventions are kept: ``os_admin`` and ``postgres`` are reserved, ``postgres`` is the
"root" that ``enable_root`` lets log in, a user's "access" to a database is ``GRANT ALL ON DATABASE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

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
)

INSTALL_ROOT = Path("/usr/lib/postgresql")
ADMIN_USER = "os_admin"
ROOT_USER = "postgres"
ADMIN_DATABASE = "postgres"  # the admin connects here: it always exists and users never get it
RESERVED_USERS = frozenset({ADMIN_USER, ROOT_USER, "root"})
RESERVED_DATABASES = frozenset({"template0", "template1", "postgres", ADMIN_USER})
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names, so refuse them
SOCKET_PATH_LIMIT = 107  # sizeof(sun_path) - 1 on Linux
CONNECT_TIMEOUT_S = 2
START_TIMEOUT_S = 60
MAX_CONNECTIONS = 100
CRASH_SETTLE_S = 15  # how long a start after a crash waits for the dead server's processes to go
INCLUDE_LINE = "include_if_exists = 'trove.conf'  # written by the trove-es guest agent"

_PUBLIC_SCHEMA_PRIVILEGES = sql.SQL("ALL ON SCHEMA public")
_ALIVE, _ZOMBIE, _OTHER, _GONE = "alive", "zombie", "other", "gone"


def _major(version: str) -> str:
    """PostgreSQL's major version as its directories name it: ``15`` for 15.4, ``9.6`` for 9.6.24."""
    parts = version.strip().split(".")
    if parts[0] == "9" and len(parts) > 1:  # before 10 the major version had two parts
        return ".".join(parts[:2])
    return parts[0]


def installed_versions(root: Path = INSTALL_ROOT) -> dict[str, Path]:
    """The major versions installed on this host and their ``bin`` directories."""
    found = {}
    for bin_dir in sorted(root.glob("*/bin")):
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            found[bin_dir.parent.name] = bin_dir
    return found


class PostgreSQLManager:
    """One instance's PostgreSQL server, found again from its layout alone (see the module docstring)."""

    datastore = "postgresql"

    def __init__(self, layout: InstanceLayout, version: str) -> None:
        self.layout = layout
        self.version = version
        self.major = _major(version)
        self.data_dir = layout.volume / "data"
        self.log_file = layout.run_dir / "postgresql.log"
        self.credentials_file = layout.run_dir / "admin.json"
        self._account = service_account(ROOT_USER)

    # ----------------------------------------------------------------------------------------- lifecycle

    def prepare(self, databases: Sequence[str], users: Sequence[NewUser]) -> None:
        """Every step checks what is already there, so a prepare cut short anywhere is finished by the next."""
        for name in databases:
            self._check_database_name(name)
        for user in users:
            self._check_user_name(user.name)
        bin_dir = self._bin_dir()
        own(self.layout.volume, self._account)
        own(self.layout.run_dir, self._account)
        self._check_reachable(self.layout.volume)
        self._check_reachable(self.layout.run_dir)
        password = self._admin_password(create=True)
        if not self._initialised():
            self._initdb(bin_dir, password)
        self._check_data_version()
        self._write_configuration(self.layout.memory_mb)
        self.start()
        with self._admin() as connection:
            self._keep_admin_writable(connection)
        self.create_databases(databases)
        self.create_users(users)

    def start(self) -> None:
        """Starting a server that already runs only waits for it to answer."""
        bin_dir = self._bin_dir()
        self._require_initialised()
        self._check_data_version()
        if self._postmaster_alive():
            self._wait_until_answering(START_TIMEOUT_S)
            return
        deadline = time.monotonic() + CRASH_SETTLE_S
        log_start = self._log_size()
        while True:
            self._clear_stale_lock(deadline)
            try:
                run([bin_dir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", str(START_TIMEOUT_S),
                     "start"], self._account, timeout=START_TIMEOUT_S + 10, what="pg_ctl start")
                break
            except DatastoreError:
                # After a crash the killed postmaster's children can hold its shared memory for a moment;
                # the server refuses to start until they have noticed and exited.
                reason = self._log_reason(log_start)
                if "shared memory block" in reason and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise DatastoreError(f"PostgreSQL did not start: {reason or 'nothing in its log'} "
                                     f"(log: {self.log_file})") from None
        self._wait_until_answering(START_TIMEOUT_S)

    def _clear_stale_lock(self, deadline: float) -> None:
        """A crashed postmaster that nobody has reaped yet (a zombie), or whose pid now names another
        program, still "exists" to PostgreSQL's own check, which then refuses to start. Its pid file is
        removed once no live process works in the data directory any more (its orphaned children, which
        PostgreSQL would otherwise find through the shared memory the pid file names)."""
        pid = self._postmaster_pid()
        if pid is None or _process_state(pid) not in (_ZOMBIE, _OTHER):
            return  # no lock, a live server, or a pid that is gone: PostgreSQL handles those itself
        while _processes_working_in(self.data_dir):
            if time.monotonic() > deadline:
                raise DatastoreError("PostgreSQL cannot start: processes of the crashed server still run in "
                                     f"{self.data_dir}")
            time.sleep(0.2)
        socket_lock = Path(self._socket_directory() or "/nonexistent") / f".s.PGSQL.{self.layout.port}.lock"
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            if int(socket_lock.read_text().split("\n", 1)[0]) == pid:  # the socket's lock names the same pid
                socket_lock.unlink()
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        """A fast shutdown (sessions are ended, work in progress rolled back); immediate if that hangs."""
        if not self._postmaster_alive():
            return
        bin_dir = self._bin_dir()
        try:
            run([bin_dir / "pg_ctl", "-D", self.data_dir, "-w", "-t", str(START_TIMEOUT_S), "stop", "-m", "fast"],
                self._account, timeout=START_TIMEOUT_S + 10, what="pg_ctl stop")
        except DatastoreError:
            if not self._postmaster_alive():
                return
            run([bin_dir / "pg_ctl", "-D", self.data_dir, "-w", "-t", "30", "stop", "-m", "immediate"],
                self._account, timeout=40, what="pg_ctl stop (immediate)")

    def restart(self) -> None:
        self.stop()
        self.start()

    def status(self) -> ServiceStatus:
        """A postmaster that lives but does not answer (starting, recovering, or stuck) is RUNNING, as
        Trove reports it; HEALTHY needs a real query to succeed."""
        if not self._initialised():
            return ServiceStatus.NEW
        if self._answers():
            return ServiceStatus.HEALTHY
        pid = self._postmaster_pid()
        if pid is None:
            return ServiceStatus.SHUTDOWN
        return ServiceStatus.RUNNING if _process_state(pid) == _ALIVE else ServiceStatus.CRASHED

    def volume_used_bytes(self) -> int:
        return directory_size(self.layout.volume)

    def set_memory(self, memory_mb: int) -> None:
        """Only ``trove.conf`` is rewritten: what ALTER SYSTEM wrote (read-only) and the rest are kept."""
        self._require_initialised()
        self._write_configuration(memory_mb)

    def set_read_only(self, read_only: bool) -> None:
        """``default_transaction_read_only`` for every new session, kept across restarts (ALTER SYSTEM).

        It is a default, not a lock: a user who knows can still ``SET default_transaction_read_only = off``
        in a session; PostgreSQL has no stronger switch short of stopping the server. The admin's own
        sessions are exempt (a role setting wins over the system one), so the guest can still manage it.
        """
        value = sql.SQL("on" if read_only else "off")
        with self._admin() as connection, _errors("setting read-only mode"):
            self._keep_admin_writable(connection)
            connection.execute(sql.SQL("ALTER SYSTEM SET default_transaction_read_only = {}").format(value))
            connection.execute("SELECT pg_reload_conf()")

    # ----------------------------------------------------------------------------------------- databases

    def list_databases(self) -> list[str]:
        with self._admin() as connection:
            names = [row[0] for row in connection.execute("SELECT datname FROM pg_database")]
        return sorted(name for name in names if name not in RESERVED_DATABASES)

    def create_databases(self, names: Sequence[str], character_set: str | None = None,
                         collate: str | None = None) -> None:
        """Besides creating, it takes the default CONNECT and TEMPORARY from PUBLIC, so that only users
        given access can connect (PostgreSQL lets every role connect to every database by default, which
        would make access meaningless). That is done for existing names too: it is how a create cut short
        between the two statements gets finished.

        ``collate`` names a locale and sets the character classification too (LC_CTYPE), as a locale name
        means both; a ``character_set`` other than UTF-8 given alone gets the C locale, the only one that
        fits every encoding (the cluster's own, C.UTF-8, fits UTF-8 only)."""
        for name in names:
            self._check_database_name(name)
        locale = collate
        if locale is None and character_set and character_set.upper().replace("-", "") != "UTF8":
            locale = "C"
        with self._admin() as connection:
            existing = self._databases(connection)
            for name in names:
                if name not in existing:
                    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                    if character_set or locale:
                        statement += sql.SQL(" TEMPLATE template0")
                    if character_set:
                        statement += sql.SQL(" ENCODING {}").format(sql.Literal(character_set))
                    if locale:
                        statement += sql.SQL(" LC_COLLATE {0} LC_CTYPE {0}").format(sql.Literal(locale))
                    with _errors(f"creating database {name}"):
                        connection.execute(statement)
                    existing.add(name)
                with _errors(f"restricting database {name}"):
                    connection.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC")
                                       .format(sql.Identifier(name)))

    def delete_database(self, name: str) -> None:
        """Sessions still connected to it are ended: deleting is what was asked for."""
        self._check_database_name(name)
        with self._admin() as connection, _errors(f"deleting database {name}"):
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # ------------------------------------------------------------------------------------------- users

    def list_users(self) -> list[UserInfo]:
        """Login roles only (Trove lists ``pg_user``); PostgreSQL has no user hosts, so every host is %."""
        with self._admin() as connection:
            names = [row[0] for row in connection.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin")]
            return [UserInfo(name, "%", tuple(self._access(connection, name)))
                    for name in sorted(names) if not _reserved_user(name)]

    def create_users(self, users: Sequence[NewUser]) -> None:
        """``host`` is accepted and ignored: PostgreSQL roles are not per host (pg_hba.conf decides that)."""
        for user in users:
            self._check_user_name(user.name)
            for database in user.databases:
                self._check_database_name(database)
        with self._admin() as connection:
            for user in users:
                missing = set(user.databases) - self._databases(connection)
                if missing:
                    raise DatastoreError(f"cannot give user {user.name} access to database(s) "
                                         f"{', '.join(sorted(missing))}: they do not exist")
                verb = "ALTER" if self._role_exists(connection, user.name) else "CREATE"
                with _errors(f"creating user {user.name}"), connection.transaction():
                    self._set_password(connection, verb, user.name, user.password)
            for user in users:
                self._grant(connection, user.name, user.databases)

    def delete_user(self, name: str, host: str = "%") -> None:
        """What the user owns is handed to the admin, not dropped (its tables are the customer's data), and
        its privileges are revoked in every database: PostgreSQL refuses to drop a role that still has any."""
        self._check_user_name(name)
        with self._admin() as connection:
            if not self._role_exists(connection, name):
                return
            role = sql.Identifier(name)
            for database in self._connectable_databases(connection):
                with self._admin(database) as inside, _errors(f"deleting user {name}"):
                    inside.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(role, sql.Identifier(ADMIN_USER)))
                    inside.execute(sql.SQL("DROP OWNED BY {}").format(role))
            with _errors(f"deleting user {name}"):
                connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))

    def update_user(self, name: str, host: str = "%", *, new_name: str | None = None,
                    new_host: str | None = None, new_password: str | None = None) -> None:
        """``new_host`` is ignored (no hosts in PostgreSQL). A rename keeps a SCRAM password, but PostgreSQL
        clears an MD5 one (the name is its salt): such a rename needs ``new_password`` and is refused
        without it, rather than leaving a user that can no longer log in."""
        self._check_user_name(name)
        if new_name is not None:
            self._check_user_name(new_name)
        with self._admin() as connection:
            self._require_role(connection, name)
            with _errors(f"updating user {name}"), connection.transaction():
                current = name
                if new_name is not None and new_name != name:
                    if self._role_exists(connection, new_name):
                        raise DatastoreError(f"cannot rename user {name} to {new_name}: that user exists")
                    connection.execute(sql.SQL("ALTER ROLE {} RENAME TO {}")
                                       .format(sql.Identifier(name), sql.Identifier(new_name)))
                    current = new_name
                if new_password is not None:
                    self._set_password(connection, "ALTER", current, new_password)
                elif current != name and not self._has_password(connection, current):
                    raise DatastoreError(f"renaming user {name} clears its (MD5) password; give a new password "
                                         f"with the new name")

    def change_passwords(self, users: Sequence[NewUser]) -> None:
        for user in users:
            self._check_user_name(user.name)
        with self._admin() as connection:
            for user in users:
                self._require_role(connection, user.name)
                with _errors(f"changing the password of user {user.name}"), connection.transaction():
                    self._set_password(connection, "ALTER", user.name, user.password)

    # ------------------------------------------------------------------------------------------ access

    def list_access(self, name: str, host: str = "%") -> list[str]:
        """The databases whose privileges were granted to the user itself (or that it owns). PUBLIC's
        privileges do not count: ``create_databases`` takes them away, and a database made otherwise would
        otherwise show as every user's."""
        self._check_user_name(name)
        with self._admin() as connection:
            self._require_role(connection, name)
            return self._access(connection, name)

    def grant_access(self, name: str, host: str, databases: Sequence[str]) -> None:
        """ALL on the database, and on its ``public`` schema too: since PostgreSQL 15 PUBLIC may no longer
        create in it, and access that cannot create a table would not be Trove's access."""
        self._check_user_name(name)
        for database in databases:
            self._check_database_name(database)
        with self._admin() as connection:
            self._require_role(connection, name)
            missing = set(databases) - self._databases(connection)
            if missing:
                raise DatastoreError(f"cannot give user {name} access to database(s) {', '.join(sorted(missing))}: "
                                     f"they do not exist")
            self._grant(connection, name, databases)

    def revoke_access(self, name: str, host: str, database: str) -> None:
        """Objects the user created stay its own; it just cannot connect any more."""
        self._check_user_name(name)
        self._check_database_name(database)
        with self._admin() as connection:
            self._require_role(connection, name)
            if database not in self._databases(connection):
                return
            role = sql.Identifier(name)
            with _errors(f"revoking access of user {name} to database {database}"):
                connection.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}")
                                   .format(sql.Identifier(database), role))
                with self._admin(database) as inside:
                    if _has_public_schema(inside):
                        inside.execute(sql.SQL("REVOKE {} FROM {}").format(_PUBLIC_SCHEMA_PRIVILEGES, role))

    # -------------------------------------------------------------------------------------------- root

    def enable_root(self, password: str) -> None:
        """``initdb --username=os_admin`` makes no ``postgres`` role, so the first enable creates it."""
        with self._admin() as connection, _errors("enabling root"), connection.transaction():
            verb = "ALTER" if self._role_exists(connection, ROOT_USER) else "CREATE"
            connection.execute(sql.SQL("{} ROLE {} WITH SUPERUSER").format(sql.SQL(verb), sql.Identifier(ROOT_USER)))
            self._set_password(connection, "ALTER", ROOT_USER, password)

    def disable_root(self) -> None:
        """The role is kept (it may own objects root created) but can no longer log in, with no password."""
        with self._admin() as connection, _errors("disabling root"):
            if self._role_exists(connection, ROOT_USER):
                connection.execute(sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(
                    sql.Identifier(ROOT_USER)))

    def is_root_enabled(self) -> bool:
        with self._admin() as connection:
            row = connection.execute("SELECT rolcanlogin AND rolpassword IS NOT NULL FROM pg_authid "
                                     "WHERE rolname = %s", (ROOT_USER,)).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------------------------------------ backups

    def backup(self, out: BinaryIO) -> None:
        """One psql script: the users' roles with their SCRAM verifiers (so their passwords work after a
        restore), then ``pg_dump --create --clean`` of each user database, each in a snapshot of its own.
        The admin and ``postgres`` are left out: a restored instance keeps its own."""
        bin_dir = self._bin_dir()
        with self._admin() as connection:
            roles = self._roles_script(connection)
            databases = sorted(name for name in self._connectable_databases(connection)
                               if name not in RESERVED_DATABASES)
        out.write(roles.encode())
        with self._tool_login() as env:
            for database in databases:
                dump_to([bin_dir / "pg_dump", "--create", "--clean", "--if-exists", "--no-password",
                         f"--dbname={self._conninfo(database)}"], out, env=env, what=f"pg_dump of database {database}",
                        secrets=[self._admin_password()])

    def restore(self, dump: BinaryIO | Path) -> None:
        """The script stops at its first error. Roles that exist are altered, not created again; databases
        that exist (prepare's, still empty) are dropped and made again as the backup has them."""
        bin_dir = self._bin_dir()
        with self._tool_login() as env:
            load_from([bin_dir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password",
                       "-d", self._conninfo(ADMIN_DATABASE), "-f", "-"], dump, env=env,
                      what="restoring the backup with psql", secrets=[self._admin_password()])

    @staticmethod
    def _roles_script(connection: psycopg.Connection[Any]) -> str:
        # The verifiers stay out of the server's log, as when the manager sets a password itself.
        lines = ["-- trove-es backup of a PostgreSQL instance: the users' roles, then a pg_dump of each database.",
                 "SET log_statement = 'none';", "SET log_min_error_statement = 'panic';"]
        rows = connection.execute("SELECT rolname, rolcanlogin, rolconnlimit, rolpassword, rolvaliduntil "
                                  "FROM pg_authid ORDER BY rolname")
        for name, login, limit, verifier, valid_until in rows:
            if _reserved_user(name):
                continue
            literal = sql.Literal(name)
            options = [sql.SQL("LOGIN" if login else "NOLOGIN"), sql.SQL("CONNECTION LIMIT {}").format(limit),
                       sql.SQL("PASSWORD {}").format(verifier)]
            if valid_until is not None:
                options.append(sql.SQL("VALID UNTIL {}").format(valid_until.isoformat()))
            lines += [sql.SQL("SELECT format('CREATE ROLE %I', {}) WHERE NOT EXISTS "
                              "(SELECT 1 FROM pg_roles WHERE rolname = {}) \\gexec").format(literal, literal)
                      .as_string(connection),
                      sql.SQL("ALTER ROLE {} WITH {};").format(sql.Identifier(name), sql.SQL(" ").join(options))
                      .as_string(connection)]
        return "\n".join(lines) + "\n"

    def _conninfo(self, database: str) -> str:
        """The admin's connection for the client tools, quoted: a database name is never read as options."""
        return make_conninfo(host="127.0.0.1", port=self.layout.port, user=ADMIN_USER, dbname=database,
                             connect_timeout=CONNECT_TIMEOUT_S, application_name="trove-es-guest")

    @contextlib.contextmanager
    def _tool_login(self) -> Iterator[dict[str, str]]:
        """The client tools' environment: the admin's password in a passfile (0600) for as long as they run,
        never on their command line (which any local user can read) nor in their environment."""
        password = self._admin_password().replace("\\", "\\\\").replace(":", "\\:")
        passfile = private_file(self.layout.run_dir / "tools.pgpass",
                                f"127.0.0.1:{self.layout.port}:*:{ADMIN_USER}:{password}\n")
        try:
            yield {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PGPASSFILE": str(passfile)}
        finally:
            passfile.unlink(missing_ok=True)

    # -------------------------------------------------------------------------------- the server's files

    def _bin_dir(self) -> Path:
        versions = installed_versions()
        if self.major not in versions:
            installed = ", ".join(sorted(versions, key=_version_key)) or "none"
            raise DatastoreError(f"PostgreSQL {self.major} is not installed on this host (installed: {installed})")
        return versions[self.major]

    def _initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _require_initialised(self) -> None:
        if not self._initialised():
            raise DatastoreError("PostgreSQL is not set up on this instance yet (prepare has not run)")

    def _check_data_version(self) -> None:
        found = (self.data_dir / "PG_VERSION").read_text().strip()
        if found != self.major:
            raise DatastoreError(f"the data directory was made by PostgreSQL {found}, not {self.major}; it needs "
                                 f"an upgrade, not a start")

    def _check_reachable(self, path: Path) -> None:
        """The server account must be able to pass through every directory above ``path``: otherwise initdb
        and the server fail far away from the cause, with 'permission denied' on a path that exists."""
        account = self._account
        if account is None:
            return
        for directory in path.resolve().parents:
            info = directory.stat()
            if info.st_uid == account.pw_uid:
                bit = stat.S_IXUSR
            elif info.st_gid == account.pw_gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not info.st_mode & bit:
                raise DatastoreError(f"the {account.pw_name} account cannot reach {path}: {directory} (mode "
                                     f"{stat.S_IMODE(info.st_mode):o}) is closed to it")

    def _initdb(self, bin_dir: Path, password: str) -> None:
        """Into a staging directory renamed into place at the end, so that a data directory exists only
        complete, and a staging one left by a crash is simply made again."""
        if self.data_dir.exists():
            if any(self.data_dir.iterdir()):
                raise DatastoreError(f"{self.data_dir} holds files but is not a PostgreSQL data directory; "
                                     f"remove them or use another volume")
            self.data_dir.rmdir()
        staging = self.layout.volume / "data.initdb"
        if staging.exists():
            shutil.rmtree(staging)
        own(staging, self._account)
        password_file = private_file(self.layout.run_dir / "initdb.pw", password + "\n", self._account)
        try:
            run([bin_dir / "initdb", "-D", staging, f"--username={ADMIN_USER}", f"--pwfile={password_file}",
                 "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"], self._account, timeout=300,
                what="initdb")
        finally:
            password_file.unlink(missing_ok=True)
        staging.rename(self.data_dir)

    def _write_configuration(self, memory_mb: int) -> None:
        """``trove.conf`` is ours entirely and rewritten whole; ``postgresql.conf`` only includes it."""
        main = self.data_dir / "postgresql.conf"
        text = main.read_text()
        if INCLUDE_LINE not in text.splitlines():
            self._write_server_file(main, text.rstrip("\n") + "\n\n" + INCLUDE_LINE + "\n")
        self._write_server_file(self.data_dir / "trove.conf", self._settings(memory_mb))
        self._write_server_file(self.data_dir / "pg_hba.conf", _PG_HBA)

    def _settings(self, memory_mb: int) -> str:
        shared_buffers = max(16, memory_mb // 4)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.layout.port),
            "unix_socket_directories": _quote_setting(self._socket_directory()),
            "unix_socket_permissions": "0700",
            "max_connections": str(MAX_CONNECTIONS),
            "password_encryption": "'scram-sha-256'",
            "shared_buffers": f"{shared_buffers}MB",
            "effective_cache_size": f"{max(32, memory_mb * 3 // 4)}MB",
            "maintenance_work_mem": f"{min(2048, max(16, memory_mb // 16))}MB",
            "work_mem": f"{max(1, memory_mb // (4 * MAX_CONNECTIONS))}MB",
        }
        lines = [f"# Written by the trove-es guest agent for {memory_mb} MB of RAM; rewritten on resize.",
                 *(f"{key} = {value}" for key, value in settings.items())]
        return "\n".join(lines) + "\n"

    def _socket_directory(self) -> str:
        """The run directory, unless the socket's path would pass the kernel's limit: TCP only, then."""
        socket_path = f"{self.layout.run_dir}/.s.PGSQL.{self.layout.port}"
        return "" if len(os.fsencode(socket_path)) > SOCKET_PATH_LIMIT else str(self.layout.run_dir)

    def _write_server_file(self, path: Path, text: str) -> None:
        temporary = path.with_name(path.name + ".new")
        private_file(temporary, text, self._account)
        temporary.replace(path)

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first) if first.strip().isdigit() else None

    def _postmaster_alive(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and _process_state(pid) == _ALIVE

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_reason(self, offset: int = 0) -> str:
        """The last error the server logged after ``offset``, or its last line: a failed start ends with
        "database system is shut down", which says nothing; the FATAL line before it says why."""
        try:
            with open(self.log_file, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if re.search(r"\b(FATAL|PANIC|ERROR):", line)]
        return (errors or lines or [""])[-1]

    # ------------------------------------------------------------------------------------ the connection

    def _admin_password(self, *, create: bool = False) -> str:
        """Written before initdb uses it, so a retried prepare gives initdb the same password."""
        try:
            return str(json.loads(self.credentials_file.read_text())["password"])
        except FileNotFoundError:
            if not create:
                raise DatastoreError(f"the admin credentials are missing ({self.credentials_file}); the agent "
                                     f"cannot manage this server") from None
        except (ValueError, KeyError, TypeError):
            raise DatastoreError(f"the admin credentials file {self.credentials_file} is damaged") from None
        password = generate_password()
        temporary = self.credentials_file.with_name(self.credentials_file.name + ".new")
        private_file(temporary, json.dumps({"user": ADMIN_USER, "password": password}) + "\n")
        temporary.replace(self.credentials_file)
        return password

    def _connect(self, database: str = ADMIN_DATABASE) -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.layout.port, user=ADMIN_USER,
                               password=self._admin_password(), dbname=database, connect_timeout=CONNECT_TIMEOUT_S,
                               autocommit=True, application_name="trove-es-guest")

    @contextlib.contextmanager
    def _admin(self, database: str = ADMIN_DATABASE) -> Iterator[psycopg.Connection[Any]]:
        try:
            connection = self._connect(database)
        except psycopg.OperationalError as exc:
            raise DatastoreError(f"PostgreSQL is not answering on 127.0.0.1:{self.layout.port}: "
                                 f"{_reason(exc)}") from None
        with connection:
            try:
                yield connection
            except psycopg.Error as exc:
                raise DatastoreError(f"PostgreSQL failed: {_reason(exc)}") from None

    def _answers(self) -> bool:
        try:
            with self._connect() as connection:
                connection.execute("SELECT 1")
            return True
        except (psycopg.Error, DatastoreError):
            return False

    def _wait_until_answering(self, timeout: float) -> None:
        self._admin_password()  # missing credentials are said at once, not after the whole timeout
        deadline = time.monotonic() + timeout
        while not self._answers():
            if time.monotonic() > deadline:
                raise DatastoreError(f"PostgreSQL started but does not answer on 127.0.0.1:{self.layout.port}: "
                                     f"{self._log_reason() or 'nothing in its log'}")
            time.sleep(0.2)

    @staticmethod
    def _keep_admin_writable(connection: psycopg.Connection[Any]) -> None:
        """A role setting outranks ALTER SYSTEM's, so read-only mode never locks out the agent itself."""
        with _errors("configuring the admin user"):
            connection.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = off")
                               .format(sql.Identifier(ADMIN_USER)))

    # ------------------------------------------------------------------------------------ SQL helpers

    @staticmethod
    def _databases(connection: psycopg.Connection[Any]) -> set[str]:
        return {row[0] for row in connection.execute("SELECT datname FROM pg_database")}

    @staticmethod
    def _connectable_databases(connection: psycopg.Connection[Any]) -> list[str]:
        return [row[0] for row in connection.execute("SELECT datname FROM pg_database WHERE datallowconn")]

    @staticmethod
    def _role_exists(connection: psycopg.Connection[Any], name: str) -> bool:
        return connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None

    def _require_role(self, connection: psycopg.Connection[Any], name: str) -> None:
        if not self._role_exists(connection, name):
            raise DatastoreError(f"user {name} does not exist")

    @staticmethod
    def _has_password(connection: psycopg.Connection[Any], name: str) -> bool:
        row = connection.execute("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
                                 (name,)).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _set_password(connection: psycopg.Connection[Any], verb: str, name: str, password: str) -> None:
        """The SCRAM verifier is computed here (by libpq) and sent instead of the password, and the statement
        is kept out of the server log even if it fails: the plaintext never leaves the agent."""
        verifier = connection.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
        connection.execute("SET LOCAL log_statement = 'none'")
        connection.execute("SET LOCAL log_min_error_statement = 'panic'")
        connection.execute(sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(name), sql.Literal(verifier.decode())))

    def _grant(self, connection: psycopg.Connection[Any], name: str, databases: Sequence[str]) -> None:
        role = sql.Identifier(name)
        for database in databases:
            with _errors(f"giving user {name} access to database {database}"):
                connection.execute(sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(sql.Identifier(database), role))
                with self._admin(database) as inside:
                    if _has_public_schema(inside):
                        inside.execute(sql.SQL("GRANT {} TO {}").format(_PUBLIC_SCHEMA_PRIVILEGES, role))

    @staticmethod
    def _access(connection: psycopg.Connection[Any], name: str) -> list[str]:
        rows = connection.execute(
            "SELECT DISTINCT d.datname FROM pg_database d "
            "CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) acl "
            "JOIN pg_roles r ON r.oid = acl.grantee "
            "WHERE r.rolname = %s AND acl.privilege_type IN ('CONNECT', 'CREATE')", (name,))
        return sorted(row[0] for row in rows if row[0] not in RESERVED_DATABASES)

    @staticmethod
    def _check_user_name(name: str) -> None:
        _check_identifier(name, "user")
        if _reserved_user(name):
            raise DatastoreError(f"{name} is a reserved user name")

    @staticmethod
    def _check_database_name(name: str) -> None:
        _check_identifier(name, "database")
        if name in RESERVED_DATABASES:
            raise DatastoreError(f"{name} is a reserved database name")


# Users connect with a SCRAM password from anywhere the server listens; the admin only from this host.
_PG_HBA = """\
# Written by the trove-es guest agent.
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       all                      scram-sha-256
host    all       all       127.0.0.1/32   scram-sha-256
host    all       all       ::1/128        scram-sha-256
host    all       os_admin  0.0.0.0/0      reject
host    all       os_admin  ::/0           reject
host    all       all       0.0.0.0/0      scram-sha-256
host    all       all       ::/0           scram-sha-256
"""


def _reserved_user(name: str) -> bool:
    return name in RESERVED_USERS or name.startswith("pg_")


def _check_identifier(name: str, kind: str) -> None:
    if not name or not name.strip():
        raise DatastoreError(f"a {kind} name cannot be empty")
    if "\0" in name:
        raise DatastoreError(f"a {kind} name cannot contain a NUL character")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise DatastoreError(f"{kind} name {name[:20]}... is longer than {MAX_IDENTIFIER_BYTES} bytes")


def _has_public_schema(connection: psycopg.Connection[Any]) -> bool:
    return connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'public'").fetchone() is not None


def _quote_setting(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _process_state(pid: int) -> str:
    """Whether ``pid`` is a live PostgreSQL server; a zombie is dead (killed, not yet reaped by init), and
    after a crash and a reboot the pid may have gone to another program."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return _GONE
    if status[status.rindex(")") + 2:].startswith(("Z", "X")):
        return _ZOMBIE
    return _ALIVE if b"postgres" in command or b"postmaster" in command else _OTHER


def _processes_working_in(directory: Path) -> list[int]:
    """Live processes whose current directory is ``directory``: every PostgreSQL process chdirs to its data
    directory, so these are a server's processes, orphaned or not."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == directory.resolve():
                found.append(int(entry.name))
        except OSError:  # gone, a zombie (no cwd), or a kernel thread
            continue
    return found


def _reason(exc: psycopg.Error) -> str:
    """The server's (or libpq's) own words, last line only: never a statement, so never a password."""
    primary = exc.diag.message_primary if getattr(exc, "diag", None) is not None else None
    text = primary or str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise DatastoreError(f"{what} failed: {_reason(exc)}") from None
