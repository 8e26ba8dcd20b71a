"""A key → JSON table as a mapping, inside a consumer runner's transaction: what a projection remembers
between events, where the domain's folds want a ``MutableMapping``."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from sqlalchemy import JSON, Column, MetaData, String, Table, delete, func, select
from sqlalchemy.orm import Session

from projections.upsert import upsert_statement


def json_rows_table(name: str, metadata: MetaData) -> Table:
    return Table(name, metadata, Column("key", String(200), primary_key=True), Column("value", JSON, nullable=False))


class JsonRows(MutableMapping[str, Any]):
    """A key → JSON table as a mapping, inside the runner's transaction."""

    def __init__(self, session: Session, table: Table) -> None:
        self._session = session
        self._table = table

    def __getitem__(self, key: str) -> Any:
        value = self._session.execute(select(self._table.c.value).where(self._table.c.key == key)).scalar()
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        connection = self._session.connection()
        connection.execute(upsert_statement(connection, self._table, ["key"], ["value"]),
                           [{"key": key, "value": value}])

    def __delitem__(self, key: str) -> None:
        deleted = self._session.execute(delete(self._table).where(self._table.c.key == key))
        if not deleted.rowcount:  # type: ignore[attr-defined]
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._session.execute(select(self._table.c.key)).scalars().all())

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        # One query, not one per key: a period's end reads every instance the notifier knows.
        return [(key, value) for key, value in self._session.execute(select(self._table.c.key, self._table.c.value))]

    def __len__(self) -> int:
        return int(self._session.execute(select(func.count()).select_from(self._table)).scalar_one())
