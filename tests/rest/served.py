"""The real API under gunicorn (``trove-es api``) in a subprocess, on a free port and its own data dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

from adapters.kafka.broker import free_port
from tests.support.stack import REPO_ROOT


class ApiClient:
    """HTTP calls to a served API, as a plain client makes them."""

    url: str

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any, Message]:
        """Status, body (JSON decoded when typed so) and headers (case-insensitive)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token:
            request.add_header("X-Auth-Token", token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status, headers = response.read(), response.status, response.headers
        except urllib.error.HTTPError as error:
            raw, status, headers = error.read(), error.code, error.headers
        is_json = raw and (headers.get("Content-Type") or "").startswith("application/json")
        return status, json.loads(raw) if is_json else raw.decode(), headers


class ServedApi(ApiClient):
    def __init__(self, data_dir: Path, workers: int = 2) -> None:
        self.data_dir = data_dir
        self.port = free_port("127.0.0.1")
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.log_path = data_dir / "api.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("TROVE_ES_")}
        self.env.update({"PYTHONPATH": str(REPO_ROOT), "TROVE_ES_DATA_DIR": str(data_dir),
                         "TROVE_ES_API_WORKERS": str(workers), "TROVE_ES_READ_YOUR_WRITES_WAIT_S": "0.2"})
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "adapters.cli", "api", "--port", str(self.port)],
                                            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_serving()

    def _wait_until_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the API exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise AssertionError(f"the API did not answer within {timeout}s:\n{self.log()}")

    def issue_token(self, project: str, user: str, *roles: str) -> str:
        """Through the CLI, as an operator would."""
        command = [sys.executable, "-m", "adapters.cli", "token", "issue", "--data-dir", str(self.data_dir),
                   "--project", project, "--user", user]
        for role in roles:
            command += ["--role", role]
        return subprocess.run(command, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the API ignored SIGTERM:\n{self.log()}") from None
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]
