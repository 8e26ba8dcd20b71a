"""Instance faults (Trove's persist-error-message), folded from an instance's events.

Every failed operation of an instance is a fault: its ``OperationFailed`` event carries the message
and traceback of whatever failed (the compute driver's server fault, the guest's exception, the build
timeout), and the service that recorded it. A client's own mistake never is: the API refuses it
before anything is stored, so there is no event to fold.

Unlike Trove, which keeps one fault per instance and never clears it, every fault is kept, and the
one an instance shows is its latest *open* fault. A fault is resolved by

- a later success of the same operation (a restart that works after one that did not);
- a status reset (an operator has dealt with it);
- the datastore becoming healthy again, for a fault recorded while it was not healthy, except a
  failed create: an instance whose build failed stays in ERROR however its guest does later;
- the delete request that superseded the failed operation (the aggregate fails what a delete
  interrupts, in the same command; that is history, not a fault to show).

A condition the guest reports that is nobody's operation (``GuestFaultReported``: its volume is full,
so the datastore refuses writes) is a fault too, named by the condition, resolved when the guest
clears it (``GuestFaultCleared``: a resize gave it room) or by a status reset.

When the instance is deleted its faults are soft-deleted: admins still see them.

``message`` is at most 255 characters (Trove's column), cut with ``...``; ``details`` is the full
text: the service, then the traceback. Both are scrubbed of anything that looks like a password, in
case a datastore's error quoted the statement it failed on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.public_events import PublicEvent

MESSAGE_LIMIT = 255
_NAMESPACE = uuid.UUID("9d2f4b6a-1c3e-4f5a-8b7c-6d5e4f3a2b1c")
CREATE_OPERATION = "create"
HEALTHY = "healthy"

# "password=…", "password: …", "IDENTIFIED BY '…'", "PASSWORD '…'" and URLs with credentials.
_SECRETS = (
    (re.compile(r"(?i)(\bpass(?:word|wd)?\b\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"), r"\1***"),
    (re.compile(r"(?i)(\bidentified\s+by\s+(?:password\s+)?)('[^']*'|\"[^\"]*\"|\S+)"), r"\1'***'"),
    (re.compile(r"(?i)(\bpassword\s+)('[^']*'|\"[^\"]*\")"), r"\1'***'"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),
)


def scrubbed(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def truncated(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """Trove's ``format_output(message, truncate_len=255)``: at most ``limit`` characters, ``...`` when cut."""
    return message if len(message) <= limit else message[:limit - 3] + "..."


def fault_id(source_event_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, source_event_id))


@dataclass(frozen=True)
class FaultRecorded:
    fault: dict[str, Any]


@dataclass(frozen=True)
class FaultsResolved:
    fault_ids: tuple[str, ...]
    resolved_at: str
    resolved_by: str  # the event type that resolved them


@dataclass(frozen=True)
class FaultsDeleted:
    deleted_at: str


FaultChange = FaultRecorded | FaultsResolved | FaultsDeleted


def new_state() -> dict[str, Any]:
    """What the fold remembers of one instance: its open faults, and whether its datastore is healthy."""
    return {"healthy": False, "open": []}


def fold(state: dict[str, Any], event: PublicEvent) -> list[FaultChange]:
    """Apply one instance event to ``state`` (in place) and return what it changed in the fault history."""
    if event.aggregate_type != "Instance":
        return []
    data, kind = event.data, event.type
    if kind == "OperationFailed":
        context = data.get("context") or {}
        server_type = context.get("server_type") or "unknown"
        fault = {
            "id": fault_id(event.event_id), "instance_id": event.aggregate_id, "tenant_id": event.tenant_id,
            "operation": data["operation"], "request_id": data.get("request_id") or event.request_id,
            "server_type": server_type, "message": truncated(scrubbed(data.get("message") or "")),
            "details": scrubbed("\n".join([f"Server type: {server_type}", *(data.get("traceback") or [])])),
            "created": event.occurred_at, "version": event.version, "unhealthy": not state["healthy"],
        }
        state["open"].append(fault)
        return [FaultRecorded(fault)]
    if kind == "GuestFaultReported":
        fault = {
            "id": fault_id(event.event_id), "instance_id": event.aggregate_id, "tenant_id": event.tenant_id,
            "operation": data["condition"], "request_id": event.request_id, "server_type": "guest",
            "message": truncated(scrubbed(data["message"])),
            "details": scrubbed(f"Server type: guest\n{data['message']}"),
            "created": event.occurred_at, "version": event.version, "unhealthy": False,
        }
        state["open"].append(fault)
        return [FaultRecorded(fault)]
    if kind == "GuestFaultCleared":
        return _resolve(state, event, lambda f: f["operation"] == data["condition"])
    if kind == "ServiceStatusChanged":
        was_healthy, state["healthy"] = state["healthy"], data["service_status"] == HEALTHY
        if state["healthy"] and not was_healthy:
            return _resolve(state, event, lambda f: f["unhealthy"] and f["operation"] != CREATE_OPERATION)
        return []
    if kind == "OperationSucceeded":
        return _resolve(state, event, lambda f: f["operation"] == data["operation"])
    if kind == "StatusReset":
        state["healthy"] = False  # a reset leaves the datastore's status unknown
        return _resolve(state, event, lambda f: True)
    if kind == "DeleteRequested":
        return _resolve(state, event, lambda f: f["version"] == event.version - 1)
    if kind == "Deleted":
        state["healthy"] = False  # its datastore is gone, whatever the guest last said
        return [FaultsDeleted(event.occurred_at)]
    return []


def _resolve(state: dict[str, Any], event: PublicEvent, resolves: Any) -> list[FaultChange]:
    resolved = [f["id"] for f in state["open"] if resolves(f)]
    if not resolved:
        return []
    state["open"] = [f for f in state["open"] if f["id"] not in resolved]
    return [FaultsResolved(tuple(resolved), event.occurred_at, event.type)]


def current_fault(state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fault an instance shows: its latest open one."""
    if not state or not state.get("open"):
        return None
    return state["open"][-1]

