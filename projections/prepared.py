"""Statements compiled once and run straight on a DBAPI connection: reads on the thread's own, writes on
the caller's (inside its transaction).

For the API's hottest query (a show): SQLAlchemy's per-execution work (connection and result
objects, events, parameter and type processing) cost several times the query itself on SQLite.
On PostgreSQL a read goes one layer lower still, to libpq through psycopg's ``pgconn`` (see
``_LibpqStatement``). Everything a caller gets is plain: a mapping of column name to the driver's
value, so JSON columns may arrive as text (SQLite) or already decoded (PostgreSQL) — see ``json_value``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from psycopg import OperationalError, errors, pq
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import Connection, Engine, Select, exc
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg


class PreparedRead:
    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        self._engine = engine
        self._names = [column.key for column in statement.selected_columns]
        self._statement: _DbapiStatement | _LibpqStatement = (
            _LibpqStatement(statement) if engine.dialect.driver == "psycopg" else _DbapiStatement(statement, engine))

    def first(self, **parameters: Any) -> dict[str, Any] | None:
        rows = self._run(parameters, many=False)
        return rows[0] if rows else None

    def all(self, **parameters: Any) -> list[dict[str, Any]]:
        return self._run(parameters, many=True)

    def _run(self, parameters: dict[str, Any], *, many: bool) -> list[dict[str, Any]]:
        for attempt in (1, 2):
            held = _THREAD_READERS.connection(self._engine)
            try:
                rows = self._statement.run(held, parameters, many=many)
            except _Disconnected as lost:
                # A kept connection that died with a server restart is dropped here and the read runs
                # once more on a fresh one.
                _THREAD_READERS.drop(self._engine)
                if attempt == 2:
                    raise lost.error from None
                continue
            names = self._names
            return [dict(zip(names, row, strict=True)) for row in rows]
        raise AssertionError("unreachable")


class _ThreadReaders(threading.local):
    """Each thread's own read connection per database, kept between reads.

    A pool checkout and check-in cost a show more than its query on SQLite, and a fifth of its time on
    PostgreSQL. The API's threads (gunicorn gthread) live as long as their worker, so each keeps one
    connection per database, taken out of the pool's accounting (``detach``) so that many threads
    cannot starve the pool's other users. A connection closes with its thread, or with the pool it
    came from when the engine is disposed; a forked child never touches its parent's.
    """

    def __init__(self) -> None:
        self.held: WeakKeyDictionary[Any, _Held] = WeakKeyDictionary()

    def connection(self, engine: Engine) -> Any:
        held = self.held.get(engine.pool)
        if held is None or held.pid != os.getpid():
            pooled = engine.raw_connection()  # connected as the engine's pool connects (its events ran)
            connection = pooled.dbapi_connection
            pooled.detach()
            held = self.held[engine.pool] = _Held(connection)
        return held

    def drop(self, engine: Engine) -> None:
        held = self.held.pop(engine.pool, None)
        if held is not None:
            held.close()


class _Held:
    """A DBAPI connection of one thread's, and what the statements keep about it (``info``)."""

    __slots__ = ("driver_connection", "info", "pid")

    def __init__(self, connection: Any) -> None:
        self.driver_connection = connection
        self.info: dict[str, Any] = {}
        self.pid = os.getpid()

    def close(self) -> None:
        if self.pid == os.getpid():  # in a forked child the socket is the parent's: leave it be
            with contextlib.suppress(Exception):
                self.driver_connection.close()

    def __del__(self) -> None:
        self.close()


_THREAD_READERS = _ThreadReaders()


class _Disconnected(Exception):
    def __init__(self, error: exc.DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


class _DbapiStatement:
    """A read through the driver's cursor (SQLite)."""

    def __init__(self, statement: Select[Any], engine: Engine) -> None:
        self._dialect = engine.dialect
        self._compiled = statement.compile(dialect=engine.dialect)
        self._sql = str(self._compiled)
        self._positions = self._compiled.positiontup  # None for drivers that take named parameters

    def run(self, held: _Held, parameters: Mapping[str, Any], *, many: bool) -> list[Any]:
        values = self._compiled.construct_params(parameters)
        arguments = [values[name] for name in self._positions] if self._positions is not None else values
        cursor = held.driver_connection.cursor()
        try:
            cursor.execute(self._sql, arguments)
            return cursor.fetchall() if many else cursor.fetchmany(1)
        except self._dialect.loaded_dbapi.Error as error:
            disconnected = self._dialect.is_disconnect(error, held.driver_connection, cursor)
            wrapped = exc.DBAPIError.instance(self._sql, arguments, error, self._dialect.loaded_dbapi.Error,
                                              dialect=self._dialect, connection_invalidated=disconnected)
            raise (_Disconnected(wrapped) if disconnected else wrapped) from error
        finally:
            cursor.close()


class _LibpqStatement:
    """A read as a server-side prepared statement, run through psycopg's libpq wrapper (PostgreSQL).

    psycopg's cursor cost as much Python per execution as the query's own round trip (query
    conversion, its prepare bookkeeping, result objects). Here a read is one ``PQexecPrepared``,
    which waits for the server without holding the GIL, and one pass of psycopg's C loaders over the
    rows, so every value arrives as psycopg's cursor would have decoded it. The statement is
    prepared once per connection; the pool's per-connection ``info`` says which connections have it
    and is dropped with the connection.
    """

    _serial = itertools.count()

    def __init__(self, statement: Select[Any]) -> None:
        self._compiled = statement.compile(dialect=PGDialect_psycopg(paramstyle="numeric_dollar"))
        self._sql = str(self._compiled)
        self._positions = self._compiled.positiontup or []
        self._formats = [PyFormat.TEXT] * len(self._positions)
        self._name = f"trove_es_read_{next(self._serial)}".encode()

    def run(self, held: _Held, parameters: Mapping[str, Any], *, many: bool) -> list[Any]:
        connection = held.driver_connection
        pgconn = connection.pgconn
        values = self._compiled.construct_params(parameters)
        arguments = [values[name] for name in self._positions]
        adapter = Transformer(connection)
        prepared = held.info.setdefault("trove_es_prepared", set())
        if self._name not in prepared:
            self._check(pgconn.prepare(self._name, self._sql.encode()), pq.ExecStatus.COMMAND_OK, connection,
                        arguments)
            prepared.add(self._name)
        result = pgconn.exec_prepared(self._name, adapter.dump_sequence(arguments, self._formats))
        self._check(result, pq.ExecStatus.TUPLES_OK, connection, arguments)
        adapter.set_pgresult(result)
        return adapter.load_rows(0, result.ntuples if many else min(result.ntuples, 1), tuple)

    def _check(self, result: Any, expected: Any, connection: Any, arguments: Any) -> None:
        """Raise what went wrong as SQLAlchemy would have, or ``_Disconnected`` when the connection is gone."""
        if result.status == expected:
            return
        disconnected = connection.pgconn.status == pq.ConnStatus.BAD
        error: Exception = (OperationalError(f"the connection to PostgreSQL was lost: "
                                             f"{connection.pgconn.get_error_message()}") if disconnected
                            else errors.error_from_result(result, encoding=connection.info.encoding))
        wrapped = exc.DBAPIError.instance(self._sql, arguments, error, errors.Error, dialect=None,
                                          connection_invalidated=disconnected)
        raise (_Disconnected(wrapped) if disconnected else wrapped) from error


def json_value(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


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
