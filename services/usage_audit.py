"""The usage auditor: ends audit periods when they are due, so the periodic notifications go out.

The task manager's driver runs it, under the driver's lease; two drivers at once (a lease handed
over mid-tick) still record each period once, because ending one is a versioned write to its chain.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.usage_audit import UsageAudit, audit_id, period_boundary
from services.application import TroveApplication

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UsageAuditor:
    def __init__(self, application: TroveApplication, intervals: Mapping[str, int],
                 salts: Mapping[str, Sequence[int]], *, server_ip: str | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        """``intervals``: seconds per period of each audit kind; ``salts``: for each kind, per partition
        of the event stream, the salt that puts that partition's chain on it (``audit_salts``)."""
        for kind, interval_s in intervals.items():
            if interval_s <= 0:
                raise ValueError(f"the {kind} audit interval must be positive, got {interval_s}")
        self._application = application
        self._intervals = dict(intervals)
        self._salts = {kind: tuple(salts[kind]) for kind in intervals}
        self._server_ip = server_ip
        self._clock = clock
        self._next_due: dict[str, datetime] = {}  # kind → when its chains next need a look

    def tick(self) -> int:
        """End every period that is due; the number of chains written."""
        now = self._clock()
        written = 0
        for kind, interval_s in self._intervals.items():
            due_at = self._next_due.get(kind)
            if due_at is not None and now < due_at:
                continue
            written += self._close(kind, interval_s, now)
            self._next_due[kind] = period_boundary(now, interval_s) + timedelta(seconds=interval_s)
        return written

    def _close(self, kind: str, interval_s: int, now: datetime) -> int:
        context = self._context()
        changed: list[UsageAudit] = []
        for partition, salt in enumerate(self._salts[kind]):
            chain = self._chain(kind, partition, salt)
            if chain is None:
                changed.append(UsageAudit(context, kind, partition, salt, period_boundary(now, interval_s).isoformat()))
                continue
            ending = chain.due(now, interval_s)
            if ending is not None:
                chain.end_period(context, ending)
                changed.append(chain)
        if not changed:
            return 0
        try:
            self._application.save(*changed)
        except IntegrityError:
            # Another driver recorded these periods first; the next tick finds them ended.
            log.info("the %s audit periods ending at %s were recorded by another task manager", kind, now)
            self._next_due.pop(kind, None)
            return 0
        log.info("%s audit: %d chain(s) written up to %s", kind, len(changed), period_boundary(now, interval_s))
        return len(changed)

    def _chain(self, kind: str, partition: int, salt: int) -> UsageAudit | None:
        try:
            chain = self._application.repository.get(audit_id(kind, partition, salt))
        except AggregateNotFoundError:
            return None
        assert isinstance(chain, UsageAudit)
        return chain

    def _context(self) -> dict[str, Any]:
        # A deployment's own job: no tenant, no user, no client.
        return {"request_id": f"req-{uuid.uuid4()}", "tenant_id": None, "user_id": None, "client_ip": None,
                "server_ip": self._server_ip, "server_type": "taskmanager"}

