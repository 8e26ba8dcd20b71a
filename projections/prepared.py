"""Statements compiled once and run straight on a DBAPI connection: reads on a pooled one, writes on
the caller's (inside its transaction).

For the API's hottest query (a show): SQLAlchemy's per-execution work (connection and result
objects, events, parameter and type processing) cost several times the query itself on SQLite.
Everything a caller gets is plain: a mapping of column name to the driver's value, so JSON columns
may arrive as text (SQLite) or already decoded (PostgreSQL) — see ``json_value``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Select, exc


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


class InTransaction:
    """A statement compiled once per dialect and run on the DBAPI cursor of the caller's connection, so it
    is part of the caller's transaction.

    For what every consumed event or batch runs (work-item writes, dedupe marks read and stored,
    offsets), where SQLAlchemy's per-execution work was three times the statement's own. Parameters
    are the statement's bind names; ``column_keys`` names the columns an INSERT without ``values`` sets.
    """

    def __init__(self, statement: Any, column_keys: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: dict[str, tuple[Any, str, Any]] = {}

    def execute(self, connection: Connection, parameters: Mapping[str, Any]) -> Any:
        """Run once; the DBAPI cursor, for ``rowcount`` and RETURNING rows (``fetchone``)."""
        compiled, sql, positions = self._for(connection)
        values = compiled.construct_params(parameters)
        arguments = [values[name] for name in positions] if positions is not None else values
        cursor = connection.connection.driver_connection.cursor()
        try:
            cursor.execute(sql, arguments)
        except connection.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise _wrapped(connection, sql, arguments, error) from error
        return cursor

    def execute_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled, sql, positions = self._for(connection)
        values = [compiled.construct_params(row) for row in rows]
        arguments = [[row[name] for name in positions] for row in values] if positions is not None else values
        cursor = connection.connection.driver_connection.cursor()
        try:
            cursor.executemany(sql, arguments)
        except connection.dialect.loaded_dbapi.Error as error:
            raise _wrapped(connection, sql, arguments, error) from error
        finally:
            cursor.close()

    def _for(self, connection: Connection) -> tuple[Any, str, Any]:
        dialect = connection.dialect
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self._statement.compile(dialect=dialect, column_keys=self._column_keys)
            found = self._compiled[dialect.name] = (compiled, str(compiled), compiled.positiontup)
        return found


def _wrapped(connection: Connection, sql: str, arguments: Any, error: Exception) -> Exception:
    """The driver's error as SQLAlchemy raises it (``IntegrityError``, ``OperationalError``, …), so callers
    handle a prepared write's failures like any other statement's."""
    dbapi = connection.dialect.loaded_dbapi
    return exc.DBAPIError.instance(sql, arguments, error, dbapi.Error, dialect=connection.dialect,
                                   connection_invalidated=connection.dialect.is_disconnect(
                                       error, connection.connection.dbapi_connection, None))
