"""Quotas hold under concurrent creates, on the real PostgreSQL event store."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from adapters.event_store import event_store_env
from domain.context import OperationContext
from domain.errors import QuotaExceeded
from services.instances import CreateInstance, InstanceService

CATALOG = json.loads((Path(__file__).resolve().parents[2] / "adapters" / "default_catalog.json").read_text())


def test_concurrent_creates_never_exceed_the_instance_quota(postgres_url: str) -> None:
    limit, attempts = 3, 8
    services = [InstanceService(env=event_store_env(postgres_url), quota_defaults={"instances": limit, "volumes": -1})
                for _ in range(attempts)]
    services[0].catalog.seed(CATALOG)
    start = threading.Barrier(attempts)
    outcomes: list[str] = []

    def create(n: int) -> None:
        start.wait()
        try:
            services[n].create(OperationContext(request_id=f"req-{n}", tenant_id="t1"),
                               CreateInstance(name=f"db{n}", flavor_ref="2", volume_size=1, datastore="mysql",
                                              datastore_version=None))
            outcomes.append("created")
        except QuotaExceeded:
            outcomes.append("over quota")

    threads = [threading.Thread(target=create, args=(n,)) for n in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["created"] * limit + ["over quota"] * (attempts - limit)
    quota = services[0].quota("t1")
    assert quota is not None and quota.reserved("instances") == limit
    for service in services:
        service.close()


def test_limits_changed_by_an_admin_apply_to_the_next_request(postgres_url: str) -> None:
    service = InstanceService(env=event_store_env(postgres_url), quota_defaults={"instances": 1, "volumes": 10})
    service.catalog.seed(CATALOG)
    admin = OperationContext(request_id="req-admin", tenant_id="admin")
    request = CreateInstance(name="db", flavor_ref="2", volume_size=8, datastore="mysql", datastore_version=None)
    service.create(OperationContext(request_id="req-1", tenant_id="t1"), request)
    try:
        service.create(OperationContext(request_id="req-2", tenant_id="t1"), request)
        raise AssertionError("the second create should be over quota")
    except QuotaExceeded as exc:
        assert set(exc.resources) == {"instances", "volumes"}
    service.set_quota_limits(admin, "t1", {"instances": 2, "volumes": 16})
    service.create(OperationContext(request_id="req-3", tenant_id="t1"), request)
    service.close()


def test_a_long_lived_quota_is_snapshotted_and_reads_back_the_same(postgres_url: str) -> None:
    writer = InstanceService(env=event_store_env(postgres_url), quota_defaults={"instances": -1, "volumes": -1})
    writer.catalog.seed(CATALOG)
    request = CreateInstance(name="db", flavor_ref="2", volume_size=1, datastore="mysql", datastore_version=None)
    for n in range(55):
        writer.create(OperationContext(request_id=f"req-{n}", tenant_id="busy"), request)
    quota = writer.quota("busy")
    assert quota is not None and quota.version >= 50
    assert list(writer.snapshots.get(quota.id)), "a snapshot was taken"
    # Another process, with a cold cache, reads the same state from the snapshot and the events after it.
    reader = InstanceService(env=event_store_env(postgres_url))
    fresh = reader.quota("busy")
    assert fresh is not None
    assert (fresh.version, fresh.reservations, fresh.in_use) == (quota.version, quota.reservations, quota.in_use)
    assert len(fresh.reservations) == 55
    writer.close()
    reader.close()


def test_settlements_waiting_for_a_tenants_quota_are_saved_together(postgres_url: str) -> None:
    service = InstanceService(env=event_store_env(postgres_url), quota_defaults={"instances": -1, "volumes": -1})
    service.catalog.seed(CATALOG)
    builds = 5
    for n in range(builds):
        service.create(OperationContext(request_id=f"req-{n}", tenant_id="t1"),
                       CreateInstance(name=f"db{n}", flavor_ref="2", volume_size=2, datastore="mysql",
                                      datastore_version=None))
    saves: list[list[str]] = []
    save = service.save

    def counting_save(*aggregates, **kwargs):  # type: ignore[no-untyped-def]
        saves.append([type(aggregate).__name__ for aggregate in aggregates])
        return save(*aggregates, **kwargs)

    service.save = counting_save  # type: ignore[method-assign]
    results: dict[int, bool] = {}
    settler = OperationContext(request_id="req-tm", tenant_id="t1")
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(
        n, service.settle_quota(settler, "t1", f"req-{n}", commit=n % 2 == 0))) for n in range(builds)]
    with service._quota_writes("t1"):  # every settlement queues behind a writer of the quota
        for thread in threads:
            thread.start()
        for _ in range(3000):  # a bound, so a settlement that never queues fails the test instead of hanging it
            if len(service._settlements.get("t1", [])) == builds:
                break
            threading.Event().wait(0.01)
        assert len(service._settlements.get("t1", [])) == builds, "every settlement queued behind the writer"
    for thread in threads:
        thread.join()

    assert results == {n: True for n in range(builds)}
    assert saves == [["Quota"]], "one save for the five settlements"
    quota = service.quota("t1")
    assert quota is not None and not quota.reservations
    assert quota.in_use["instances"] == 3 and quota.in_use["volumes"] == 6, "commits kept, releases dropped"
    assert service.settle_quota(settler, "t1", "req-0", commit=True) is False, "a repeat changes nothing"
    service.close()
