"""The real app, served by gunicorn through ``trove-es api``, over the embedded SQLite defaults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rest.served import ServedApi


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedApi]:
    api = ServedApi(tmp_path / "var")
    try:
        yield api
    finally:
        code = api.stop()
        assert code == 0, api.log()


def test_gunicorn_serves_versions_and_an_authenticated_create_and_show(served: ServedApi) -> None:
    status, body, headers = served.call("GET", "/")
    assert status == 200 and body["versions"][0]["id"] == "v1.0"
    assert headers["X-Openstack-Request-Id"].startswith("req-")

    token = served.issue_token("t1", "alice")
    status, body, _ = served.call("GET", "/v1.0/t1/instances")
    assert status == 401 and "unauthorized" in body

    status, body, _ = served.call("POST", "/v1.0/t1/instances", token, {"instance": {
        "name": "served", "flavorRef": "2", "volume": {"size": "2"}, "datastore": {"type": "postgresql"}}})
    assert status == 200, body
    created = body["instance"]
    assert created["status"] == "BUILD"
    assert created["links"][0]["href"] == f"{served.url}/v1.0/t1/instances/{created['id']}"
    # Two workers: whichever answers, a show right after the create sees it.
    for _ in range(6):
        status, body, _ = served.call("GET", f"/v1.0/t1/instances/{created['id']}", token)
        assert status == 200 and body["instance"]["name"] == "served"

    status, body, _ = served.call("POST", "/v1.0/t1/instances", token, {"instance": {"name": "x"}})
    assert status == 400 and "badRequest" in body
    assert (served.data_dir / "token.key").stat().st_mode & 0o777 == 0o600
    assert token not in served.log()
