"""Audit periods: the clock of the periodic notifications (``trove.instance.exists``, ``dbaas.quota``).

Trove's task manager sends both from a timer, so every task manager sends them (duplicates) and a
restart shifts the period (gaps or overlaps). Here the end of a period is an event: each chain of
periods is an aggregate whose next period begins where the last one ended, so periods are
contiguous and never overlap, and two task managers closing the same period conflict in the event
store and only one of them records it. The notifier turns each ``PeriodEnded`` into the
notifications of that period, with message ids derived from it, so a replay re-emits them exactly.

A chain exists per partition of the event stream: its aggregate id is chosen to land on that
partition, so a period's end is ordered after every earlier event of the instances and quotas on the
same partition, and which instances existed in the period does not depend on how a consumer
interleaves partitions.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

EXISTS, QUOTA = "exists", "quota"
KINDS = (EXISTS, QUOTA)

_NAMESPACE = uuid.UUID("5a0f7d3e-2c4b-4e8a-9f61-3d2b7c9e0a14")


def audit_id(kind: str, partition: int, salt: int) -> uuid.UUID:
    """The id of ``kind``'s chain for ``partition``; the caller picks the ``salt`` that puts it there."""
    return uuid.uuid5(_NAMESPACE, f"{kind}/{partition}/{salt}")


def period_boundary(moment: datetime, interval_s: int) -> datetime:
    """The latest multiple of ``interval_s`` since the epoch at or before ``moment``: periods are aligned,
    so every chain, and every deployment with the same interval, cuts time at the same instants."""
    seconds = int(moment.timestamp()) // interval_s * interval_s
    return datetime.fromtimestamp(seconds, UTC)


class UsageAudit(Aggregate):
    """One chain of audit periods: what ``kind`` covers, on one partition, from ``began_at`` on."""

    @staticmethod
    def create_id(kind: str, partition: int, salt: int, **_: Any) -> uuid.UUID:
        return audit_id(kind, partition, salt)

    @event("AuditStarted")
    def __init__(self, context: dict[str, Any], kind: str, partition: int, salt: int, began_at: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown audit kind {kind!r}")
        self.kind = kind
        self.partition = partition
        self.salt = salt
        self.began_at = began_at
        self.period_beginning = began_at  # where the next period begins

    def due(self, now: datetime, interval_s: int) -> datetime | None:
        """The end of the period to close at ``now``, or ``None`` while the current one runs.

        After an outage the one period closed covers the whole gap: contiguity matters to billing,
        equal lengths do not, and one period is one notification per instance, not one per hour missed.
        """
        ending = period_boundary(now, interval_s)
        return ending if ending > datetime.fromisoformat(self.period_beginning) else None

    def end_period(self, context: dict[str, Any], ending: datetime) -> None:
        beginning = datetime.fromisoformat(self.period_beginning)
        if ending <= beginning:
            raise ValueError(f"a period must end after it begins ({ending.isoformat()} <= {beginning.isoformat()})")
        self._period_ended(context, self.kind, self.partition, self.period_beginning, ending.isoformat())

    @event("PeriodEnded")
    def _period_ended(self, context: dict[str, Any], kind: str, partition: int, beginning: str, ending: str) -> None:
        self.period_beginning = ending


USAGE_AUDIT_EVENTS: tuple[type, ...] = (UsageAudit.AuditStarted, UsageAudit.PeriodEnded)
