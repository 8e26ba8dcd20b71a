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
        values = self._compiled.construct_params(parameters)
        arguments: Any = [values[name] for name in self._positions] if self._positions is not None else values
        for attempt in (1, 2):
            # A Connection, not a bare pool checkout, so the engine's execution options (a read-only
            # engine's autocommit) apply to the driver connection used underneath.
            with self._engine.connect() as connection:
                dbapi_connection = connection.connection.dbapi_connection
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute(self._sql, arguments)
                    row = cursor.fetchone()
                except self._engine.dialect.loaded_dbapi.Error as error:
                    # The pool trusts recently used connections without a ping; one that died with a
                    # server restart is dropped here and the read runs once more on a fresh one.
                    if attempt == 2 or not self._engine.dialect.is_disconnect(error, dbapi_connection, cursor):
                        raise
                    connection.invalidate(error)
                    continue
                finally:
                    cursor.close()
            return dict(zip(self._names, row, strict=True)) if row is not None else None
        raise AssertionError("unreachable")


def json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value
