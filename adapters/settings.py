"""One typed settings object, read from ``TROVE_ES_*`` environment variables.

Every setting has an embedded default, so ``trove-es up`` runs with no configuration at all:
SQLite files under the data directory and a broker started by the stack. Production sets the
URLs and the bootstrap servers. ``SETTINGS_DOC`` feeds the README's configuration table.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PREFIX = "TROVE_ES_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Topics:
    events: str = "trove.events"
    conductor: str = "trove.conductor"
    notifications_info: str = "notifications.info"
    notifications_error: str = "notifications.error"
    dead_letter: str = "trove.dead-letter"
    guest_prefix: str = "trove.guest."


# Projections with a SQLite file of their own (``Settings.projection_url``).
OWN_SQLITE_FILE = frozenset({"event-journal", "notifications", "fault-history", "datastore-objects"})


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    event_store_url: str = ""
    read_model_url: str = ""
    fake_cloud_url: str = ""
    task_manager_url: str = ""
    billing_url: str = ""
    kafka_bootstrap_servers: str = ""
    topics: Topics = field(default_factory=Topics)
    events_partitions: int = 8
    conductor_partitions: int = 4
    notifications_partitions: int = 4
    consumer_group_prefix: str = "trove-es"
    kafka_session_timeout_ms: int = 6000
    relay_name: str = "trove"
    relay_batch_size: int = 1000
    audit_checkpoint_every: int = 1000
    audit_checkpoint_interval_s: float = 60.0
    relay_idle_sleep_s: float = 0.02
    consumer_max_records: int = 2000
    consumer_fetch_wait_ms: int = 50
    api_host: str = "127.0.0.1"
    api_port: int = 8779
    api_workers: int = 2
    api_threads: int = 4
    auth_mode: str = "local"
    keystone_url: str = ""
    keystone_cache_s: float = 60.0
    region: str = "RegionOne"
    catalog_file: Path | None = None
    quota_instances: int = 5
    quota_volumes: int = 20
    quota_backups: int = 50
    usage_timeout_s: float = 1800.0
    agent_heartbeat_expiry_s: float = 90.0
    report_interval_s: float = 10.0
    backup_progress_interval_s: float = 60.0
    compute_driver: str = "fake"
    local_compute_ports: tuple[int, int] = (21000, 21999)
    fake_compute_delay_s: float = 0.5
    fake_compute_max_servers: int = -1
    fake_image_min_disk_gb: int = 0
    os_cloud: str = ""
    os_region: str = ""
    os_networks: tuple[str, ...] = ()
    os_security_group_cidrs: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    os_volume_type: str = ""
    os_volume_wait_s: float = 300.0
    backup_storage: str = "local"
    swift_container: str = "trove-es-backups"
    swift_temp_url_key: str = field(default="", repr=False)  # a secret: never in a log line
    swift_temp_url_ttl_s: int = 3600
    read_your_writes_wait_s: float = 2.0
    notification_host: str = ""
    notification_errors_on_info: bool = False
    exists_notification_interval_s: int = 3600
    quota_notification_interval_s: int = 3600

    def projection_url(self, projection: str) -> str:
        """Where a projection keeps its tables: the read models' database, except that on SQLite the
        projections nothing reads together with the instance view get a file each beside it, so their
        writes do not queue behind the instance view's and the API's on one file's write lock."""
        if projection not in OWN_SQLITE_FILE or not self.read_model_url.startswith("sqlite:///"):
            return self.read_model_url
        return f"sqlite:///{Path(self.read_model_url.removeprefix('sqlite:///')).parent / f'{projection}.db'}"

    @property
    def write_marks_url(self) -> str:
        """Where the API notes the writes it accepted (``adapters/sql/write_marks.py``): beside the instance
        view, except on SQLite, where a file of their own keeps them off the view's write lock."""
        if not self.read_model_url.startswith("sqlite:///"):
            return self.read_model_url
        return f"sqlite:///{Path(self.read_model_url.removeprefix('sqlite:///')).parent / 'write_marks.db'}"

    @property
    def quota_defaults(self) -> dict[str, int]:
        return {"instances": self.quota_instances, "volumes": self.quota_volumes, "backups": self.quota_backups}

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    def group_id(self, consumer: str) -> str:
        """The Kafka consumer group of one projection or process."""
        return f"{self.consumer_group_prefix}.{consumer}"

    def with_bootstrap_servers(self, servers: str) -> Settings:
        return _replace(self, kafka_bootstrap_servers=servers)

    def with_api_port(self, port: int) -> Settings:
        return _replace(self, api_port=port)


def _replace(settings: Settings, **changes: object) -> Settings:
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    values.update(changes)
    return Settings(**values)


# name, default shown to operators, meaning. Kept next to the parser so the README cannot drift.
SETTINGS_DOC: tuple[tuple[str, str, str], ...] = (
    ("TROVE_ES_DATA_DIR", "./var/", "Where embedded SQLite files, logs, keys and `stack.json` live."),
    ("TROVE_ES_EVENT_STORE_URL", "sqlite:///<data dir>/events.db",
     "Event store. `postgresql://user@host:5432/db` in production (DB functions enabled)."),
    ("TROVE_ES_READ_MODEL_URL", "sqlite:///<data dir>/read_models.db",
     "SQLAlchemy URL of the read models, consumer offsets and dedupe marks."),
    ("TROVE_ES_KAFKA_BOOTSTRAP_SERVERS", "(empty)",
     "Kafka bootstrap servers. Empty: the stack starts the embedded `tansu` broker."),
    ("TROVE_ES_TOPIC_EVENTS", "trove.events", "Domain events, keyed by aggregate id."),
    ("TROVE_ES_TOPIC_CONDUCTOR", "trove.conductor", "Guest heartbeats and results."),
    ("TROVE_ES_TOPIC_NOTIFICATIONS_INFO", "notifications.info", "oslo.messaging INFO notifications."),
    ("TROVE_ES_TOPIC_NOTIFICATIONS_ERROR", "notifications.error", "oslo.messaging ERROR notifications."),
    ("TROVE_ES_TOPIC_DEAD_LETTER", "trove.dead-letter", "Messages a consumer could not process."),
    ("TROVE_ES_TOPIC_GUEST_PREFIX", "trove.guest.", "Prefix of each guest's command topic."),
    ("TROVE_ES_EVENTS_PARTITIONS", "8", "Partitions of the events topic when the relay creates it."),
    ("TROVE_ES_CONDUCTOR_PARTITIONS", "4", "Partitions of the conductor topic."),
    ("TROVE_ES_NOTIFICATIONS_PARTITIONS", "4", "Partitions of each notifications topic."),
    ("TROVE_ES_CONSUMER_GROUP_PREFIX", "trove-es", "Consumer groups are `<prefix>.<consumer name>`."),
    ("TROVE_ES_KAFKA_SESSION_TIMEOUT_MS", "6000", "Consumer session timeout (short, so group joins are quick)."),
    ("TROVE_ES_RELAY_NAME", "trove", "Name of the relay's durable position and lease."),
    ("TROVE_ES_RELAY_BATCH_SIZE", "1000", "Events the relay reads and publishes per batch."),
    ("TROVE_ES_AUDIT_CHECKPOINT_EVERY", "1000", "The relay signs a checkpoint of the event chain every this "
     "many events,"),
    ("TROVE_ES_AUDIT_CHECKPOINT_INTERVAL_S", "60",
     "and, while it idles, at most this long after the last checkpoint when events came since."),
    ("TROVE_ES_RELAY_IDLE_SLEEP_S", "0.02", "How long the relay waits when the store has nothing new."),
    ("TROVE_ES_CONSUMER_MAX_RECORDS", "2000", "Records a consumer applies per poll (one SQL transaction)."),
    ("TROVE_ES_CONSUMER_FETCH_WAIT_MS", "50",
     "Longest a consumer's fetch waits on the broker for new records. tansu answers a parked fetch when "
     "its wait ends, not when a record arrives: each consumer hop adds up to about half of this."),
    ("TROVE_ES_API_HOST", "127.0.0.1", "Address the REST API binds (Trove's `bind_host`)."),
    ("TROVE_ES_API_PORT", "8779", "Port of the REST API (Trove's `bind_port`)."),
    ("TROVE_ES_API_WORKERS", "2", "gunicorn workers serving the API."),
    ("TROVE_ES_API_THREADS", "4", "Threads per API worker (gunicorn `gthread`); requests waiting on I/O overlap."),
    ("TROVE_ES_AUTH_MODE", "local", "`local` (tokens signed by this stack) or `keystone` (Keystone v3)."),
    ("TROVE_ES_KEYSTONE_URL", "(empty)", "Keystone v3 endpoint, e.g. `http://keystone:5000/v3`, for `keystone` mode."),
    ("TROVE_ES_KEYSTONE_CACHE_S", "60", "How long a validated Keystone token is trusted without asking again."),
    ("TROVE_ES_REGION", "RegionOne", "Region reported in instance views and notifications."),
    ("TROVE_ES_CATALOG_FILE", "(built in)", "JSON file of datastores, versions and flavors seeded on first start."),
    ("TROVE_ES_QUOTA_INSTANCES", "5", "Default per-tenant instance quota (-1: unlimited)."),
    ("TROVE_ES_QUOTA_VOLUMES", "20", "Default per-tenant volume quota in GB (-1: unlimited)."),
    ("TROVE_ES_QUOTA_BACKUPS", "50", "Default per-tenant backup quota (-1: unlimited)."),
    ("TROVE_ES_USAGE_TIMEOUT_S", "1800", "A build not healthy by then fails (Trove's `usage_timeout`)."),
    ("TROVE_ES_AGENT_HEARTBEAT_EXPIRY_S", "90", "A guest silent this long shows `operating_status` ERROR."),
    ("TROVE_ES_REPORT_INTERVAL_S", "10", "How often guests send heartbeats (Trove's `report_interval`)."),
    ("TROVE_ES_BACKUP_PROGRESS_INTERVAL_S", "60",
     "At most one `BackupProgressed` event per this many seconds of a running backup."),
    ("TROVE_ES_COMPUTE_DRIVER", "auto",
     "`local`: each instance a guest agent and a real PostgreSQL or MariaDB server on this host; `fake`: "
     "simulated servers, volumes and guests; `openstack`: a Nova server, Cinder volume and security group "
     "per instance on the `TROVE_ES_OS_CLOUD` cloud (docs/openstack.md); `auto`: `local` where both "
     "datastores' server binaries are installed, `fake` elsewhere."),
    ("TROVE_ES_LOCAL_COMPUTE_PORTS", "21000-21999", "Ports the `local` driver gives its instances' datastores."),
    ("TROVE_ES_FAKE_COMPUTE_DELAY_S", "0.5", "How long the fake compute takes to build or change a server."),
    ("TROVE_ES_OS_CLOUD", "(empty)",
     "The clouds.yaml cloud of the `openstack` driver and the Swift backup storage; empty: `OS_CLOUD` or the "
     "`OS_*` variables."),
    ("TROVE_ES_OS_REGION", "(the cloud's)", "Region of that cloud."),
    ("TROVE_ES_OS_NETWORKS", "(empty)",
     "Comma-separated Neutron network ids every server is attached to; empty: Nova allocates one (`auto`)."),
    ("TROVE_ES_OS_SECURITY_GROUP_CIDR", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16",
     "Comma-separated CIDRs each instance's security group admits to its datastore's port: private networks "
     "unless the operator says otherwise (`0.0.0.0/0,::/0` opens it to everyone)."),
    ("TROVE_ES_OS_VOLUME_TYPE", "(the cloud's default)", "Cinder volume type of instances' volumes."),
    ("TROVE_ES_OS_VOLUME_WAIT_S", "300", "How long a create waits for its Cinder volume to become available."),
    ("TROVE_ES_BACKUP_STORAGE", "local",
     "Where backups are kept: `local`, a directory of this host; `swift`, a Swift container of the "
     "`TROVE_ES_OS_CLOUD` cloud that guests reach through temp URLs."),
    ("TROVE_ES_SWIFT_CONTAINER", "trove-es-backups", "The Swift container of backups (created on first use)."),
    ("TROVE_ES_SWIFT_TEMP_URL_KEY", "(empty: the account's key)",
     "Secret signing guests' temp URLs; set on the Swift account when neither of its temp-URL keys is it."),
    ("TROVE_ES_SWIFT_TEMP_URL_TTL_S", "3600", "How long a temp URL handed to a guest stays valid."),
    ("TROVE_ES_BILLING_URL", "(the read models' URL; with SQLite read models, <data dir>/billing.db)",
     "Database of the billing ledger (`trove-es billing run` and `billing report`, mgmt `usage`)."),
    ("TROVE_ES_TASK_MANAGER_URL", "(the read models' URL; with SQLite read models, <data dir>/task_manager.db)",
     "Database of the task manager's work items, offsets and lease (shared by all task managers)."),
    ("TROVE_ES_FAKE_CLOUD_URL", "sqlite:///<data dir>/fake_cloud.db",
     "Where the fake compute keeps its servers and the simulated guests their state (a cloud of its own)."),
    ("TROVE_ES_FAKE_COMPUTE_MAX_SERVERS", "-1",
     "Fake compute's server quota; a create beyond it fails as Nova's quota would (-1: unlimited)."),
    ("TROVE_ES_FAKE_IMAGE_MIN_DISK_GB", "0",
     "Fake image's minimum disk; a flavor with a smaller disk builds a server in ERROR (0: no minimum)."),
    ("TROVE_ES_READ_YOUR_WRITES_WAIT_S", "2", "How long a read waits for the view to reach the caller's write."),
    ("TROVE_ES_NOTIFICATION_HOST", "(this machine's host name)",
     "Host in notifications' `publisher_id` (`<server type>.<host>`, Trove's `host`)."),
    ("TROVE_ES_NOTIFICATION_ERRORS_ON_INFO", "false",
     "`true` sends `.error` notifications to the info topic at their ERROR priority, as consumers of "
     "Trove's (which sends errors at INFO) may expect."),
    ("TROVE_ES_EXISTS_NOTIFICATION_INTERVAL_S", "3600",
     "Audit period of `trove.instance.exists` (Trove's `exists_notification_interval`; 0: none sent)."),
    ("TROVE_ES_QUOTA_NOTIFICATION_INTERVAL_S", "3600",
     "How often `dbaas.quota` reports each tenant's quotas (Trove's `quota_notification_interval`; 0: never)."),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment; unknown values raise ``SettingsError``."""
    env = os.environ if environ is None else environ

    def text(name: str, default: str) -> str:
        return env.get(PREFIX + name, default).strip() or default

    def integer(name: str, default: int, minimum: int = 1) -> int:
        raw = env.get(PREFIX + name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{PREFIX}{name} must be at least {minimum}, got {value}")
        return value

    def number(name: str, default: float) -> float:
        raw = env.get(PREFIX + name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be a number, got {raw!r}") from None
        if value < 0:
            raise SettingsError(f"{PREFIX}{name} must not be negative, got {value}")
        return value

    def flag(name: str, default: bool) -> bool:
        raw = env.get(PREFIX + name, "").strip().lower()
        if not raw:
            return default
        if raw not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError(f"{PREFIX}{name} must be true or false, got {raw!r}")
        return raw in ("true", "1", "yes")

    def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = text(name, default)
        if value not in allowed:
            raise SettingsError(f"{PREFIX}{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    data_dir = Path(text("DATA_DIR", "./var")).expanduser().resolve()
    defaults = Topics()
    topics = Topics(
        events=text("TOPIC_EVENTS", defaults.events),
        conductor=text("TOPIC_CONDUCTOR", defaults.conductor),
        notifications_info=text("TOPIC_NOTIFICATIONS_INFO", defaults.notifications_info),
        notifications_error=text("TOPIC_NOTIFICATIONS_ERROR", defaults.notifications_error),
        dead_letter=text("TOPIC_DEAD_LETTER", defaults.dead_letter),
        guest_prefix=text("TOPIC_GUEST_PREFIX", defaults.guest_prefix),
    )
    event_store_url = text("EVENT_STORE_URL", f"sqlite:///{data_dir / 'events.db'}")
    read_model_url = text("READ_MODEL_URL", f"sqlite:///{data_dir / 'read_models.db'}")
    fake_cloud_url = text("FAKE_CLOUD_URL", f"sqlite:///{data_dir / 'fake_cloud.db'}")
    # Shared by every task manager of a deployment (its lease and work items): the read models' database,
    # unless that is a SQLite file, where a file of its own keeps it off the projections' write lock.
    task_manager_url = text("TASK_MANAGER_URL", f"sqlite:///{data_dir / 'task_manager.db'}"
                            if read_model_url.startswith("sqlite") else read_model_url)
    # The billing ledger is a consumer of notifications as a billing system would be; on SQLite, a file of its own.
    billing_url = text("BILLING_URL", f"sqlite:///{data_dir / 'billing.db'}"
                       if read_model_url.startswith("sqlite") else read_model_url)
    for name, url in (("EVENT_STORE_URL", event_store_url), ("READ_MODEL_URL", read_model_url),
                      ("FAKE_CLOUD_URL", fake_cloud_url), ("TASK_MANAGER_URL", task_manager_url),
                      ("BILLING_URL", billing_url)):
        if not url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise SettingsError(f"{PREFIX}{name} must be a sqlite:// or postgresql:// URL")
    return Settings(
        data_dir=data_dir,
        event_store_url=event_store_url,
        read_model_url=read_model_url,
        fake_cloud_url=fake_cloud_url,
        task_manager_url=task_manager_url,
        billing_url=billing_url,
        kafka_bootstrap_servers=text("KAFKA_BOOTSTRAP_SERVERS", ""),
        topics=topics,
        events_partitions=integer("EVENTS_PARTITIONS", 8),
        conductor_partitions=integer("CONDUCTOR_PARTITIONS", 4),
        notifications_partitions=integer("NOTIFICATIONS_PARTITIONS", 4),
        consumer_group_prefix=text("CONSUMER_GROUP_PREFIX", "trove-es"),
        kafka_session_timeout_ms=integer("KAFKA_SESSION_TIMEOUT_MS", 6000, minimum=1000),
        relay_name=text("RELAY_NAME", "trove"),
        relay_batch_size=integer("RELAY_BATCH_SIZE", 1000),
        audit_checkpoint_every=integer("AUDIT_CHECKPOINT_EVERY", 1000),
        audit_checkpoint_interval_s=number("AUDIT_CHECKPOINT_INTERVAL_S", 60.0),
        relay_idle_sleep_s=number("RELAY_IDLE_SLEEP_S", 0.02),
        consumer_max_records=integer("CONSUMER_MAX_RECORDS", 2000),
        consumer_fetch_wait_ms=integer("CONSUMER_FETCH_WAIT_MS", 50, minimum=1),
        api_host=text("API_HOST", "127.0.0.1"),
        api_port=integer("API_PORT", 8779, minimum=0),
        api_workers=integer("API_WORKERS", 2),
        api_threads=integer("API_THREADS", 4),
        auth_mode=choice("AUTH_MODE", "local", ("local", "keystone")),
        keystone_url=text("KEYSTONE_URL", ""),
        keystone_cache_s=number("KEYSTONE_CACHE_S", 60.0),
        region=text("REGION", "RegionOne"),
        catalog_file=Path(raw_catalog).expanduser().resolve() if (raw_catalog := text("CATALOG_FILE", "")) else None,
        quota_instances=integer("QUOTA_INSTANCES", 5, minimum=-1),
        quota_volumes=integer("QUOTA_VOLUMES", 20, minimum=-1),
        quota_backups=integer("QUOTA_BACKUPS", 50, minimum=-1),
        usage_timeout_s=number("USAGE_TIMEOUT_S", 1800.0),
        agent_heartbeat_expiry_s=number("AGENT_HEARTBEAT_EXPIRY_S", 90.0),
        report_interval_s=number("REPORT_INTERVAL_S", 10.0),
        backup_progress_interval_s=number("BACKUP_PROGRESS_INTERVAL_S", 60.0),
        compute_driver=_compute_driver(choice("COMPUTE_DRIVER", "auto", ("auto", "fake", "local", "openstack"))),
        local_compute_ports=_port_range(PREFIX + "LOCAL_COMPUTE_PORTS", text("LOCAL_COMPUTE_PORTS", "21000-21999")),
        fake_compute_delay_s=number("FAKE_COMPUTE_DELAY_S", 0.5),
        fake_compute_max_servers=integer("FAKE_COMPUTE_MAX_SERVERS", -1, minimum=-1),
        fake_image_min_disk_gb=integer("FAKE_IMAGE_MIN_DISK_GB", 0, minimum=0),
        os_cloud=text("OS_CLOUD", ""),
        os_region=text("OS_REGION", ""),
        os_networks=_names(text("OS_NETWORKS", "")),
        os_security_group_cidrs=_cidrs(PREFIX + "OS_SECURITY_GROUP_CIDR",
                                       text("OS_SECURITY_GROUP_CIDR", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16")),
        os_volume_type=text("OS_VOLUME_TYPE", ""),
        os_volume_wait_s=number("OS_VOLUME_WAIT_S", 300.0),
        backup_storage=choice("BACKUP_STORAGE", "local", ("local", "swift")),
        swift_container=text("SWIFT_CONTAINER", "trove-es-backups"),
        swift_temp_url_key=text("SWIFT_TEMP_URL_KEY", ""),
        swift_temp_url_ttl_s=integer("SWIFT_TEMP_URL_TTL_S", 3600),
        read_your_writes_wait_s=number("READ_YOUR_WRITES_WAIT_S", 2.0),
        notification_host=text("NOTIFICATION_HOST", socket.gethostname()),
        notification_errors_on_info=flag("NOTIFICATION_ERRORS_ON_INFO", False),
        exists_notification_interval_s=integer("EXISTS_NOTIFICATION_INTERVAL_S", 3600, minimum=0),
        quota_notification_interval_s=integer("QUOTA_NOTIFICATION_INTERVAL_S", 3600, minimum=0),
    )


def _compute_driver(chosen: str) -> str:
    if chosen != "auto":
        return chosen
    from adapters.compute.local import datastore_binaries_installed

    return "local" if datastore_binaries_installed() else "fake"


def _names(raw: str) -> tuple[str, ...]:
    return tuple(name for name in (part.strip() for part in raw.split(",")) if name)


def _cidrs(name: str, raw: str) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_network(cidr, strict=False)) for cidr in _names(raw))
    except ValueError:
        raise SettingsError(f"{name} must be comma-separated CIDRs such as 10.0.0.0/8,2001:db8::/32, "
                            f"got {raw!r}") from None


def _port_range(name: str, raw: str) -> tuple[int, int]:
    low, _, high = raw.partition("-")
    try:
        ports = int(low), int(high or low)
    except ValueError:
        raise SettingsError(f"{name} must be a port range such as 21000-21999, got {raw!r}") from None
    if not 1024 <= ports[0] <= ports[1] <= 65535:
        raise SettingsError(f"{name} must be a range of ports from 1024 to 65535, low first, got {raw!r}")
    return ports
