"""The store's hash chain and its verifier, on events in memory: every kind of change is named where it is."""

from __future__ import annotations

from dataclasses import replace

from domain.audit_chain import (
    ALTERED,
    CHAIN_ALTERED,
    CHECKPOINT_BROKEN,
    INSERTED,
    MISSING,
    REORDERED,
    UNSIGNED,
    Chainer,
    ChainLink,
    ChainVerifier,
    StoredEvent,
    sign,
)

KEY = b"the audit key, for these tests"


def _store(count: int = 12) -> list[StoredEvent]:
    """Three aggregates' events, interleaved in the log as writes are."""
    versions: dict[str, int] = {}
    events = []
    for position in range(1, count + 1):
        aggregate = f"agg-{position % 3}"
        versions[aggregate] = versions.get(aggregate, 0) + 1
        state = f'{{"n": {position}, "name": "db{position}"}}'.encode()
        events.append(StoredEvent(position, aggregate, versions[aggregate], "domain.instance:Instance.Renamed", state))
    return events


def _chained(events: list[StoredEvent], every: int = 4) -> tuple[list[ChainLink], list]:
    chainer = Chainer()
    links, checkpoints = [], []
    for event in events:
        links.append(chainer.link(event))
        if chainer.events % every == 0:
            checkpoints.append(sign(KEY, links[-1], chainer.events, "2026-12-04T00:00:00+00:00"))
    return links, checkpoints


def _verify(events: list[StoredEvent], links: list[ChainLink], checkpoints: list) -> list[tuple[str, int]]:
    return [(f.kind, f.position) for f in ChainVerifier(KEY).verify(events, links, checkpoints)]


def test_an_untouched_store_verifies_and_each_aggregate_is_one_chain() -> None:
    events = _store()
    links, checkpoints = _chained(events)
    assert _verify(events, links, checkpoints) == []
    first_of_each = {link.aggregate_id: link for link in reversed(links)}
    assert {link.previous_hash for link in first_of_each.values()} == {"0" * 64}
    by_position = {link.position: link for link in links}
    assert by_position[4].previous_hash == by_position[1].hash, "agg-1's second event follows its first"


def test_an_altered_a_deleted_and_two_swapped_events_are_each_named() -> None:
    events = _store()
    links, checkpoints = _chained(events)
    tampered = list(events)
    tampered[2] = replace(events[2], state=events[2].state.replace(b"db3", b"db9"))  # position 3 edited
    tampered[9], tampered[10] = replace(events[10], position=10), replace(events[9], position=11)  # swapped
    del tampered[6]  # position 7 deleted
    findings = ChainVerifier(KEY).verify(tampered, links, checkpoints)
    assert [(f.kind, f.position) for f in findings] == [(ALTERED, 3), (MISSING, 7), (REORDERED, 10),
                                                          (REORDERED, 11)]
    missing = findings[1]
    assert (missing.aggregate_id, missing.version) == (events[6].aggregate_id, events[6].version)
    assert "chained at position 11" in findings[2].detail and "chained at position 10" in findings[3].detail


def test_two_versions_of_one_aggregate_swapped_are_reordered() -> None:
    events = _store()
    links, checkpoints = _chained(events)
    tampered = list(events)
    tampered[0], tampered[3] = replace(events[0], version=2), replace(events[3], version=1)  # agg-1 v1 <-> v2
    assert _verify(tampered, links, checkpoints) == [(REORDERED, 1), (REORDERED, 4)]


def test_an_event_slipped_in_among_chained_ones_is_inserted_and_the_unchained_tail_is_no_finding() -> None:
    events = _store()
    links, checkpoints = _chained(events[:10])
    slipped = StoredEvent(5, "agg-x", 1, "domain.instance:Instance.Renamed", b"{}")
    store = sorted([*(e for e in events if e.position != 5), slipped], key=lambda e: e.position)
    verifier = ChainVerifier(KEY)
    findings = verifier.verify(store, links, checkpoints)
    assert [(f.kind, f.position) for f in findings] == [(ALTERED, 5)], "a row replaced in place is altered"
    extra = StoredEvent(8, "agg-x", 1, "t", b"{}")
    gapped = [e for e in events if e.position != 8]
    links_without_8 = [link for link in links if link.position != 8]
    assert (INSERTED, 8) in _verify(sorted([*gapped, extra], key=lambda e: e.position), links_without_8, [])
    assert verifier.progress.unchained == 2, "positions 11 and 12: not chained yet"


def test_a_store_and_chain_rewritten_together_fail_at_the_next_checkpoint_and_a_forged_one_is_named() -> None:
    events = _store()
    _, checkpoints = _chained(events)
    rewritten = list(events)
    rewritten[5] = replace(events[5], state=b'{"n": 6, "name": "evil"}')
    relinked, _ = _chained(rewritten)  # the attacker recomputes every link, but cannot sign
    assert _verify(rewritten, relinked, checkpoints) == [(CHECKPOINT_BROKEN, 8), (CHECKPOINT_BROKEN, 12)]
    forged = [*checkpoints[:1], replace(checkpoints[1], log_hash=relinked[7].log_hash)]
    assert _verify(rewritten, relinked, forged)[0] == (CHECKPOINT_BROKEN, 8)


def test_a_tail_cut_off_with_its_checkpoints_and_chained_again_is_named_unsigned() -> None:
    events = _store()
    links, checkpoints = _chained(events)
    rewritten = [*events[:4], replace(events[4], state=b"{}"), *events[5:]]
    relinked, _ = _chained(rewritten)  # links and checkpoints from 5 on removed, then chained again
    kept = [c for c in checkpoints if c.position < 5]
    assert _verify(rewritten, relinked, kept) == []  # without a bound on the tail, this passes
    findings = ChainVerifier(KEY).verify(rewritten, relinked, kept, max_unsigned=4)
    assert [(f.kind, f.position) for f in findings] == [(UNSIGNED, 5)]
    assert ChainVerifier(KEY).verify(events, links, checkpoints, max_unsigned=4) == []


def test_a_link_edited_in_the_recorded_chain_is_named_once() -> None:
    events = _store()
    links, checkpoints = _chained(events)
    edited = list(links)
    edited[4] = replace(links[4], previous_hash="f" * 64)
    assert _verify(events, edited, checkpoints) == [(CHAIN_ALTERED, 5)]
    edited[4] = replace(links[4], log_hash="e" * 64)
    assert _verify(events, edited, checkpoints) == [(CHAIN_ALTERED, 5)], \
        "the log hash recorded at 5 is wrong; the links are not, so the checkpoint at 8 still holds"
