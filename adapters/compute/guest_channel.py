"""The task manager's line to each guest: one Kafka command topic per instance.

A guest's topic is created before its first command (the broker does not auto-create topics) and
deleted with the instance. The same channel serves the simulated guests and the real guest agent.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from adapters.kafka.topics import refresh_metadata_promptly, topic_id, track_topic
from domain import guest_protocol as protocol
from domain.guest_protocol import GuestCommand

log = logging.getLogger(__name__)


class KafkaGuestChannel:
    """The ``GuestChannel`` on Kafka: one single-partition command topic per instance."""

    def __init__(self, bootstrap_servers: str, prefix: str, secret: bytes, send_timeout_s: float = 15.0) -> None:
        """``secret``: the deployment's guest secret; each command is signed with its instance's key."""
        self._bootstrap = bootstrap_servers
        self._secret = secret
        self._prefix = prefix
        self._timeout = send_timeout_s
        # Admin clients are not thread-safe and the task manager runs steps on a pool: one per thread,
        # so twenty builds do not queue behind each other's topic creation.
        self._local = threading.local()
        self._admins: list[KafkaAdminClient] = []
        self._lock = threading.Lock()
        self._producer: KafkaProducer | None = None

    def topic(self, instance_id: str) -> str:
        return f"{self._prefix}{instance_id}"

    def ensure(self, instance_id: str) -> str:
        topic = self.topic(instance_id)
        # One partition: a guest must see its commands in the order they were sent. One request, not a
        # wait for the new topic's metadata (that was most of a build's step): a send that finds no
        # leader yet waits for one itself, up to ``send_timeout_s``.
        with contextlib.suppress(TopicAlreadyExistsError):
            self._admin_client().create_topics({topic: {"num_partitions": 1, "replication_factor": -1}})
        # The producer looks the new topic up now, while the caller records the step, not at the send.
        track_topic(self._ready_producer(), topic)
        return topic

    def exists(self, instance_id: str) -> bool:
        return topic_id(self._admin_client(), self.topic(instance_id)) is not None

    def send(self, command: GuestCommand) -> None:
        producer = self._ready_producer()
        topic = self.topic(command.instance_id)
        # kafka-python 3.0 keeps refreshing metadata only for topics it did not know at their first send:
        # a topic learnt from its first all-topics fetch drops out at the next refresh, and its (empty)
        # batch queue then keeps the sender thread spinning on an "unknown leader" at a full core.
        track_topic(producer, topic)
        value = protocol.signed(command.to_json(), protocol.instance_key(self._secret, command.instance_id))
        producer.send(topic, key=command.instance_id.encode(), value=value).get(timeout=self._timeout)

    def _ready_producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                               client_id="trove-es-task-manager", allow_auto_create_topics=False,
                                               max_block_ms=int(self._timeout * 1000))
                refresh_metadata_promptly(self._producer)  # every build's first send is to a new topic
            return self._producer

    def remove(self, instance_id: str) -> None:
        try:
            self._admin_client().delete_topics([self.topic(instance_id)])
        except UnknownTopicOrPartitionError:
            pass
        except KafkaError as exc:
            # Best effort, like Trove's own cleanup: an orphan topic costs little, a stuck delete a lot.
            log.warning("could not delete guest topic %s: %s", self.topic(instance_id), exc)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
            admins, self._admins = self._admins, []
        for admin in admins:
            admin.close()

    def _admin_client(self) -> KafkaAdminClient:
        admin = getattr(self._local, "admin", None)
        if admin is None:
            admin = KafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=10_000,
                                     client_id="trove-es-task-manager-admin")
            self._local.admin = admin
            with self._lock:
                self._admins.append(admin)
        return admin
