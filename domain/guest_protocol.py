"""The guest protocol: commands to one guest, and what guests report to the conductor.

Shared by the real guest agent and the simulated guests, so both speak exactly this. Every message
is a JSON object with a ``version``; a receiver refuses what it cannot read with a
``GuestProtocolError`` saying why, so a bad message is dead-lettered with a reason, never guessed at.

Commands travel on ``<guest_prefix><instance_id>``; each carries the ``request_id`` of the operation
it serves, so the guest's ``result`` can be matched to that operation and to nothing else.
Guest messages travel on the conductor topic keyed by instance id, so one guest's messages stay in
order. ``sent_at`` (epoch seconds, the guest's clock) lets the conductor drop messages older than
the last one it saw for the same (instance, method).

No secret travels in the clear: ``prepare`` names the initial users (name, host, databases) and carries
their passwords only sealed for the guest (``passwords``: ``name@host`` → a secret sealed under the
instance's key, ``adapters.sealed``), which only that guest can open.

Every message is signed with its instance's own key (``instance_key``: derived from a deployment
secret, so the task manager and the conductor need no key store, and a guest knows only its own):
an HMAC-SHA256 of the message's canonical JSON in its ``signature`` field. A receiver given a key
refuses a message whose signature is missing or does not match (``Unauthenticated``), saying which.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domain.statuses import ServiceStatus

PROTOCOL_VERSION = 1

PREPARE, RESTART, RESIZE_VOLUME, RESIZE_FLAVOR, STOP = "prepare", "restart", "resize_volume", "resize_flavor", "stop"
BACKUP = "backup"
HEARTBEAT, RESULT, FAULT, PROGRESS = "heartbeat", "result", "fault", "progress"
VOLUME_FULL = "volume_full"  # a guest fault: the datastore refuses writes until the volume is resized

# Arguments each command must carry, with their JSON types.
_COMMAND_ARGS: dict[str, dict[str, type | tuple[type, ...]]] = {
    PREPARE: {"datastore": str, "datastore_version": str, "databases": list, "users": list,
              "volume_size": (int, type(None))},
    RESTART: {},
    RESIZE_VOLUME: {"new_size": int},
    RESIZE_FLAVOR: {"flavor": dict},
    STOP: {},
    # The datastore's databases, users and root (``domain.datastore_objects``); users are {"name", "host"},
    # and any passwords travel sealed in ``passwords``, by ``name@host``.
    "database_create": {"databases": list},
    "database_delete": {"database": str},
    "user_create": {"users": list, "passwords": dict},
    "user_delete": {"user": dict},
    "user_update_attributes": {"user": dict, "new_name": (str, type(None)), "new_host": (str, type(None)),
                               "passwords": dict},
    "user_change_password": {"users": list, "passwords": dict},
    "user_grant": {"user": dict, "databases": list},
    "user_revoke": {"user": dict, "database": str},
    "root_enable": {"passwords": dict},
    "root_disable": {},
    # Stream a full backup of the datastore to ``target`` (``BACKUP_TARGET_FIELDS``); the result's
    # ``details`` say what arrived: ``size`` (bytes) and ``checksum`` (``sha256:<hex>`` of those bytes).
    BACKUP: {"backup_id": str, "target": dict},
}
# Where a guest streams a backup to or reads one from (``services.ports.BackupTarget``): ``kind`` is
# ``file`` (``location`` is a path the guest can write) or ``url`` (a signed URL it PUTs or GETs). The URL
# is a bearer credential for the object and guest topics keep what they carry, so it travels only sealed
# for the instance's guest (``sealed_url``, as passwords do); a ``file`` target's is null.
BACKUP_TARGET_FIELDS = {"kind", "location", "sealed_url"}
BACKUP_TARGET_KINDS = ("file", "url")
# A prepare that restores a backup carries ``restore``: the backup's id, where to read it, and the size
# and checksum it was stored with, which the guest verifies before it loads a byte.
RESTORE_FIELDS = {"backup_id", "source", "size", "checksum"}
COMMANDS = frozenset(_COMMAND_ARGS)


SIGNATURE = "signature"


class GuestProtocolError(ValueError):
    """A message that is not a valid guest protocol message; the text says what is wrong."""


class Unauthenticated(GuestProtocolError):
    """A message not signed with its instance's key: unsigned, or signed with another key, or changed."""


def instance_key(deployment_secret: bytes, instance_id: str) -> bytes:
    """The key of one instance's guest, derived from the deployment's secret."""
    return hmac.new(deployment_secret, f"trove-es guest key/{instance_id}".encode(), hashlib.sha256).digest()


def signed(message: bytes, key: bytes) -> bytes:
    """``message`` (one of this protocol's ``to_json``) with its signature."""
    body = json.loads(message)
    body.pop(SIGNATURE, None)
    body[SIGNATURE] = _signature(body, key)
    return _dump(body)


def _signature(body: dict[str, Any], key: bytes) -> str:
    unsigned = {name: value for name, value in body.items() if name != SIGNATURE}
    return hmac.new(key, _dump(unsigned), hashlib.sha256).hexdigest()


def _authenticate(body: dict[str, Any], key: bytes | None) -> None:
    if key is None:
        raise Unauthenticated(f"no key is known for instance {body.get('instance_id')!r}")
    given = body.get(SIGNATURE)
    if not isinstance(given, str) or not given:
        raise Unauthenticated("the message is not signed")
    if not hmac.compare_digest(given, _signature(body, key)):
        raise Unauthenticated("the signature does not match the instance's key (forged, changed, or another "
                              "instance's)")


@dataclass(frozen=True)
class GuestCommand:
    method: str
    instance_id: str
    request_id: str
    sent_at: float
    args: dict[str, Any] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION

    def to_json(self) -> bytes:
        return _dump({"version": self.version, "kind": "command", "method": self.method,
                      "instance_id": self.instance_id, "request_id": self.request_id,
                      "sent_at": self.sent_at, "args": self.args})


@dataclass(frozen=True)
class Heartbeat:
    instance_id: str
    service_status: str  # a ServiceStatus description, as Trove's guests report it
    sent_at: float
    version: int = PROTOCOL_VERSION
    method: str = HEARTBEAT
    volume_used_bytes: int | None = None  # the datastore's files on the volume, measured; None when unknown

    @property
    def status(self) -> ServiceStatus:
        return ServiceStatus.from_description(self.service_status)

    def to_json(self) -> bytes:
        body = {"version": self.version, "kind": HEARTBEAT, "instance_id": self.instance_id,
                "service_status": self.service_status, "sent_at": self.sent_at}
        if self.volume_used_bytes is not None:
            body["volume_used_bytes"] = self.volume_used_bytes
        return _dump(body)


@dataclass(frozen=True)
class Result:
    """The outcome of one command; ``method`` is the command's, ``request_id`` its operation's."""

    instance_id: str
    method: str
    request_id: str
    ok: bool
    sent_at: float
    message: str = ""
    traceback: tuple[str, ...] = ()
    version: int = PROTOCOL_VERSION
    details: dict[str, Any] = field(default_factory=dict)  # what the method produced (a backup's size, checksum)

    def to_json(self) -> bytes:
        body = {"version": self.version, "kind": RESULT, "instance_id": self.instance_id,
                "method": self.method, "request_id": self.request_id, "ok": self.ok,
                "message": self.message, "traceback": list(self.traceback), "sent_at": self.sent_at}
        if self.details:
            body["details"] = self.details
        return _dump(body)


@dataclass(frozen=True)
class GuestFault:
    """A condition of the guest that is nobody's operation (its volume is full), raised or cleared."""

    instance_id: str
    condition: str
    active: bool
    message: str
    sent_at: float
    version: int = PROTOCOL_VERSION

    @property
    def method(self) -> str:
        return f"{FAULT}/{self.condition}"  # each condition's messages are ordered on their own

    def to_json(self) -> bytes:
        return _dump({"version": self.version, "kind": FAULT, "instance_id": self.instance_id,
                      "condition": self.condition, "active": self.active, "message": self.message,
                      "sent_at": self.sent_at})


@dataclass(frozen=True)
class Progress:
    """How far a running command has come: ``stored_bytes`` of a backup stored so far. A guest sends it
    beside its heartbeats while the command runs; the command's result, not this, says how it ended."""

    instance_id: str
    command: str  # the running command's method (only ``PROGRESSING`` commands report progress)
    request_id: str
    stored_bytes: int
    sent_at: float
    version: int = PROTOCOL_VERSION

    @property
    def method(self) -> str:
        return f"{PROGRESS}/{self.command}"  # ordered apart from the command's result

    def to_json(self) -> bytes:
        return _dump({"version": self.version, "kind": PROGRESS, "instance_id": self.instance_id,
                      "command": self.command, "request_id": self.request_id, "stored_bytes": self.stored_bytes,
                      "sent_at": self.sent_at})


PROGRESSING = frozenset({BACKUP})

GuestMessage = Heartbeat | Result | GuestFault | Progress


# Builders: what the task manager sends -------------------------------------------------------------

def prepare(instance_id: str, request_id: str, sent_at: float, *, datastore: str, datastore_version: str,
            databases: list[str], users: list[Any], volume_size: int | None,
            passwords: dict[str, str] | None = None, manager: str | None = None,
            restore: dict[str, Any] | None = None) -> GuestCommand:
    """``users``: names or ``{"name", "host", "databases"}``; ``passwords``: each user's, sealed for the guest;
    ``manager``: the datastore version's manager (Trove's: mysql, mariadb, postgresql), the datastore's by default;
    ``restore``: the backup to build from (``RESTORE_FIELDS``)."""
    args: dict[str, Any] = {
        "datastore": datastore, "datastore_version": datastore_version, "databases": list(databases),
        "users": [_user(u) for u in users], "volume_size": volume_size, "passwords": dict(passwords or {}),
        "manager": manager or datastore}
    if restore is not None:
        args["restore"] = restore
    built = GuestCommand(PREPARE, instance_id, request_id, sent_at, args)
    return _command(_load(built.to_json()))


def command(method: str, instance_id: str, request_id: str, sent_at: float, **args: Any) -> GuestCommand:
    """Any command other than ``prepare``, validated as a receiver would."""
    built = GuestCommand(method, instance_id, request_id, sent_at, dict(args))
    return _command(_load(built.to_json()))


def _user(user: Any) -> dict[str, Any]:
    # Only what names the user and its access: a password a caller left in never gets through.
    if isinstance(user, str):
        user = {"name": user}
    if not isinstance(user, dict):
        raise GuestProtocolError("prepare: every user must be a name or an object with one")
    return {"name": user.get("name"), "host": user.get("host") or "%", "databases": list(user.get("databases") or [])}


# Parsers: what receivers call --------------------------------------------------------------------

KeyFor = Callable[[str], bytes | None]


def parse_command(raw: bytes | str, key: bytes | None) -> GuestCommand:
    """A command signed with ``key``, the guest's own."""
    body = _load(raw)
    _authenticate(body, key)
    return _command(body)


def _command(body: dict[str, Any]) -> GuestCommand:
    if body.get("kind") != "command":
        raise GuestProtocolError(f"not a command (kind {body.get('kind')!r})")
    method = _string(body, "method")
    if method not in _COMMAND_ARGS:
        raise GuestProtocolError(f"unknown command {method!r}; expected one of {', '.join(sorted(COMMANDS))}")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise GuestProtocolError("args must be a JSON object")
    for name, kind in _COMMAND_ARGS[method].items():
        if name not in args:
            raise GuestProtocolError(f"{method}: missing argument {name!r}")
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise GuestProtocolError(f"{method}: argument {name!r} has the wrong type")
    if method == PREPARE:
        _check_prepare(args)
    if method == BACKUP:
        _check_target(args["target"], "backup: target")
    if method == RESIZE_VOLUME and args["new_size"] < 1:
        raise GuestProtocolError("resize_volume: new_size must be a positive integer")
    return GuestCommand(method, _string(body, "instance_id"), _string(body, "request_id"), _sent_at(body), args,
                        body["version"])


_USER_FIELDS = {"name", "host", "databases"}


def _check_prepare(args: dict[str, Any]) -> None:
    if not all(isinstance(d, str) and d for d in args["databases"]):
        raise GuestProtocolError("prepare: databases must be a list of names")
    for user in args["users"]:
        if not isinstance(user, dict) or set(user) != _USER_FIELDS:
            raise GuestProtocolError("prepare: each user must be an object of exactly name, host and databases "
                                     "(a password travels only sealed, in passwords)")
        if not all(isinstance(user[name], str) and user[name] for name in ("name", "host")) or not all(
                isinstance(d, str) and d for d in user["databases"]):
            raise GuestProtocolError("prepare: a user's name and host must be non-empty strings and its "
                                     "databases a list of names")
    passwords = args.get("passwords", {})  # optional: a prepare without users' passwords has none
    if not isinstance(passwords, dict) or not all(isinstance(name, str) and isinstance(value, str) and value
                                                  for name, value in passwords.items()):
        raise GuestProtocolError("prepare: passwords must map user names to sealed secrets")
    unknown = set(passwords) - {f"{user['name']}@{user['host']}" for user in args["users"]}
    if unknown:
        raise GuestProtocolError(f"prepare: passwords for users it does not create: {', '.join(sorted(unknown))}")
    if not isinstance(args.get("manager", ""), str):
        raise GuestProtocolError("prepare: manager must be a string")
    restore = args.get("restore")
    if restore is not None:
        if not isinstance(restore, dict) or set(restore) != RESTORE_FIELDS:
            raise GuestProtocolError("prepare: restore must be an object of exactly "
                                     f"{', '.join(sorted(RESTORE_FIELDS))}")
        if not isinstance(restore["backup_id"], str) or not restore["backup_id"]:
            raise GuestProtocolError("prepare: restore.backup_id must be a non-empty string")
        _check_target(restore["source"], "prepare: restore.source")
        _check_backup_details(restore, "prepare: restore")


def _check_target(target: Any, where: str) -> None:
    if not isinstance(target, dict) or set(target) != BACKUP_TARGET_FIELDS:
        raise GuestProtocolError(f"{where} must be an object of exactly {', '.join(sorted(BACKUP_TARGET_FIELDS))}")
    if target["kind"] not in BACKUP_TARGET_KINDS:
        raise GuestProtocolError(f"{where}.kind must be one of {', '.join(BACKUP_TARGET_KINDS)}")
    if not isinstance(target["location"], str) or not target["location"]:
        raise GuestProtocolError(f"{where}.location must be a non-empty string")
    if target["kind"] == "url" and (not isinstance(target["sealed_url"], str) or not target["sealed_url"]):
        raise GuestProtocolError(f"{where}.sealed_url must be the signed URL a url target needs, sealed for the "
                                 "guest")


def _check_backup_details(details: dict[str, Any], where: str = "result: backup") -> None:
    size, checksum = details.get("size"), details.get("checksum")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise GuestProtocolError(f"{where}: size must be a non-negative number of bytes")
    if not isinstance(checksum, str) or not checksum.startswith("sha256:") or len(checksum) != 71:
        raise GuestProtocolError(f"{where}: checksum must be sha256:<64 hex digits>")


def parse_guest_message(raw: bytes | str, key_for: KeyFor) -> GuestMessage:
    """A heartbeat, a result or a fault from a guest, signed with its instance's key (``key_for``: instance id →
    key); raises ``GuestProtocolError`` for anything else."""
    body = _load(raw)
    kind = body.get("kind")
    instance_id = _string(body, "instance_id")
    _authenticate(body, key_for(instance_id))
    if kind == HEARTBEAT:
        description = _string(body, "service_status")
        try:
            ServiceStatus.from_description(description)
        except ValueError as exc:
            raise GuestProtocolError(f"heartbeat: {exc}") from None
        used = body.get("volume_used_bytes")
        if used is not None and (isinstance(used, bool) or not isinstance(used, int) or used < 0):
            raise GuestProtocolError("heartbeat: volume_used_bytes must be a non-negative integer")
        return Heartbeat(instance_id, description, _sent_at(body), body["version"], volume_used_bytes=used)
    if kind == RESULT:
        method = _string(body, "method")
        if method not in _COMMAND_ARGS:
            raise GuestProtocolError(f"result: unknown method {method!r}")
        ok = body.get("ok")
        if not isinstance(ok, bool):
            raise GuestProtocolError("result: ok must be true or false")
        message = body.get("message", "")
        traceback = body.get("traceback", [])
        if not isinstance(message, str):
            raise GuestProtocolError("result: message must be a string")
        if not isinstance(traceback, list) or not all(isinstance(line, str) for line in traceback):
            raise GuestProtocolError("result: traceback must be a list of strings")
        details = body.get("details", {})
        if not isinstance(details, dict):
            raise GuestProtocolError("result: details must be a JSON object")
        if method == BACKUP and ok:
            _check_backup_details(details)
        return Result(instance_id, method, _string(body, "request_id"), ok, _sent_at(body), message,
                      tuple(traceback), body["version"], details)
    if kind == FAULT:
        condition, active, message = body.get("condition"), body.get("active"), body.get("message")
        if condition != VOLUME_FULL:
            raise GuestProtocolError(f"fault: unknown condition {condition!r}; expected {VOLUME_FULL}")
        if not isinstance(active, bool):
            raise GuestProtocolError("fault: active must be true or false")
        if not isinstance(message, str) or len(message) > 2000:
            raise GuestProtocolError("fault: message must be a string of at most 2000 characters")
        return GuestFault(instance_id, condition, active, message, _sent_at(body), body["version"])
    if kind == PROGRESS:
        command, stored = body.get("command"), body.get("stored_bytes")
        if command not in PROGRESSING:
            raise GuestProtocolError(f"progress: command must be one of {', '.join(sorted(PROGRESSING))}")
        if isinstance(stored, bool) or not isinstance(stored, int) or stored < 0:
            raise GuestProtocolError("progress: stored_bytes must be a non-negative integer")
        return Progress(instance_id, command, _string(body, "request_id"), stored, _sent_at(body), body["version"])
    raise GuestProtocolError(f"unknown message kind {kind!r}; expected heartbeat, result, fault or progress")


def _load(raw: bytes | str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise GuestProtocolError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise GuestProtocolError("message is not a JSON object")
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise GuestProtocolError("version must be an integer")
    if version > PROTOCOL_VERSION or version < 1:
        raise GuestProtocolError(f"protocol version {version} is not supported (this side speaks "
                                 f"{PROTOCOL_VERSION}); upgrade it")
    return body


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise GuestProtocolError(f"{name} must be a non-empty string")
    return value


def _sent_at(body: dict[str, Any]) -> float:
    value = body.get("sent_at")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise GuestProtocolError("sent_at must be a non-negative number of epoch seconds")
    return float(value)


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
