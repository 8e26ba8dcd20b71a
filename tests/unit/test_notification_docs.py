"""docs/notifications.md is what the code would write: the catalogue cannot drift from what is sent."""

from __future__ import annotations

from adapters.notification_docs import PAGE, render, sample_usage
from domain.notifications import API_NOTIFICATIONS


def test_the_committed_catalogue_is_what_the_code_writes() -> None:
    assert PAGE.read_text() == render(), "docs/notifications.md is out of date: run `make docs`"


def test_the_catalogue_lists_every_operation_and_every_usage_notification_with_its_traits() -> None:
    page = render()
    for operation, notification in API_NOTIFICATIONS.items():
        assert f"| `{operation}` | `dbaas.{notification.event_type}.*` |" in page
    samples = sample_usage()
    assert set(samples) == {"trove.instance.create", "trove.instance.modify_volume", "trove.instance.modify_flavor",
                            "trove.instance.delete", "trove.instance.exists", "dbaas.quota"}
    assert "`audit_period_ending` (ISO 8601 time)" in page and "`old_instance_size` (int)" in page
