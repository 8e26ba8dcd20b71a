"""SQLAlchemy engines for the read-model and event-store databases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

# A pooled PostgreSQL connection back from use within this long is trusted without a ping.
IDLE_PING_S = 1.0
# JSON columns come back through orjson: the instance view's are decoded on every show and list.
_JSON = {"json_deserializer": orjson.loads}


def create_sql_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``sqlite:///file`` or ``postgresql://…``, tuned for several processes.

    SQLite runs in WAL mode with a generous busy timeout, because the relay, the API and the
    consumers each hold their own connection to the same file.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_size=pool_size, max_overflow=pool_size, **_JSON)
        ping_when_idle(engine)
        return engine
    if parsed.get_backend_name() != "sqlite":
        raise ValueError(f"unsupported SQL URL scheme {parsed.drivername!r}")
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30}, **_JSON)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # pysqlite's own transaction handling would defer BEGIN past our SELECTs; take control so
        # a transaction starts where SQLAlchemy says it does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection) -> None:  # type: ignore[no-untyped-def]
        # IMMEDIATE takes the write lock up front, so two writers never deadlock on lock upgrade. A
        # reader (``read_only``) opens no transaction at all: in WAL mode each of its statements reads
        # a consistent snapshot without a lock, beside any writer.
        if not connection.get_execution_options().get(READ_ONLY, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def ping_when_idle(engine: Engine, idle_s: float = IDLE_PING_S) -> None:
    """Ping a pooled connection on checkout only when it sat unused for ``idle_s``.

    ``pool_pre_ping`` pings on every checkout: a round trip that was almost half of a show's time on
    PostgreSQL. A connection handed back a moment ago is alive but for a server restart in between;
    that rare case fails one statement, and SQLAlchemy then drops every pooled connection of that
    age (its disconnect handling). The API's hot read retries it itself (``PreparedRead``).
    """
    @event.listens_for(engine.pool, "checkin")
    def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("checked_in_at")
        if returned is None or time.monotonic() - returned < idle_s:
            return  # new (just connected), or recently in use
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()  # leave no transaction open behind the pool's back
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error


READ_ONLY = "trove_es_read_only"
_READERS: WeakKeyDictionary[Engine, Engine] = WeakKeyDictionary()


def read_only(engine: Engine) -> Engine:
    """An engine for queries only: its reads open no transaction, so on SQLite they do not queue behind
    writers and on PostgreSQL they cost no BEGIN and ROLLBACK round trips.

    On SQLite it is the same engine and pool. On PostgreSQL it is a sibling with its own pool of
    connections that are in autocommit for good: switching a shared connection into autocommit and
    back on every checkout cost a show a fifth of its time. One reader per engine (callers share its
    pool), disposed with it. Hand it only to code that reads: each statement stands alone.
    """
    if engine.dialect.name != "postgresql":
        return engine.execution_options(**{READ_ONLY: True})
    reader = _READERS.get(engine)
    if reader is None:
        pool = engine.pool
        size = pool.size() if hasattr(pool, "size") else 5
        # In autocommit there is never a transaction to roll back when a connection is handed back.
        reader = create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_size=size, max_overflow=size,
                               pool_reset_on_return=None, **_JSON)
        ping_when_idle(reader)
        reader = reader.execution_options(**{READ_ONLY: True})
        _READERS[engine] = reader
        event.listen(engine, "engine_disposed", lambda _engine: reader.dispose())
    return reader


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)
