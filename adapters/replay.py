"""``trove-es replay <projection>``: rebuild a projection from the start of history into a shadow, compare it
with the live one, and swap it in.

- **Shadow.** On PostgreSQL the shadow is a schema of the projection's database (``shadow_<name>``), on
  SQLite a file beside the projection's (``shadow-<name>.db``). It holds the projection's own tables,
  the dedupe marks (``consumer_marks``, group ``replay``) and how far the replay got (``replay_positions``),
  written in the transaction of each batch, so an interrupted replay resumes where it stopped.
- **Source.** ``kafka`` reads ``trove.events`` from its first offset up to the end it had when the replay
  started; ``store`` reads the event store's log, for when Kafka no longer holds the history; ``auto``
  takes Kafka when every partition still starts at offset 0, the store otherwise. Both give each
  aggregate's events in order, and the projection is the live one's code, so a rebuild gives the rows
  the live projection has (``--verify`` shows any that differ) and two rebuilds give the same rows.
- **Swap.** One transaction on the live database replaces the projection's rows and dedupe marks with
  the shadow's, and marks the live consumer's stored offsets as of another incarnation of the topic.
  The live consumer, running or not, then reads the topic from its start again and applies only what
  the shadow lacks (its marks drop the rest): nothing is lost between the replay's end and the swap.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from adapters.event_store import log_batches
from adapters.progress import Progress
from adapters.settings import Settings
from adapters.sql.engine import create_sql_engine
from adapters.sql.schema import create_tables
from adapters.sql.tracking import consumer_marks, consumer_offsets
from domain.public_events import EventCatalog, PublicEvent, PublicEventError, to_public_event
from projections.base import Projection
from projections.upsert import upsert_statement

log = logging.getLogger(__name__)

REPLAY_GROUP = "replay"
STORE = "store"  # the topic name a store replay's position is kept under
REPLAYED = "replayed:"  # prefix a swap puts on the live consumer's stored topic ids

replay_metadata = MetaData()
replay_positions = Table(
    "replay_positions",
    replay_metadata,
    Column("topic", String(249), primary_key=True),  # a Kafka topic, or ``store``
    Column("partition", BigInteger, primary_key=True, autoincrement=False),
    Column("next_position", BigInteger, nullable=False),  # the next offset, or the last notification id
    Column("topic_id", String(64), nullable=False),  # the topic's incarnation the offsets belong to ('' for the store)
)


class ReplayError(RuntimeError):
    """The replay cannot go on; the text says what to do."""


@dataclass(frozen=True)
class Shadow:
    """Where a projection's rebuild is written: its engine, and how the live database names it."""

    live_url: str = field(repr=False)  # URLs may hold a password
    url: str = field(repr=False)
    schema: str | None  # PostgreSQL: the shadow's schema
    path: Path | None  # SQLite: the shadow's file

    @classmethod
    def of(cls, projection_name: str, live_url: str) -> Shadow:
        schema = "shadow_" + "".join(c if c.isalnum() else "_" for c in projection_name.lower())
        parsed = make_url(live_url)
        if parsed.get_backend_name() == "sqlite":
            path = Path(parsed.database or "").parent / f"shadow-{projection_name}.db"
            return cls(live_url, f"sqlite:///{path}", None, path)
        shadow = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
        return cls(live_url, shadow.render_as_string(hide_password=False), schema, None)

    def create(self) -> Engine:
        if self.schema is not None:
            self._on_live(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        return create_sql_engine(self.url, pool_size=2)

    def drop(self) -> None:
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return
        self._on_live(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def _on_live(self, statement: str) -> None:
        """One statement on the live database, where a PostgreSQL shadow's schema lives."""
        live = create_sql_engine(self.live_url, pool_size=1)
        try:
            with live.begin() as connection:
                connection.execute(text(statement))
        finally:
            live.dispose()


class Replayer:
    """Applies history to a projection in a shadow, a batch per transaction, with its position."""

    def __init__(self, projection: Projection, engine: Engine) -> None:
        self.projection = projection
        self.engine = engine
        create_tables(engine, projection.metadata)
        create_tables(engine, consumer_marks.metadata, [consumer_marks])
        create_tables(engine, replay_metadata)
        self._handles: frozenset[str] | None = getattr(projection, "handles", None)
        self._apply_batch: Callable[[list[PublicEvent], Session], None] | None = getattr(
            projection, "apply_batch", None)
        self._marks = self._load_marks()
        self.applied = 0
        self.skipped = 0  # events the projection refused (the live consumer dead-lettered them too)

    def positions(self) -> dict[tuple[str, int], int]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(replay_positions)).all()
        return {(row.topic, row.partition): row.next_position for row in rows}

    def incarnations(self) -> dict[str, str]:
        """The topic id each topic's stored offsets belong to."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(replay_positions.c.topic, replay_positions.c.topic_id)).all()
        return {row.topic: row.topic_id for row in rows}

    def apply(self, events: Sequence[Any], positions: dict[tuple[str, int], int],
              incarnations: Mapping[str, str] | None = None) -> None:
        """Apply ``events`` (each aggregate's in order) and record ``positions`` (of topics whose ids are
        ``incarnations``), in one transaction. An event the projection refuses is skipped and logged, as the
        live consumer dead-letters it, so one bad event does not stop the rebuild."""
        fresh, changed = [], {}
        for event in events:
            if self._handles is not None and event.type not in self._handles:
                continue
            dedupe = event.dedupe_key  # None: the projection dedupes itself (the ledger, by message id)
            if dedupe is not None:
                key, version = dedupe
                if version <= changed.get(key, self._marks.get(key, 0)):
                    continue  # a repeat (the relay resends after a crash)
                changed[key] = version
            fresh.append(event)
        with Session(self.engine) as session, session.begin():
            if fresh:
                try:
                    with session.begin_nested():
                        self._apply_all(fresh, session)
                except (OperationalError, InterfaceError):
                    raise
                except Exception:
                    for event in fresh:  # one savepoint each: only the refused ones are left out
                        try:
                            with session.begin_nested():
                                self.projection.apply(event, session)
                        except (OperationalError, InterfaceError):
                            raise
                        except Exception as exc:
                            self.skipped += 1
                            log.warning("skipped %s (%s v%s): %s", getattr(event, "type", "a message"),
                                        getattr(event, "aggregate_id", "?"), getattr(event, "version", "?"), exc)
            connection = session.connection()
            if changed:
                connection.execute(upsert_statement(connection, consumer_marks, ["group_id", "aggregate_id"],
                                                    ["version"]),
                                   [{"group_id": REPLAY_GROUP, "aggregate_id": a, "version": v}
                                    for a, v in changed.items()])
            if positions:
                connection.execute(upsert_statement(connection, replay_positions, ["topic", "partition"],
                                                    ["next_position", "topic_id"]),
                                   [{"topic": t, "partition": p, "next_position": n,
                                     "topic_id": (incarnations or {}).get(t, "")} for (t, p), n in positions.items()])
        self._marks.update(changed)
        self.applied += len(fresh)

    def _apply_all(self, events: list[Any], session: Session) -> None:
        if self._apply_batch is not None:
            self._apply_batch(events, session)
        else:
            for event in events:
                self.projection.apply(event, session)

    def _load_marks(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(consumer_marks.c.aggregate_id, consumer_marks.c.version)
                                      .where(consumer_marks.c.group_id == REPLAY_GROUP)).all()
        return {row.aggregate_id: row.version for row in rows}


# Sources ---------------------------------------------------------------------------------------------

def store_batches(application: Any, after: int, batch: int) -> Iterator[tuple[list[PublicEvent], int]]:
    """The event store's log after notification ``after``, as public events, with each batch's last id."""
    to_domain_event = application.mapper.to_domain_event
    for notifications in log_batches(application.recorder, after, batch):
        yield [to_public_event(to_domain_event(n)) for n in notifications], notifications[-1].id


class KafkaHistory:
    """Topics read from their first offsets (or where a replay stopped) to the ends they had at the start.

    The end is each partition's high watermark as the first fetch reports it: the broker the tests and
    the embedded stack run (tansu) answers a ListOffsets for the latest offset wrongly, its fetches do not.
    """

    def __init__(self, bootstrap_servers: str, topics: Sequence[str], *, timeout_s: float = 30.0) -> None:
        self.topics = tuple(topics)
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                       auto_offset_reset="earliest", max_poll_records=2000)
        self.partitions = []
        for topic in self.topics:
            found = self._consumer.partitions_for_topic(topic)
            if not found:
                self._consumer.close()
                raise ReplayError(f"topic {topic} does not exist on the broker; replay --from store instead")
            self.partitions.extend(TopicPartition(topic, p) for p in sorted(found))
        cluster = self._consumer._client.cluster  # the topic ids (KIP-516), as the consumer runner reads them
        self.incarnations = {topic: str(cluster.topic_id(topic) or "") for topic in self.topics}
        self.beginning = self._consumer.beginning_offsets(self.partitions)
        self.end = self._high_watermarks(timeout_s)

    def _high_watermarks(self, timeout_s: float) -> dict[TopicPartition, int]:
        consumer = self._consumer
        consumer.assign(self.partitions)
        consumer.seek_to_beginning(*self.partitions)
        ends: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(ends) < len(self.partitions):
            if time.monotonic() > deadline:
                self._consumer.close()
                raise ReplayError(f"the broker did not say how far {', '.join(self.topics)} go within "
                                  f"{timeout_s:.0f}s; try again, or replay --from store")
            consumer.poll(timeout_ms=200, max_records=2000)  # read and dropped: the batches seek back
            for partition in self.partitions:
                high = consumer.highwater(partition)
                if high is not None:
                    ends.setdefault(partition, high)
        return ends

    @property
    def complete(self) -> bool:
        """Whether the topic still holds its whole history (nothing was deleted from its start)."""
        return all(offset == 0 for offset in self.beginning.values())

    def total(self) -> int:
        return sum(self.end[p] - self.beginning[p] for p in self.partitions)

    def done(self, positions: dict[tuple[str, int], int]) -> int:
        return sum(positions.get((p.topic, p.partition), self.beginning[p]) - self.beginning[p]
                   for p in self.partitions)

    def batches(self, positions: dict[tuple[str, int], int], decode: Callable[[bytes], PublicEvent]
                ) -> Iterator[tuple[list[PublicEvent], dict[tuple[str, int], int]]]:
        consumer = self._consumer
        remaining = {}
        for partition in self.partitions:
            start = positions.get((partition.topic, partition.partition), self.beginning[partition])
            if start < self.end[partition]:
                consumer.seek(partition, start)
                remaining[partition] = self.end[partition]
            else:
                consumer.pause(partition)
        while remaining:
            polled = consumer.poll(timeout_ms=1000, max_records=2000)
            events: list[PublicEvent] = []
            moved: dict[tuple[str, int], int] = {}
            for partition, records in polled.items():
                end = remaining.get(partition)
                if end is None or not records:
                    continue
                if records[-1].offset >= end:
                    records = [record for record in records if record.offset < end]
                events.extend(event for event in map(_decoded(decode), records) if event is not None)
                if records:
                    moved[(partition.topic, partition.partition)] = records[-1].offset + 1
                if not records or records[-1].offset + 1 >= end:
                    del remaining[partition]
                    consumer.pause(partition)
            if moved:
                yield events, moved

    def close(self) -> None:
        self._consumer.close()


def _decoded(decode: Callable[[bytes], PublicEvent]) -> Callable[[Any], PublicEvent | None]:
    def one(record: Any) -> PublicEvent | None:
        try:
            return decode(record.value)
        except PublicEventError:
            return None  # dead-lettered live too: it changes no row
    return one


def fast_decoder(catalog: EventCatalog) -> Callable[[bytes], PublicEvent]:
    """The catalog's decode, parsing with orjson: most of a replay's time is spent decoding."""
    return functools.partial(catalog.decode, loads=orjson.loads)


# Verify and swap ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    table: str
    key: tuple[Any, ...]
    kind: str  # only-live, only-shadow, differs
    columns: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.table} {self.key}"
        if self.kind == "differs":
            return f"{where}: differs in {', '.join(self.columns)}"
        return f"{where}: only in the {'live projection' if self.kind == 'only-live' else 'shadow'}"


def rebuilt_tables(projection: Projection) -> list[Table]:
    """The tables a replay rebuilds: the projection's own (``rebuilt_tables``), or all of its metadata."""
    names = getattr(projection, "rebuilt_tables", None)
    tables = projection.metadata.sorted_tables
    return tables if names is None else [t for t in tables if t.name in names]


def compare(projection: Projection, live: Engine, shadow: Engine) -> Iterator[Difference]:
    """Every row that differs between the live tables and the shadow's, table by table, by primary key."""
    natural = getattr(projection, "compare_keys", {})  # table → columns that name a row, for surrogate ids
    for table in rebuilt_tables(projection):
        key = list(natural.get(table.name, ())) or [column.name for column in table.primary_key.columns]
        # Both sides in code point order, as the merge below compares keys (a database's collation may not be).
        order = [table.c[name].collate("C") if isinstance(table.c[name].type, String) and
                 live.dialect.name == "postgresql" else table.c[name] for name in key]
        names = [column.name for column in table.columns
                 if table.name not in natural or not column.primary_key]
        with live.connect() as a, shadow.connect() as b:
            if not inspect(a).has_table(table.name):
                continue
            columns = [table.c[name] for name in names]
            ours = (tuple(row) for row in a.execute(select(*columns).order_by(*order)))
            theirs = (tuple(row) for row in b.execute(select(*columns).order_by(*order)))
            yield from _merge(table.name, [names.index(k) for k in key], names, ours, theirs)


def _merge(table: str, key_at: list[int], names: list[str], live: Iterator[tuple[Any, ...]],
           shadow: Iterator[tuple[Any, ...]]) -> Iterator[Difference]:
    def key_of(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(row[i] for i in key_at)

    a, b = next(live, None), next(shadow, None)
    while a is not None or b is not None:
        if b is None or (a is not None and key_of(a) < key_of(b)):
            assert a is not None
            yield Difference(table, key_of(a), "only-live")
            a = next(live, None)
        elif a is None or key_of(b) < key_of(a):
            yield Difference(table, key_of(b), "only-shadow")
            b = next(shadow, None)
        else:
            differing = tuple(name for name, x, y in zip(names, a, b, strict=True) if x != y)
            if differing:
                yield Difference(table, key_of(a), "differs", differing)
            a, b = next(live, None), next(shadow, None)


def swap(projection: Projection, shadow: Shadow, live_group: str) -> None:
    """Replace the live rows and marks with the shadow's in one transaction, and send the live consumer
    back to the topic's start (see the module's docstring)."""
    tables = [(t.name, ", ".join(f'"{c.name}"' for c in t.columns)) for t in rebuilt_tables(projection)]
    marks, offsets = consumer_marks.name, consumer_offsets.name
    live = create_sql_engine(shadow.live_url, pool_size=1)
    create_tables(live, consumer_marks.metadata, [consumer_marks, consumer_offsets])  # a consumer never run
    if shadow.path is not None:
        live.dispose()
        _swap_sqlite(shadow, tables, live_group)
        return
    source = f'"{shadow.schema}"'
    try:
        with live.begin() as connection:
            for name, _ in reversed(tables):
                connection.execute(text(f'DELETE FROM "{name}"'))
            for name, columns in tables:
                connection.execute(text(f'INSERT INTO "{name}" ({columns}) SELECT {columns} FROM {source}."{name}"'))
            for table in rebuilt_tables(projection):  # surrogate ids go on after the copied ones
                for column in table.primary_key.columns:
                    if column.autoincrement is True:
                        connection.execute(text(
                            f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', '{column.name}'), "
                            f'COALESCE((SELECT max("{column.name}") FROM "{table.name}"), 0) + 1, false)'))
            _swap_tracking(connection.exec_driver_sql, source, marks, offsets, live_group, "%s")
    finally:
        live.dispose()


def _swap_sqlite(shadow: Shadow, tables: list[tuple[str, str]], live_group: str) -> None:
    assert shadow.path is not None
    live_path = make_url(shadow.live_url).database or ""
    connection = sqlite3.connect(live_path, isolation_level=None, timeout=30)
    try:
        connection.execute("ATTACH DATABASE ? AS shadow", (str(shadow.path),))
        connection.execute("BEGIN IMMEDIATE")  # writes only the live file: atomic even in WAL mode
        try:
            for name, _ in reversed(tables):
                connection.execute(f'DELETE FROM main."{name}"')
            for name, columns in tables:
                connection.execute(f'INSERT INTO main."{name}" ({columns}) SELECT {columns} FROM shadow."{name}"')
            _swap_tracking(connection.execute, "shadow", consumer_marks.name, consumer_offsets.name, live_group,
                           "?")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.close()


def _swap_tracking(execute: Callable[..., Any], source: str, marks: str, offsets: str, group: str,
                   param: str) -> None:
    execute(f"DELETE FROM {marks} WHERE group_id = {param}", (group,))
    execute(f"INSERT INTO {marks} (group_id, aggregate_id, version) SELECT {param}, aggregate_id, version "
            f"FROM {source}.{marks} WHERE group_id = {param}", (group, REPLAY_GROUP))
    # Another incarnation's offsets, to the live consumer: it reads the topic from its start, keeping
    # only what the shadow's marks do not already hold.
    execute(f"UPDATE {offsets} SET topic_id = {param} || topic_id WHERE group_id = {param} "
            f"AND topic_id NOT LIKE {param}", (REPLAYED, group, REPLAYED + "%"))


# The command ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplayTarget:
    """What a replay rebuilds: the projection, where it lives, the topics it reads and its consumer group."""

    projection: Any
    live_url: str
    topics: tuple[str, ...]
    decode: Callable[[bytes], Any]
    group_id: str
    from_store: bool  # whether the event store can stand in for the topics

    @classmethod
    def named(cls, name: str, settings: Settings) -> ReplayTarget:
        from adapters.bootstrap import load_projection
        from adapters.cli import PROJECTIONS

        if name == BILLING:
            from domain.billing import UsageMessage
            from projections.billing_ledger import BillingLedger

            topics = (settings.topics.notifications_info, settings.topics.notifications_error)
            return cls(BillingLedger(), settings.billing_url, topics, UsageMessage.from_wire,
                       settings.group_id(BillingLedger.name), from_store=False)
        if name not in PROJECTIONS or name == "notifications":
            raise ReplayError(f"{name!r} is not a read model; one of {', '.join(replayable())}")
        projection = load_projection(PROJECTIONS[name])
        return cls(projection, settings.projection_url(projection.name), (settings.topics.events,),
                   fast_decoder(projection.catalog), settings.group_id(projection.name), from_store=True)


BILLING = "billing"


def replayable() -> list[str]:
    from adapters.cli import PROJECTIONS

    return [*(n for n in PROJECTIONS if n != "notifications"), BILLING]


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.cli import resolve_bootstrap

    if args.batch < 1:
        print("trove-es replay: --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        target = ReplayTarget.named(args.projection, settings)
    except ReplayError as exc:
        print(f"trove-es replay: {exc}", file=sys.stderr)
        return 2
    projection = target.projection
    shadow = Shadow.of(projection.name, target.live_url)
    if args.restart:
        shadow.drop()
    engine = shadow.create()
    try:
        replayer = Replayer(projection, engine)
        source = args.source
        if source == STORE and not target.from_store:
            raise ReplayError(f"{args.projection} is rebuilt from {', '.join(target.topics)} only: send the "
                              f"notifications again with `trove-es notifications replay` if they are gone")
        history = None
        if source in ("kafka", "auto"):
            settings = resolve_bootstrap(settings)
            try:
                history = KafkaHistory(settings.kafka_bootstrap_servers, target.topics)
            except ReplayError as exc:
                if source == "kafka" or not target.from_store:
                    raise
                print(f"trove-es replay: {exc}", file=sys.stderr)
            if history is not None and source == "auto" and not history.complete and target.from_store:
                print("trove-es replay: the topic no longer starts at offset 0; replaying from the event store",
                      file=sys.stderr)
                history.close()
                history = None
            source = "kafka" if history is not None else STORE
        if args.swap and history is not None and not history.complete:
            raise ReplayError(f"{', '.join(target.topics)} no longer start at offset 0: a rebuild from them lacks "
                              f"what was deleted, and a swap would drop it from the live rows; replay --from store")
        _run(replayer, target, source, history, settings, args.batch)
        if replayer.skipped:
            print(f"trove-es replay: {replayer.skipped} event(s) the projection refused were left out, as the live "
                  f"consumer dead-letters them (see the log above)", file=sys.stderr)
        code = 0
        if args.verify or args.swap:
            live = create_sql_engine(target.live_url, pool_size=1)
            try:
                differences = list(compare(projection, live, engine))
            finally:
                live.dispose()
            for difference in differences[:args.show]:
                print(difference)
            print(f"{len(differences) or 'no'} row difference{'' if len(differences) == 1 else 's'} between "
                  f"the live projection and the shadow")
            code = 1 if differences and not args.swap else 0
        if args.swap:
            engine.dispose()
            swap(projection, shadow, target.group_id)
            shadow.drop()
            print(f"swapped: {projection.name} now holds the rebuilt rows; its consumer re-reads the topic and "
                  f"keeps only what the rebuild did not have")
        return code
    except ReplayError as exc:
        print(f"trove-es replay: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()


def _run(replayer: Replayer, target: ReplayTarget, source: str, history: KafkaHistory | None, settings: Settings,
         batch: int) -> None:
    positions = replayer.positions()
    if source == STORE:
        from adapters.bootstrap import build_application

        application = build_application(settings)
        after = positions.get((STORE, 0), 0)
        total = application.recorder.max_notification_id() or 0
        progress = Progress(f"replaying {replayer.projection.name} from the event store", total, initial=after)
        for events, last in store_batches(application, after, batch):
            replayer.apply(events, {(STORE, 0): last})
            progress.show(last)
        progress.show(max(total, after), final=True)
        return
    assert history is not None
    try:
        for topic, stored in replayer.incarnations().items():
            if topic in history.incarnations and stored != history.incarnations[topic]:
                raise ReplayError(f"{topic} was recreated since this rebuild began; run it again with --restart")
        total = history.total()
        progress = Progress(f"replaying {replayer.projection.name} from {', '.join(history.topics)}", total,
                            initial=history.done(positions))
        for events, moved in history.batches(positions, target.decode):
            replayer.apply(events, moved, history.incarnations)
            positions.update(moved)
            progress.show(history.done(positions))
        progress.show(total, final=True)
    finally:
        history.close()
