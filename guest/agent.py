"""The guest agent: ``trove-es guest --instance-id … --config …``, one per instance, beside its database.

It reads its instance's command topic and carries each command out on the real database server through
a datastore manager; it reports to the conductor topic what it did (a ``result``, with the message and
traceback of a failure) and, every ``report_interval_s``, a heartbeat with the server's status as
probed then, never as assumed. Everything it sends is signed with the instance's key, and it believes
only commands signed with it.

A command counts as done once its result is on the broker: only then does the agent move its offset
(``agent-state.json``), so an agent killed mid-command does it again when it comes back; every manager
operation is idempotent for that reason.

A backup streams the datastore's dump, gzip-compressed, to the target the command names, and answers with
the size and checksum of what was stored; a prepare that restores a backup fetches and verifies it before
it touches the datastore (``guest.backup_stream``). While either runs, a thread of its own keeps the
heartbeats going, as the loop beats only between commands.

The guest also enforces the volume's size, which a directory on a shared disk cannot: once the
datastore's files outgrow it, the server refuses users' writes (they fail with the datastore's own
read-only error) until a resize gives it room again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from adapters.sealed import unseal
from domain import guest_protocol as protocol
from domain.statuses import ServiceStatus
from guest.backup_stream import opened, opened_restore, verified_backup, write_backup
from guest.config import AgentState, GuestConfig
from guest.datastore import DatastoreError, DatastoreManager, NewUser, manager_for

log = logging.getLogger(__name__)

GIB = 1024 ** 3
ManagerFactory = Callable[[str, Any, str], DatastoreManager]



class _StoredSoFar:
    """The bytes of a running backup stored so far: counted by the stream, reported by the heartbeat thread."""

    def __init__(self) -> None:
        self._bytes = 0
        self._reported = 0

    def update(self, stored_bytes: int) -> None:
        self._bytes = stored_bytes  # one int rebound: safe to read from the other thread

    def news(self) -> int | None:
        """The bytes stored, when more than last reported."""
        current = self._bytes
        if current <= self._reported:
            return None
        self._reported = current
        return current

class GuestAgent:
    def __init__(self, config: GuestConfig, *, managers: ManagerFactory = manager_for,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._managers = managers
        self._clock = clock
        self._stop = threading.Event()
        self.state = AgentState.load(config.state_file)
        self._manager: DatastoreManager | None = None
        self._read_only: bool | None = None  # unknown until first checked: a restarted agent sets it again
        self._producer: KafkaProducer | None = None

    def stop(self) -> None:
        self._stop.set()

    # The loop -----------------------------------------------------------------------------------------

    def run(self) -> None:
        config = self.config
        self._producer = KafkaProducer(bootstrap_servers=config.kafka_bootstrap_servers, acks="all", linger_ms=0,
                                       max_in_flight_requests_per_connection=1, allow_auto_create_topics=False,
                                       client_id=f"trove-es-guest-{config.instance_id}")
        consumer = KafkaConsumer(bootstrap_servers=config.kafka_bootstrap_servers, group_id=None,
                                 enable_auto_commit=False, allow_auto_create_topics=False,
                                 client_id=f"trove-es-guest-{config.instance_id}", fetch_max_wait_ms=500)
        partition = TopicPartition(config.command_topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, self.state.next_offset)
        log.info("guest agent of %s reading %s from offset %d", config.instance_id, config.command_topic,
                 self.state.next_offset)
        try:
            self._resume()
            next_beat = 0.0
            while not self._stop.is_set():
                now = self._clock()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + config.report_interval_s
                timeout_ms = int(max(0.05, min(1.0, next_beat - self._clock())) * 1000)
                for records in consumer.poll(timeout_ms=timeout_ms, max_records=1).values():
                    for record in records:
                        self._handle(record.offset, record.value)
                        if self._stop.is_set():
                            break
            if self._manager is not None:
                # The instance's "server" is going down (deleted, or its host stopping): so is its database.
                self._manager.stop()
        finally:
            consumer.close(autocommit=False)
            self._producer.close(timeout=5)

    def _resume(self) -> None:
        """A prepared instance's agent that starts (a host back up, an agent restarted) starts its database."""
        if self.state.manager is None:
            return
        manager = self.manager()
        if manager.status() is not ServiceStatus.HEALTHY:
            try:
                manager.start()
            except DatastoreError as exc:
                log.error("the datastore of %s did not start: %s", self.config.instance_id, exc)

    def manager(self) -> DatastoreManager:
        if self._manager is None:
            if self.state.manager is None:
                raise DatastoreError("the instance has no datastore yet: it was never prepared")
            self._manager = self._managers(self.state.manager, self.config.layout(self.state),
                                           self.state.version or "")
        return self._manager

    # Commands -----------------------------------------------------------------------------------------

    def _handle(self, offset: int, raw: bytes) -> None:
        try:
            command = protocol.parse_command(raw, self.config.key)
        except protocol.GuestProtocolError as exc:
            # A message not for this guest (or not from its task manager) is skipped: it changes nothing.
            log.error("ignoring command at offset %d: %s", offset, exc)
            self._done(offset)
            return
        if command.instance_id != self.config.instance_id:
            log.error("ignoring a command for instance %s at offset %d", command.instance_id, offset)
            self._done(offset)
            return
        log.info("%s (request %s)", command.method, command.request_id)
        secrets: list[str] = []
        try:
            details = self._carry_out(command, secrets)
        except Exception as exc:
            log.exception("%s (request %s) failed", command.method, command.request_id)
            message = str(exc) if isinstance(exc, DatastoreError) else f"{exc.__class__.__name__}: {exc}"
            lines = [line for chunk in traceback.format_exception(exc) for line in chunk.rstrip("\n").split("\n")]
            # The result first, then the status it left: the operation fails with the guest's own words.
            self._send(protocol.Result(self.config.instance_id, command.method, command.request_id, False,
                                       self._clock(), message=_scrub(message, secrets),
                                       traceback=tuple(_scrub(line, secrets) for line in lines)).to_json())
            if command.method == protocol.PREPARE:
                self._save(self.state.but(prepare_failed=True))
                self._send_status(ServiceStatus.FAILED)
            else:
                self._heartbeat()
        else:
            self._send(protocol.Result(self.config.instance_id, command.method, command.request_id, True,
                                       self._clock(), details=details).to_json())
        self._done(offset)

    def _carry_out(self, command: protocol.GuestCommand, secrets: list[str]) -> dict[str, Any]:
        """What the command produced, for its result's details."""
        args = command.args
        if command.method == protocol.PREPARE:
            self._send_status(ServiceStatus.BUILDING)
            users = list(self._users(args, secrets))
            manager_name = args.get("manager") or args["datastore"]
            if self.state.manager not in (None, manager_name) and not self.state.prepare_failed:
                raise DatastoreError(f"this instance already runs {self.state.manager}, not {manager_name}")
            self._save(self.state.but(manager=manager_name, version=args["datastore_version"]))
            self._manager = None
            if args.get("restore") is None:
                self.manager().prepare(args["databases"], users)
            else:
                self._prepare_restoring(args, users)
            self._save(self.state.but(prepare_failed=False))
            self._heartbeat()
        elif command.method == protocol.BACKUP:
            manager = self.manager()
            stored = _StoredSoFar()
            with self._beating(manager.status, lambda: self._report_progress(command, stored)):
                size, checksum = write_backup(opened(args["target"], self.config.key), manager.backup,
                                              stored.update)
            log.info("backup %s stored at %s: %d bytes, %s", args["backup_id"], args["target"]["location"], size,
                     checksum)
            return {"size": size, "checksum": checksum}
        elif command.method == protocol.RESTART:
            self._send_status(ServiceStatus.RESTARTING)
            self.manager().restart()
            self._heartbeat()
        elif command.method == protocol.STOP:
            self.manager().stop()
            self._heartbeat()
        elif command.method == protocol.RESIZE_VOLUME:
            self._save(self.state.but(volume_size_gb=args["new_size"]))
            self._manager = None  # the new limit is part of the layout
            self._enforce_volume()
        elif command.method == protocol.RESIZE_FLAVOR:
            memory_mb = int(args["flavor"].get("ram") or self.config.memory_mb)
            self._save(self.state.but(memory_mb=memory_mb))
            self._manager = None
            self._send_status(ServiceStatus.RESTARTING)
            self.manager().set_memory(memory_mb)
            self.manager().restart()
            self._heartbeat()
        elif command.method in _ADMINISTRATION:
            _ADMINISTRATION[command.method](self.manager(), args, _Passwords(self.config.key, args, secrets))
        else:
            raise DatastoreError(f"this guest agent cannot {command.method}")
        return {}

    def _prepare_restoring(self, args: dict[str, Any], users: list[NewUser]) -> None:
        """The backup is fetched and verified first: a missing or corrupt one fails the prepare before the
        datastore is touched. The request's own databases and users are made again after the restore, as
        Trove does, so the backup's users of the same names do not undo the request."""
        with self._beating(lambda: ServiceStatus.BUILDING), verified_backup(
                opened_restore(args["restore"], self.config.key), self.config.run_dir) as dump:
            manager = self.manager()
            manager.prepare(args["databases"], users)
            manager.restore(dump)
            manager.create_databases(args["databases"])
            manager.create_users(users)

    def _report_progress(self, command: protocol.GuestCommand, stored: _StoredSoFar) -> None:
        news = stored.news()
        if news is not None:
            self._send(protocol.Progress(self.config.instance_id, command.method, command.request_id, news,
                                         self._clock()).to_json())

    @contextlib.contextmanager
    def _beating(self, status: Callable[[], ServiceStatus],
                 progress: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Heartbeats of ``status``, each followed by the command's ``progress``, from a thread of their own while
        a long command runs. The thread is gone before the command's result is sent, so nothing of the
        command's follows its result."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.config.report_interval_s):
                try:
                    current = status()
                except Exception as exc:  # a probe that fails says so; the command goes on
                    log.error("could not probe the datastore: %s", exc)
                    current = ServiceStatus.UNKNOWN
                try:
                    self._send_status(current)  # the producer is thread-safe
                    progress()
                except Exception:  # a report lost is one report; the thread goes on beating
                    log.exception("could not send a report while a long command runs")

        thread = threading.Thread(target=beat, name=f"heartbeats-{self.config.instance_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _users(self, args: dict[str, Any], secrets: list[str]) -> Iterable[NewUser]:
        sealed = args.get("passwords", {})
        for user in args["users"]:
            key = f"{user['name']}@{user['host']}"
            if key not in sealed:
                raise DatastoreError(f"the password of user {user['name']} did not reach the guest; "
                                     f"create the user again with its password")
            password = unseal(self.config.key, sealed[key])
            secrets.append(password)
            yield NewUser(name=user["name"], password=password, host=user["host"],
                          databases=tuple(user["databases"]))

    def _done(self, offset: int) -> None:
        # On the broker before the command counts as done, or a crash would lose its answer.
        assert self._producer is not None
        self._producer.flush(timeout=30)
        self._save(self.state.but(next_offset=offset + 1))

    def _save(self, state: AgentState) -> None:
        state.save(self.config.state_file)
        self.state = state

    # Reports ------------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """The probed status, once the instance has a datastore; the volume is checked on the way."""
        if self.state.manager is None:
            return
        if self.state.prepare_failed:
            # Whatever a half-prepared datastore looks like, the instance failed to spawn until prepared.
            self._send_status(ServiceStatus.FAILED)
            return
        used = None
        try:
            status = self.manager().status()
            if status is ServiceStatus.HEALTHY:
                used = self._enforce_volume()
        except Exception as exc:  # a probe that fails says so; the agent goes on reading its commands
            log.error("could not probe the datastore: %s", exc)
            status = ServiceStatus.UNKNOWN
        self._send_status(status, used)

    def _send_status(self, status: ServiceStatus, volume_used_bytes: int | None = None) -> None:
        self._send(protocol.Heartbeat(self.config.instance_id, status.description, self._clock(),
                                      volume_used_bytes=volume_used_bytes).to_json())

    def _send(self, message: bytes) -> None:
        assert self._producer is not None
        self._producer.send(self.config.conductor_topic, key=self.config.instance_id.encode(),
                            value=protocol.signed(message, self.config.key))

    def _enforce_volume(self) -> int | None:
        """Measure the volume and refuse writes while it is full; what it measured (None: no datastore yet)."""
        if self.state.manager is None:
            return None
        manager = self.manager()
        used = manager.volume_used_bytes()
        limit_gb = self.config.layout(self.state).volume_size_gb
        if not limit_gb:
            return used
        full = used >= limit_gb * GIB
        if full != self._read_only:
            if full:
                log.error("the volume is full (%.2f of %d GB): the datastore now refuses writes until it is "
                          "resized", used / GIB, limit_gb)
            else:
                log.info("the volume has room again (%.2f of %d GB): writes are allowed", used / GIB, limit_gb)
            manager.set_read_only(full)
            self._read_only = full
            self._send(protocol.GuestFault(
                self.config.instance_id, protocol.VOLUME_FULL, full,
                f"The volume is full: the data takes {used / GIB:.2f} GB of its {limit_gb} GB. The datastore "
                f"refuses writes until the volume is resized." if full else "", self._clock()).to_json())
        return used


class _Passwords:
    """The passwords sealed in a command, opened one by one; each opened one is remembered to be scrubbed."""

    def __init__(self, key: bytes, args: dict[str, Any], opened: list[str]) -> None:
        self._key = key
        self._sealed = args.get("passwords", {})
        self._opened = opened

    def of(self, name: str, host: str) -> str:
        sealed = self._sealed.get(f"{name}@{host}")
        if sealed is None:
            raise DatastoreError(f"the password of user {name} did not reach the guest; give it again")
        password = unseal(self._key, sealed)
        self._opened.append(password)
        return password


def _create_databases(manager: DatastoreManager, args: dict[str, Any]) -> None:
    for database in args["databases"]:  # each with its own character set and collation
        manager.create_databases([database["name"]], database.get("character_set"), database.get("collate"))


def _create_users(manager: DatastoreManager, args: dict[str, Any], passwords: _Passwords) -> None:
    manager.create_users([NewUser(name=u["name"], password=passwords.of(u["name"], u["host"]), host=u["host"],
                                  databases=tuple(u.get("databases") or ())) for u in args["users"]])


def _update_user(manager: DatastoreManager, args: dict[str, Any], passwords: _Passwords) -> None:
    user = args["user"]
    password = passwords.of(user["name"], user["host"]) if args["passwords"] else None
    manager.update_user(user["name"], user["host"], new_name=args["new_name"], new_host=args["new_host"],
                        new_password=password)


def _change_passwords(manager: DatastoreManager, args: dict[str, Any], passwords: _Passwords) -> None:
    manager.change_passwords([NewUser(name=u["name"], password=passwords.of(u["name"], u["host"]), host=u["host"])
                              for u in args["users"]])


# The guest's half of Trove's database, user and root API, by command.
_ADMINISTRATION: dict[str, Callable[[DatastoreManager, dict[str, Any], _Passwords], None]] = {
    "database_create": lambda m, a, _: _create_databases(m, a),
    "database_delete": lambda m, a, _: m.delete_database(a["database"]),
    "user_create": _create_users,
    "user_delete": lambda m, a, _: m.delete_user(a["user"]["name"], a["user"]["host"]),
    "user_update_attributes": _update_user,
    "user_change_password": _change_passwords,
    "user_grant": lambda m, a, _: m.grant_access(a["user"]["name"], a["user"]["host"], a["databases"]),
    "user_revoke": lambda m, a, _: m.revoke_access(a["user"]["name"], a["user"]["host"], a["database"]),
    "root_enable": lambda m, a, p: m.enable_root(p.of("root", "%")),
    "root_disable": lambda m, a, _: m.disable_root(),
}


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
