"""Datastore managers: what drives each kind of real database server on a guest."""

from __future__ import annotations

from guest.datastore.base import DatastoreError, DatastoreManager, InstanceLayout, NewUser

__all__ = ["DatastoreError", "DatastoreManager", "InstanceLayout", "NewUser", "manager_for"]


def manager_for(manager: str, layout: InstanceLayout, version: str) -> DatastoreManager:
    """The manager named by a datastore version's ``manager`` (Trove's manager names: mariadb runs the mysql one)."""
    if manager == "postgresql":
        from guest.datastore.postgresql import PostgreSQLManager
        return PostgreSQLManager(layout, version)
    if manager in ("mysql", "mariadb"):
        from guest.datastore.mysql import MySQLManager
        return MySQLManager(layout, version)
    raise DatastoreError(f"no datastore manager {manager!r} in this guest agent; it runs postgresql, mysql and "
                         f"mariadb")
