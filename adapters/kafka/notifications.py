"""Publishing notifications on Kafka for the notifier (``projections/notifier.py``)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer

from adapters.kafka.topics import admin_client, ensure_topic

FLUSH_TIMEOUT_S = 30.0


class KafkaNotificationPublisher:
    """Sends with acks from every in-sync replica; ``flush`` returns only once all of them are acknowledged,
    and raises the first send that failed, so the notifier's batch (and its offsets) is not committed."""

    def __init__(self, bootstrap_servers: str, topics: tuple[str, ...], partitions: int) -> None:
        with admin_client(bootstrap_servers) as admin:
            for topic in topics:
                ensure_topic(admin, topic, partitions)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5,
                                       allow_auto_create_topics=False, client_id="trove-es-notifier")
        self._pending: list[Any] = []

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        self._pending.append(self._producer.send(topic, key=key, value=value))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._producer.flush(timeout=FLUSH_TIMEOUT_S)
        for sent in pending:
            sent.get(timeout=0)  # raises what the broker answered, or KafkaTimeoutError

    def close(self) -> None:
        self._producer.close(timeout=5)
