"""Progress of the long-running tools (replay, verify): count, rate and ETA on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A progress line on stderr (a terminal: redrawn in place; otherwise a line every ``every_s``)."""

    def __init__(self, what: str, total: int | None, out: TextIO = sys.stderr, every_s: float = 2.0, *,
                 initial: int = 0) -> None:
        """``initial``: what was done before this run (a resumed one), counted in the total, not the rate."""
        self._what, self._total, self._out, self._every_s, self._initial = what, total, out, every_s, initial
        self._started = self._shown = time.monotonic()
        self._tty = out.isatty()

    def show(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < (0.2 if self._tty else self._every_s):
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-6)
        rate = (done - self._initial) / elapsed
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
