"""``trove-es audit``: what the event store says happened, and whether it was changed since.

- ``audit verify`` walks the store beside its recorded hash chain and signed checkpoints
  (``domain.audit_chain``) and names every altered, missing, moved or slipped-in event with its position
  and aggregate. Exit status 0: nothing found; 1: findings; 2: it could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from adapters.settings import Settings
from domain.audit_chain import ChainVerifier, Finding, VerifyProgress


class Progress:
    """A progress line on stderr (a terminal: redrawn in place; otherwise a line every ``every_s``)."""

    def __init__(self, what: str, total: int | None, out: TextIO = sys.stderr, every_s: float = 2.0) -> None:
        self._what, self._total, self._out, self._every_s = what, total, out, every_s
        self._started = self._shown = time.monotonic()
        self._tty = out.isatty()

    def show(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < (0.2 if self._tty else self._every_s):
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-6)
        rate = done / elapsed
        line = f"{self._what}: {done:,}"
        if self._total:
            line += f"/{self._total:,} ({100 * done / self._total:.0f}%)"
            if rate > 0 and not final:
                line += f", ETA {max(self._total - done, 0) / rate:.0f}s"
        line += f", {rate:,.0f}/s"
        if self._tty:
            self._out.write("\r" + line + ("\n" if final else ""))
        else:
            self._out.write(line + "\n")
        self._out.flush()


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.bootstrap import build_application, event_chain
    from adapters.sql.event_chain import store_events

    application = build_application(settings)
    chain = event_chain(settings)
    total = application.recorder.max_notification_id() or 0
    progress = Progress("verifying events", total)
    verifier = ChainVerifier(chain.key)

    def watched() -> Any:
        for event in store_events(application.recorder):
            yield event
            progress.show(verifier.progress.events)

    findings = verifier.verify(watched(), chain.links(), chain.checkpoints())
    progress.show(verifier.progress.events, final=True)
    _report(findings, verifier.progress, args.format, sys.stdout)
    return 1 if findings else 0


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


def add_audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the event store's history, and whether it was changed")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check every stored event against the hash chain and checkpoints")
    verify.add_argument("--format", choices=("text", "json"), default="text")
    verify.set_defaults(func=cmd_audit_verify)
