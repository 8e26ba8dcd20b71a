"""The billing consumer's wiring and its report's formats (``trove-es billing run`` / ``billing report``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine

from adapters.kafka.consumer import ConsumerRunner
from adapters.settings import Settings
from adapters.sql.engine import create_sql_engine, read_only
from adapters.sql.schema import create_tables
from domain.billing import UsageLine, UsageMessage, usage_totals
from projections.billing_ledger import BillingLedger, BillingQueries

FORMATS = ("table", "json", "csv")
COLUMNS = ("tenant_id", "instance_id", "datastore", "flavor_id", "instance_type", "instance_seconds",
           "volume_gb_seconds")


def billing_engine(settings: Settings) -> Engine:
    engine = create_sql_engine(settings.billing_url)
    create_tables(engine, BillingLedger.metadata)
    return engine


def billing_queries(settings: Settings) -> BillingQueries:
    return BillingQueries(read_only(billing_engine(settings)))


def build_billing_runner(settings: Settings) -> ConsumerRunner:
    """The ledger's consumer: both notification topics, its own group, offsets beside the ledger."""
    ledger = BillingLedger()
    partitions = settings.notifications_partitions
    return ConsumerRunner(
        name=ledger.name, group_id=settings.group_id(ledger.name),
        topics={settings.topics.notifications_info: partitions, settings.topics.notifications_error: partitions},
        decode=UsageMessage.from_wire, apply=ledger.apply, engine=billing_engine(settings),
        bootstrap_servers=settings.kafka_bootstrap_servers, dead_letter_topic=settings.topics.dead_letter,
        session_timeout_ms=settings.kafka_session_timeout_ms, max_records=settings.consumer_max_records,
        fetch_wait_ms=settings.consumer_fetch_wait_ms)


def render_usage(lines: Sequence[UsageLine], start: datetime, end: datetime, fmt: str) -> str:
    rows = [line.as_dict() for line in lines]
    totals = usage_totals(lines)
    if fmt == "json":
        return json.dumps({"start": start.isoformat(), "end": end.isoformat(), "usage": rows, "totals": totals},
                          indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    cells = [list(COLUMNS)] + [["" if row[c] is None else str(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in cells]
    text.append(f"total: {totals['instance_seconds']:.0f} instance-seconds, "
                f"{totals['volume_gb_seconds']:.0f} volume GB-seconds, {start.isoformat()} to {end.isoformat()}")
    return "\n".join(text)

