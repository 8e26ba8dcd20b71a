"""Shared fixtures: a real broker, a real PostgreSQL database, and the stack's own processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from adapters.kafka.broker import EmbeddedBroker

POSTGRES_ADMIN_DSN = os.environ.get("TROVE_ES_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


def _postgres_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("TROVE_ES_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    try:
        with psycopg.connect(POSTGRES_ADMIN_DSN, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        if _postgres_required():
            pytest.fail(f"PostgreSQL is required (CI) but unreachable at {POSTGRES_ADMIN_DSN!r}: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    yield POSTGRES_ADMIN_DSN


@contextmanager
def fresh_database(postgres_admin: str) -> Iterator[str]:
    """A new, empty PostgreSQL database's URL, dropped afterwards."""
    name = f"trove_es_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(postgres_admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    with fresh_database(postgres_admin) as url:
        yield url


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_path = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log_path) as running:
        yield running
