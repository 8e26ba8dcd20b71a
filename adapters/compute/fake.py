"""``FakeCompute``: simulated servers and volumes, for stacks and tests without an OpenStack cloud.

Nothing boots. Each instance's server is a row in ``fake_compute_servers`` in the fake cloud's
database (``TROVE_ES_FAKE_CLOUD_URL``), so a restarted task manager and the simulated guests
(another process) see the same servers. A change takes ``delay_s`` to show: the row holds the
state to come (``pending``) and the time it arrives (``ready_at``), and every read folds it in, so no
background thread is needed and ``delay_s=0`` makes every change immediate.

Failures to inject (constructor arguments, or the ``TROVE_ES_FAKE_*`` settings):

- ``image_min_disk_gb``: the image's minimum disk. A flavor with a smaller non-zero disk builds a
  server in ERROR with Nova's fault ("Flavor's disk is too small for requested image. ...").
- ``max_servers``: the project's server quota. A create beyond it raises ``ComputeQuotaExceeded``
  with Nova's message; servers in ERROR count, as they do in Nova.
- A server whose name contains ``fake-undeletable`` ignores deletes, like a Nova server stuck in
  ``deleting``, so the task manager's delete deadline can be seen to fire.
- A server whose name contains ``fake-over-quota`` is refused as over the project's quota, whatever
  ``max_servers`` says, so one build can meet Nova's quota error on a shared stack.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from adapters.settings import Settings
from adapters.sql.engine import read_only
from adapters.sql.schema import create_tables
from domain.statuses import SERVER_ACTIVE, SERVER_BUILD, SERVER_ERROR, SERVER_REBOOT, SERVER_RESIZE
from services.ports import GIB, ComputeError, ComputeQuotaExceeded, Server, ServerSpec

metadata = MetaData()

fake_compute_servers = Table(
    "fake_compute_servers",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("server_id", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("image_id", String(255), nullable=False),
    Column("flavor", Text, nullable=False),  # JSON flavor summary
    Column("volume_id", String(64)),
    Column("volume_size", Integer),
    Column("status", String(32), nullable=False),
    Column("fault", Text),
    Column("addresses", Text, nullable=False),  # JSON
    Column("pending", Text),  # JSON: column values that take effect at ready_at
    Column("ready_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)

UNDELETABLE_MARKER = "fake-undeletable"
OVER_QUOTA_MARKER = "fake-over-quota"
_NAMESPACE = uuid.UUID("a7c3e9f2-4b1d-4c6e-9f0a-2d8b5e7c1f33")


class FakeCompute:
    """A pretend Nova and Cinder; see the module docstring for the failures it can inject."""

    def __init__(self, engine: Engine, *, delay_s: float = 0.0, max_servers: int | None = None,
                 image_min_disk_gb: int = 0, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)  # polls and lookups: on SQLite they need not queue behind writers
        self.delay_s = delay_s
        self.max_servers = max_servers if max_servers is not None and max_servers >= 0 else None
        self.image_min_disk_gb = image_min_disk_gb
        self._clock = clock
        create_tables(engine, metadata)

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> FakeCompute:
        return cls(engine, delay_s=settings.fake_compute_delay_s, max_servers=settings.fake_compute_max_servers,
                   image_min_disk_gb=settings.fake_image_min_disk_gb)

    # ComputeDriver ----------------------------------------------------------------------------------

    def create(self, spec: ServerSpec) -> Server:
        existing = self.get(spec.instance_id)
        if existing is not None:
            return existing
        now = self._clock()
        with self._engine.begin() as connection:
            if self.max_servers is not None or OVER_QUOTA_MARKER in spec.name:
                used = connection.execute(select(func.count()).select_from(fake_compute_servers)).scalar_one()
                limit = used if OVER_QUOTA_MARKER in spec.name else self.max_servers
                if limit is not None and used >= limit:
                    raise ComputeQuotaExceeded(f"Quota exceeded for instances: Requested 1, but already used "
                                               f"{used} of {limit} instances")
            status, fault, pending = SERVER_BUILD, None, {"status": SERVER_ACTIVE}
            disk = int(spec.flavor.get("disk") or 0)
            if self.image_min_disk_gb and 0 < disk < self.image_min_disk_gb:
                status, pending = SERVER_ERROR, None
                fault = (f"Flavor's disk is too small for requested image. Flavor disk is {disk * GIB} bytes, "
                         f"image is {self.image_min_disk_gb * GIB} bytes.")
            row = {
                "instance_id": spec.instance_id,
                "server_id": str(uuid.uuid5(_NAMESPACE, f"server/{spec.instance_id}")),
                "name": spec.name, "image_id": spec.image_id, "flavor": json.dumps(spec.flavor, sort_keys=True),
                "volume_id": (str(uuid.uuid5(_NAMESPACE, f"volume/{spec.instance_id}"))
                              if spec.volume_size else None),
                "volume_size": spec.volume_size, "status": status, "fault": fault,
                "addresses": json.dumps([{"address": _fake_ip(spec.instance_id), "type": "private",
                                          "network": "private"}]),
                "pending": json.dumps(pending) if pending else None, "ready_at": now + self.delay_s,
                "created_at": now,
            }
            try:
                with connection.begin_nested():
                    connection.execute(insert(fake_compute_servers).values(**row))
            except IntegrityError:  # a concurrent create for the same instance won
                pass
        server = self.get(spec.instance_id)
        assert server is not None
        return server

    def get(self, instance_id: str) -> Server | None:
        with self._reader.connect() as connection:
            row = connection.execute(select(fake_compute_servers)
                                     .where(fake_compute_servers.c.instance_id == instance_id)).mappings().first()
        return _server(self._effective(dict(row))) if row else None

    def server_names_by_status(self) -> dict[str, tuple[str, str]]:
        """Every server's (name, status) by instance id: what the simulated guests poll for, cheaply."""
        columns = fake_compute_servers.c
        with self._reader.connect() as connection:
            rows = connection.execute(select(columns.instance_id, columns.name, columns.status, columns.pending,
                                             columns.ready_at)).all()
        now = self._clock()
        return {row.instance_id: (row.name, json.loads(row.pending).get("status", row.status)
                                  if row.pending and row.ready_at <= now else row.status) for row in rows}

    def list_servers(self) -> list[Server]:
        """Every server, as ``get`` shows it (the simulated guests watch this)."""
        with self._reader.connect() as connection:
            rows = connection.execute(select(fake_compute_servers)).mappings().all()
        return [_server(self._effective(dict(row))) for row in rows]

    def reboot(self, instance_id: str) -> Server:
        return self._change(instance_id, {"status": SERVER_REBOOT}, {"status": SERVER_ACTIVE})

    def resize_volume(self, instance_id: str, new_size: int) -> Server:
        current = self._require(instance_id)
        if current["volume_id"] is None:
            raise ComputeError(f"Server {current['server_id']} has no volume to extend.")
        if new_size in (current["volume_size"], _pending(current).get("volume_size")):
            return _server(current)  # extended, or being extended, to that size already: a repeat
        if new_size < (current["volume_size"] or 0):
            raise ComputeError(f"New size for extend must be greater than current size. "
                               f"(current: {current['volume_size']}, extended: {new_size})")
        return self._change(instance_id, {}, {"volume_size": new_size})

    def resize_flavor(self, instance_id: str, flavor: dict[str, Any]) -> Server:
        # Nova's resize then confirm, folded into one change: RESIZE, then ACTIVE on the new flavor.
        current = self._require(instance_id)
        target = str(flavor.get("id"))
        pending_flavor = json.loads(_pending(current).get("flavor") or "{}")
        if target in (str(json.loads(current["flavor"]).get("id")), str(pending_flavor.get("id"))):
            return _server(current)  # on that flavor, or resizing to it, already: a repeat
        return self._change(instance_id, {"status": SERVER_RESIZE},
                            {"status": SERVER_ACTIVE, "flavor": json.dumps(flavor, sort_keys=True)})

    def delete(self, instance_id: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(delete(fake_compute_servers).where(
                fake_compute_servers.c.instance_id == instance_id,
                fake_compute_servers.c.name.not_like(f"%{UNDELETABLE_MARKER}%")))

    # ------------------------------------------------------------------------------------------------

    def _effective(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["pending"] and row["ready_at"] <= self._clock():
            row.update(json.loads(row["pending"]))
            row["pending"] = None
        return row

    def _require(self, instance_id: str) -> dict[str, Any]:
        with self._reader.connect() as connection:
            row = connection.execute(select(fake_compute_servers)
                                     .where(fake_compute_servers.c.instance_id == instance_id)).mappings().first()
        if row is None:
            raise ComputeError(f"No server is found for instance {instance_id}.")
        current = self._effective(dict(row))
        if current["status"] == SERVER_ERROR:
            raise ComputeError(f"Cannot change server {current['server_id']} while it is in vm_state error.")
        return current

    def _change(self, instance_id: str, now_values: dict[str, Any], later: dict[str, Any]) -> Server:
        current = self._require(instance_id)
        values = {name: current[name] for name in ("status", "flavor", "volume_size")}
        values.update(now_values)
        pending: dict[str, Any] | None = dict(later)
        if self.delay_s <= 0:
            values.update(later)
            pending = None
        values.update(pending=json.dumps(pending) if pending else None, ready_at=self._clock() + self.delay_s)
        with self._engine.begin() as connection:
            connection.execute(update(fake_compute_servers)
                               .where(fake_compute_servers.c.instance_id == instance_id).values(**values))
        server = self.get(instance_id)
        if server is None:
            raise ComputeError(f"No server is found for instance {instance_id}.")
        return server


def _pending(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["pending"]) if row["pending"] else {}


def _server(row: dict[str, Any]) -> Server:
    flavor = json.loads(row["flavor"])
    return Server(instance_id=row["instance_id"], server_id=row["server_id"], status=row["status"],
                  name=row["name"], flavor_id=str(flavor.get("id", "")), volume_id=row["volume_id"],
                  volume_size=row["volume_size"], addresses=json.loads(row["addresses"]), fault=row["fault"],
                  image_id=row["image_id"])


def _fake_ip(instance_id: str) -> str:
    digest = uuid.uuid5(_NAMESPACE, f"ip/{instance_id}").bytes
    return f"10.{digest[0]}.{digest[1]}.{max(2, digest[2] % 254)}"
