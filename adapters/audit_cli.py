"""``trove-es audit``: what the event store says happened, and whether it was changed since.

- ``audit verify`` walks the store beside its recorded hash chain and signed checkpoints
  (``domain.audit_chain``) and names every altered, missing, moved or slipped-in event with its position
  and aggregate. Exit status 0: nothing found; 1: findings; 2: it could not run.
- ``audit timeline <instance id>`` lists every event of the instance and of its operations, from the
  store; ``--as-of`` shows the instance as it was at a moment, rebuilt from the store, not the read model.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from adapters.progress import Progress
from adapters.settings import Settings
from domain.audit_chain import ChainVerifier, Finding, VerifyProgress
from domain.errors import InvalidRequest
from domain.public_events import PublicEvent
from services.instance_history import PastInstance, timeline_entry


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.bootstrap import build_application, event_chain
    from adapters.secret_files import AUDIT_KEY_FILE
    from adapters.sql.event_chain import store_events

    if not (settings.data_dir / AUDIT_KEY_FILE).exists():
        print(f"trove-es audit verify: no audit key at {settings.data_dir / AUDIT_KEY_FILE}; copy the relay's "
              f"there (a new one would call every checkpoint forged)", file=sys.stderr)
        return 2
    try:
        application = build_application(settings)
        chain = event_chain(settings)
        # Everything up to the last link, as it stands now: what the relay chains meanwhile is the tail.
        bound = chain.last_position
        progress = Progress("verifying events", bound)
        verifier = ChainVerifier(chain.key)

        def watched() -> Any:
            for event in store_events(application.recorder, upto=bound):
                yield event
                progress.show(verifier.progress.events)

        findings = verifier.verify(watched(), chain.links(upto=bound),
                                   [c for c in chain.checkpoints() if c.position <= bound],
                                   max_unsigned=settings.audit_checkpoint_every + settings.relay_batch_size)
        progress.show(verifier.progress.events, final=True)
        verifier.progress.unchained = sum(1 for _ in store_events(application.recorder, after=bound))
    except Exception as exc:  # the store or the chain could not be read: no verdict, not a finding
        print(f"trove-es audit verify: could not verify: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 2
    _report(findings, verifier.progress, args.format, sys.stdout)
    return 1 if findings else 0


def cmd_audit_timeline(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.event_store import open_application
    from domain.errors import NotFound
    from services.instance_history import InstanceHistory
    from services.instances import InstanceService

    instances = open_application(InstanceService, settings.event_store_url, quota_defaults=settings.quota_defaults)
    history = InstanceHistory(instances)
    try:
        if args.as_of is None:
            _print_timeline(history.events(args.instance_id), args.format, sys.stdout)
        else:
            _print_past(history.as_of(args.instance_id, _moment(args.as_of)), args.format, sys.stdout)
    except (NotFound, InvalidRequest) as exc:
        print(f"trove-es audit timeline: {exc}", file=sys.stderr)
        return 2
    finally:
        instances.close()
    return 0


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"--as-of {text!r} is not an ISO 8601 time (for example 2026-12-04T10:00:00Z)") \
            from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print_timeline(events: list[PublicEvent], format_: str, out: TextIO) -> None:
    if format_ == "json":
        json.dump([timeline_entry(e) for e in events], out, indent=2)
        out.write("\n")
        return
    for event in events:
        entry = timeline_entry(event)
        context = entry["context"]
        who = f"user {entry['user_id'] or '-'} tenant {entry['tenant_id'] or '-'}"
        by = f" by {context['server_type']}" if context.get("server_type") else ""
        out.write(f"{entry['occurred_at']}  {entry['aggregate_type']} v{entry['version']}  {entry['type']}  "
                  f"request {entry['request_id'] or '-'}  {who}{by}  "
                  f"{json.dumps(entry['changes'], sort_keys=True, separators=(',', ':'))}\n")


def _print_past(past: PastInstance, format_: str, out: TextIO) -> None:
    from projections.instance_view import record_from_aggregate

    record = record_from_aggregate(past.instance, past.events)
    state = {"as_of": past.moment.isoformat(), "id": record.id, "name": record.name, "tenant_id": record.tenant_id,
             "status": record.status, "operating_status": record.operating_status,
             "task_status": record.task_status.name, "server_status": record.server_status,
             "service_status": record.service_status.description, "flavor": record.flavor,
             "volume_size": record.volume_size, "datastore": record.datastore,
             "datastore_version": record.datastore_version, "deleted": record.deleted, "fault": record.fault,
             "version": record.version, "last_event": timeline_entry(past.events[-1])}
    if format_ == "json":
        json.dump(state, out, indent=2, default=str)
        out.write("\n")
        return
    for name, value in state.items():
        if name != "last_event":
            out.write(f"{name:18} {value if not isinstance(value, dict) else json.dumps(value, sort_keys=True)}\n")
    last = state["last_event"]
    out.write(f"{'last_event':18} {last['type']} v{last['version']} at {last['occurred_at']} "
              f"(request {last['request_id']})\n")


def _report(findings: list[Finding], seen: VerifyProgress, format_: str, out: TextIO) -> None:
    if format_ == "json":
        json.dump({"findings": [vars(f) for f in findings], "events": seen.events, "links": seen.links,
                   "checkpoints": seen.checkpoints, "unchained": seen.unchained}, out, indent=2)
        out.write("\n")
        return
    for finding in findings:
        out.write(f"{finding}\n")
    summary = (f"{seen.events} events, {seen.links} chained, {seen.checkpoints} checkpoints checked: "
               f"{len(findings) or 'no'} finding{'' if len(findings) == 1 else 's'}")
    if seen.unchained:
        summary += f"; the last {seen.unchained} not chained yet (the relay chains them as it publishes)"
    out.write(summary + ".\n")
    if findings:
        out.write("The store was changed outside trove-es: restore it from a backup taken before the first "
                  "finding's time, or from Kafka's copy of the events.\n")
