"""``trove-es up``: one process that runs the whole embedded stack and stops it cleanly.

Each worker (relay, projections) is a child process, as it would be a separate deployment in
production; a child that dies is restarted with backoff, and Ctrl-C or SIGTERM stops every child
before the broker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from adapters.kafka.broker import EmbeddedBroker
from adapters.settings import Settings
from adapters.sql.engine import redacted

log = logging.getLogger(__name__)

# The project the printed tenant token and examples use.
DEMO_PROJECT = "demo"


@dataclass
class Worker:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_path: Path | None = field(default=None)


class Supervisor:
    def __init__(self, settings: Settings, workers: dict[str, list[str]]) -> None:
        self.settings = settings
        self.workers = [Worker(name, args) for name, args in workers.items()]
        self.broker: EmbeddedBroker | None = None
        self._stopping = False

    def run(self) -> int:
        data_dir = self.settings.data_dir
        (data_dir / "logs").mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        settings = self.settings
        if settings.uses_embedded_broker:
            self.broker = EmbeddedBroker(log_path=data_dir / "logs" / "broker.log").start()
            settings = settings.with_bootstrap_servers(self.broker.bootstrap_servers)
        env = {**os.environ, "TROVE_ES_DATA_DIR": str(data_dir),
               "TROVE_ES_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
        self._write_stack_file(settings)
        try:
            for worker in self.workers:
                worker.log_path = data_dir / "logs" / f"{worker.name}.log"
                self._start(worker, env)
            self._print_banner(settings)
            while not self._stopping:
                for worker in self.workers:
                    self._watch(worker, env)
                time.sleep(0.5)
        finally:
            self._stop_all()
            (data_dir / "stack.json").unlink(missing_ok=True)
        return 0

    def _request_stop(self, _signum: int, _frame: object) -> None:
        self._stopping = True

    def _start(self, worker: Worker, env: dict[str, str]) -> None:
        assert worker.log_path is not None
        with open(worker.log_path, "ab") as output:
            worker.process = subprocess.Popen([sys.executable, "-m", "adapters.cli", *worker.args],
                                              stdout=output, stderr=subprocess.STDOUT, env=env)
        log.info("started %s (pid %d), log: %s", worker.name, worker.process.pid, worker.log_path)

    def _watch(self, worker: Worker, env: dict[str, str]) -> None:
        if worker.process is None:
            if time.monotonic() >= worker.next_start:
                self._start(worker, env)
            return
        code = worker.process.poll()
        if code is None:
            return
        worker.process = None
        worker.restarts += 1
        delay = min(2 ** min(worker.restarts, 5), 30)
        worker.next_start = time.monotonic() + delay
        log.warning("%s exited with code %s; restarting in %ds (see %s)", worker.name, code, delay,
                    worker.log_path)

    def _stop_all(self) -> None:
        for worker in self.workers:
            if worker.process and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within 15s; killing it", worker.name)
                worker.process.kill()
                worker.process.wait()
        if self.broker:
            self.broker.stop()
        log.info("stack stopped")

    @staticmethod
    def api_endpoint(settings: Settings) -> str:
        host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "") else settings.api_host
        return f"http://{host}:{settings.api_port}"

    def _write_stack_file(self, settings: Settings) -> None:
        stack = {
            "pid": os.getpid(),
            "api_endpoint": self.api_endpoint(settings),
            "kafka_bootstrap_servers": settings.kafka_bootstrap_servers,
            "embedded_broker": settings.uses_embedded_broker or self.broker is not None,
            "event_store_url": redacted(settings.event_store_url),
            "read_model_url": redacted(settings.read_model_url),
            "topics": vars(settings.topics),
            "workers": [w.name for w in self.workers],
        }
        path = settings.data_dir / "stack.json"
        path.write_text(json.dumps(stack, indent=2) + "\n")

    def _print_banner(self, settings: Settings) -> None:
        endpoint = self.api_endpoint(settings)
        fake_note = {"fake": " (simulated servers and guests)",
                     "local": " (each instance a guest agent and a real database server on 127.0.0.1; they keep "
                              "running when this stops: delete them through the API)"}.get(settings.compute_driver, "")
        print(f"""
trove-es is running (data in {settings.data_dir}).
  API (Trove v1.0):        {endpoint}/v1.0   (OpenAPI: {endpoint}/v1.0/openapi.json)
  Kafka bootstrap servers: {settings.kafka_bootstrap_servers}{' (embedded tansu broker)' if self.broker else ''}
  Event store:             {redacted(settings.event_store_url)}
  Read models:             {redacted(settings.read_model_url)}
  Compute driver:          {settings.compute_driver}{fake_note}
  Workers:                 {', '.join(w.name for w in self.workers)} (logs in {settings.data_dir / 'logs'})
  Stack file:              {settings.data_dir / 'stack.json'}
{self._usage(settings, endpoint)}
Watch every domain event as it is published:
  .venv/bin/trove-es events tail --from-beginning
Notifications, in Ceilometer's format, go to {settings.topics.notifications_info} and
{settings.topics.notifications_error}; billed usage and operators' queries:
  .venv/bin/trove-es billing report --from {date.today()} --to {date.today() + timedelta(days=1)}
  .venv/bin/trove-es admin instances --status ERROR
Press Ctrl-C to stop.
""", flush=True)

    @staticmethod
    def _connect_hint(settings: Settings) -> str:
        if settings.compute_driver != "local":
            return ""
        return """Once it is ACTIVE, connect at the port its show gives in addresses[0].port:
  psql -h 127.0.0.1 -p PORT -U app appdb                      (password app-pa55word)
  mariadb -h 127.0.0.1 -P PORT -u app -p appdb                (for a mysql or mariadb instance)
"""

    def _usage(self, settings: Settings, endpoint: str) -> str:
        if settings.auth_mode != "local":
            return f"\nAuthenticate with a Keystone token ({settings.keystone_url}) in X-Auth-Token.\n"
        from adapters.rest.local_tokens import LocalTokenAuthority

        authority = LocalTokenAuthority.for_data_dir(settings.data_dir)
        tenant_token = authority.issue(project_id=DEMO_PROJECT, user_id="demo")
        admin_token = authority.issue(project_id="admin", user_id="admin", roles=("admin",))
        base = f"{endpoint}/v1.0/{DEMO_PROJECT}"
        return f"""
Tokens (valid 24 h; more with `.venv/bin/trove-es token issue --project P --user U [--role admin]`):
  tenant {DEMO_PROJECT}:  {tenant_token}
  admin:        {admin_token}

Create an instance and watch it go BUILD -> ACTIVE:
  TOKEN={tenant_token}
  curl -s -H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/json' {base}/instances \\
       -d '{{"instance": {{"name": "db1", "flavorRef": "2", "volume": {{"size": 1}},
            "datastore": {{"type": "postgresql"}}, "databases": [{{"name": "appdb"}}],
            "users": [{{"name": "app", "password": "app-pa55word", "databases": [{{"name": "appdb"}}]}}]}}}}'
  curl -s -H "X-Auth-Token: $TOKEN" {base}/instances
{self._connect_hint(settings)}
Or with python-troveclient:
  .venv/bin/python - <<'PY'
from keystoneauth1 import session, token_endpoint
from troveclient.v1 import client
trove = client.Client(session=session.Session(auth=token_endpoint.Token(
    "{base}", "{tenant_token}")))
db = trove.instances.create("db2", "2", volume={{"size": 1}}, datastore="mysql",
                            databases=[{{"name": "appdb"}}],
                            users=[{{"name": "app", "password": "app-pa55word", "databases": [{{"name": "appdb"}}]}}])
print(db.id, trove.instances.get(db.id).status)
PY
"""
