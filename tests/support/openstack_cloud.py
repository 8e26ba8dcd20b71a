"""A fake OpenStack cloud for driver tests: openstacksdk's own Keystone catalog fixture behind requests_mock.

``keystone()`` yields the mocker, with Keystone's discovery and token answered, and a real
``openstack.connection.Connection`` that authenticates against it; each test registers the service
calls it expects and asserts on ``mocker.request_history``. The cloud is a fake: none runs here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import openstack
import requests_mock
from openstack.fixture import connection as os_fixture

PROJECT = "p1"
IDENTITY = "https://identity.example.com"
AUTH = {"auth_url": IDENTITY, "username": "trove", "password": "not-a-secret",
        "project_name": "service", "user_domain_name": "Default", "project_domain_name": "Default"}


@contextmanager
def keystone() -> Iterator[tuple[requests_mock.Mocker, openstack.connection.Connection]]:
    fixture = os_fixture.ConnectionFixture(project_id=PROJECT)
    fixture.setUp()
    try:
        with requests_mock.Mocker() as mocker:
            mocker.get(f"{IDENTITY}/", json={"version": {
                "id": "v3", "status": "stable", "links": [{"rel": "self", "href": f"{IDENTITY}/v3/"}]}})
            mocker.post(f"{IDENTITY}/v3/auth/tokens", json=fixture.v3_token, headers={"X-Subject-Token": "token"})
            yield mocker, openstack.connection.Connection(region_name="RegionOne", auth=AUTH,
                                                          identity_api_version="3")
    finally:
        fixture.cleanUp()
