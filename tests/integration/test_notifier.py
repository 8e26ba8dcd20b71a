"""The API notifier projection on a real read model (SQLite and PostgreSQL): its state survives restarts,
and a crash before the commit republishes identical messages. The publisher records what it is given (a
test double of the projection's port): publication through Kafka is not built yet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from adapters.sql.engine import create_sql_engine
from adapters.sql.schema import create_tables
from domain.instance import CREATE, Instance
from domain.public_events import PublicEvent, to_public_event
from domain.statuses import ServiceStatus
from projections.notifier import Notifier, metadata, notification_instances, notification_open_operations

pytestmark = pytest.mark.integration

CONTEXT = {"request_id": "req-1", "tenant_id": "t1", "user_id": "u1", "client_ip": "203.0.113.7",
           "server_ip": "192.0.2.10", "server_type": "api"}


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.flushed = 0  # how many of ``sent`` were flushed

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def flush(self) -> None:
        self.flushed = len(self.sent)

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(json.loads(value)["oslo.message"]) for _, _, value in self.sent]


def _events(instance: Instance) -> list[PublicEvent]:
    return [to_public_event(event) for event in instance.collect_events()]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_operation_opened_before_a_restart_is_closed_after_it(backend: str, tmp_path: Path,
                                                                 postgres_url: str) -> None:
    engine = create_sql_engine(postgres_url if backend == "postgresql" else f"sqlite:///{tmp_path}/read.db")
    create_tables(engine, metadata)
    instance = Instance(context=CONTEXT, operation=CREATE, name="orders", tenant_id="t1",
                        flavor={"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20},
                        volume_size=1, datastore="mysql", datastore_version="8.0", datastore_version_id="v",
                        availability_zone=None, region="RegionOne", databases=[], users=[], image_id="img-1",
                    datastore_manager="mysql")
    publisher = RecordingPublisher()
    with Session(engine) as session, session.begin():
        Notifier(publisher, "h1").apply_batch(_events(instance), session)
    assert [m["event_type"] for m in publisher.messages()] == ["dbaas.instance_create.start"]
    assert publisher.flushed == 1 and publisher.sent[0][:2] == ("notifications.info", str(instance.id).encode())

    carried = {**CONTEXT, "server_type": "taskmanager"}
    instance.record_server_provisioned(carried, "srv", "vol", "ACTIVE", [])
    instance.record_prepare_sent(carried, "topic")
    instance.change_service_status({**CONTEXT, "server_type": "conductor"}, ServiceStatus.HEALTHY)
    closing = _events(instance)

    crashed = RecordingPublisher()
    with Session(engine) as session:
        session.begin()
        Notifier(crashed, "h1").apply_batch(closing, session)  # a restarted notifier
        session.rollback()  # killed before the runner's commit
    replayed = RecordingPublisher()
    with Session(engine) as session, session.begin():
        Notifier(replayed, "h1").apply_batch(closing, session)
    assert [m["event_type"] for m in replayed.messages()] == ["dbaas.instance_create.end", "trove.instance.create"]
    assert replayed.sent == crashed.sent, "the replay republishes byte for byte: dedupe by message_id holds"
    assert replayed.flushed == len(replayed.sent)
    end, usage = replayed.messages()
    assert end["publisher_id"] == "conductor.h1" and end["payload"]["instance_id"] == str(instance.id)
    assert usage["publisher_id"] == "h1", "usage comes from the bare host, as Trove's"
    assert usage["payload"]["nova_instance_id"] == "srv" and usage["payload"]["instance_size"] == 2048
    with engine.connect() as connection:
        assert connection.execute(notification_open_operations.select()).first() is None
        remembered = connection.execute(notification_instances.select()).one()
    assert remembered.key == str(instance.id), "the instance is remembered for its later usage events"
    engine.dispose()
