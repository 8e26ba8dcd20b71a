"""SQLite engines as the stack uses them: writers serialise up front, readers never queue behind them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, func, select, text

from adapters.sql.engine import IDLE_PING_S, create_sql_engine, read_only
from projections.prepared import PreparedRead

pytestmark = pytest.mark.integration


def test_a_read_only_query_runs_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    engine = create_sql_engine(f"sqlite:///{tmp_path}/read_models.db")
    with engine.begin() as setup:
        setup.execute(text("CREATE TABLE t (v INTEGER)"))
        setup.execute(text("INSERT INTO t VALUES (1)"))
    reader = read_only(engine)
    with engine.begin() as writer:  # BEGIN IMMEDIATE: the write lock is held until this block ends
        writer.execute(text("INSERT INTO t VALUES (2)"))
        with reader.connect() as connection:
            # A plain read would wait for the lock (30 s busy timeout, then "database is locked").
            assert connection.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    with reader.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar_one() == 2
    engine.dispose()


def _backend_pid(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(postgres_url: str, pid: int) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


def test_a_pooled_connection_killed_while_idle_is_replaced_on_checkout(postgres_url: str) -> None:
    engine = create_sql_engine(postgres_url, pool_size=1)
    dead = _backend_pid(engine)
    _terminate(postgres_url, dead)
    time.sleep(IDLE_PING_S + 0.2)  # idle long enough to be pinged on the next checkout
    with engine.connect() as connection:
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != dead
    engine.dispose()


def test_the_prepared_show_read_survives_a_backend_killed_between_requests(postgres_url: str) -> None:
    engine = create_sql_engine(postgres_url, pool_size=1)
    with engine.begin() as setup:
        setup.execute(text("CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER)"))
        setup.execute(text("INSERT INTO t VALUES ('a', 7)"))
    table = Table("t", MetaData(), Column("id", String, primary_key=True), Column("v", Integer))
    reader = read_only(engine)
    read = PreparedRead(reader, select(table.c.v).where(table.c.id == bindparam("key")))
    backend = PreparedRead(reader, select(func.pg_backend_pid().label("pid")))
    assert read.first(key="a") == {"v": 7}
    kept = backend.first()
    assert kept is not None and backend.first() == kept, "the thread keeps its read connection between reads"
    _terminate(postgres_url, kept["pid"])
    assert read.first(key="a") == {"v": 7}, "the read is retried once on a fresh connection"
    assert backend.first() != kept
    engine.dispose()


def test_each_thread_reads_on_a_connection_of_its_own_outside_the_pools_count(postgres_url: str) -> None:
    engine = create_sql_engine(postgres_url, pool_size=1)
    reader = read_only(engine)
    backend = PreparedRead(reader, select(func.pg_backend_pid().label("pid")))
    pids: list[int] = []

    def read() -> None:
        row = backend.first()
        assert row is not None
        pids.append(row["pid"])

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(pids)) == 4, "four threads, four connections, though the pool holds one"
    assert reader.pool.checkedout() == 0
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        deadline = time.monotonic() + 10  # a closed connection's backend leaves pg_stat_activity as it exits
        while (alive := admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                                      [pids]).fetchone()) != (0,) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert alive == (0,), "a thread's connection closes when the thread ends"
    engine.dispose()


def test_postgres_readers_share_an_autocommit_pool_disposed_with_their_engine(postgres_url: str) -> None:
    engine = create_sql_engine(postgres_url, pool_size=1)
    reader = read_only(engine)
    assert read_only(engine) is reader, "every reader of one engine shares one pool"
    assert reader.pool is not engine.pool, "writers keep transactions; readers never open one"
    with engine.begin() as setup:
        setup.execute(text("CREATE TABLE r (v INTEGER)"))
    read = PreparedRead(reader, select(Table("r", MetaData(), Column("v", Integer)).c.v))
    assert read.all() == []
    pooled = reader.raw_connection()
    try:
        assert pooled.driver_connection.autocommit
        assert pooled.driver_connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        pooled.close()
    assert reader.pool.checkedin() == 1
    engine.dispose()
    assert reader.pool.checkedin() == 0, "disposing the engine closes its readers' connections too"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_prepared_write_joins_the_transaction_and_fails_as_sqlalchemy_does(
        backend: str, tmp_path: Path, postgres_url: str) -> None:
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from projections.prepared import InTransaction

    engine = create_sql_engine(postgres_url if backend == "postgresql" else f"sqlite:///{tmp_path}/w.db")
    table = Table("w", MetaData(), Column("id", String(8), primary_key=True), Column("v", Integer))
    table.metadata.create_all(engine)
    write = InTransaction(insert(table), column_keys=["id", "v"])
    with engine.begin() as connection:
        write.execute(connection, {"id": "a", "v": 1}).close()
        write.execute_many(connection, [{"id": "b", "v": 2}, {"id": "c", "v": 3}])
    with pytest.raises(IntegrityError), engine.begin() as connection:
        write.execute(connection, {"id": "d", "v": 4}).close()
        write.execute(connection, {"id": "a", "v": 5})  # a duplicate: the whole transaction goes
    with engine.connect() as connection:
        rows = connection.execute(select(table.c.id, table.c.v).order_by(table.c.id)).all()
    assert [tuple(row) for row in rows] == [("a", 1), ("b", 2), ("c", 3)]
    engine.dispose()
