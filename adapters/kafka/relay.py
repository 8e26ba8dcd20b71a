"""The relay: tails the event store's notification log and publishes each event on Kafka.

Guarantees, and how:
- *No gap.* The store's notification ids are assigned in commit order (the library serialises
  writers), the relay reads them in order and saves its position only after the broker has
  acknowledged everything up to it. A crash resends from the saved position; consumers drop the
  repeats by ``(aggregate_id, version)``.
- *Per-aggregate order.* Messages are keyed by aggregate id, so one aggregate lives in one
  partition; the idempotent producer keeps the order of retried sends within it.
- *Survives losing the broker.* The saved position names the topic incarnation (its topic id).
  A topic that is new, or recreated empty by a restarted in-memory broker, has another id, so the
  relay republishes from the start of the store.
- *One relay at a time.* Publishing needs a lease (advisory lock or file lock); a second relay
  waits until the first one stops.
- *Tamper evidence.* Before it publishes an event the relay chains it (``adapters.sql.event_chain``):
  the link is recorded in the store's database and the published event carries it (``chain``). The
  chain is caught up first, from where it stands, so it covers the whole log, in its order.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from eventsourcing.application import Application
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import Engine, select

from adapters.event_store import log_batches
from adapters.kafka.lease import acquire
from adapters.kafka.topics import TopicUnavailable, admin_client, ensure_topic, topic_id
from adapters.sql.event_chain import SqlEventChain, stored_event
from adapters.sql.schema import create_tables
from adapters.sql.tracking import relay_positions, tracking_metadata
from domain.public_events import to_public_event
from projections.upsert import upsert_statement
from services.ports import Lease, LeaseLost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayPosition:
    topic_id: str
    notification_id: int


class RelayPositionStore:
    """The relay's durable position, kept in the event store's own database."""

    def __init__(self, engine: Engine, relay_name: str, topic: str) -> None:
        self._engine = engine
        self._name = relay_name
        self._topic = topic
        create_tables(engine, tracking_metadata, [relay_positions])

    def load(self) -> RelayPosition | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(relay_positions.c.topic_id, relay_positions.c.notification_id)
                .where(relay_positions.c.relay_name == self._name)).first()
        return RelayPosition(row.topic_id, row.notification_id) if row else None

    def save(self, position: RelayPosition) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                upsert_statement(connection, relay_positions, ["relay_name"],
                                 ["topic", "topic_id", "notification_id"]),
                {"relay_name": self._name, "topic": self._topic, "topic_id": position.topic_id,
                 "notification_id": position.notification_id})


class Relay:
    """Publishes the store's notification log to the events topic, in order, without gaps."""

    def __init__(
        self,
        *,
        application: Application,
        positions: RelayPositionStore,
        lease: Lease,
        bootstrap_servers: str,
        topic: str,
        partitions: int,
        batch_size: int = 1000,
        idle_sleep_s: float = 0.02,
        topic_check_interval_s: float = 2.0,
        lease_check_interval_s: float = 1.0,
        position_save_interval_s: float = 0.25,
        name: str = "trove",
        on_batch: Callable[[int], None] | None = None,
        chain: SqlEventChain | None = None,
    ) -> None:
        self._app = application
        self._chain = chain
        self._positions = positions
        self._lease = lease
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._partitions = partitions
        self._batch_size = batch_size
        self._idle_sleep_s = idle_sleep_s
        self._topic_check_interval_s = topic_check_interval_s
        self._lease_check_interval_s = lease_check_interval_s
        self._position_save_interval_s = position_save_interval_s
        self._name = name
        self._on_batch = on_batch
        self._stop = threading.Event()
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self.published = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Publish until ``stop()``; transient broker errors are retried with backoff."""
        if not acquire(self._lease, f"relay {self._name}", self._stop.is_set):
            return
        try:
            backoff = 0.2
            while not self._stop.is_set():
                try:
                    self._publish_until_stopped()
                except (KafkaError, TopicUnavailable, OSError) as exc:
                    log.warning("broker unavailable (%s); retrying in %.1fs from the saved position",
                                exc, backoff)
                    self._close_producer()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                else:
                    backoff = 0.2
        finally:
            self._close_producer()
            self._lease.release()

    def _publish_until_stopped(self) -> None:
        self._catch_up_chain()
        current_topic_id = self._ensure_topic()
        position = self._starting_position(current_topic_id)
        self._producer = self._producer or self._new_producer()
        topic_checked = lease_checked = saved_at = time.monotonic()
        saved = position
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now - lease_checked >= self._lease_check_interval_s:
                    self._lease.check()
                    lease_checked = now
                if now - topic_checked >= self._topic_check_interval_s:
                    if self._current_topic_id() != current_topic_id:
                        log.warning("topic %s was recreated; republishing from the start of the store", self._topic)
                        return
                    topic_checked = now
                notifications = self._app.recorder.select_notifications(
                    start=position.notification_id, limit=self._batch_size, inclusive_of_start=False)
                if notifications:
                    self._publish(notifications)
                    position = RelayPosition(current_topic_id, notifications[-1].id)
                    self.published += len(notifications)
                    if self._on_batch:
                        self._on_batch(position.notification_id)
                # Saved once caught up, after a full batch (a backlog: a crash then resends one batch at
                # most), and otherwise every few hundred ms. Consumers drop the repeats a crash resends, so
                # a position a little behind costs a few duplicates; a save per small batch cost a
                # transaction per batch under load.
                due = (not notifications or len(notifications) >= self._batch_size
                       or now - saved_at >= self._position_save_interval_s)
                if position != saved and due:
                    self._positions.save(position)
                    saved, saved_at = position, now
                if not notifications:
                    if self._chain is not None:
                        self._chain.checkpoint(only_if_due=True)
                    self._stop.wait(self._idle_sleep_s)
        finally:
            if position != saved:
                with contextlib.suppress(Exception):  # the next start resends from the older position
                    self._positions.save(position)

    def _catch_up_chain(self) -> None:
        """Chain what the store holds beyond the chain (a store from before the chain, or written while no
        relay ran), whatever the publishing position: the chain covers the whole log."""
        if self._chain is None:
            return
        position, chained, batches = self._chain.last_position, 0, 0
        for notifications in log_batches(self._app.recorder, position, self._batch_size):
            if self._stop.is_set():
                break
            self._chain.extend([stored_event(n) for n in notifications])
            position, chained, batches = notifications[-1].id, chained + len(notifications), batches + 1
            if batches % 50 == 0:
                log.info("chained %d events of the store so far, up to position %d", chained, position)
        if chained:
            log.info("chained %d events the chain did not cover yet, up to position %d", chained, position)

    def _publish(self, notifications: list) -> None:
        producer = self._producer
        assert producer is not None
        to_domain_event = self._app.mapper.to_domain_event
        links = {}
        if self._chain is not None:
            links = {link.position: link for link in self._chain.extend([stored_event(n) for n in notifications])}
        futures = []
        for notification in notifications:
            public = to_public_event(to_domain_event(notification))
            link = links.get(notification.id)
            if link is not None:
                public = replace(public, chain={"position": link.position, "hash": link.hash,
                                                "previous_hash": link.previous_hash})
            futures.append(producer.send(
                self._topic,
                key=public.aggregate_id.encode(),
                value=public.to_json(),
                headers=[("event_type", public.type.encode()),
                         ("notification_id", str(notification.id).encode())]))
        producer.flush()
        for future in futures:
            if future.failed():
                raise future.exception
            if not future.is_done:
                raise KafkaError("a send did not complete before flush returned")

    def _starting_position(self, current_topic_id: str) -> RelayPosition:
        saved = self._positions.load()
        if saved is None:
            log.info("relay %s starts publishing from the start of the store", self._name)
            return RelayPosition(current_topic_id, 0)
        if saved.topic_id != current_topic_id:
            log.warning("topic %s is new or was emptied (id %s, was %s); republishing every event",
                        self._topic, current_topic_id, saved.topic_id)
            return RelayPosition(current_topic_id, 0)
        log.info("relay %s resumes after notification %d", self._name, saved.notification_id)
        return saved

    def _ensure_topic(self) -> str:
        with admin_client(self._bootstrap) as admin:
            return ensure_topic(admin, self._topic, self._partitions)

    def _current_topic_id(self) -> str | None:
        # One admin client for the checks every few seconds: a new one each time costs a connection.
        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=10_000,
                                           client_id=f"trove-es-relay-{self._name}-admin")
        return topic_id(self._admin, self._topic)

    def _new_producer(self) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=f"trove-es-relay-{self._name}",
            acks="all",
            enable_idempotence=True,
            # The relay creates the topic with the configured partitions; never let a send do it.
            allow_auto_create_topics=False,
            linger_ms=5,
            batch_size=256 * 1024,
            max_block_ms=10_000,
            delivery_timeout_ms=30_000,
            request_timeout_ms=10_000,
        )

    def _close_producer(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # a dead broker must not stop the relay from retrying
                log.debug("closing the producer failed", exc_info=True)


__all__ = ["LeaseLost", "Relay", "RelayPosition", "RelayPositionStore"]
