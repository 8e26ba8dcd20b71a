"""DBaaS API lifecycle notifications folded from the event stream: ``.start`` when an operation opens,
then exactly one ``.end`` or ``.error`` when it closes.

The aggregate guarantees the pairing (every opened operation is closed by one ``OperationSucceeded``
or ``OperationFailed``; a delete or reset first fails what was open), so the fold needs only the
start traits of each open operation to repeat them on its close. Those are kept in ``open_operations``,
a mapping the caller persists (a read model), so a restarted notifier closes what it opened.

The close carries the closing process's server type and address in its base traits (Trove's end
notification comes from the task manager or the guest, not the API), over the start's traits.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from domain.notifications import (
    END,
    ERROR,
    ERROR_PRIORITY,
    INFO,
    START,
    ApiNotification,
    Notification,
    NotificationContext,
    base_traits,
    message_id_for,
    notification_for,
    opened_operation,
    oslo_timestamp,
)
from domain.public_events import PublicEvent

OpenOperations = MutableMapping[str, dict[str, Any]]  # "<aggregate id>/<request id>" → operation and traits


class ApiLifecycle:
    def __init__(self, host: str, open_operations: OpenOperations) -> None:
        self._host = host
        self._open = open_operations

    def notifications(self, event: PublicEvent) -> list[Notification]:
        """What ``event`` notifies: nothing, a start, or the end or error of an operation it closes."""
        if event.type in ("OperationSucceeded", "OperationFailed"):
            return self._closed(event)
        opened = opened_operation(event)
        if opened is None:
            return []
        operation, traits = opened
        notification = notification_for(operation)
        if notification is None:
            return []  # an operation Trove keeps silent (a rename)
        self._open[_key(event.aggregate_id, event.request_id)] = {"operation": operation, "traits": traits}
        return [self._notification(event, notification, START, notification.payload(START, traits))]

    def _closed(self, event: PublicEvent) -> list[Notification]:
        request_id = event.data.get("request_id")
        opened = self._open.pop(_key(event.aggregate_id, request_id), None)
        if opened is None:
            return []  # a synchronous operation closing itself that Trove does not notify, or one never opened
        notification = notification_for(opened["operation"])
        if notification is None:
            return []
        closing = {key: value for key, value in base_traits(event).items() if key in ("server_ip", "server_type")
                   and value is not None}
        traits = {**opened["traits"], **closing}
        if event.type == "OperationSucceeded":
            return [self._notification(event, notification, END, notification.payload(END, traits))]
        traits.update(message=event.data.get("message") or "", exception=list(event.data.get("traceback") or []))
        return [self._notification(event, notification, ERROR, notification.payload(ERROR, traits))]

    def _notification(self, event: PublicEvent, notification: ApiNotification, stage: str,
                      payload: dict[str, Any]) -> Notification:
        event_type = notification.qualified(stage)
        return Notification(
            message_id=message_id_for(event.event_id, event_type),
            publisher_id=f"{payload.get('server_type') or 'api'}.{self._host}",
            event_type=event_type, priority=ERROR_PRIORITY if stage == ERROR else INFO, payload=payload,
            timestamp=oslo_timestamp(datetime.fromisoformat(event.occurred_at)),
            context=NotificationContext.of(event))


def _key(aggregate_id: str, request_id: str | None) -> str:
    return f"{aggregate_id}/{request_id}"
