"""The DBaaS API lifecycle notifier: a projection of ``trove.events`` that publishes Trove's
``dbaas.<operation>.start/.end/.error`` notifications (``domain/api_lifecycle.py`` decides what).

Effectively once without Kafka transactions (the embedded broker does not filter aborted ones): a
batch's notifications are published and flushed inside ``apply_batch``, before the consumer runner
commits the open operations, the dedupe marks and the offsets in one SQL transaction. A crash before
that commit replays the batch and publishes the same messages again, with the same ``message_id``
(derived from the source event), so a consumer that dedupes by ``message_id`` sees each once; a crash
after it publishes nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol

from sqlalchemy import JSON, Column, MetaData, String, Table, delete, func, select
from sqlalchemy.orm import Session

from domain.api_lifecycle import ApiLifecycle
from domain.catalog import domain_catalog
from domain.public_events import PublicEvent
from projections.upsert import upsert_statement

metadata = MetaData()

notification_open_operations = Table(
    "notification_open_operations",
    metadata,
    Column("key", String(200), primary_key=True),  # "<instance id>/<request id>"
    Column("operation", String(64), nullable=False),
    Column("traits", JSON, nullable=False),
)

# What can open or close an operation; the runner skips everything else undecoded.
HANDLED = frozenset({"CreateRequested", "RestartRequested", "VolumeResizeRequested", "FlavorResizeRequested",
                     "StatusReset", "DeleteRequested", "Renamed", "OperationSucceeded", "OperationFailed"})


class NotificationPublisher(Protocol):
    def publish(self, topic: str, key: bytes, value: bytes) -> None: ...

    def flush(self) -> None:
        """Return once everything published is acknowledged by the broker, or raise."""


class ApiNotifications:
    name = "api-notifications"
    metadata = metadata
    handles = HANDLED

    def __init__(self, publisher: NotificationPublisher, host: str, *, info_topic: str = "notifications.info",
                 error_topic: str = "notifications.error", errors_on_info: bool = False) -> None:
        self.catalog = domain_catalog()
        self._publisher = publisher
        self._host = host
        self._topics = (info_topic, error_topic)
        self._errors_on_info = errors_on_info

    def apply(self, event: PublicEvent, session: Session) -> None:
        self.apply_batch([event], session)

    def apply_batch(self, events: list[PublicEvent], session: Session) -> None:
        lifecycle = ApiLifecycle(self._host, _OpenOperations(session))
        published = False
        for event in events:
            for notification in lifecycle.notifications(event):
                self._publisher.publish(notification.topic(*self._topics, errors_on_info=self._errors_on_info),
                                        event.aggregate_id.encode(), notification.to_wire())
                published = True
        if published:
            self._publisher.flush()  # before the runner commits: what is committed has been published


class _OpenOperations(MutableMapping[str, dict[str, Any]]):
    """``ApiLifecycle``'s open operations as rows, inside the runner's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __getitem__(self, key: str) -> dict[str, Any]:
        row = self._session.execute(select(notification_open_operations.c.operation,
                                           notification_open_operations.c.traits)
                                    .where(notification_open_operations.c.key == key)).first()
        if row is None:
            raise KeyError(key)
        return {"operation": row.operation, "traits": row.traits}

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        connection = self._session.connection()
        connection.execute(upsert_statement(connection, notification_open_operations, ["key"],
                                            ["operation", "traits"]),
                           [{"key": key, "operation": value["operation"], "traits": value["traits"]}])

    def __delitem__(self, key: str) -> None:
        deleted = self._session.execute(delete(notification_open_operations)
                                        .where(notification_open_operations.c.key == key))
        if not deleted.rowcount:  # type: ignore[attr-defined]
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._session.execute(select(notification_open_operations.c.key)).scalars().all())

    def __len__(self) -> int:
        return int(self._session.execute(select(func.count()).select_from(notification_open_operations))
                   .scalar_one())
