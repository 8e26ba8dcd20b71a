"""Trove's response bodies, rendered from read-model records.

Shapes follow Trove's current views (``trove/instance/views.py``, ``datastore/views.py``,
``flavor/views.py``, ``limits/views.py``, mgmt quota views): links with a versioned ``self`` and an
unversioned ``bookmark``, naive UTC timestamps without fractions, optional keys only when they apply.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode

from domain.quota import RESOURCES, Quota
from projections.backup_view import BackupRecord
from projections.catalog_view import DatastoreRecord, FlavorRecord, VersionRecord
from projections.instance_view import InstanceRecord
from services.ports import GIB

API_VERSION = "v1.0"
VERSION_UPDATED = "2012-08-01T00:00:00Z"


@lru_cache(maxsize=4096)  # every read of an instance renders the same few timestamps again
def trove_time(iso: str | None) -> str | None:
    """``2015-04-24T11:27:24``: UTC, no zone, no fraction, as Trove serializes dates."""
    if not iso:
        return None
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


class Links:
    """Link builder for one request: where the client reached us, and for which tenant."""

    def __init__(self, prefix: str, tenant_id: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.tenant_id = tenant_id

    def of(self, collection: str, item_id: str) -> list[dict[str, str]]:
        item = quote(str(item_id), safe="")
        return [{"href": f"{self.prefix}/{API_VERSION}/{self.tenant_id}/{collection}/{item}", "rel": "self"},
                {"href": f"{self.prefix}/{collection}/{item}", "rel": "bookmark"}]

    def next_page(self, path: str, limit: int, marker: str, **filters: str | None) -> list[dict[str, str]]:
        """The ``next`` link; ``filters`` (those that are set) ride along, so the next page is of the same list."""
        query = urlencode({**{k: v for k, v in filters.items() if v is not None}, "limit": limit, "marker": marker})
        return [{"href": f"{self.prefix}/{API_VERSION}/{self.tenant_id}/{path}?{query}", "rel": "next"}]


def api_version(prefix: str) -> dict[str, Any]:
    return {"id": API_VERSION, "status": "CURRENT", "updated": VERSION_UPDATED,
            "links": [{"href": f"{prefix.rstrip('/')}/{API_VERSION}/", "rel": "self"}]}


def versions(prefix: str) -> dict[str, Any]:
    return {"versions": [api_version(prefix)]}


# Backups --------------------------------------------------------------------------------------------

def backup(record: BackupRecord) -> dict[str, Any]:
    """Trove's backup view: ``size`` in GB of what was stored, ``locationRef`` where it is kept."""
    return {
        "id": record.id, "name": record.name, "description": record.description,
        "locationRef": record.location, "instance_id": record.instance_id, "project_id": record.tenant_id,
        "created": trove_time(record.created_at), "updated": trove_time(record.updated_at),
        "size": None if record.size is None else round(record.size / GIB, 6), "status": record.status,
        "parent_id": record.parent_id,
        "datastore": {"type": record.datastore, "version": record.datastore_version,
                      "version_id": record.datastore_version_id},
    }


# Instances ------------------------------------------------------------------------------------------

def _addresses(raw: list[Any]) -> list[dict[str, Any]]:
    """The compute driver's addresses as Trove lists them: ``{"address", "type"[, "network"]}``, and the
    datastore's ``port`` where it is not the datastore's usual one (the local driver's instances share a host)."""
    rendered = []
    for entry in raw or []:
        if isinstance(entry, str):
            rendered.append({"address": entry, "type": "private"})
        elif isinstance(entry, dict) and (entry.get("address") or entry.get("addr")):
            item = {"address": str(entry.get("address") or entry.get("addr")),
                    "type": str(entry.get("type") or "private")}
            if entry.get("network"):
                item["network"] = str(entry["network"])
            if isinstance(entry.get("port"), int):
                item["port"] = entry["port"]
            rendered.append(item)
    return rendered


def instance_summary(record: InstanceRecord, links: Links, *, admin: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "operating_status": record.operating_status,
        "links": links.of("instances", record.id),
        "flavor": {"id": str(record.flavor["id"]), "links": links.of("flavors", str(record.flavor["id"]))},
        "datastore": {"type": record.datastore, "version": record.datastore_version,
                      "version_number": record.datastore_version},
        "region": record.region,
        "access": {"is_public": False, "allowed_cidrs": []},
    }
    if record.volume_size is not None:
        view["volume"] = {"size": record.volume_size}
    addresses = _addresses(record.addresses)
    if addresses:
        view["ip"] = [address["address"] for address in addresses]
        view["addresses"] = addresses
    if admin:
        view["tenant_id"] = record.tenant_id
    return view


def instance_detail(record: InstanceRecord, links: Links, *, admin: bool = False) -> dict[str, Any]:
    view = instance_summary(record, links, admin=admin)
    view["created"] = trove_time(record.created_at)
    view["updated"] = trove_time(record.updated_at)
    # The datastore status was set when the instance was created, until the guest first reports.
    view["service_status_updated"] = trove_time(record.service_status_updated or record.created_at)
    if admin:
        view["server_id"] = record.server_id
        view["volume_id"] = record.volume_id
    if "volume" in view and record.volume_used_bytes is not None:
        view["volume"]["used"] = round(record.volume_used_bytes / GIB, 2)  # GB, as Trove's show gives it
    if record.fault is not None:
        view["fault"] = fault(record.fault, admin=admin)
    return view


def fault(recorded: dict[str, Any], *, admin: bool) -> dict[str, Any]:
    """Trove's ``fault``: ``created`` is when it was last updated; ``details`` (the traceback) for admins only."""
    return {"message": recorded["message"], "created": trove_time(recorded.get("updated") or recorded["created"]),
            "details": recorded["details"] if admin else None}


def mgmt_instance(record: InstanceRecord, links: Links) -> dict[str, Any]:
    view = instance_detail(record, links, admin=True)
    view.update({
        "tenant_id": record.tenant_id,
        "deleted": record.deleted,
        "deleted_at": trove_time(record.deleted_at),
        "service_status": record.service_status.api_status,
        "task_description": record.task_status.description,
        "guest_status": {"state_description": record.service_status.description},
        "server": ({"id": record.server_id, "status": record.server_status, "tenant_id": record.tenant_id,
                    "deleted": record.deleted, "deleted_at": trove_time(record.deleted_at),
                    "addresses": _addresses(record.addresses)} if record.server_id else None),
    })
    if record.volume_size is not None:
        view["volume"] = {"size": record.volume_size, "id": record.volume_id}
    return view


# Catalog --------------------------------------------------------------------------------------------

def flavor(record: FlavorRecord, links: Links) -> dict[str, Any]:
    try:
        numeric: int | None = int(record.id)
    except ValueError:
        numeric = None
    return {"id": numeric, "str_id": record.id, "name": record.name, "ram": record.ram, "vcpus": record.vcpus,
            "disk": record.disk, "ephemeral": record.ephemeral, "links": links.of("flavors", record.id)}


def version(record: VersionRecord, links: Links, *, include_datastore: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": record.id, "name": record.name, "version": record.name, "links": links.of("datastores/versions",
                                                                                       record.id),
        "active": record.active, "image": record.image_id, "packages": ",".join(record.packages),
    }
    if include_datastore:
        view["datastore"] = record.datastore_id
    return view


def datastore(record: DatastoreRecord, links: Links, *, admin: bool = False) -> dict[str, Any]:
    shown = [v for v in record.versions if admin or v.active]
    view: dict[str, Any] = {"id": record.id, "name": record.name, "links": links.of("datastores", record.id),
                            "versions": [version(v, links, include_datastore=False) for v in shown]}
    if record.default_version_id:
        view["default_version"] = record.default_version_id
    return view


# Limits and quotas ------------------------------------------------------------------------------------

def absolute_limits(quota: Quota | None, defaults: dict[str, int]) -> dict[str, Any]:
    limits = quota.limits if quota is not None else {}
    return {"verb": "ABSOLUTE", **{f"max_{r}": limits.get(r, defaults.get(r, -1)) for r in RESOURCES}}


def quota_usages(quota: Quota | None, defaults: dict[str, int]) -> list[dict[str, Any]]:
    return [{"resource": r,
             "in_use": quota.in_use.get(r, 0) if quota else 0,
             "reserved": quota.reserved(r) if quota else 0,
             "limit": quota.limit(r, defaults) if quota else defaults.get(r, -1)} for r in RESOURCES]
