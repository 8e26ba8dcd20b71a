"""Settings: embedded defaults, overrides, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.event_store import event_store_env
from adapters.settings import SETTINGS_DOC, SettingsError, load_settings


def test_embedded_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = load_settings({"TROVE_ES_DATA_DIR": str(tmp_path)})
    assert settings.event_store_url == f"sqlite:///{tmp_path / 'events.db'}"
    assert settings.read_model_url == f"sqlite:///{tmp_path / 'read_models.db'}"
    assert settings.uses_embedded_broker
    assert settings.topics.events == "trove.events"
    assert settings.group_id("instance-view") == "trove-es.instance-view"


def test_production_values_override_defaults() -> None:
    settings = load_settings({
        "TROVE_ES_EVENT_STORE_URL": "postgresql://trove:s3cret@db.example:5433/trove",
        "TROVE_ES_KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092",
        "TROVE_ES_TOPIC_EVENTS": "prod.events",
        "TROVE_ES_EVENTS_PARTITIONS": "32",
        "TROVE_ES_CONSUMER_GROUP_PREFIX": "region-one",
    })
    assert not settings.uses_embedded_broker
    assert settings.topics.events == "prod.events"
    assert settings.events_partitions == 32
    assert settings.group_id("billing") == "region-one.billing"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("TROVE_ES_EVENTS_PARTITIONS", "many", "must be an integer"),
    ("TROVE_ES_EVENTS_PARTITIONS", "0", "must be at least 1"),
    ("TROVE_ES_KAFKA_SESSION_TIMEOUT_MS", "10", "must be at least 1000"),
    ("TROVE_ES_RELAY_IDLE_SLEEP_S", "-1", "must not be negative"),
    ("TROVE_ES_EVENT_STORE_URL", "mysql://root@localhost/trove", "sqlite:// or postgresql://"),
])
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}.*{message}|{message}"):
        load_settings({name: value})


def test_postgres_event_store_enables_db_functions() -> None:
    env = event_store_env("postgresql://trove:s3cret@db.example:5433/trove?schema=es")
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == ("db.example", "5433", "trove")
    assert env["POSTGRES_ENABLE_DB_FUNCTIONS"] == "y"
    assert env["POSTGRES_SCHEMA"] == "es"


def test_sqlite_event_store_must_be_a_file(tmp_path: Path) -> None:
    assert event_store_env(f"sqlite:///{tmp_path}/e.db")["SQLITE_DBNAME"] == f"{tmp_path}/e.db"
    with pytest.raises(ValueError, match="SQLite file"):
        event_store_env("sqlite:///:memory:")


def test_every_documented_setting_is_read() -> None:
    source = Path(load_settings.__code__.co_filename).read_text()
    for name, _default, _meaning in SETTINGS_DOC:
        assert f'"{name.removeprefix("TROVE_ES_")}"' in source, f"{name} is documented but never read"


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, default, _meaning in SETTINGS_DOC:
        assert f"| `{name}` | `{default}` |" in readme, f"README's configuration table lacks {name}"


def test_the_task_manager_shares_a_postgresql_read_model_database_but_not_a_sqlite_file(tmp_path: Path) -> None:
    embedded = load_settings({"TROVE_ES_DATA_DIR": str(tmp_path)})
    assert embedded.task_manager_url == f"sqlite:///{tmp_path.resolve()}/task_manager.db"
    assert embedded.fake_cloud_url == f"sqlite:///{tmp_path.resolve()}/fake_cloud.db"
    production = load_settings({"TROVE_ES_READ_MODEL_URL": "postgresql://trove@db/reads"})
    assert production.task_manager_url == "postgresql://trove@db/reads", "every task manager must share it"


def test_on_sqlite_the_projections_read_apart_from_the_instance_view_get_files_of_their_own(tmp_path: Path) -> None:
    embedded = load_settings({"TROVE_ES_DATA_DIR": str(tmp_path)})
    assert embedded.projection_url("instance-view") == embedded.read_model_url
    assert embedded.projection_url("catalog-view") == embedded.read_model_url
    assert embedded.projection_url("fault-history") == f"sqlite:///{tmp_path / 'fault-history.db'}"
    assert embedded.projection_url("notifications") == f"sqlite:///{tmp_path / 'notifications.db'}"
    shared = load_settings({"TROVE_ES_DATA_DIR": str(tmp_path),
                            "TROVE_ES_READ_MODEL_URL": "postgresql://postgres@127.0.0.1/read"})
    assert shared.projection_url("fault-history") == shared.read_model_url, "one PostgreSQL database for all"


def test_the_openstack_driver_and_swift_storage_read_their_settings() -> None:
    settings = load_settings({
        "TROVE_ES_COMPUTE_DRIVER": "openstack", "TROVE_ES_OS_CLOUD": "dbaas", "TROVE_ES_OS_REGION": "RegionTwo",
        "TROVE_ES_OS_NETWORKS": " net-1, net-2 ,", "TROVE_ES_OS_SECURITY_GROUP_CIDR": "198.51.100.7/24,2001:db8::/32",
        "TROVE_ES_BACKUP_STORAGE": "swift", "TROVE_ES_SWIFT_TEMP_URL_KEY": "s3cret-key",
    })
    assert (settings.compute_driver, settings.os_cloud, settings.os_region) == ("openstack", "dbaas", "RegionTwo")
    assert settings.os_networks == ("net-1", "net-2")
    assert settings.os_security_group_cidrs == ("198.51.100.0/24", "2001:db8::/32")
    assert (settings.backup_storage, settings.swift_container, settings.swift_temp_url_ttl_s) == (
        "swift", "trove-es-backups", 3600)
    assert "s3cret-key" not in repr(settings), "the temp-URL key must not reach a log line"


def test_security_groups_admit_private_networks_unless_told_otherwise() -> None:
    assert load_settings({}).os_security_group_cidrs == ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    with pytest.raises(SettingsError, match="TROVE_ES_OS_SECURITY_GROUP_CIDR must be comma-separated CIDRs"):
        load_settings({"TROVE_ES_OS_SECURITY_GROUP_CIDR": "10.0.0.0/8,everyone"})
