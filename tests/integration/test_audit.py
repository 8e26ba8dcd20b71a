"""Tamper evidence on the real PostgreSQL event store: the relay chains what it publishes and signs
checkpoints; ``trove-es audit verify`` names each row edited, deleted or moved in the SQL table directly."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select

from adapters.bootstrap import event_chain, event_store_engine
from adapters.kafka.broker import EmbeddedBroker
from adapters.sql.event_chain import audit_checkpoints, store_events
from adapters.sql.event_chain import event_chain as event_chain_table
from domain.audit_chain import Chainer
from tests.support.stack import REPO_ROOT, read_topic, wait_for
from tests.support.trove_processes import WriteSide, write_side

pytestmark = pytest.mark.integration


@pytest.fixture
def side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url,
                          TROVE_ES_AUDIT_CHECKPOINT_EVERY="5", TROVE_ES_AUDIT_CHECKPOINT_INTERVAL_S="0.2")


def _audit(side: WriteSide, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters.cli", "audit", *args], cwd=REPO_ROOT,
                          env={**side.env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)


def _verify(side: WriteSide) -> tuple[int, str, dict[str, Any]]:
    text, as_json = _audit(side, "verify"), _audit(side, "verify", "--format", "json")
    assert text.returncode == as_json.returncode, as_json.stderr
    assert text.returncode in (0, 1), text.stderr
    return text.returncode, text.stdout, json.loads(as_json.stdout)


def _chained(side: WriteSide) -> tuple[int, int]:
    """How many events are chained, and the position of the last checkpoint."""
    event_chain(side.settings)  # its tables, if the relay has not made them yet
    engine = event_store_engine(side.settings)
    try:
        with engine.connect() as connection:
            return (connection.execute(select(func.count()).select_from(event_chain_table)).scalar_one(),
                    connection.execute(select(func.max(audit_checkpoints.c.position))).scalar() or 0)
    finally:
        engine.dispose()


def _rows(side: WriteSide) -> list[tuple[int, str, int]]:
    with psycopg.connect(side.settings.event_store_url) as connection:
        return [(n, str(a), v) for n, a, v in connection.execute(
            "SELECT notification_id, originator_id, originator_version FROM trove_events ORDER BY notification_id")]


def test_edited_deleted_and_reordered_rows_are_each_named_with_position_and_aggregate(side: WriteSide) -> None:
    side.start("relay")
    for n in range(3):
        instance_id = side.create(name=f"db{n}", request_id=f"req-create-{n}")
        side.instances.rename(side.context(f"req-rename-{n}"), instance_id, f"renamed{n}")
    rows = _rows(side)
    wait_for(lambda: _chained(side) == (len(rows), rows[-1][0]), 60,
             "the relay to chain every event and sign a checkpoint at the last")

    published = {json.loads(r.value)["event_id"]: json.loads(r.value)
                 for r in read_topic(side.settings.kafka_bootstrap_servers, side.settings.topics.events, idle_s=1.0)}
    links = {link.position: link for link in event_chain(side.settings).links()}
    for event in published.values():
        chain = event["chain"]
        assert chain["hash"] == links[chain["position"]].hash, "each published event carries its link"
        assert chain["previous_hash"] == links[chain["position"]].previous_hash
    side.processes["relay"].terminate()

    code, text, report = _verify(side)
    assert code == 0 and report["findings"] == [] and report["events"] == len(rows), text

    altered, deleted, first, second = rows[2], rows[5], rows[8], rows[9]
    with psycopg.connect(side.settings.event_store_url, autocommit=True) as connection:
        connection.execute("UPDATE trove_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
                           "'\"mysql\"', '\"MYSQL\"'), 'UTF8') WHERE notification_id = %s", (altered[0],))
        assert connection.execute("SELECT count(*) FROM trove_events WHERE notification_id = %s AND "
                                  "position('MYSQL' in convert_from(state, 'UTF8')) > 0",
                                  (altered[0],)).fetchone() == (1,), "the edit changed the row"
        connection.execute("DELETE FROM trove_events WHERE notification_id = %s", (deleted[0],))
        connection.execute("UPDATE trove_events SET notification_id = -1 WHERE notification_id = %s", (first[0],))
        connection.execute("UPDATE trove_events SET notification_id = %s WHERE notification_id = %s",
                           (first[0], second[0]))
        connection.execute("UPDATE trove_events SET notification_id = %s WHERE notification_id = -1", (second[0],))

    code, text, report = _verify(side)
    assert code == 1
    found = [(f["kind"], f["position"], f["aggregate_id"], f["version"]) for f in report["findings"]]
    assert found == [("altered", altered[0], altered[1], altered[2]),
                     ("missing", deleted[0], deleted[1], deleted[2]),
                     ("reordered", first[0], second[1], second[2]),
                     ("reordered", second[0], first[1], first[2])], text
    lines = text.splitlines()
    assert lines[0] == (f"altered: position {altered[0]}, aggregate {altered[1]} version {altered[2]}: the store "
                        f"holds other bytes than were chained")
    assert lines[1].startswith(f"missing: position {deleted[0]}, aggregate {deleted[1]} version {deleted[2]}")
    assert f"holds the event chained at position {second[0]}" in lines[2]


def test_rewriting_the_chain_to_match_an_edit_breaks_the_signed_checkpoint(side: WriteSide) -> None:
    side.start("relay")
    side.create(name="db0", request_id="req-create-0")
    rows = _rows(side)
    wait_for(lambda: _chained(side) == (len(rows), rows[-1][0]), 60, "the relay to chain and checkpoint")
    side.processes["relay"].terminate()
    # Someone with write access to the database edits an event and recomputes its link and every link and
    # log hash after it, so the recorded chain agrees with the edited store; the audit key is not theirs.
    with psycopg.connect(side.settings.event_store_url, autocommit=True) as connection:
        (target,), = connection.execute("SELECT notification_id FROM trove_events WHERE "
                                        "position('\"db0\"' in convert_from(state, 'UTF8')) > 0").fetchall()
        connection.execute("UPDATE trove_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
                           "'\"db0\"', '\"db9\"'), 'UTF8') WHERE notification_id = %s", (target,))
        chainer = Chainer()
        for event in store_events(side.instances.recorder):
            link = chainer.link(event)
            connection.execute("UPDATE event_chain SET digest = %s, previous_hash = %s, hash = %s, log_hash = %s "
                               "WHERE position = %s", (link.digest, link.previous_hash, link.hash, link.log_hash,
                                                       link.position))
    code, text, report = _verify(side)
    assert code == 1
    assert report["findings"] and {f["kind"] for f in report["findings"]} == {"checkpoint-broken"}, text
    assert "not the one that was signed" in report["findings"][0]["detail"]


def test_a_timeline_lists_every_event_and_as_of_rebuilds_the_instance_from_the_store(side: WriteSide) -> None:
    instance_id = side.create(name="first", request_id="req-create")
    side.instances.rename(side.context("req-rename-1"), instance_id, "second")
    between = side.instances.history(instance_id)[-1].occurred_at
    side.instances.rename(side.context("req-rename-2"), instance_id, "third")

    listed = _audit(side, "timeline", instance_id, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    own = [e for e in entries if e["aggregate_type"] == "Instance"]
    assert own[0]["type"] == "CreateRequested"
    renames = [(e["request_id"], e["changes"]["name"], e["user_id"]) for e in own if e["type"] == "Renamed"]
    assert renames == [("req-rename-1", "second", "alice"), ("req-rename-2", "third", "alice")]
    assert any(e["aggregate_type"] == "Quota" and e["request_id"] == "req-create" for e in entries), \
        "the quota's reservation for the create is part of the instance's history"
    text = _audit(side, "timeline", instance_id)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == len(entries)
    assert "Renamed  request req-rename-2  user alice tenant tenant-a" in text.stdout

    past = _audit(side, "timeline", instance_id, "--as-of", between, "--format", "json")
    assert past.returncode == 0, past.stderr
    state = json.loads(past.stdout)
    assert (state["name"], state["status"], state["last_event"]["request_id"]) == ("second", "BUILD",
                                                                                    "req-rename-1")
    now = json.loads(_audit(side, "timeline", instance_id, "--as-of", "2999-01-01T00:00:00Z", "--format",
                            "json").stdout)
    assert now["name"] == "third"
    before = _audit(side, "timeline", instance_id, "--as-of", "2000-01-01T00:00:00Z")
    assert before.returncode == 2 and "did not exist yet" in before.stderr
    odd = _audit(side, "timeline", instance_id, "--as-of", "yesterday")
    assert odd.returncode == 2 and "not an ISO 8601 time" in odd.stderr
    unknown = _audit(side, "timeline", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 2 and "could not be found" in unknown.stderr
