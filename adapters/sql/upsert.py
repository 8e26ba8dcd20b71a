"""Dialect-aware INSERT … ON CONFLICT DO UPDATE, for PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Insert, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert_statement(connection: Connection, table: Table, keys: Sequence[str], updates: Sequence[str]) -> Insert:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        insert = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:  # pragma: no cover - settings only allow the two
        raise ValueError(f"no upsert for {dialect}")
    return insert.on_conflict_do_update(
        index_elements=list(keys), set_={name: insert.excluded[name] for name in updates})
