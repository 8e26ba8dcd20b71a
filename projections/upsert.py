"""Dialect-aware INSERT … ON CONFLICT DO UPDATE, for PostgreSQL and SQLite alike.

It lives with the read models because they write with it too, and projections may not import
``adapters``; the adapters' own bookkeeping tables (offsets, relay positions, write marks) use it
from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy import Connection, Insert, Table, case
from sqlalchemy.dialects import postgresql, sqlite


def upsert_statement(connection: Connection, table: Table, keys: Sequence[str], updates: Sequence[str],
                     greatest: Sequence[str] = ()) -> Insert:
    """Insert, or update ``updates`` of the row with the same ``keys``; ``greatest`` columns keep the larger
    of the stored and the new value (a concurrent, older write must not move them back)."""
    return upsert_for_dialect(connection.dialect.name, table, tuple(keys), tuple(updates), tuple(greatest))


@lru_cache(maxsize=256)
def upsert_for_dialect(dialect: str, table: Table, keys: tuple[str, ...], updates: tuple[str, ...],
                       greatest: tuple[str, ...] = ()) -> Insert:
    """``upsert_statement`` for a dialect named ahead of any connection (statements built at import)."""
    # Built once per shape: statements are immutable, and one reused keeps its memoized cache key, where
    # building it again for every batch was a consumer's largest cost after the SQL itself.
    if dialect == "postgresql":
        insert = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:  # pragma: no cover - settings only allow the two
        raise ValueError(f"no upsert for {dialect}")
    set_ = {name: insert.excluded[name] for name in updates}
    for name in greatest:
        set_[name] = case((insert.excluded[name] > table.c[name], insert.excluded[name]), else_=table.c[name])
    if not set_:  # a row that is there already is all there is to it
        return insert.on_conflict_do_nothing(index_elements=list(keys))
    return insert.on_conflict_do_update(index_elements=list(keys), set_=set_)
