"""Guest liveness end to end: heartbeats keep an instance HEALTHY without writing events, and a guest
that falls silent for ``agent_heartbeat_expiry`` shows ``operating_status`` ERROR until it reports again.

Real processes (relay, task manager, conductor, simulated guests, instance-view projection) on
PostgreSQL and the session's broker; reads go through the instance view's own queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.bootstrap import read_model_engine
from adapters.kafka.broker import EmbeddedBroker
from projections.guest_heartbeats import guest_heartbeats
from projections.instance_view import InstanceViewQueries
from tests.support.stack import StackProcess
from tests.support.trove_processes import WriteSide, write_side

pytestmark = pytest.mark.integration

EXPIRY_S = 4.0


@pytest.fixture
def side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url,
                          TROVE_ES_AGENT_HEARTBEAT_EXPIRY_S=str(EXPIRY_S), TROVE_ES_REPORT_INTERVAL_S="0.5")


def test_a_silent_guest_turns_operating_status_to_error_and_back(side: WriteSide) -> None:
    side.start("relay", "task-manager", "conductor", "fake-guests")
    side.processes["instance-view"] = StackProcess("instance-view", ["consume", "--projection", "instance-view"],
                                                   side.env, side.log_dir)
    views = InstanceViewQueries(read_model_engine(side.settings), EXPIRY_S)
    instance_id = side.create(request_id="req-create")
    side.wait_closed(instance_id, "req-create")

    def operating() -> str | None:
        record = views.get(instance_id)
        return record.operating_status if record else None

    def last_seen() -> float:
        with read_model_engine(side.settings).connect() as connection:
            return connection.execute(select(guest_heartbeats.c.last_seen_at)
                                      .where(guest_heartbeats.c.instance_id == instance_id)).scalar_one()

    side.wait(lambda: operating() == "HEALTHY", "the view to show the instance HEALTHY")
    events_when_healthy = len(side.events(instance_id))
    seen = last_seen()
    side.wait(lambda: last_seen() > seen + 1.0, "several more heartbeats to arrive")
    assert len(side.events(instance_id)) == events_when_healthy, "a heartbeat that changes nothing is no event"

    side.processes.pop("fake-guests").kill9()
    side.wait(lambda: operating() == "ERROR", "the silent guest's operating_status to turn ERROR")
    assert views.get(instance_id).status == "ACTIVE", "the server is fine; only the guest is silent"
    assert len(side.events(instance_id)) == events_when_healthy, "expiry is computed on read, not written"

    side.restart("fake-guests")
    side.wait(lambda: operating() == "HEALTHY", "the guest reporting again to make it HEALTHY")
