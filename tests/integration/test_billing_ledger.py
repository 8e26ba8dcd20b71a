"""The billing ledger on a real database (SQLite and PostgreSQL): segments from usage notifications,
duplicates dropped by message id, windows added up from what is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from adapters.sql.engine import create_sql_engine, read_only
from adapters.sql.schema import create_tables
from domain.billing import UsageMessage
from projections.billing_ledger import BillingLedger, BillingQueries, metadata
from tests.unit.test_billing import BASE, T0, _wire

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_ledger_bills_each_flavor_for_its_stretch_once_however_often_a_message_comes(
        backend: str, tmp_path: Path, postgres_url: str) -> None:
    engine = create_sql_engine(postgres_url if backend == "postgresql" else f"sqlite:///{tmp_path}/billing.db")
    create_tables(engine, metadata)
    medium = {**BASE, "instance_type_id": "3", "instance_type": "m1.medium", "instance_size": 4096,
              "old_instance_size": 2048, "modify_at": "2026-12-02T10:30:00Z"}
    bigger = {**medium, "volume_size": 5, "old_volume_size": 2, "modify_at": "2026-12-02T10:45:00Z"}
    messages = [_wire("trove.instance.create", BASE, T0, "m-create"),
                _wire("dbaas.instance_resize_instance.start", {"instance_id": "i-1"}, T0, "m-start"),
                _wire("trove.instance.modify_flavor", medium, T0, "m-flavor"),
                _wire("trove.instance.modify_volume", bigger, T0, "m-volume"),
                _wire("trove.instance.exists", {**BASE, "audit_period_beginning": "2026-12-02T10:00:00Z",
                                                "audit_period_ending": "2026-12-02T11:00:00Z"}, T0, "m-exists"),
                _wire("trove.instance.delete", {**bigger, "deleted_at": "2026-12-02T11:00:00Z"}, T0, "m-delete")]
    ledger = BillingLedger()
    for value in messages + messages[2:4] + messages:  # a notifier that republished after a crash, twice
        with Session(engine) as session, session.begin():
            ledger.apply(UsageMessage.from_wire(value), session)

    queries = BillingQueries(read_only(engine), clock=lambda: T0 + timedelta(days=1))
    lines = queries.usage(T0 - timedelta(hours=1), T0 + timedelta(hours=2), "t1")
    assert [(line.flavor_id, line.instance_seconds, line.volume_gb_seconds) for line in lines] == [
        ("2", 1800.0, 3600.0), ("3", 1800.0, 900 * 2 + 900 * 5)]
    assert lines[0].datastore == "postgresql" and lines[1].instance_type == "m1.medium"
    assert queries.exists_seconds("i-1") == 3600.0
    assert sum(line.instance_seconds for line in lines) == queries.exists_seconds("i-1")
    window = queries.usage(T0 + timedelta(minutes=20), T0 + timedelta(minutes=40), None)
    assert [(line.flavor_id, line.instance_seconds) for line in window] == [("2", 600.0), ("3", 600.0)]
    assert queries.usage(T0, T0 + timedelta(hours=1), "someone-else") == []


def test_a_running_instance_is_billed_up_to_now_not_to_the_windows_end(tmp_path: Path) -> None:
    engine = create_sql_engine(f"sqlite:///{tmp_path}/billing.db")
    create_tables(engine, metadata)
    with Session(engine) as session, session.begin():
        BillingLedger().apply(UsageMessage.from_wire(_wire("trove.instance.create", BASE, T0)), session)
    queries = BillingQueries(read_only(engine), clock=lambda: T0 + timedelta(minutes=10))
    [line] = queries.usage(T0, datetime(2027, 1, 1, tzinfo=UTC), "t1")
    assert line.instance_seconds == 600.0 and line.volume_gb_seconds == 1200.0
