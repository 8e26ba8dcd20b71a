"""The simulated guest fleet's discovery of servers, against the fake cloud's database and a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from adapters.compute.fake import FakeCompute
from adapters.guest_sim import TOPIC_RECHECK_S, FakeGuestFleet
from adapters.kafka.broker import EmbeddedBroker
from adapters.sql.engine import create_sql_engine
from services.ports import ServerSpec

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
