"""The local compute driver with real guest agent processes (on the real broker): idempotent creates, a
driver that starts afresh finds its servers again, a dead agent is a server in ERROR with its last words,
and a delete leaves no process and no file behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.compute.local import LocalCompute, kill_processes_under
from adapters.kafka.broker import EmbeddedBroker
from domain.statuses import SERVER_ACTIVE, SERVER_ERROR
from services.ports import ComputeError, ServerSpec
from tests.support.stack import wait_for

pytestmark = pytest.mark.integration

FLAVOR = {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1}


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="trove-es-local-compute-", dir="/tmp"))
    try:
        yield path / "local-compute"
    finally:
        kill_processes_under(path)
        shutil.rmtree(path, ignore_errors=True)


def _driver(root: Path, broker: EmbeddedBroker) -> LocalCompute:
    return LocalCompute(root, bootstrap_servers=broker.bootstrap_servers, guest_prefix=f"t-{uuid.uuid4().hex[:6]}.",
                        conductor_topic="t.conductor", secret=b"x" * 32, ports=(23200, 23209))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_servers_are_agent_processes_the_driver_finds_again_and_removes(root: Path, broker: EmbeddedBroker) -> None:
    driver = _driver(root, broker)
    instance_id = str(uuid.uuid4())
    spec = ServerSpec(instance_id=instance_id, name="db", flavor=FLAVOR, volume_size=1)
    server = driver.create(spec)
    assert server.status == SERVER_ACTIVE and server.volume_size == 1
    address = server.addresses[0]
    assert address["address"] == "127.0.0.1" and 23200 <= address["port"] <= 23209
    assert driver.create(spec).server_id == server.server_id, "a repeated create is the same server"
    pid = _pid(root, instance_id)
    assert (root / instance_id / "guest.json").stat().st_mode & 0o777 == 0o600, "it holds the instance's key"
    assert b"x" * 32 not in (root / instance_id / "guest.json").read_bytes(), "never the deployment secret"

    other = driver.create(ServerSpec(instance_id=str(uuid.uuid4()), name="db2", flavor=FLAVOR, volume_size=1))
    assert other.addresses[0]["port"] != address["port"], "each instance has a port of its own"

    restarted = _driver(root, broker)  # a task manager started afresh: nothing in memory
    assert restarted.get(instance_id).status == SERVER_ACTIVE and _pid(root, instance_id) == pid
    with pytest.raises(ComputeError, match="must be greater"):
        restarted.resize_volume(instance_id, 0)
    assert restarted.resize_volume(instance_id, 3).volume_size == 3

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), 10, "the agent to die")
    dead = restarted.get(instance_id)
    assert dead.status == SERVER_ERROR and "guest agent of this server is not running" in dead.fault
    assert restarted.reboot(instance_id).status == SERVER_ACTIVE and _pid(root, instance_id) != pid

    new_pid = _pid(root, instance_id)
    restarted.delete(instance_id)
    assert restarted.get(instance_id) is None and not (root / instance_id).exists()
    wait_for(lambda: not _alive(new_pid), 10, "the deleted server's agent to be gone")
    restarted.delete(instance_id)  # nothing left: nothing happens


def _pid(root: Path, instance_id: str) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = json.loads((root / instance_id / "server.json").read_text())
        if record.get("pid"):
            return int(record["pid"])
        time.sleep(0.05)
    raise AssertionError("no agent pid recorded")


def test_an_agent_just_started_is_alive_before_its_command_line_shows(root: Path, broker: EmbeddedBroker,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    driver = _driver(root, broker)
    instance_id = str(uuid.uuid4())
    real_read_bytes = Path.read_bytes

    def mid_exec(path: Path) -> bytes:
        # What /proc shows of a child still in execve: an empty command line.
        return b"" if path.name == "cmdline" and path.parent.parent == Path("/proc") else real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", mid_exec)
    server = driver.create(ServerSpec(instance_id=instance_id, name="db", flavor=FLAVOR, volume_size=1))
    assert server.status == SERVER_ACTIVE, server.fault
    monkeypatch.undo()
    driver.delete(instance_id)
