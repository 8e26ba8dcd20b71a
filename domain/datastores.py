"""The service catalog: datastores, their versions, and flavors, each an aggregate with its own history.

Ids are derived from names (datastores, versions) or taken from Nova (flavors), so seeding the
catalog twice, or from two processes at once, names the same aggregates and the second seed is a no-op.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

_NAMESPACE = uuid.UUID("3c1f7a52-2a6e-4f5e-8c1b-5b7e0e6d4a21")


def datastore_id(name: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"datastore/{name}")


def datastore_version_id(datastore: str, version: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"datastore/{datastore}/version/{version}")


def flavor_aggregate_id(flavor_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"flavor/{flavor_id}")


class Datastore(Aggregate):
    @staticmethod
    def create_id(name: str, **_: Any) -> uuid.UUID:
        return datastore_id(name)

    @event("DatastoreRegistered")
    def __init__(self, name: str, default_version: str | None) -> None:
        self.name = name
        self.default_version = default_version

    @event("DatastoreDefaultVersionChanged")
    def change_default_version(self, default_version: str) -> None:
        self.default_version = default_version


class DatastoreVersion(Aggregate):
    @staticmethod
    def create_id(datastore: str, name: str, **_: Any) -> uuid.UUID:
        return datastore_version_id(datastore, name)

    @event("DatastoreVersionRegistered")
    def __init__(self, datastore: str, name: str, manager: str, image_id: str, packages: list[str],
                 active: bool) -> None:
        self.datastore = datastore
        self.name = name
        self.manager = manager
        self.image_id = image_id
        self.packages = packages
        self.active = active

    @event("DatastoreVersionActivated")
    def activate(self) -> None:
        self.active = True

    @event("DatastoreVersionDeactivated")
    def deactivate(self) -> None:
        self.active = False


class Flavor(Aggregate):
    @staticmethod
    def create_id(flavor_id: str, **_: Any) -> uuid.UUID:
        return flavor_aggregate_id(flavor_id)

    @event("FlavorRegistered")
    def __init__(self, flavor_id: str, name: str, ram: int, vcpus: int, disk: int, ephemeral: int = 0) -> None:
        self.flavor_id = flavor_id
        self.name = name
        self.ram = ram
        self.vcpus = vcpus
        self.disk = disk
        self.ephemeral = ephemeral

    def summary(self) -> dict[str, Any]:
        """The flavor as an instance records it: enough for views and billing, even if the flavor changes later."""
        return {"id": self.flavor_id, "name": self.name, "ram": self.ram, "vcpus": self.vcpus, "disk": self.disk}


CATALOG_EVENTS: tuple[type, ...] = (
    Datastore.DatastoreRegistered, Datastore.DatastoreDefaultVersionChanged,
    DatastoreVersion.DatastoreVersionRegistered, DatastoreVersion.DatastoreVersionActivated,
    DatastoreVersion.DatastoreVersionDeactivated, Flavor.FlavorRegistered,
)
