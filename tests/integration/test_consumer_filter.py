"""A consumer that takes only some event types: the rest are skipped unread, and their offsets still advance."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.kafka.broker import EmbeddedBroker
from adapters.kafka.consumer import ConsumerRunner
from adapters.sql.engine import create_sql_engine
from adapters.sql.tracking import consumer_offsets
from tests.support.stack import wait_for

pytestmark = pytest.mark.integration


class Recorder:
    """Applies what it is given into memory; decoding counts every record the runner reads."""

    def __init__(self) -> None:
        self.decoded = 0
        self.applied: list[dict[str, Any]] = []

    def decode(self, raw: bytes) -> dict[str, Any]:
        self.decoded += 1
        return json.loads(raw)

    def apply(self, message: dict[str, Any], _session: Session) -> None:
        self.applied.append(message)


def _send(producer: KafkaProducer, topic: str, kind: str, n: int) -> None:
    producer.send(topic, key=b"k", value=json.dumps({"type": kind, "n": n}).encode(),
                  headers=[("event_type", kind.encode())])


def _stored_offset(engine, group: str) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.execute(select(consumer_offsets.c.next_offset)
                                      .where(consumer_offsets.c.group_id == group)).scalar() or 0)


def test_skipped_types_are_not_decoded_and_their_offsets_are_stored(tmp_path: Path, broker: EmbeddedBroker) -> None:
    topic, group = f"filter-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    engine = create_sql_engine(f"sqlite:///{tmp_path / 'read.db'}")
    recorder = Recorder()
    runner = ConsumerRunner(name="filtered", group_id=group, topics={topic: 1}, decode=recorder.decode,
                            apply=recorder.apply, engine=engine, bootstrap_servers=broker.bootstrap_servers,
                            dead_letter_topic=f"{topic}.dead", event_types={"Wanted"},
                            skipped_offsets_flush_s=0.5)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    try:
        for n in range(10):
            _send(producer, topic, "Wanted" if n in (3, 7) else "Other", n)
        producer.flush()
        wait_for(lambda: len(recorder.applied) == 2, 60, "the two wanted records to be applied")
        assert [m["n"] for m in recorder.applied] == [3, 7]
        assert recorder.decoded == 2, "records of other types are skipped without decoding"
        wait_for(lambda: _stored_offset(engine, group) == 10, 60, "the offset after the last record to be stored")

        # Only skipped records arrive now: no transaction each, but their offsets are stored within the bound.
        for n in range(10, 15):
            _send(producer, topic, "Other", n)
        producer.flush()
        wait_for(lambda: _stored_offset(engine, group) == 15, 60, "skipped records' offsets to be stored")
        assert len(recorder.applied) == 2 and recorder.decoded == 2
    finally:
        producer.close(timeout=5)
        runner.stop()
        thread.join(30)
        engine.dispose()
