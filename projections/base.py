"""What a projection is: named, owning some tables, applying public events inside a SQL session.

A projection never commits, never reads Kafka and never sees an offset: the consumer runner owns
the transaction, so the projection's writes, the dedupe marks and the offsets land together.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from domain.public_events import EventCatalog, PublicEvent


class Projection(Protocol):
    #: Consumer name; its Kafka group is ``<prefix>.<name>``.
    name: str
    #: The tables it owns, created before it first runs.
    metadata: MetaData
    #: The event types this projection's deployment publishes; anything else is refused.
    catalog: EventCatalog

    def apply(self, event: PublicEvent, session: Session) -> None: ...

    # A projection may also name the event types it takes in ``handles`` (a frozenset): the runner then
    # skips the others without decoding them, and a batch of only those opens no transaction.
    #
    # A projection no request waits on (an audit journal, the operator-managed catalog) may say
    # ``background = True``: its consumer then parks fetches longer, trading a few hundred milliseconds of
    # lag for far fewer empty fetches while the stream is idle.
    #
    # A projection whose metadata also holds tables others write (created beside its own so reads can join
    # them) names its own in ``rebuilt_tables``: ``trove-es replay`` compares and swaps only those.
    #
    # A projection may also define ``apply_batch(events: list[PublicEvent], session)``, applying a
    # whole batch in order with the same effect as ``apply`` on each. The runner uses it on its fast
    # path (a bulk INSERT is many times cheaper than one per event) and falls back to ``apply``, one
    # savepoint per event, when a batch fails.
