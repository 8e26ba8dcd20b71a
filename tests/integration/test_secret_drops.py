"""The secret drop on PostgreSQL: only sealed passwords are stored, they open for their guest only, and
nothing outlives its build (or a day, for a create that never reached its task manager)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from adapters.sealed import SealBroken, unseal
from adapters.sql.engine import create_sql_engine
from adapters.sql.secret_drops import DAY_S, SqlSecretDrops, guest_secret_drops
from domain.guest_protocol import instance_key

pytestmark = pytest.mark.integration

SECRET = b"deployment guest secret"


def test_a_drop_holds_only_sealed_passwords_until_its_build_is_over(postgres_url: str) -> None:
    engine = create_sql_engine(postgres_url)
    now = [1_000_000.0]
    drops = SqlSecretDrops(engine, SECRET, clock=lambda: now[0])
    drops.put("i-1", "req-1", {"app": "pa55-word", "report": "other-pa55"})
    drops.put("i-old", "req-0", {"app": "forgotten"})
    drops.put("i-2", "req-2", {})  # a create without users drops nothing

    with engine.connect() as connection:
        stored = connection.execute(select(guest_secret_drops)).mappings().all()
    assert {(row["instance_id"], row["name"]) for row in stored} == {("i-1", "app"), ("i-1", "report"),
                                                                    ("i-old", "app")}
    assert not any("pa55" in row["sealed"] or "forgotten" in row["sealed"] for row in stored)

    sealed = drops.sealed("i-1", "req-1")
    assert unseal(instance_key(SECRET, "i-1"), sealed["app"]) == "pa55-word"
    with pytest.raises(SealBroken):
        unseal(instance_key(SECRET, "i-2"), sealed["app"])
    assert drops.sealed("i-1", "another request") == {}

    now[0] += DAY_S + 1
    drops.put("i-3", "req-3", {"app": "fresh"})
    drops.discard("i-1", "req-1")
    assert drops.sealed("i-1", "req-1") == {}
    assert drops.sealed("i-old", "req-0") == {}, "a day-old drop is purged"
    assert set(drops.sealed("i-3", "req-3")) == {"app"}, "a fresh one stays"
