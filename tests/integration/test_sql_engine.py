"""SQLite engines as the stack uses them: writers serialise up front, readers never queue behind them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from adapters.sql.engine import create_sql_engine, read_only


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
