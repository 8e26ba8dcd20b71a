"""The status rules, row by row against Trove's current behaviour (trove-source-behaviour §3)."""

from __future__ import annotations

import pytest

from domain.statuses import ServiceStatus, TaskStatus, action_refusal, operating_status, visible_status


def test_every_code_is_unique_unlike_trove_upgrading_and_restarting() -> None:
    assert len({s.code for s in ServiceStatus}) == len(ServiceStatus)
    assert len({t.code for t in TaskStatus}) == len(TaskStatus)
    assert ServiceStatus.from_description("upgrading") is ServiceStatus.UPGRADING
    assert ServiceStatus.from_description("restarting") is ServiceStatus.RESTARTING


def test_unknown_service_description_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown service status"):
        ServiceStatus.from_description("sleepy")


# (task, server status, backup running) → visible status, in the order Trove's property checks them.
@pytest.mark.parametrize(("task", "server", "backup", "expected"), [
    (TaskStatus.BUILDING_ERROR_SERVER, "ACTIVE", False, "ERROR"),        # any error task wins
    (TaskStatus.BUILDING_ERROR_TIMEOUT_GA, "ACTIVE", False, "ERROR"),
    (TaskStatus.BUILDING, "ERROR", False, "ERROR"),                      # building, Nova says ERROR
    (TaskStatus.BUILDING, "BUILD", False, "BUILD"),
    (TaskStatus.BUILDING, "ACTIVE", False, "BUILD"),                     # building until the guest is healthy
    (TaskStatus.REBOOTING, "ACTIVE", False, "REBOOT"),
    (TaskStatus.RESIZING, "ACTIVE", False, "RESIZE"),
    (TaskStatus.UPGRADING, "ACTIVE", False, "UPGRADE"),
    (TaskStatus.RESTART_REQUIRED, "ACTIVE", False, "RESTART_REQUIRED"),
    (TaskStatus.PROMOTING, "ACTIVE", False, "PROMOTE"),
    (TaskStatus.EJECTING, "ACTIVE", False, "EJECT"),
    (TaskStatus.LOGGING, "ACTIVE", False, "LOGGING"),                    # Trove: AttributeError
    (TaskStatus.DETACHING, "ACTIVE", False, "DETACH"),
    (TaskStatus.DELETING, "ACTIVE", False, "SHUTDOWN"),
    (TaskStatus.DELETING, "SHUTDOWN", False, "SHUTDOWN"),
    (TaskStatus.DELETING, "DELETED", False, "SHUTDOWN"),
    (TaskStatus.DELETING, "ERROR", False, "ERROR"),
    (TaskStatus.NONE, "ACTIVE", True, "BACKUP"),
    (TaskStatus.NONE, "ACTIVE", False, "ACTIVE"),
    (TaskStatus.NONE, "SHUTDOWN", False, "SHUTDOWN"),
    (TaskStatus.NONE, "ERROR", False, "ERROR"),
    (TaskStatus.NONE, "REBOOT", False, "REBOOT"),
    (TaskStatus.NONE, "RESIZE", False, "RESIZE"),
    (TaskStatus.NONE, "BUILD", False, "BUILD"),
    (TaskStatus.NONE, "VERIFY_RESIZE", False, "RESIZE"),
    (TaskStatus.NONE, "SHUTOFF", False, "UNKNOWN"),
    (TaskStatus.NONE, "PAUSED", False, "UNKNOWN"),
    (TaskStatus.MIGRATING, "ACTIVE", False, "ACTIVE"),                   # not mapped: falls through to Nova
    (TaskStatus.UPDATING, "HARD_REBOOT", False, "UNKNOWN"),
])
def test_visible_status(task: TaskStatus, server: str, backup: bool, expected: str) -> None:
    assert visible_status(task, server, backup) == expected


@pytest.mark.parametrize(("task", "server", "service", "expired", "expected"), [
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.HEALTHY, False, "HEALTHY"),
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.RUNNING, False, "ACTIVE"),
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.SHUTDOWN, False, "SHUTDOWN"),
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.CRASHED, False, "SHUTDOWN"),
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.UNKNOWN, False, "ERROR"),              # after reset_status
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.HEALTHY, True, "ERROR"),               # silent guest
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.RESTART_REQUIRED, True, "RESTART_REQUIRED"),
    (TaskStatus.REBOOTING, "ACTIVE", ServiceStatus.HEALTHY, False, ""),              # busy: no verdict
    (TaskStatus.NONE, "SHUTDOWN", ServiceStatus.HEALTHY, False, ""),
    (TaskStatus.BUILDING, "BUILD", ServiceStatus.NEW, True, ""),
])
def test_operating_status(task: TaskStatus, server: str, service: ServiceStatus, expired: bool,
                          expected: str) -> None:
    assert operating_status(task, server, service, expired) == expected


@pytest.mark.parametrize(("task", "server", "service", "backup", "refusal"), [
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.HEALTHY, False, None),
    (TaskStatus.RESTART_REQUIRED, "ACTIVE", ServiceStatus.RESTART_REQUIRED, False, None),
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.SHUTDOWN, False, None),                # may restart it
    (TaskStatus.BUILDING, "BUILD", ServiceStatus.NEW, False, ("instance", "BUILD")),
    (TaskStatus.NONE, "ERROR", ServiceStatus.HEALTHY, False, ("instance", "ERROR")),
    (TaskStatus.REBOOTING, "ACTIVE", ServiceStatus.HEALTHY, False, ("task", "REBOOTING")),
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.UNKNOWN, False, ("datastore", "ERROR")),
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.FAILED, False, ("datastore", "FAILED")),
    (TaskStatus.NONE, "ACTIVE", ServiceStatus.HEALTHY, True, ("instance", "BACKUP")),
])
def test_action_refusal(task: TaskStatus, server: str, service: ServiceStatus, backup: bool,
                        refusal: tuple[str, str] | None) -> None:
    assert action_refusal(task, server, service, backup) == refusal


def test_build_outcome_follows_trove_service_is_active() -> None:
    assert {s for s in ServiceStatus if s.build_outcome is True} == {
        ServiceStatus.RUNNING, ServiceStatus.INSTANCE_READY, ServiceStatus.HEALTHY}
    assert {s for s in ServiceStatus if s.build_outcome is None} == {
        ServiceStatus.NEW, ServiceStatus.BUILDING, ServiceStatus.UNKNOWN, ServiceStatus.DELETED}
    assert ServiceStatus.FAILED.build_outcome is False
