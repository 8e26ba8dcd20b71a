"""The databases, users, access and root of each instance's datastore, as its operations left them.

A change is recorded when it is requested (``pending_guest_changes``) and applied when its operation
succeeds, so what the lists show is what the guest has done, never what was merely asked; a failed
change leaves no trace here. The initial databases and users of a create count once the build succeeds.
Changes made on the datastore behind the API's back are not seen: this is the API's account of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Engine, MetaData, String, Table, delete, select, update
from sqlalchemy.orm import Session

from domain import datastore_objects as objects
from domain.catalog import domain_catalog
from domain.instance import CREATE, initial_users
from domain.public_events import PublicEvent
from projections.upsert import upsert_statement

metadata = MetaData()

pending_guest_changes = Table(
    "pending_guest_changes", metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("request_id", String(255), primary_key=True),
    Column("operation", String(64), nullable=False),
    Column("change", JSON, nullable=False),
)
instance_databases = Table(
    "instance_databases", metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("character_set", String(64)),
    Column("collate", String(64)),
)
instance_users = Table(
    "instance_users", metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("name", String(80), primary_key=True),
    Column("host", String(255), primary_key=True),
)
instance_user_access = Table(
    "instance_user_access", metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("name", String(80), primary_key=True),
    Column("host", String(255), primary_key=True),
    Column("database", String(64), primary_key=True),
)
instance_root = Table(
    "instance_root", metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("changed_by", String(255)),
)

HANDLED = frozenset({"CreateRequested", "GuestChangeRequested", "OperationSucceeded", "OperationFailed", "Deleted"})


class DatastoreObjectsView:
    name = "datastore-objects"
    metadata = metadata
    handles = HANDLED

    def __init__(self) -> None:
        self.catalog = domain_catalog()

    def apply(self, event: PublicEvent, session: Session) -> None:
        if event.aggregate_type != "Instance" or event.type not in HANDLED:
            return
        key = event.aggregate_id
        if event.type == "CreateRequested":
            change = {"databases": [{"name": name} for name in event.data.get("databases") or []],
                      "users": initial_users(event.data.get("users"))}
            self._pend(session, key, event.request_id, CREATE, change)
        elif event.type == "GuestChangeRequested":
            self._pend(session, key, event.request_id, event.data["operation"], event.data["change"])
        elif event.type == "Deleted":
            for table in (pending_guest_changes, instance_databases, instance_users, instance_user_access,
                          instance_root):
                session.execute(delete(table).where(table.c.instance_id == key))
        else:
            request_id = event.data["request_id"]
            row = session.execute(select(pending_guest_changes).where(
                pending_guest_changes.c.instance_id == key,
                pending_guest_changes.c.request_id == request_id)).mappings().first()
            if row is None:
                return
            session.execute(delete(pending_guest_changes).where(pending_guest_changes.c.instance_id == key,
                                                                pending_guest_changes.c.request_id == request_id))
            if event.type == "OperationSucceeded":
                _APPLY[row["operation"]](session, key, row["change"], event)

    @staticmethod
    def _pend(session: Session, key: str, request_id: str | None, operation: str, change: dict[str, Any]) -> None:
        connection = session.connection()
        connection.execute(upsert_statement(connection, pending_guest_changes, ["instance_id", "request_id"],
                                            ["operation", "change"]),
                           [{"instance_id": key, "request_id": request_id or "", "operation": operation,
                             "change": change}])


def _add_databases(session: Session, key: str, databases: list[dict[str, Any]]) -> None:
    connection = session.connection()
    rows = [{"instance_id": key, "name": d["name"], "character_set": d.get("character_set"),
             "collate": d.get("collate")} for d in databases]
    if rows:
        connection.execute(upsert_statement(connection, instance_databases, ["instance_id", "name"],
                                            ["character_set", "collate"]), rows)


def _add_users(session: Session, key: str, users: list[dict[str, Any]]) -> None:
    connection = session.connection()
    for user in users:
        connection.execute(upsert_statement(connection, instance_users, ["instance_id", "name", "host"], []),
                           [{"instance_id": key, "name": user["name"], "host": user["host"]}])
        _grant(session, key, user, user.get("databases") or [])


def _grant(session: Session, key: str, user: dict[str, Any], databases: list[str]) -> None:
    connection = session.connection()
    rows = [{"instance_id": key, "name": user["name"], "host": user["host"], "database": d} for d in databases]
    if rows:
        connection.execute(upsert_statement(connection, instance_user_access,
                                            ["instance_id", "name", "host", "database"], []), rows)


def _of_user(table: Table, key: str, user: dict[str, Any]) -> Any:
    return (table.c.instance_id == key) & (table.c.name == user["name"]) & (table.c.host == user["host"])


def _delete_database(session: Session, key: str, change: dict[str, Any], _event: PublicEvent) -> None:
    name = change["database"]
    session.execute(delete(instance_databases).where(instance_databases.c.instance_id == key,
                                                     instance_databases.c.name == name))
    # The guest revokes what was granted on it, so a new database of that name starts with no users.
    session.execute(delete(instance_user_access).where(instance_user_access.c.instance_id == key,
                                                       instance_user_access.c.database == name))


def _delete_user(session: Session, key: str, change: dict[str, Any], _event: PublicEvent) -> None:
    for table in (instance_users, instance_user_access):
        session.execute(delete(table).where(_of_user(table, key, change["user"])))


def _update_user(session: Session, key: str, change: dict[str, Any], _event: PublicEvent) -> None:
    user, values = change["user"], {}
    if change.get("new_name"):
        values["name"] = change["new_name"]
    if change.get("new_host"):
        values["host"] = change["new_host"]
    if values:
        for table in (instance_users, instance_user_access):
            session.execute(update(table).where(_of_user(table, key, user)).values(**values))


def _revoke(session: Session, key: str, change: dict[str, Any], _event: PublicEvent) -> None:
    session.execute(delete(instance_user_access).where(_of_user(instance_user_access, key, change["user"]),
                                                       instance_user_access.c.database == change["database"]))


def _root(enabled: bool) -> Any:
    def apply(session: Session, key: str, _change: dict[str, Any], event: PublicEvent) -> None:
        connection = session.connection()
        connection.execute(upsert_statement(connection, instance_root, ["instance_id"], ["enabled", "changed_by"]),
                           [{"instance_id": key, "enabled": enabled, "changed_by": event.user_id}])
    return apply


_APPLY: dict[str, Any] = {
    CREATE: lambda s, k, c, e: (_add_databases(s, k, c["databases"]), _add_users(s, k, c["users"])),
    objects.DATABASE_CREATE: lambda s, k, c, e: _add_databases(s, k, c["databases"]),
    objects.DATABASE_DELETE: _delete_database,
    objects.USER_CREATE: lambda s, k, c, e: _add_users(s, k, c["users"]),
    objects.USER_DELETE: _delete_user,
    objects.USER_UPDATE: _update_user,
    objects.USER_CHANGE_PASSWORD: lambda s, k, c, e: None,
    objects.USER_GRANT: lambda s, k, c, e: _grant(s, k, c["user"], c["databases"]),
    objects.USER_REVOKE: _revoke,
    objects.ROOT_ENABLE: _root(True),
    objects.ROOT_DISABLE: _root(False),
}


@dataclass(frozen=True)
class DatastoreUser:
    name: str
    host: str
    databases: tuple[str, ...]


class DatastoreObjectQueries:
    """What the API lists: one instance's databases, users and root, from the view above."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def databases(self, instance_id: str, *, limit: int, marker: str | None = None) -> list[str]:
        columns = instance_databases.c
        query = select(columns.name).where(columns.instance_id == instance_id)
        if marker is not None:
            query = query.where(columns.name > marker)
        with self._engine.connect() as connection:
            return list(connection.execute(query.order_by(columns.name).limit(limit)).scalars())

    def users(self, instance_id: str, *, limit: int, marker: tuple[str, str] | None = None) -> list[DatastoreUser]:
        columns = instance_users.c
        query = select(columns.name, columns.host).where(columns.instance_id == instance_id)
        if marker is not None:
            query = query.where((columns.name > marker[0]) | ((columns.name == marker[0]) & (columns.host > marker[1])))
        with self._engine.connect() as connection:
            rows = connection.execute(query.order_by(columns.name, columns.host).limit(limit)).all()
            access = self._access(connection, instance_id, [(row.name, row.host) for row in rows])
        return [DatastoreUser(row.name, row.host, access.get((row.name, row.host), ())) for row in rows]

    def user(self, instance_id: str, name: str, host: str) -> DatastoreUser | None:
        columns = instance_users.c
        with self._engine.connect() as connection:
            found = connection.execute(select(columns.name).where(
                columns.instance_id == instance_id, columns.name == name, columns.host == host)).first()
            if found is None:
                return None
            access = self._access(connection, instance_id, [(name, host)])
        return DatastoreUser(name, host, access.get((name, host), ()))

    def root_enabled(self, instance_id: str) -> bool:
        with self._engine.connect() as connection:
            enabled = connection.execute(select(instance_root.c.enabled).where(
                instance_root.c.instance_id == instance_id)).scalar()
        return bool(enabled)

    @staticmethod
    def _access(connection: Any, instance_id: str, users: list[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
        if not users:
            return {}
        columns = instance_user_access.c
        rows = connection.execute(select(columns.name, columns.host, columns.database).where(
            columns.instance_id == instance_id, columns.name.in_({name for name, _ in users}))
            .order_by(columns.database)).all()
        access: dict[tuple[str, str], list[str]] = {}
        for row in rows:
            access.setdefault((row.name, row.host), []).append(row.database)
        return {user: tuple(databases) for user, databases in access.items()}



