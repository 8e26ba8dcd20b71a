"""The recorded chain in SQL: it continues across restarts, re-chains nothing, and checkpoints on its cadence."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.sql import event_chain as module
from adapters.sql.engine import create_sql_engine
from adapters.sql.event_chain import SqlEventChain
from domain.audit_chain import ChainVerifier, StoredEvent

KEY = b"the audit key, for these tests"


def _events(first: int, last: int) -> list[StoredEvent]:
    return [StoredEvent(n, f"agg-{n % 4}", n // 4 + 1, "t", f"event {n}".encode()) for n in range(first, last + 1)]


def test_a_chain_extended_by_two_relays_in_turn_is_one_chain_with_checkpoints_on_cadence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_HEADS_CACHED", 2)  # most heads are read back, not remembered
    engine = create_sql_engine(f"sqlite:///{tmp_path / 'store.db'}")
    clock = [1000.0]
    first = SqlEventChain(engine, KEY, checkpoint_every=10, checkpoint_interval_s=30, clock=lambda: clock[0])
    links = first.extend(_events(1, 12))
    assert [link.position for link in links] == list(range(1, 13))
    assert [c.position for c in first.checkpoints()] == [12], "at the end of the batch that passed 10 links"

    again = first.extend(_events(11, 14))  # a republish overlaps what was chained
    assert [link.position for link in again] == [11, 12, 13, 14]
    assert again[:2] == links[10:12], "what was chained is given back as recorded, not chained twice"

    second = SqlEventChain(engine, KEY, checkpoint_every=10, checkpoint_interval_s=30, clock=lambda: clock[0])
    assert second.last_position == 14
    second.extend(_events(15, 18))
    assert second.checkpoint(only_if_due=True) is None, "not due: the last checkpoint is recent"
    clock[0] += 31
    assert second.checkpoint(only_if_due=True).position == 18  # type: ignore[union-attr]
    assert second.checkpoint() is None, "nothing new to sign"

    findings = ChainVerifier(KEY).verify(_events(1, 18), list(second.links()), second.checkpoints())
    assert findings == []
    engine.dispose()
