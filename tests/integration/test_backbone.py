"""The event backbone against the real PostgreSQL service and a real Kafka-protocol broker.

Store → relay → broker → consumer runner → SQL read model, with the relay and consumers running as
the stack's own ``trove-es`` processes, killed with SIGKILL where the test says so.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.exc import ProgrammingError

from adapters.bootstrap import event_store_engine, read_model_engine
from adapters.event_store import event_store_env
from adapters.kafka.broker import EmbeddedBroker
from adapters.settings import Settings
from adapters.sql.tracking import relay_positions
from services.application import TroveApplication
from tests.support.counter import UNLUCKY, Counter, applications, counters
from tests.support.stack import counter_consumer, read_topic, relay, stack_settings, wait_for

pytestmark = pytest.mark.integration


class CounterApp(TroveApplication):
    def open_counters(self, count: int) -> list[Counter]:
        opened = [Counter(f"counter-{i}") for i in range(count)]
        self.save(*opened)
        return opened

    def increment_randomly(self, counters_: list[Counter], events: int, seed: int, per_save: int = 25) -> None:
        rng = random.Random(seed)
        pending = 0
        touched: dict = {}
        for _ in range(events):
            counter = rng.choice(counters_)
            counter.increment(rng.choice([1, 2, 3, 5, 8]))
            touched[counter.id] = counter
            pending += 1
            if pending == per_save:
                self.save(*touched.values())
                pending, touched = 0, {}
        if touched:
            self.save(*touched.values())


def _expected(counters_: list[Counter]) -> dict[str, tuple[int, int]]:
    return {str(c.id): (c.value, c.version) for c in counters_}


def _read_model(settings: Settings) -> dict[str, tuple[int, int]]:
    with read_model_engine(settings).connect() as connection:
        rows = connection.execute(select(counters.c.aggregate_id, counters.c.value, counters.c.version)).all()
    return {r.aggregate_id: (r.value, r.version) for r in rows}


def _applications(settings: Settings) -> list[tuple[str, int, int]]:
    with read_model_engine(settings).connect() as connection:
        rows = connection.execute(select(applications.c.aggregate_id, applications.c.version, applications.c.pid)
                                  .order_by(applications.c.seq)).all()
    return [(r.aggregate_id, r.version, r.pid) for r in rows]


def _applied_count(settings: Settings) -> int:
    try:
        with read_model_engine(settings).connect() as connection:
            return connection.execute(select(func.count()).select_from(applications)).scalar_one()
    except ProgrammingError:  # the consumer has not created its tables yet
        return 0


def assert_applied_exactly_once_in_order(settings: Settings, counters_: list[Counter]) -> list[tuple[str, int, int]]:
    assert _read_model(settings) == _expected(counters_)
    applied = _applications(settings)
    total_events = sum(c.version for c in counters_)
    assert len(applied) == total_events, "every event applied once: no duplicate, none missing"
    per_aggregate: dict[str, list[int]] = {}
    for aggregate_id, version, _pid in applied:
        per_aggregate.setdefault(aggregate_id, []).append(version)
    for counter in counters_:
        assert per_aggregate[str(counter.id)] == list(range(1, counter.version + 1)), "per-aggregate order kept"
    return applied


@pytest.fixture
def stack(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str):
    settings, env = stack_settings(tmp_path, broker.bootstrap_servers, postgres_url, postgres_url)
    app = CounterApp(env=event_store_env(settings.event_store_url))
    processes = []
    yield settings, env, app, processes, tmp_path / "logs"
    for process in processes:
        if process.alive():
            process.kill9()
    read_model_engine(settings).dispose()


def test_events_are_relayed_and_applied_exactly_once_in_aggregate_order(stack) -> None:
    settings, env, app, processes, logs = stack
    counters_ = app.open_counters(12)
    app.increment_randomly(counters_, 600, seed=1)
    processes += [relay(env, logs), counter_consumer(env, logs)]
    total = sum(c.version for c in counters_)
    wait_for(lambda: _applied_count(settings) >= total, 90, f"{total} events applied", tuple(processes))

    # Events saved while both run arrive too.
    app.increment_randomly(counters_, 150, seed=2, per_save=1)
    total = sum(c.version for c in counters_)
    wait_for(lambda: _applied_count(settings) >= total, 60, f"{total} events applied", tuple(processes))
    assert_applied_exactly_once_in_order(settings, counters_)

    published = read_topic(settings.kafka_bootstrap_servers, settings.topics.events)
    envelopes = [json.loads(r.value) for r in published]
    assert {e["type"] for e in envelopes} == {"CounterOpened", "CounterIncremented"}
    assert all(r.key.decode() == e["aggregate_id"] for r, e in zip(published, envelopes, strict=True))
    assert all(p.terminate() == 0 for p in processes), "SIGTERM stops relay and consumer cleanly"


def test_consumer_killed_mid_stream_resumes_without_duplicates(stack) -> None:
    settings, env, app, processes, logs = stack
    counters_ = app.open_counters(20)
    app.increment_randomly(counters_, 5000, seed=3)
    total = sum(c.version for c in counters_)
    processes.append(relay(env, logs))
    consumer = counter_consumer(env, logs, "consumer-1")
    processes.append(consumer)
    kills = 0
    for attempt in range(3):
        wait_for(lambda: _applied_count(settings) > 0, 60, "the consumer to start applying", (consumer,))
        if _applied_count(settings) >= total:
            break
        consumer.kill9()
        kills += 1
        consumer = counter_consumer(env, logs, f"consumer-{attempt + 2}")
        processes.append(consumer)
    assert kills >= 1, "the consumer was killed while it still had events to apply"
    wait_for(lambda: _applied_count(settings) >= total, 120, f"{total} events applied", (consumer,))
    assert_applied_exactly_once_in_order(settings, counters_)


def test_relay_killed_mid_batch_resumes_with_no_gap_and_no_duplicate_effect(stack) -> None:
    settings, env, app, processes, logs = stack
    counters_ = app.open_counters(20)
    app.increment_randomly(counters_, 20000, seed=4, per_save=100)
    total = sum(c.version for c in counters_)
    env = {**env, "TROVE_ES_RELAY_BATCH_SIZE": "2000"}
    processes.append(counter_consumer(env, logs))

    published = _PublishedCount(settings)
    try:
        for attempt in range(6):
            relay_process = relay(env, logs, f"relay-{attempt + 1}")
            processes.append(relay_process)
            # Kill it inside a batch: its messages are on the topic beyond the position it saved. (The end
            # offsets are read first, so when they exceed the position read after them, a batch was in
            # flight when the position was read; a kill can still land just after its save, hence retries.)
            wait_for(lambda: published.count() > _relay_position(settings), 60, "the relay to be inside a batch",
                     (relay_process,), poll_s=0.005)
            relay_process.kill9()
            position = _relay_position(settings)
            if position >= total or len(_topic(settings)) > position:
                break
    finally:
        published.close()
    relay_process = relay(env, logs, "relay-final")
    processes.append(relay_process)
    wait_for(lambda: _applied_count(settings) >= total, 120, f"{total} events applied", (processes[0], processes[-1]))
    assert_applied_exactly_once_in_order(settings, counters_)
    keys = [(json.loads(r.value)["aggregate_id"], json.loads(r.value)["version"]) for r in _topic(settings)]
    assert set(keys) == {(str(c.id), v) for c in counters_ for v in range(1, c.version + 1)}, "no gap"
    assert len(keys) > len(set(keys)), (
        "a relay killed mid-batch republishes part of the batch, so the topic holds repeats the consumer dropped")


class _PublishedCount:
    """How many messages the events topic holds, from its end offsets (cheap enough to poll tightly)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                       enable_auto_commit=False)
        self._topic = settings.topics.events

    def count(self) -> int:
        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        if not partitions:
            return 0
        ends = self._consumer.end_offsets([TopicPartition(self._topic, p) for p in partitions])
        return sum(ends.values())

    def close(self) -> None:
        self._consumer.close()


def _relay_position(settings: Settings) -> int:
    try:
        with event_store_engine(settings).connect() as connection:
            return connection.execute(select(relay_positions.c.notification_id)
                                      .where(relay_positions.c.relay_name == settings.relay_name)).scalar() or 0
    except ProgrammingError:  # the relay has not created its table yet
        return 0


def _topic(settings: Settings) -> list:
    return read_topic(settings.kafka_bootstrap_servers, settings.topics.events, idle_s=1.0)


def test_broker_restart_losing_every_topic_is_recovered_by_republishing(tmp_path: Path, postgres_url: str) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as own_broker:
        settings, env = stack_settings(tmp_path, own_broker.bootstrap_servers, postgres_url, postgres_url)
        app = CounterApp(env=event_store_env(settings.event_store_url))
        logs = tmp_path / "logs"
        counters_ = app.open_counters(8)
        app.increment_randomly(counters_, 400, seed=5)
        processes = [relay(env, logs), counter_consumer(env, logs)]
        try:
            total = sum(c.version for c in counters_)
            wait_for(lambda: _applied_count(settings) >= total, 90, "first events applied", tuple(processes))

            own_broker.restart()  # memory-only: topics, offsets and groups are gone
            app.increment_randomly(counters_, 300, seed=6, per_save=10)
            total = sum(c.version for c in counters_)
            wait_for(lambda: _applied_count(settings) >= total, 120, "events after the restart applied",
                     tuple(processes))
            assert_applied_exactly_once_in_order(settings, counters_)
            republished = read_topic(settings.kafka_bootstrap_servers, settings.topics.events)
            assert len(republished) >= total, "the relay republished the whole store into the new topic"
            assert all(p.terminate() == 0 for p in processes)
        finally:
            for process in processes:
                if process.alive():
                    process.kill9()
            read_model_engine(settings).dispose()


def test_two_consumers_in_one_group_share_partitions_and_apply_each_event_once(stack) -> None:
    settings, env, app, processes, logs = stack
    counters_ = app.open_counters(40)
    processes += [counter_consumer(env, logs, "consumer-a"), counter_consumer(env, logs, "consumer-b")]
    pids = {p.process.pid for p in processes}
    wait_for(lambda: all("projection test-counters consuming" in p.log() for p in processes), 60,
             "both consumers subscribed", tuple(processes))
    processes.append(relay(env, logs))
    app.increment_randomly(counters_, 3000, seed=7)
    total = sum(c.version for c in counters_)
    wait_for(lambda: _applied_count(settings) >= total, 120, f"{total} events applied", tuple(processes))
    applied = assert_applied_exactly_once_in_order(settings, counters_)
    assert {pid for _, _, pid in applied} == pids, "both members of the group applied events"
    by_aggregate: dict[str, set[int]] = {}
    for aggregate_id, _version, pid in applied:
        by_aggregate.setdefault(aggregate_id, set()).add(pid)
    moved = [a for a, owners in by_aggregate.items() if len(owners) > 1]
    # An aggregate only changes hands when a rebalance moves its partition; then its events still
    # apply once and in order (checked above).
    assert len(moved) < len(by_aggregate)


def test_malformed_and_unprocessable_messages_go_to_the_dead_letter_topic_and_processing_continues(stack) -> None:
    settings, env, app, processes, logs = stack
    counters_ = app.open_counters(3)
    processes += [relay(env, logs), counter_consumer(env, logs)]
    wait_for(lambda: _applied_count(settings) >= 3, 60, "counters opened", tuple(processes))

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    good = json.loads(read_topic(settings.kafka_bootstrap_servers, settings.topics.events)[0].value)
    unknown = {**good, "type": "CounterExploded", "version": 99}
    newer = {**good, "schema_version": 2, "version": 98}
    poison = [b"\x00not json", json.dumps({"type": "CounterIncremented"}).encode(),
              json.dumps(unknown).encode(), json.dumps(newer).encode()]
    for value in poison:
        producer.send(settings.topics.events, key=good["aggregate_id"].encode(), value=value)
    producer.flush()
    producer.close()

    counters_[0].increment(UNLUCKY)  # the read model refuses this one while applying it
    counters_[1].increment(4)
    app.save(*counters_)
    wait_for(lambda: len(read_topic(settings.kafka_bootstrap_servers, settings.topics.dead_letter, 0.5)) >= 5,
             60, "five dead letters", tuple(processes))
    wait_for(lambda: _read_model(settings).get(str(counters_[1].id)) == (4, 2), 60,
             "the event after the poison messages applied", tuple(processes))

    dead = read_topic(settings.kafka_bootstrap_servers, settings.topics.dead_letter)
    reasons = [dict(r.headers)["reason"].decode() for r in dead]
    assert len(dead) == 5
    assert any("not JSON" in r for r in reasons)
    assert any("envelope lacks" in r for r in reasons)
    assert any("unknown event type 'CounterExploded'" in r for r in reasons)
    assert any("schema_version 2 is newer" in r for r in reasons)
    assert any(f"refuses an increment of {UNLUCKY}" in r for r in reasons)
    assert {dict(r.headers)["original_topic"].decode() for r in dead} == {settings.topics.events}
    # Each dead letter carries the original bytes. Partitions are consumed in no fixed order, so the
    # refused increment (another aggregate, maybe another partition) may come first.
    assert set(poison) <= {r.value for r in dead}
    # The refused increment left no partial state: the counter keeps its old value and version.
    assert _read_model(settings)[str(counters_[0].id)] == (0, 1)
    assert processes[1].alive(), "the consumer keeps running"
