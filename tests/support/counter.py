"""A deliberately small aggregate and read model for testing the event backbone.

It is test support, not product: the backbone must carry any aggregate's events, so its tests use
one whose effects are easy to check exactly (every application is a row; a counter's value is
the sum of its increments).
"""

from __future__ import annotations

import os

from eventsourcing.domain import Aggregate, event
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.orm import Session

from domain.public_events import EventCatalog, PublicEvent

UNLUCKY = 13  # an increment the read model refuses, to exercise the dead-letter path


class Counter(Aggregate):
    @event("CounterOpened")
    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    @event("CounterIncremented")
    def increment(self, by: int) -> None:
        self.value += by


COUNTER_EVENTS = (Counter.CounterOpened, Counter.CounterIncremented)

metadata = MetaData()

counters = Table(
    "test_counters", metadata,
    Column("aggregate_id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)

# One row per application, deliberately without a unique key: a duplicate effect shows up here.
applications = Table(
    "test_counter_applications", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("aggregate_id", String(64), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("pid", Integer, nullable=False),
)


class CounterProjection:
    name = "test-counters"
    metadata = metadata
    catalog = EventCatalog.of(COUNTER_EVENTS)

    def apply(self, event: PublicEvent, session: Session) -> None:
        self.apply_batch([event], session)

    def apply_batch(self, events: list[PublicEvent], session: Session) -> None:
        # The counters change one by one; the applications go in as one bulk INSERT, so the runner's
        # batch path and its fall back to ``apply`` (on an UNLUCKY increment) both run in the tests.
        for public_event in events:
            self._change_counter(public_event, session)
        if events:
            session.execute(insert(applications), [
                {"aggregate_id": e.aggregate_id, "version": e.version, "pid": os.getpid()} for e in events])

    @staticmethod
    def _change_counter(event: PublicEvent, session: Session) -> None:
        if event.type == "CounterOpened":
            session.execute(insert(counters).values(aggregate_id=event.aggregate_id, name=event.data["name"],
                                                    value=0, version=event.version))
        elif event.type == "CounterIncremented":
            if event.data["by"] == UNLUCKY:
                raise ValueError(f"the read model refuses an increment of {UNLUCKY}")
            current = session.execute(select(counters.c.value).where(
                counters.c.aggregate_id == event.aggregate_id)).scalar_one()
            session.execute(update(counters).where(counters.c.aggregate_id == event.aggregate_id)
                            .values(value=current + event.data["by"], version=event.version))
