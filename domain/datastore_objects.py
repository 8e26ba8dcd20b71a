"""Databases, users and root on an instance's datastore: what names each datastore takes, and the changes.

A change to them is an operation of the instance (``Instance.request_guest_change``) carried out by its
guest; these rules refuse, before anything is recorded, what the guest would refuse anyway, with Trove's
kind of message, so a user's typo is a 400 and never a fault. Reserved names are Trove's ``ignore_dbs``
and ``ignore_users`` plus the accounts this product's guest itself runs on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from domain.errors import InvalidRequest

# The operations, by Trove's notification names; each is also the guest command that carries it out.
DATABASE_CREATE, DATABASE_DELETE = "database_create", "database_delete"
USER_CREATE, USER_DELETE = "user_create", "user_delete"
USER_UPDATE, USER_CHANGE_PASSWORD = "user_update_attributes", "user_change_password"
USER_GRANT, USER_REVOKE = "user_grant", "user_revoke"
ROOT_ENABLE, ROOT_DISABLE = "root_enable", "root_disable"
GUEST_OPERATIONS = frozenset({DATABASE_CREATE, DATABASE_DELETE, USER_CREATE, USER_DELETE, USER_UPDATE,
                              USER_CHANGE_PASSWORD, USER_GRANT, USER_REVOKE, ROOT_ENABLE, ROOT_DISABLE})
# Those whose guest command needs passwords (sealed, from the secret drop).
WITH_PASSWORDS = frozenset({USER_CREATE, USER_UPDATE, USER_CHANGE_PASSWORD, ROOT_ENABLE})

ANY_HOST = "%"
ROOT_USER = "root"


@dataclass(frozen=True)
class NameRules:
    database_max: int
    user_max: int
    reserved_databases: frozenset[str]
    reserved_users: frozenset[str]
    hosts: bool  # whether users have a host part (MySQL) or are one per name (PostgreSQL)
    root_name: str  # the superuser enabling root lets in: Trove's "root" (MySQL), "postgres" (PostgreSQL)


_MYSQL = NameRules(64, 32, frozenset({"mysql", "information_schema", "performance_schema", "sys", "lost+found",
                                      "#mysql50#lost+found"}),
                   frozenset({"os_admin", "root", "mariadb.sys", "mysql", "public"}), hosts=True, root_name="root")
_POSTGRESQL = NameRules(63, 63, frozenset({"postgres", "template0", "template1", "os_admin"}),
                        frozenset({"os_admin", "postgres", "root"}), hosts=False, root_name="postgres")
_RULES = {"mysql": _MYSQL, "mariadb": _MYSQL, "postgresql": _POSTGRESQL}
_HOST = re.compile(r"^[A-Za-z0-9%_.:\-]{1,255}$")
_CHARSET = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def rules_for(manager: str | None, datastore: str) -> NameRules:
    """The name rules of the instance's datastore (by its version's manager when known)."""
    rules = _RULES.get(manager or datastore) or _RULES.get(datastore)
    if rules is None:
        raise InvalidRequest(f"Datastore {datastore} does not support databases and users.")
    return rules


def database_name(rules: NameRules, name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("A database name must be a non-empty string.")
    if len(name) > rules.database_max:
        raise InvalidRequest(f"Database name '{name[:80]}' is too long. Max length = {rules.database_max}.")
    if name != name.strip() or any(c in name for c in "\\/\x00`'\""):
        raise InvalidRequest(f"'{name}' is not a valid database name.")
    if name.lower() in rules.reserved_databases:
        raise InvalidRequest(f"'{name}' is a reserved database name.")
    return name


def user_name(rules: NameRules, name: Any, *, allow_root: bool = False) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("A user name must be a non-empty string.")
    if len(name) > rules.user_max:
        raise InvalidRequest(f"User name '{name[:80]}' is too long. Max length = {rules.user_max}.")
    if name != name.strip() or any(c in name for c in "\\/\x00`'\"@"):
        raise InvalidRequest(f"'{name}' is not a valid user name.")
    if name.lower() in rules.reserved_users and not (allow_root and name == ROOT_USER):
        raise InvalidRequest(f"'{name}' is a reserved user name.")
    return name


def user_host(rules: NameRules, host: Any) -> str:
    if host in (None, ""):
        return ANY_HOST
    if not isinstance(host, str) or not _HOST.match(host):
        raise InvalidRequest(f"'{str(host)[:80]}' is not a valid host.")
    if not rules.hosts and host != ANY_HOST:
        raise InvalidRequest("This datastore's users have no host: leave it out, or give '%'.")
    return host


def charset(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _CHARSET.match(value):
        raise InvalidRequest(f"'{str(value)[:80]}' is not a valid {what}.")
    return value


def user_key(name: str, host: str = ANY_HOST) -> str:
    """How a user is named in passwords and URLs: Trove's ``name@host`` (``@%`` for any host)."""
    return f"{name}@{host}"


def split_user_id(user_id: str) -> tuple[str, str]:
    """A user id from a URL (``name`` or ``name@host``, Trove's form) as (name, host)."""
    name, _, host = user_id.partition("@")
    return name, host or ANY_HOST


def notified_traits(operation: str, change: dict[str, Any]) -> dict[str, Any]:
    """The start traits Trove gives each operation beyond the base ones (``dbname``, ``username``, ``database``)."""
    if operation == DATABASE_CREATE:
        return {"dbname": ".".join(d["name"] for d in change["databases"])}
    if operation == DATABASE_DELETE:
        return {"dbname": change["database"]}
    if operation in (USER_CREATE, USER_CHANGE_PASSWORD):
        return {"username": ",".join(u["name"] for u in change["users"])}
    if operation in (USER_DELETE, USER_UPDATE):
        return {"username": change["user"]["name"]}
    if operation == USER_GRANT:
        return {"username": change["user"]["name"], "database": ",".join(change["databases"])}
    if operation == USER_REVOKE:
        return {"username": change["user"]["name"], "database": change["database"]}
    return {}


def new_objects(databases: list[str] | None = None, users: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the write side knows of a datastore's databases, users (``name@host`` → databases) and root."""
    objects = {"databases": [], "users": {}, "root": False}
    apply_change(objects, USER_CREATE, {"users": users or []})
    apply_change(objects, DATABASE_CREATE, {"databases": [{"name": name} for name in databases or []]})
    return objects


def apply_change(objects: dict[str, Any], operation: str, change: dict[str, Any]) -> None:
    """``objects`` as the guest leaves them once ``operation`` has succeeded (in place)."""
    users: dict[str, list[str]] = objects["users"]
    if operation == DATABASE_CREATE:
        objects["databases"] = sorted({*objects["databases"], *(d["name"] for d in change["databases"])})
    elif operation == DATABASE_DELETE:
        objects["databases"] = [d for d in objects["databases"] if d != change["database"]]
        for key, granted in users.items():
            users[key] = [d for d in granted if d != change["database"]]
    elif operation == USER_CREATE:
        for user in change["users"]:
            key = user_key(user["name"], user.get("host") or ANY_HOST)
            users[key] = sorted({*users.get(key, []), *(user.get("databases") or [])})
    elif operation == USER_DELETE:
        users.pop(user_key(change["user"]["name"], change["user"]["host"]), None)
    elif operation == USER_UPDATE:
        old = change["user"]
        granted = users.pop(user_key(old["name"], old["host"]), [])
        users[user_key(change.get("new_name") or old["name"], change.get("new_host") or old["host"])] = granted
    elif operation == USER_GRANT:
        key = user_key(change["user"]["name"], change["user"]["host"])
        users[key] = sorted({*users.get(key, []), *change["databases"]})
    elif operation == USER_REVOKE:
        key = user_key(change["user"]["name"], change["user"]["host"])
        users[key] = [d for d in users.get(key, []) if d != change["database"]]
    elif operation in (ROOT_ENABLE, ROOT_DISABLE):
        objects["root"] = operation == ROOT_ENABLE
