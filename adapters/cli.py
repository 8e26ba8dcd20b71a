"""``trove-es``: the command line of the control plane."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from adapters.settings import Settings, SettingsError, load_settings

log = logging.getLogger("trove_es")

# Projections `trove-es up` runs, by name; `consume --projection` also takes module:factory.
PROJECTIONS: dict[str, str] = {
    "event-journal": "projections.event_journal:EventJournal",
    "instance-view": "projections.instance_view:InstanceView",
    "catalog-view": "projections.catalog_view:CatalogView",
}


def configure_logging() -> None:
    level = os.environ.get("TROVE_ES_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    # kafka-python reports every reconnect attempt; ours say what it means for the stack.
    logging.getLogger("kafka").setLevel(os.environ.get("TROVE_ES_KAFKA_LOG_LEVEL", "ERROR").upper())


def resolve_bootstrap(settings: Settings) -> Settings:
    """Bootstrap servers from the settings, or from the running stack's ``stack.json``."""
    if settings.kafka_bootstrap_servers:
        return settings
    stack_file = settings.data_dir / "stack.json"
    if stack_file.exists():
        servers = json.loads(stack_file.read_text()).get("kafka_bootstrap_servers", "")
        if servers:
            return settings.with_bootstrap_servers(servers)
    raise SystemExit(
        "No Kafka broker: TROVE_ES_KAFKA_BOOTSTRAP_SERVERS is empty and no running stack was found at "
        f"{stack_file}. Start the stack with `make run`, or set TROVE_ES_KAFKA_BOOTSTRAP_SERVERS.")


def _stop_on_signals(stop: Callable[[], object]) -> None:
    def handler(_signum: int, _frame: object) -> None:
        stop()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_relay(settings: Settings, _args: argparse.Namespace) -> int:
    from adapters.bootstrap import build_relay

    settings = resolve_bootstrap(settings)
    relay = build_relay(settings)
    _stop_on_signals(relay.stop)
    log.info("relay publishing to %s on %s", settings.topics.events, settings.kafka_bootstrap_servers)
    relay.run()
    return 0


def cmd_consume(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.bootstrap import build_projection_runner, load_projection

    settings = resolve_bootstrap(settings)
    projection = load_projection(PROJECTIONS.get(args.projection, args.projection))
    runner = build_projection_runner(settings, projection)
    _stop_on_signals(runner.stop)
    log.info("projection %s consuming %s as group %s", projection.name, settings.topics.events, runner.group_id)
    runner.run()
    return 0


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.kafka.broker import EmbeddedBroker

    stopping = []
    _stop_on_signals(lambda: stopping.append(True))
    with EmbeddedBroker(port=args.port) as broker:
        print(broker.bootstrap_servers, flush=True)
        while not stopping:
            time.sleep(0.2)
    return 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.kafka.broker import free_port
    from adapters.supervisor import Supervisor

    if args.port is not None:
        settings = settings.with_api_port(args.port)
    if settings.api_port == 0:
        settings = settings.with_api_port(free_port(settings.api_host))
    workers = {"relay": ["relay"]}
    for name in PROJECTIONS:
        workers[f"projection-{name}"] = ["consume", "--projection", name]
    workers["task-manager"] = ["task-manager"]
    workers["conductor"] = ["conductor"]
    if settings.compute_driver == "fake":
        workers["fake-guests"] = ["fake-guests"]
    workers["api"] = ["api", "--port", str(settings.api_port)]
    return Supervisor(settings, workers).run()


def cmd_events_tail(settings: Settings, args: argparse.Namespace) -> int:
    """Print public events as JSON lines, without joining a consumer group."""
    settings = resolve_bootstrap(settings)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                             allow_auto_create_topics=False)
    partitions = consumer.partitions_for_topic(settings.topics.events) or set()
    if not partitions:
        print(f"topic {settings.topics.events} does not exist yet: is the relay running?", file=sys.stderr)
        return 1
    assigned = [TopicPartition(settings.topics.events, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    if args.from_beginning:
        consumer.seek_to_beginning(*assigned)
    else:
        consumer.seek_to_end(*assigned)
    stopping = []
    _stop_on_signals(lambda: stopping.append(True))
    try:
        while not stopping:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    print(record.value.decode(errors="replace"), flush=True)
    finally:
        consumer.close()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="trove-es", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole stack on embedded defaults")
    up.add_argument("--data-dir", type=Path, help="overrides TROVE_ES_DATA_DIR")
    up.add_argument("--port", type=int, help="API port; overrides TROVE_ES_API_PORT (0: a free port)")
    up.set_defaults(func=cmd_up)

    sub.add_parser("relay", help="publish the event store's events to Kafka").set_defaults(func=cmd_relay)

    consume = sub.add_parser("consume", help="run one projection's consumer")
    consume.add_argument("--projection", required=True,
                         help=f"one of {', '.join(PROJECTIONS)}, or module:factory")
    consume.set_defaults(func=cmd_consume)

    broker = sub.add_parser("broker", help="run an embedded, memory-only Kafka-protocol broker")
    broker.add_argument("--port", type=int, default=None)
    broker.set_defaults(func=cmd_broker)

    events = sub.add_parser("events", help="read the public event stream")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    tail = events_sub.add_parser("tail", help="print public events as JSON lines")
    tail.add_argument("--from-beginning", action="store_true")
    tail.set_defaults(func=cmd_events_tail)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "data_dir", None):
        os.environ["TROVE_ES_DATA_DIR"] = str(args.data_dir)
    configure_logging()
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"trove-es: {exc}", file=sys.stderr)
        return 2
    return args.func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
