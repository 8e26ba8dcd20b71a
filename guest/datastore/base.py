"""What every datastore manager offers the guest agent, and the little they share.

A manager drives one real database server whose files live on the instance's volume (a directory
given to it). It is synchronous and keeps no state in memory that it cannot find again on disk: a
guest agent restarted mid-operation makes a new manager and carries on.

The agent runs as root on a real guest (and in this machine's tests); database servers refuse to run
as root, so a manager runs them, and everything that writes their files, as the datastore's own
service account (``postgres``, ``mysql``) when the agent is root, and as the agent's own user otherwise.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from domain.statuses import ServiceStatus


class DatastoreError(RuntimeError):
    """An operation of the database server failed; the text says what and what to do, and is what users see."""


@dataclass(frozen=True)
class InstanceLayout:
    """Where one instance lives on this host."""

    volume: Path  # the instance's volume: the server's data directory is inside it, and nothing else is
    run_dir: Path  # pid file, socket, the admin credentials (0600): outside the volume, never counted in it
    port: int  # the server listens on 127.0.0.1:port
    memory_mb: int  # the flavor's RAM: the server's memory settings are derived from it
    volume_size_gb: int | None  # the volume's size limit, enforced by the guest


@dataclass(frozen=True)
class NewUser:
    """A user to create; ``password`` is plaintext here and only here, in the guest."""

    name: str
    password: str = field(repr=False)
    host: str = "%"
    databases: tuple[str, ...] = ()  # given access to these


@dataclass(frozen=True)
class UserInfo:
    """A user as a datastore lists it (reserved users are never listed)."""

    name: str
    host: str
    databases: tuple[str, ...]  # the databases it has access to, sorted


class DatastoreManager(Protocol):
    """One instance's database server. Every method is idempotent unless it says otherwise."""

    datastore: str  # the manager's name in the catalog: "postgresql", "mysql"

    def prepare(self, databases: Sequence[str], users: Sequence[NewUser]) -> None:
        """Initialise the data directory (once), configure and start the server, set the admin
        credentials, create ``databases`` and ``users``. Repeated after a crash, it finishes what is left."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None:
        """Stop the server cleanly; nothing when it is not running."""
        ...

    def restart(self) -> None: ...

    def status(self) -> ServiceStatus:
        """Probed, not assumed: HEALTHY when it answers a query, SHUTDOWN when it is not running, CRASHED
        when its pid file names a process that is gone, NEW before ``prepare`` initialised anything."""
        ...

    def volume_used_bytes(self) -> int:
        """The real size of the files on the volume."""
        ...

    def set_memory(self, memory_mb: int) -> None:
        """Rewrite the memory settings for ``memory_mb`` (takes effect at the next start)."""
        ...

    def set_read_only(self, read_only: bool) -> None:
        """Refuse (or allow again) writes by users: how the guest enforces the volume's size."""
        ...

    # Databases, users, access and root (Trove's guest API). Reserved names (the datastore's own and the
    # admin's) are refused with a DatastoreError; identifiers are always quoted, never interpolated raw.

    def list_databases(self) -> list[str]:
        """The users' databases, sorted; the datastore's own are not listed."""
        ...

    def create_databases(self, names: Sequence[str], character_set: str | None = None,
                         collate: str | None = None) -> None:
        """Create those that do not exist yet."""
        ...

    def delete_database(self, name: str) -> None: ...

    def list_users(self) -> list[UserInfo]: ...

    def create_users(self, users: Sequence[NewUser]) -> None:
        """Create each user (or set its password when it exists) and grant it its databases."""
        ...

    def delete_user(self, name: str, host: str = "%") -> None: ...

    def update_user(self, name: str, host: str = "%", *, new_name: str | None = None,
                    new_host: str | None = None, new_password: str | None = None) -> None: ...

    def change_passwords(self, users: Sequence[NewUser]) -> None: ...

    def list_access(self, name: str, host: str = "%") -> list[str]:
        """The databases the user has access to, sorted."""
        ...

    def grant_access(self, name: str, host: str, databases: Sequence[str]) -> None: ...

    def revoke_access(self, name: str, host: str, database: str) -> None: ...

    def enable_root(self, password: str) -> None:
        """Let the datastore's superuser log in from anywhere with ``password`` (the caller generates it)."""
        ...

    def disable_root(self) -> None: ...

    def is_root_enabled(self) -> bool: ...

    # Backups: logical, of the users' data (their databases, and the users with their passwords and access),
    # never of the datastore's own accounts; the guest compresses, stores and verifies the bytes.

    def backup(self, out: BinaryIO) -> None:
        """Write a full logical backup to ``out`` as the dump tool produces it, streamed."""
        ...

    def restore(self, dump: BinaryIO | Path) -> None:
        """Load a ``backup`` into this running, freshly prepared server: what prepare made is replaced by the
        backup's own databases and users of the same names."""
        ...


def service_account(name: str) -> pwd.struct_passwd | None:
    """The OS account a database server runs as: ``name``'s when this process is root, None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise DatastoreError(f"the service account {name!r} does not exist on this host; install the "
                             f"datastore's server package, which creates it") from None


def run(command: Sequence[str | os.PathLike[str]], account: pwd.struct_passwd | None, *,
        input: str | None = None, timeout: float = 120, what: str) -> str:
    """Run ``command`` as ``account`` and return its output; a failure is a ``DatastoreError`` naming ``what``."""
    try:
        done = subprocess.run([os.fspath(part) for part in command], input=input, capture_output=True, text=True,
                              timeout=timeout, check=False, **_as(account))
    except FileNotFoundError as exc:
        raise DatastoreError(f"{what}: {exc.filename} is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise DatastoreError(f"{what}: no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise DatastoreError(f"{what} failed (exit {done.returncode}): {detail[-1] if detail else 'no output'}")
    return done.stdout


TOOL_CHUNK = 1024 * 1024


def dump_to(command: Sequence[str | os.PathLike[str]], out: BinaryIO, *, env: Mapping[str, str], what: str,
            secrets: Sequence[str] = ()) -> None:
    """Run a dump tool and copy its output into ``out`` as it comes; a failure is a ``DatastoreError`` with
    the tool's own error (``secrets`` blanked out)."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty stderr cannot stall the dump
        process = _start_tool(command, what, env=env, errors=errors, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert process.stdout is not None
        try:
            while chunk := process.stdout.read(TOOL_CHUNK):
                out.write(chunk)
        except BaseException:
            process.kill()  # the backup cannot be stored: no point dumping the rest
            raise
        finally:
            process.stdout.close()
            status = process.wait()
        if status != 0:
            raise DatastoreError(f"{what} failed (exit {status}): {_tool_error(errors, secrets)}")


def load_from(command: Sequence[str | os.PathLike[str]], dump: BinaryIO | Path, *, env: Mapping[str, str],
              what: str, secrets: Sequence[str] = ()) -> None:
    """Run a client that reads SQL from its input and feed it ``dump``; a failure is a ``DatastoreError``
    with the client's own error (``secrets`` blanked out)."""
    with tempfile.TemporaryFile() as errors, _readable(dump) as source:
        process = _start_tool(command, what, env=env, errors=errors, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert process.stdin is not None
        try:
            while chunk := source.read(TOOL_CHUNK):
                process.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the client stopped at an error: its exit status and its error say which
        except BaseException:
            process.kill()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            status = process.wait()
        if status != 0:
            raise DatastoreError(f"{what} failed (exit {status}): {_tool_error(errors, secrets)}")


def _start_tool(command: Sequence[str | os.PathLike[str]], what: str, *, env: Mapping[str, str], errors: BinaryIO,
                stdin: int, stdout: int) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen([os.fspath(part) for part in command], stdin=stdin, stdout=stdout, stderr=errors,
                                env=dict(env))
    except FileNotFoundError as exc:
        raise DatastoreError(f"{what}: {exc.filename} is not installed on this host") from None


@contextlib.contextmanager
def _readable(dump: BinaryIO | Path) -> Iterator[BinaryIO]:
    if isinstance(dump, Path):
        with open(dump, "rb") as handle:
            yield handle
    else:
        yield dump


def _tool_error(errors: BinaryIO, secrets: Sequence[str]) -> str:
    """The tool's first error line, without the statement text an SQL error quotes (``near '...'``), which
    can hold a password hash."""
    errors.seek(0)
    lines = [line.strip() for line in errors.read().decode(errors="replace").splitlines() if line.strip()]
    found = next((line for line in lines if re.search(r"error", line, re.IGNORECASE)), lines[-1] if lines else "")
    found = re.split(r" (?:at or )?near ", found, maxsplit=1)[0]
    for secret in secrets:
        if secret:
            found = found.replace(secret, "***")
    return found[:300] or "no output"


def spawn(command: Sequence[str | os.PathLike[str]], account: pwd.struct_passwd | None,
          log_file: Path) -> subprocess.Popen[bytes]:
    """Start a long-running server as ``account``, detached from the agent's session, logging to ``log_file``."""
    with open(log_file, "ab") as log:
        return subprocess.Popen([os.fspath(part) for part in command], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, **_as(account))


def own(path: Path, account: pwd.struct_passwd | None, mode: int = 0o700) -> Path:
    """Make the directory ``path`` (and parents) and give it to ``account``, private to it."""
    path.mkdir(parents=True, exist_ok=True)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)
    return path


def private_file(path: Path, text: str, account: pwd.struct_passwd | None = None) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (``account``, or this process's user)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def generate_password() -> str:
    """A password with no characters that need quoting in SQL, shells or URLs."""
    return secrets.token_urlsafe(24)


def directory_size(path: Path) -> int:
    """Bytes allocated to the files under ``path`` (what a volume would count), not their apparent length."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:  # a server removes temporary files while it is counted
                continue
    return total


def _as(account: pwd.struct_passwd | None) -> dict[str, int]:
    return {} if account is None else {"user": account.pw_uid, "group": account.pw_gid,
                                       "extra_groups": []}
