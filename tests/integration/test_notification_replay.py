"""``trove-es notifications replay``: a window's notifications sent again to one topic with the message ids and
payloads the live notifier gave them, and nothing from outside the window."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.kafka.broker import EmbeddedBroker
from tests.integration.test_task_manager import ALL, _active
from tests.support.stack import REPO_ROOT, read_topic, wait_for
from tests.support.trove_processes import WriteSide, write_side

pytestmark = pytest.mark.integration


@pytest.fixture
def side(tmp_path: Path, broker: EmbeddedBroker, postgres_url: str) -> Iterator[WriteSide]:
    yield from write_side(tmp_path, broker.bootstrap_servers, postgres_url)


def _messages(side: WriteSide, *topics: str) -> dict[str, dict[str, Any]]:
    found = {}
    for topic in topics:
        for record in read_topic(side.settings.kafka_bootstrap_servers, topic, idle_s=0.5):
            message = json.loads(json.loads(record.value)["oslo.message"])
            found[message["message_id"]] = message
    return found


def _stamp(message: dict[str, Any]) -> datetime:
    return datetime.strptime(message["timestamp"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)


def test_a_window_is_sent_again_with_the_original_ids_and_payloads(side: WriteSide) -> None:
    side.start(*ALL)
    side.start_notifier()
    first = side.create(name="before", request_id="req-create-1")
    side.wait(lambda: _active(side, first), "the first instance to be ACTIVE")
    start = datetime.now(UTC)
    second = side.create(name="inside", request_id="req-create-2")
    side.wait(lambda: _active(side, second), "the second instance to be ACTIVE")
    side.instances.restart(side.context("req-restart"), second)
    side.wait(lambda: _active(side, second) and not side.get(second).operation_open(), "the restart to end")
    end = datetime.now(UTC)
    side.instances.restart(side.context("req-late"), first)
    live_topics = (side.settings.topics.notifications_info, side.settings.topics.notifications_error)
    wait_for(lambda: any(m["_context"].get("request_id") == "req-late" for m in _messages(side, *live_topics).values()),
             60, "the live notifier to send the last notification")

    live = _messages(side, *live_topics)
    window = {mid: m for mid, m in live.items() if start <= _stamp(m) < end}
    assert {"dbaas.instance_create.start", "dbaas.instance_create.end", "trove.instance.create",
            "dbaas.instance_restart.start", "dbaas.instance_restart.end"} <= {m["event_type"] for m in window.values()}
    assert not any(m["_context"]["request_id"] in ("req-create-1", "req-late") for m in window.values())

    topic = f"{side.settings.topics.notifications_info}.rerun"
    done = subprocess.run([sys.executable, "-m", "adapters.cli", "notifications", "replay", "--from", start.isoformat(),
                           "--to", end.isoformat(), "--topic", topic], cwd=REPO_ROOT,
                          env={**side.env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{len(window)} notifications of the window sent to {topic}" in done.stdout
    assert "replaying the notifications of" in done.stderr, "it shows progress"
    replayed = _messages(side, topic)
    assert replayed == window, "the same ids, payloads and stamps; nothing from before or after the window"

    bad = subprocess.run([sys.executable, "-m", "adapters.cli", "notifications", "replay", "--from", end.isoformat(),
                          "--to", start.isoformat(), "--topic", topic], cwd=REPO_ROOT,
                         env={**side.env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--to must be later than --from" in bad.stderr
