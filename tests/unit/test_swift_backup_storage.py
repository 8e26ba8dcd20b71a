"""Swift backup storage against a faked Swift: temp URLs for guests, stat, delete, and errors that say what to do."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from hashlib import sha1
from typing import Any
from urllib.parse import parse_qs, urlsplit

import openstack
import pytest
import requests_mock

from adapters.backup_storage.swift import SwiftBackupStorage
from services.ports import BackupStorageError, StoredBackup
from tests.support.openstack_cloud import PROJECT, keystone

ACCOUNT = f"https://object-store.example.com/v1/{PROJECT}"
CONTAINER = "trove-es-backups"
KEY = "configured-temp-url-key"
LOCATION = f"swift://{CONTAINER}/tenant1/backup1.gz"
OBJECT = f"{ACCOUNT}/{CONTAINER}/tenant1/backup1.gz"


class Swift:
    def __init__(self, mocker: requests_mock.Mocker, connection: openstack.connection.Connection) -> None:
        self.mocker = mocker
        self.connection = connection

    def storage(self, temp_url_key: str = KEY) -> SwiftBackupStorage:
        return SwiftBackupStorage(self.connection, container=CONTAINER, temp_url_key=temp_url_key,
                                  temp_url_lifetime_s=600)

    def account(self, primary: str | None = None, secondary: str | None = None) -> None:
        headers = {"X-Account-Object-Count": "0"}
        if primary:
            headers["X-Account-Meta-Temp-Url-Key"] = primary
        if secondary:
            headers["X-Account-Meta-Temp-Url-Key-2"] = secondary
        self.mocker.head(f"{ACCOUNT}/", status_code=204, headers=headers)

    def calls(self) -> list[str]:
        return [f"{r.method} {r.url}" for r in self.mocker.request_history if "identity.example.com" not in r.url]

    def requests(self, method: str) -> list[Any]:
        return [r for r in self.mocker.request_history if r.method == method and "identity" not in r.url]


@pytest.fixture
def swift() -> Iterator[Swift]:
    with keystone() as (mocker, connection):
        yield Swift(mocker, connection)


def signed_for(url: str, method: str, key: str) -> bool:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    expires = query["temp_url_expires"][0]
    expected = hmac.new(key.encode(), f"{method}\n{expires}\n{parts.path}".encode(), sha1).hexdigest()
    return query["temp_url_sig"] == [expected]


def test_an_upload_target_is_a_put_temp_url_in_the_container_made_on_first_use(swift: Swift) -> None:
    swift.mocker.head(f"{ACCOUNT}/{CONTAINER}", status_code=404)
    swift.mocker.put(f"{ACCOUNT}/{CONTAINER}", status_code=201)
    swift.account()  # no key yet: the configured one is set
    swift.mocker.post(f"{ACCOUNT}/", status_code=204)

    target = swift.storage().upload_target("tenant1", "backup1")

    assert (target.kind, target.location) == ("url", LOCATION)
    assert target.url is not None and target.url.startswith(f"{OBJECT}?temp_url_sig=")
    assert signed_for(target.url, "PUT", KEY) and not signed_for(target.url, "GET", KEY)
    assert swift.calls() == [f"HEAD {ACCOUNT}/{CONTAINER}", f"PUT {ACCOUNT}/{CONTAINER}", f"HEAD {ACCOUNT}/",
                                 f"POST {ACCOUNT}/", f"HEAD {ACCOUNT}/"]  # the SDK reads the account back
    assert swift.requests("POST")[0].headers["X-Account-Meta-Temp-URL-Key"] == KEY


def test_a_download_target_is_a_get_temp_url_signed_with_the_accounts_key(swift: Swift) -> None:
    swift.account(primary=KEY)

    target = swift.storage().download_target(LOCATION)

    assert target.location == LOCATION and target.url is not None
    assert target.url.startswith(f"{OBJECT}?") and signed_for(target.url, "GET", KEY)
    assert swift.calls() == [f"HEAD {ACCOUNT}/"]  # the key is there already: nothing set


def test_a_key_someone_else_set_stays_and_the_configured_one_takes_the_free_slot(swift: Swift) -> None:
    swift.account(primary="another-services-key")
    swift.mocker.post(f"{ACCOUNT}/", status_code=204)

    target = swift.storage().download_target(LOCATION)

    assert target.url is not None and signed_for(target.url, "GET", KEY)
    posted = swift.requests("POST")[0].headers
    assert posted["X-Account-Meta-Temp-URL-Key-2"] == KEY and "X-Account-Meta-Temp-URL-Key" not in posted


def test_without_any_key_the_error_names_the_setting(swift: Swift) -> None:
    swift.account()

    with pytest.raises(BackupStorageError, match="TROVE_ES_SWIFT_TEMP_URL_KEY"):
        swift.storage(temp_url_key="").download_target(LOCATION)


def test_both_slots_taken_by_other_keys_is_an_error_that_never_shows_a_key(swift: Swift) -> None:
    swift.account(primary="key-one", secondary="key-two")

    with pytest.raises(BackupStorageError) as raised:
        swift.storage().download_target(LOCATION)

    assert not any(secret in str(raised.value) for secret in (KEY, "key-one", "key-two"))
    assert not swift.requests("POST")


def test_stat_reports_the_stored_size_or_none(swift: Swift) -> None:
    swift.mocker.head(OBJECT, [{"status_code": 200, "headers": {"Content-Length": "1234", "Etag": "abc"}},
                               {"status_code": 404}])
    storage = swift.storage()

    assert storage.stat(LOCATION) == StoredBackup(location=LOCATION, size=1234)
    assert storage.stat(LOCATION) is None
    assert swift.calls() == [f"HEAD {OBJECT}", f"HEAD {OBJECT}"]


def test_delete_deletes_the_object_and_a_missing_one_is_no_error(swift: Swift) -> None:
    # The SDK looks first whether the object is a static large object, to delete its segments with it.
    swift.mocker.head(OBJECT, [{"status_code": 200, "headers": {"Content-Length": "1234"}}, {"status_code": 404}])
    swift.mocker.delete(OBJECT, status_code=204)
    storage = swift.storage()

    storage.delete(LOCATION)
    storage.delete(LOCATION)

    assert swift.calls() == [f"HEAD {OBJECT}", f"DELETE {OBJECT}", f"HEAD {OBJECT}"]


def test_a_refusal_says_what_to_do(swift: Swift) -> None:
    swift.mocker.head(OBJECT, status_code=403)

    with pytest.raises(BackupStorageError, match=r"could not look at .*role that may use Swift"):
        swift.storage().stat(LOCATION)


def test_a_location_of_another_storage_is_refused() -> None:
    with pytest.raises(BackupStorageError, match="not a Swift backup location"):
        SwiftBackupStorage(object(), container=CONTAINER).stat("/var/backups/tenant1/backup1.gz")  # type: ignore[arg-type]
