"""The billing ledger of the running stack: an instance's life billed by flavor, agreeing with what the
trove.instance.exists meter would bill, through `trove-es billing report` and the admin usage API."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from tests.e2e.conftest import STACK_SETTINGS
from tests.e2e.full_stack import FullStack
from tests.e2e.test_notifications import _notifications, _seconds, _usage_of

pytestmark = pytest.mark.integration


def test_the_billing_report_bills_each_flavor_and_agrees_with_the_exists_periods(stack: FullStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = stack.token(tenant, "dave")
    started = datetime.now(UTC) - timedelta(seconds=1)
    instance_id = stack.create(tenant, token, "ledger", size=2)
    interval = int(STACK_SETTINGS["TROVE_ES_EXISTS_NOTIFICATION_INTERVAL_S"])
    _notifications(stack, _usage_of(instance_id, {"trove.instance.exists"}), expected=2)  # a few periods go by
    code, _, _ = stack.call("POST", f"/v1.0/{tenant}/instances/{instance_id}/action", token,
                            {"resize": {"flavorRef": "3"}})
    assert code == 202
    stack.wait(lambda: _flavor(stack, tenant, token, instance_id) == "3", "the flavor resize")
    stack.wait_status(tenant, token, instance_id, "ACTIVE")
    _notifications(stack, _usage_of(instance_id, {"trove.instance.exists"}), expected=4)
    code, _, _ = stack.call("DELETE", f"/v1.0/{tenant}/instances/{instance_id}", token)
    assert code == 202
    stack.wait_status(tenant, token, instance_id, 404)
    _notifications(stack, _usage_of(instance_id, {"trove.instance.delete"}), expected=1)
    # A window reaching past now: a segment still open would bill up to each moment it is asked.
    finished = datetime.now(UTC) + timedelta(minutes=5)

    window = {"start": started.isoformat(), "end": finished.isoformat(), "project_id": tenant}

    def billed() -> dict:
        code, answer, _ = stack.call("GET", f"/v1.0/admin/mgmt/usage?{_query(window)}", stack.admin_token)
        assert code == 200, answer
        return answer["usage"]

    # The ledger consumes the topics on its own; once it has the delete, what it bills stops growing.
    totals: list[float] = []

    def settled() -> bool:
        totals.append(billed()["totals"]["instance_seconds"])
        return len(totals) > 1 and totals[-1] == totals[-2] > 0

    stack.wait(settled, "the ledger to bill the delete")
    usage = billed()
    by_flavor = {line["flavor_id"]: line for line in usage["instances"]}
    assert set(by_flavor) == {"2", "3"} and {line["instance_id"] for line in usage["instances"]} == {instance_id}
    assert by_flavor["2"]["instance_type"] == "m1.small" and by_flavor["3"]["instance_type"] == "m1.medium"
    assert all(line["datastore"] == "mysql" for line in usage["instances"])
    for line in usage["instances"]:
        assert line["volume_gb_seconds"] == pytest.approx(2 * line["instance_seconds"], abs=0.01)
    exists = _notifications(stack, _usage_of(instance_id, {"trove.instance.exists"}), expected=1000, timeout_s=5)
    metered = sum(_seconds(n["payload"]["audit_period_ending"]) - _seconds(n["payload"]["audit_period_beginning"])
                  for n in exists)
    ledger = usage["totals"]["instance_seconds"]
    assert abs(ledger - metered) <= interval, (ledger, metered, interval)

    report = subprocess.run([sys.executable, "-m", "adapters.cli", "billing", "report", "--tenant", tenant,
                             "--from", window["start"], "--to", window["end"], "--format", "json"],
                            env=stack.env, capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["usage"] == usage["instances"]
    table = subprocess.run([sys.executable, "-m", "adapters.cli", "billing", "report", "--tenant", tenant,
                            "--from", "yesterday", "--to", window["end"]], env=stack.env, capture_output=True,
                           text=True, timeout=60)
    assert table.returncode == 2 and "ISO 8601" in table.stderr


def _flavor(stack: FullStack, tenant: str, token: str, instance_id: str) -> str | None:
    shown = stack.show(tenant, token, instance_id)
    return shown["flavor"]["id"] if isinstance(shown, dict) else None


def _query(params: dict[str, str]) -> str:
    return urlencode(params)
