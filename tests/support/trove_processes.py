"""The write side's processes for tests: relay, task manager, conductor and simulated guests.

Each runs as the stack's own ``trove-es`` subprocess against the test's PostgreSQL database and the
session's broker, with topic names of its own; tests drive the write side through ``InstanceService``
and read the outcome from the event store, so nothing here depends on the read models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from adapters.event_store import event_store_env
from adapters.settings import Settings
from domain.context import OperationContext
from domain.instance import Instance
from services.instances import CreateInstance, InstanceService
from tests.support.stack import REPO_ROOT, StackProcess, read_topic, stack_settings, wait_for

CATALOG = json.loads((REPO_ROOT / "adapters" / "default_catalog.json").read_text())
TENANT = "tenant-a"


def closing_events(instances: InstanceService, instance_id: str, request_id: str) -> list[Any]:
    """The OperationSucceeded/OperationFailed events of one request, from the event store."""
    return [e for e in instances.repository.event_store.get(UUID(instance_id))
            if type(e).__name__ in ("OperationSucceeded", "OperationFailed") and e.request_id == request_id]


@dataclass
class WriteSide:
    settings: Settings
    env: dict[str, str]
    log_dir: Path
    instances: InstanceService
    processes: dict[str, StackProcess] = field(default_factory=dict)

    def start(self, *names: str) -> None:
        """Start processes by CLI command name: relay, task-manager, conductor, fake-guests."""
        for name in names:
            self.processes[name] = StackProcess(name, [name], self.env, self.log_dir)

    def start_notifier(self) -> None:
        self.processes["notifier"] = StackProcess("notifier", ["consume", "--projection", "notifications"],
                                                  self.env, self.log_dir)

    def notifications(self, request_id: str) -> list[dict[str, Any]]:
        """The API lifecycle notifications of ``request_id`` on both topics, deduped by message id, in order."""
        seen: dict[str, dict[str, Any]] = {}
        for topic in (self.settings.topics.notifications_info, self.settings.topics.notifications_error):
            for record in read_topic(self.settings.kafka_bootstrap_servers, topic, idle_s=0.5):
                message = json.loads(json.loads(record.value)["oslo.message"])
                if message["payload"].get("request_id") == request_id:
                    seen[message["message_id"]] = message
        return sorted(seen.values(), key=lambda m: m["timestamp"])

    def restart(self, name: str) -> None:
        self.processes[name] = StackProcess(f"{name}-again", [name], self.env, self.log_dir)

    def running(self) -> tuple[StackProcess, ...]:
        return tuple(self.processes.values())

    def create(self, name: str = "db", flavor: str = "2", volume_size: int | None = 2,
               request_id: str = "req-create") -> str:
        instance, _ = self.instances.create(
            OperationContext(request_id=request_id, tenant_id=TENANT, user_id="alice", client_ip="192.0.2.7"),
            CreateInstance(name=name, flavor_ref=flavor, volume_size=volume_size, datastore="mysql",
                           datastore_version=None, databases=["app"], users=["app_user"]))
        return str(instance.id)

    def context(self, request_id: str) -> OperationContext:
        return OperationContext(request_id=request_id, tenant_id=TENANT, user_id="alice", client_ip="192.0.2.7")

    def get(self, instance_id: str) -> Instance:
        return self.instances.get(instance_id)

    def events(self, instance_id: str) -> list[Any]:
        return list(self.instances.repository.event_store.get(UUID(instance_id)))

    def event_types(self, instance_id: str) -> list[str]:
        return [type(e).__name__ for e in self.events(instance_id)]

    def closing(self, instance_id: str, request_id: str) -> list[Any]:
        return closing_events(self.instances, instance_id, request_id)

    def wait_closed(self, instance_id: str, request_id: str, timeout: float = 60) -> Any:
        wait_for(lambda: bool(self.closing(instance_id, request_id)), timeout,
                 f"request {request_id} on {instance_id} to close", self.running())
        closing = self.closing(instance_id, request_id)
        assert len(closing) == 1, f"one closing event per request, got {closing}"
        return closing[0]

    def wait(self, condition: Any, what: str, timeout: float = 60) -> None:
        wait_for(condition, timeout, what, self.running())

    def stop_all(self) -> list[int]:
        return [process.terminate() for process in self.processes.values() if process.alive()]


def write_side(tmp_path: Path, bootstrap_servers: str, postgres_url: str, **overrides: str) -> Iterator[WriteSide]:
    """A fixture body: yields the write side, kills whatever is left running afterwards."""
    env_overrides = {"TROVE_ES_FAKE_COMPUTE_DELAY_S": "0", "TROVE_ES_REPORT_INTERVAL_S": "1", **overrides}
    settings, env = stack_settings(tmp_path, bootstrap_servers, postgres_url, postgres_url, **env_overrides)
    instances = InstanceService(env=event_store_env(settings.event_store_url), quota_defaults=settings.quota_defaults)
    instances.catalog.seed(CATALOG)
    side = WriteSide(settings, env, tmp_path / "logs", instances)
    try:
        yield side
    finally:
        for process in side.processes.values():
            if process.alive():
                process.kill9()
        instances.close()
