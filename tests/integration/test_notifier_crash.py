"""The notifier (``trove-es consume --projection notifications``) killed with SIGKILL mid-batch, against
the real PostgreSQL service and broker: after its restarts, a consumer that dedupes by ``message_id``
sees every notification once, and none is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy.orm import Session

from adapters.event_store import event_store_env
from adapters.kafka.broker import EmbeddedBroker
from adapters.sql.engine import create_sql_engine
from adapters.sql.schema import create_tables
from domain.instance import CREATE, Instance
from domain.public_events import to_public_event
from domain.statuses import ServiceStatus
from projections import notifier
from services.application import TroveApplication
from tests.integration.test_notifier import CONTEXT, RecordingPublisher
from tests.support.stack import StackProcess, read_topic, relay, stack_settings, wait_for

pytestmark = pytest.mark.integration

INSTANCES = 400
SMALL = {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20}


def _built_instances(app: TroveApplication) -> list[Instance]:
    built = []
    for n in range(INSTANCES):
        instance = Instance(context={**CONTEXT, "request_id": f"req-{n}"}, operation=CREATE, name=f"db{n}",
                            tenant_id="t1", flavor=SMALL, volume_size=1, datastore="mysql", datastore_version="8.0",
                            datastore_version_id="v", availability_zone=None, region="RegionOne", databases=[],
                            users=[], image_id="img", datastore_manager="mysql")
        carried = {**CONTEXT, "request_id": f"req-{n}", "server_type": "taskmanager"}
        instance.record_server_provisioned(carried, f"srv-{n}", f"vol-{n}", "ACTIVE", [])
        instance.record_prepare_sent(carried, "topic")
        instance.change_service_status({**carried, "server_type": "conductor"}, ServiceStatus.HEALTHY)
        built.append(instance)
    for start in range(0, INSTANCES, 10):
        app.save(*built[start:start + 10])
    return built


def _expected_message_ids(app: TroveApplication, instances: list[Instance], tmp_path: Path) -> set[str]:
    """What the notifier publishes for these events, worked out in-process by the same projection code."""
    engine = create_sql_engine(f"sqlite:///{tmp_path}/expected.db")
    create_tables(engine, notifier.metadata)
    publisher = RecordingPublisher()
    with Session(engine) as session, session.begin():
        notifier.Notifier(publisher, "h1").apply_batch(
            [to_public_event(e) for i in instances for e in app.events.get(i.id)], session)
    engine.dispose()
    return {m["message_id"] for m in publisher.messages()}


def _message_ids(records: list) -> list[str]:
    return [json.loads(json.loads(r.value)["oslo.message"])["message_id"] for r in records]


def _published(settings) -> list[str]:  # type: ignore[no-untyped-def]
    return _message_ids(read_topic(settings.kafka_bootstrap_servers, settings.topics.notifications_info, idle_s=1.0))


class _Watcher:
    """Follows the info topic as it fills, so the notifier can be killed the moment it publishes."""

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        self._consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                       group_id=None)
        self._topic = settings.topics.notifications_info
        self.seen = 0

    def grew(self) -> bool:
        if not self._consumer.assignment():
            partitions = self._consumer.partitions_for_topic(self._topic) or set()
            if not partitions:
                return False
            assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            self._consumer.assign(assigned)
            self._consumer.seek_to_beginning(*assigned)
        before = self.seen
        self.seen += sum(len(records) for records in self._consumer.poll(timeout_ms=20).values())
        return self.seen > before

    def close(self) -> None:
        self._consumer.close()


def test_a_notifier_killed_mid_batch_republishes_so_deduping_consumers_miss_nothing_and_see_no_extra(
        tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> None:
    settings, env = stack_settings(tmp_path, broker.bootstrap_servers, postgres_url, postgres_url,
                                   TROVE_ES_CONSUMER_MAX_RECORDS="300", TROVE_ES_NOTIFICATION_HOST="h1")
    app = TroveApplication(env=event_store_env(settings.event_store_url))
    instances = _built_instances(app)
    expected = _expected_message_ids(app, instances, tmp_path)
    assert len(expected) == 3 * INSTANCES, "create .start, .end and trove.instance.create for each"
    logs = tmp_path / "logs"
    processes = [relay(env, logs)]
    watcher = _Watcher(settings)
    try:
        cut_short: list[int] = []  # distinct notifications out when each notifier was killed
        for attempt in range(4):
            notifier_process = StackProcess(f"notifier-{attempt + 1}", ["consume", "--projection", "notifications"],
                                            env, logs)
            processes.append(notifier_process)
            wait_for(watcher.grew, 90, "the notifier to publish", (notifier_process,))
            notifier_process.kill9()  # publishing a batch: sent, maybe flushed, its offsets not committed
            published = _published(settings)
            cut_short.append(len(set(published)))
            if set(published) >= expected or len(published) > len(set(published)):
                break  # all out, or a restart already republished a killed batch: the case this test is about
        assert cut_short[0] < len(expected), "the first notifier was killed while it still had notifications to send"
        final = StackProcess("notifier-final", ["consume", "--projection", "notifications"], env, logs)
        processes.append(final)
        wait_for(lambda: set(_published(settings)) >= expected, 120, f"{len(expected)} notifications", (final,))
        published = _published(settings)
        assert set(published) == expected, "none missing and none extra, by message_id"
        assert len(published) > len(set(published)), \
            "a batch killed before its commit was published again: the repeats carry the same message ids"
        assert final.terminate() == 0
    finally:
        watcher.close()
        for process in processes:
            if process.alive():
                process.kill9()
