"""Several instances changed together (the conductor's batches), on a real SQLite event store."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.event_store import event_store_env
from domain.context import OperationContext
from domain.errors import NotFound
from domain.instance import Instance
from domain.statuses import ServiceStatus
from services.instances import CreateInstance, InstanceService

CATALOG = json.loads((Path(__file__).resolve().parents[2] / "adapters" / "default_catalog.json").read_text())
CONTEXT = {"request_id": "req-conductor", "tenant_id": "t1", "server_type": "conductor"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[InstanceService]:
    instances = InstanceService(env=event_store_env(f"sqlite:///{tmp_path / 'events.db'}"))
    instances.catalog.seed(CATALOG)
    yield instances
    instances.close()


def _create(service: InstanceService, name: str) -> str:
    context = OperationContext(request_id=f"req-{name}", tenant_id="t1", user_id="u1")
    instance, _ = service.create(context, CreateInstance(name=name, flavor_ref="2", volume_size=1,
                                                         datastore="postgresql", datastore_version=None))
    return str(instance.id)


def _status(value: ServiceStatus):  # type: ignore[no-untyped-def]
    return lambda instance: instance.change_service_status(CONTEXT, value)


def _versions(service: InstanceService, *ids: str) -> list[int]:
    return [service.get(i).version for i in ids]


def test_changes_to_several_instances_are_saved_together_each_loaded_once(service: InstanceService) -> None:
    first, second = _create(service, "a"), _create(service, "b")
    before = service.recorder.max_notification_id()
    changes = service.changes()
    assert changes.apply(first, _status(ServiceStatus.BUILDING)) is True
    assert changes.apply(second, _status(ServiceStatus.BUILDING)) is True
    assert changes.apply(first, _status(ServiceStatus.HEALTHY)) is True, "the second change sees the first"
    assert changes.apply(first, _status(ServiceStatus.HEALTHY)) is False, "and a repeat changes nothing"
    assert _versions(service, first, second) == [1, 1], "nothing is stored before save"
    changes.save()
    assert _versions(service, first, second) == [3, 2]
    assert service.recorder.max_notification_id() == before + 3
    assert service.get(first).service_status is ServiceStatus.HEALTHY


def test_an_instance_written_meanwhile_gets_every_change_again_on_fresh_state(service: InstanceService) -> None:
    first, second = _create(service, "a"), _create(service, "b")
    changes = service.changes()
    changes.apply(first, _status(ServiceStatus.BUILDING))
    changes.apply(second, _status(ServiceStatus.BUILDING))
    # Another process renames the first instance after the batch loaded it: the batch's save conflicts.
    service.record(first, lambda instance: instance.rename(CONTEXT, "renamed"))
    changes.save()
    fresh: Instance = service.get(first)
    assert fresh.name == "renamed" and fresh.service_status is ServiceStatus.BUILDING, "both writes kept"
    assert service.get(second).service_status is ServiceStatus.BUILDING


def test_an_unknown_instance_is_not_found_and_spoils_nothing(service: InstanceService) -> None:
    known = _create(service, "a")
    changes = service.changes()
    with pytest.raises(NotFound):
        changes.apply("00000000-0000-0000-0000-000000000000", _status(ServiceStatus.HEALTHY))
    changes.apply(known, _status(ServiceStatus.BUILDING))
    changes.save()
    assert service.get(known).service_status is ServiceStatus.BUILDING


def test_loads_racing_new_events_never_see_an_aggregate_mid_update(tmp_path: Path) -> None:
    """The library moves its cached aggregate on in place; a copy taken meanwhile used to fail."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    writer = InstanceService(env=event_store_env(url), quota_defaults={"instances": -1, "volumes": -1})
    writer.catalog.seed(CATALOG)
    reader = InstanceService(env=event_store_env(url))  # another process's cache, moved on by each load
    errors: list[BaseException] = []
    stop = threading.Event()

    def load_quota() -> None:
        while not stop.is_set():
            try:
                reader.quota("t1")
            except RuntimeError as error:  # "dictionary changed size during iteration"
                errors.append(error)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so a race shows at once
    threads = [threading.Thread(target=load_quota) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for n in range(150):
            _create(writer, f"n{n}")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(switch)
        reader.close()
        writer.close()
    assert errors == []
    check = InstanceService(env=event_store_env(url))
    try:
        quota = check.quota("t1")
        assert quota is not None and len(quota.reservations) == 150, "every create's reservation is there"
    finally:
        check.close()
