"""Ceilometer's view of a notification: its trove event definitions and its ``trove.instance.exists``
meter (``ceilometer/data/event_definitions.yaml``, ``ceilometer/data/meters.d/meters.yaml``; facts from
../shared/reference/trove-source-behaviour.md §5), and the conversion rules its event converter applies.

A test double of Ceilometer, not Ceilometer: it resolves trait field paths and converts types the way
``ceilometer/event/converter.py`` does, so a notification whose trait does not resolve here would give
Ceilometer a missing or mistyped trait.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

BASE_TRAITS: dict[str, tuple[str, str]] = {  # trait → (payload field, type)
    "instance_type": ("instance_type", "text"), "user_id": ("user_id", "text"),
    "resource_id": ("instance_id", "text"), "instance_type_id": ("instance_type_id", "text"),
    "launched_at": ("launched_at", "datetime"), "instance_name": ("instance_name", "text"),
    "state": ("state", "text"), "nova_instance_id": ("nova_instance_id", "text"),
    "service_id": ("service_id", "text"), "created_at": ("created_at", "datetime"), "region": ("region", "text"),
}
COMMON_TRAITS: dict[str, tuple[str, str]] = {
    "name": ("name", "text"), "availability_zone": ("availability_zone", "text"),
    "instance_size": ("instance_size", "int"), "volume_size": ("volume_size", "int"),
    "nova_volume_id": ("nova_volume_id", "text"),
}
# In file order; the last definition that matches wins (the converter reverses the list).
EVENT_DEFINITIONS: list[tuple[tuple[str, ...], dict[str, tuple[str, str]]]] = [
    (("trove.*",), BASE_TRAITS),
    (("trove.instance.create", "trove.instance.modify_volume", "trove.instance.modify_flavor",
      "trove.instance.delete"), {**BASE_TRAITS, **COMMON_TRAITS}),
    (("trove.instance.create",), {**BASE_TRAITS, **COMMON_TRAITS}),
    (("trove.instance.modify_volume",), {**BASE_TRAITS, **COMMON_TRAITS, "old_volume_size": ("old_volume_size", "int"),
                                         "modify_at": ("modify_at", "datetime")}),
    (("trove.instance.modify_flavor",), {**BASE_TRAITS, **COMMON_TRAITS,
                                         "old_instance_size": ("old_instance_size", "int"),
                                         "modify_at": ("modify_at", "datetime")}),
    (("trove.instance.delete",), {**BASE_TRAITS, **COMMON_TRAITS, "deleted_at": ("deleted_at", "datetime")}),
    (("trove.instance.exists",), {**BASE_TRAITS, "display_name": ("display_name", "text"),
                                  "audit_period_beginning": ("audit_period_beginning", "datetime"),
                                  "audit_period_ending": ("audit_period_ending", "datetime")}),
]


class TraitError(AssertionError):
    pass


def _convert(value: Any, kind: str) -> Any:
    if kind == "text":
        return str(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TraitError(f"{value!r} is not an int")
        return int(value)
    if kind == "datetime":
        # oslo's parse_isotime (iso8601) then normalize_time: naive UTC.
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    raise ValueError(kind)


def event_traits(message: Mapping[str, Any]) -> dict[str, Any]:
    """The traits Ceilometer would store for ``message`` (an oslo message: event_type, payload, _context,
    publisher_id); raises ``TraitError`` for a defined trait that does not resolve or convert."""
    event_type, payload, context = message["event_type"], message["payload"], message.get("_context", {})
    traits: dict[str, Any] = {
        # EventDefinition.DEFAULT_TRAITS
        "service": message["publisher_id"], "request_id": context.get("request_id"),
        "project_id": payload.get("tenant_id") or context.get("project_id"),
        "tenant_id": payload.get("tenant_id") or context.get("project_id"),
        "user_id": payload.get("user_id") or context.get("user_id"),
    }
    matching = [definition for patterns, definition in EVENT_DEFINITIONS
                if any(fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)]
    if not matching:
        return traits  # the catch-all: default traits only (every dbaas.* event)
    for trait, (field, kind) in matching[-1].items():
        if payload.get(field) is None:
            raise TraitError(f"{event_type}: trait {trait} (payload.{field}) does not resolve")
        try:
            traits[trait] = _convert(payload[field], kind)
        except (TypeError, ValueError) as exc:
            raise TraitError(f"{event_type}: trait {trait} is not a {kind}: {payload[field]!r} ({exc})") from exc
    return traits


def exists_sample(message: Mapping[str, Any]) -> dict[str, Any]:
    """The ``trove.instance.exists`` meter's sample: volume from the ``timedelta`` plugin (seconds between
    the two audit period fields), project, resource and user ids and the metadata fields."""
    payload = message["payload"]
    beginning = _convert(payload["audit_period_beginning"], "datetime")
    ending = _convert(payload["audit_period_ending"], "datetime")
    sample = {"name": "trove.instance.exists", "type": "cumulative", "unit": "s",
              "volume": (ending - beginning).total_seconds(), "project_id": payload["tenant_id"],
              "resource_id": payload["instance_id"], "user_id": payload["user_id"],
              "resource_metadata": {name: payload.get(name) for name in
                                    ("nova_instance_id", "state", "service_id", "instance_type", "instance_type_id")}}
    missing = [k for k in ("project_id", "resource_id", "user_id") if not sample[k]]
    missing += [k for k, v in sample["resource_metadata"].items() if v is None]
    if missing:
        raise TraitError(f"trove.instance.exists: meter fields {missing} do not resolve")
    return sample
