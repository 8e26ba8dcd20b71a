"""``trove-es up`` on embedded defaults: SQLite files, its own broker, clean shutdown, and the printed
example driving an instance through its life on the fake compute driver."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


def _call(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     method=method, headers={"X-Auth-Token": token,
                                                             "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    return status, json.loads(raw) if raw else None


def _serving(url: str, token: str) -> bool:
    try:
        return _call("GET", url, token)[0] == 200
    except urllib.error.URLError:
        return False


def _status(url: str, token: str) -> str | int:
    code, body = _call("GET", url, token)
    return body["instance"]["status"] if code == 200 else code


def test_up_runs_the_stack_on_sqlite_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TROVE_ES_")}
    env.update(PYTHONPATH=str(REPO_ROOT), TROVE_ES_FAKE_COMPUTE_DELAY_S="0.1", TROVE_ES_REPORT_INTERVAL_S="1",
               TROVE_ES_COMPUTE_DRIVER="fake")  # real databases: tests/local/
    output_path = tmp_path / "up.out"
    with open(output_path, "wb") as output:
        up = subprocess.Popen([sys.executable, "-m", "adapters.cli", "up", "--data-dir", str(data_dir), "--port", "0"],
                              cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        stack_file = data_dir / "stack.json"
        wait_for(stack_file.exists, 60, "stack.json")
        stack = json.loads(stack_file.read_text())
        bootstrap = stack["kafka_bootstrap_servers"]
        assert stack["embedded_broker"] is True
        assert stack["event_store_url"].startswith("sqlite:///")

        # The banner's example, as a new user would follow it: its token, its endpoint, its body.
        wait_for(lambda: "Press Ctrl-C to stop." in output_path.read_text(), 60, "the banner")
        banner = output_path.read_text()
        token = re.search(r"^  TOKEN=(\S+)$", banner, re.MULTILINE).group(1)
        create_url = re.search(r"(http://\S+/v1\.0/demo/instances) \\$", banner, re.MULTILINE).group(1)
        assert create_url.startswith(stack["api_endpoint"])
        body = json.loads(re.search(r"-d '(.*?)'", banner, re.DOTALL).group(1))
        wait_for(lambda: _serving(create_url, token), 60, "the API to serve")
        code, created = _call("POST", create_url, token, body)
        assert (code, created["instance"]["status"]) == (200, "BUILD"), created
        instance_url = f"{create_url}/{created['instance']['id']}"
        wait_for(lambda: _status(instance_url, token) == "ACTIVE", 60, "the instance to become ACTIVE")
        assert _call("DELETE", instance_url, token)[0] == 202
        wait_for(lambda: _status(instance_url, token) == 404, 60, "the deleted instance to be gone")
        # The python-troveclient example, run as printed.
        script = re.search(r"<<'PY'\n(.*?)\nPY\n", banner, re.DOTALL).group(1)
        example = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120,
                                 cwd=tmp_path)
        assert example.returncode == 0, example.stderr
        example_id, example_status = example.stdout.split()
        assert example_status in ("BUILD", "ACTIVE")
        wait_for(lambda: _status(f"{create_url}/{example_id}", token) == "ACTIVE", 60, "the example's instance")
        admin_token = re.search(r"^  admin: +(\S+)$", banner, re.MULTILINE).group(1)
        assert _call("GET", f"{stack['api_endpoint']}/v1.0/admin/mgmt/quotas/demo", admin_token)[0] == 200

        settings = load_settings({"TROVE_ES_DATA_DIR": str(data_dir)})
        app = TroveApplication(env=event_store_env(settings.event_store_url))
        counter = Counter("embedded")
        counter.increment(2)
        app.save(counter)

        def published() -> list[dict[str, Any]]:
            envelopes = [json.loads(r.value) for r in read_topic(bootstrap, settings.topics.events, idle_s=0.5)]
            return [e for e in envelopes if e["aggregate_id"] == str(counter.id)]

        wait_for(lambda: len(published()) >= 2, 60, "the relay to publish from the SQLite store")
        assert [(e["type"], e["version"]) for e in published()] == [("CounterOpened", 1), ("CounterIncremented", 2)]
        # The deployment's own projections do not know the test's event types: refused, not skipped.
        wait_for(lambda: len(read_topic(bootstrap, settings.topics.dead_letter, idle_s=0.5)) >= 2, 60,
                 "the event journal to refuse unknown event types")
        reasons = {dict(r.headers)["reason"].decode() for r in read_topic(bootstrap, settings.topics.dead_letter)}
        assert any("unknown event type 'CounterOpened'" in reason for reason in reasons)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    output = output_path.read_text()
    assert up.returncode == 0, output
    assert "trove-es is running" in output
    assert not (data_dir / "stack.json").exists(), "stack.json is removed when the stack stops"
    assert not _port_open(bootstrap), "the embedded broker stopped with the stack"
    for log_name in ("relay.log", "projection-event-journal.log", "broker.log", "task-manager.log", "api.log"):
        assert (data_dir / "logs" / log_name).exists()
