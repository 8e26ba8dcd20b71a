"""The commands on an instance's databases, users and root: validated, recorded, handed to its guest.

Each is an operation of the instance (``GuestChangeRequested``) that the task manager sends to the guest
and the guest's result closes, so each has its start, end and error notifications and, on failure, its
fault. Passwords never enter the event: they go sealed into the secret drop, keyed by the user's
``name@host``, before the change is saved, as a create's do.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from domain import datastore_objects as objects
from domain.context import OperationContext
from domain.datastore_objects import NameRules, user_key
from domain.errors import InvalidRequest, NotFound
from domain.instance import Instance
from services.instances import InstanceService, retrying

ROOT_PASSWORD_BYTES = 27  # 36 characters of URL-safe base64, as long as Trove's generated root passwords


class DatastoreObjects:
    """Commands on the databases, users and root of the instances of ``instances``."""

    def __init__(self, instances: InstanceService) -> None:
        self._instances = instances

    def create_databases(self, context: OperationContext, instance_id: UUID | str,
                         databases: Sequence[Mapping[str, Any]], *, admin: bool = False) -> int:
        def change(rules: NameRules, _known: dict[str, Any]) -> dict[str, Any]:
            if not databases:
                raise InvalidRequest("No databases were given to create.")
            created = [{"name": objects.database_name(rules, d.get("name")),
                        "character_set": objects.charset(d.get("character_set"), "character set"),
                        "collate": objects.charset(d.get("collate"), "collation")} for d in databases]
            _no_repeats([d["name"] for d in created], "database")
            return {"databases": created}

        return self._request(context, instance_id, objects.DATABASE_CREATE, change, admin=admin)

    def delete_database(self, context: OperationContext, instance_id: UUID | str, name: str, *,
                        admin: bool = False) -> int:
        def change(rules: NameRules, known: dict[str, Any]) -> dict[str, Any]:
            if name not in known["databases"]:
                raise NotFound(f"Database {name[:80]} cannot be found on the instance.")
            return {"database": objects.database_name(rules, name)}

        return self._request(context, instance_id, objects.DATABASE_DELETE, change, admin=admin)

    def create_users(self, context: OperationContext, instance_id: UUID | str, users: Sequence[Mapping[str, Any]],
                     *, admin: bool = False) -> int:
        """``users``: ``{"name", "password", "host"?, "databases"?: [names]}`` each."""
        passwords: dict[str, str] = {}

        def change(rules: NameRules, known: dict[str, Any]) -> dict[str, Any]:
            if not users:
                raise InvalidRequest("No users were given to create.")
            created = []
            for user in users:
                name, host = objects.user_name(rules, user.get("name")), objects.user_host(rules, user.get("host"))
                if user_key(name, host) in known["users"]:
                    raise InvalidRequest(f"User {user_key(name, host)} already exists.")
                passwords[user_key(name, host)] = _password(user.get("password"))
                created.append({"name": name, "host": host,
                                "databases": [objects.database_name(rules, d) for d in user.get("databases") or []]})
            _no_repeats([user_key(u["name"], u["host"]) for u in created], "user")
            return {"users": created}

        return self._request(context, instance_id, objects.USER_CREATE, change, passwords, admin=admin)

    def delete_user(self, context: OperationContext, instance_id: UUID | str, name: str, host: str, *,
                    admin: bool = False) -> int:
        return self._request(context, instance_id, objects.USER_DELETE,
                             lambda rules, known: {"user": _known_user(rules, known, name, host)}, admin=admin)

    def update_user(self, context: OperationContext, instance_id: UUID | str, name: str, host: str,
                    attributes: Mapping[str, Any], *, admin: bool = False) -> int:
        """Trove's ``update_attributes``: a new ``name``, ``host`` or ``password``, any of them."""
        passwords: dict[str, str] = {}

        def change(rules: NameRules, known: dict[str, Any]) -> dict[str, Any]:
            if not any(attributes.get(k) for k in ("name", "host", "password")):
                raise InvalidRequest("Give the user a new name, host or password to update.")
            user = _known_user(rules, known, name, host)
            new = {"name": objects.user_name(rules, attributes["name"]) if attributes.get("name") else None,
                   "host": objects.user_host(rules, attributes["host"]) if attributes.get("host") else None}
            if attributes.get("password"):
                passwords[user_key(user["name"], user["host"])] = _password(attributes["password"])
            return {"user": user, "new_name": new["name"], "new_host": new["host"],
                    "password": bool(attributes.get("password"))}

        return self._request(context, instance_id, objects.USER_UPDATE, change, passwords, admin=admin)

    def change_passwords(self, context: OperationContext, instance_id: UUID | str,
                         users: Sequence[Mapping[str, Any]], *, admin: bool = False) -> int:
        passwords: dict[str, str] = {}

        def change(rules: NameRules, known: dict[str, Any]) -> dict[str, Any]:
            if not users:
                raise InvalidRequest("No users were given to change passwords of.")
            changed = []
            for user in users:
                named = _known_user(rules, known, user.get("name"), user.get("host"))
                passwords[user_key(named["name"], named["host"])] = _password(user.get("password"))
                changed.append(named)
            return {"users": changed}

        return self._request(context, instance_id, objects.USER_CHANGE_PASSWORD, change, passwords, admin=admin)

    def grant_access(self, context: OperationContext, instance_id: UUID | str, name: str, host: str,
                     databases: Sequence[str], *, admin: bool = False) -> int:
        def change(rules: NameRules, known: dict[str, Any]) -> dict[str, Any]:
            if not databases:
                raise InvalidRequest("No databases were given to grant access to.")
            return {"user": _known_user(rules, known, name, host),
                    "databases": sorted({objects.database_name(rules, d) for d in databases})}

        return self._request(context, instance_id, objects.USER_GRANT, change, admin=admin)

    def revoke_access(self, context: OperationContext, instance_id: UUID | str, name: str, host: str,
                      database: str, *, admin: bool = False) -> int:
        def change(rules: NameRules, known: dict[str, Any]) -> dict[str, Any]:
            user = _known_user(rules, known, name, host)
            if database not in known["users"][user_key(user["name"], user["host"])]:
                raise NotFound(f"User {user_key(name, host)} has no access to database {database[:80]}.")
            return {"user": user, "database": objects.database_name(rules, database)}

        return self._request(context, instance_id, objects.USER_REVOKE, change, admin=admin)

    def enable_root(self, context: OperationContext, instance_id: UUID | str, password: str | None = None, *,
                    admin: bool = False) -> tuple[int, str, str]:
        """Enable root with ``password``, or one generated here: returned once, to the caller, and kept nowhere.

        Returns the version written, the superuser's name on this datastore, and its password."""
        chosen = _password(password) if password is not None else secrets.token_urlsafe(ROOT_PASSWORD_BYTES)
        names: list[str] = []

        def change(rules: NameRules, _known: dict[str, Any]) -> dict[str, Any]:
            names.append(rules.root_name)
            return {}

        # The drop's key is the guest's name for "the superuser", whatever the datastore calls it.
        version = self._request(context, instance_id, objects.ROOT_ENABLE, change,
                                {user_key(objects.ROOT_USER): chosen}, admin=admin)
        return version, names[-1], chosen

    def disable_root(self, context: OperationContext, instance_id: UUID | str, *, admin: bool = False) -> int:
        def change(_rules: NameRules, known: dict[str, Any]) -> dict[str, Any]:
            if not known["root"]:
                raise NotFound("Root has not been enabled on this instance.")
            return {}

        return self._request(context, instance_id, objects.ROOT_DISABLE, change, admin=admin)

    # -------------------------------------------------------------------------------------------------

    def _request(self, context: OperationContext, instance_id: UUID | str, operation: str, build: Any,
                 passwords: dict[str, str] | None = None, *, admin: bool) -> int:
        instances = self._instances

        def attempt() -> int:
            instance: Instance = instances.get(instance_id, context, admin=admin)
            # Checked against what the write side knows (the aggregate), not a read model that may lag.
            change = build(objects.rules_for(instance.datastore_manager, instance.datastore),
                           instance.datastore_objects)
            instance.request_guest_change(context.recorded(), operation, change)
            if passwords and instances.secret_drop is not None:
                # Before the change is saved, so the task manager always finds them (see ``InstanceService.create``).
                instances.secret_drop.put(str(instance.id), context.request_id, passwords)
            instances.save(instance)
            return instance.version

        return retrying(attempt)


def _known_user(rules: NameRules, known: dict[str, Any], name: Any, host: Any) -> dict[str, str]:
    user = {"name": objects.user_name(rules, name), "host": objects.user_host(rules, host)}
    if user_key(user["name"], user["host"]) not in known["users"]:
        raise NotFound(f"User {user_key(user['name'], user['host'])} cannot be found on the instance.")
    return user


def _password(password: Any) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidRequest("A user's password must be a non-empty string.")
    if len(password) > 255:
        raise InvalidRequest("A password must be at most 255 characters.")
    return password


def _no_repeats(names: list[str], what: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidRequest(f"The same {what} is given more than once: {', '.join(repeated)}.")
