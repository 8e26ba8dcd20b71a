"""``trove-es up`` on embedded defaults: SQLite files, its own broker, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.event_store import event_store_env
from adapters.settings import load_settings
from services.application import TroveApplication
from tests.support.counter import Counter
from tests.support.stack import REPO_ROOT, read_topic, wait_for

pytestmark = pytest.mark.integration


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_up_runs_the_stack_on_sqlite_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TROVE_ES_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    up = subprocess.Popen([sys.executable, "-m", "adapters.cli", "up", "--data-dir", str(data_dir)],
                          cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stack_file = data_dir / "stack.json"
        wait_for(stack_file.exists, 60, "stack.json")
        stack = json.loads(stack_file.read_text())
        bootstrap = stack["kafka_bootstrap_servers"]
        assert stack["embedded_broker"] is True
        assert stack["event_store_url"].startswith("sqlite:///")

        settings = load_settings({"TROVE_ES_DATA_DIR": str(data_dir)})
        app = TroveApplication(env=event_store_env(settings.event_store_url))
        counter = Counter("embedded")
        counter.increment(2)
        app.save(counter)

        def published() -> list:
            return read_topic(bootstrap, settings.topics.events, idle_s=0.5)

        wait_for(lambda: len(published()) >= 2, 60, "the relay to publish from the SQLite store")
        envelopes = [json.loads(r.value) for r in published()]
        assert [(e["type"], e["version"]) for e in envelopes] == [("CounterOpened", 1), ("CounterIncremented", 2)]
        # The deployment's own projections do not know the test's event types: refused, not skipped.
        wait_for(lambda: len(read_topic(bootstrap, settings.topics.dead_letter, idle_s=0.5)) >= 2, 60,
                 "the event journal to refuse unknown event types")
        reasons = {dict(r.headers)["reason"].decode() for r in read_topic(bootstrap, settings.topics.dead_letter)}
        assert any("unknown event type 'CounterOpened'" in reason for reason in reasons)
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert "trove-es is running" in output
    assert not (data_dir / "stack.json").exists(), "stack.json is removed when the stack stops"
    assert not _port_open(bootstrap), "the embedded broker stopped with the stack"
    for log_name in ("relay.log", "projection-event-journal.log", "broker.log"):
        assert (data_dir / "logs" / log_name).exists()
