"""Replay speed: ``trove-es replay instance-view`` over N events (200,000 by default) on PostgreSQL.

The history is real instance lifecycles made by the domain's own ``Instance`` aggregate (create,
server provisioned, prepare sent, healthy, restart and its close, renames, a share of deletes), published
as the relay publishes them (public envelopes keyed by instance id, four partitions) to the embedded
Kafka-protocol broker. Two measurements in the same run, on the same topic:

- raw consume: a plain consumer reading every record from the first offset to the end, doing nothing
  with it: the baseline, what Kafka and kafka-python alone cost;
- replay: the replay tool's own reader and ``Replayer`` rebuilding the instance view in a shadow schema
  of a fresh PostgreSQL database, decoding, deduping, applying and committing batch by batch.

Targets: replay at least 10,000 events/s and at least half the raw consume rate. The report is printed
and written as JSON under ``benchmarks/results/``; the exit code is 0 whether or not the targets are met.

``PYTHONPATH=. python benchmarks/replay.py --events 20000`` for a quick look.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from adapters.kafka.broker import EmbeddedBroker
from adapters.kafka.topics import admin_client, ensure_topic
from adapters.replay import KafkaHistory, Replayer, Shadow, fast_decoder
from benchmarks.pipeline import (
    DEFAULT_POSTGRES,
    DEFAULT_RESULTS_DIR,
    Databases,
    machine_info,
    quiet_logger,
    write_report,
)
from domain.instance import CREATE, Instance
from domain.public_events import to_public_event
from domain.statuses import ServiceStatus
from projections.instance_view import InstanceView

PARTITIONS = 4
TARGET_RATE = 10_000
TARGET_SHARE = 0.5
FLAVOR = {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20}
BIGGER = {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40}

_requests = itertools.count(1)


def _context(server_type: str = "api", request_id: str | None = None) -> dict[str, Any]:
    return {"request_id": request_id or f"req-{next(_requests)}", "tenant_id": f"tenant-{next(_requests) % 50}",
            "user_id": "bench", "client_ip": "203.0.113.7", "server_ip": "192.0.2.10", "server_type": server_type}


def lifecycle(n: int) -> list[bytes]:
    """One instance's life, about ten events, as the relay would publish them."""
    created = _context()
    instance = Instance(context=created, operation=CREATE, name=f"db-{n}", tenant_id=created["tenant_id"],
                        flavor=FLAVOR, volume_size=2, datastore="mysql", datastore_version="8.0",
                        datastore_version_id="v-80", availability_zone=None, region="RegionOne", databases=[],
                        users=[], image_id="img", datastore_manager="mysql")
    carried = {**created, "server_type": "taskmanager"}
    instance.record_server_provisioned(carried, f"srv-{n}", f"vol-{n}", "ACTIVE",
                                       [{"address": f"10.0.{n // 250 % 250}.{n % 250}", "type": "private"}])
    instance.record_prepare_sent(carried, f"trove.guest.{instance.id}")
    instance.change_service_status({**created, "server_type": "conductor"}, ServiceStatus.HEALTHY)
    restart = _context()
    instance.restart(restart)
    instance.change_service_status({**restart, "server_type": "conductor"}, ServiceStatus.RESTARTING)
    instance.change_service_status({**restart, "server_type": "conductor"}, ServiceStatus.HEALTHY)
    instance.succeed({**restart, "server_type": "conductor"})
    instance.rename(_context(), f"db-{n}-renamed")
    if n % 4 == 0:
        instance.delete(_context())
        instance.record_deleted({**created, "server_type": "taskmanager"})
    return [to_public_event(event).to_json() for event in instance.collect_events()]


def publish_history(bootstrap_servers: str, topic: str, events: int) -> int:
    with admin_client(bootstrap_servers) as admin:
        ensure_topic(admin, topic, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=20,
                             batch_size=256 * 1024, compression_type=None)
    published, n = 0, 0
    while published < events:
        for value in lifecycle(n):
            key = value[value.index(b'"aggregate_id":"') + 16:].split(b'"', 1)[0]
            producer.send(topic, key=key, value=value)
            published += 1
        n += 1
    producer.flush()
    producer.close()
    return published


def measure_raw_consume(bootstrap_servers: str, topic: str, events: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             max_poll_records=2000, fetch_max_bytes=64 * 1024 * 1024)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = 0
    started = time.perf_counter()
    while seen < events:
        for records in consumer.poll(timeout_ms=1000, max_records=2000).values():
            seen += len(records)
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


def measure_replay(bootstrap_servers: str, topic: str, store_url: str) -> tuple[float, int]:
    projection = InstanceView()
    shadow = Shadow.of(projection.name, store_url)
    engine = shadow.create()
    replayer = Replayer(projection, engine)
    history = KafkaHistory(bootstrap_servers, [topic])
    total = history.total()
    started = time.perf_counter()
    for events, moved in history.batches(replayer.positions(), fast_decoder(projection.catalog)):
        replayer.apply(events, moved)
    elapsed = time.perf_counter() - started
    history.close()
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT count(*) FROM instance_view").scalar_one()
    engine.dispose()
    return total / elapsed, int(rows)


def run(events: int, databases: Databases, broker: EmbeddedBroker) -> dict[str, Any]:
    topic = f"bench-replay-{uuid.uuid4().hex[:8]}.events"
    print(f"publishing {events:,} instance events to {topic} ...", file=sys.stderr)
    published = publish_history(broker.bootstrap_servers, topic, events)
    print("raw consume ...", file=sys.stderr)
    raw = measure_raw_consume(broker.bootstrap_servers, topic, published)
    print("replay into the instance view ...", file=sys.stderr)
    url = databases.create("replay")
    replay, rows = measure_replay(broker.bootstrap_servers, topic, url)
    share = replay / raw
    return {
        "benchmark": "replay", "timestamp": datetime.now(UTC).isoformat(), "events": published,
        "instances": rows, "machine": machine_info(databases.server_version()),
        "raw_consume_events_per_s": round(raw), "replay_events_per_s": round(replay),
        "replay_share_of_raw": round(share, 3),
        "targets": {"replay_events_per_s": TARGET_RATE, "share_of_raw": TARGET_SHARE},
        "met": {"replay_events_per_s": replay >= TARGET_RATE, "share_of_raw": share >= TARGET_SHARE},
    }


def render(report: dict[str, Any]) -> str:
    met = report["met"]
    return "\n".join([
        f"replay of {report['events']:,} events ({report['instances']:,} instances) into the instance view "
        f"on PostgreSQL {report['machine']['postgresql']}",
        f"  raw consume  {report['raw_consume_events_per_s']:>9,} events/s",
        f"  replay       {report['replay_events_per_s']:>9,} events/s "
        f"(target {TARGET_RATE:,}: {'met' if met['replay_events_per_s'] else 'NOT met'})",
        f"  share of raw {report['replay_share_of_raw']:>9.1%} "
        f"(target {TARGET_SHARE:.0%}: {'met' if met['share_of_raw'] else 'NOT met'})",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    work_dir = Path(tempfile.mkdtemp(prefix="trove-es-bench-replay-"))
    databases = Databases(args.postgres, uuid.uuid4().hex[:8])
    try:
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(databases.drop_all)
            with quiet_logger("kafka"):
                broker = cleanup.enter_context(EmbeddedBroker(log_path=work_dir / "broker.log"))
            report = run(args.events, databases, broker)
    except psycopg.OperationalError as exc:
        print(f"replay benchmark failed: {exc}", file=sys.stderr)
        return 1
    shutil.rmtree(work_dir, ignore_errors=True)
    print(render(report))
    for path in write_report(report, args.results_dir, name="replay"):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
