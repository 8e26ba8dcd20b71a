"""Databases, users and root through the API (real SQLite stores, projections applied inline; the guest's
answer recorded as the conductor would): Trove's routes and bodies, validation per datastore, and lists
that show what the guest did, never what was merely asked."""

from __future__ import annotations

from typing import Any

import pytest

from tests.rest.harness import TENANT, Api

CONDUCTOR = {"request_id": "req-conductor", "tenant_id": "system", "server_type": "conductor"}


def _instance(api: Api, datastore: str = "mysql", **extra: Any) -> str:
    created = api.create(datastore={"type": datastore}, **extra)
    api.make_active(created["id"])
    return created["id"]


def _guest_answers(api: Api, instance_id: str, ok: bool = True) -> None:
    """The guest's result for the open operation, closed as the conductor closes it."""
    def close(instance: Any) -> None:
        context = instance.operation["context"] | {"server_type": "conductor"}
        if ok:
            instance.succeed(context)
        else:
            instance.fail(context, message="The guest could not do it.", traceback=["GuestError: no"])
    api.instances.record(instance_id, close)
    api.projector.catch_up()


def _path(instance_id: str, rest: str = "") -> str:
    return f"/v1.0/{TENANT}/instances/{instance_id}{rest}"


def test_databases_are_listed_once_the_guest_has_created_them(api: Api) -> None:
    instance_id = _instance(api)
    answer = api.post(_path(instance_id, "/databases"),
                      json={"databases": [{"name": "sales", "character_set": "utf8mb4"}, {"name": "hr"}]})
    assert answer.status_code == 202 and answer.text == ""
    api.projector.catch_up()
    assert api.get(_path(instance_id, "/databases")).json == {"databases": []}, "asked is not done"
    _guest_answers(api, instance_id)
    assert api.get(_path(instance_id, "/databases")).json == {"databases": [{"name": "hr"}, {"name": "sales"}]}
    page = api.get(_path(instance_id, "/databases"), params={"limit": "1"}).json
    assert page["databases"] == [{"name": "hr"}] and "marker=hr" in page["links"][0]["href"]

    assert api.delete(_path(instance_id, "/databases/sales")).status_code == 202
    _guest_answers(api, instance_id, ok=False)
    assert [d["name"] for d in api.get(_path(instance_id, "/databases")).json["databases"]] == ["hr", "sales"], \
        "a failed drop leaves the database listed"
    assert api.delete(_path(instance_id, "/databases/nothing")).status_code == 404


def test_users_their_access_and_renames(api: Api) -> None:
    instance_id = _instance(api, databases=[{"name": "sales"}],
                            users=[{"name": "ann", "password": "pw-1", "databases": [{"name": "sales"}]}])
    users = api.get(_path(instance_id, "/users")).json["users"]
    assert users == [{"name": "ann", "host": "%", "databases": [{"name": "sales"}]}], "the create's users count"

    assert api.post(_path(instance_id, "/users"), json={"users": [
        {"name": "bob", "password": "pw-2", "host": "10.0.0.%"}]}).status_code == 202
    _guest_answers(api, instance_id)
    assert api.get(_path(instance_id, "/users/bob@10.0.0.%25")).json == {
        "user": {"name": "bob", "host": "10.0.0.%", "databases": []}}
    assert api.get(_path(instance_id, "/users/bob")).status_code == 404, "bob@% is another user"

    assert api.put(_path(instance_id, "/users/bob@10.0.0.%25/databases"),
                   json={"databases": [{"name": "sales"}]}).status_code == 202
    _guest_answers(api, instance_id)
    assert api.get(_path(instance_id, "/users/bob@10.0.0.%25/databases")).json == {"databases": [{"name": "sales"}]}
    assert api.delete(_path(instance_id, "/users/bob@10.0.0.%25/databases/sales")).status_code == 202
    _guest_answers(api, instance_id)
    assert api.get(_path(instance_id, "/users/bob@10.0.0.%25/databases")).json == {"databases": []}

    assert api.put(_path(instance_id, "/users/ann"), json={"user": {"name": "anne", "password": "pw-3"}}
                   ).status_code == 202
    _guest_answers(api, instance_id)
    users = api.get(_path(instance_id, "/users")).json["users"]
    names = [(u["name"], [d["name"] for d in u["databases"]]) for u in users]
    assert names == [("anne", ["sales"]), ("bob", [])], "a rename keeps the user's access"
    assert api.delete(_path(instance_id, "/users/anne")).status_code == 202
    _guest_answers(api, instance_id)
    assert [u["name"] for u in api.get(_path(instance_id, "/users")).json["users"]] == ["bob"]


def test_no_password_reaches_an_event_or_a_view(api: Api) -> None:
    instance_id = _instance(api, users=[{"name": "ann", "password": "create-s3cret"}])
    api.post(_path(instance_id, "/users"), json={"users": [{"name": "cy", "password": "user-s3cret"}]})
    _guest_answers(api, instance_id)
    api.put(_path(instance_id, "/users"), json={"users": [{"name": "cy", "password": "changed-s3cret"}]})
    _guest_answers(api, instance_id)
    root = api.post(_path(instance_id, "/root"))
    assert root.status_code == 200 and root.headers["Cache-Control"] == "no-store"
    password = root.json["user"]["password"]
    assert root.json["user"]["name"] == "root" and len(password) == 36
    stored = [n.state for n in api.instances.recorder.select_notifications(1, 10_000)]
    for secret in (b"create-s3cret", b"user-s3cret", b"changed-s3cret", password.encode()):
        assert not any(secret in state for state in stored)


def test_root_is_enabled_with_a_password_shown_once_and_disabled(api: Api) -> None:
    instance_id = _instance(api, datastore="postgresql")
    assert api.get(_path(instance_id, "/root")).json == {"rootEnabled": False}
    assert api.delete(_path(instance_id, "/root")).status_code == 404
    chosen = api.post(_path(instance_id, "/root"), json={"password": "my-own-root-pw"})
    assert chosen.json == {"user": {"name": "postgres", "password": "my-own-root-pw"}}, "Trove's PostgreSQL root"
    _guest_answers(api, instance_id)
    assert api.get(_path(instance_id, "/root")).json == {"rootEnabled": True}
    assert api.delete(_path(instance_id, "/root")).status_code == 204
    _guest_answers(api, instance_id)
    assert api.get(_path(instance_id, "/root")).json == {"rootEnabled": False}


@pytest.mark.parametrize(("datastore", "path", "body", "message"), [
    ("mysql", "/databases", {"databases": [{"name": "mysql"}]}, "'mysql' is a reserved database name."),
    ("mysql", "/databases", {"databases": [{"name": "x" * 65}]}, "between 1 and 64"),
    ("postgresql", "/databases", {"databases": [{"name": "x" * 64}]}, "Max length = 63"),
    ("mysql", "/databases", {"databases": [{"name": "a"}, {"name": "a"}]}, "more than once: a"),
    ("mysql", "/databases", {"databases": [{"name": "a", "collate": "x;drop"}]}, "not a valid collation"),
    ("postgresql", "/databases", {"databases": [{"name": "template1"}]}, "reserved database name"),
    ("mysql", "/users", {"users": [{"name": "os_admin", "password": "p"}]}, "'os_admin' is a reserved user name."),
    ("postgresql", "/users", {"users": [{"name": "postgres", "password": "p"}]}, "reserved user name"),
    ("postgresql", "/users", {"users": [{"name": "u", "password": "p", "host": "10.0.0.1"}]}, "have no host"),
    ("mysql", "/users", {"users": [{"name": "u", "password": "p", "host": "a b"}]}, "not a valid host"),
    ("mysql", "/users", {"users": [{"name": "u"}]}, "password"),
    ("mysql", "/databases", {"databases": []}, "databases"),
])
def test_a_bad_name_is_a_400_that_records_nothing(api: Api, datastore: str, path: str, body: dict,
                                                  message: str) -> None:
    instance_id = _instance(api, datastore=datastore)
    before = api.stored_events()
    answer = api.post(_path(instance_id, path), json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json["badRequest"]["message"]
    assert api.stored_events() == before


def test_one_change_at_a_time_and_none_on_a_building_instance(api: Api) -> None:
    building = api.create()["id"]
    answer = api.post(_path(building, "/databases"), json={"databases": [{"name": "a"}]})
    assert answer.status_code == 422 and "not currently available" in answer.json["unprocessableEntity"]["message"]
    instance_id = _instance(api)
    assert api.post(_path(instance_id, "/databases"), json={"databases": [{"name": "a"}]}).status_code == 202
    busy = api.post(_path(instance_id, "/databases"), json={"databases": [{"name": "b"}]})
    assert busy.status_code == 422 and "busy with its database_create" in busy.json["unprocessableEntity"]["message"]
    other = api.get(f"/v1.0/someone-else/instances/{instance_id}/databases", token=api.token("someone-else"))
    assert other.status_code == 404, "another tenant's instance does not exist for them"


@pytest.mark.parametrize(("datastore", "extra", "message"), [
    ("mysql", {"users": [{"name": "root", "password": "p"}]}, "'root' is a reserved user name."),
    ("postgresql", {"databases": [{"name": "postgres"}]}, "'postgres' is a reserved database name."),
    ("postgresql", {"users": [{"name": "u", "password": "p", "host": "192.0.2.1"}]}, "have no host"),
])
def test_a_create_names_its_databases_and_users_as_its_datastore_takes_them(api: Api, datastore: str, extra: dict,
                                                                            message: str) -> None:
    before = api.stored_events()
    body = {"instance": {"name": "db", "flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": datastore},
                         **extra}}
    answer = api.post(f"/v1.0/{TENANT}/instances", json=body)
    assert answer.status_code == 400 and message in answer.json["badRequest"]["message"], answer.text
    assert api.stored_events() == before


def test_changes_are_checked_against_the_instance_not_a_lagging_list(api: Api) -> None:
    instance_id = _instance(api)
    assert api.post(_path(instance_id, "/databases"), json={"databases": [{"name": "fresh"}]}).status_code == 202
    api.instances.record(instance_id, lambda i: i.succeed(i.operation["context"]))  # the guest did it...
    # ...and the list has not caught up yet, yet the database can be dropped at once.
    assert api.delete(_path(instance_id, "/databases/fresh")).status_code == 202
    _guest_answers(api, instance_id)
    assert api.delete(_path(instance_id, "/databases/fresh")).status_code == 404
    assert api.delete(_path(instance_id, "/users/nobody")).status_code == 404
    assert api.put(_path(instance_id, "/users/nobody/databases"), json={"databases": [{"name": "x"}]}
                   ).status_code == 404
    assert api.post(_path(instance_id, "/users"), json={"users": [{"name": "u", "password": "p"}]}).status_code == 202
    _guest_answers(api, instance_id)
    again = api.post(_path(instance_id, "/users"), json={"users": [{"name": "u", "password": "p"}]})
    assert again.status_code == 400 and "u@% already exists" in again.json["badRequest"]["message"]
    assert api.delete(_path(instance_id, "/users/u/databases/none")).status_code == 404
