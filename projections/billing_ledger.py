"""The billing ledger: a consumer of the notification topics (not of ``trove.events``), as a billing
system beside Ceilometer would be, keeping usage segments in SQL (``domain/billing.py``).

Idempotent by ``message_id``: the notifier may publish a notification twice (a crash between its
publish and its commit), and each message is applied in the consumer runner's transaction together
with the record that it was; a second copy finds that record and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from domain.billing import (
    BILLED_EVENT_TYPES,
    EXISTS,
    Segment,
    UsageLine,
    UsageMessage,
    ledger_change,
    moment,
    usage_lines,
)

metadata = MetaData()

billing_messages = Table(  # every message applied, so a second copy is not
    "billing_messages",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("instance_id", String(64)),
)
billing_segments = Table(
    "billing_segments",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("instance_id", String(64), nullable=False),
    Column("datastore", String(64), nullable=False),
    Column("flavor_id", String(64), nullable=False),
    Column("instance_type", String(255)),
    Column("instance_size", Integer, nullable=False),
    Column("volume_size", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    # A report reads one tenant's segments that overlap its window; closing reads an instance's open one.
    Index("ix_billing_segments_tenant_started", "tenant_id", "started_at"),
    Index("ix_billing_segments_instance_open", "instance_id", "ended_at"),
)
billing_exists = Table(  # the exists periods, to check the ledger against the meter Ceilometer derives
    "billing_exists",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("instance_id", String(64), nullable=False),
    Column("beginning", DateTime(timezone=True), nullable=False),
    Column("ending", DateTime(timezone=True), nullable=False),
    Index("ix_billing_exists_tenant_ending", "tenant_id", "ending"),
)


class BillingLedger:
    name = "billing"
    metadata = metadata
    # A segment's id is a counter, in whatever order the two topics were read; what names it is this.
    compare_keys = {"billing_segments": ("instance_id", "started_at")}

    def apply(self, message: UsageMessage, session: Session) -> None:
        if message.event_type not in BILLED_EVENT_TYPES:
            return  # API lifecycle and quota notifications bill nothing
        instance_id = message.payload.get("instance_id")
        seen = session.execute(select(billing_messages.c.message_id)
                               .where(billing_messages.c.message_id == message.message_id)).first()
        if seen is not None:
            return
        session.execute(insert(billing_messages).values(message_id=message.message_id,
                                                        event_type=message.event_type, instance_id=instance_id))
        if message.event_type == EXISTS:
            session.execute(insert(billing_exists).values(
                message_id=message.message_id, tenant_id=message.payload["tenant_id"], instance_id=instance_id,
                beginning=moment(message.payload["audit_period_beginning"]),
                ending=moment(message.payload["audit_period_ending"])))
            return
        change = ledger_change(message)
        if change.closes_at is not None:
            session.execute(update(billing_segments)
                            .where(billing_segments.c.instance_id == instance_id, billing_segments.c.ended_at.is_(None))
                            .values(ended_at=change.closes_at))
        if change.opens is not None:
            opened = change.opens
            session.execute(insert(billing_segments).values(
                tenant_id=opened.tenant_id, instance_id=opened.instance_id, datastore=opened.datastore,
                flavor_id=opened.flavor_id, instance_type=opened.instance_type, instance_size=opened.instance_size,
                volume_size=opened.volume_size, started_at=opened.started_at))


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BillingQueries:
    def __init__(self, reader: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        """``reader``: an engine for queries only (``adapters.sql.engine.read_only``)."""
        self._reader = reader
        self._clock = clock

    def usage(self, start: datetime, end: datetime, tenant_id: str | None = None) -> list[UsageLine]:
        """Usage within [start, end) of one tenant, or of all; a running segment counts up to now."""
        until = min(end, self._clock())  # a running segment has not been used past now
        if until <= start:
            return []
        overlapping = and_(billing_segments.c.started_at < until,
                           or_(billing_segments.c.ended_at.is_(None), billing_segments.c.ended_at > start))
        query = select(billing_segments).where(overlapping)
        if tenant_id is not None:
            query = query.where(billing_segments.c.tenant_id == tenant_id)
        with self._reader.connect() as connection:
            segments = [Segment(tenant_id=row.tenant_id, instance_id=row.instance_id, datastore=row.datastore,
                                flavor_id=row.flavor_id, instance_type=row.instance_type,
                                instance_size=row.instance_size, volume_size=row.volume_size,
                                started_at=_aware(row.started_at), ended_at=_aware(row.ended_at))
                        for row in connection.execute(query)]
        return usage_lines(segments, start, until)

    def exists_seconds(self, instance_id: str) -> float:
        """Seconds the instance's ``trove.instance.exists`` periods cover: what the meter would bill."""
        with self._reader.connect() as connection:
            rows = connection.execute(select(billing_exists.c.beginning, billing_exists.c.ending)
                                      .where(billing_exists.c.instance_id == instance_id)).all()
        return sum((_aware(ending) - _aware(beginning)).total_seconds() for beginning, ending in rows)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
