"""The WSGI entry point: built from settings, lazily, once per process, and honest when it cannot be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import falcon.testing

from adapters.rest.keystone import KeystoneAuthenticator
from adapters.rest.local_tokens import LocalTokenAuthority
from adapters.rest.server import seed_catalog
from adapters.rest.wsgi import LazyApplication, build_api, build_authenticator
from adapters.settings import load_settings


def test_build_api_serves_from_settings_alone(tmp_path: Path) -> None:
    settings = load_settings({"TROVE_ES_DATA_DIR": str(tmp_path)})
    assert seed_catalog(settings) > 0
    assert seed_catalog(settings) == 0  # idempotent
    client = falcon.testing.TestClient(build_api(settings))
    token = LocalTokenAuthority.for_data_dir(tmp_path).issue(project_id="p", user_id="u")
    assert client.simulate_get("/v1.0/p/instances", headers={"X-Auth-Token": token}).json == {"instances": []}
    created = client.simulate_post("/v1.0/p/instances", headers={"X-Auth-Token": token}, json={
        "instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "mariadb"}}})
    assert created.status_code == 200, created.text


def test_the_authenticator_follows_the_auth_mode(tmp_path: Path) -> None:
    local = build_authenticator(load_settings({"TROVE_ES_DATA_DIR": str(tmp_path)}))
    assert isinstance(local, LocalTokenAuthority) and (tmp_path / "token.key").exists()
    keystone = build_authenticator(load_settings({"TROVE_ES_DATA_DIR": str(tmp_path), "TROVE_ES_AUTH_MODE": "keystone",
                                                  "TROVE_ES_KEYSTONE_URL": "http://keystone:5000"}))
    assert isinstance(keystone, KeystoneAuthenticator)
    assert keystone.challenge == 'Keystone uri="http://keystone:5000"'


def test_a_failed_build_answers_503_then_recovers() -> None:
    attempts: list[int] = []

    def factory() -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database is not up yet")
        app = falcon.App()

        class Ok:
            def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
                resp.media = {"ok": True}

        app.add_route("/", Ok())
        return app

    client = falcon.testing.TestClient(LazyApplication(factory))
    first = client.simulate_get("/")
    assert first.status_code == 503 and json.loads(first.text)["serviceUnavailable"]["code"] == 503
    assert client.simulate_get("/").json == {"ok": True}
    assert client.simulate_get("/").json == {"ok": True}
    assert len(attempts) == 2, "built once it worked, not per request"
