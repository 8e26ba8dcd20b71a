"""Turns ``TROVE_ES_EVENT_STORE_URL`` into the eventsourcing library's persistence environment."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url


def event_store_env(url: str) -> dict[str, str]:
    """eventsourcing settings for a ``sqlite:///path`` or ``postgresql://…`` event store URL."""
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
            "POSTGRES_POOL_SIZE": "5",
        }
        schema = parsed.query.get("schema")
        if schema:
            env["POSTGRES_SCHEMA"] = str(schema)
        return env
    raise ValueError(f"unsupported event store URL scheme {parsed.drivername!r}")
