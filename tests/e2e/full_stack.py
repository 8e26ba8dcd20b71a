"""The whole stack as deployed: ``trove-es up`` with the API under gunicorn, on PostgreSQL and a real broker.

Everything runs as the stack's own processes (relay, projections, task manager, conductor, simulated
guests, API); tests talk to it over HTTP only, as a user would, and read the event store only to check
what the API cannot show (one closing event per request).
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.event_store import open_application
from adapters.rest.local_tokens import LocalTokenAuthority
from services.instances import InstanceService
from tests.rest.served import ApiClient
from tests.support.stack import StackProcess, stack_settings, wait_for
from tests.support.trove_processes import closing_events


class FullStack(ApiClient):
    def __init__(self, work_dir: Path, bootstrap_servers: str, database_url: str, **overrides: str) -> None:
        self.settings, env = stack_settings(work_dir, bootstrap_servers, database_url, database_url, **overrides)
        self.env = env  # for `trove-es` commands run against this stack
        self.data_dir = self.settings.data_dir
        self.up = StackProcess("up", ["up", "--port", "0"], env, work_dir)
        stack_file = self.data_dir / "stack.json"
        self.wait(stack_file.exists, "stack.json")
        super().__init__(json.loads(stack_file.read_text())["api_endpoint"])
        self.authority = LocalTokenAuthority.for_data_dir(self.data_dir)
        self.admin_token = self.token("admin", "root", "admin")
        # Serving, and the catalog projected: a create names a flavor the API must find.
        self.wait(lambda: self._flavors_listed(), "the API to serve the projected catalog", timeout=120)
        self.store = open_application(InstanceService, database_url)

    def token(self, project: str, user: str, *roles: str) -> str:
        return self.authority.issue(project_id=project, user_id=user, roles=roles)

    def _flavors_listed(self) -> bool:
        try:
            code, body, _ = self.call("GET", "/v1.0/admin/flavors", self.admin_token)
        except (urllib.error.URLError, ConnectionError):
            return False
        return code == 200 and bool(body["flavors"])

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        try:
            wait_for(condition, timeout, what, (self.up,))
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{self.worker_logs()}") from None

    def show(self, tenant: str, token: str, instance_id: str) -> dict[str, Any] | int:
        """The instance's detail view, or the status code when there is none."""
        code, body, _ = self.call("GET", f"/v1.0/{tenant}/instances/{instance_id}", token)
        return body["instance"] if code == 200 else code

    def create(self, tenant: str, token: str, name: str, *, flavor: str = "2", size: int = 1,
               datastore: str = "mysql", status: str | None = "ACTIVE") -> str:
        """Create an instance through the API and, unless ``status`` is None, wait for it to show ``status``."""
        body = {"instance": {"name": name, "flavorRef": flavor, "volume": {"size": size},
                             "datastore": {"type": datastore}}}
        code, created, _ = self.call("POST", f"/v1.0/{tenant}/instances", token, body)
        assert code == 200, created
        instance_id = created["instance"]["id"]
        if status is not None:
            self.wait_status(tenant, token, instance_id, status, timeout=90)
        return instance_id

    def wait_status(self, tenant: str, token: str, instance_id: str, status: str | int,
                    timeout: float = 60) -> dict[str, Any] | int:
        def reached() -> bool:
            shown = self.show(tenant, token, instance_id)
            return shown == status if isinstance(status, int) else (
                isinstance(shown, dict) and shown["status"] == status)

        self.wait(reached, f"instance {instance_id} to show {status}", timeout)
        return self.show(tenant, token, instance_id)

    def closing_events(self, instance_id: str, request_id: str) -> list[Any]:
        return closing_events(self.store, instance_id, request_id)

    def wait_closed(self, instance_id: str, request_id: str) -> Any:
        """The one event that closed a request's operation."""
        self.wait(lambda: bool(self.closing_events(instance_id, request_id)), f"{request_id} to close")
        closing = self.closing_events(instance_id, request_id)
        assert len(closing) == 1, f"exactly one closing event per request, got {closing}"
        return closing[0]

    def worker_logs(self) -> str:
        # With the local driver, each instance's guest agent and datastore server log beside it too.
        logs = [*sorted((self.data_dir / "logs").glob("*.log")),
                *sorted((self.data_dir / "local-compute").glob("*/agent.log")),
                *sorted((self.data_dir / "local-compute").glob("*/run/*.log"))]
        return "\n".join(f"--- {path.relative_to(self.data_dir)} ---\n{path.read_text(errors='replace')[-3000:]}"
                         for path in logs)

    def stop(self) -> int:
        self.store.close()
        return self.up.terminate(timeout=40)
