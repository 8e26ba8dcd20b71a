"""``LocalCompute``: each instance's "server" is a guest agent process on this host, beside its real database.

The compute driver for a single host, and the default of ``trove-es up`` where the datastores' server
binaries are installed: a user creates an instance and connects to a real PostgreSQL or MariaDB server
on ``127.0.0.1`` at the port its view shows.

An instance lives in ``<root>/<instance_id>/``:

- ``server.json``: what the driver knows of the server (its port, flavor, volume size, agent pid);
- ``guest.json``: the guest agent's configuration (0600; it holds the instance's key, not the deployment's);
- ``volume/``: the "volume", the datastore's files and nothing else; its size is enforced by the guest;
- ``run/``: the datastore's pid file, socket and admin credentials; ``agent.log``: the agent's log.

Nothing is kept in memory that the files do not say, so a restarted task manager finds its instances
again, and the agents (in sessions of their own) outlive the control plane's processes. The server is
ACTIVE while its agent runs, and in ERROR, with the agent's last words as its fault, once it has exited.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from glob import glob
from pathlib import Path
from typing import Any

from domain.guest_protocol import instance_key
from domain.statuses import SERVER_ACTIVE, SERVER_ERROR
from guest.config import GuestConfig
from services.ports import ComputeError, Server, ServerSpec

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("5d0c3a8e-2f1b-4e7a-9c64-1b2f3e4d5a6c")
DEFAULT_PORTS = (21000, 21999)
STOP_WAIT_S = 30.0


def datastore_binaries_installed() -> bool:
    """Whether this host can run local instances: PostgreSQL's and MariaDB's server binaries are here."""
    postgres = bool(glob("/usr/lib/postgresql/*/bin/initdb"))
    mariadb = shutil.which("mariadbd") is not None or Path("/usr/sbin/mariadbd").exists()
    return postgres and mariadb


class LocalCompute:
    def __init__(self, root: Path, *, bootstrap_servers: str, guest_prefix: str, conductor_topic: str,
                 secret: bytes, report_interval_s: float = 10.0, ports: tuple[int, int] = DEFAULT_PORTS,
                 python: str = sys.executable, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self._bootstrap = bootstrap_servers
        self._prefix = guest_prefix
        self._conductor_topic = conductor_topic
        self._secret = secret
        self._report_interval_s = report_interval_s
        self._ports = ports
        self._python = python
        self._clock = clock
        self._lock = threading.Lock()  # the task manager runs steps on a pool: one port, one agent per instance
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # Database servers run as their own accounts and must reach their files through these directories.
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)

    # ComputeDriver ----------------------------------------------------------------------------------

    def create(self, spec: ServerSpec) -> Server:
        with self._lock:
            existing = self._record(spec.instance_id)
            if existing is None:
                existing = self._provision(spec)
            if not self._alive(existing):
                existing = self._start_agent(existing)
        return self._server(existing)

    def get(self, instance_id: str) -> Server | None:
        record = self._record(instance_id)
        return self._server(record) if record is not None else None

    def reboot(self, instance_id: str) -> Server:
        with self._lock:
            record = self._require(instance_id)
            self._stop_agent(record)
            record = self._start_agent(record)
        return self._server(record)

    def resize_volume(self, instance_id: str, new_size: int) -> Server:
        # The guest enforces the size; its resize_volume command gives it the new limit.
        with self._lock:
            record = self._require(instance_id)
            if new_size < (record["volume_size"] or 0):
                raise ComputeError(f"New size for extend must be greater than current size. "
                                   f"(current: {record['volume_size']}, extended: {new_size})")
            record["volume_size"] = new_size
            self._write_record(record)
        return self._server(record)

    def resize_flavor(self, instance_id: str, flavor: dict[str, Any]) -> Server:
        # The guest rewrites its server's memory settings and restarts it on its resize_flavor command.
        with self._lock:
            record = self._require(instance_id)
            record["flavor"] = dict(flavor)
            self._write_record(record)
        return self._server(record)

    def delete(self, instance_id: str) -> None:
        with self._lock:
            record = self._record(instance_id)
            home = self._home(instance_id)
            if record is not None:
                self._stop_agent(record)
            kill_processes_under(home)  # a database whose agent died before it could stop it
            shutil.rmtree(home, ignore_errors=True)
            self._children.pop(instance_id, None)

    # ------------------------------------------------------------------------------------------------

    def _provision(self, spec: ServerSpec) -> dict[str, Any]:
        home = self._home(spec.instance_id)
        home.mkdir(mode=0o755, exist_ok=True)
        home.chmod(0o755)
        record = {
            "instance_id": spec.instance_id, "server_id": str(uuid.uuid5(_NAMESPACE, f"server/{spec.instance_id}")),
            "name": spec.name, "image_id": spec.image_id, "flavor": dict(spec.flavor),
            "volume_id": str(uuid.uuid5(_NAMESPACE, f"volume/{spec.instance_id}")) if spec.volume_size else None,
            "volume_size": spec.volume_size, "port": self._free_port(), "pid": None, "created_at": self._clock(),
        }
        self._write_record(record)
        return record

    def _start_agent(self, record: dict[str, Any]) -> dict[str, Any]:
        instance_id = record["instance_id"]
        home = self._home(instance_id)
        config = GuestConfig(
            instance_id=instance_id, kafka_bootstrap_servers=self._bootstrap,
            command_topic=f"{self._prefix}{instance_id}", conductor_topic=self._conductor_topic,
            key_hex=instance_key(self._secret, instance_id).hex(), volume=home / "volume", run_dir=home / "run",
            port=int(record["port"]), memory_mb=int(record["flavor"].get("ram") or 512),
            volume_size_gb=record["volume_size"], report_interval_s=self._report_interval_s)
        for directory in (config.volume, config.run_dir):
            directory.mkdir(exist_ok=True)
            directory.chmod(0o755)
        config_file = config.write(home / "guest.json")
        with open(home / "agent.log", "ab") as agent_log:
            child = subprocess.Popen(
                [self._python, "-m", "adapters.cli", "guest", "--instance-id", instance_id, "--config",
                 str(config_file)], stdin=subprocess.DEVNULL, stdout=agent_log, stderr=subprocess.STDOUT,
                # A session of its own: the agent outlives the task manager, as a server outlives Nova.
                start_new_session=True)
        self._children[instance_id] = child
        record["pid"] = child.pid
        self._write_record(record)
        log.info("started the guest agent of %s (pid %d, port %d)", instance_id, child.pid, record["port"])
        return record

    def _stop_agent(self, record: dict[str, Any]) -> None:
        pid = record.get("pid")
        if not pid or not self._alive(record):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # the agent stops its database on the way out
        deadline = time.monotonic() + STOP_WAIT_S
        while self._alive(record) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._alive(record):
            log.warning("the guest agent of %s did not stop in %.0f s; killing it", record["instance_id"],
                        STOP_WAIT_S)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _alive(self, record: dict[str, Any]) -> bool:
        pid = record.get("pid")
        if not pid:
            return False
        child = self._children.get(record["instance_id"])
        if child is not None and child.pid == pid:
            # Ours: running or not, its exit status says. Its /proc entry may not yet show the agent's command
            # line (it is empty while the child execs), which once made a freshly started agent look dead.
            return child.poll() is None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        # A pid reused by another process is not our agent; a zombie is not running.
        return record["instance_id"].encode() in cmdline and b"guest" in cmdline and state != "Z"

    def _server(self, record: dict[str, Any]) -> Server:
        alive = self._alive(record)
        fault = None if alive else self._agent_exit_fault(record["instance_id"])
        return Server(instance_id=record["instance_id"], server_id=record["server_id"],
                      status=SERVER_ACTIVE if alive else SERVER_ERROR, name=record["name"],
                      flavor_id=str(record["flavor"].get("id", "")), volume_id=record["volume_id"],
                      volume_size=record["volume_size"],
                      addresses=[{"address": "127.0.0.1", "type": "private", "network": "local",
                                  "port": record["port"]}],
                      fault=fault, image_id=record["image_id"])

    def _agent_exit_fault(self, instance_id: str) -> str:
        log_file = self._home(instance_id) / "agent.log"
        try:
            lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        except FileNotFoundError:
            lines = []
        last = lines[-1][-200:] if lines else "it left no log"
        return f"The guest agent of this server is not running ({last}); see {log_file}."

    def _free_port(self) -> int:
        taken = {record["port"] for record in self._records()}
        low, high = self._ports
        for port in range(low, high + 1):
            if port in taken:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise ComputeError(f"No port is free for another instance in {low}-{high}; delete an instance or widen "
                           f"TROVE_ES_LOCAL_COMPUTE_PORTS.")

    def _home(self, instance_id: str) -> Path:
        return self.root / instance_id

    def _record(self, instance_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._home(instance_id) / "server.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _records(self) -> list[dict[str, Any]]:
        records = []
        for path in self.root.glob("*/server.json"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                records.append(json.loads(path.read_text()))
        return records

    def _require(self, instance_id: str) -> dict[str, Any]:
        record = self._record(instance_id)
        if record is None:
            raise ComputeError(f"No server is found for instance {instance_id}.")
        return record

    def _write_record(self, record: dict[str, Any]) -> None:
        path = self._home(record["instance_id"]) / "server.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, sort_keys=True))
        os.replace(temporary, path)


def kill_processes_under(home: Path) -> None:
    """Kill every process whose command line names a path under ``home`` (a database server left behind)."""
    marker = str(home).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if marker in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
