"""The conductor's ledger in SQL: ``conductor_last_seen`` here, liveness in the heartbeat read model.

Both tables live in the read-model database, beside the consumer's offsets, so one transaction
holds a batch's rows and the offsets that consumed it. ``metadata`` creates both.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, select, tuple_
from sqlalchemy.orm import Session

from projections.guest_heartbeats import guest_heartbeats, record_heartbeats
from projections.upsert import upsert_statement
from services.ports import GuestLiveness, LastSeen

metadata = MetaData()

last_seen = Table(
    "conductor_last_seen",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("method", String(32), primary_key=True),
    Column("sent_at", Float, nullable=False),
    # Heartbeats only: the reported status last reconciled with the aggregate, and when.
    Column("reconciled_status", String(64)),
    Column("reconciled_at", Float),
)
guest_heartbeats.to_metadata(metadata)


class SqlGuestLedger:
    """``GuestLedger`` over the consumer's SQLAlchemy session."""

    def last_seen(self, transaction: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], LastSeen]:
        if not keys:
            return {}
        rows = transaction.connection().execute(
            select(last_seen).where(tuple_(last_seen.c.instance_id, last_seen.c.method).in_(keys)))
        return {(r.instance_id, r.method): LastSeen(**r._mapping) for r in rows}

    def record_seen(self, transaction: Session, rows: list[LastSeen]) -> None:
        if not rows:
            return
        connection = transaction.connection()
        connection.execute(upsert_statement(connection, last_seen, ["instance_id", "method"],
                                            ["sent_at", "reconciled_status", "reconciled_at"]),
                           [_row(row) for row in rows])

    def record_liveness(self, transaction: Session, beats: list[GuestLiveness]) -> None:
        record_heartbeats(transaction.connection(), beats)


def _row(seen: LastSeen) -> dict[str, Any]:
    return {"instance_id": seen.instance_id, "method": seen.method, "sent_at": seen.sent_at,
            "reconciled_status": seen.reconciled_status, "reconciled_at": seen.reconciled_at}
