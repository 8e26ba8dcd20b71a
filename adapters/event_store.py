"""Turns ``TROVE_ES_EVENT_STORE_URL`` into the eventsourcing library's persistence environment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from eventsourcing.application import Application
from sqlalchemy.engine import make_url

from adapters.sql.schema import schema_lock_key

A = TypeVar("A", bound=Application[Any])


# Aggregates kept in each process's memory. A cached one is brought up to date with the events stored
# since (one query) instead of replayed from its first event, and handed out as a copy, so a command
# that fails its version check leaves nothing behind in the cache.
AGGREGATE_CACHE = {"AGGREGATE_CACHE_MAXSIZE": "10000", "AGGREGATE_CACHE_FASTFORWARD": "y"}


def event_store_env(url: str) -> dict[str, str]:
    """eventsourcing settings for a ``sqlite:///path`` or ``postgresql://…`` event store URL."""
    return {**_persistence_env(url), **AGGREGATE_CACHE}


def _persistence_env(url: str) -> dict[str, str]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("the event store needs a SQLite file, not an in-memory database")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": parsed.database,
                "SQLITE_LOCK_TIMEOUT": "30"}
    if parsed.get_backend_name() == "postgresql":
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.database or "postgres",
            "POSTGRES_HOST": parsed.host or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": parsed.username or "postgres",
            "POSTGRES_PASSWORD": parsed.password or "",
            # Stores events through a plpgsql function: about twice the single-event save rate.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
            "POSTGRES_LOCK_TIMEOUT": "5",
            # Connections kept open per application; more are opened under load and closed when idle.
            # A stack runs a dozen processes with one or two applications each: a larger floor would
            # hold most of a default PostgreSQL's 100 connections while idle.
            "POSTGRES_POOL_SIZE": "2",
            "POSTGRES_MAX_OVERFLOW": "8",
        }
        schema = parsed.query.get("schema")
        if schema:
            env["POSTGRES_SCHEMA"] = str(schema)
        return env
    raise ValueError(f"unsupported event store URL scheme {parsed.drivername!r}")


def log_batches(recorder: Any, after: int = 0, batch: int = 1000, upto: int | None = None) -> Iterator[list[Any]]:
    """The store's notification log after position ``after`` (and up to ``upto``), ``batch`` at a time."""
    while True:
        notifications = recorder.select_notifications(start=after, limit=batch, stop=upto,
                                                      inclusive_of_start=False)
        if not notifications:
            return
        yield notifications
        if len(notifications) < batch:
            return
        after = notifications[-1].id


def open_application(application_class: type[A], url: str, **kwargs: Any) -> A:
    """An application on the event store at ``url``, safe to open from many processes at once.

    Constructing an application creates the store's tables and functions when they are missing;
    PostgreSQL answers "tuple concurrently updated" to one of two processes doing that together
    (a stack starting up), so construction runs under the deployment's schema lock.
    """
    env = event_store_env(url)
    with _schema_lock(env):
        return application_class(env=env, **kwargs)


@contextmanager
def _schema_lock(env: dict[str, str]) -> Iterator[None]:
    if env["PERSISTENCE_MODULE"] != "eventsourcing.postgres":
        yield  # SQLite serialises its writers itself
        return
    with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], dbname=env["POSTGRES_DBNAME"],
                         user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None,
                         autocommit=True, connect_timeout=10) as connection:
        # Session-scoped: held across the library's own transactions on its own connections.
        connection.execute("SELECT pg_advisory_lock(%s)", (schema_lock_key("event-store"),))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (schema_lock_key("event-store"),))
