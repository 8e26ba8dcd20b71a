"""The service catalog: seeding datastores, versions and flavors, and resolving what a request names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.datastores import (
    Datastore,
    DatastoreVersion,
    Flavor,
    datastore_id,
    datastore_version_id,
    flavor_aggregate_id,
)
from domain.errors import InvalidRequest, NotFound
from services.application import TroveApplication


class CatalogService(TroveApplication):
    def seed(self, catalog: Mapping[str, Any]) -> int:
        """Register what the catalog file lists and the store does not have yet; returns how many.

        Seeding is idempotent (ids derive from names) and safe to race: a concurrent seeder's
        aggregate wins and ours is skipped.
        """
        added = 0
        for entry in catalog.get("datastores", []):
            name = entry["name"]
            versions = entry.get("versions", [])
            default = entry.get("default_version") or (versions[0]["name"] if versions else None)
            added += self._save_new(datastore_id(name), lambda n=name, d=default: Datastore(name=n, default_version=d))
            for version in versions:
                added += self._save_new(
                    datastore_version_id(name, version["name"]),
                    lambda n=name, v=version: DatastoreVersion(
                        datastore=n, name=v["name"], manager=v.get("manager", n), image_id=v.get("image_id", ""),
                        packages=list(v.get("packages", [])), active=bool(v.get("active", True))))
        for entry in catalog.get("flavors", []):
            added += self._save_new(
                flavor_aggregate_id(str(entry["id"])),
                lambda f=entry: Flavor(flavor_id=str(f["id"]), name=f["name"], ram=int(f["ram"]),
                                       vcpus=int(f["vcpus"]), disk=int(f.get("disk", 0)),
                                       ephemeral=int(f.get("ephemeral", 0))))
        return added

    def _save_new(self, aggregate_id: UUID, build: Any) -> int:
        if self._exists(aggregate_id):
            return 0
        try:
            self.save(build())
        except IntegrityError:  # another process seeded it first
            return 0
        return 1

    def _exists(self, aggregate_id: UUID) -> bool:
        try:
            self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return False
        return True

    def flavor(self, flavor_ref: Any) -> Flavor:
        """Resolve a ``flavorRef`` as Trove accepts it: ``"2"``, ``2``, or a URL ending in the id."""
        if isinstance(flavor_ref, bool) or not isinstance(flavor_ref, (str, int)) or str(flavor_ref).strip() == "":
            raise InvalidRequest("flavorRef must be a flavor id or a flavor URL.")
        flavor_id = str(flavor_ref).rstrip("/").rsplit("/", 1)[-1]
        try:
            return self.repository.get(flavor_aggregate_id(flavor_id))
        except AggregateNotFoundError:
            raise NotFound(f"Flavor {flavor_id} could not be found.") from None

    def datastore_version(self, datastore: str | None, version: str | None) -> DatastoreVersion:
        """The version a create asks for, defaulting as Trove does; inactive versions are refused."""
        if not datastore:
            raise InvalidRequest("Please specify a datastore type.")
        try:
            store: Datastore = self.repository.get(datastore_id(datastore))
        except AggregateNotFoundError:
            raise NotFound(f"Datastore '{datastore}' cannot be found.") from None
        name = version or store.default_version
        if not name:
            raise InvalidRequest(f"Default version for datastore '{datastore}' not found.")
        try:
            found: DatastoreVersion = self.repository.get(datastore_version_id(datastore, name))
        except AggregateNotFoundError:
            raise NotFound(f"Datastore version '{name}' cannot be found.") from None
        if not found.active:
            raise InvalidRequest(f"Datastore version '{name}' is not active.")
        return found
