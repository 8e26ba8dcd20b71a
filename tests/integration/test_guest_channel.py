"""The task manager's guest channel on the real broker: commands reach each guest's own topic, and the
shared producer keeps every topic it sent to in its metadata (kafka-python 3.0 drops topics it learnt
from its first fetch, and its sender then spins at a full core on their "unknown leader")."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.compute.guest_channel import KafkaGuestChannel
from adapters.kafka.broker import EmbeddedBroker
from domain import guest_protocol as protocol
from tests.support.stack import read_topic

pytestmark = pytest.mark.integration

SECRET = b"test guest secret"


def test_concurrent_commands_to_new_topics_all_arrive_and_stay_known(broker: EmbeddedBroker) -> None:
    channel = KafkaGuestChannel(broker.bootstrap_servers, f"test-{uuid.uuid4().hex[:8]}.guest.", SECRET)
    instances = [f"instance-{i}" for i in range(16)]

    def command(instance_id: str) -> None:
        channel.ensure(instance_id)
        channel.send(protocol.command(protocol.RESTART, instance_id, f"req-{instance_id}", time.time()))

    try:
        with ThreadPoolExecutor(8) as pool:  # as the task manager's step workers do
            list(pool.map(command, instances))
        for instance_id in instances:
            (record,) = read_topic(broker.bootstrap_servers, channel.topic(instance_id), idle_s=0.3)
            assert protocol.parse_command(record.value, protocol.instance_key(SECRET, instance_id)).request_id \
                == f"req-{instance_id}", "each command signed with its own instance's key"
        producer = channel._producer
        assert producer is not None
        producer._metadata.request_update()
        time.sleep(0.5)  # let a metadata refresh come back: it must not forget any of the topics
        queued = list(producer._accumulator._batches)
        assert len(queued) == len(instances)
        unknown = [tp.topic for tp in queued if producer._metadata.leader_for_partition(tp) in (None, -1)]
        assert unknown == [], "topics the sender would spin on"
    finally:
        channel.close()


def test_tracking_a_topic_replaces_the_producers_set_rather_than_changing_the_one_being_read(
        broker: EmbeddedBroker) -> None:
    channel = KafkaGuestChannel(broker.bootstrap_servers, f"test-{uuid.uuid4().hex[:8]}.guest.", SECRET)
    try:
        channel.ensure("first")
        metadata = channel._producer._metadata  # type: ignore[union-attr]
        being_read = metadata._topics  # what the I/O thread may be iterating for a metadata request
        before = set(being_read)
        channel.ensure("second")
        assert set(being_read) == before, "the set a refresh may be iterating is never changed in place"
        assert channel.topic("second") in metadata._topics and metadata._topics is not being_read
        channel.send(protocol.command(protocol.RESTART, "second", "req-2", time.time()))
        (record,) = read_topic(broker.bootstrap_servers, channel.topic("second"), idle_s=0.3)
        assert protocol.parse_command(record.value, protocol.instance_key(SECRET, "second")).request_id == "req-2"
        with pytest.raises(protocol.Unauthenticated):
            protocol.parse_command(record.value, protocol.instance_key(SECRET, "first"))
    finally:
        channel.close()
