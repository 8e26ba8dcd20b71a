"""Creating read-model and tracking tables safely from several processes at once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, MetaData, Table, inspect, text


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
    chosen = list(tables) if tables is not None else list(metadata.sorted_tables)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": schema_lock_key()})
        metadata.create_all(connection, tables=chosen)
        _add_missing_columns(connection, chosen)
        _add_missing_indexes(connection, chosen)


def _add_missing_columns(connection: Connection, tables: Sequence[Table]) -> None:
    """Add the nullable columns a newer release gave a read model that already exists.

    Read models are rebuilt from the stream, never hand-migrated; a new nullable column is the one
    change an existing table can take in place, its rows then reading as "nothing recorded yet".
    """
    inspector = inspect(connection)
    for table in tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.primary_key:
                raise RuntimeError(f"read model {table.name} lacks its required column {column.name}: "
                                   f"rebuild it (drop the table and let its projection replay the stream)")
            kind = column.type.compile(dialect=connection.dialect)
            preparer = connection.dialect.identifier_preparer
            connection.execute(text(f"ALTER TABLE {preparer.format_table(table)} "
                                    f"ADD COLUMN {preparer.format_column(column)} {kind}"))


def _add_missing_indexes(connection: Connection, tables: Sequence[Table]) -> None:
    """Create the indexes a newer release gave a read model that already exists (``create_all`` only
    indexes the tables it creates)."""
    inspector = inspect(connection)
    for table in tables:
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                index.create(connection)
