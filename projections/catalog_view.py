"""The catalog view: datastores, their versions and flavors, as the API lists and shows them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import JSON, Boolean, Column, Engine, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.orm import Session

from domain.catalog import domain_catalog
from domain.public_events import EventCatalog, PublicEvent

metadata = MetaData()

datastores = Table(
    "catalog_datastores", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("default_version", String(64)),
)

datastore_versions = Table(
    "catalog_datastore_versions", metadata,
    Column("id", String(36), primary_key=True),
    Column("datastore", String(64), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("manager", String(64), nullable=False),
    Column("image_id", String(64), nullable=False),
    Column("packages", JSON, nullable=False),
    Column("active", Boolean, nullable=False),
)

flavors = Table(
    "catalog_flavors", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("ram", Integer, nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("disk", Integer, nullable=False),
    Column("ephemeral", Integer, nullable=False),
)


class CatalogView:
    name = "catalog-view"
    metadata = metadata
    background = True  # operators change the catalog; no build waits on this view
    # The runner skips every other event unread: instances and quotas are nearly all of the stream.
    handles = frozenset({"DatastoreRegistered", "DatastoreDefaultVersionChanged", "DatastoreVersionRegistered",
                         "DatastoreVersionActivated", "DatastoreVersionDeactivated", "FlavorRegistered"})

    def __init__(self) -> None:
        self.catalog: EventCatalog = domain_catalog()

    def apply(self, event: PublicEvent, session: Session) -> None:
        data, kind = event.data, event.type
        if kind == "DatastoreRegistered":
            session.execute(insert(datastores).values(id=event.aggregate_id, name=data["name"],
                                                      default_version=data["default_version"]))
        elif kind == "DatastoreDefaultVersionChanged":
            session.execute(update(datastores).where(datastores.c.id == event.aggregate_id)
                            .values(default_version=data["default_version"]))
        elif kind == "DatastoreVersionRegistered":
            session.execute(insert(datastore_versions).values(
                id=event.aggregate_id, datastore=data["datastore"], name=data["name"], manager=data["manager"],
                image_id=data["image_id"], packages=data["packages"], active=data["active"]))
        elif kind in ("DatastoreVersionActivated", "DatastoreVersionDeactivated"):
            session.execute(update(datastore_versions).where(datastore_versions.c.id == event.aggregate_id)
                            .values(active=kind == "DatastoreVersionActivated"))
        elif kind == "FlavorRegistered":
            session.execute(insert(flavors).values(
                id=data["flavor_id"], name=data["name"], ram=data["ram"], vcpus=data["vcpus"], disk=data["disk"],
                ephemeral=data["ephemeral"]))


@dataclass(frozen=True)
class FlavorRecord:
    id: str
    name: str
    ram: int
    vcpus: int
    disk: int
    ephemeral: int


@dataclass(frozen=True)
class VersionRecord:
    id: str
    datastore: str
    datastore_id: str
    name: str
    manager: str
    image_id: str
    packages: list[str]
    active: bool


@dataclass(frozen=True)
class DatastoreRecord:
    id: str
    name: str
    default_version: str | None
    default_version_id: str | None
    versions: list[VersionRecord]


class CatalogQueries:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def flavors(self) -> list[FlavorRecord]:
        with self._engine.connect() as connection:
            rows = connection.execute(select(flavors).order_by(flavors.c.ram, flavors.c.id)).all()
        return [FlavorRecord(**row._mapping) for row in rows]

    def flavor(self, flavor_id: str) -> FlavorRecord | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(flavors).where(flavors.c.id == flavor_id)).first()
        return FlavorRecord(**row._mapping) if row else None

    def datastores(self) -> list[DatastoreRecord]:
        with self._engine.connect() as connection:
            stores = connection.execute(select(datastores).order_by(datastores.c.name)).all()
            versions = connection.execute(select(datastore_versions).order_by(datastore_versions.c.name)).all()
        return [self._datastore(store, versions) for store in stores]

    def datastore(self, id_or_name: str) -> DatastoreRecord | None:
        """By id or by name, as Trove's API accepts either."""
        return next((d for d in self.datastores() if id_or_name in (d.id, d.name)), None)

    def version(self, datastore: str, id_or_name: str) -> VersionRecord | None:
        store = self.datastore(datastore)
        if store is None:
            return None
        return next((v for v in store.versions if id_or_name in (v.id, v.name)), None)

    def version_by_id(self, version_id: str) -> VersionRecord | None:
        for store in self.datastores():
            for version in store.versions:
                if version.id == version_id:
                    return version
        return None

    @staticmethod
    def _datastore(store, versions) -> DatastoreRecord:  # type: ignore[no-untyped-def]
        own = [VersionRecord(id=v.id, datastore=v.datastore, datastore_id=store.id, name=v.name, manager=v.manager,
                             image_id=v.image_id, packages=list(v.packages), active=v.active)
               for v in versions if v.datastore == store.name]
        default = next((v.id for v in own if v.name == store.default_version), None)
        return DatastoreRecord(id=store.id, name=store.name, default_version=store.default_version,
                               default_version_id=default, versions=own)
