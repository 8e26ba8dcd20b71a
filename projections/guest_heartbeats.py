"""Guest liveness, written by the conductor on every heartbeat and read by the instance view.

Heartbeats are not events: ten thousand guests reporting every ten seconds would swamp the store with
facts nobody needs to replay. Only a *change* of status becomes an event; liveness lives here.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, MetaData, String, Table

metadata = MetaData()

guest_heartbeats = Table(
    "guest_heartbeats",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("service_status", String(64), nullable=False),
    Column("last_seen_at", Float, nullable=False),  # epoch seconds, when the conductor received it
    Column("sent_at", Float, nullable=False),
)
