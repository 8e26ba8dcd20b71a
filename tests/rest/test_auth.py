"""Authentication and authorisation with locally signed tokens: the matrix every tenant route obeys."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.rest.auth import InvalidToken
from adapters.rest.local_tokens import KEY_FILE_NAME, LocalTokenAuthority
from adapters.secret_files import load_or_create_key
from tests.rest.harness import TENANT, Api
from tests.support.stack import REPO_ROOT

TENANT_ROUTES = [
    ("GET", f"/v1.0/{TENANT}/instances"), ("GET", f"/v1.0/{TENANT}/instances/detail"),
    ("POST", f"/v1.0/{TENANT}/instances"), ("GET", f"/v1.0/{TENANT}/flavors"),
    ("GET", f"/v1.0/{TENANT}/datastores"), ("GET", f"/v1.0/{TENANT}/limits"),
    ("GET", f"/v1.0/{TENANT}/mgmt/quotas/{TENANT}"), ("GET", f"/v1.0/{TENANT}/mgmt/instances"),
]


@pytest.mark.parametrize(("method", "path"), TENANT_ROUTES)
def test_tenant_routes_need_a_valid_token(api: Api, method: str, path: str) -> None:
    key = load_or_create_key(api.settings.data_dir, KEY_FILE_NAME)
    expired = LocalTokenAuthority(key, clock=lambda: time.time() - 7200).issue(project_id=TENANT, user_id="u1",
                                                                                 ttl_s=3600)
    forged = LocalTokenAuthority(b"another-deployment-key-0123456789abcdef").issue(project_id=TENANT, user_id="u1")
    for token in (None, "", "garbage", "tes1.x.y", expired, forged, "tes1." + "A" * 5000, "tés1.é.é"):
        result = api.request(method, path, token=token, json={})
        assert result.status_code == 401, (token, result.text)
        assert result.headers["WWW-Authenticate"] == 'Token realm="trove-es"'
    assert "expired" in api.request(method, path, token=expired).json["unauthorized"]["message"]


def test_another_projects_token_is_403_and_an_admins_is_not(api: Api) -> None:
    other = api.token("t2")
    assert api.get(f"/v1.0/{TENANT}/instances", token=other).status_code == 403
    assert api.get(f"/v1.0/{TENANT}/instances", token="admin").status_code == 200
    assert api.post(f"/v1.0/{TENANT}/instances", token=other, json={"instance": {}}).status_code == 403


def test_another_tenants_instance_is_404_through_every_route(api: Api) -> None:
    theirs = api.create("theirs", tenant="t2", token=api.token("t2"))
    base = f"/v1.0/{TENANT}/instances/{theirs['id']}"
    assert api.get(base).status_code == 404
    assert api.delete(base).status_code == 404
    assert api.put(base, json={"instance": {"name": "mine-now"}}).status_code == 404
    assert api.post(f"{base}/action", json={"restart": {}}).status_code == 404
    # An admin sees it, under any tenant path.
    assert api.get(base, token="admin").json["instance"]["tenant_id"] == "t2"


def test_mgmt_routes_are_for_admins(api: Api) -> None:
    assert api.get(f"/v1.0/{TENANT}/mgmt/instances").status_code == 403
    assert api.get(f"/v1.0/{TENANT}/mgmt/quotas/t2").status_code == 403
    assert api.put(f"/v1.0/{TENANT}/mgmt/quotas/{TENANT}", json={"quotas": {"instances": 50}}).status_code == 403
    assert api.get("/v1.0/admin-project/mgmt/instances", token="admin").status_code == 200


def test_public_routes_need_no_token(api: Api) -> None:
    for path in ("/", "/v1.0", "/healthcheck", "/v1.0/openapi.json"):
        assert api.get(path, token=None).status_code == 200


def test_an_unusable_tenant_in_the_path_is_400(api: Api) -> None:
    assert api.get(f"/v1.0/{'x' * 65}/instances", token="admin").status_code == 400
    assert api.get("/v1.0/a%20b/instances", token="admin").status_code == 400


def test_the_operation_context_records_who_and_from_where(api: Api) -> None:
    result = api.post(f"/v1.0/{TENANT}/instances", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"},
                      json={"instance": {"name": "x", "flavorRef": 2, "volume": {"size": 1},
                                         "datastore": {"type": "mysql"}}})
    created = result.json["instance"]
    instance = api.instances.get(created["id"])
    context = instance.operation["context"]
    assert context == {"request_id": result.headers["X-Openstack-Request-Id"], "tenant_id": TENANT, "user_id": "u1",
                       "client_ip": "203.0.113.7", "server_ip": "192.0.2.10", "server_type": "api", "roles": []}
    by_admin = api.post(f"/v1.0/{TENANT}/instances", token="admin",
                        json={"instance": {"name": "z", "flavorRef": 2, "volume": {"size": 1},
                                           "datastore": {"type": "mysql"}}})
    assert api.instances.get(by_admin.json["instance"]["id"]).operation["context"]["roles"] == ["admin"], \
        "the caller's roles are recorded (notifications report is_admin from them); the token never is"
    spoofed = api.post(f"/v1.0/{TENANT}/instances", headers={"X-Forwarded-For": "<script>"},
                       json={"instance": {"name": "y", "flavorRef": 2, "volume": {"size": 1},
                                          "datastore": {"type": "mysql"}}})
    assert api.instances.get(spoofed.json["instance"]["id"]).operation["context"]["client_ip"] == "127.0.0.1"


def test_tokens_are_never_stored(api: Api) -> None:
    api.create()
    for event in api.instances.recorder.select_notifications(1, 1000):
        assert api.user_token.encode() not in event.state
        assert b"tes1." not in event.state


def test_the_key_file_is_private_and_shared(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path, KEY_FILE_NAME)
    mode = stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode)
    assert mode == 0o600
    assert load_or_create_key(tmp_path, KEY_FILE_NAME) == key
    assert not [p for p in tmp_path.iterdir() if p.name != KEY_FILE_NAME]


def test_a_tampered_token_is_refused(tmp_path: Path) -> None:
    authority = LocalTokenAuthority.for_data_dir(tmp_path)
    token = authority.issue(project_id="p", user_id="u", roles=["member"])
    assert authority.authenticate(token).roles == ("member",)
    prefix, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["roles"] = ["admin"]
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        authority.authenticate(f"{prefix}.{forged_body}.{signature}")


def test_a_token_verified_once_still_expires(tmp_path: Path) -> None:
    now = [1_000_000.0]
    authority = LocalTokenAuthority(load_or_create_key(tmp_path, KEY_FILE_NAME), clock=lambda: now[0])
    token = authority.issue(project_id="p", user_id="u", ttl_s=60)
    assert authority.authenticate(token).project_id == "p"
    assert authority.authenticate(token).project_id == "p"  # from the cache of verified tokens
    now[0] += 61
    with pytest.raises(InvalidToken, match="expired"):
        authority.authenticate(token)


def test_cli_issues_a_token_and_prints_only_the_token(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TROVE_ES_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "token", "issue", "--data-dir", str(tmp_path), "--project", "p1",
         "--user", "alice", "--role", "admin", "--ttl", "60"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2
    identity = LocalTokenAuthority.for_data_dir(tmp_path).authenticate(token)
    assert (identity.project_id, identity.user_id, identity.is_admin) == ("p1", "alice", True)
    assert token not in result.stderr
