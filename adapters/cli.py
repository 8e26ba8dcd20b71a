"""``trove-es``: the command line of the control plane."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, TopicPartition

from adapters.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from adapters.kafka.consumer import ConsumerRunner

log = logging.getLogger("trove_es")

# Projections `trove-es up` runs, by name; `consume --projection` also takes module:factory.
PROJECTIONS: dict[str, str] = {
    "event-journal": "projections.event_journal:EventJournal",
    "instance-view": "projections.instance_view:InstanceView",
    "catalog-view": "projections.catalog_view:CatalogView",
    "fault-history": "projections.fault_history:FaultHistory",
    "datastore-objects": "projections.datastore_objects:DatastoreObjectsView",
    "notifications": "adapters.bootstrap:notifier",
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


def _process_runner(settings: Settings, process: Any, topic: str, partitions: int,
                    decode: Callable[[bytes], Any], engine: Any) -> ConsumerRunner:
    """A consumer runner for one of the stack's own processes (task manager, conductor), committing its
    offsets in ``engine``'s database, with the process's own effects."""
    from adapters.kafka.consumer import ConsumerRunner

    return ConsumerRunner(
        name=process.name, group_id=settings.group_id(process.name), topics={topic: partitions}, decode=decode,
        apply=process.apply, apply_batch=getattr(process, "apply_batch", None),
        event_types=getattr(process, "handles", None), engine=engine,
        bootstrap_servers=settings.kafka_bootstrap_servers, dead_letter_topic=settings.topics.dead_letter,
        session_timeout_ms=settings.kafka_session_timeout_ms, max_records=settings.consumer_max_records,
        fetch_wait_ms=settings.consumer_fetch_wait_ms)


def _instance_service(settings: Settings) -> Any:
    from adapters.event_store import open_application
    from services.instances import InstanceService

    return open_application(InstanceService, settings.event_store_url, quota_defaults=settings.quota_defaults,
                            region=settings.region)


def cmd_task_manager(settings: Settings, _args: argparse.Namespace) -> int:
    from adapters.bootstrap import backup_storage, compute_driver, secret_drop, task_manager_engine, usage_auditor
    from adapters.compute.guest_channel import KafkaGuestChannel
    from adapters.kafka.lease import lease_for
    from adapters.sealed import DeploymentSealer
    from adapters.secret_files import guest_secret
    from adapters.sql import work_items
    from adapters.sql.engine import read_only
    from adapters.sql.schema import create_tables
    from domain.catalog import domain_catalog
    from services.task_manager import TaskManager

    settings = resolve_bootstrap(settings)
    engine = task_manager_engine(settings)
    instances = _instance_service(settings)
    secret = guest_secret(settings.data_dir)
    guests = KafkaGuestChannel(settings.kafka_bootstrap_servers, settings.topics.guest_prefix, secret)
    compute = compute_driver(settings)
    create_tables(engine, work_items.metadata)
    # The consumer below writes items in its own transactions on ``engine``, beside its offsets.
    work = work_items.SqlWorkItems(engine, reader=read_only(engine))
    manager = TaskManager(instances=instances, compute=compute, guests=guests, work=work,
                          usage_timeout_s=settings.usage_timeout_s,
                          lease=lease_for(engine, settings.task_manager_url, settings.group_id("task-manager")),
                          auditor=usage_auditor(settings, instances), secrets=secret_drop(settings),
                          backups=backup_storage(settings), sealer=DeploymentSealer(secret))
    runner = _process_runner(settings, manager, settings.topics.events, settings.events_partitions,
                             domain_catalog().decode, engine)
    _stop_on_signals(lambda: (runner.stop(), manager.stop()))
    log.info("task manager consuming %s as group %s", settings.topics.events, settings.group_id(manager.name))
    manager.start_driver()
    try:
        runner.run()
    finally:
        manager.stop()
        manager.join(30)
        guests.close()
        instances.close()
    return 0


def cmd_conductor(settings: Settings, _args: argparse.Namespace) -> int:
    from adapters.bootstrap import read_model_engine
    from adapters.secret_files import guest_secret
    from adapters.sql import guest_ledger
    from adapters.sql.schema import create_tables
    from services.conductor import Conductor

    settings = resolve_bootstrap(settings)
    instances = _instance_service(settings)
    conductor = Conductor(instances, guest_ledger.SqlGuestLedger(), secret=guest_secret(settings.data_dir),
                          progress_every_s=settings.backup_progress_interval_s)
    engine = read_model_engine(settings)  # heartbeats are joined into the instance view's reads
    create_tables(engine, guest_ledger.metadata)
    runner = _process_runner(settings, conductor, settings.topics.conductor, settings.conductor_partitions,
                             conductor.decode, engine)
    _stop_on_signals(runner.stop)
    log.info("conductor consuming %s as group %s", settings.topics.conductor, settings.group_id(conductor.name))
    try:
        runner.run()
    finally:
        instances.close()
    return 0


def cmd_fake_guests(settings: Settings, _args: argparse.Namespace) -> int:
    from adapters.bootstrap import fake_cloud_engine
    from adapters.guest_sim import FakeGuestFleet

    settings = resolve_bootstrap(settings)
    fleet = FakeGuestFleet.from_settings(settings, fake_cloud_engine(settings))
    _stop_on_signals(fleet.stop)
    log.info("simulated guests (fakes) answering on %s*", settings.topics.guest_prefix)
    fleet.run()
    return 0


def cmd_guest(_settings: Settings, args: argparse.Namespace) -> int:
    """One instance's guest agent; it needs nothing of the control plane's settings but its own file."""
    from guest.agent import GuestAgent
    from guest.config import GuestConfig, GuestConfigError

    try:
        config = GuestConfig.read(Path(args.config))
    except GuestConfigError as exc:
        print(f"trove-es guest: {exc}", file=sys.stderr)
        return 2
    if config.instance_id != args.instance_id:
        print(f"trove-es guest: {args.config} configures instance {config.instance_id}, not {args.instance_id}",
              file=sys.stderr)
        return 2
    agent = GuestAgent(config)
    _stop_on_signals(agent.stop)
    agent.run()
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.kafka.broker import free_port
    from adapters.rest.server import serve

    if args.port is not None:
        settings = settings.with_api_port(args.port or free_port(settings.api_host))
    return serve(settings)


def cmd_token_issue(settings: Settings, args: argparse.Namespace) -> int:
    """Print a locally signed token, and nothing else, so ``$(trove-es token issue ...)`` works."""
    from adapters.rest.local_tokens import LocalTokenAuthority

    authority = LocalTokenAuthority.for_data_dir(settings.data_dir)
    try:
        token = authority.issue(project_id=args.project, user_id=args.user, roles=args.role or (), ttl_s=args.ttl)
    except ValueError as exc:
        print(f"trove-es: {exc}", file=sys.stderr)
        return 2
    print(token)
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
    workers["billing"] = ["billing", "run"]
    if settings.compute_driver == "fake":
        workers["fake-guests"] = ["fake-guests"]
    workers["api"] = ["api", "--port", str(settings.api_port)]
    return Supervisor(settings, workers).run()


def cmd_billing_run(settings: Settings, _args: argparse.Namespace) -> int:
    from adapters.billing import build_billing_runner

    settings = resolve_bootstrap(settings)
    runner = build_billing_runner(settings)
    _stop_on_signals(runner.stop)
    log.info("billing ledger consuming %s and %s as group %s", settings.topics.notifications_info,
             settings.topics.notifications_error, runner.group_id)
    runner.run()
    return 0


def cmd_billing_report(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.billing import billing_queries, render_usage
    from domain.billing import window

    try:
        start, end = window(args.start, args.end)
    except ValueError as exc:
        print(f"trove-es billing report: {exc}", file=sys.stderr)
        return 2
    lines = billing_queries(settings).usage(start, end, args.tenant)
    print(render_usage(lines, start, end, args.format))
    return 0


def cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.admin_cli import run

    return run(settings, args)


def _command(path: str) -> Callable[[Settings, argparse.Namespace], int]:
    """A command whose module is imported only when it runs (the CLI starts without them)."""
    def run(settings: Settings, args: argparse.Namespace) -> int:
        module, _, name = path.partition(":")
        return int(getattr(importlib.import_module(module), name)(settings, args))
    return run


def _audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the event store's history, and whether it was changed")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check every stored event against the hash chain and checkpoints")
    verify.add_argument("--format", choices=("text", "json"), default="text")
    verify.set_defaults(func=_command("adapters.audit_cli:cmd_audit_verify"))
    timeline = audit_sub.add_parser("timeline", help="every event of an instance and its operations, from the store")
    timeline.add_argument("instance_id")
    timeline.add_argument("--as-of", metavar="ISO_TIME",
                          help="show the instance as it was at this moment (UTC if no offset), from the store")
    timeline.add_argument("--format", choices=("text", "json"), default="text")
    timeline.set_defaults(func=_command("adapters.audit_cli:cmd_audit_timeline"))


def _replay_parser(sub: Any) -> None:
    replay = sub.add_parser("replay", help="rebuild a projection from history into a shadow; verify; swap")
    replay.add_argument("projection", help="instance-view, fault-history, event-journal, catalog-view, "
                                           "datastore-objects, or billing (from the notification topics)")
    replay.add_argument("--from", dest="source", choices=("auto", "kafka", "store"), default="auto",
                        help="where history is read: the events topic, or the event store (auto: the topic "
                             "while it still holds everything)")
    replay.add_argument("--verify", action="store_true", help="compare the shadow with the live projection")
    replay.add_argument("--swap", action="store_true", help="replace the live rows with the shadow's")
    replay.add_argument("--restart", action="store_true", help="drop the shadow and start from the beginning")
    replay.add_argument("--batch", type=int, default=2000, help="events per transaction")
    replay.add_argument("--show", type=int, default=50, help="differences printed at most")
    replay.set_defaults(func=_command("adapters.replay:cmd_replay"))


def _admin_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="operators' queries of the read models (table or JSON)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        parser = admin_sub.add_parser(name, help=help_)
        parser.add_argument("--format", choices=("table", "json"), default="table")
        parser.set_defaults(func=cmd_admin, admin=name)
        return parser

    listed = command("instances", "every tenant's instances, filtered")
    listed.add_argument("--project", help="only this project's")
    listed.add_argument("--status", type=str.upper, help="only those showing this status (ACTIVE, BUILD, ERROR…)")
    listed.add_argument("--datastore", help="only this datastore's")
    listed.add_argument("--deleted", action="store_true", help="include deleted instances")
    shown = command("show", "one instance with the management fields and its fault history")
    shown.add_argument("instance_id")
    stuck = command("stuck-builds", "instances still building longer than --minutes")
    stuck.add_argument("--minutes", type=float, default=30.0)
    command("silent-guests", "instances whose guest has sent nothing for agent_heartbeat_expiry")
    for name, help_ in (("faults", "faults in a window, grouped by datastore version and message"),
                        ("latency", "operation latency (p50, p95) per operation type in a window")):
        windowed = command(name, help_)
        windowed.add_argument("--from", dest="start", required=True, help="ISO 8601 (UTC if no offset)")
        windowed.add_argument("--to", dest="end", required=True, help="ISO 8601 (UTC if no offset)")


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

    sub.add_parser("task-manager", help="run the task manager (builds, resizes, restarts, deletes)"
                   ).set_defaults(func=cmd_task_manager)
    sub.add_parser("conductor", help="ingest guest heartbeats and results").set_defaults(func=cmd_conductor)
    sub.add_parser("fake-guests", help="run simulated guests (fakes) for the fake compute driver"
                   ).set_defaults(func=cmd_fake_guests)
    guest = sub.add_parser("guest", help="run one instance's guest agent (the local compute driver starts these)")
    guest.add_argument("--instance-id", required=True)
    guest.add_argument("--config", required=True, help="the guest's configuration file (JSON, 0600)")
    guest.set_defaults(func=cmd_guest)

    api = sub.add_parser("api", help="serve the REST API with gunicorn (seeds the catalog first)")
    api.add_argument("--port", type=int, help="overrides TROVE_ES_API_PORT (0: a free port)")
    api.set_defaults(func=cmd_api)

    token = sub.add_parser("token", help="locally signed API tokens (auth mode `local`)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    issue = token_sub.add_parser("issue", help="print a token for a project and user")
    issue.add_argument("--data-dir", type=Path, help="where the signing key lives; overrides TROVE_ES_DATA_DIR")
    issue.add_argument("--project", required=True, help="the project (tenant) id the token is for")
    issue.add_argument("--user", required=True, help="the user id")
    issue.add_argument("--role", action="append", help="a role, e.g. admin (repeatable)")
    issue.add_argument("--ttl", type=int, default=86400, help="seconds until the token expires (default 86400)")
    issue.set_defaults(func=cmd_token_issue)

    broker = sub.add_parser("broker", help="run an embedded, memory-only Kafka-protocol broker")
    broker.add_argument("--port", type=int, default=None)
    broker.set_defaults(func=cmd_broker)

    billing = sub.add_parser("billing", help="the billing ledger built from the usage notifications")
    billing_sub = billing.add_subparsers(dest="billing_command", required=True)
    billing_sub.add_parser("run", help="consume the notification topics into the ledger"
                           ).set_defaults(func=cmd_billing_run)
    report = billing_sub.add_parser("report", help="instance-seconds by flavor and volume GB-seconds in a window")
    report.add_argument("--tenant", help="one tenant (project) id; all tenants when left out")
    report.add_argument("--from", dest="start", required=True, help="window start, ISO 8601 (UTC if no offset)")
    report.add_argument("--to", dest="end", required=True, help="window end, ISO 8601 (UTC if no offset)")
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")
    report.set_defaults(func=cmd_billing_report)

    _admin_parser(sub)
    _audit_parser(sub)
    _replay_parser(sub)
    notifications = sub.add_parser("notifications", help="Trove's notifications, derived from the events")
    notifications_sub = notifications.add_subparsers(dest="notifications_command", required=True)
    resend = notifications_sub.add_parser("replay", help="send a window's notifications again, with their ids, "
                                                          "to one topic")
    resend.add_argument("--from", dest="start", required=True, help="window start, ISO 8601 (UTC if no offset)")
    resend.add_argument("--to", dest="end", required=True, help="window end (exclusive), ISO 8601")
    resend.add_argument("--topic", required=True, help="where to send them (created if missing)")
    resend.set_defaults(func=_command("adapters.notification_replay:cmd_notifications_replay"))

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
