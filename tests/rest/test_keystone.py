"""Keystone mode: tokens validated against Keystone v3 (a stub server here), cached for a while."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from adapters.rest.auth import IdentityUnavailable, InvalidToken
from adapters.rest.keystone import KeystoneAuthenticator
from tests.rest.harness import TENANT, Api


class StubKeystone:
    """Answers ``GET /v3/auth/tokens`` for the tokens it was told about, and counts the questions."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict] = {}
        self.calls: list[tuple[str | None, str | None]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.calls.append((self.headers.get("X-Auth-Token"), self.headers.get("X-Subject-Token")))
                token = stub.tokens.get(self.headers.get("X-Subject-Token", ""))
                if self.path != "/v3/auth/tokens" or token is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps({"token": token}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Subject-Token", self.headers["X-Subject-Token"])
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def add(self, token: str, project: str | None, user: str, roles: tuple[str, ...] = ("member",),
            expires_in: timedelta = timedelta(hours=1)) -> None:
        body: dict = {"user": {"id": user, "name": user, "domain": {"id": "default"}},
                      "roles": [{"id": f"r-{r}", "name": r} for r in roles],
                      "expires_at": (datetime.now(UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%S.000000Z")}
        if project:
            body["project"] = {"id": project, "name": project}
        self.tokens[token] = body

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def keystone() -> Iterator[StubKeystone]:
    stub = StubKeystone()
    yield stub
    stub.stop()


@pytest.fixture
def keystone_api(tmp_path: Path, keystone: StubKeystone) -> Iterator[Api]:
    authenticator = KeystoneAuthenticator(keystone.url + "/v3", cache_s=60)
    harness = Api(tmp_path, authenticator=authenticator,
                  environ={"TROVE_ES_AUTH_MODE": "keystone", "TROVE_ES_KEYSTONE_URL": keystone.url + "/v3"})
    yield harness
    harness.close()


def test_a_keystone_token_for_the_tenant_works_and_is_cached(keystone_api: Api, keystone: StubKeystone) -> None:
    keystone.add("ks-user-token", TENANT, "alice")
    for _ in range(3):
        assert keystone_api.get(f"/v1.0/{TENANT}/instances", token="ks-user-token").status_code == 200
    assert keystone.calls == [("ks-user-token", "ks-user-token")]
    created = keystone_api.create(token="ks-user-token")
    assert keystone_api.instances.get(created["id"]).operation["context"]["user_id"] == "alice"


def test_unknown_tokens_are_401_with_keystones_address(keystone_api: Api, keystone: StubKeystone) -> None:
    result = keystone_api.get(f"/v1.0/{TENANT}/instances", token="nobody-knows-me")
    assert result.status_code == 401
    assert result.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}/v3"'
    for token in ("bad\ttoken", "é-token", "x" * 9000):
        assert keystone_api.get(f"/v1.0/{TENANT}/instances", token=token).status_code == 401
    keystone.add("later", TENANT, "bob")
    assert keystone_api.get(f"/v1.0/{TENANT}/instances", token="later").status_code == 200  # refusals not cached


def test_projects_and_roles_come_from_keystone(keystone_api: Api, keystone: StubKeystone) -> None:
    keystone.add("other", "t2", "carol")
    keystone.add("unscoped", None, "dave")
    keystone.add("cloud-admin", "admin-project", "root", roles=("admin", "member"))
    assert keystone_api.get(f"/v1.0/{TENANT}/instances", token="other").status_code == 403
    assert keystone_api.get(f"/v1.0/{TENANT}/instances", token="unscoped").status_code == 403
    assert keystone_api.get(f"/v1.0/{TENANT}/instances", token="cloud-admin").status_code == 200
    assert keystone_api.get(f"/v1.0/{TENANT}/mgmt/instances", token="cloud-admin").status_code == 200
    assert keystone_api.get("/v1.0/t2/mgmt/instances", token="other").status_code == 403


def test_keystone_down_is_503_not_401(keystone_api: Api, keystone: StubKeystone) -> None:
    keystone.stop()
    result = keystone_api.get(f"/v1.0/{TENANT}/instances", token="whatever")
    assert result.status_code == 503
    assert "identity service" in result.json["serviceUnavailable"]["message"]


def test_cache_expires_with_the_token_or_the_setting(keystone: StubKeystone) -> None:
    now = [1000.0]
    authenticator = KeystoneAuthenticator(keystone.url, cache_s=30, clock=lambda: now[0])
    keystone.add("short", "p", "u", expires_in=timedelta(hours=1))
    assert authenticator.authenticate("short").project_id == "p"
    now[0] += 29
    authenticator.authenticate("short")
    assert len(keystone.calls) == 1
    now[0] += 2
    authenticator.authenticate("short")
    assert len(keystone.calls) == 2
    del keystone.tokens["short"]
    now[0] += 31
    with pytest.raises(InvalidToken):
        authenticator.authenticate("short")


def test_an_unreadable_keystone_answer_is_unavailable_not_a_crash(keystone: StubKeystone) -> None:
    keystone.tokens["odd"] = {"user": "not-an-object"}
    with pytest.raises(IdentityUnavailable):
        KeystoneAuthenticator(keystone.url, cache_s=0).authenticate("odd")
