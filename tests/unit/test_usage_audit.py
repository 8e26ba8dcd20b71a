"""Audit periods: aligned, contiguous, never overlapping, each recorded once however many task managers tick."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from adapters.kafka.topics import audit_salts, partition_of
from domain.public_events import to_public_event
from domain.usage_audit import EXISTS, QUOTA, UsageAudit, audit_id, period_boundary
from services.application import TroveApplication
from services.usage_audit import UsageAuditor

HOUR = 3600
START = datetime(2026, 12, 2, 10, 20, 5, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _periods(application: TroveApplication, kind: str, partition: int, salt: int) -> list[tuple[str, str]]:
    events = [to_public_event(e) for e in application.events.get(audit_id(kind, partition, salt))]
    return [(e.data["beginning"], e.data["ending"]) for e in events if e.type == "PeriodEnded"]


def test_a_period_boundary_is_a_multiple_of_the_interval_since_the_epoch() -> None:
    assert period_boundary(START, HOUR) == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert period_boundary(START, 300) == datetime(2026, 12, 2, 10, 20, tzinfo=UTC)
    assert period_boundary(datetime(2026, 12, 2, 11, 0, tzinfo=UTC), HOUR) == datetime(2026, 12, 2, 11, 0, tzinfo=UTC)


def test_a_chain_ends_its_period_at_the_next_boundary_and_the_next_one_begins_there() -> None:
    chain = UsageAudit({}, EXISTS, 0, 0, period_boundary(START, HOUR).isoformat())
    assert chain.due(START + timedelta(minutes=30), HOUR) is None
    ending = chain.due(START + timedelta(minutes=45), HOUR)
    assert ending == datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    chain.end_period({}, ending)
    assert chain.due(START + timedelta(minutes=50), HOUR) is None
    with pytest.raises(ValueError):
        chain.end_period({}, ending)  # a period that would not move forward


def test_the_auditor_starts_every_partitions_chain_then_ends_their_periods_together() -> None:
    application, clock = TroveApplication(), Clock(START)
    salts = {EXISTS: [0, 0, 0], QUOTA: [0, 0, 0]}
    auditor = UsageAuditor(application, {EXISTS: HOUR, QUOTA: 600}, salts, server_ip="192.0.2.1", clock=clock)
    assert auditor.tick() == 6, "each kind's chain on each partition is started"
    assert auditor.tick() == 0
    clock.now += timedelta(minutes=10)  # 10:30:05: a quota period (10 minutes) has ended, no exists period
    assert auditor.tick() == 3
    assert _periods(application, QUOTA, 2, 0) == [("2026-12-02T10:20:00+00:00", "2026-12-02T10:30:00+00:00")]
    assert _periods(application, EXISTS, 2, 0) == []
    clock.now += timedelta(hours=1)
    assert auditor.tick() == 6
    assert _periods(application, EXISTS, 1, 0) == [("2026-12-02T10:00:00+00:00", "2026-12-02T11:00:00+00:00")]
    assert _periods(application, QUOTA, 0, 0)[-1] == ("2026-12-02T10:30:00+00:00", "2026-12-02T11:30:00+00:00"), \
        "after a gap, one period covers it: contiguous, not one per missed interval"
    [ended] = [to_public_event(e) for e in application.events.get(audit_id(EXISTS, 1, 0))][-1:]
    assert ended.data["context"]["server_type"] == "taskmanager" and ended.tenant_id is None


class _RacingApplication(TroveApplication):
    """Lets a rival task manager tick between this one's reading the chains and saving them."""

    rival: UsageAuditor | None = None

    def save(self, *aggregates, **kwargs):  # type: ignore[no-untyped-def]
        rival, self.rival = self.rival, None
        if rival is not None:
            rival.tick()
        return super().save(*aggregates, **kwargs)


def test_two_task_managers_ticking_at_once_record_each_period_once() -> None:
    application, clock = _RacingApplication(), Clock(START)
    salts = {EXISTS: [0, 0]}
    first = UsageAuditor(application, {EXISTS: HOUR}, salts, clock=clock)
    second = UsageAuditor(application, {EXISTS: HOUR}, salts, clock=clock)
    assert first.tick() == 2
    clock.now += timedelta(hours=1)
    application.rival = second
    assert first.tick() == 0, "the rival saved first; this one's write conflicts and is dropped"
    assert second.tick() == 0 and first.tick() == 0, "both then find the period ended"
    for partition in (0, 1):
        assert _periods(application, EXISTS, partition, 0) == [
            ("2026-12-02T10:00:00+00:00", "2026-12-02T11:00:00+00:00")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=3 * HOUR), st.booleans()), min_size=1, max_size=25),
       st.sampled_from([60, 900, HOUR]))
def test_periods_are_contiguous_and_aligned_whatever_the_ticks(steps: list[tuple[int, bool]], interval: int) -> None:
    application, clock = TroveApplication(), Clock(START)
    salts = {EXISTS: [0]}
    auditors = [UsageAuditor(application, {EXISTS: interval}, salts, clock=clock) for _ in range(2)]
    for advance, which in steps:
        clock.now += timedelta(seconds=advance)
        auditors[which].tick()
    periods = _periods(application, EXISTS, 0, 0)
    began = next(iter(application.events.get(audit_id(EXISTS, 0, 0)))).began_at
    edges = [began] + [ending for _, ending in periods]
    assert [beginning for beginning, _ in periods] == edges[:-1], "each period begins where the last ended"
    assert all(datetime.fromisoformat(a) < datetime.fromisoformat(b) for a, b in itertools.pairwise(edges))
    assert all(int(datetime.fromisoformat(edge).timestamp()) % interval == 0 for edge in edges)
    assert datetime.fromisoformat(edges[-1]) > clock.now - timedelta(seconds=interval), \
        "nothing older than one interval is left open"


def test_each_chain_id_lands_on_its_own_partition_under_the_producers_partitioner() -> None:
    for kind in (EXISTS, QUOTA):
        for partitions in (1, 4, 12):
            salts = audit_salts(kind, partitions)
            for partition, salt in enumerate(salts):
                key = str(audit_id(kind, partition, salt)).encode()
                assert partition_of(key.decode(), partitions) == partition
                assert DefaultPartitioner().partition("t", key, key, None, None, _Cluster(partitions)) == partition


class _Cluster:
    """What kafka-python's partitioner asks of its cluster metadata."""

    def __init__(self, partitions: int) -> None:
        self._partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, _topic: str) -> set[int]:
        return self._partitions
