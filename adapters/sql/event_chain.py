"""The recorded hash chain of the event store (``domain.audit_chain``), beside it in its own database.

``event_chain`` holds one link per stored event, by its position in the log; ``audit_checkpoints``
the signed log hash every ``checkpoint_every`` links, and at the latest ``checkpoint_interval_s``
after the last checkpoint when links came since (the relay asks while it idles). Only the relay (one
at a time, by its lease) extends the chain, in the log's order, before it publishes what it chained.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, Index, MetaData, String, Table, func, insert, select

from adapters.event_store import log_batches
from adapters.sql.schema import create_tables
from domain.audit_chain import GENESIS, Chainer, ChainLink, Checkpoint, StoredEvent, sign

log = logging.getLogger(__name__)

metadata = MetaData()

event_chain = Table(
    "event_chain",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("previous_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("log_hash", String(64), nullable=False),
    Index("ix_event_chain_aggregate", "aggregate_id", "position"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("events", BigInteger, nullable=False),
    Column("log_hash", String(64), nullable=False),
    Column("signature", String(64), nullable=False),
    Column("recorded_at", String(40), nullable=False),
)

_HEADS_CACHED = 100_000  # aggregates whose last hash is kept in memory; others are read back
READ_BATCH = 5_000


class SqlEventChain:
    """Extends and reads the recorded chain. ``key`` signs checkpoints (``adapters.secret_files.audit_key``)."""

    def __init__(self, engine: Engine, key: bytes, *, checkpoint_every: int = 1000,
                 checkpoint_interval_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._key = key
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval_s = checkpoint_interval_s
        self._clock = clock
        self._chainer: Chainer | None = None
        self._heads: OrderedDict[str, str] = OrderedDict()
        self._last_position = 0
        self._checkpointed: tuple[int, float] = (0, clock())  # links the last checkpoint covers, and when
        create_tables(engine, metadata)

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def last_position(self) -> int:
        """The position of the last chained event (0: none yet)."""
        self._load()
        return self._last_position

    def extend(self, events: Sequence[StoredEvent]) -> list[ChainLink]:
        """The links of ``events`` (in log order), chaining those not chained yet. An event chained before
        is given its recorded link; if the store now holds other bytes for it, that is logged as an error."""
        chainer = self._load()
        links: list[ChainLink] = []
        known = [e for e in events if e.position <= self._last_position]
        if known:
            links.extend(self._recorded(known))
        fresh = [e for e in events if e.position > self._last_position]
        if not fresh:
            return links
        self._prime_heads({e.aggregate_id for e in fresh})
        new_links = [chainer.link(event) for event in fresh]
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(event_chain), [_row(link) for link in new_links])
                checkpoint = self._checkpoint_due(new_links[-1], chainer.events)
                if checkpoint is not None:
                    connection.execute(insert(audit_checkpoints), [vars(checkpoint)])
        except BaseException:
            self._chainer = None  # linked in memory but not recorded: read the chain back next time
            self._heads.clear()
            raise
        for link in new_links:
            self._remember(link.aggregate_id, link.hash)
        self._forget_least_recent()
        self._last_position = new_links[-1].position
        if checkpoint is not None:
            self._checkpointed = (checkpoint.events, self._clock())
        return links + new_links

    def checkpoint(self, *, only_if_due: bool = False) -> Checkpoint | None:
        """Sign the chain as it stands now, if the last checkpoint does not cover it already; with
        ``only_if_due``, only once ``checkpoint_interval_s`` has passed since the last one."""
        chainer = self._load()
        covered, since = self._checkpointed
        if chainer.events == covered or self._last_position == 0:
            return None
        if only_if_due and self._clock() - since < self._checkpoint_interval_s:
            return None
        with self._engine.connect() as connection:
            last = connection.execute(select(event_chain).where(event_chain.c.position == self._last_position)).one()
        checkpoint = sign(self._key, _link(last), chainer.events, _now())
        with self._engine.begin() as connection:
            connection.execute(insert(audit_checkpoints), [vars(checkpoint)])
        self._checkpointed = (checkpoint.events, self._clock())
        return checkpoint

    def links(self, after: int = 0, upto: int | None = None) -> Iterator[ChainLink]:
        """Every recorded link after position ``after`` (up to ``upto``), in order, read in batches."""
        while True:
            query = select(event_chain).where(event_chain.c.position > after)
            if upto is not None:
                query = query.where(event_chain.c.position <= upto)
            with self._engine.connect() as connection:
                rows = connection.execute(query.order_by(event_chain.c.position).limit(READ_BATCH)).all()
            yield from (_link(row) for row in rows)
            if len(rows) < READ_BATCH:
                return
            after = rows[-1].position

    def checkpoints(self) -> list[Checkpoint]:
        with self._engine.connect() as connection:
            rows = connection.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.position)).all()
        return [Checkpoint(row.position, row.events, row.log_hash, row.signature, row.recorded_at) for row in rows]

    # -----------------------------------------------------------------------------------------------

    def _load(self) -> Chainer:
        if self._chainer is None:
            with self._engine.connect() as connection:
                last = connection.execute(select(event_chain).order_by(event_chain.c.position.desc()).limit(1)).first()
                count = connection.execute(select(func.count()).select_from(event_chain)).scalar_one()
                covered = connection.execute(select(func.max(audit_checkpoints.c.events))).scalar()
            self._chainer = Chainer(self._heads, log=last.log_hash if last else GENESIS, events=count)
            self._last_position = last.position if last else 0
            self._checkpointed = (covered or 0, self._clock())
        return self._chainer

    def _recorded(self, events: Sequence[StoredEvent]) -> list[ChainLink]:
        positions = [e.position for e in events]
        with self._engine.connect() as connection:
            rows = connection.execute(select(event_chain).where(event_chain.c.position.in_(positions))).all()
        recorded = {row.position: _link(row) for row in rows}
        links = []
        for event in events:
            link = recorded.get(event.position)
            if link is None or link.digest != event.digest:
                log.error("the event store's event at position %d (aggregate %s version %d) is not what was "
                          "chained; run `trove-es audit verify` to see what changed", event.position,
                          event.aggregate_id, event.version)
            if link is not None:
                links.append(link)
        return links

    def _prime_heads(self, aggregate_ids: set[str]) -> None:
        unknown = [a for a in aggregate_ids if a not in self._heads]
        if not unknown:
            return
        latest = (select(event_chain.c.aggregate_id, func.max(event_chain.c.position).label("position"))
                  .where(event_chain.c.aggregate_id.in_(unknown)).group_by(event_chain.c.aggregate_id).subquery())
        with self._engine.connect() as connection:
            rows = connection.execute(select(event_chain.c.aggregate_id, event_chain.c.hash).join(
                latest, event_chain.c.position == latest.c.position)).all()
        for row in rows:
            self._remember(row.aggregate_id, row.hash)

    def _remember(self, aggregate_id: str, hash_: str) -> None:
        self._heads[aggregate_id] = hash_
        self._heads.move_to_end(aggregate_id)

    def _forget_least_recent(self) -> None:
        # Only between batches: a batch's aggregates must all have their heads while it is linked.
        while len(self._heads) > _HEADS_CACHED:
            self._heads.popitem(last=False)

    def _checkpoint_due(self, last: ChainLink, events: int) -> Checkpoint | None:
        covered, since = self._checkpointed
        if events - covered >= self._checkpoint_every or self._clock() - since >= self._checkpoint_interval_s:
            return sign(self._key, last, events, _now())
        return None


def stored_event(notification: Any) -> StoredEvent:
    """One of the event store's notifications as the chain sees it: its position and what is stored."""
    return StoredEvent(notification.id, str(notification.originator_id), int(notification.originator_version),
                       notification.topic, bytes(notification.state))


def store_events(recorder: Any, after: int = 0, upto: int | None = None) -> Iterator[StoredEvent]:
    """The event store's log after position ``after`` (up to ``upto``), in order."""
    for notifications in log_batches(recorder, after, READ_BATCH, upto):
        yield from (stored_event(n) for n in notifications)


def _row(link: ChainLink) -> dict[str, Any]:
    return {"position": link.position, "aggregate_id": link.aggregate_id, "version": link.version,
            "digest": link.digest, "previous_hash": link.previous_hash, "hash": link.hash, "log_hash": link.log_hash}


def _link(row: Any) -> ChainLink:
    return ChainLink(row.position, row.aggregate_id, row.version, row.digest, row.previous_hash, row.hash,
                     row.log_hash)


def _now() -> str:
    return datetime.now(UTC).isoformat()
