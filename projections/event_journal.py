"""The event journal: every public event as a row, the basis of audit timelines and admin queries."""

from __future__ import annotations

import json

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text, insert
from sqlalchemy.orm import Session

from domain.catalog import domain_catalog
from domain.public_events import PublicEvent

metadata = MetaData()

event_journal = Table(
    "event_journal",
    metadata,
    Column("aggregate_id", String(64), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("type", String(100), nullable=False),
    Column("aggregate_type", String(100), nullable=False),
    Column("occurred_at", String(40), nullable=False),
    Column("tenant_id", String(64)),
    Column("request_id", String(64)),
    Column("user_id", String(64)),
    Column("schema_version", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_event_journal_tenant_occurred", "tenant_id", "occurred_at"),
    Index("ix_event_journal_request", "request_id"),
)


class EventJournal:
    name = "event-journal"
    metadata = metadata
    background = True  # for audits and tools: nothing a user does waits on it

    def __init__(self) -> None:
        self.catalog = domain_catalog()

    def apply(self, event: PublicEvent, session: Session) -> None:
        self.apply_batch([event], session)

    def apply_batch(self, events: list[PublicEvent], session: Session) -> None:
        if events:
            session.execute(insert(event_journal), [_row(event) for event in events])


def _row(event: PublicEvent) -> dict[str, object]:
    return {"aggregate_id": event.aggregate_id, "version": event.version, "event_id": event.event_id,
            "type": event.type, "aggregate_type": event.aggregate_type, "occurred_at": event.occurred_at,
            "tenant_id": event.tenant_id, "request_id": event.request_id, "user_id": event.user_id,
            "schema_version": event.schema_version, "data": json.dumps(event.data, sort_keys=True)}
