"""Creating read-model and tracking tables safely from several processes at once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Engine, MetaData, Table, text


def _schema_lock_key() -> int:
    # One key for the whole deployment: schema changes are rare, so serialising all of them is cheap.
    return int.from_bytes(hashlib.sha256(b"trove-es:schema").digest()[:8], "big", signed=True)


def create_tables(engine: Engine, metadata: MetaData, tables: Sequence[Table] | None = None) -> None:
    """``metadata.create_all`` that two processes may run at the same moment.

    PostgreSQL's ``CREATE TABLE`` races on its catalog (a duplicate-key error on ``pg_type``) when two
    consumers start together, so the check-then-create runs under a transaction-scoped advisory lock.
    SQLite needs nothing more: every transaction here begins IMMEDIATE, which already serialises writers.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _schema_lock_key()})
        metadata.create_all(connection, tables=list(tables) if tables is not None else None)
