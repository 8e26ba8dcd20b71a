"""Creating read-model and tracking tables safely from several processes at once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Engine, MetaData, Table, text


def schema_lock_key(scope: str = "read-models") -> int:
    """The advisory lock key that serialises one kind of schema change across the deployment.

    Schema changes are rare, so serialising all of a kind is cheap; kinds get their own keys so a
    process holding one (the event store's, for the whole of an application's construction) never
    waits on itself for the other.
    """
    return int.from_bytes(hashlib.sha256(f"trove-es:schema:{scope}".encode()).digest()[:8], "big", signed=True)


def create_tables(engine: Engine, metadata: MetaData, tables: Sequence[Table] | None = None) -> None:
    """``metadata.create_all`` that two processes may run at the same moment.

    PostgreSQL's ``CREATE TABLE`` races on its catalog (a duplicate-key error on ``pg_type``) when two
    consumers start together, so the check-then-create runs under a transaction-scoped advisory lock.
    SQLite needs nothing more: every transaction here begins IMMEDIATE, which already serialises writers.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": schema_lock_key()})
        metadata.create_all(connection, tables=list(tables) if tables is not None else None)
