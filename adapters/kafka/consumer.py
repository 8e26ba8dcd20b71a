"""The one consumer loop every projection and process runs on.

Effectively once: for each poll's batch, the handler's SQL writes, the per-aggregate dedupe marks
and the next offset of every partition in the batch commit in one transaction (one per poll, not
one per partition: under load a poll spans most partitions). The offset row is updated with a
compare-and-set on the value this consumer last saw, so a consumer that lost its partition in a
rebalance (a zombie) cannot commit a second copy of an effect. On assignment the runner seeks to
the stored offsets, unless the topic is a new incarnation (another topic id), in which case it
reads it from the beginning and lets the dedupe marks drop what was already applied.

Poison messages do not stop the loop: a message that cannot be decoded or applied goes to the
dead-letter topic with the reason, and its offset is committed like any other. A failure of the
database itself is not the message's fault: the batch is rolled back and retried.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy import Engine, any_, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from adapters.kafka.topics import admin_client, ensure_topic
from adapters.sql.schema import create_tables
from adapters.sql.tracking import consumer_marks, consumer_offsets, tracking_metadata
from projections.prepared import InTransaction
from projections.upsert import upsert_for_dialect

log = logging.getLogger(__name__)

Decode = Callable[[bytes], Any]
Apply = Callable[[Any, Session], None]
ApplyBatch = Callable[[list[Any], Session], None]


class OwnershipLost(RuntimeError):
    """Another consumer committed this partition since we read its offset."""

    def __init__(self, partition: TopicPartition) -> None:
        super().__init__(f"{partition.topic}[{partition.partition}]")
        self.partition = partition


class Deduplicated(Protocol):
    @property
    def dedupe_key(self) -> tuple[str, int] | None: ...


@dataclass
class _Owned:
    """What this consumer believes the stored offset row of one partition holds."""

    topic_id: str
    next_offset: int | None  # None: no row stored yet
    stored_topic_id: str | None = None
    skipped_to: int | None = None  # read past records the handler does not take; not stored yet


@dataclass
class RunnerStats:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    gaps: int = 0
    retries: int = 0
    last_errors: list[str] = field(default_factory=list)


@dataclass
class _Failure:
    record: ConsumerRecord
    stage: str
    reason: str
    detail: str


# Built and compiled once, run on the batch transaction's cursor: every batch of every consumer runs them,
# and building them, then SQLAlchemy's per-execution work, was most of a small batch's cost.
_MARKS_OF = select(consumer_marks.c.aggregate_id, consumer_marks.c.version).where(
    consumer_marks.c.group_id == bindparam("k_group"))
# PostgreSQL takes the ids as one array parameter; an expanding IN would be rendered again at every run.
_MARKS_ANY = InTransaction(_MARKS_OF.where(consumer_marks.c.aggregate_id == any_(
    bindparam("k_ids", type_=postgresql.ARRAY(consumer_marks.c.aggregate_id.type)))))
_MARKS_IN = _MARKS_OF.where(consumer_marks.c.aggregate_id.in_(bindparam("k_ids", expanding=True)))
_STORE_MARKS = {dialect: InTransaction(upsert_for_dialect(dialect, consumer_marks, ("group_id", "aggregate_id"),
                                                          ("version",)),
                                       column_keys=["group_id", "aggregate_id", "version"])
                for dialect in ("postgresql", "sqlite")}
_CLAIM_OFFSET = InTransaction(insert(consumer_offsets), column_keys=[c.key for c in consumer_offsets.c])
_MOVE_OFFSET = InTransaction(
    update(consumer_offsets)
    .where(consumer_offsets.c.group_id == bindparam("k_group"), consumer_offsets.c.topic == bindparam("k_topic"),
           consumer_offsets.c.partition == bindparam("k_partition"),
           consumer_offsets.c.topic_id == bindparam("k_stored_topic_id"),
           consumer_offsets.c.next_offset == bindparam("k_stored_offset"))
    .values(topic_id=bindparam("k_topic_id"), next_offset=bindparam("k_new_offset")))


class ConsumerRunner:
    def __init__(
        self,
        *,
        name: str,
        group_id: str,
        topics: Mapping[str, int],
        decode: Decode,
        apply: Apply,
        engine: Engine,
        bootstrap_servers: str,
        dead_letter_topic: str,
        session_timeout_ms: int = 6000,
        max_records: int = 2000,
        poll_timeout_ms: int = 200,
        apply_batch: ApplyBatch | None = None,
        event_types: Collection[str] | None = None,
        skipped_offsets_flush_s: float = 1.0,
        fetch_wait_ms: int = 50,
        stored_offsets_check_s: float = 5.0,
    ) -> None:
        self.name = name
        self.group_id = group_id
        self._topics = dict(topics)
        self._decode = decode
        self._apply = apply
        self._apply_batch = apply_batch
        self._engine = engine
        self._bootstrap = bootstrap_servers
        self._dead_letter_topic = dead_letter_topic
        self._session_timeout_ms = session_timeout_ms
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._fetch_wait_ms = fetch_wait_ms
        # Records whose ``event_type`` header is not one of these are neither decoded nor applied; a poll
        # of only such records opens no transaction, and their offsets are stored with the next one (or
        # within ``skipped_offsets_flush_s``). A crash re-reads and skips them again: they have no effect.
        self._event_types = frozenset(event_types) if event_types is not None else None
        self._skipped_flush_s = skipped_offsets_flush_s
        self._skipped_since: float | None = None
        self._stored_check_s = stored_offsets_check_s
        self._stored_checked = time.monotonic()
        self._stop = threading.Event()
        self._owned: dict[TopicPartition, _Owned] = {}
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self.stats = RunnerStats()
        create_tables(engine, tracking_metadata, [consumer_offsets, consumer_marks])

    def stop(self) -> None:
        """Finish the batch in hand, then return from ``run``."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        with admin_client(self._bootstrap) as admin:
            # Whoever starts first creates a topic, with the partitions every process is configured with.
            for topic, partitions in {**self._topics, self._dead_letter_topic: 1}.items():
                ensure_topic(admin, topic, partitions)
        self._consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            client_id=f"trove-es-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            allow_auto_create_topics=False,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(500, self._session_timeout_ms // 3),
            max_poll_records=self._max_records,
            # tansu answers a parked fetch when its wait runs out rather than when a record arrives
            # (measured: delivery p50/max 113/250 ms at 500 ms, 10/29 ms at 50 ms), so the wait is a
            # latency every hop pays, traded against empty fetches of an idle consumer.
            fetch_max_wait_ms=self._fetch_wait_ms,
            # Notice a topic recreated by a restarted broker within seconds, not minutes.
            metadata_max_age_ms=5000,
        )
        self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                       client_id=f"trove-es-{self.name}-dead-letter")
        self._consumer.subscribe(list(self._topics), listener=_SeekToStoredOffsets(self))
        try:
            while not self._stop.is_set() and not (until and until()):
                batch = self._consumer.poll(timeout_ms=self._poll_timeout_ms)
                if batch:
                    self._process_with_retry(batch)
                elif self._skipped_since is not None:
                    self._process_with_retry({})  # store skipped offsets while idle
                elif time.monotonic() - self._stored_checked >= self._stored_check_s:
                    self._check_stored_offsets()
        finally:
            self._consumer.close(autocommit=False)
            self._producer.close(timeout=5)
            log.info("%s stopped: %s", self.name, self.stats)

    # Assignment ------------------------------------------------------------------------------

    def _on_assigned(self, partitions: Iterable[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        partitions = list(partitions)
        stored = self._load_offsets(partitions)
        for partition in partitions:
            # The consumer's own metadata already holds the topic id (KIP-516); kafka-python exposes
            # it only on the client's cluster object, and asking the broker again here would block
            # the IO loop that also sends heartbeats.
            current_id = str(consumer._client.cluster.topic_id(partition.topic) or "")
            row = stored.get(partition)
            if row is not None and row[0] == current_id:
                self._owned[partition] = _Owned(current_id, row[1], row[0])
                consumer.seek(partition, row[1])
            else:
                if row is not None:
                    log.warning("%s: %s[%d] is a new incarnation of the topic; reading it from the start, "
                                "duplicates are dropped", self.name, partition.topic, partition.partition)
                self._owned[partition] = _Owned(current_id, row[1] if row else None, row[0] if row else None)
                consumer.seek_to_beginning(partition)

    def _on_revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            self._owned.pop(partition, None)

    def _load_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, tuple[str, int]]:
        if not partitions:
            return {}
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(consumer_offsets.c.topic, consumer_offsets.c.partition, consumer_offsets.c.topic_id,
                       consumer_offsets.c.next_offset)
                .where(consumer_offsets.c.group_id == self.group_id,
                       consumer_offsets.c.topic.in_({p.topic for p in partitions}))).all()
        return {TopicPartition(r.topic, r.partition): (r.topic_id, r.next_offset) for r in rows}

    # Processing ------------------------------------------------------------------------------

    def _process_with_retry(self, batch: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        owned = {partition: (self._owned[partition], records) for partition, records in batch.items()
                 if partition in self._owned}  # a partition revoked while the batch was in flight is skipped
        if not owned and self._skipped_since is None:
            return
        try:
            if self._skip(owned):
                return
            self._process(owned)
        except OwnershipLost as lost:
            log.warning("%s: %s[%d] was committed by another consumer; re-reading the batch's offsets",
                        self.name, lost.partition.topic, lost.partition.partition)
            for partition in owned:
                self._resync(partition)
        except (OperationalError, InterfaceError) as exc:
            self.stats.retries += 1
            log.warning("%s: database error (%s); retrying the batch", self.name, exc.__class__.__name__)
            for partition in owned:
                self._resync(partition)
            self._stop.wait(1.0)

    def _wanted(self, record: ConsumerRecord) -> bool:
        if self._event_types is None:
            return True
        for key, value in record.headers or ():
            if key == "event_type":
                return value.decode(errors="replace") in self._event_types
        return True  # no header: the handler decides

    def _skip(self, batch: Mapping[TopicPartition, tuple[_Owned, list[ConsumerRecord]]]) -> bool:
        """True when the batch holds nothing the handler takes and its offsets can wait."""
        if any(self._wanted(record) for _, records in batch.values() for record in records):
            return False
        now = time.monotonic()
        for owned, records in batch.values():
            owned.skipped_to = records[-1].offset + 1
        if self._skipped_since is None:
            self._skipped_since = now
        return now - self._skipped_since < self._skipped_flush_s

    def _check_stored_offsets(self) -> None:
        """Follow offsets someone else stored while this consumer idled: a swap (``trove-es replay --swap``)
        rewrites them under a running consumer, which would otherwise notice only at its next commit."""
        self._stored_checked = time.monotonic()
        partitions = list(self._owned)
        stored = self._load_offsets(partitions)
        for partition in partitions:
            owned, row = self._owned.get(partition), stored.get(partition)
            if owned is not None and row is not None and row != (owned.stored_topic_id, owned.next_offset):
                log.info("%s: %s[%d]'s stored offset changed under it; following it", self.name, partition.topic,
                         partition.partition)
                self._resync(partition)

    def _resync(self, partition: TopicPartition) -> None:
        stored = self._load_offsets([partition]).get(partition)
        owned = self._owned.get(partition)
        if owned is None or self._consumer is None:
            return
        owned.skipped_to = None
        if stored is not None and stored[0] == owned.topic_id:
            owned.next_offset, owned.stored_topic_id = stored[1], stored[0]
            self._consumer.seek(partition, stored[1])
        else:
            owned.next_offset = stored[1] if stored else None
            owned.stored_topic_id = stored[0] if stored else None
            self._consumer.seek_to_beginning(partition)

    def _process(self, batch: Mapping[TopicPartition, tuple[_Owned, list[ConsumerRecord]]]) -> None:
        failures: list[_Failure] = []
        decoded: list[tuple[ConsumerRecord, Any]] = []
        for _, records in batch.values():
            for record in records:
                if not self._wanted(record):
                    continue
                try:
                    decoded.append((record, self._decode(record.value)))
                except Exception as exc:
                    failures.append(_Failure(record, "decode", str(exc) or exc.__class__.__name__,
                                             traceback.format_exc()))
        with Session(self._engine) as session:
            session.begin()
            try:
                try:
                    applied = self._apply_all(session, self._load_marks(session, decoded), decoded, None)
                except (OperationalError, InterfaceError):
                    raise
                except Exception:
                    # Slow path: one savepoint per message, so a poison message is dead-lettered
                    # and the others still apply.
                    session.rollback()
                    session.begin()
                    applied = self._apply_all(session, self._load_marks(session, decoded), decoded, failures)
                self._commit_marks(session, applied)
                offsets = {partition: owned.skipped_to for partition, owned in self._owned.items()
                           if owned.skipped_to is not None}
                offsets.update({partition: records[-1].offset + 1 for partition, (_, records) in batch.items()})
                for partition, offset in offsets.items():
                    self._commit_offset(session, partition, self._owned[partition], offset)
                self._dead_letter(failures)
                session.commit()
            except BaseException:
                session.rollback()
                raise
        # The transaction committed: only now does memory move on.
        for partition, offset in offsets.items():
            owned = self._owned[partition]
            owned.next_offset, owned.stored_topic_id, owned.skipped_to = offset, owned.topic_id, None
        self._skipped_since = None
        self.stats.batches += 1
        self.stats.dead_lettered += len(failures)

    def _apply_all(self, session: Session, marks: dict[str, int], decoded: list[tuple[ConsumerRecord, Any]],
                   failures: list[_Failure] | None) -> dict[str, int]:
        """Apply what is new; ``failures`` is None on the fast path, where any error aborts the batch.

        ``marks`` (each aggregate's last applied version) is updated in place; the return value is
        the marks this batch changed, to be stored with the offsets.
        """
        changed: dict[str, int] = {}
        if failures is None and self._apply_batch is not None:
            fresh = []
            for _, message in decoded:
                if self._is_new(message, marks):
                    fresh.append(message)
                    self._mark(message, marks, changed)
            self._apply_batch(fresh, session)
            self.stats.applied += len(fresh)
            return changed
        for record, message in decoded:
            if not self._is_new(message, marks):
                continue
            if failures is None:
                self._apply(message, session)
            else:
                try:
                    with session.begin_nested():
                        self._apply(message, session)
                except (OperationalError, InterfaceError):
                    raise
                except Exception as exc:
                    failures.append(_Failure(record, "apply", str(exc) or exc.__class__.__name__,
                                             traceback.format_exc()))
                    continue
            self.stats.applied += 1
            self._mark(message, marks, changed)
        return changed

    def _is_new(self, message: Any, marks: dict[str, int]) -> bool:
        """False for a redelivery of something already applied."""
        key = getattr(message, "dedupe_key", None)
        if key is None:
            return True
        aggregate_id, version = key
        seen = marks.get(aggregate_id, 0)
        if version <= seen:
            self.stats.duplicates += 1
            return False
        if version > seen + 1 and seen and self._event_types is None:  # a filter skips versions by design
            self.stats.gaps += 1
            log.error("%s: %s jumped from version %d to %d; an event is missing upstream",
                      self.name, aggregate_id, seen, version)
        return True

    @staticmethod
    def _mark(message: Any, marks: dict[str, int], changed: dict[str, int]) -> None:
        if (key := getattr(message, "dedupe_key", None)) is not None:
            marks[key[0]] = changed[key[0]] = key[1]

    def _load_marks(self, session: Session, decoded: list[tuple[ConsumerRecord, Any]]) -> dict[str, int]:
        ids = {key[0] for _, m in decoded if (key := getattr(m, "dedupe_key", None)) is not None}
        if not ids:
            return {}
        connection = session.connection()
        parameters = {"k_group": self.group_id, "k_ids": list(ids)}
        if connection.dialect.name != "postgresql":  # SQLite has no array to bind: an expanding IN
            return {row.aggregate_id: row.version for row in connection.execute(_MARKS_IN, parameters)}
        cursor = _MARKS_ANY.execute(connection, parameters)
        try:
            return dict(cursor.fetchall())
        finally:
            cursor.close()

    def _commit_marks(self, session: Session, changed_marks: dict[str, int]) -> None:
        if changed_marks:
            connection = session.connection()
            _STORE_MARKS[connection.dialect.name].execute_many(
                connection, [{"group_id": self.group_id, "aggregate_id": a, "version": v}
                             for a, v in changed_marks.items()])

    def _commit_offset(self, session: Session, partition: TopicPartition, owned: _Owned, new_offset: int) -> None:
        if owned.stored_topic_id is None:
            try:
                with session.begin_nested():
                    _CLAIM_OFFSET.execute(session.connection(), {
                        "group_id": self.group_id, "topic": partition.topic, "partition": partition.partition,
                        "topic_id": owned.topic_id, "next_offset": new_offset}).close()
            except IntegrityError:
                raise OwnershipLost(partition) from None
            return
        cursor = _MOVE_OFFSET.execute(session.connection(), {
            "k_group": self.group_id, "k_topic": partition.topic, "k_partition": partition.partition,
            "k_stored_topic_id": owned.stored_topic_id, "k_stored_offset": owned.next_offset,
            "k_topic_id": owned.topic_id, "k_new_offset": new_offset})
        moved = cursor.rowcount
        cursor.close()
        if moved != 1:
            raise OwnershipLost(partition)

    def _dead_letter(self, failures: list[_Failure]) -> None:
        """Publish failures before the offsets that skip them commit: none can be lost."""
        if not failures:
            return
        producer = self._producer
        assert producer is not None
        futures = []
        for failure in failures:
            record = failure.record
            log.error("%s: dead-lettering %s[%d]@%d (%s): %s", self.name, record.topic, record.partition,
                      record.offset, failure.stage, failure.reason)
            futures.append(producer.send(
                self._dead_letter_topic, key=record.key, value=record.value,
                headers=[("original_topic", record.topic.encode()),
                         ("original_partition", str(record.partition).encode()),
                         ("original_offset", str(record.offset).encode()),
                         ("consumer_group", self.group_id.encode()),
                         ("stage", failure.stage.encode()),
                         ("reason", failure.reason[:1000].encode()),
                         ("detail", failure.detail[-4000:].encode())]))
            self.stats.last_errors = ([*self.stats.last_errors, failure.reason])[-10:]
        producer.flush()
        for future in futures:
            future.get(timeout=0)


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    # Runs on the consumer's IO loop, beside heartbeats: one indexed SELECT and some seeks, no more.
    def __init__(self, runner: ConsumerRunner) -> None:
        self._runner = runner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._runner._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._runner._on_assigned(assigned)
