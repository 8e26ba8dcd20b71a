"""``trove-es replay`` on PostgreSQL and a real broker, beside a live projection consumer: a rebuild equals the
live rows, twice over and from either source; a changed live row shows in --verify; --swap puts the rebuilt
rows in place without losing what came after; an interrupted rebuild resumes to the same rows."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from adapters.bootstrap import build_application, projection_engine
from adapters.kafka.broker import EmbeddedBroker
from adapters.replay import STORE, KafkaHistory, Replayer, Shadow, fast_decoder, store_batches, swap
from adapters.sql.schema import create_tables
from projections.instance_view import InstanceView, instance_view
from tests.integration.test_task_manager import ALL, _active
from tests.support.stack import REPO_ROOT, StackProcess, wait_for
from tests.support.trove_processes import WriteSide, write_side

pytestmark = pytest.mark.integration


@pytest.fixture
def side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url, TROVE_ES_QUOTA_INSTANCES="-1")


def _replay(side: WriteSide, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters.cli", "replay", *args], cwd=REPO_ROOT,
                          env={**side.env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)


def _rows(url: str, schema: str = "public") -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(f'SELECT * FROM "{schema}".instance_view ORDER BY id').fetchall()


def _view_has(side: WriteSide, instance_id: str, name: str) -> bool:
    engine = projection_engine(side.settings, "instance-view")
    create_tables(engine, InstanceView.metadata)  # before the live consumer makes them
    try:
        with engine.connect() as connection:
            return connection.execute(select(instance_view.c.name).where(
                instance_view.c.id == instance_id)).scalar() == name
    finally:
        engine.dispose()


def _history(side: WriteSide) -> list[str]:
    made = []
    for n in range(4):
        instance_id = side.create(name=f"db{n}", request_id=f"req-create-{n}")
        side.instances.rename(side.context(f"req-rename-{n}"), instance_id, f"renamed{n}")
        made.append(instance_id)
    side.instances.delete(side.context("req-delete"), made[0])
    return made


def test_a_rebuild_equals_the_live_view_and_a_swap_repairs_it_without_losing_later_events(side: WriteSide) -> None:
    side.start("relay")
    side.processes["view"] = StackProcess("view", ["consume", "--projection", "instance-view"], side.env,
                                          side.log_dir)
    made = _history(side)
    wait_for(lambda: _view_has(side, made[-1], "renamed3"), 60, "the live view to catch up")

    from_kafka = _replay(side, "instance-view", "--from", "kafka", "--verify")
    assert from_kafka.returncode == 0, from_kafka.stdout + from_kafka.stderr
    assert "no row differences" in from_kafka.stdout
    assert "replaying instance-view from " in from_kafka.stderr and "/s" in from_kafka.stderr, "it shows progress"
    shadow = Shadow.of("instance-view", side.settings.projection_url("instance-view"))
    first = _rows(side.settings.event_store_url, shadow.schema or "")
    from_store = _replay(side, "instance-view", "--from", "store", "--restart", "--verify")
    assert from_store.returncode == 0 and "no row differences" in from_store.stdout, from_store.stderr
    assert _rows(side.settings.event_store_url, shadow.schema or "") == first, "two rebuilds, the same rows"
    assert len(first) == 4

    with psycopg.connect(side.settings.event_store_url, autocommit=True) as connection:
        connection.execute("UPDATE instance_view SET name = 'tampered' WHERE id = %s", (made[1],))
    changed = _replay(side, "instance-view", "--verify")
    assert changed.returncode == 1
    assert f"instance_view ('{made[1]}',): differs in name" in changed.stdout, changed.stdout

    swapped = _replay(side, "instance-view", "--swap")
    assert swapped.returncode == 0 and "swapped" in swapped.stdout, swapped.stderr
    assert _view_has(side, made[1], "renamed1"), "the swap put the rebuilt row back"

    # An event after a rebuild ends and before its swap: the live view has it, the shadow does not.
    shadow = Shadow.of("instance-view", side.settings.projection_url("instance-view"))
    replayer = Replayer(InstanceView(), shadow.create())
    history = KafkaHistory(side.settings.kafka_bootstrap_servers, [side.settings.topics.events])
    for events, moved in history.batches(replayer.positions(), fast_decoder(InstanceView().catalog)):
        replayer.apply(events, moved, history.incarnations)
    history.close()
    replayer.engine.dispose()
    between = side.create(name="between", request_id="req-between")
    wait_for(lambda: _view_has(side, between, "between"), 60, "the live view to have it")
    with psycopg.connect(side.settings.event_store_url, autocommit=True) as connection:
        connection.execute("UPDATE instance_view SET name = 'tampered' WHERE id = %s", (made[2],))
    swap(InstanceView(), shadow, side.settings.group_id("instance-view"))
    shadow.drop()
    assert _view_has(side, made[2], "renamed2")
    wait_for(lambda: _view_has(side, between, "between"), 60,
             "the live consumer to bring back what came after the rebuild, though its partition saw nothing new")
    later = side.create(name="after-swap", request_id="req-after")
    wait_for(lambda: _view_has(side, later, "after-swap"), 60, "the live consumer to go on after the swap")
    again = _replay(side, "instance-view", "--verify", "--restart")
    assert again.returncode == 0 and "no row differences" in again.stdout, again.stdout


def test_an_interrupted_rebuild_resumes_where_it_stopped_and_ends_with_the_same_rows(side: WriteSide) -> None:
    _history(side)
    application = build_application(side.settings)

    def rebuild(name: str, stop_after: int | None = None) -> list[tuple[Any, ...]]:
        shadow = Shadow.of(name, side.settings.projection_url("instance-view"))
        replayer = Replayer(InstanceView(), shadow.create())
        after = replayer.positions().get((STORE, 0), 0)
        for n, (events, last) in enumerate(store_batches(application, after, 3)):
            if stop_after is not None and n == stop_after:
                break  # interrupted between two batches
            replayer.apply(events, {(STORE, 0): last})
        replayer.engine.dispose()
        return _rows(side.settings.event_store_url, shadow.schema or "")

    whole = rebuild("whole")
    partial = rebuild("resumed", stop_after=2)
    assert partial != whole, "interrupted, the shadow holds part of history"
    assert rebuild("resumed") == whole, "resumed, it ends as the uninterrupted one did"
    application.close()


def test_every_read_model_of_the_event_stream_rebuilds_equal_to_the_live_one(side: WriteSide) -> None:
    names = ("fault-history", "event-journal", "catalog-view", "datastore-objects", "instance-view")
    side.start(*ALL)
    for name in names:
        side.processes[name] = StackProcess(name, ["consume", "--projection", name], side.env, side.log_dir)
    ok = side.create(name="fine", request_id="req-create-ok")
    broken = side.create(name="fake-prepare-fails", request_id="req-create-broken")  # a fault to rebuild
    side.wait(lambda: _active(side, ok) and not side.get(broken).operation_open(), "both builds to end")
    side.instances.rename(side.context("req-rename"), ok, "renamed")

    for name in names:
        last: list[str] = []

        def equal(name: str = name, last: list[str] = last) -> bool:
            done = _replay(side, name, "--verify")
            assert done.returncode in (0, 1), done.stderr
            last[:] = [done.stdout]
            return done.returncode == 0
        try:
            wait_for(equal, 60, f"{name} rebuilt equal to the live one (once the live one has caught up)")
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}\nlast --verify said:\n{last[0] if last else ''}") from None


def test_the_billing_ledger_rebuilds_from_the_notification_topics_equal_to_the_live_one(side: WriteSide) -> None:
    side.start(*ALL)
    side.start_notifier()
    side.processes["billing"] = StackProcess("billing", ["billing", "run"], side.env, side.log_dir)
    for n in range(3):
        instance_id = side.create(name=f"billed{n}", request_id=f"req-create-{n}")
        side.wait(lambda instance_id=instance_id: _active(side, instance_id), "the instance to be ACTIVE")
    side.instances.delete(side.context("req-delete"), instance_id)
    last: list[str] = []

    def equal() -> bool:
        done = _replay(side, "billing", "--verify", "--restart")
        assert done.returncode in (0, 1), done.stderr
        last[:] = [done.stdout]
        return done.returncode == 0 and "no row differences" in done.stdout
    try:
        wait_for(equal, 60, "the ledger rebuilt equal to the live one")
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}\nlast --verify said:\n{last[0] if last else ''}") from None
    shadow = Shadow.of("billing", side.settings.billing_url)
    with psycopg.connect(side.settings.event_store_url) as connection:
        segments = connection.execute(f'SELECT count(*) FROM "{shadow.schema}".billing_segments').fetchone()
    assert segments == (3,), "one segment per instance, the deleted one closed"
    refused = _replay(side, "billing", "--from", "store")
    assert refused.returncode == 2 and "notifications replay" in refused.stderr, "what to do instead"


def test_on_the_embedded_sqlite_stack_a_rebuild_from_the_store_verifies_and_swaps(tmp_path: Path) -> None:
    from sqlalchemy.orm import Session

    from adapters.event_store import event_store_env
    from adapters.settings import load_settings
    from adapters.sql.engine import create_sql_engine
    from domain.context import OperationContext
    from services.instances import CreateInstance, InstanceService
    from tests.support.trove_processes import CATALOG

    env = {"TROVE_ES_DATA_DIR": str(tmp_path / "data"),
           "TROVE_ES_EVENT_STORE_URL": f"sqlite:///{tmp_path / 'data' / 'events.db'}",
           "TROVE_ES_READ_MODEL_URL": f"sqlite:///{tmp_path / 'data' / 'read.db'}"}
    settings = load_settings(env)
    instances = InstanceService(env=event_store_env(settings.event_store_url), quota_defaults={"instances": -1})
    instances.catalog.seed(CATALOG)
    context = OperationContext(request_id="req-1", tenant_id="t1", user_id="u1")
    made, _ = instances.create(context, CreateInstance(name="db", flavor_ref="2", volume_size=1, datastore="mysql",
                                                       datastore_version=None))
    instances.rename(OperationContext(request_id="req-2", tenant_id="t1"), str(made.id), "renamed")
    live = create_sql_engine(settings.read_model_url)
    view = InstanceView()
    create_tables(live, view.metadata)
    with Session(live) as session, session.begin():  # the live view, as its consumer would have made it
        view.apply_batch([e for e in instances.history(str(made.id))], session)
        session.execute(instance_view.update().values(name="tampered"))
    live.dispose()
    instances.close()

    def replay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "adapters.cli", "replay", "instance-view", "--from", "store",
                               *args], cwd=REPO_ROOT, env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True,
                              text=True, timeout=120)

    differs = replay("--verify")
    assert differs.returncode == 1 and "differs in name" in differs.stdout, differs.stdout + differs.stderr
    assert (tmp_path / "data" / "shadow-instance-view.db").exists(), "the shadow is a file beside the view's"
    swapped = replay("--swap")
    assert swapped.returncode == 0, swapped.stderr
    assert not (tmp_path / "data" / "shadow-instance-view.db").exists()
    clean = replay("--verify")
    assert clean.returncode == 0 and "no row differences" in clean.stdout, clean.stdout + clean.stderr
