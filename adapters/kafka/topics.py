"""Topic administration: make sure a topic exists with the configured partitions, learn its id.

A topic's id (KIP-516) names one incarnation of it. When a broker that keeps topics in memory
restarts, the topic comes back empty with a new id; the relay and the consumers compare ids to
notice and start again from the beginning.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from domain.usage_audit import audit_id

log = logging.getLogger(__name__)

UNKNOWN_TOPIC_OR_PARTITION = 3


class TopicUnavailable(RuntimeError):
    pass


@contextmanager
def admin_client(bootstrap_servers: str, timeout_ms: int = 10_000) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms,
                             bootstrap_timeout_ms=timeout_ms, client_id="trove-es-admin")
    try:
        yield admin
    finally:
        admin.close()


def topic_id(admin: KafkaAdminClient, topic: str) -> str | None:
    """The id of ``topic``'s current incarnation, or None when it does not exist."""
    for described in admin.describe_topics([topic]):
        if described["name"] != topic:
            continue
        if described["error_code"] == UNKNOWN_TOPIC_OR_PARTITION:
            return None
        if described["error_code"]:
            raise TopicUnavailable(f"topic {topic}: broker error code {described['error_code']}")
        return str(described["topic_id"])
    return None


def ensure_topic(admin: KafkaAdminClient, topic: str, partitions: int, timeout_s: float = 15.0) -> str:
    """Create ``topic`` if it is missing; return its id once every partition has a leader."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = topic_id(admin, topic)
        if current is not None:
            return current
        try:
            admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": -1}},
                                wait_for_metadata=True)
            log.info("created topic %s with %d partitions", topic, partitions)
        except TopicAlreadyExistsError:
            pass
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise TopicUnavailable(f"could not create topic {topic}: {exc}") from exc
            time.sleep(0.2)


# kafka-python 3.0 spaces metadata refreshes at least ``retry_backoff_ms`` apart, and builds its cluster
# metadata without the client's own setting: always 100 ms. A client that keeps meeting new topics (the
# task manager sending each new guest its prepare, the fake guests reading each new guest's topic) then
# waits up to 100 ms for every one, and builds queue behind each other's refreshes.
NEW_TOPIC_REFRESH_MS = 5


def refresh_metadata_promptly(client: KafkaProducer | KafkaConsumer, backoff_ms: int = NEW_TOPIC_REFRESH_MS) -> None:
    """Let ``client`` look up a topic it has not met within ``backoff_ms`` of its last lookup."""
    cluster = getattr(client, "_metadata", None) or getattr(client, "_cluster", None)
    config = getattr(cluster, "config", None)
    if isinstance(config, dict) and "retry_backoff_ms" in config:
        config["retry_backoff_ms"] = backoff_ms
    else:  # another kafka-python: it keeps its own spacing, which costs latency, not correctness
        log.debug("cannot shorten the metadata refresh spacing of %r", client)


_TRACKING = threading.Lock()


def track_topic(producer: KafkaProducer, topic: str) -> None:
    """Have ``producer`` look up and keep refreshing ``topic``'s metadata; safe from any thread.

    kafka-python adds a topic to its tracked set in place, from the sending thread, while its I/O thread
    may be iterating that set to build a metadata request. The refresh then fails ("Set changed size
    during iteration") and every send waiting for metadata blocks until ``max_block_ms``: twenty builds
    at once did this to the task manager. Replacing the set instead leaves an iteration in progress
    with the old one; the producer's own ``add_topic`` at the send then finds the topic and changes nothing.
    """
    metadata = producer._metadata
    with _TRACKING:
        if topic in metadata._topics:
            return
        metadata._topics = metadata._topics | {topic}
    metadata.request_update()


def partition_of(key: str, partitions: int) -> int:
    """The partition kafka-python's default partitioner sends a message keyed ``key`` to."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def audit_salts(kind: str, partitions: int) -> list[int]:
    """For each partition, the smallest salt that puts the id of ``kind``'s audit chain for that
    partition (its messages' key) on it: about ``partitions`` tries each."""
    def salt_for(partition: int) -> int:
        return next(salt for salt in itertools.count()
                    if partition_of(str(audit_id(kind, partition, salt)), partitions) == partition)

    return [salt_for(partition) for partition in range(partitions)]
