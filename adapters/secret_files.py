"""The deployment's secrets on disk: the token signing key, the guests' key secret, the audit key."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def load_or_create_key(data_dir: Path, name: str) -> bytes:
    """The deployment's secret ``name`` (hex, in ``data_dir``), created (0600) if this is the first use.

    Written to a private temporary file and hard-linked into place, so two processes starting together
    never see a half-written key: one link wins and the other reads the winner's key.
    """
    path = data_dir / name
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process made the key first: use theirs
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"the secret {path} is too short; delete it to have a new one made")
    return key.encode()


GUEST_SECRET_FILE = "guest.key"


def guest_secret(data_dir: Path) -> bytes:
    """The deployment secret every guest's key derives from (``domain.guest_protocol.instance_key``); the
    task manager, the conductor and the fake guests of a deployment must share it (the data directory's)."""
    return load_or_create_key(data_dir, GUEST_SECRET_FILE)


AUDIT_KEY_FILE = "audit.key"


def audit_key(data_dir: Path) -> bytes:
    """The key that signs the event chain's checkpoints (``domain.audit_chain``). It is kept out of every
    database: whoever can rewrite the store cannot sign what the rewrite leads to without it."""
    return load_or_create_key(data_dir, AUDIT_KEY_FILE)
