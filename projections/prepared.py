"""A read compiled once and run straight on a pooled DBAPI connection.

For the API's hottest query (a show): SQLAlchemy's per-execution work (connection and result
objects, events, parameter and type processing) cost several times the query itself on SQLite.
Everything a caller gets is plain: a mapping of column name to the driver's value, so JSON columns
may arrive as text (SQLite) or already decoded (PostgreSQL) — see ``json_value``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, Select


class PreparedRead:
    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        self._engine = engine
        self._compiled = statement.compile(dialect=engine.dialect)
        self._sql = str(self._compiled)
        self._positions = self._compiled.positiontup  # None for drivers that take named parameters
        self._names = [column.key for column in statement.selected_columns]

    def first(self, **parameters: Any) -> dict[str, Any] | None:
        rows = self._run(parameters, many=False)
        return rows[0] if rows else None

    def all(self, **parameters: Any) -> list[dict[str, Any]]:
        return self._run(parameters, many=True)

    def _run(self, parameters: dict[str, Any], *, many: bool) -> list[dict[str, Any]]:
        values = self._compiled.construct_params(parameters)
        arguments: Any = [values[name] for name in self._positions] if self._positions is not None else values
        for attempt in (1, 2):
            # A bare pool checkout: the engine must be ``read_only``'s, whose connections read outside
            # any transaction (SQLite's in driver autocommit, PostgreSQL's in autocommit for good).
            pooled = self._engine.raw_connection()
            try:
                cursor = pooled.driver_connection.cursor()
                try:
                    cursor.execute(self._sql, arguments)
                    rows = cursor.fetchall() if many else cursor.fetchmany(1)
                except self._engine.dialect.loaded_dbapi.Error as error:
                    # The pool trusts recently used connections without a ping; one that died with a
                    # server restart is dropped here and the read runs once more on a fresh one.
                    if attempt == 2 or not self._engine.dialect.is_disconnect(error, pooled.driver_connection,
                                                                              cursor):
                        raise
                    pooled.invalidate(error)
                    continue
                finally:
                    cursor.close()
            finally:
                pooled.close()
            names = self._names
            return [dict(zip(names, row, strict=True)) for row in rows]
        raise AssertionError("unreachable")


def json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value
