"""The composition root: the one place that turns settings into concrete, wired objects."""

from __future__ import annotations

import importlib
from functools import cache

from sqlalchemy import Engine

from adapters.event_store import open_application
from adapters.kafka.consumer import ConsumerRunner
from adapters.kafka.lease import lease_for
from adapters.kafka.notifications import KafkaNotificationPublisher
from adapters.kafka.relay import Relay, RelayPositionStore
from adapters.kafka.topics import audit_salts, partition_of
from adapters.secret_files import audit_key, guest_secret
from adapters.settings import Settings, SettingsError, load_settings
from adapters.sql.engine import create_sql_engine
from adapters.sql.event_chain import SqlEventChain
from adapters.sql.schema import create_tables
from adapters.sql.secret_drops import SqlSecretDrops
from domain.usage_audit import EXISTS, QUOTA
from projections.base import Projection
from projections.notifier import NotificationPublisher, Notifier
from services.application import TroveApplication
from services.ports import BackupStorage, ComputeDriver
from services.task_manager import local_ip
from services.usage_audit import UsageAuditor


@cache
def _engine(url: str) -> Engine:
    return create_sql_engine(url)


def read_model_engine(settings: Settings) -> Engine:
    return _engine(settings.read_model_url)


def projection_engine(settings: Settings, projection: str) -> Engine:
    return _engine(settings.projection_url(projection))


def marks_database(settings: Settings) -> Engine:
    return _engine(settings.write_marks_url)


def task_manager_engine(settings: Settings) -> Engine:
    return _engine(settings.task_manager_url)


def fake_cloud_engine(settings: Settings) -> Engine:
    """The fake cloud's own database: a real cloud's state is not in ours, and on SQLite its writes
    then do not queue behind the read models' on one file lock."""
    return _engine(settings.fake_cloud_url)


def secret_drop(settings: Settings) -> SqlSecretDrops:
    """Where the API leaves a create's sealed passwords for the task manager: in the task manager's database."""
    return SqlSecretDrops(task_manager_engine(settings), guest_secret(settings.data_dir))


def compute_driver(settings: Settings) -> ComputeDriver:
    """The cloud the task manager builds on, as the settings choose it."""
    if settings.compute_driver == "local":
        from adapters.compute.local import LocalCompute

        return LocalCompute(settings.data_dir / "local-compute", bootstrap_servers=settings.kafka_bootstrap_servers,
                            guest_prefix=settings.topics.guest_prefix, conductor_topic=settings.topics.conductor,
                            secret=guest_secret(settings.data_dir), report_interval_s=settings.report_interval_s,
                            ports=settings.local_compute_ports)
    if settings.compute_driver == "openstack":
        return _openstack_compute(settings)
    from adapters.compute.fake import FakeCompute

    return FakeCompute.from_settings(settings, fake_cloud_engine(settings))


def _openstack_compute(settings: Settings) -> ComputeDriver:
    from adapters.compute.guest_boot import guest_config_writer
    from adapters.compute.openstack import OpenStackCompute

    if settings.uses_embedded_broker:
        raise SettingsError("TROVE_ES_COMPUTE_DRIVER=openstack needs TROVE_ES_KAFKA_BOOTSTRAP_SERVERS: brokers the "
                            "guests on the cloud's servers can reach (the embedded broker serves this host only)")
    guest_config = guest_config_writer(secret=guest_secret(settings.data_dir),
                                       bootstrap_servers=settings.kafka_bootstrap_servers,
                                       guest_prefix=settings.topics.guest_prefix,
                                       conductor_topic=settings.topics.conductor,
                                       report_interval_s=settings.report_interval_s)
    return OpenStackCompute.from_cloud(settings.os_cloud or None, settings.os_region or None,
                                       guest_config=guest_config, networks=settings.os_networks,
                                       security_group_cidrs=settings.os_security_group_cidrs,
                                       volume_type=settings.os_volume_type or None,
                                       volume_wait_s=settings.os_volume_wait_s)


def backup_storage(settings: Settings) -> BackupStorage:
    """Where backups are kept, as the settings choose: this host's data directory, or a Swift container."""
    if settings.backup_storage == "swift":
        from adapters.backup_storage.swift import SwiftBackupStorage

        return SwiftBackupStorage.from_cloud(settings.os_cloud or None, settings.os_region or None,
                                             container=settings.swift_container,
                                             temp_url_key=settings.swift_temp_url_key,
                                             temp_url_lifetime_s=settings.swift_temp_url_ttl_s)
    from adapters.backup_storage.local import LocalBackupStorage

    return LocalBackupStorage(settings.data_dir / "backups")


def event_store_engine(settings: Settings) -> Engine:
    return _engine(settings.event_store_url)


def build_application(settings: Settings, application_class: type[TroveApplication] = TroveApplication,
                      ) -> TroveApplication:
    return open_application(application_class, settings.event_store_url)


def build_relay(settings: Settings, application: TroveApplication | None = None) -> Relay:
    application = application or build_application(settings)
    engine = event_store_engine(settings)
    return Relay(
        application=application,
        positions=RelayPositionStore(engine, settings.relay_name, settings.topics.events),
        lease=lease_for(engine, settings.event_store_url, f"relay-{settings.relay_name}"),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.topics.events,
        partitions=settings.events_partitions,
        batch_size=settings.relay_batch_size,
        idle_sleep_s=settings.relay_idle_sleep_s,
        name=settings.relay_name,
        chain=event_chain(settings, engine),
    )


def event_chain(settings: Settings, engine: Engine | None = None) -> SqlEventChain:
    """The event store's recorded hash chain, with the deployment's audit key."""
    return SqlEventChain(engine or event_store_engine(settings), audit_key(settings.data_dir),
                         checkpoint_every=settings.audit_checkpoint_every,
                         checkpoint_interval_s=settings.audit_checkpoint_interval_s)


# tansu looks again 250, 375 and 500 ms into a 500 ms park: up to 250 ms of lag, for a tenth of the
# empty fetches of the default park.
BACKGROUND_FETCH_WAIT_MS = 500


def build_projection_runner(settings: Settings, projection: Projection) -> ConsumerRunner:
    engine = projection_engine(settings, projection.name)
    create_tables(engine, projection.metadata)
    return ConsumerRunner(
        name=projection.name,
        group_id=settings.group_id(projection.name),
        topics={settings.topics.events: settings.events_partitions},
        decode=projection.catalog.decode,
        apply=projection.apply,
        apply_batch=getattr(projection, "apply_batch", None),
        event_types=getattr(projection, "handles", None),
        engine=engine,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        dead_letter_topic=settings.topics.dead_letter,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        max_records=settings.consumer_max_records,
        fetch_wait_ms=BACKGROUND_FETCH_WAIT_MS if getattr(projection, "background", False)
        else settings.consumer_fetch_wait_ms,
    )


def usage_auditor(settings: Settings, application: TroveApplication) -> UsageAuditor | None:
    """The task manager's clock of ``trove.instance.exists`` and ``dbaas.quota``, or ``None`` when
    both are turned off."""
    intervals = {kind: interval_s for kind, interval_s in ((EXISTS, settings.exists_notification_interval_s),
                                                           (QUOTA, settings.quota_notification_interval_s))
                 if interval_s > 0}
    if not intervals:
        return None
    salts = {kind: audit_salts(kind, settings.events_partitions) for kind in intervals}
    return UsageAuditor(application, intervals, salts, server_ip=local_ip())


def load_projection(path: str) -> Projection:
    """``module:factory`` → a projection, for operators' own projections and the test suite's."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"projection must be given as module:factory, got {path!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory() if callable(factory) else factory


def notifier(settings: Settings | None = None, *, publisher: NotificationPublisher | None = None,
             topics: tuple[str, str] | None = None) -> Notifier:
    """The notifier, publishing to the settings' notification topics (the projection factory
    ``consume --projection notifications`` calls), or through ``publisher`` to ``topics`` (info, error)."""
    settings = settings or load_settings()
    topics = topics or (settings.topics.notifications_info, settings.topics.notifications_error)
    if publisher is None:
        publisher = KafkaNotificationPublisher(settings.kafka_bootstrap_servers, topics,
                                               settings.notifications_partitions)
    partitions = settings.events_partitions
    return Notifier(publisher, settings.notification_host, info_topic=topics[0], error_topic=topics[1],
                    errors_on_info=settings.notification_errors_on_info, quota_defaults=settings.quota_defaults,
                    partition_of=lambda key: partition_of(key, partitions))
