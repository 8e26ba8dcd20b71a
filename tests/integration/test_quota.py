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
