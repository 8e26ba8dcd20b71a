"""The guest protocol: what round-trips, and what is refused with a reason."""

from __future__ import annotations

import json

import pytest

from adapters.sealed import SealBroken, seal, unseal
from domain import guest_protocol as protocol
from domain.guest_protocol import (
    GuestProtocolError,
    Heartbeat,
    Result,
    Unauthenticated,
    instance_key,
    parse_command,
    parse_guest_message,
    signed,
)
from domain.statuses import ServiceStatus

SECRET = b"a deployment's guest secret"
KEY = instance_key(SECRET, "i-1")


def key_for(instance_id: str) -> bytes:
    return instance_key(SECRET, instance_id)


def _sign(raw: bytes) -> bytes:
    """Signed with i-1's key when it is a JSON object at all (the structure is what these tests check)."""
    try:
        return signed(raw, KEY) if isinstance(json.loads(raw), dict) else raw
    except ValueError:
        return raw


def test_prepare_round_trips_and_carries_a_password_only_sealed() -> None:
    sealed = seal(KEY, "s3cret")
    command = protocol.prepare("i-1", "req-1", 12.5, datastore="mysql", datastore_version="8.0",
                               databases=["app"], users=[{"name": "app_user", "password": "s3cret",
                                                          "databases": ["app"]}, "other"],
                               volume_size=2, passwords={"app_user@%": sealed}, manager="mariadb")
    raw = command.to_json()
    assert b"s3cret" not in raw and b'"password"' not in raw
    parsed = parse_command(signed(raw, KEY), KEY)
    assert parsed == command
    assert (parsed.method, parsed.request_id, parsed.args["manager"]) == ("prepare", "req-1", "mariadb")
    assert parsed.args["users"] == [{"name": "app_user", "host": "%", "databases": ["app"]},
                                    {"name": "other", "host": "%", "databases": []}]
    assert unseal(KEY, parsed.args["passwords"]["app_user@%"]) == "s3cret"
    assert json.loads(raw)["version"] == protocol.PROTOCOL_VERSION


def test_a_sealed_secret_opens_only_with_its_own_instances_key() -> None:
    sealed = seal(instance_key(b"deployment", "i-1"), "s3cret")
    assert "s3cret" not in sealed
    assert unseal(instance_key(b"deployment", "i-1"), sealed) == "s3cret"
    with pytest.raises(SealBroken, match="another instance"):
        unseal(instance_key(b"deployment", "i-2"), sealed)
    with pytest.raises(SealBroken):
        unseal(instance_key(b"deployment", "i-1"), sealed[:-4] + "AAAA")


@pytest.mark.parametrize(("method", "args"), [
    (protocol.RESTART, {}), (protocol.STOP, {}), (protocol.RESIZE_VOLUME, {"new_size": 4}),
    (protocol.RESIZE_FLAVOR, {"flavor": {"id": "3", "ram": 4096}}),
])
def test_every_command_round_trips(method: str, args: dict) -> None:
    command = protocol.command(method, "i-1", "req-9", 1.0, **args)
    assert parse_command(signed(command.to_json(), KEY), KEY) == command


def test_guest_messages_round_trip() -> None:
    beat = Heartbeat("i-1", "healthy", 100.0)
    assert parse_guest_message(signed(beat.to_json(), KEY), key_for) == beat
    assert beat.status is ServiceStatus.HEALTHY and beat.method == "heartbeat"
    result = Result("i-1", "restart", "req-2", False, 101.0, "mysqld did not start", ("Traceback", "Error"))
    assert parse_guest_message(signed(result.to_json(), KEY), key_for) == result


def _body(**changes: object) -> bytes:
    body = {"version": 1, "kind": "heartbeat", "instance_id": "i-1", "service_status": "healthy", "sent_at": 1.0}
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{oops", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (_body(version="1"), "version must be an integer"),
    (_body(version=2), "protocol version 2 is not supported"),
    (_body(kind="gossip"), "unknown message kind 'gossip'"),
    (_body(instance_id=""), "instance_id must be a non-empty string"),
    (_body(service_status="upgrading-ish"), "unknown service status"),
    (_body(sent_at=-1), "sent_at must be a non-negative number"),
    (_body(sent_at=True), "sent_at must be a non-negative number"),
    (_body(kind="result", method="restart", request_id="r", ok="yes"), "ok must be true or false"),
    (_body(kind="result", method="dance", request_id="r", ok=True), "unknown method 'dance'"),
    (_body(kind="result", method="restart", ok=True), "request_id must be a non-empty string"),
    (_body(kind="result", method="restart", request_id="r", ok=True, traceback="line"), "traceback must be a list"),
])
def test_malformed_guest_messages_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(GuestProtocolError, match=reason):
        parse_guest_message(_sign(raw), key_for)


@pytest.mark.parametrize(("body", "reason"), [
    ({"kind": "heartbeat"}, "not a command"),
    ({"method": "reboot"}, "unknown command 'reboot'"),
    ({"method": "resize_volume", "args": {}}, "missing argument 'new_size'"),
    ({"method": "resize_volume", "args": {"new_size": "4"}}, "wrong type"),
    ({"method": "resize_volume", "args": {"new_size": 0}}, "new_size must be a positive integer"),
    ({"method": "prepare", "args": {"datastore": "mysql", "datastore_version": "8.0", "databases": [],
                                    "users": [{"name": "u", "password": "p"}], "volume_size": 1}},
     "a password travels only sealed"),
    ({"method": "prepare", "args": {"datastore": "mysql", "datastore_version": "8.0", "databases": [],
                                    "users": [], "volume_size": 1, "passwords": {"ghost": "x"}}},
     "passwords for users it does not create: ghost"),
    ({"request_id": ""}, "request_id must be a non-empty string"),
])
def test_malformed_commands_are_refused_with_a_reason(body: dict, reason: str) -> None:
    command = {"version": 1, "kind": "command", "method": "restart", "instance_id": "i-1", "request_id": "r",
               "sent_at": 1.0, "args": {}}
    command.update(body)
    with pytest.raises(GuestProtocolError, match=reason):
        parse_command(_sign(json.dumps(command).encode()), KEY)


def test_a_prepare_user_without_a_name_is_refused() -> None:
    with pytest.raises(GuestProtocolError, match="name and host must be non-empty"):
        protocol.prepare("i-1", "r", 1.0, datastore="mysql", datastore_version="8.0", databases=[],
                         users=[{"password": "p"}], volume_size=None)



def test_only_a_message_signed_with_its_instances_key_is_believed() -> None:
    beat = Heartbeat("i-1", "healthy", 1.0).to_json()
    with pytest.raises(Unauthenticated, match="not signed"):
        parse_guest_message(beat, key_for)
    with pytest.raises(Unauthenticated, match="does not match"):
        parse_guest_message(signed(beat, instance_key(SECRET, "i-2")), key_for)  # another guest's key
    with pytest.raises(Unauthenticated, match="does not match"):
        parse_guest_message(signed(beat, instance_key(b"another deployment", "i-1")), key_for)
    tampered = signed(beat, KEY).replace(b"healthy", b"crashed")
    with pytest.raises(Unauthenticated, match="does not match"):
        parse_guest_message(tampered, key_for)
    with pytest.raises(Unauthenticated, match="no key is known"):
        parse_guest_message(signed(beat, KEY), lambda _instance: None)
    command = protocol.command(protocol.RESTART, "i-1", "req-1", 1.0).to_json()
    with pytest.raises(Unauthenticated):
        parse_command(command, KEY)
    assert parse_command(signed(command, KEY), KEY).request_id == "req-1"
    assert instance_key(SECRET, "i-1") != instance_key(SECRET, "i-2") and len(KEY) == 32


def test_a_guest_fault_round_trips_and_only_known_conditions_are_read() -> None:
    fault = protocol.GuestFault("i-1", protocol.VOLUME_FULL, True, "The volume is full.", 5.0)
    parsed = parse_guest_message(signed(fault.to_json(), KEY), key_for)
    assert parsed == fault and parsed.method == "fault/volume_full"
    odd = json.loads(fault.to_json())
    odd["condition"] = "cosmic_rays"
    with pytest.raises(GuestProtocolError, match="unknown condition 'cosmic_rays'"):
        parse_guest_message(signed(json.dumps(odd).encode(), KEY), key_for)


def test_a_backup_command_names_its_target_and_its_result_says_what_arrived() -> None:
    from domain import guest_protocol as gp

    target = {"kind": "file", "location": "/backups/t1/b1.gz", "sealed_url": None}
    sent = gp.command(gp.BACKUP, "i-1", "req-1", 1.0, backup_id="b1", target=target)
    assert gp.parse_command(gp.signed(sent.to_json(), KEY), KEY).args["target"] == target
    with pytest.raises(gp.GuestProtocolError, match=r"target\.sealed_url"):
        gp.command(gp.BACKUP, "i-1", "req-1", 1.0, backup_id="b1", target={**target, "kind": "url"})
    done = gp.Result("i-1", gp.BACKUP, "req-1", True, 2.0, details={"size": 10, "checksum": "sha256:" + "a" * 64})
    parsed = gp.parse_guest_message(gp.signed(done.to_json(), KEY), lambda _id: KEY)
    assert isinstance(parsed, gp.Result) and parsed.details == {"size": 10, "checksum": "sha256:" + "a" * 64}
    bad = gp.Result("i-1", gp.BACKUP, "req-1", True, 2.0, details={"size": 10, "checksum": "md5:x"})
    with pytest.raises(gp.GuestProtocolError, match="checksum"):
        gp.parse_guest_message(gp.signed(bad.to_json(), KEY), lambda _id: KEY)


def test_progress_of_a_backup_is_ordered_apart_and_checked() -> None:
    from domain import guest_protocol as gp

    sent = gp.Progress("i-1", gp.BACKUP, "req-1", 4096, 3.0)
    parsed = gp.parse_guest_message(gp.signed(sent.to_json(), KEY), lambda _id: KEY)
    assert parsed == sent and parsed.method == "progress/backup"
    for odd, reason in (({"command": "restart"}, "command must be one of backup"),
                        ({"stored_bytes": -1}, "stored_bytes"), ({"stored_bytes": True}, "stored_bytes"),
                        ({"request_id": ""}, "request_id")):
        body = {**json.loads(sent.to_json()), **odd}
        with pytest.raises(gp.GuestProtocolError, match=reason):
            gp.parse_guest_message(gp.signed(json.dumps(body).encode(), KEY), lambda _id: KEY)


def test_a_prepare_that_restores_carries_the_backups_source_size_and_checksum() -> None:
    from domain import guest_protocol as gp

    restore = {"backup_id": "b1", "source": {"kind": "file", "location": "/backups/t1/b1.gz", "sealed_url": None},
               "size": 10, "checksum": "sha256:" + "0" * 64}
    built = gp.prepare("i-1", "req-1", 1.0, datastore="postgresql", datastore_version="15", databases=[], users=[],
                       volume_size=1, restore=restore)
    assert built.args["restore"] == restore
    with pytest.raises(gp.GuestProtocolError, match="restore"):
        gp.prepare("i-1", "req-1", 1.0, datastore="postgresql", datastore_version="15", databases=[], users=[],
                   volume_size=1, restore={**restore, "checksum": "nope"})
