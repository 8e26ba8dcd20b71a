"""Simulated guests (fakes) for the ``fake`` compute driver: ``trove-es fake-guests``.

No database server runs. The fleet watches the fake compute's servers and keeps one simulated guest
per live server (ACTIVE, REBOOT or RESIZE). Each guest reads its command topic and answers as a
guest agent would, on the conductor topic, using the real guest protocol:

- ``prepare``: status BUILDING, then after ``action_delay_s`` HEALTHY and an ok result;
- ``restart`` and ``resize_flavor``: RESTARTING, then HEALTHY and an ok result;
- ``resize_volume``: an ok result; ``stop``: SHUTDOWN and an ok result;
- ``backup``: a small simulated dump stored through the guest's own backup stream (a file, or a signed
  URL unsealed with the guest's key), one progress report, and an ok result with the true size and
  checksum of what was stored;
- ``prepare`` that restores a backup: its source is fetched and verified as a guest agent verifies it
  (size, checksum, gzip), and a missing or corrupt backup fails the prepare with the agent's own message;
- a heartbeat with its current status every ``report_interval_s`` once prepared.

Failures to inject, by instance name: a guest whose name contains ``never_healthy_marker`` (by default
``fake-never-healthy``) answers ``prepare`` with BUILDING and then nothing, like a guest agent that
hangs installing its datastore, so the task manager's build timeout fires; one whose name contains
``fake-prepare-fails`` reports FAILED and a failed result with its traceback, like a guest agent whose
datastore did not install; one whose name contains ``fake-backup-miscounts`` reports one byte more than
it stored for every backup, like a guest whose upload was cut short after it counted.

One Kafka consumer serves the whole fleet (manually assigned to every live guest's topic) rather than
one per guest. Each guest's status and next command offset are kept in ``fake_guests``; the offset
moves only when a command is fully answered, so a restarted fleet answers an interrupted command again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import BigInteger, Column, Engine, Float, MetaData, String, Table, delete, select

from adapters.compute.fake import FakeCompute
from adapters.kafka.topics import UNKNOWN_TOPIC_OR_PARTITION, admin_client, ensure_topic, refresh_metadata_promptly
from adapters.secret_files import guest_secret
from adapters.settings import Settings
from adapters.sql.engine import read_only
from adapters.sql.schema import create_tables
from domain import guest_protocol as protocol
from domain.statuses import SERVER_ACTIVE, SERVER_REBOOT, SERVER_RESIZE, ServiceStatus
from guest.backup_stream import CHUNK, opened, opened_restore, verified_backup, write_backup
from guest.datastore.base import DatastoreError
from projections.upsert import upsert_statement

log = logging.getLogger(__name__)

NEVER_HEALTHY_MARKER = "fake-never-healthy"
PREPARE_FAILS_MARKER = "fake-prepare-fails"
BACKUP_MISCOUNTS_MARKER = "fake-backup-miscounts"
PREPARE_FAILURE = "The datastore could not be installed: the simulated guest fails its prepare, as its name asks."
_LIVE = frozenset({SERVER_ACTIVE, SERVER_REBOOT, SERVER_RESIZE})

metadata = MetaData()

fake_guests = Table(
    "fake_guests",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("service_status", String(64), nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)

NEW, BUILDING, HEALTHY, FAILED = (ServiceStatus.NEW.description, ServiceStatus.BUILDING.description,
                                  ServiceStatus.HEALTHY.description, ServiceStatus.FAILED.description)
RESTARTING, SHUTDOWN = ServiceStatus.RESTARTING.description, ServiceStatus.SHUTDOWN.description


@dataclass
class SimulatedGuest:
    instance_id: str
    name: str
    topic: str
    status: str = NEW
    committed: int = 0  # next command offset, once everything before it is answered
    never_healthy: bool = False
    prepare_fails: bool = False
    backup_miscounts: bool = False
    queue: deque[tuple[int, bytes]] = field(default_factory=deque)
    pending: tuple[float, Callable[[], None]] | None = None  # (due, finish) of the command in hand
    next_heartbeat: float = 0.0
    attached_at: float = 0.0
    settled: bool = False  # read by the settled consumer (long fetch parks) rather than the newcomers'


SETTLE_AFTER_S = 3.0  # a guest's first seconds (its prepare) are read with short fetch parks
TOPIC_RECHECK_S = 1.0  # a server whose topic was missing is looked at again this often, not every scan


class FakeGuestFleet:
    def __init__(self, *, compute: FakeCompute, engine: Engine, bootstrap_servers: str, guest_prefix: str,
                 conductor_topic: str, conductor_partitions: int = 1, report_interval_s: float = 10.0,
                 action_delay_s: float = 0.0, never_healthy_marker: str | None = NEVER_HEALTHY_MARKER,
                 scan_s: float = 0.05, clock: Callable[[], float] = time.time, secret: bytes) -> None:
        """``secret``: the deployment's guest secret; each guest signs with, and believes only, its instance's key."""
        self._secret = secret
        self._compute = compute
        self._engine = engine
        self._reader = read_only(engine)  # polls and lookups: on SQLite they need not queue behind writers
        self._bootstrap = bootstrap_servers
        self._prefix = guest_prefix
        self._conductor_topic = conductor_topic
        self._conductor_partitions = conductor_partitions
        self.report_interval_s = report_interval_s
        self.action_delay_s = action_delay_s
        self.never_healthy_marker = never_healthy_marker
        self._scan_s = scan_s
        self._clock = clock
        self._stop = threading.Event()
        self.guests: dict[str, SimulatedGuest] = {}
        # Servers seen without a command topic (a broker restarted empty, a task manager that has not
        # created it yet), by when to look again: describing them every scan was most of an idle fleet.
        self._topic_missing: dict[str, float] = {}
        self._producer: KafkaProducer | None = None
        self._unflushed = False  # something sent since the last flush
        create_tables(engine, metadata)

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> FakeGuestFleet:
        return cls(compute=FakeCompute.from_settings(settings, engine), engine=engine,
                   bootstrap_servers=settings.kafka_bootstrap_servers, guest_prefix=settings.topics.guest_prefix,
                   conductor_topic=settings.topics.conductor, conductor_partitions=settings.conductor_partitions,
                   report_interval_s=settings.report_interval_s, action_delay_s=settings.fake_compute_delay_s,
                   secret=guest_secret(settings.data_dir))

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        with admin_client(self._bootstrap) as admin:
            ensure_topic(admin, self._conductor_topic, self._conductor_partitions)
        admin = KafkaAdminClient(bootstrap_servers=self._bootstrap, client_id="trove-es-fake-guests-admin")
        # Two readers. A partition assigned while a fetch is parked on the broker is first read when that
        # fetch returns, so a guest's first commands go through short parks (newcomers). Once settled, a
        # guest moves to long parks: the broker answers those as soon as a command arrives, and hundreds
        # of guest topics fetched fifty times a second were most of the fleet's time.
        newcomers, settled = (
            KafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None,
                          allow_auto_create_topics=False, client_id=f"trove-es-fake-guests-{role}",
                          fetch_max_wait_ms=park_ms,
                          # One broker whose leader never moves: guest topics' metadata need not be fresh.
                          metadata_max_age_ms=30_000)
            for role, park_ms in (("newcomers", 20), ("settled", 500)))
        refresh_metadata_promptly(newcomers)  # each new guest's topic is one it has not met
        # One in-flight request keeps a guest's heartbeat ahead of the result that follows it.
        self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=0,
                                       max_in_flight_requests_per_connection=1, allow_auto_create_topics=False,
                                       client_id="trove-es-fake-guests")
        next_scan = 0.0
        try:
            while not self._stop.is_set():
                now = self._clock()
                if now >= next_scan:
                    self._scan(admin, newcomers, settled)
                    next_scan = now + self._scan_s
                polled = False
                for consumer in (settled, newcomers):  # the settled one without waiting, then the newcomers
                    if consumer.assignment():
                        wait_ms = 20 if consumer is newcomers or not newcomers.assignment() else 0
                        self._queue(consumer.poll(timeout_ms=wait_ms))
                        polled = True
                if not polled:
                    self._stop.wait(0.05)
                now = self._clock()
                for guest in list(self.guests.values()):
                    self._progress(guest, now)
                if self._unflushed:
                    self._producer.flush(timeout=10)
                    self._unflushed = False
        finally:
            newcomers.close(autocommit=False)
            settled.close(autocommit=False)
            self._producer.close(timeout=5)
            admin.close()

    # Which guests run ---------------------------------------------------------------------------------

    def _queue(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for partition, records in batch.items():
            guest = self._by_topic(partition.topic)
            if guest is not None:
                guest.queue.extend((r.offset, r.value) for r in records)

    def _scan(self, admin: KafkaAdminClient, newcomers: KafkaConsumer, settled: KafkaConsumer) -> None:
        live = {instance_id: name for instance_id, (name, status) in self._compute.server_names_by_status().items()
                if status in _LIVE}
        changed = False
        for instance_id in set(self.guests) - set(live):
            del self.guests[instance_id]
            with self._engine.begin() as connection:
                connection.execute(delete(fake_guests).where(fake_guests.c.instance_id == instance_id))
            changed = True
        now = self._clock()
        for instance_id in [i for i in self._topic_missing if i not in live]:
            del self._topic_missing[instance_id]
        waiting = [i for i in live if i not in self.guests and self._topic_missing.get(i, 0.0) <= now]
        ready = set(self._topics_ready(admin, waiting))
        self._topic_missing.update((i, now + TOPIC_RECHECK_S) for i in waiting if i not in ready)
        new_partitions = []
        for instance_id in ready:
            self._topic_missing.pop(instance_id, None)
            name = live[instance_id]
            guest = SimulatedGuest(instance_id, name, self._topic(instance_id),
                                   never_healthy=bool(self.never_healthy_marker and self.never_healthy_marker in name),
                                   prepare_fails=PREPARE_FAILS_MARKER in name,
                                   backup_miscounts=BACKUP_MISCOUNTS_MARKER in name)
            with self._reader.connect() as connection:
                row = connection.execute(select(fake_guests)
                                         .where(fake_guests.c.instance_id == instance_id)).first()
            if row is not None:
                guest.status, guest.committed = row.service_status, row.next_offset
            guest.attached_at = self._clock()
            self.guests[instance_id] = guest
            log.debug("guest %s attached at offset %d (status %s)", instance_id, guest.committed, guest.status)
            new_partitions.append((TopicPartition(guest.topic, 0), guest.committed))
            changed = True
        now = self._clock()
        moved = []
        for guest in self.guests.values():
            if not guest.settled and now - guest.attached_at >= SETTLE_AFTER_S:
                partition = TopicPartition(guest.topic, 0)
                # Where the newcomers left off: what they returned is in the guest's queue already.
                moved.append((partition, newcomers.position(partition)))
                guest.settled = changed = True
        if changed:
            newcomers.assign([TopicPartition(g.topic, 0) for g in self.guests.values() if not g.settled])
            settled.assign([TopicPartition(g.topic, 0) for g in self.guests.values() if g.settled])
            # Partitions each consumer kept from before keep their positions.
            for partition, offset in new_partitions:
                newcomers.seek(partition, offset)
            for partition, offset in moved:
                settled.seek(partition, offset)

    def _topics_ready(self, admin: KafkaAdminClient, instance_ids: list[str]) -> list[str]:
        """Those of ``instance_ids`` whose command topic exists (the task manager creates it)."""
        if not instance_ids:
            return []
        by_topic = {self._topic(i): i for i in instance_ids}
        ready = []
        for described in admin.describe_topics(list(by_topic)):
            if described["name"] in by_topic and described["error_code"] != UNKNOWN_TOPIC_OR_PARTITION \
                    and not described["error_code"] and described.get("partitions"):
                ready.append(by_topic[described["name"]])
        return ready

    def _topic(self, instance_id: str) -> str:
        return f"{self._prefix}{instance_id}"

    def _by_topic(self, topic: str) -> SimulatedGuest | None:
        return self.guests.get(topic[len(self._prefix):]) if topic.startswith(self._prefix) else None

    # What a guest does ----------------------------------------------------------------------------------

    def _progress(self, guest: SimulatedGuest, now: float) -> None:
        if guest.pending is not None and now >= guest.pending[0]:
            finish, guest.pending = guest.pending[1], None
            finish()
        while guest.pending is None and guest.queue:
            offset, raw = guest.queue.popleft()
            self._handle(guest, offset, raw)
        if guest.status != NEW and now >= guest.next_heartbeat:
            self._heartbeat(guest)

    def _handle(self, guest: SimulatedGuest, offset: int, raw: bytes) -> None:
        try:
            command = protocol.parse_command(raw, self._key(guest))
        except protocol.GuestProtocolError as exc:
            log.error("guest %s: ignoring malformed command at offset %d: %s", guest.instance_id, offset, exc)
            self._commit(guest, offset)
            return
        method = command.method
        log.debug("guest %s: %s (request %s, offset %d)", guest.instance_id, method, command.request_id, offset)

        def answer(status: str | None = None) -> Callable[[], None]:
            def finish() -> None:
                if status is not None:
                    self._set_status(guest, status)
                self._result(guest, command)
                self._commit(guest, offset)
            return finish

        if method == protocol.PREPARE:
            if guest.status == HEALTHY:  # a prepare repeated after a task manager crash
                answer()()
                return
            self._set_status(guest, BUILDING)
            if guest.prepare_fails:
                self._later(guest, lambda: self._fail_prepare(guest, command, offset, PREPARE_FAILURE))
                return
            restore = command.args.get("restore")
            unrestorable = None if restore is None else _restore_failure(restore, self._key(guest))
            if unrestorable is not None:
                self._later(guest, lambda: self._fail_prepare(guest, command, offset, unrestorable))
                return
            if guest.never_healthy:
                log.info("guest %s (%s) will never become healthy, as its name asks", guest.instance_id, guest.name)
                self._commit(guest, offset)
                return
            self._later(guest, answer(HEALTHY))
        elif method in (protocol.RESTART, protocol.RESIZE_FLAVOR):
            self._set_status(guest, RESTARTING)
            self._later(guest, answer(HEALTHY))
        elif method == protocol.RESIZE_VOLUME:
            self._later(guest, answer())
        elif method == protocol.STOP:
            answer(SHUTDOWN)()
        elif method == protocol.BACKUP:
            self._later(guest, lambda: self._backup(guest, command, offset))

    def _later(self, guest: SimulatedGuest, finish: Callable[[], None]) -> None:
        if self.action_delay_s <= 0:
            finish()
        else:
            guest.pending = (self._clock() + self.action_delay_s, finish)

    def _set_status(self, guest: SimulatedGuest, status: str) -> None:
        guest.status = status
        self._heartbeat(guest)

    def _heartbeat(self, guest: SimulatedGuest) -> None:
        now = self._clock()
        self._send(guest, protocol.Heartbeat(guest.instance_id, guest.status, now).to_json())
        guest.next_heartbeat = now + self.report_interval_s

    def _fail_prepare(self, guest: SimulatedGuest, command: protocol.GuestCommand, offset: int, message: str) -> None:
        # The result first, on the same partition: the build fails with the guest's own message and
        # traceback, not only with the status it ends in.
        self._fail(guest, command, message)
        self._set_status(guest, FAILED)
        self._commit(guest, offset)

    def _backup(self, guest: SimulatedGuest, command: protocol.GuestCommand, offset: int) -> None:
        dump = f"-- trove-es simulated backup {command.args['backup_id']} of {guest.instance_id}\n".encode()
        try:
            size, checksum = write_backup(opened(command.args["target"], self._key(guest)),
                                          lambda out: out.write(dump))
        except Exception as exc:  # whatever one guest's storage does, the fleet's other guests go on
            self._fail(guest, command, str(exc) if isinstance(exc, DatastoreError) else f"{type(exc).__name__}: {exc}")
        else:
            # A dump this small is stored before a guest's first report: one progress, then the result.
            self._send(guest, protocol.Progress(guest.instance_id, command.method, command.request_id, size,
                                                self._clock()).to_json())
            self._result(guest, command, {"size": size + (1 if guest.backup_miscounts else 0),
                                          "checksum": checksum})
        self._commit(guest, offset)

    def _key(self, guest: SimulatedGuest) -> bytes:
        return protocol.instance_key(self._secret, guest.instance_id)

    def _fail(self, guest: SimulatedGuest, command: protocol.GuestCommand, message: str) -> None:
        self._send(guest, protocol.Result(guest.instance_id, command.method, command.request_id, False,
                                          self._clock(), message=message, traceback=(
                                              "Traceback (most recent call last):",
                                              f'  File "guest/datastore/manager.py", line 1, in {command.method}',
                                              f"GuestError: {message}")).to_json())

    def _result(self, guest: SimulatedGuest, command: protocol.GuestCommand,
                details: dict[str, Any] | None = None) -> None:
        self._send(guest, protocol.Result(guest.instance_id, command.method, command.request_id, True,
                                          self._clock(), details=details or {}).to_json())

    def _send(self, guest: SimulatedGuest, value: bytes) -> None:
        assert self._producer is not None
        signed = protocol.signed(value, self._key(guest))
        self._producer.send(self._conductor_topic, key=guest.instance_id.encode(), value=signed)
        self._unflushed = True

    def _commit(self, guest: SimulatedGuest, offset: int) -> None:
        # The answer must be on the broker before the command counts as done, or a crash loses it.
        assert self._producer is not None
        self._producer.flush(timeout=10)
        self._unflushed = False
        guest.committed = offset + 1
        with self._engine.begin() as connection:
            connection.execute(upsert_statement(connection, fake_guests, ["instance_id"],
                                                ["service_status", "next_offset", "updated_at"]),
                               [{"instance_id": guest.instance_id, "service_status": guest.status,
                                 "next_offset": guest.committed, "updated_at": self._clock()}])


def _restore_failure(restore: dict[str, Any], key: bytes) -> str | None:
    """Why the backup cannot be restored, as a guest agent would say it; None when it is sound."""
    try:
        with verified_backup(opened_restore(restore, key)) as dump:
            while dump.read(CHUNK):  # to its end: a stored object that is not gzip fails here
                pass
    except Exception as exc:  # as a guest agent reports it; the fleet's other guests go on
        return str(exc) if isinstance(exc, DatastoreError) else f"{type(exc).__name__}: {exc}"
    return None
