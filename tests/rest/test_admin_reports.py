"""Admin read-model queries through the API, on a seeded population (real SQLite stores, projections
applied inline): the mgmt list's filters, stuck builds, silent guests, faults by message, latency."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import insert

from adapters.sql.engine import create_sql_engine
from adapters.sql.schema import create_tables
from domain.context import OperationContext
from domain.statuses import KNOWN_SERVER_STATUSES, ServiceStatus, TaskStatus, visible_status
from projections.guest_heartbeats import record_heartbeats
from projections.instance_reports import InstanceFilter, InstanceReports
from projections.instance_view import InstanceViewQueries, instance_view, metadata
from services.ports import GuestLiveness
from tests.rest.harness import TENANT, Api
from tests.support.stack import REPO_ROOT

ADMIN = "/v1.0/admin-project"
TM = OperationContext(request_id="req-tm", tenant_id="system", server_type="taskmanager")


def _fail(api: Api, instance_id: str, message: str, task: str = "BUILDING_ERROR_SERVER") -> None:
    api.instances.record(instance_id, lambda i: i.fail({**i.operation["context"], "server_type": "taskmanager"},
                                                        message=message, traceback=["Traceback", "Error"], task=task))


def _seed(api: Api) -> dict[str, str]:
    ids = {}
    ids["active"] = api.create("active")["id"]
    api.make_active(ids["active"])
    ids["building"] = api.create("building")["id"]
    ids["pg"] = api.create("pg", datastore={"type": "postgresql"})["id"]
    for name in ("broken-1", "broken-2"):
        ids[name] = api.create(name)["id"]
        _fail(api, ids[name], "No valid host was found.")
    ids["other"] = api.create("other", tenant="t2", token=api.token("t2"))["id"]
    api.make_active(ids["other"])
    api.projector.catch_up()
    return ids


def _names(body: dict) -> list[str]:
    return [instance["name"] for instance in body["instances"]]


def test_the_mgmt_list_filters_by_status_datastore_project_and_pages_within_the_filter(api: Api) -> None:
    _seed(api)
    listed = api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"status": "error"}).json
    assert _names(listed) == ["broken-1", "broken-2"]
    assert all(i["status"] == "ERROR" and i["fault"]["details"] for i in listed["instances"])
    assert _names(api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"status": "ACTIVE"}).json) == [
        "active", "other"]
    assert _names(api.get(f"{ADMIN}/mgmt/instances", token="admin",
                          params={"status": "ACTIVE", "project_id": "t2"}).json) == ["other"]
    assert _names(api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"datastore": "postgresql"}).json) == [
        "pg"]
    first = api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"status": "BUILD", "limit": 1}).json
    assert _names(first) == ["building"] and "status=BUILD&limit=1&marker=" in first["links"][0]["href"]
    marker = first["instances"][0]["id"]
    rest = api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"status": "BUILD", "limit": 1, "marker": marker})
    assert _names(rest.json) == ["pg"]
    shown = api.get(f"{ADMIN}/mgmt/instances", token="admin", params={"include_clustered": "true"}).json
    assert len(shown["instances"]) == 6
    assert shown["instances"][0]["guest_status"] == {"state_description": "healthy"}
    for bad in ({"status": "SLEEPY"}, {"marker": "not-an-instance"}, {"datastore": "x" * 65}):
        answer = api.get(f"{ADMIN}/mgmt/instances", token="admin", params=bad)
        assert answer.status_code == 400 and "badRequest" in answer.json, bad
    assert api.get(f"/v1.0/{TENANT}/mgmt/instances").status_code == 403


def test_stuck_builds_faults_by_message_and_operation_latency(api: Api) -> None:
    ids = _seed(api)
    stuck = api.get(f"{ADMIN}/mgmt/reports/stuck-builds", token="admin", params={"minutes": 0}).json
    assert _names(stuck) == ["building", "pg"], "still building, and no build error"
    assert api.get(f"{ADMIN}/mgmt/reports/stuck-builds", token="admin").json["instances"] == [], \
        "nothing has been building for the default 30 minutes"
    assert api.get(f"{ADMIN}/mgmt/reports/stuck-builds", token="admin", params={"minutes": "soon"}).status_code == 400

    window = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
    report = api.get(f"{ADMIN}/mgmt/reports/faults", token="admin", params=window).json
    [group] = report["faults"]
    assert (group["message"], group["faults"], group["instances"]) == ("No valid host was found.", 2, 2)
    assert (group["datastore"], group["datastore_version"]) == ("mysql", "8.0")
    assert api.get(f"{ADMIN}/mgmt/reports/faults", token="admin",
                   params={"start": "2000-01-01", "end": "2000-01-02"}).json["faults"] == []

    api.post(f"/v1.0/{TENANT}/instances/{ids['active']}/action", json={"restart": {}})
    api.instances.record(ids["active"], lambda i: i.succeed(TM.recorded()))
    api.projector.catch_up()
    latency = {row["operation"]: row for row in
               api.get(f"{ADMIN}/mgmt/reports/operation-latency", token="admin", params=window).json["operations"]}
    assert (latency["create"]["count"], latency["create"]["failed"]) == (4, 2), "the two built and the two failed"
    assert latency["restart"]["count"] == 1 and latency["restart"]["failed"] == 0
    assert 0 <= latency["create"]["p50_s"] <= latency["create"]["p95_s"] <= latency["create"]["max_s"]
    for path in ("faults", "operation-latency"):
        answer = api.get(f"{ADMIN}/mgmt/reports/{path}", token="admin", params={"start": "2000-01-01"})
        assert answer.status_code == 400
        assert api.get(f"/v1.0/{TENANT}/mgmt/reports/{path}", params=window).status_code == 403


def test_silent_guests_are_those_with_neither_a_heartbeat_nor_a_status_change_within_the_expiry(
        tmp_path: Path) -> None:
    api = Api(tmp_path, environ={"TROVE_ES_AGENT_HEARTBEAT_EXPIRY_S": "0.5"})
    try:
        quiet, heard = api.create("quiet")["id"], api.create("heard")["id"]
        never_prepared = api.create("never")["id"]
        for instance_id in (quiet, heard):
            api.make_active(instance_id)
        time.sleep(1.0)  # past the expiry: not a timed assertion, the wait the expiry asks for
        with api.engine.begin() as connection:
            record_heartbeats(connection, [GuestLiveness(heard, "healthy", last_seen_at=time.time(),
                                                         sent_at=time.time())])
        silent = api.get(f"{ADMIN}/mgmt/reports/silent-guests", token="admin").json["instances"]
        assert [i["id"] for i in silent] == [quiet], "never_prepared has no guest yet; heard just reported"
        assert silent[0]["operating_status"] == "ERROR", "as the API shows it"
        assert never_prepared not in [i["id"] for i in silent]
    finally:
        api.close()


def test_the_status_filter_selects_exactly_the_rows_that_show_that_status(tmp_path: Path) -> None:
    engine = create_sql_engine(f"sqlite:///{tmp_path}/view.db")
    create_tables(engine, metadata)
    combos = list(itertools.product(TaskStatus, (*KNOWN_SERVER_STATUSES, None, "MIGRATING-SOMEWHERE")))
    with engine.begin() as connection:
        connection.execute(insert(instance_view), [
            {"id": f"i-{n}", "tenant_id": "t", "name": "x", "task_status": task.name, "server_status": server,
             "service_status": ServiceStatus.HEALTHY.description, "flavor": {}, "datastore": "mysql",
             "datastore_version": "8.0", "datastore_version_id": "v", "region": "r", "addresses": [],
             "created_at": f"2026-01-01T00:00:{n // 100:02d}.{n:06d}", "updated_at": "2026", "deleted": False,
             "version": 1}
            for n, (task, server) in enumerate(combos)])
    reports = InstanceReports(engine, InstanceViewQueries(engine, 90.0), 90.0)
    for status in {visible_status(task, server) for task, server in combos}:
        chosen = {r.id for r in reports.instances(InstanceFilter(status=status), limit=10_000)}
        expected = {f"i-{n}" for n, (task, server) in enumerate(combos) if visible_status(task, server) == status}
        assert chosen == expected, status
    engine.dispose()


def _admin(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters.cli", "admin", *args], cwd=REPO_ROOT,
                          env={**os.environ, "TROVE_ES_DATA_DIR": str(data_dir)}, capture_output=True, text=True,
                          timeout=60)


def test_the_admin_commands_answer_the_same_questions_from_the_read_models(api: Api, tmp_path: Path) -> None:
    ids = _seed(api)
    listed = _admin(tmp_path, "instances", "--status", "error", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["name"], r["fault"]) for r in json.loads(listed.stdout)] == [
        ("broken-1", "No valid host was found."), ("broken-2", "No valid host was found.")]
    table = _admin(tmp_path, "instances", "--project", "t2")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["id", "tenant_id", "name"]
    assert ids["other"] in table.stdout and ids["active"] not in table.stdout
    [shown] = json.loads(_admin(tmp_path, "show", ids["broken-1"], "--format", "json").stdout)
    assert shown["status"] == "ERROR" and shown["fault_history"][0]["message"] == "No valid host was found."
    assert shown["fault_history"][0]["details"].startswith("Server type: taskmanager")
    window = ("--from", "2000-01-01", "--to", "2100-01-01", "--format", "json")
    [group] = json.loads(_admin(tmp_path, "faults", *window).stdout)
    assert (group["faults"], group["datastore_version"]) == (2, "8.0")
    latency = {r["operation"]: r for r in json.loads(_admin(tmp_path, "latency", *window).stdout)}
    assert latency["create"]["count"] == 4
    stuck = json.loads(_admin(tmp_path, "stuck-builds", "--minutes", "0", "--format", "json").stdout)
    assert [r["name"] for r in stuck] == ["building", "pg"]
    assert _admin(tmp_path, "silent-guests").stdout.strip() == "(none)"
    wrong = _admin(tmp_path, "instances", "--status", "sleepy")
    assert wrong.returncode == 2 and "--status must be one of" in wrong.stderr
    missing = _admin(tmp_path, "show", "no-such-instance")
    assert missing.returncode == 1 and "no instance" in missing.stderr
    backwards = _admin(tmp_path, "faults", "--from", "2100-01-01", "--to", "2000-01-01")
    assert backwards.returncode == 2 and "later than" in backwards.stderr
