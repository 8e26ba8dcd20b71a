"""The OpenStack compute driver against a faked cloud: the exact Nova, Cinder and Neutron calls, in order.

openstacksdk talks to ``requests_mock`` through a real ``Connection`` built on openstacksdk's own
``ConnectionFixture`` catalog, as openstacksdk's unit tests do; ``time.sleep`` is patched, so the
SDK's waits poll at once.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests_mock

from adapters.bootstrap import compute_driver
from adapters.compute.guest_boot import guest_config_writer
from adapters.compute.openstack import GUEST_CONFIG_PATH, INSTANCE_KEY, OpenStackCompute
from adapters.settings import SettingsError, load_settings
from domain.guest_protocol import instance_key
from guest.config import GuestConfig
from services.ports import ComputeError, ComputeQuotaExceeded, ServerSpec
from tests.support.openstack_cloud import AUTH, PROJECT, keystone

INSTANCE = "5f0d7c1e-8a42-4b7e-9d3a-0c6b2e1f4a99"
SERVER_ID = "a1b2c3d4-0000-4000-8000-000000000001"
VOLUME_ID = "b2c3d4e5-0000-4000-8000-000000000002"
GROUP_ID = "c3d4e5f6-0000-4000-8000-000000000003"
IMAGE = "d4e5f6a7-0000-4000-8000-000000000004"
NETWORK = "e5f6a7b8-0000-4000-8000-000000000005"
NOVA = "https://compute.example.com/v2.1"
CINDER = f"https://block-storage.example.com/v3/{PROJECT}"
NEUTRON = "https://network.example.com/v2.0"
GROUP_NAME = f"trove-es-{INSTANCE}"
SECRET = b"0123456789abcdef0123456789abcdef-deployment-secret"
SPEC = ServerSpec(instance_id=INSTANCE, name="db1", volume_size=10, image_id=IMAGE, datastore_manager="postgresql",
                  flavor={"id": "f-small", "name": "db.small", "ram": 2048, "vcpus": 1, "disk": 10})
FLAVORS = {"flavors": [{"id": "f-small", "name": "db.small", "links": []},
                       {"id": "f-large", "name": "db.large", "links": []}]}


class Cloud:
    def __init__(self, mocker: requests_mock.Mocker, driver: OpenStackCompute) -> None:
        self.mocker = mocker
        self.driver = driver

    def calls(self) -> list[str]:
        """The API calls made since the last ``forget``, discovery and authentication left out."""
        skipped = ("https://identity.example.com/", f"{NOVA}/", "https://block-storage.example.com/")
        return [f"{r.method} {r.url}" for r in self.mocker.request_history
                if r.url not in skipped and not r.url.startswith("https://identity.example.com/")]

    def body(self, method: str, url: str) -> Any:
        return next(r.json() for r in self.mocker.request_history if r.method == method and r.url == url)

    def forget(self) -> None:
        self.mocker.reset_mock()


@contextmanager
def fake_cloud(cinder_version: str = "3.70", **options: Any) -> Iterator[Cloud]:
    with keystone() as (mocker, connection):
        mocker.get(f"{NOVA}/", json={"version": {"id": "v2.1", "status": "CURRENT", "min_version": "2.1",
                                                 "version": "2.96", "links": [{"rel": "self", "href": f"{NOVA}/"}]}})
        mocker.get("https://block-storage.example.com/", json={"versions": [{
            "id": "v3.0", "status": "CURRENT", "min_version": "3.0", "version": cinder_version,
            "links": [{"rel": "self", "href": "https://block-storage.example.com/v3/"}]}]})
        options.setdefault("networks", [NETWORK])
        options.setdefault("security_group_cidrs", ["203.0.113.0/24", "2001:db8::/32"])
        driver = OpenStackCompute(connection, guest_config=guest_config_writer(
            secret=SECRET, bootstrap_servers="kafka-1:9092", guest_prefix="trove.guest.",
            conductor_topic="trove.conductor", report_interval_s=10.0), **options)
        yield Cloud(mocker, driver)


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    with fake_cloud() as faked:
        yield faked


def nova_server(status: str, *, flavor: str = "db.small", fault: str | None = None,
                addresses: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"id": SERVER_ID, "name": f"db1-{INSTANCE}", "status": status, "metadata": {INSTANCE_KEY: INSTANCE},
            "flavor": {"original_name": flavor, "vcpus": 1, "ram": 2048, "disk": 10, "extra_specs": {}},
            "image": {"id": IMAGE, "links": []}, "addresses": addresses or {}}
    if fault:
        body["fault"] = {"code": 500, "message": fault, "created": "2024-05-01T10:00:00Z"}
    return body


def cinder_volume(status: str = "in-use", size: int = 10) -> dict[str, Any]:
    return {"id": VOLUME_ID, "name": GROUP_NAME, "size": size, "status": status,
            "metadata": {INSTANCE_KEY: INSTANCE}}


def neutron_group(description: str = f"trove-es instance {INSTANCE}") -> dict[str, Any]:
    return {"id": GROUP_ID, "name": GROUP_NAME, "description": description, "security_group_rules": [
        {"id": "egress-4", "direction": "egress", "ethertype": "IPv4", "remote_ip_prefix": None}]}


def register_servers(cloud: Cloud, *servers: dict[str, Any] | None) -> None:
    """Successive answers of Nova's server list filtered by the instance id (None: no server)."""
    cloud.mocker.get(f"{NOVA}/servers/detail", [{"json": {"servers": [server] if server else []}}
                                                 for server in servers])


def register_volumes(cloud: Cloud, *volumes: dict[str, Any] | None) -> None:
    cloud.mocker.get(f"{CINDER}/volumes/detail", [{"json": {"volumes": [volume] if volume else []}}
                                                   for volume in volumes])


def register_groups(cloud: Cloud, *groups: dict[str, Any] | None) -> None:
    cloud.mocker.get(f"{NEUTRON}/security-groups", [{"json": {"security_groups": [group] if group else []}}
                                                     for group in groups])


LOOKUP_SERVER = f"GET {NOVA}/servers/detail?name={INSTANCE}"
LOOKUP_VOLUME = f"GET {CINDER}/volumes/detail?name={GROUP_NAME}"
LOOKUP_GROUP = f"GET {NEUTRON}/security-groups?name={GROUP_NAME}"
LIST_FLAVORS = f"GET {NOVA}/flavors?is_public=None"
DELETE_VOLUME = f"DELETE {CINDER}/volumes/{VOLUME_ID}?cascade=False&force=False"
JSON = {"Content-Type": "application/json"}  # the SDK reads an error's message only from a JSON body


# Create -----------------------------------------------------------------------------------------------


def test_create_makes_the_volume_then_the_group_then_boots_the_server(cloud: Cloud) -> None:
    register_servers(cloud, None)
    register_volumes(cloud, None)
    cloud.mocker.post(f"{CINDER}/volumes", status_code=202, json={"volume": cinder_volume("creating")})
    cloud.mocker.get(f"{CINDER}/volumes/{VOLUME_ID}", [{"json": {"volume": cinder_volume("creating")}},
                                                       {"json": {"volume": cinder_volume("available")}}])
    register_groups(cloud, None)
    cloud.mocker.post(f"{NEUTRON}/security-groups", status_code=201, json={"security_group": neutron_group()})
    cloud.mocker.post(f"{NEUTRON}/security-group-rules", status_code=201, json={"security_group_rule": {"id": "r"}})
    cloud.mocker.post(f"{NOVA}/servers", status_code=202, json={"server": {"id": SERVER_ID, "links": []}})

    server = cloud.driver.create(SPEC)

    assert cloud.calls() == [
        LOOKUP_SERVER, LOOKUP_VOLUME, f"POST {CINDER}/volumes",
        f"GET {CINDER}/volumes/{VOLUME_ID}", f"GET {CINDER}/volumes/{VOLUME_ID}",  # creating, then available
        LOOKUP_GROUP, f"POST {NEUTRON}/security-groups",
        f"POST {NEUTRON}/security-group-rules", f"POST {NEUTRON}/security-group-rules",
        f"POST {NOVA}/servers",
    ]
    assert (server.server_id, server.status, server.volume_id, server.volume_size) == (SERVER_ID, "BUILD",
                                                                                       VOLUME_ID, 10)
    assert cloud.body("POST", f"{CINDER}/volumes")["volume"] == {
        "name": GROUP_NAME, "size": 10, "description": f"trove-es instance {INSTANCE}",
        "metadata": {INSTANCE_KEY: INSTANCE}}
    rules = [r.json()["security_group_rule"] for r in cloud.mocker.request_history
             if r.url == f"{NEUTRON}/security-group-rules"]
    assert rules == [
        {"security_group_id": GROUP_ID, "direction": "ingress", "protocol": "tcp", "port_range_min": 5432,
         "port_range_max": 5432, "remote_ip_prefix": cidr, "ethertype": ethertype}
        for cidr, ethertype in (("203.0.113.0/24", "IPv4"), ("2001:db8::/32", "IPv6"))]

    boot = cloud.body("POST", f"{NOVA}/servers")["server"]
    user_data = base64.b64decode(boot.pop("user_data")).decode()
    assert boot == {
        "name": f"db1-{INSTANCE}", "imageRef": IMAGE, "flavorRef": "f-small", "networks": [{"uuid": NETWORK}],
        "security_groups": [{"name": GROUP_ID}], "metadata": {INSTANCE_KEY: INSTANCE}, "config_drive": True,
        "block_device_mapping_v2": [
            {"boot_index": 0, "uuid": IMAGE, "source_type": "image", "destination_type": "local",
             "delete_on_termination": True},
            {"boot_index": -1, "uuid": VOLUME_ID, "source_type": "volume", "destination_type": "volume",
             "delete_on_termination": False}],
    }
    assert user_data.startswith("#cloud-config\n")
    cloud_config = json.loads(user_data.removeprefix("#cloud-config\n"))
    guest_file = cloud_config["write_files"][0]
    assert (guest_file["path"], guest_file["permissions"]) == (GUEST_CONFIG_PATH, "0600")
    assert json.loads(guest_file["content"])["key_hex"] == instance_key(SECRET, INSTANCE).hex()
    assert SECRET.decode() not in user_data
    assert cloud_config["mounts"][0][:2] == [f"/dev/disk/by-id/virtio-{VOLUME_ID[:20]}", "/var/lib/trove-es/volume"]


def test_create_of_an_instance_that_has_a_server_returns_it_and_creates_nothing(cloud: Cloud) -> None:
    register_servers(cloud, nova_server("ACTIVE"))
    register_volumes(cloud, cinder_volume())
    cloud.mocker.get(f"{NOVA}/flavors", json=FLAVORS)

    server = cloud.driver.create(SPEC)

    assert (server.server_id, server.status, server.flavor_id, server.volume_id) == (SERVER_ID, "ACTIVE", "f-small",
                                                                                    VOLUME_ID)
    assert cloud.calls() == [LOOKUP_SERVER, LOOKUP_VOLUME, LIST_FLAVORS]
    assert not [r for r in cloud.mocker.request_history if r.method == "POST" and "identity" not in r.url]


def test_a_volume_over_cinder_quota_raises_quota_exceeded_in_cinders_words(cloud: Cloud) -> None:
    message = ("VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. "
               "Requested 10G, quota is 100G and 95G has been consumed.")
    register_servers(cloud, None)
    register_volumes(cloud, None)
    cloud.mocker.post(f"{CINDER}/volumes", status_code=413, headers=JSON,
                      json={"overLimit": {"code": 413, "message": message, "retryAfter": "0"}})

    with pytest.raises(ComputeQuotaExceeded) as raised:
        cloud.driver.create(SPEC)

    assert raised.value.fault == message
    assert cloud.calls() == [LOOKUP_SERVER, LOOKUP_VOLUME, f"POST {CINDER}/volumes"]  # no group, no server


@pytest.mark.parametrize(("status", "message", "quota"), [
    (403, "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances", True),
    (400, "Invalid imageRef provided.", False),
])
def test_novas_refusals_carry_novas_message(cloud: Cloud, status: int, message: str, quota: bool) -> None:
    register_servers(cloud, None)
    register_volumes(cloud, cinder_volume("available"))
    cloud.mocker.get(f"{CINDER}/volumes/{VOLUME_ID}", json={"volume": cinder_volume("available")})
    register_groups(cloud, neutron_group() | {"security_group_rules": [
        {"direction": "ingress", "remote_ip_prefix": cidr, "port_range_min": 5432}
        for cidr in ("203.0.113.0/24", "2001:db8::/32")]})
    cloud.mocker.post(f"{NOVA}/servers", status_code=status, headers=JSON,
                      json={"forbidden" if status == 403 else "badRequest": {"code": status, "message": message}})

    with pytest.raises(ComputeError) as raised:
        cloud.driver.create(SPEC)

    assert raised.value.fault == message
    assert isinstance(raised.value, ComputeQuotaExceeded) is quota
    # The volume and the group were there already, rules and all: only the boot is asked for.
    assert cloud.calls() == [LOOKUP_SERVER, LOOKUP_VOLUME, LOOKUP_GROUP, f"POST {NOVA}/servers"]


def test_a_volume_gone_to_error_fails_the_create_with_cinders_reason(cloud: Cloud) -> None:
    register_servers(cloud, None)
    register_volumes(cloud, None)
    cloud.mocker.post(f"{CINDER}/volumes", status_code=202, json={"volume": cinder_volume("creating")})
    cloud.mocker.get(f"{CINDER}/volumes/{VOLUME_ID}", json={"volume": cinder_volume("error")})
    cloud.mocker.get(f"{CINDER}/messages", json={"messages": [
        {"id": "m1", "resource_uuid": VOLUME_ID, "created_at": "2024-05-01T10:00:00",
         "user_message": "schedule allocate volume:Could not find any available weighted backend."}]})

    with pytest.raises(ComputeError) as raised:
        cloud.driver.create(SPEC)

    assert raised.value.fault == (f"Volume {VOLUME_ID} went to error: schedule allocate volume:Could not find any "
                                  f"available weighted backend.")
    assert cloud.calls()[-1] == f"GET {CINDER}/messages?resource_uuid={VOLUME_ID}"
    assert f"POST {NOVA}/servers" not in cloud.calls()


# Get ------------------------------------------------------------------------------------------------------


def test_get_follows_the_server_from_build_to_active_and_reads_the_volume_from_cinder(cloud: Cloud) -> None:
    addresses = {"tenant-net": [{"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
                                {"addr": "203.0.113.9", "version": 4, "OS-EXT-IPS:type": "floating"}]}
    register_servers(cloud, nova_server("BUILD"), nova_server("ACTIVE", addresses=addresses))
    register_volumes(cloud, cinder_volume())
    cloud.mocker.get(f"{NOVA}/flavors", json=FLAVORS)

    building = cloud.driver.get(INSTANCE)
    active = cloud.driver.get(INSTANCE)

    assert building is not None and (building.status, building.addresses, building.fault) == ("BUILD", [], None)
    assert active is not None and active.status == "ACTIVE"
    assert (active.flavor_id, active.volume_id, active.volume_size, active.image_id) == ("f-small", VOLUME_ID, 10,
                                                                                         IMAGE)
    assert active.addresses == [{"address": "10.0.0.5", "type": "private", "network": "tenant-net"},
                                {"address": "203.0.113.9", "type": "public", "network": "tenant-net"}]
    # Nova names the flavor (2.47+); one flavor list maps names to ids for every later poll.
    assert cloud.calls() == [LOOKUP_SERVER, LOOKUP_VOLUME, LIST_FLAVORS, LOOKUP_SERVER, LOOKUP_VOLUME]


def test_a_server_in_error_shows_novas_fault(cloud: Cloud) -> None:
    fault = "No valid host was found. There are not enough hosts available."
    register_servers(cloud, nova_server("ERROR", fault=fault))
    register_volumes(cloud, cinder_volume("available"))
    cloud.mocker.get(f"{NOVA}/flavors", json=FLAVORS)

    server = cloud.driver.get(INSTANCE)

    assert server is not None and (server.status, server.fault) == ("ERROR", fault)


def test_get_of_an_instance_without_a_server_is_none_and_deletes_nothing(cloud: Cloud) -> None:
    register_servers(cloud, None)
    register_groups(cloud, neutron_group())  # a create under way made it: not ours to delete

    assert cloud.driver.get(INSTANCE) is None
    assert cloud.calls() == [LOOKUP_SERVER, LOOKUP_GROUP]


# Resize -----------------------------------------------------------------------------------------------------


def test_resize_flavor_asks_nova_once_and_the_poll_that_sees_verify_resize_confirms_it(cloud: Cloud) -> None:
    action = f"{NOVA}/servers/{SERVER_ID}/action"
    register_servers(cloud, nova_server("ACTIVE"), nova_server("RESIZE"), nova_server("VERIFY_RESIZE",
                     flavor="db.large"), nova_server("ACTIVE", flavor="db.large"))
    register_volumes(cloud, cinder_volume())
    cloud.mocker.get(f"{NOVA}/flavors", json=FLAVORS)
    cloud.mocker.post(action, status_code=202)

    asked = cloud.driver.resize_flavor(INSTANCE, {"id": "f-large", "name": "db.large"})
    repeated = cloud.driver.resize_flavor(INSTANCE, {"id": "f-large", "name": "db.large"})  # Nova: RESIZE
    verifying = cloud.driver.get(INSTANCE)
    done = cloud.driver.get(INSTANCE)

    assert asked.status == repeated.status == "RESIZE"
    assert verifying is not None and (verifying.status, verifying.flavor_id) == ("RESIZE", "f-large")
    assert done is not None and (done.status, done.flavor_id) == ("ACTIVE", "f-large")
    assert cloud.calls() == [
        LOOKUP_SERVER, LOOKUP_VOLUME, LIST_FLAVORS, f"POST {action}",
        LOOKUP_SERVER, LOOKUP_VOLUME,
        LOOKUP_SERVER, f"POST {action}", LOOKUP_VOLUME,
        LOOKUP_SERVER, LOOKUP_VOLUME,
    ]
    actions = [r.json() for r in cloud.mocker.request_history if r.url == action]
    assert actions == [{"resize": {"flavorRef": "f-large"}}, {"confirmResize": None}]


def test_resize_volume_extends_once_with_the_new_size(cloud: Cloud) -> None:
    action = f"{CINDER}/volumes/{VOLUME_ID}/action"
    register_servers(cloud, nova_server("ACTIVE"))
    register_volumes(cloud, cinder_volume("in-use", 10), cinder_volume("extending", 10), cinder_volume("in-use", 20))
    cloud.mocker.get(f"{NOVA}/flavors", json=FLAVORS)
    cloud.mocker.post(action, status_code=202)

    cloud.driver.resize_volume(INSTANCE, 20)
    cloud.driver.resize_volume(INSTANCE, 20)  # a repeat while Cinder extends: nothing asked
    extended = cloud.driver.get(INSTANCE)

    assert extended is not None and extended.volume_size == 20
    assert [call for call in cloud.calls() if call.startswith("POST")] == [f"POST {action}"]
    extend = next(r for r in cloud.mocker.request_history if r.url == action)
    assert extend.json() == {"os-extend": {"new_size": 20}}
    assert extend.headers["OpenStack-API-Version"] == "volume 3.70"  # attached volumes extend from 3.42 on


def test_an_attached_volume_is_not_extended_by_a_cinder_older_than_3_42() -> None:
    with fake_cloud(cinder_version="3.27") as cloud:
        register_servers(cloud, nova_server("ACTIVE"))
        register_volumes(cloud, cinder_volume("in-use", 10))

        with pytest.raises(ComputeError, match=r"microversion 3\.42"):
            cloud.driver.resize_volume(INSTANCE, 20)

        assert not [call for call in cloud.calls() if call.startswith("POST")]


# Delete ------------------------------------------------------------------------------------------------------


def test_delete_deletes_the_server_then_once_it_has_gone_its_volume_and_group(cloud: Cloud) -> None:
    marked = neutron_group(f"trove-es instance {INSTANCE}; deleting")
    register_servers(cloud, nova_server("ACTIVE"), nova_server("ACTIVE"), None, None)
    register_groups(cloud, neutron_group(), marked, None)
    register_volumes(cloud, cinder_volume("in-use"), cinder_volume("available"))
    cloud.mocker.get(f"{NOVA}/flavors", json=FLAVORS)
    cloud.mocker.put(f"{NEUTRON}/security-groups/{GROUP_ID}", json={"security_group": marked})
    cloud.mocker.delete(f"{NOVA}/servers/{SERVER_ID}", status_code=204)
    cloud.mocker.delete(f"{CINDER}/volumes/{VOLUME_ID}", status_code=202)
    cloud.mocker.delete(f"{NEUTRON}/security-groups/{GROUP_ID}", status_code=204)

    cloud.driver.delete(INSTANCE)
    assert cloud.calls() == [LOOKUP_SERVER, LOOKUP_GROUP, f"PUT {NEUTRON}/security-groups/{GROUP_ID}",
                             f"DELETE {NOVA}/servers/{SERVER_ID}"]
    assert cloud.body("PUT", f"{NEUTRON}/security-groups/{GROUP_ID}") == {
        "security_group": {"description": f"trove-es instance {INSTANCE}; deleting"}}
    cloud.forget()

    assert cloud.driver.get(INSTANCE) is not None  # still being deleted
    assert cloud.driver.get(INSTANCE) is None
    assert cloud.driver.get(INSTANCE) is None  # everything gone: nothing more to delete
    assert cloud.calls() == [
        LOOKUP_SERVER, LOOKUP_VOLUME, LIST_FLAVORS,
        LOOKUP_SERVER, LOOKUP_GROUP, LOOKUP_VOLUME, DELETE_VOLUME,
        f"DELETE {NEUTRON}/security-groups/{GROUP_ID}",
        LOOKUP_SERVER, LOOKUP_GROUP,
    ]


def test_delete_without_a_server_deletes_what_it_left_and_a_repeat_does_nothing(cloud: Cloud) -> None:
    register_servers(cloud, None)
    register_groups(cloud, neutron_group(), None)
    register_volumes(cloud, cinder_volume("available"), None)
    cloud.mocker.delete(f"{CINDER}/volumes/{VOLUME_ID}", status_code=202)
    cloud.mocker.delete(f"{NEUTRON}/security-groups/{GROUP_ID}", status_code=204)

    cloud.driver.delete(INSTANCE)
    cloud.driver.delete(INSTANCE)

    assert cloud.calls() == [
        LOOKUP_SERVER, LOOKUP_GROUP, LOOKUP_VOLUME, DELETE_VOLUME,
        f"DELETE {NEUTRON}/security-groups/{GROUP_ID}",
        LOOKUP_SERVER, LOOKUP_GROUP, LOOKUP_VOLUME,
    ]


def test_a_group_still_in_use_fails_the_poll_so_it_is_tried_again(cloud: Cloud) -> None:
    register_servers(cloud, None)
    register_groups(cloud, neutron_group(f"trove-es instance {INSTANCE}; deleting"))
    register_volumes(cloud, None)
    cloud.mocker.delete(f"{NEUTRON}/security-groups/{GROUP_ID}", status_code=409, headers=JSON, json={"NeutronError": {
        "type": "SecurityGroupInUse", "message": f"Security Group {GROUP_ID} in use.", "detail": ""}})

    with pytest.raises(ComputeError, match="in use"):
        cloud.driver.get(INSTANCE)


# The guest's configuration ------------------------------------------------------------------------------------


def test_the_guest_configuration_holds_the_instance_key_and_never_the_deployment_secret(tmp_path: Path) -> None:
    writer = guest_config_writer(secret=SECRET, bootstrap_servers="kafka-1:9092", guest_prefix="trove.guest.",
                                 conductor_topic="trove.conductor", report_interval_s=5.0)
    text = writer(SPEC)
    assert SECRET.decode() not in text and SECRET.hex() not in text
    (tmp_path / "guest.json").write_text(text)

    config = GuestConfig.read(tmp_path / "guest.json")

    assert config.key == instance_key(SECRET, INSTANCE)
    assert (config.command_topic, config.conductor_topic) == (f"trove.guest.{INSTANCE}", "trove.conductor")
    assert (config.port, config.memory_mb, config.volume_size_gb) == (5432, 2048, 10)
    assert (str(config.volume), str(config.run_dir)) == ("/var/lib/trove-es/volume", "/var/lib/trove-es/run")
    mariadb = json.loads(writer(ServerSpec(instance_id=INSTANCE, name="m", flavor={"id": "1"}, volume_size=None,
                                           datastore_manager="mariadb")))
    assert (mariadb["port"], mariadb["memory_mb"], mariadb["volume_size_gb"]) == (3306, 512, None)


# The composition root ------------------------------------------------------------------------------------------


def test_the_composition_root_builds_the_driver_on_the_clouds_yaml_cloud(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(json.dumps({"clouds": {"dbaas": {"region_name": "RegionOne", "auth": AUTH}}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    settings = load_settings({"TROVE_ES_DATA_DIR": str(tmp_path), "TROVE_ES_COMPUTE_DRIVER": "openstack",
                              "TROVE_ES_OS_CLOUD": "dbaas", "TROVE_ES_KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092"})

    assert isinstance(compute_driver(settings), OpenStackCompute)
    with pytest.raises(SettingsError, match="TROVE_ES_KAFKA_BOOTSTRAP_SERVERS"):
        compute_driver(settings.with_bootstrap_servers(""))
