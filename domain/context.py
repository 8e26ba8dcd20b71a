"""The operation context every event carries: who asked, from where, and which request it was.

Trove threads a ``TroveContext`` from the API through the task manager to the guest and back, and
its notifications read ``request_id``, ``tenant_id``, ``client_ip``, ``server_ip`` and
``server_type`` from it. Here the context is recorded on every event instead, so notifications,
faults and audit are projections of the stream rather than side effects of whichever process ran.
The caller's roles are recorded (what they were allowed to do is part of what happened, and
notifications' ``_context`` reports them); tokens never are: they are credentials, not history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

ADMIN_ROLE = "admin"  # the role Trove's default policy takes for an admin


@dataclass(frozen=True)
class OperationContext:
    request_id: str
    tenant_id: str
    user_id: str | None = None
    client_ip: str | None = None
    server_ip: str | None = None
    server_type: str = "api"
    roles: tuple[str, ...] = ()

    def recorded(self) -> dict[str, Any]:
        """The form stored on events."""
        recorded = asdict(self)
        recorded["roles"] = list(self.roles)
        return recorded

    def carried_by(self, server_type: str, server_ip: str | None) -> OperationContext:
        """The same operation, continued by another service (task manager, conductor)."""
        return replace(self, server_type=server_type, server_ip=server_ip)

    @classmethod
    def from_recorded(cls, recorded: dict[str, Any]) -> OperationContext:
        fields = {name: recorded.get(name) for name in cls.__dataclass_fields__ if name in recorded}
        fields["roles"] = tuple(fields.get("roles") or ())
        return cls(**fields)
