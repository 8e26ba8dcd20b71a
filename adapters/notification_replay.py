"""``trove-es notifications replay --from ISO --to ISO --topic NAME``: the notifications of a window, sent
again with their original message ids, for a billing re-run.

A notification's payload depends on what came before it (an instance's flavor for its usage, the
operation a ``.end`` closes), so the live notifier's own code folds the event store from its first
event, with its state in a scratch SQLite file, and only the notifications stamped inside
``[from, to)`` are sent, every one to ``--topic``. Message ids derive from the events (``message_id_for``),
so a consumer that dedupes by message id sees each notification once, however often it is replayed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from adapters.event_store import log_batches
from adapters.progress import Progress
from adapters.settings import Settings
from adapters.sql.engine import create_sql_engine
from adapters.sql.schema import create_tables
from domain.billing import window
from domain.public_events import to_public_event
from projections.notifier import NotificationPublisher

BATCH = 2000


class WindowPublisher:
    """Passes on to one topic only the notifications stamped inside the window."""

    def __init__(self, publisher: NotificationPublisher, topic: str, start: datetime, end: datetime) -> None:
        self._publisher, self._topic, self._start, self._end = publisher, topic, start, end
        self.sent = 0

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        message = json.loads(json.loads(value)["oslo.message"])
        stamped = datetime.strptime(message["timestamp"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        if self._start <= stamped < self._end:
            self._publisher.publish(self._topic, key, value)
            self.sent += 1

    def flush(self) -> None:
        self._publisher.flush()


def cmd_notifications_replay(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.bootstrap import build_application, notifier
    from adapters.cli import resolve_bootstrap
    from adapters.kafka.notifications import KafkaNotificationPublisher

    try:
        start, end = window(args.start, args.end)
    except ValueError as exc:
        print(f"trove-es notifications replay: {exc}", file=sys.stderr)
        return 2
    settings = resolve_bootstrap(settings)
    kafka = KafkaNotificationPublisher(settings.kafka_bootstrap_servers, (args.topic,),
                                       settings.notifications_partitions)
    in_window = WindowPublisher(kafka, args.topic, start, end)
    replaying = notifier(settings, publisher=in_window, topics=(args.topic, args.topic))
    application = build_application(settings)
    total = application.recorder.max_notification_id() or 0
    progress = Progress(f"replaying the notifications of {start.isoformat()} to {end.isoformat()}", total)
    to_domain_event = application.mapper.to_domain_event
    with tempfile.TemporaryDirectory(prefix="trove-es-notifications-") as scratch:
        engine = create_sql_engine(f"sqlite:///{Path(scratch) / 'notifier.db'}")
        create_tables(engine, replaying.metadata)
        try:
            for notifications in log_batches(application.recorder, 0, BATCH):
                after = notifications[-1].id
                events = [e for e in (to_public_event(to_domain_event(n)) for n in notifications)
                          if e.type in replaying.handles]
                with Session(engine) as session, session.begin():
                    replaying.apply_batch(events, session)
                progress.show(after)
        finally:
            engine.dispose()
            kafka.close()
    progress.show(max(total, 0), final=True)
    sent = in_window.sent
    print(f"{sent} notification{'' if sent == 1 else 's'} of the window sent to {args.topic}, with their original "
          f"message ids")
    return 0
