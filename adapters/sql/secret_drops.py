"""Sealed secrets on their way to a guest: ``guest_secret_drops``, in the task manager's database.

The API seals a create's passwords for the instance's guest and drops them here, keyed by the request;
the task manager puts them in the guest's ``prepare`` and discards them once the build is over. Only the
sealed form is ever written (``adapters.sealed``), and a drop a failed create left behind is purged
after ``max_age_s``, so no password outlives the request that brought it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, Text, delete, select

from adapters.sealed import DeploymentSealer
from adapters.sql.engine import read_only
from adapters.sql.schema import create_tables
from projections.upsert import upsert_statement

metadata = MetaData()

guest_secret_drops = Table(
    "guest_secret_drops",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("request_id", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),  # whose secret: a user's name
    Column("sealed", Text, nullable=False),
    Column("dropped_at", Float, nullable=False, index=True),
)

DAY_S = 86_400.0


class SqlSecretDrops:
    """The ``SecretDrop`` port in SQL."""

    def __init__(self, engine: Engine, deployment_secret: bytes, *, max_age_s: float = DAY_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._sealer = DeploymentSealer(deployment_secret)
        self._max_age_s = max_age_s
        self._clock = clock
        create_tables(engine, metadata)

    def put(self, instance_id: str, request_id: str, passwords: Mapping[str, str]) -> None:
        if not passwords:
            return
        now = self._clock()
        rows = [{"instance_id": instance_id, "request_id": request_id, "name": name, "dropped_at": now,
                 "sealed": self._sealer.seal(instance_id, password)} for name, password in passwords.items()]
        with self._engine.begin() as connection:
            connection.execute(upsert_statement(connection, guest_secret_drops, ["instance_id", "request_id", "name"],
                                                ["sealed", "dropped_at"]), rows)

    def sealed(self, instance_id: str, request_id: str) -> dict[str, str]:
        columns = guest_secret_drops.c
        with self._reader.connect() as connection:
            rows = connection.execute(select(columns.name, columns.sealed).where(
                columns.instance_id == instance_id, columns.request_id == request_id)).all()
        return {row.name: row.sealed for row in rows}

    def discard(self, instance_id: str, request_id: str) -> None:
        columns = guest_secret_drops.c
        with self._engine.begin() as connection:
            connection.execute(delete(guest_secret_drops).where(columns.instance_id == instance_id,
                                                                columns.request_id == request_id))
            # A create that never reached its task manager leaves its drop: gone after a day all the same.
            connection.execute(delete(guest_secret_drops).where(
                columns.dropped_at < self._clock() - self._max_age_s))
