"""The conductor on a real broker and PostgreSQL: guests' messages in, only meaningful changes out.

Messages are produced straight onto the conductor topic, as a guest would. Messages from one guest
share a partition, so once a later heartbeat's ``sent_at`` shows in ``guest_heartbeats`` every
earlier message from that guest has been processed; tests wait for that, never for a fixed time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaProducer
from sqlalchemy import select

from adapters.bootstrap import read_model_engine
from adapters.kafka.broker import EmbeddedBroker
from adapters.kafka.consumer import ConsumerRunner
from adapters.sql import guest_ledger
from adapters.sql.schema import create_tables
from domain.guest_protocol import VOLUME_FULL, GuestFault, Heartbeat, Progress, Result, instance_key, signed
from domain.statuses import ServiceStatus, TaskStatus
from projections.guest_heartbeats import guest_heartbeats
from services.conductor import Conductor
from tests.support.stack import read_topic, wait_for
from tests.support.trove_processes import WriteSide, write_side

pytestmark = pytest.mark.integration

SECRET = b"the deployment's guest secret, for these tests"


def key_of(instance_id: str) -> bytes:
    return instance_key(SECRET, instance_id)


@dataclass
class Running:
    side: WriteSide
    conductor: Conductor
    producer: KafkaProducer

    def send(self, *messages: Heartbeat | Result | GuestFault | Progress | bytes, key: str) -> None:
        for message in messages:
            value = message if isinstance(message, bytes) else signed(message.to_json(), key_of(message.instance_id))
            self.producer.send(self.side.settings.topics.conductor, key=key.encode(), value=value)
        self.producer.flush()

    def beat(self, instance_id: str, status: str, sent_at: float) -> None:
        self.send(Heartbeat(instance_id, status, sent_at), key=instance_id)

    def processed_up_to(self, instance_id: str, sent_at: float, status: str) -> None:
        """Send a marker heartbeat and wait until the conductor has seen it (so everything before it)."""
        self.beat(instance_id, status, sent_at)
        wait_for(lambda: self.heartbeat(instance_id) is not None and self.heartbeat(instance_id).sent_at == sent_at,
                 60, f"the conductor to reach the heartbeat sent at {sent_at}")

    def heartbeat(self, instance_id: str):  # type: ignore[no-untyped-def]
        with read_model_engine(self.side.settings).connect() as connection:
            return connection.execute(select(guest_heartbeats)
                                      .where(guest_heartbeats.c.instance_id == instance_id)).first()


def _running(side: WriteSide, conductor: Conductor) -> Iterator[Running]:
    settings = side.settings
    engine = read_model_engine(settings)
    create_tables(engine, guest_ledger.metadata)
    runner = ConsumerRunner(name=conductor.name, group_id=settings.group_id(conductor.name),
                            topics={settings.topics.conductor: 2}, decode=conductor.decode, apply=conductor.apply,
                            apply_batch=conductor.apply_batch, engine=engine,
                            bootstrap_servers=settings.kafka_bootstrap_servers,
                            dead_letter_topic=settings.topics.dead_letter)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                             max_in_flight_requests_per_connection=1)
    try:
        yield Running(side, conductor, producer)
    finally:
        producer.close(timeout=5)
        runner.stop()
        thread.join(30)
        engine.dispose()


@pytest.fixture
def side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url)


@pytest.fixture
def strict(side: WriteSide) -> Iterator[Running]:
    # reconcile_s=0: every heartbeat is checked against the aggregate, none trusted from the cache.
    yield from _running(side, Conductor(side.instances, guest_ledger.SqlGuestLedger(), reconcile_s=0.0,
                                        progress_every_s=10.0, server_ip="198.51.100.9", secret=SECRET))


@pytest.fixture
def cached(side: WriteSide) -> Iterator[Running]:
    yield from _running(side, Conductor(side.instances, guest_ledger.SqlGuestLedger(), reconcile_s=3600.0,
                                        secret=SECRET))


def _status_events(side: WriteSide, instance_id: str) -> list[str]:
    return [e.service_status for e in side.events(instance_id) if type(e).__name__ == "ServiceStatusChanged"]


def test_only_a_change_of_status_becomes_an_event(strict: Running) -> None:
    side, instance_id = strict.side, strict.side.create()
    strict.beat(instance_id, "building", 100.0)
    strict.processed_up_to(instance_id, 101.0, "building")
    assert _status_events(side, instance_id) == ["building"]
    changed = next(e for e in side.events(instance_id) if type(e).__name__ == "ServiceStatusChanged")
    assert (changed.context["server_type"], changed.context["server_ip"]) == ("conductor", "198.51.100.9")
    assert changed.context["request_id"] == "req-create", "a change during an operation is part of it"
    version = side.get(instance_id).version
    first_seen = strict.heartbeat(instance_id).last_seen_at

    for sent_at in (102.0, 103.0, 104.0):
        strict.beat(instance_id, "building", sent_at)
    strict.processed_up_to(instance_id, 105.0, "building")
    assert side.get(instance_id).version == version, "unchanged heartbeats write no event"
    row = strict.heartbeat(instance_id)
    assert row.service_status == "building" and row.last_seen_at >= first_seen, "but they refresh liveness"

    strict.beat(instance_id, "healthy", 90.0)  # delayed in flight: older than what was already seen
    strict.processed_up_to(instance_id, 106.0, "building")
    assert side.get(instance_id).service_status is ServiceStatus.BUILDING, "a stale heartbeat is dropped"
    assert strict.conductor.stats.stale == 1

    strict.beat(instance_id, "restart required", 107.0)
    strict.beat(instance_id, "healthy", 108.0)
    strict.processed_up_to(instance_id, 109.0, "healthy")
    assert side.get(instance_id).service_status is ServiceStatus.RESTART_REQUIRED, \
        "heartbeats change nothing while a restart is required"
    assert _status_events(side, instance_id) == ["building", "restart required"]


def test_a_heartbeat_from_an_unknown_instance_is_dropped_and_the_batch_goes_on(strict: Running) -> None:
    side, instance_id = strict.side, strict.side.create()
    stranger = str(uuid.uuid4())
    strict.beat(stranger, "healthy", 100.0)
    strict.processed_up_to(instance_id, 101.0, "building")
    assert strict.conductor.stats.unknown_instances == 1
    assert strict.heartbeat(stranger) is None, "no liveness is kept for an instance nobody created"
    assert _status_events(side, instance_id) == ["building"]


def test_a_cached_status_is_not_reloaded_but_a_new_one_is(cached: Running) -> None:
    side, instance_id = cached.side, cached.side.create()
    cached.beat(instance_id, "building", 1.0)
    cached.processed_up_to(instance_id, 2.0, "building")
    loads_before = cached.conductor.stats.reconciled
    for sent_at in range(3, 23):
        cached.beat(instance_id, "building", float(sent_at))
    cached.beat(instance_id, "healthy", 23.0)
    cached.processed_up_to(instance_id, 24.0, "healthy")
    assert _status_events(side, instance_id) == ["building", "healthy"]
    assert cached.conductor.stats.reconciled == loads_before + 1, "only the new status loaded the instance"


def test_results_close_only_the_operation_they_answer(strict: Running) -> None:
    side = strict.side
    instance_id = side.create(request_id="req-create")
    strict.send(Result(instance_id, "restart", "req-create", True, 10.0),  # not the open operation's command
                Result(instance_id, "prepare", "req-create", True, 11.0),  # builds finish on status, not here
                Result(instance_id, "prepare", "req-elsewhere", False, 12.0, "not ours"),
                key=instance_id)
    strict.processed_up_to(instance_id, 13.0, "new")
    assert side.closing(instance_id, "req-create") == []

    failure = Result(instance_id, "prepare", "req-create", False, 20.0, "mysqld failed to start",
                     ("Traceback (most recent call last):", "RuntimeError: mysqld failed to start"))
    strict.send(failure, failure, Result(instance_id, "prepare", "req-create", True, 15.0), key=instance_id)
    strict.processed_up_to(instance_id, 21.0, "new")
    [failed] = side.closing(instance_id, "req-create")
    assert (type(failed).__name__, failed.task, failed.message) == ("OperationFailed", "BUILDING_ERROR_SERVER",
                                                                     "mysqld failed to start")
    assert failed.traceback[-1] == "RuntimeError: mysqld failed to start"
    assert side.get(instance_id).task is TaskStatus.BUILDING_ERROR_SERVER

    # A healthy instance's restart is closed by the guest's result for that very request.
    other = side.create(name="db2", request_id="req-create-2")
    ctx = side.context("req-create-2")
    side.instances.record(other, lambda i: i.record_server_provisioned(ctx.recorded(), "srv", None, "ACTIVE", []))
    strict.beat(other, "healthy", 30.0)
    strict.processed_up_to(other, 31.0, "healthy")
    side.instances.record(other, lambda i: i.succeed(ctx.recorded()))
    side.instances.restart(side.context("req-restart"), other)
    strict.send(Result(other, "restart", "req-restart", True, 32.0), key=other)
    strict.processed_up_to(other, 33.0, "healthy")
    [succeeded] = side.closing(other, "req-restart")
    assert type(succeeded).__name__ == "OperationSucceeded"
    assert side.get(other).task is TaskStatus.NONE


def test_malformed_messages_are_dead_lettered_with_the_reason(strict: Running) -> None:
    side = strict.side
    instance_id = side.create()
    strict.send(b"{not json", signed(b'{"version": 1, "kind": "heartbeat", "instance_id": "x", '
                                     b'"service_status": "fine", "sent_at": 1}', key_of("x")), key=instance_id)
    strict.processed_up_to(instance_id, 5.0, "new")
    wait_for(lambda: len(read_topic(side.settings.kafka_bootstrap_servers, side.settings.topics.dead_letter,
                                    idle_s=0.5)) >= 2, 60, "two dead letters")
    reasons = {dict(r.headers)["reason"].decode()
               for r in read_topic(side.settings.kafka_bootstrap_servers, side.settings.topics.dead_letter)}
    assert any("not JSON" in reason for reason in reasons)
    assert any("unknown service status 'fine'" in reason for reason in reasons)



def test_an_unsigned_or_forged_message_is_refused_recorded_and_changes_nothing(strict: Running) -> None:
    side = strict.side
    instance_id = side.create()
    before = side.event_types(instance_id)
    healthy = Heartbeat(instance_id, "healthy", 2.0).to_json()
    other_key = signed(healthy, key_of("another-instance"))  # a guest speaking for an instance not its own
    tampered = signed(Heartbeat(instance_id, "shutdown", 3.0).to_json(), key_of(instance_id)).replace(
        b"shutdown", b"healthy")
    strict.send(healthy, other_key, tampered, key=instance_id)
    strict.processed_up_to(instance_id, 5.0, "new")
    assert side.event_types(instance_id) == before, "no status change came of them"
    assert strict.conductor.stats.unauthenticated == 3
    reasons = [dict(r.headers)["reason"].decode()
               for r in read_topic(side.settings.kafka_bootstrap_servers, side.settings.topics.dead_letter)]
    assert sum("not signed" in reason for reason in reasons) == 1, reasons
    assert sum("signature does not match" in reason for reason in reasons) == 2, reasons


def test_backup_progress_becomes_events_at_a_bounded_rate_and_only_for_the_running_backup(
        strict: Running) -> None:
    side = strict.side
    instance_id = side.create(request_id="req-create")
    ctx = side.context("req-create")
    side.instances.record(instance_id, lambda i: i.record_server_provisioned(ctx.recorded(), "srv", None, "ACTIVE",
                                                                             []))
    strict.beat(instance_id, "healthy", 30.0)
    strict.processed_up_to(instance_id, 31.0, "healthy")
    side.instances.record(instance_id, lambda i: i.succeed(ctx.recorded()))
    strict.send(Progress(instance_id, "backup", "req-backup", 10, 32.0), key=instance_id)  # nothing running yet
    strict.processed_up_to(instance_id, 33.0, "healthy")
    backup, _ = side.instances.create_backup(side.context("req-backup"), instance_id, "nightly")

    strict.send(Progress(instance_id, "backup", "req-backup", 100, 40.0),
                Progress(instance_id, "backup", "req-backup", 200, 45.0),  # within progress_every_s of the last
                Progress(instance_id, "backup", "req-other", 250, 51.0),  # not the running backup's request
                Progress(instance_id, "backup", "req-backup", 300, 52.0),
                Progress(instance_id, "backup", "req-backup", 300, 63.0),  # no news
                Progress(instance_id, "backup", "req-backup", 400, 39.0),  # delayed: older than one recorded
                key=instance_id)
    strict.processed_up_to(instance_id, 64.0, "healthy")
    progressed = [e for e in side.events(instance_id) if type(e).__name__ == "BackupProgressed"]
    assert [(e.backup_id, e.stored_bytes) for e in progressed] == [(str(backup.id), 100), (str(backup.id), 300)]
    assert {e.context["request_id"] for e in progressed} == {"req-backup"}, "progress is part of the backup's operation"
    assert side.get(instance_id).backup_running, "progress closes nothing"


def test_a_guest_fault_is_recorded_once_and_cleared_with_its_own_request_and_stale_ones_are_dropped(
        strict: Running) -> None:
    side, instance_id = strict.side, strict.side.create()
    full = "The volume is full: the data takes 1.00 GB of its 1 GB. The datastore refuses writes until it is resized."
    strict.send(GuestFault(instance_id, VOLUME_FULL, True, full, 200.0),
                GuestFault(instance_id, VOLUME_FULL, True, full, 201.0), key=instance_id)
    strict.processed_up_to(instance_id, 202.0, "building")
    reported = [e for e in side.events(instance_id) if type(e).__name__ == "GuestFaultReported"]
    assert [(e.condition, e.message) for e in reported] == [(VOLUME_FULL, full)], "recorded once"
    assert reported[0].context["request_id"] != "req-create", "a condition is no operation's"
    assert side.get(instance_id).guest_faults == {VOLUME_FULL: full}

    strict.send(GuestFault(instance_id, VOLUME_FULL, False, "", 150.0), key=instance_id)  # delayed: older
    strict.processed_up_to(instance_id, 203.0, "building")
    assert side.get(instance_id).guest_faults, "a stale clearing changes nothing"
    strict.send(GuestFault(instance_id, VOLUME_FULL, False, "", 204.0), key=instance_id)
    strict.processed_up_to(instance_id, 205.0, "building")
    assert side.get(instance_id).guest_faults == {}
    assert "GuestFaultCleared" in side.event_types(instance_id)
