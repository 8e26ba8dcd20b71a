"""Tables that make consumers effectively-once and the relay resumable.

``consumer_offsets`` holds each consumer group's next offset per partition, written in the same
transaction as the consumer's effect; ``topic_id`` records which incarnation of the topic those
offsets belong to (a broker that lost its topics recreates them with new ids).
``consumer_marks`` holds, per group and aggregate, the highest event version applied: anything at
or below it is a duplicate. ``relay_positions`` holds the last store notification the relay saw
acknowledged by the broker, for the topic incarnation it was published to.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table

tracking_metadata = MetaData()

consumer_offsets = Table(
    "consumer_offsets",
    tracking_metadata,
    Column("group_id", String(200), primary_key=True),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("topic_id", String(64), nullable=False),
    Column("next_offset", BigInteger, nullable=False),
)

consumer_marks = Table(
    "consumer_marks",
    tracking_metadata,
    Column("group_id", String(200), primary_key=True),
    Column("aggregate_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

relay_positions = Table(
    "relay_positions",
    tracking_metadata,
    Column("relay_name", String(200), primary_key=True),
    Column("topic", String(249), nullable=False),
    Column("topic_id", String(64), nullable=False),
    Column("notification_id", BigInteger, nullable=False),
)
