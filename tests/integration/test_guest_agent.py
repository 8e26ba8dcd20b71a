"""The guest agent in-process against the real broker and a real PostgreSQL server.

Each test runs ``GuestAgent(config).run()`` in a thread, on topics of its own, with the real
PostgreSQLManager driving a server from this host's binaries, and reads what the agent reports from
the conductor topic as the conductor would (``parse_guest_message``, checking every signature).
The instance's directories are made under /tmp and opened to the ``postgres`` account, which cannot
pass through pytest's own temporary directories.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from adapters.compute.guest_channel import KafkaGuestChannel
from adapters.compute.local import kill_processes_under
from adapters.kafka.broker import EmbeddedBroker
from adapters.kafka.topics import admin_client, ensure_topic
from adapters.sealed import seal
from domain import guest_protocol as protocol
from domain.guest_protocol import GuestFault, GuestMessage, Heartbeat, Progress, Result
from domain.statuses import ServiceStatus
from guest.agent import GuestAgent
from guest.config import AgentState, GuestConfig
from guest.datastore import manager_for
from guest.datastore.postgresql import PostgreSQLManager, installed_versions
from tests.support.stack import wait_for

VERSION = "15"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(VERSION not in installed_versions(),
                       reason=f"no PostgreSQL {VERSION} binaries in /usr/lib/postgresql/{VERSION}/bin"),
]

SECRET = b"guest agent test deployment secret"
APP_PASSWORD = "app-Pa55word-9f3c-never-shown"
REPORT_INTERVAL_S = 0.5
BOUND_S = 60.0  # generous: only stops a hung test
MIB = 1024 ** 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Conductor:
    """What the agent sent to the conductor topic, read in order and checked as the conductor would."""

    def __init__(self, bootstrap: str, topic: str, instance_id: str, key: bytes) -> None:
        self._instance_id = instance_id
        self._key = key
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       allow_auto_create_topics=False)
        partition = TopicPartition(topic, 0)
        self._consumer.assign([partition])
        self._consumer.seek_to_beginning(partition)
        self.messages: list[GuestMessage] = []

    def _key_for(self, instance_id: str) -> bytes | None:
        return self._key if instance_id == self._instance_id else None

    def poll(self) -> list[GuestMessage]:
        for records in self._consumer.poll(timeout_ms=200).values():
            for record in records:
                assert record.key == self._instance_id.encode()
                self.messages.append(protocol.parse_guest_message(record.value, self._key_for))
        return self.messages

    def results(self, request_id: str) -> list[Result]:
        return [m for m in self.poll() if isinstance(m, Result) and m.request_id == request_id]

    def result(self, request_id: str, timeout: float = BOUND_S) -> Result:
        wait_for(lambda: bool(self.results(request_id)), timeout, f"the result of request {request_id}")
        (only,) = self.results(request_id)
        return only

    def heartbeats(self, since: int = 0) -> list[str]:
        return [m.service_status for m in self.poll()[since:] if isinstance(m, Heartbeat)]

    def faults(self, since: int = 0) -> list[GuestFault]:
        return [m for m in self.poll()[since:] if isinstance(m, GuestFault)]

    def wait_for_heartbeats(self, status: ServiceStatus | tuple[ServiceStatus, ...], count: int = 1,
                            since: int = 0, timeout: float = BOUND_S) -> None:
        wanted = {s.description for s in (status if isinstance(status, tuple) else (status,))}
        wait_for(lambda: sum(s in wanted for s in self.heartbeats(since)) >= count, timeout,
                 f"{count} heartbeat(s) {sorted(wanted)} (seen: {self.heartbeats(since)[-10:]})")

    def close(self) -> None:
        self._consumer.close()


@dataclass
class Guest:
    """One instance: its directories, its topics, its agent (in a thread) and what it reports."""

    broker: EmbeddedBroker
    root: Path
    config: GuestConfig
    channel: KafkaGuestChannel
    conductor: Conductor
    threads: list[tuple[GuestAgent, threading.Thread, list[BaseException]]] = field(default_factory=list)

    @property
    def instance_id(self) -> str:
        return self.config.instance_id

    @property
    def key(self) -> bytes:
        return self.config.key

    def start_agent(self) -> GuestAgent:
        agent = GuestAgent(self.config)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                agent.run()
            except BaseException as exc:  # surfaced by stop_agent and by the checks
                errors.append(exc)
                raise

        thread = threading.Thread(target=run, name=f"guest-agent-{self.instance_id}", daemon=True)
        thread.start()
        self.threads.append((agent, thread, errors))
        return agent

    def stop_agent(self) -> None:
        """Stop the latest agent and wait for it (it stops its database on the way out)."""
        agent, thread, errors = self.threads[-1]
        agent.stop()
        thread.join(BOUND_S + 60)
        assert not thread.is_alive(), "the agent did not stop"
        assert not errors, f"the agent's loop raised: {errors!r}"

    def agent_alive(self) -> bool:
        return self.threads[-1][1].is_alive()

    def send(self, method: str, request_id: str | None = None, **args: Any) -> str:
        request_id = request_id or f"req-{uuid.uuid4().hex[:12]}"
        self.channel.send(protocol.command(method, self.instance_id, request_id, time.time(), **args))
        return request_id

    def prepare(self, *, version: str = VERSION, password: str = APP_PASSWORD,
                request_id: str | None = None, restore: dict[str, Any] | None = None) -> str:
        request_id = request_id or f"prepare-{uuid.uuid4().hex[:12]}"
        self.channel.send(protocol.prepare(
            self.instance_id, request_id, time.time(), datastore="postgresql", datastore_version=version,
            databases=["appdb"], users=[{"name": "app", "host": "%", "databases": ["appdb"]}], volume_size=1,
            passwords={"app@%": seal(protocol.instance_key(SECRET, self.instance_id), password)}, restore=restore))
        return request_id

    def manager(self) -> Any:
        state = AgentState.load(self.config.state_file)
        return manager_for("postgresql", self.config.layout(state), VERSION)

    def connect_app(self, password: str = APP_PASSWORD) -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.config.port, user="app", password=password,
                               dbname="appdb", connect_timeout=3, autocommit=True)

    def postmaster_pid(self) -> int:
        return int((self.config.volume / "data" / "postmaster.pid").read_text().split("\n", 1)[0])

    def offset(self) -> int:
        return AgentState.load(self.config.state_file).next_offset


def _kill_processes_working_in(root: Path) -> None:
    """The server's children (``postgres: checkpointer`` …) do not name the directory; they work in it."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == root or root in cwd.parents:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture
def guest(broker: EmbeddedBroker) -> Iterator[Guest]:
    with running_guest(broker) as running:
        yield running


@pytest.fixture
def other_guest(broker: EmbeddedBroker) -> Iterator[Guest]:
    with running_guest(broker) as running:
        yield running


@contextlib.contextmanager
def running_guest(broker: EmbeddedBroker) -> Iterator[Guest]:
    tag = uuid.uuid4().hex[:8]
    instance_id = f"inst-{tag}"
    prefix = f"test-{tag}.guest."
    conductor_topic = f"test-{tag}.conductor"
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="guest-agent-"))
    root.chmod(0o755)
    with admin_client(broker.bootstrap_servers) as admin:
        ensure_topic(admin, conductor_topic, 1)
    channel = KafkaGuestChannel(broker.bootstrap_servers, prefix, SECRET)
    channel.ensure(instance_id)
    with admin_client(broker.bootstrap_servers) as admin:
        ensure_topic(admin, channel.topic(instance_id), 1)  # every partition has a leader before the agent reads
    config = GuestConfig(
        instance_id=instance_id, kafka_bootstrap_servers=broker.bootstrap_servers,
        command_topic=channel.topic(instance_id), conductor_topic=conductor_topic,
        key_hex=protocol.instance_key(SECRET, instance_id).hex(), volume=root / "volume", run_dir=root / "run",
        port=free_port(), memory_mb=256, volume_size_gb=None, report_interval_s=REPORT_INTERVAL_S)
    conductor = Conductor(broker.bootstrap_servers, conductor_topic, instance_id, config.key)
    running = Guest(broker, root, config, channel, conductor)
    try:
        yield running
    finally:
        for agent, _, _ in running.threads:
            agent.stop()
        for _, thread, _ in running.threads:
            thread.join(BOUND_S + 60)
        with contextlib.suppress(Exception):
            if (config.volume / "data" / "PG_VERSION").is_file():
                running.manager().stop()
        kill_processes_under(root)
        _kill_processes_working_in(root)
        conductor.close()
        channel.remove(instance_id)
        channel.close()
        with admin_client(broker.bootstrap_servers) as admin, contextlib.suppress(Exception):
            admin.delete_topics([conductor_topic])
        shutil.rmtree(root, ignore_errors=True)


def _wait(condition: Callable[[], bool], what: str, guest: Guest, timeout: float = BOUND_S) -> None:
    def checked() -> bool:
        if guest.threads and not guest.agent_alive():
            raise AssertionError(f"the agent stopped while waiting for {what}: {guest.threads[-1][2]!r}")
        return condition()

    wait_for(checked, timeout, what)


# ---------------------------------------------------------------------------------------------------------


def test_prepare_reports_building_then_healthy_and_the_user_works_until_the_server_is_killed(guest: Guest) -> None:
    guest.start_agent()
    request_id = guest.prepare()
    result = guest.conductor.result(request_id, timeout=120)
    assert result.ok, f"prepare failed: {result.message}\n" + "\n".join(result.traceback)
    assert result.method == protocol.PREPARE and result.instance_id == guest.instance_id

    # BUILDING before the result, the probed HEALTHY after it.
    messages = guest.conductor.poll()
    at = messages.index(result)
    before = [m.service_status for m in messages[:at] if isinstance(m, Heartbeat)]
    assert before == [ServiceStatus.BUILDING.description, ServiceStatus.HEALTHY.description], before
    guest.conductor.wait_for_heartbeats(ServiceStatus.HEALTHY, count=3, since=at + 1)
    assert set(guest.conductor.heartbeats(at + 1)) == {ServiceStatus.HEALTHY.description}
    healthy = [m for m in messages if isinstance(m, Heartbeat) and m.status is ServiceStatus.HEALTHY]
    assert all(m.volume_used_bytes and m.volume_used_bytes > MIB for m in healthy), "the volume is measured"

    # The user prepare created connects with the password sealed for the guest, and uses its database.
    with guest.connect_app() as connection:
        connection.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        connection.execute("INSERT INTO notes VALUES (1, 'hello')")
        assert connection.execute("SELECT body FROM notes").fetchall() == [("hello",)]
        assert connection.execute("SELECT current_database(), current_user").fetchone() == ("appdb", "app")
    with pytest.raises(psycopg.OperationalError):
        guest.connect_app(password="not-the-password").close()
    assert APP_PASSWORD not in json.dumps([str(m) for m in guest.conductor.poll()])

    # The heartbeats are probed: a server killed under the agent is reported as not running.
    killed_at = len(guest.conductor.poll())
    os.kill(guest.postmaster_pid(), signal.SIGKILL)
    guest.conductor.wait_for_heartbeats((ServiceStatus.CRASHED, ServiceStatus.SHUTDOWN), count=2, since=killed_at)
    later = guest.conductor.heartbeats(killed_at)
    # (A probe in the instant the postmaster is dying may still find it "running"; once down, it stays down.)
    first_down = next(i for i, s in enumerate(later)
                      if s in (ServiceStatus.CRASHED.description, ServiceStatus.SHUTDOWN.description))
    assert set(later[first_down:]) <= {ServiceStatus.CRASHED.description, ServiceStatus.SHUTDOWN.description}, later
    down = [m for m in guest.conductor.poll()[killed_at:] if isinstance(m, Heartbeat) and m.status in
            (ServiceStatus.CRASHED, ServiceStatus.SHUTDOWN)]
    assert all(m.volume_used_bytes is None for m in down), "only a healthy probe measures the volume"
    with pytest.raises(psycopg.OperationalError):
        guest.connect_app().close()


def test_a_failing_prepare_reports_the_guests_words_and_failed_to_spawn_without_the_password(guest: Guest) -> None:
    guest.start_agent()
    request_id = guest.prepare(version="16")
    result = guest.conductor.result(request_id)
    assert not result.ok
    assert "PostgreSQL 16 is not installed" in result.message, result.message
    assert result.traceback and any("DatastoreError" in line for line in result.traceback), result.traceback
    messages = guest.conductor.poll()
    at = messages.index(result)
    assert ServiceStatus.BUILDING.description in [m.service_status for m in messages[:at]
                                                  if isinstance(m, Heartbeat)]
    guest.conductor.wait_for_heartbeats(ServiceStatus.FAILED, since=at + 1, count=3)
    after = guest.conductor.heartbeats(at + 1)
    assert set(after) == {ServiceStatus.FAILED.description}, "a failed build keeps reporting it, never 'new'"
    for text in (result.message, *result.traceback):
        assert APP_PASSWORD not in text
    assert not (guest.config.volume / "data").exists(), "nothing was initialised"
    _wait(lambda: guest.offset() == 1, "the failed prepare to count as done", guest)


def test_commands_not_signed_with_the_instance_key_are_skipped_and_do_not_block_later_ones(guest: Guest) -> None:
    guest.start_agent()
    prepared = guest.prepare()
    assert guest.conductor.result(prepared, timeout=120).ok
    _wait(lambda: guest.offset() == 1, "the prepare to count as done", guest)
    pid = guest.postmaster_pid()

    other_key = protocol.instance_key(SECRET, "another-instance")
    forged = protocol.command(protocol.STOP, guest.instance_id, "forged-stop", time.time())
    unsigned = protocol.command(protocol.STOP, guest.instance_id, "unsigned-stop", time.time())
    elsewhere = protocol.command(protocol.STOP, "another-instance", "elsewhere-stop", time.time())
    producer = KafkaProducer(bootstrap_servers=guest.broker.bootstrap_servers, acks="all")
    try:
        for value in (protocol.signed(forged.to_json(), other_key),  # another instance's key
                      unsigned.to_json(),  # no signature at all
                      protocol.signed(elsewhere.to_json(), guest.key),  # signed, but for another instance
                      b"not json at all"):
            producer.send(guest.config.command_topic, key=guest.instance_id.encode(), value=value).get(timeout=15)
    finally:
        producer.close(timeout=5)
    # Skipped, and counted as done: an agent restarted now would not read them again.
    _wait(lambda: guest.offset() == 5, "the offset to move past the four skipped commands", guest)
    restarted = guest.send(protocol.RESTART)

    result = guest.conductor.result(restarted)
    assert result.ok, result.message
    assert result.method == protocol.RESTART
    for skipped in ("forged-stop", "unsigned-stop", "elsewhere-stop"):
        assert guest.conductor.results(skipped) == [], f"{skipped} was answered"
    _wait(lambda: guest.offset() == 6, "the offset to pass the restart", guest)
    # The restart happened (a new postmaster), and the forged stop did not leave the server down.
    assert guest.postmaster_pid() != pid
    at = guest.conductor.poll().index(result)
    guest.conductor.wait_for_heartbeats(ServiceStatus.HEALTHY, count=2, since=at + 1)
    with guest.connect_app() as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_a_restarted_agent_does_not_redo_answered_commands_and_starts_its_database_again(guest: Guest) -> None:
    guest.start_agent()
    prepared = guest.prepare()
    assert guest.conductor.result(prepared, timeout=120).ok
    restarted = guest.send(protocol.RESTART)
    assert guest.conductor.result(restarted).ok
    _wait(lambda: guest.offset() == 2, "both commands to count as done", guest)

    guest.stop_agent()
    assert guest.manager().status() is ServiceStatus.SHUTDOWN, "the agent's shutdown stops its database"
    assert AgentState.load(guest.config.state_file).next_offset == 2

    since = len(guest.conductor.poll())
    guest.start_agent()
    guest.conductor.wait_for_heartbeats(ServiceStatus.HEALTHY, count=2, since=since)
    with guest.connect_app() as connection:
        assert connection.execute("SELECT current_user").fetchone() == ("app",)
    # Commands are carried out in order: once a new one is answered, a redone old one would have been too.
    stopped = guest.send(protocol.STOP)
    assert guest.conductor.result(stopped).ok
    assert len(guest.conductor.results(prepared)) == 1, "prepare was done again"
    assert len(guest.conductor.results(restarted)) == 1, "restart was done again"
    _wait(lambda: guest.offset() == 3, "the stop to count as done", guest)
    guest.conductor.wait_for_heartbeats(ServiceStatus.SHUTDOWN, since=guest.conductor.poll().index(
        guest.conductor.results(stopped)[0]))


def test_a_full_volume_makes_the_server_refuse_writes_until_it_is_resized(guest: Guest,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("guest.agent.GIB", MIB)  # volume sizes in MiB: a volume fills in seconds
    guest.start_agent()
    prepared = guest.prepare()
    assert guest.conductor.result(prepared, timeout=120).ok
    used_mib = guest.manager().volume_used_bytes() // MIB
    limit = used_mib + 24
    assert guest.conductor.result(guest.send(protocol.RESIZE_VOLUME, new_size=limit)).ok
    assert not any(f.active for f in guest.conductor.faults()), "not full yet"
    filling = len(guest.conductor.poll())
    with guest.connect_app() as connection:
        connection.execute("CREATE TABLE t (id bigint, body text)")

    inserted = [0]

    def refused() -> bool:
        """One chunk of rows (about 2 MB) in a new session: True once the server refuses it as read-only."""
        assert inserted[0] < 100_000, f"{inserted[0]} rows (~{inserted[0] // 1000} MB) and still writable " \
                                      f"(limit {limit} MiB, used {guest.manager().volume_used_bytes() // MIB})"
        try:
            with guest.connect_app() as connection:
                connection.execute("INSERT INTO t SELECT g, repeat('x', 1000) "
                                   "FROM generate_series(%s::bigint, %s::bigint) g",
                                   (inserted[0] + 1, inserted[0] + 2000))
        except psycopg.Error as exc:
            if "read-only" in str(exc):
                return True
            raise
        inserted[0] += 2000
        return False

    _wait(refused, f"the server to refuse writes once the volume passes {limit} MiB", guest, timeout=90)
    assert inserted[0] > 0, "writes were refused before the volume filled"
    assert guest.manager().volume_used_bytes() >= limit * MIB
    with guest.connect_app() as connection:  # reads still work
        assert connection.execute("SELECT count(*) FROM t").fetchone() == (inserted[0],)
    # The conductor hears why: the guest raised its volume_full fault when it turned the server read-only.
    _wait(lambda: any(f.active for f in guest.conductor.faults(filling)), "the volume_full fault", guest)
    (raised,) = guest.conductor.faults(filling)
    assert raised.condition == protocol.VOLUME_FULL and "full" in raised.message and f"{limit} GB" in raised.message

    resized = guest.send(protocol.RESIZE_VOLUME, new_size=100_000)
    assert guest.conductor.result(resized).ok
    cleared = guest.conductor.faults(guest.conductor.poll().index(raised) + 1)
    assert [f.active for f in cleared] == [False], "the resize clears the fault, once"

    def writable() -> bool:
        try:
            with guest.connect_app() as connection:
                connection.execute("INSERT INTO t VALUES (0, 'room again')")
            return True
        except psycopg.errors.ReadOnlySqlTransaction:
            return False

    _wait(writable, "writes to be allowed again after the resize", guest)
    with guest.connect_app() as connection:
        assert connection.execute("SELECT body FROM t WHERE id = 0").fetchone() == ("room again",)


def test_a_backup_is_streamed_to_its_target_while_heartbeats_go_on_and_another_instance_restores_it(
        guest: Guest, other_guest: Guest, monkeypatch: pytest.MonkeyPatch) -> None:
    real_backup = PostgreSQLManager.backup

    def slow_backup(manager: PostgreSQLManager, out: Any) -> None:
        real_backup(manager, out)
        out.flush()  # what was dumped so far is stored, and reported as progress
        time.sleep(6 * REPORT_INTERVAL_S)  # a big database: the loop cannot beat until the command is done

    monkeypatch.setattr(PostgreSQLManager, "backup", slow_backup)
    guest.start_agent()
    assert guest.conductor.result(guest.prepare(), timeout=120).ok
    with guest.connect_app() as connection:
        connection.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        connection.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 3000) g")

    location = guest.root / "backups" / "b-1.gz"
    target = {"kind": "file", "location": str(location), "sealed_url": None}
    since = len(guest.conductor.poll())
    result = guest.conductor.result(guest.send(protocol.BACKUP, backup_id="b-1", target=target))
    assert result.ok, f"backup failed: {result.message}\n" + "\n".join(result.traceback)
    stored = location.read_bytes()
    assert result.details == {"size": len(stored), "checksum": f"sha256:{hashlib.sha256(stored).hexdigest()}"}
    during = guest.conductor.poll()[since:guest.conductor.poll().index(result)]
    assert [m.service_status for m in during if isinstance(m, Heartbeat)].count(
        ServiceStatus.HEALTHY.description) >= 3, "heartbeats went on during the backup"
    progress = [m for m in during if isinstance(m, Progress)]
    assert len(progress) == 1, "progress is reported beside heartbeats, and only when there is news"
    assert progress[0].request_id == result.request_id and 0 < progress[0].stored_bytes <= len(stored)

    other_guest.start_agent()
    restore = {"backup_id": "b-1", "source": target, **result.details}
    restored = other_guest.conductor.result(other_guest.prepare(restore=restore), timeout=120)
    assert restored.ok, f"prepare with restore failed: {restored.message}\n" + "\n".join(restored.traceback)
    with other_guest.connect_app() as connection:
        assert connection.execute("SELECT count(*), max(id) FROM notes").fetchone() == (3000, 3000)
        assert connection.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'").fetchone() == (
            "app",)
    other_guest.conductor.wait_for_heartbeats(ServiceStatus.HEALTHY, since=other_guest.conductor.poll().index(
        restored) + 1)


def test_a_prepare_from_a_corrupt_or_missing_backup_fails_before_the_datastore_is_touched(guest: Guest) -> None:
    location = guest.root / "backups" / "b-2.gz"
    location.parent.mkdir()
    location.write_bytes(gzip.compress(b"SELECT 1;\n"))
    stored = location.read_bytes()
    checksum = f"sha256:{hashlib.sha256(stored).hexdigest()}"
    source = {"kind": "file", "location": str(location), "sealed_url": None}
    location.write_bytes(stored[:-1] + bytes([stored[-1] ^ 0x01]))  # one byte changed in storage
    guest.start_agent()

    corrupt = guest.conductor.result(guest.prepare(
        restore={"backup_id": "b-2", "source": source, "size": len(stored), "checksum": checksum}))
    assert not corrupt.ok
    assert corrupt.message.startswith("Backup b-2 is corrupt: its checksum is sha256:"), corrupt.message
    assert corrupt.message.endswith("it cannot be restored. Restore another backup or take a new one.")
    guest.conductor.wait_for_heartbeats(ServiceStatus.FAILED, since=guest.conductor.poll().index(corrupt) + 1)

    missing = guest.conductor.result(guest.prepare(restore={
        "backup_id": "b-3", "source": {**source, "location": str(guest.root / "backups" / "b-3.gz")},
        "size": len(stored), "checksum": checksum}))
    assert not missing.ok
    assert missing.message.startswith("Backup b-3 is not in backup storage ("), missing.message
    assert not (guest.config.volume / "data").exists(), "nothing was initialised"
    for text in (corrupt.message, missing.message, *corrupt.traceback, *missing.traceback):
        assert APP_PASSWORD not in text
