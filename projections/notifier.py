"""The notifier: a projection of ``trove.events`` that publishes Trove's notifications, the API
lifecycle ones (``dbaas.<operation>.start/.end/.error``, decided by ``domain/api_lifecycle.py``) and the
usage ones billing reads (``trove.instance.*``, decided by ``domain/usage.py``).

Effectively once without Kafka transactions (the embedded broker does not filter aborted ones): a
batch's notifications are published and flushed inside ``apply_batch``, before the consumer runner
commits the open operations, the dedupe marks and the offsets in one SQL transaction. A crash before
that commit replays the batch and publishes the same messages again, with the same ``message_id``
(derived from the source event), so a consumer that dedupes by ``message_id`` sees each once; a crash
after it publishes nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import JSON, Column, MetaData, String, Table, delete, func, select
from sqlalchemy.orm import Session

from domain.api_lifecycle import ApiLifecycle
from domain.catalog import domain_catalog
from domain.notifications import INFO, Notification, NotificationContext, message_id_for, oslo_timestamp
from domain.public_events import PublicEvent
from domain.usage import InstanceUsage, UsageNotification
from projections.upsert import upsert_statement

metadata = MetaData()

# What the notifier remembers between events, as JSON by key.
notification_open_operations = Table(  # "<instance id>/<request id>" → the operation and its start traits
    "notification_open_operations",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", JSON, nullable=False),
)
notification_instances = Table(  # instance id → what its usage payloads need
    "notification_instances",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", JSON, nullable=False),
)

# What can open or close an operation or change billed usage; the runner skips the rest undecoded.
HANDLED = frozenset({"CreateRequested", "RestartRequested", "VolumeResizeRequested", "FlavorResizeRequested",
                     "StatusReset", "DeleteRequested", "Renamed", "OperationSucceeded", "OperationFailed",
                     "ServerProvisioned", "VolumeResized", "FlavorResized", "Deleted"})


class NotificationPublisher(Protocol):
    def publish(self, topic: str, key: bytes, value: bytes) -> None: ...

    def flush(self) -> None:
        """Return once everything published is acknowledged by the broker, or raise."""


class Notifier:
    name = "notifications"
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
        lifecycle = ApiLifecycle(self._host, _JsonRows(session, notification_open_operations))
        usage = InstanceUsage(_JsonRows(session, notification_instances))
        published = False
        for event in events:
            notifications = lifecycle.notifications(event)
            notifications += [self._usage(event, note) for note in usage.notifications(event)]
            for notification in notifications:
                self._publisher.publish(notification.topic(*self._topics, errors_on_info=self._errors_on_info),
                                        event.aggregate_id.encode(), notification.to_wire())
                published = True
        if published:
            self._publisher.flush()  # before the runner commits: what is committed has been published

    def _usage(self, event: PublicEvent, usage: UsageNotification) -> Notification:
        # Trove sends usage events with its bare host as publisher id.
        return Notification(message_id=message_id_for(event.event_id, usage.event_type), publisher_id=self._host,
                            event_type=usage.event_type, priority=INFO, payload=usage.payload,
                            timestamp=oslo_timestamp(datetime.fromisoformat(event.occurred_at)),
                            context=NotificationContext.of(event))


class _JsonRows(MutableMapping[str, Any]):
    """A key → JSON table as a mapping, inside the runner's transaction."""

    def __init__(self, session: Session, table: Table) -> None:
        self._session = session
        self._table = table

    def __getitem__(self, key: str) -> Any:
        value = self._session.execute(select(self._table.c.value).where(self._table.c.key == key)).scalar()
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        connection = self._session.connection()
        connection.execute(upsert_statement(connection, self._table, ["key"], ["value"]),
                           [{"key": key, "value": value}])

    def __delitem__(self, key: str) -> None:
        deleted = self._session.execute(delete(self._table).where(self._table.c.key == key))
        if not deleted.rowcount:  # type: ignore[attr-defined]
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._session.execute(select(self._table.c.key)).scalars().all())

    def __len__(self) -> int:
        return int(self._session.execute(select(func.count()).select_from(self._table)).scalar_one())
