"""``OpenStackCompute``: each instance is a Nova server with a Cinder volume and a Neutron security group of its own.

Everything is found again by the *instance* id, so nothing is kept here and a restarted task manager
picks up where the last one was (``docs/openstack.md`` has the call sequences):

- the server is named ``<instance name>-<instance id>`` and carries ``trove_es_instance_id`` in its
  metadata; lookups filter Nova's list by the id and keep the server whose metadata matches;
- the volume and the security group are both named ``trove-es-<instance id>`` (the volume carries the
  metadata too).

``create`` does not wait for the server: it returns it in BUILD and the task manager polls ``get``.
``get`` has two side effects, both so that a poll is all the task manager needs to do:

- a server in VERIFY_RESIZE is confirmed (trove-es never reverts a resize) and reported as RESIZE, so
  ``get`` shows ACTIVE with the new flavor once Nova has finished;
- once a server that ``delete`` was asked to delete has gone, its volume and security group are
  deleted; ``get`` returns None only when that is done (a failure raises, and the next poll tries again).

The guest's configuration file comes from ``guest_config``, supplied by the composition root
(``adapters/compute/guest_boot.py``), so this driver does not know the guest's format.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

import openstack
from openstack import exceptions, utils
from openstack.connection import Connection

from adapters.compute.guest_boot import VOLUME_DIR, datastore_port
from domain.statuses import SERVER_BUILD, SERVER_ERROR, SERVER_REBOOT, SERVER_RESIZE, SERVER_VERIFY_RESIZE
from services.ports import ComputeError, ComputeQuotaExceeded, Server, ServerSpec

INSTANCE_KEY = "trove_es_instance_id"
GUEST_CONFIG_PATH = "/etc/trove-es/guest.json"
GUEST_ENV_PATH = "/etc/trove-es/guest.env"
# Cinder extends an attached volume only from this microversion on.
IN_USE_EXTEND_MICROVERSION = "3.42"
_DELETING = "; deleting"


class OpenStackCompute:
    def __init__(self, connection: Connection, *, guest_config: Callable[[ServerSpec], str],
                 security_group_cidrs: Sequence[str], networks: Sequence[str] = (),
                 volume_type: str | None = None, volume_wait_s: float = 300.0, poll_interval_s: float = 2.0) -> None:
        self._conn = connection
        self._guest_config = guest_config
        self._networks = tuple(networks)
        self._cidrs = tuple(str(ipaddress.ip_network(cidr, strict=False)) for cidr in security_group_cidrs)
        self._volume_type = volume_type
        self._volume_wait_s = volume_wait_s
        self._poll_s = poll_interval_s
        self._flavor_ids: dict[str, str] = {}  # name -> id; a flavor never changes, a name not seen reloads it

    @classmethod
    def from_cloud(cls, cloud: str | None, region: str | None, **options: Any) -> OpenStackCompute:
        """A driver on ``cloud`` of clouds.yaml (None: ``OS_CLOUD`` or the ``OS_*`` variables)."""
        return cls(openstack.connect(cloud=cloud, region_name=region), **options)

    # ComputeDriver ----------------------------------------------------------------------------------

    def create(self, spec: ServerSpec) -> Server:
        with _faults():
            existing = self._find_server(spec.instance_id)
            if existing is not None:
                return self._describe(existing)
            if not spec.image_id:
                raise ComputeError("The datastore version has no image: register its Glance image id in the "
                                   "catalog (the version's image_id).")
            try:
                port = datastore_port(spec.datastore_manager)
            except ValueError as exc:
                raise ComputeError(str(exc)) from None
            volume = self._volume_for(spec) if spec.volume_size else None
            group = self._security_group_for(spec.instance_id, port)
            server = self._conn.compute.create_server(**self._server_attrs(spec, volume, group.id))
        return Server(instance_id=spec.instance_id, server_id=server.id, status=server.status or SERVER_BUILD,
                      name=_server_name(spec), flavor_id=str(spec.flavor["id"]),
                      volume_id=volume.id if volume else None, volume_size=volume.size if volume else None,
                      image_id=spec.image_id)

    def get(self, instance_id: str) -> Server | None:
        with _faults():
            server = self._find_server(instance_id)
            if server is not None:
                return self._describe(server)
            group = self._find_group(instance_id)
            if group is not None and (group.description or "").endswith(_DELETING):
                self._delete_leftovers(instance_id, group)
        return None

    def reboot(self, instance_id: str) -> Server:
        with _faults():
            server = self._require(instance_id)
            self._conn.compute.reboot_server(server, "SOFT")
            return replace(self._describe(server), status=SERVER_REBOOT)

    def resize_volume(self, instance_id: str, new_size: int) -> Server:
        with _faults():
            server = self._require(instance_id)
            volume = self._find_volume(instance_id)
            if volume is None:
                raise ComputeError(f"Instance {instance_id} has no volume to extend.")
            # Extended, or being extended: a repeated ask must not extend twice.
            if volume.size != new_size and volume.status != "extending":
                if volume.status == "in-use" and not utils.supports_microversion(self._conn.block_storage,
                                                                                  IN_USE_EXTEND_MICROVERSION):
                    raise ComputeError(f"This cloud's Block Storage API cannot extend an attached volume (it needs "
                                       f"microversion {IN_USE_EXTEND_MICROVERSION}); volume {volume.id} stays "
                                       f"at {volume.size} GB.")
                self._conn.block_storage.extend_volume(volume, new_size)
            return self._describe(server, volume)

    def resize_flavor(self, instance_id: str, flavor: dict[str, Any]) -> Server:
        with _faults():
            server = self._require(instance_id)
            current = self._describe(server)
            if current.status == SERVER_RESIZE or current.flavor_id == str(flavor["id"]):
                return current  # resizing, or on that flavor already: a repeat
            self._conn.compute.resize_server(server, str(flavor["id"]))
        return replace(current, status=SERVER_RESIZE)

    def delete(self, instance_id: str) -> None:
        with _faults():
            server = self._find_server(instance_id)
            group = self._find_group(instance_id)
            if server is None:
                self._delete_leftovers(instance_id, group)
                return
            if group is not None and not (group.description or "").endswith(_DELETING):
                # The volume and the group outlive the server; the mark tells get() to delete them once it
                # has gone, even if this task manager does not live to see it.
                self._conn.network.update_security_group(group, description=f"{group.description}{_DELETING}")
            self._conn.compute.delete_server(server)

    # ------------------------------------------------------------------------------------------------

    def _find_server(self, instance_id: str) -> Any:
        # Nova filters names by regular expression; the metadata tells ours from a name that only contains the id.
        for server in self._conn.compute.servers(name=instance_id):
            if (server.metadata or {}).get(INSTANCE_KEY) == instance_id:
                return server
        return None

    def _find_volume(self, instance_id: str) -> Any:
        for volume in self._conn.block_storage.volumes(name=_resource_name(instance_id)):
            if (volume.metadata or {}).get(INSTANCE_KEY) == instance_id:
                return volume
        return None

    def _find_group(self, instance_id: str) -> Any:
        return next(iter(self._conn.network.security_groups(name=_resource_name(instance_id))), None)

    def _require(self, instance_id: str) -> Any:
        server = self._find_server(instance_id)
        if server is None:
            raise ComputeError(f"No server is found for instance {instance_id}.")
        return server

    def _describe(self, server: Any, volume: Any = None) -> Server:
        instance_id = server.metadata[INSTANCE_KEY]
        status = server.status
        if status == SERVER_VERIFY_RESIZE:
            with suppress(exceptions.ConflictException):  # confirmed meanwhile by another poll
                self._conn.compute.confirm_server_resize(server)
            status = SERVER_RESIZE
        volume = volume or self._find_volume(instance_id)
        fault = (server.fault or {}).get("message") if status == SERVER_ERROR else None
        return Server(instance_id=instance_id, server_id=server.id, status=status, name=server.name,
                      flavor_id=self._flavor_id(server.flavor), volume_id=volume.id if volume else None,
                      volume_size=volume.size if volume else None, addresses=_addresses(server.addresses),
                      fault=fault, image_id=getattr(server.image, "id", None) or "")

    def _flavor_id(self, flavor: Any) -> str:
        if flavor is None:
            return ""
        if not flavor.original_name:  # before compute 2.47 a server names its flavor by id
            return str(flavor.id)
        name = flavor.original_name  # from 2.47 on, by name only
        if name not in self._flavor_ids:
            self._flavor_ids = {item.name: str(item.id) for item in self._conn.compute.flavors(details=False)}
        return self._flavor_ids.get(name, name)

    def _volume_for(self, spec: ServerSpec) -> Any:
        storage = self._conn.block_storage
        volume = self._find_volume(spec.instance_id)
        if volume is None:
            attrs: dict[str, Any] = {"name": _resource_name(spec.instance_id), "size": spec.volume_size,
                                     "description": f"trove-es instance {spec.instance_id}",
                                     "metadata": {INSTANCE_KEY: spec.instance_id}}
            if self._volume_type:
                attrs["volume_type"] = self._volume_type
            volume = storage.create_volume(**attrs)
        try:
            return storage.wait_for_status(volume, "available", failures=["error"], interval=self._poll_s,
                                           wait=self._volume_wait_s)
        except exceptions.ResourceFailure:
            raise ComputeError(self._volume_fault(volume.id)) from None
        except exceptions.ResourceTimeout:
            raise ComputeError(f"Volume {volume.id} was not available after {self._volume_wait_s:.0f} s.") from None

    def _volume_fault(self, volume_id: str) -> str:
        # A volume has no fault of its own; Cinder says why it failed in its user messages (microversion 3.3+,
        # filtered by resource from 3.5).
        response = self._conn.block_storage.get("/messages", params={"resource_uuid": volume_id},
                                                microversion="3.5", raise_exc=False)
        messages = response.json().get("messages", []) if response.ok else []
        reasons = [m["user_message"] for m in sorted(messages, key=lambda m: m.get("created_at") or "")
                   if m.get("user_message")]
        return f"Volume {volume_id} went to error: {reasons[-1]}" if reasons else f"Volume {volume_id} went to error."

    def _security_group_for(self, instance_id: str, port: int) -> Any:
        network = self._conn.network
        group = self._find_group(instance_id)
        if group is None:
            group = network.create_security_group(name=_resource_name(instance_id),
                                                  description=f"trove-es instance {instance_id}")
        present = {(rule.get("remote_ip_prefix"), rule.get("port_range_min"))
                   for rule in group.security_group_rules or () if rule.get("direction") == "ingress"}
        for cidr in self._cidrs:
            if (cidr, port) not in present:
                network.create_security_group_rule(
                    security_group_id=group.id, direction="ingress", protocol="tcp", port_range_min=port,
                    port_range_max=port, remote_ip_prefix=cidr,
                    ether_type=f"IPv{ipaddress.ip_network(cidr).version}")
        return group

    def _server_attrs(self, spec: ServerSpec, volume: Any, group_id: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "name": _server_name(spec), "image_id": spec.image_id, "flavor_id": str(spec.flavor["id"]),
            "networks": [{"uuid": network} for network in self._networks] or "auto",
            "security_groups": [{"name": group_id}], "metadata": {INSTANCE_KEY: spec.instance_id},
            "config_drive": True, "user_data": self._user_data(spec, volume),
        }
        if spec.availability_zone:
            attrs["availability_zone"] = spec.availability_zone
        if volume is not None:
            attrs["block_device_mapping"] = [
                {"boot_index": 0, "uuid": spec.image_id, "source_type": "image", "destination_type": "local",
                 "delete_on_termination": True},
                # Not deleted with the server: delete() deletes it once the server has gone, as Trove does.
                {"boot_index": -1, "uuid": volume.id, "source_type": "volume", "destination_type": "volume",
                 "delete_on_termination": False},
            ]
        return attrs

    def _user_data(self, spec: ServerSpec, volume: Any) -> str:
        cloud_config: dict[str, Any] = {"write_files": [
            {"path": GUEST_CONFIG_PATH, "permissions": "0600", "content": self._guest_config(spec)},
            {"path": GUEST_ENV_PATH, "permissions": "0644", "content": f"TROVE_ES_INSTANCE_ID={spec.instance_id}\n"},
        ]}
        if volume is not None:
            # A virtio-blk disk shows the volume id (cut to 20 characters) as its serial.
            device = f"/dev/disk/by-id/virtio-{volume.id[:20]}"
            cloud_config["fs_setup"] = [{"device": device, "filesystem": "ext4", "label": "trove-es-data",
                                         "partition": "none"}]
            cloud_config["mounts"] = [[device, str(VOLUME_DIR), "ext4", "defaults,nofail", "0", "2"]]
        text = "#cloud-config\n" + json.dumps(cloud_config, indent=1)  # JSON is YAML, as cloud-init reads it
        return base64.b64encode(text.encode()).decode("ascii")

    def _delete_leftovers(self, instance_id: str, group: Any) -> None:
        volume = self._find_volume(instance_id)
        if volume is not None and volume.status != "deleting":
            self._conn.block_storage.delete_volume(volume)
        if group is not None:
            self._conn.network.delete_security_group(group)


def _server_name(spec: ServerSpec) -> str:
    return f"{spec.name[:200]}-{spec.instance_id}"


def _resource_name(instance_id: str) -> str:
    return f"trove-es-{instance_id}"


def _addresses(addresses: dict[str, list[dict[str, Any]]] | None) -> list[dict[str, Any]]:
    return [{"address": entry["addr"], "type": "public" if entry.get("OS-EXT-IPS:type") == "floating" else "private",
             "network": network} for network, entries in (addresses or {}).items() for entry in entries]


@contextmanager
def _faults() -> Iterator[None]:
    """The cloud's refusals as ``ComputeError``, in the cloud's own words (quota ones as ``ComputeQuotaExceeded``)."""
    try:
        yield
    except exceptions.HttpException as exc:
        fault = str(exc.details or exc)
        lowered = fault.lower()
        quota = exc.status_code == 413 or "quota exceeded" in lowered or (exc.status_code == 403 and "quota" in lowered)
        raise (ComputeQuotaExceeded if quota else ComputeError)(fault) from exc
    except exceptions.SDKException as exc:
        raise ComputeError(str(exc)) from exc
