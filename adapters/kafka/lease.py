"""Single-writer leases: only one relay may publish a given store at a time.

On PostgreSQL the lease is a session-level advisory lock held on a dedicated connection; it goes
away with the process, so a ``kill -9`` frees it at once. On SQLite it is an ``flock`` on a file
beside the database, which the kernel also releases when the holder dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from services.ports import Lease, LeaseLost

log = logging.getLogger(__name__)


class PostgresAdvisoryLease:
    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        # Advisory locks take a bigint; derive a stable one from the lease name.
        self._key = int.from_bytes(hashlib.sha256(f"trove-es:{name}".encode()).digest()[:8], "big", signed=True)
        self._connection = None

    def try_acquire(self) -> bool:
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        held = self._connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
        return bool(held)

    def check(self) -> None:
        if self._connection is None:
            raise LeaseLost("lease was never acquired")
        # A session-level advisory lock lives exactly as long as its connection.
        try:
            self._connection.execute(text("SELECT 1"))
        except Exception as exc:
            raise LeaseLost(f"lease connection failed: {exc}") from exc

    def release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            finally:
                self._connection.close()
                self._connection = None


class FileLease:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def check(self) -> None:
        if self._fd is None:
            raise LeaseLost("lease was never acquired")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lease_for(engine: Engine, url: str, name: str) -> Lease:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return PostgresAdvisoryLease(engine, name)
    return FileLease(Path(f"{parsed.database}.{name}.lease"))


def acquire(lease: Lease, name: str, stopping: Callable[[], bool], poll_s: float = 1.0) -> bool:
    """Block until the lease is held (True) or ``stopping()`` becomes true (False)."""
    warned = False
    while not stopping():
        if lease.try_acquire():
            if warned:
                log.info("lease %s acquired", name)
            return True
        if not warned:
            log.warning("another process holds the %s lease; waiting for it to stop", name)
            warned = True
        time.sleep(poll_s)
    return False
