"""Billing from the usage notifications: what each instance was, and for how long.

The ledger is a list of segments per instance: from one usage change to the next, the instance
had one flavor and one volume size. ``trove.instance.create`` opens the first segment when the
datastore is first healthy (the notification's time, as the first ``exists`` period begins);
``modify_flavor`` and ``modify_volume`` close it at ``modify_at`` and open the next with the new
size; ``delete`` closes it at ``deleted_at``. A report over a window adds up each segment's overlap
with it: instance-seconds by flavor, volume gigabyte-seconds, by datastore.

``trove.instance.exists`` does not change the ledger; its periods are kept beside it so that the
ledger can be checked against what Ceilometer's ``trove.instance.exists`` meter would bill.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.usage import CREATE, DELETE, MODIFY_FLAVOR, MODIFY_VOLUME, SERVICE_IDS

EXISTS = "trove.instance.exists"
BILLED_EVENT_TYPES = frozenset({CREATE, MODIFY_FLAVOR, MODIFY_VOLUME, DELETE, EXISTS})
DATASTORE_OF_SERVICE = {service_id: manager for manager, service_id in SERVICE_IDS.items()}


class NotANotification(ValueError):
    """A message on a notification topic that is not an oslo.messaging messagingv2 notification."""


@dataclass(frozen=True, slots=True)
class UsageMessage:
    message_id: str
    event_type: str
    timestamp: datetime  # when the notifier says it happened (UTC)
    payload: dict[str, Any]

    # The consumer runner's per-aggregate dedupe does not apply: the ledger dedupes by ``message_id``.
    dedupe_key = None

    @classmethod
    def from_wire(cls, value: bytes) -> UsageMessage:
        try:
            envelope = json.loads(value)
            message = json.loads(envelope["oslo.message"])
            return cls(message_id=str(message["message_id"]), event_type=str(message["event_type"]),
                       timestamp=datetime.strptime(message["timestamp"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC),
                       payload=dict(message["payload"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise NotANotification(f"not a messagingv2 notification: {exc}") from exc


def moment(value: str) -> datetime:
    """A payload's ISO time (``2026-12-02T10:00:00Z``) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of an instance's life with one flavor and one volume size; ``ended_at`` None while it runs."""

    tenant_id: str
    instance_id: str
    datastore: str
    flavor_id: str
    instance_type: str | None
    instance_size: int  # RAM, MB
    volume_size: int  # GB
    started_at: datetime
    ended_at: datetime | None = None

    def seconds_within(self, start: datetime, end: datetime) -> float:
        stop = min(self.ended_at or end, end)
        return max(0.0, (stop - max(self.started_at, start)).total_seconds())


@dataclass(frozen=True, slots=True)
class LedgerChange:
    """What one usage message does to its instance's ledger: close the running segment at ``closes_at``
    (if any), then open ``opens`` (if any)."""

    closes_at: datetime | None = None
    opens: Segment | None = None


def ledger_change(message: UsageMessage) -> LedgerChange:
    payload = message.payload
    if message.event_type == CREATE:
        return LedgerChange(opens=_segment(payload, message.timestamp))
    if message.event_type in (MODIFY_FLAVOR, MODIFY_VOLUME):
        at = moment(payload["modify_at"])
        return LedgerChange(closes_at=at, opens=_segment(payload, at))
    if message.event_type == DELETE:
        return LedgerChange(closes_at=moment(payload["deleted_at"]))
    return LedgerChange()


def _segment(payload: Mapping[str, Any], started_at: datetime) -> Segment:
    service_id = payload.get("service_id")
    return Segment(tenant_id=payload["tenant_id"], instance_id=payload["instance_id"],
                   datastore=DATASTORE_OF_SERVICE.get(service_id, service_id or "unknown"),
                   flavor_id=str(payload["instance_type_id"]), instance_type=payload.get("instance_type"),
                   instance_size=int(payload["instance_size"]), volume_size=int(payload.get("volume_size") or 0),
                   started_at=started_at)


@dataclass(frozen=True, slots=True)
class UsageLine:
    """A report line: one instance's use of one flavor within the window."""

    tenant_id: str
    instance_id: str
    datastore: str
    flavor_id: str
    instance_type: str | None
    instance_seconds: float
    volume_gb_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "instance_id": self.instance_id, "datastore": self.datastore,
                "flavor_id": self.flavor_id, "instance_type": self.instance_type,
                "instance_seconds": round(self.instance_seconds, 3),
                "volume_gb_seconds": round(self.volume_gb_seconds, 3)}


def usage_lines(segments: Iterable[Segment], start: datetime, end: datetime) -> list[UsageLine]:
    """Each instance's use of each flavor within [start, end), in tenant, instance and flavor order."""
    if end <= start:
        raise ValueError("a usage window must end after it starts")
    totals: dict[tuple[str, str, str, str, str | None], list[float]] = {}
    for segment in segments:
        seconds = segment.seconds_within(start, end)
        if seconds <= 0:
            continue
        key = (segment.tenant_id, segment.instance_id, segment.datastore, segment.flavor_id, segment.instance_type)
        total = totals.setdefault(key, [0.0, 0.0])
        total[0] += seconds
        total[1] += seconds * segment.volume_size
    return [UsageLine(*key, instance_seconds=seconds, volume_gb_seconds=gb_seconds)
            for key, (seconds, gb_seconds) in sorted(totals.items(), key=lambda item: item[0][:4])]


def usage_totals(lines: Iterable[UsageLine]) -> dict[str, float]:
    lines = list(lines)
    return {"instance_seconds": round(sum(line.instance_seconds for line in lines), 3),
            "volume_gb_seconds": round(sum(line.volume_gb_seconds for line in lines), 3)}


def window(start: str, end: str) -> tuple[datetime, datetime]:
    """A ``--from``/``--to`` window as aware UTC bounds; ``ValueError`` saying what is wrong with it."""
    first, last = window_time(start), window_time(end)
    if last <= first:
        raise ValueError("--to must be later than --from")
    return first, last


def window_time(value: str) -> datetime:
    """A report window's bound: ISO 8601 (``2026-12-01``, ``2026-12-01T10:00:00Z``, an offset, or naive
    meaning UTC), as aware UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time such as 2026-12-01T00:00:00Z") from None
    except OverflowError:  # a valid time whose UTC falls outside year 1 to 9999
        raise ValueError(f"{value!r} is outside the years 1 to 9999 in UTC") from None
