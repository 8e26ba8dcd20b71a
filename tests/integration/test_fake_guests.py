"""The simulated guest fleet's discovery of servers, against the fake cloud's database and a real broker."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from adapters.compute.fake import FakeCompute
from adapters.guest_sim import HEALTHY, TOPIC_RECHECK_S, FakeGuestFleet, SimulatedGuest
from adapters.kafka.broker import EmbeddedBroker
from adapters.sealed import DeploymentSealer
from adapters.sql.engine import create_sql_engine
from domain import guest_protocol as protocol
from domain.guest_protocol import Heartbeat, Progress, Result
from services.ports import BackupTarget, ServerSpec
from services.task_manager import sealed_target
from tests.support.url_storage import SIGNATURE, Storage, serving

pytestmark = pytest.mark.integration


class CountingAdmin:
    """The real admin client, counting which topics each scan asks about."""

    def __init__(self, admin: KafkaAdminClient) -> None:
        self._admin = admin
        self.described: list[list[str]] = []

    def describe_topics(self, topics: list[str]) -> Any:
        self.described.append(list(topics))
        return self._admin.describe_topics(topics)


def test_a_server_without_a_topic_is_looked_at_again_only_after_the_recheck_interval(
        tmp_path: Path, broker: EmbeddedBroker) -> None:
    engine = create_sql_engine(f"sqlite:///{tmp_path}/fake_cloud.db")
    now = [1000.0]
    compute = FakeCompute(engine, clock=lambda: now[0])
    fleet = FakeGuestFleet(compute=compute, engine=engine, bootstrap_servers=broker.bootstrap_servers,
                           guest_prefix="test.guest.", conductor_topic="test.conductor", clock=lambda: now[0],
                           secret=b"test secret")
    compute.create(ServerSpec(instance_id="orphan", name="db", flavor={"id": "2"}, volume_size=1))
    admin = CountingAdmin(KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers))
    newcomers, settled = (KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=None)
                          for _ in range(2))
    try:
        fleet._scan(admin, newcomers, settled)  # type: ignore[arg-type]
        assert admin.described == [["test.guest.orphan"]] and "orphan" not in fleet.guests
        for _ in range(5):
            now[0] += TOPIC_RECHECK_S / 10
            fleet._scan(admin, newcomers, settled)  # type: ignore[arg-type]
        assert len(admin.described) == 1, "a missing topic is not described again on every scan"
        now[0] += TOPIC_RECHECK_S
        fleet._scan(admin, newcomers, settled)  # type: ignore[arg-type]
        assert admin.described[1:] == [["test.guest.orphan"]], "it is looked at again once the interval passed"
    finally:
        newcomers.close()
        settled.close()
        admin._admin.close()
        engine.dispose()


class RecordingProducer:
    """What the fleet sends, kept instead of produced."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append(value)

    def flush(self, timeout: float | None = None) -> None:
        pass


SECRET = b"test secret"


class OneGuest:
    """A fleet of one simulated guest, fed signed commands directly; its answers are kept, not produced."""

    def __init__(self, tmp_path: Path) -> None:
        self.engine = create_sql_engine(f"sqlite:///{tmp_path}/fake_cloud.db")
        self.key = protocol.instance_key(SECRET, "inst-1")
        self.fleet = FakeGuestFleet(compute=FakeCompute(self.engine), engine=self.engine,
                                    bootstrap_servers="unused:9092", guest_prefix="test.guest.",
                                    conductor_topic="test.conductor", secret=SECRET)
        self.producer = RecordingProducer()
        self.fleet._producer = self.producer  # type: ignore[assignment]
        self.guest = SimulatedGuest("inst-1", "db", "test.guest.inst-1", status=HEALTHY)

    def handle(self, command: protocol.GuestCommand) -> list[Any]:
        self.producer.sent.clear()
        self.fleet._handle(self.guest, self.guest.committed, protocol.signed(command.to_json(), self.key))
        return [protocol.parse_guest_message(value, lambda _: self.key) for value in self.producer.sent]


def test_a_simulated_guest_stores_a_backup_and_verifies_one_before_it_restores(tmp_path: Path) -> None:
    one = OneGuest(tmp_path)
    engine, guest, handle = one.engine, one.guest, one.handle

    location = tmp_path / "backups" / "b-1.gz"
    target = {"kind": "file", "location": str(location), "sealed_url": None}
    progress, result = handle(protocol.command(protocol.BACKUP, "inst-1", "req-backup", 1.0, backup_id="b-1",
                                               target=target))
    stored = location.read_bytes()
    assert isinstance(progress, Progress) and (progress.request_id, progress.stored_bytes) == ("req-backup",
                                                                                              len(stored))
    assert isinstance(result, Result) and result.ok
    assert result.details == {"size": len(stored), "checksum": f"sha256:{hashlib.sha256(stored).hexdigest()}"}
    assert gzip.decompress(stored).startswith(b"-- trove-es simulated backup b-1")

    def prepare(request_id: str, **restore: Any) -> list[Any]:
        guest.status = "new"
        return handle(protocol.prepare("inst-1", request_id, 1.0, datastore="mysql", datastore_version="8.0",
                                       databases=[], users=[], volume_size=1,
                                       restore={"backup_id": "b-1", "source": target, **result.details, **restore}))

    restored = [m for m in prepare("req-sound") if isinstance(m, Result)]
    assert [r.ok for r in restored] == [True] and guest.status == HEALTHY
    location.write_bytes(stored[:-1] + bytes([stored[-1] ^ 0x01]))
    messages = prepare("req-corrupt")
    (failed,) = [m for m in messages if isinstance(m, Result)]
    assert not failed.ok and failed.message.startswith("Backup b-1 is corrupt: its checksum is sha256:")
    assert isinstance(messages[-1], Heartbeat) and messages[-1].service_status == "failed to spawn"
    location.unlink()
    (missing,) = [m for m in prepare("req-missing") if isinstance(m, Result)]
    assert not missing.ok and missing.message.startswith(f"Backup b-1 is not in backup storage ({location})")
    engine.dispose()


@pytest.fixture
def url_storage() -> Iterator[Storage]:
    with serving() as server:
        yield server


def test_a_signed_url_reaches_the_guest_only_sealed_and_only_that_guest_opens_it(tmp_path: Path,
                                                                                  url_storage: Storage) -> None:
    storage = url_storage
    one = OneGuest(tmp_path)
    sealer = DeploymentSealer(SECRET)
    url = storage.url("t/b-1.gz")
    target = sealed_target(BackupTarget("url", "swift://backups/t/b-1.gz", url), "inst-1", sealer)
    command = protocol.command(protocol.BACKUP, "inst-1", "req-backup", 1.0, backup_id="b-1", target=target)
    wire = protocol.signed(command.to_json(), one.key)
    assert SIGNATURE.split("&")[0] not in wire.decode() and url not in wire.decode(), "the URL is never in clear"

    _, result = one.handle(command)
    assert isinstance(result, Result) and result.ok, result.message
    stored = storage.objects["/v1/AUTH_t/backups/t/b-1.gz"]
    assert result.details == {"size": len(stored), "checksum": f"sha256:{hashlib.sha256(stored).hexdigest()}"}

    source = sealed_target(BackupTarget("url", "swift://backups/t/b-1.gz", storage.url("t/b-1.gz")), "inst-1",
                           sealer)
    one.guest.status = "new"
    restored = [m for m in one.handle(protocol.prepare(
        "inst-1", "req-restore", 1.0, datastore="mysql", datastore_version="8.0", databases=[], users=[],
        volume_size=1, restore={"backup_id": "b-1", "source": source, **result.details})) if isinstance(m, Result)]
    assert [r.ok for r in restored] == [True]

    elsewhere = sealed_target(BackupTarget("url", "swift://backups/t/b-2.gz", storage.url("t/b-2.gz")), "inst-2",
                              sealer)
    (refused,) = one.handle(protocol.command(protocol.BACKUP, "inst-1", "req-other", 1.0, backup_id="b-2",
                                             target=elsewhere))
    assert not refused.ok and "does not open with this instance's key" in refused.message
    assert "/v1/AUTH_t/backups/t/b-2.gz" not in storage.objects
    with pytest.raises(ValueError, match="without a sealer"):
        sealed_target(BackupTarget("url", "swift://backups/t/b-1.gz", url), "inst-1", None)
    one.engine.dispose()
