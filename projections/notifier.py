"""The notifier: a projection of ``trove.events`` that publishes Trove's notifications, the API
lifecycle ones (``dbaas.<operation>.start/.end/.error``, decided by ``domain/api_lifecycle.py``), the
usage ones billing reads (``trove.instance.*``, decided by ``domain/usage.py``) and, when an audit period
ends, the periodic ``trove.instance.exists`` and ``dbaas.quota`` (``domain/periodic_usage.py``).

Effectively once without Kafka transactions (the embedded broker does not filter aborted ones): a
batch's notifications are published and flushed inside ``apply_batch``, before the consumer runner
commits the open operations, the dedupe marks and the offsets in one SQL transaction. A crash before
that commit replays the batch and publishes the same messages again, with the same ``message_id``
(derived from the source event), so a consumer that dedupes by ``message_id`` sees each once; a crash
after it publishes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from domain.api_lifecycle import ApiLifecycle
from domain.catalog import domain_catalog
from domain.notifications import (
    INFO,
    OPENING_EVENTS,
    Notification,
    NotificationContext,
    message_id_for,
    oslo_timestamp,
)
from domain.periodic_usage import EXISTS_EVENT_TYPE, QuotaUsage, period_notifications
from domain.public_events import PublicEvent
from domain.usage import InstanceUsage, UsageNotification
from projections.json_rows import JsonRows, json_rows_table

metadata = MetaData()

# What the notifier remembers between events, as JSON by key:
# "<instance id>/<request id>" → the operation and its start traits;
notification_open_operations = json_rows_table("notification_open_operations", metadata)
# instance id → what its usage payloads need;
notification_instances = json_rows_table("notification_instances", metadata)
# quota id → a tenant's limits, usage and reservations, for dbaas.quota.
notification_quotas = json_rows_table("notification_quotas", metadata)

# What can open or close an operation or change billed usage; the runner skips the rest undecoded.
HANDLED = frozenset({*OPENING_EVENTS, "OperationSucceeded", "OperationFailed",
                     "ServerProvisioned", "VolumeResized", "FlavorResized", "Deleted", "PeriodEnded",
                     "QuotaOpened", "QuotaReserved", "QuotaCommitted", "QuotaReservationReleased",
                     "QuotaUsageReleased", "QuotaLimitsChanged"})


class NotificationPublisher(Protocol):
    def publish(self, topic: str, key: bytes, value: bytes) -> None: ...

    def flush(self) -> None:
        """Return once everything published is acknowledged by the broker, or raise."""


class Notifier:
    name = "notifications"
    metadata = metadata
    handles = HANDLED

    def __init__(self, publisher: NotificationPublisher, host: str, *, info_topic: str = "notifications.info",
                 error_topic: str = "notifications.error", errors_on_info: bool = False,
                 quota_defaults: Mapping[str, int] | None = None,
                 partition_of: Callable[[str], int] = lambda _key: 0) -> None:
        """``partition_of`` maps an aggregate id to its partition of the event stream (an audit
        period's end reports on its own partition's instances and quotas); ``quota_defaults`` are the
        limits of tenants without their own."""
        self.catalog = domain_catalog()
        self._publisher = publisher
        self._host = host
        self._topics = (info_topic, error_topic)
        self._errors_on_info = errors_on_info
        self._quota_defaults = dict(quota_defaults or {})
        self._partition_of = partition_of

    def apply(self, event: PublicEvent, session: Session) -> None:
        self.apply_batch([event], session)

    def apply_batch(self, events: list[PublicEvent], session: Session) -> None:
        lifecycle = ApiLifecycle(self._host, JsonRows(session, notification_open_operations))
        instances, quotas = JsonRows(session, notification_instances), JsonRows(session, notification_quotas)
        usage, quota_usage = InstanceUsage(instances), QuotaUsage(quotas)
        published = False
        for event in events:
            quota_usage.fold(event)
            keyed = [(event.aggregate_id, note) for note in lifecycle.notifications(event)]
            keyed += [(event.aggregate_id, self._usage(event, note, event.event_id, self._host))
                      for note in usage.notifications(event)]
            periodic = period_notifications(event, self._on_partition(event), instances, quotas, usage,
                                            self._quota_defaults)
            keyed += [(key, self._periodic(event, subject, note)) for key, subject, note in periodic]
            for key, notification in keyed:
                self._publisher.publish(notification.topic(*self._topics, errors_on_info=self._errors_on_info),
                                        key.encode(), notification.to_wire())
                published = True
        if published:
            self._publisher.flush()  # before the runner commits: what is committed has been published

    def _on_partition(self, event: PublicEvent) -> Callable[[str], bool]:
        partition = event.data.get("partition")
        return lambda key: self._partition_of(key) == partition

    def _periodic(self, event: PublicEvent, subject: str, note: UsageNotification) -> Notification:
        # Trove: exists from ``taskmanager.<host>``, quota from the bare host. One period's notification of
        # one instance, or of one tenant's resource, has one message id, whoever replays it.
        publisher = f"taskmanager.{self._host}" if note.event_type == EXISTS_EVENT_TYPE else self._host
        return self._usage(event, note, f"{event.event_id}/{subject}", publisher,
                           NotificationContext(request_id=event.request_id, user_id=None,
                                               project_id=note.payload.get("tenant_id")))

    @staticmethod
    def _usage(event: PublicEvent, usage: UsageNotification, source: str, publisher_id: str,
               context: NotificationContext | None = None) -> Notification:
        # Trove sends usage events with its bare host as publisher id.
        return Notification(message_id=message_id_for(source, usage.event_type), publisher_id=publisher_id,
                            event_type=usage.event_type, priority=INFO, payload=usage.payload,
                            timestamp=oslo_timestamp(datetime.fromisoformat(event.occurred_at)),
                            context=context or NotificationContext.of(event))
