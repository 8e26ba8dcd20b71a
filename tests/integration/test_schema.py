"""Read-model tables are created by whichever consumer starts first, often several at once."""

from __future__ import annotations

import threading

from sqlalchemy import BigInteger, Column, MetaData, String, Table, inspect

from adapters.sql.engine import create_sql_engine
from adapters.sql.schema import create_tables


def _metadata() -> MetaData:
    metadata = MetaData()
    for index in range(5):
        Table(f"race_{index}", metadata, Column("id", String(64), primary_key=True), Column("n", BigInteger))
    return metadata


def test_many_processes_creating_the_same_tables_at_once_all_succeed(postgres_url: str) -> None:
    engines = [create_sql_engine(postgres_url) for _ in range(8)]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def create(engine) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        try:
            create_tables(engine, _metadata())
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert {f"race_{index}" for index in range(5)} <= set(inspect(engines[0]).get_table_names())
    for engine in engines:
        engine.dispose()
