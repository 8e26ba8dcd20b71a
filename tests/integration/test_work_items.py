"""The task manager's work items in SQL, on a SQLite file and on PostgreSQL.

The consumer half writes in a session, as the consumer runner does; the driver half reads through a
read-only engine and saves through the writer, as ``trove-es task-manager`` wires them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from adapters.sql import work_items
from adapters.sql.engine import create_sql_engine, read_only
from adapters.sql.schema import create_tables
from services.ports import WorkItem
from tests.conftest import fresh_database

pytestmark = pytest.mark.integration

SPARED = ("settle", "refresh")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_sql_engine(f"sqlite:///{tmp_path / 'task_manager.db'}")
        create_tables(engine, work_items.metadata)
        yield engine
        engine.dispose()
        return
    with fresh_database(request.getfixturevalue("postgres_admin")) as url:
        engine = create_sql_engine(url)
        create_tables(engine, work_items.metadata)
        yield engine
        engine.dispose()


@pytest.fixture
def items(engine: Engine) -> work_items.SqlWorkItems:
    return work_items.SqlWorkItems(engine, reader=read_only(engine))


def _item(instance_id: str = "i-1", request_id: str = "req-1", kind: str = "create", *, step: str = "create_server",
          due_at: float | None = 100.0, created_at: float = 100.0, detail: dict[str, Any] | None = None) -> WorkItem:
    return WorkItem(instance_id=instance_id, request_id=request_id, kind=kind, operation=kind, step=step,
                    context={"request_id": request_id, "tenant_id": "t-1"}, detail=detail or {"n": 1},
                    deadline=500.0, due_at=due_at, wakes=0, attempts=0, last_error=None, created_at=created_at)


def _consume(engine: Engine, *writes: Any) -> list[Any]:
    """Run ``writes(session)`` in one committed transaction, as the consumer runner applies a batch."""
    with Session(engine) as session:
        session.begin()
        results = [write(session) for write in writes]
        session.commit()
    return results


def _add(engine: Engine, items: work_items.SqlWorkItems, *added: WorkItem) -> None:
    _consume(engine, *[lambda s, item=item: items.add(s, item) for item in added])


def _get(items: work_items.SqlWorkItems, item: WorkItem) -> WorkItem | None:
    return items.get(item.instance_id, item.request_id, item.kind)


def test_adding_an_item_that_exists_keeps_the_first(engine: Engine, items: work_items.SqlWorkItems) -> None:
    first = _item(detail={"databases": [{"name": "db1"}], "users": []})
    again = replace(first, step="prepare", detail={"other": True}, due_at=900.0, created_at=900.0)
    _add(engine, items, first, again)  # a redelivered event, in the same batch
    _add(engine, items, again)  # and in a later one
    other_kind = _item(kind="settle", step="settle")
    _add(engine, items, other_kind)

    assert _get(items, first) == first
    assert _get(items, other_kind) == other_kind
    assert _get(items, _item(request_id="req-unknown")) is None


def test_a_wake_makes_only_the_instances_items_waiting_at_that_step_due(engine: Engine,
                                                                        items: work_items.SqlWorkItems) -> None:
    waiting = _item(request_id="req-waiting", step="await_healthy", due_at=400.0)
    parked = _item(request_id="req-parked", step="await_healthy", due_at=None)
    elsewhere = _item(request_id="req-elsewhere", step="wait_server", due_at=400.0)
    other_instance = _item(instance_id="i-2", step="await_healthy", due_at=400.0)
    _add(engine, items, waiting, parked, elsewhere, other_instance)

    _consume(engine, lambda s: items.wake(s, "i-1", "await_healthy", 150.0))
    _consume(engine, lambda s: items.wake(s, "i-1", "await_healthy", 160.0))

    assert _get(items, waiting) == replace(waiting, due_at=160.0, wakes=2)
    assert _get(items, parked) == parked
    assert _get(items, elsewhere) == elsewhere
    assert _get(items, other_instance) == other_instance


def test_saving_returns_the_item_as_stored(engine: Engine, items: work_items.SqlWorkItems) -> None:
    item = _item()
    _add(engine, items, item)

    saved = items.save(item, step="wait_server", due_at=120.0, attempts=0, last_error=None, now=110.0)
    assert saved == replace(item, step="wait_server", due_at=120.0)
    assert _get(items, item) == saved

    failed = items.save(saved, step="wait_server", due_at=130.0, attempts=1, last_error="ComputeError: boom",
                        now=125.0)
    assert failed == replace(saved, due_at=130.0, attempts=1, last_error="ComputeError: boom")
    parked = items.save(failed, step="closed", due_at=None, attempts=0, last_error=None, now=131.0)
    assert parked == replace(failed, step="closed", due_at=None, attempts=0, last_error=None)
    assert _get(items, item) == parked


def test_saving_a_step_the_item_has_left_changes_nothing(engine: Engine, items: work_items.SqlWorkItems) -> None:
    item = _item()
    _add(engine, items, item)
    moved = items.save(item, step="wait_server", due_at=120.0, attempts=0, last_error=None, now=110.0)

    # ``item`` is still at create_server: another run already moved the row on.
    assert items.save(item, step="prepare", due_at=111.0, attempts=3, last_error="late", now=111.0) is None
    assert items.save(item, step="done", due_at=None, attempts=0, last_error=None, now=111.0, done=True) is None
    assert _get(items, item) == moved

    assert items.save(moved, step="settled", due_at=None, attempts=0, last_error=None, now=112.0, done=True) is None
    assert _get(items, item) is None
    assert items.save(moved, step="wait_server", due_at=130.0, attempts=0, last_error=None, now=113.0) is None


def test_a_wake_while_the_step_ran_makes_the_saved_item_due_at_once(engine: Engine,
                                                                    items: work_items.SqlWorkItems) -> None:
    item = _item(step="await_healthy", due_at=100.0)
    _add(engine, items, item)
    running = _get(items, item)
    assert running is not None
    _consume(engine, lambda s: items.wake(s, item.instance_id, "await_healthy", 105.0))

    saved = items.save(running, step="await_healthy", due_at=400.0, attempts=0, last_error=None, now=106.0)
    assert saved == replace(item, due_at=106.0, wakes=1)

    # No wake since ``saved`` was read: the step's own due time stands.
    later = items.save(saved, step="await_healthy", due_at=400.0, attempts=0, last_error=None, now=107.0)
    assert later == replace(saved, due_at=400.0)

    # A wake does not unpark: an item parked by its step waits for the closing event.
    _consume(engine, lambda s: items.wake(s, item.instance_id, "await_healthy", 108.0))
    parked = items.save(later, step="closed", due_at=None, attempts=0, last_error=None, now=109.0)
    assert parked is not None and parked.due_at is None and parked.wakes == 2


def test_removing_an_operation_returns_its_detail_and_spares_settlements_and_refreshes(
        engine: Engine, items: work_items.SqlWorkItems) -> None:
    operation = _item(kind="resize_volume", detail={"old_volume_size": 2, "new_volume_size": 5})
    settle = _item(kind="settle", step="settle", detail={"operation": "create"})
    refresh = _item(kind="refresh", step="refresh", detail={})
    other_request = _item(request_id="req-2", kind="restart")
    _add(engine, items, operation, settle, refresh, other_request)

    removed, again = _consume(engine, lambda s: items.remove_operation(s, "i-1", "req-1", SPARED),
                              lambda s: items.remove_operation(s, "i-1", "req-1", SPARED))

    assert removed == {"old_volume_size": 2, "new_volume_size": 5}
    assert again is None
    assert _get(items, operation) is None
    assert [_get(items, kept) for kept in (settle, refresh, other_request)] == [settle, refresh, other_request]


def test_a_removal_rolled_back_with_its_batch_leaves_the_item(engine: Engine, items: work_items.SqlWorkItems) -> None:
    item = _item()
    _add(engine, items, item)
    with Session(engine) as session:
        session.begin()
        assert items.remove_operation(session, "i-1", "req-1", SPARED) == item.detail
        session.rollback()
    assert _get(items, item) == item


def test_due_items_come_earliest_first_then_oldest_up_to_the_limit(engine: Engine,
                                                                   items: work_items.SqlWorkItems) -> None:
    late = _item(instance_id="i-late", due_at=130.0, created_at=10.0)
    early = _item(instance_id="i-early", due_at=110.0, created_at=30.0)
    tie_newer = _item(instance_id="i-tie-newer", due_at=120.0, created_at=25.0)
    tie_older = _item(instance_id="i-tie-older", due_at=120.0, created_at=20.0)
    future = _item(instance_id="i-future", due_at=200.0, created_at=1.0)
    parked = _item(instance_id="i-parked", due_at=None, created_at=1.0)
    _add(engine, items, late, future, tie_newer, parked, early, tie_older)

    assert items.due(10, 150.0) == [early, tie_older, tie_newer, late]
    assert items.due(2, 150.0) == [early, tie_older]
    assert items.due(10, 120.0) == [early, tie_older, tie_newer]
    assert items.due(10, 100.0) == []


def test_after_commit_runs_once_after_the_outermost_commit_only(engine: Engine,
                                                                items: work_items.SqlWorkItems) -> None:
    calls: list[str] = []

    def wake() -> None:
        calls.append("wake")

    with Session(engine) as session:
        session.begin()
        with session.begin_nested():  # the runner isolates a failing event in a savepoint
            items.add(session, _item())
            items.after_commit(session, wake)
        items.after_commit(session, wake)
        assert calls == []
        session.rollback()
        assert calls == []
        session.begin()
        items.add(session, _item())
        items.after_commit(session, wake)
        session.commit()
        assert calls == ["wake"]
        session.begin()
        session.commit()
        assert calls == ["wake"]
