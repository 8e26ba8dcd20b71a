"""Guest liveness, written by the conductor on every heartbeat and read by the instance view.

Heartbeats are not events: ten thousand guests reporting every ten seconds would swamp the store with
facts nobody needs to replay. Only a *change* of status becomes an event; liveness lives here.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, Column, Connection, Float, Index, MetaData, String, Table

from projections.upsert import upsert_statement
from services.ports import GuestLiveness

metadata = MetaData()

guest_heartbeats = Table(
    "guest_heartbeats",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("service_status", String(64), nullable=False),
    Column("last_seen_at", Float, nullable=False),  # epoch seconds, when the conductor received it
    Column("sent_at", Float, nullable=False),
    Column("volume_used_bytes", BigInteger),  # what the guest last measured of its volume (Trove's volume.used)
    Index("ix_guest_heartbeats_last_seen", "last_seen_at"),  # guests gone silent
)


def record_heartbeats(connection: Connection, beats: Iterable[GuestLiveness]) -> None:
    """Make each beat its instance's one liveness row, in the caller's transaction."""
    rows = [{"instance_id": b.instance_id, "service_status": b.service_status, "last_seen_at": b.last_seen_at,
             "sent_at": b.sent_at, "volume_used_bytes": b.volume_used_bytes} for b in beats]
    if rows:
        connection.execute(upsert_statement(connection, guest_heartbeats, ["instance_id"],
                                            ["service_status", "last_seen_at", "sent_at", "volume_used_bytes"]),
                           rows)
