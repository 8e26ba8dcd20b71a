"""What a cloud server's guest agent is booted with: its configuration file, as ``guest.config.GuestConfig`` reads it.

The ``openstack`` driver puts this text in the server's user data (see ``docs/openstack.md``); the
composition root builds the function from the settings, so the driver needs to know nothing of the
guest's format. The file holds the instance's own key, derived from the deployment's secret, and never
the secret itself: a guest, or anyone who reads its user data, can sign and unseal only as that instance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from domain.guest_protocol import instance_key
from guest.config import GuestConfig
from services.ports import ServerSpec

# Where the datastore's files live on the server (the Cinder volume is mounted there) and its run files.
VOLUME_DIR = Path("/var/lib/trove-es/volume")
RUN_DIR = Path("/var/lib/trove-es/run")
DATASTORE_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def datastore_port(manager: str) -> int:
    """The port a datastore's server listens on (and its security group opens)."""
    try:
        return DATASTORE_PORTS[manager]
    except KeyError:
        raise ValueError(f"no port is known for datastore manager {manager!r} "
                         f"(known: {', '.join(sorted(DATASTORE_PORTS))})") from None


def guest_config_writer(*, secret: bytes, bootstrap_servers: str, guest_prefix: str, conductor_topic: str,
                        report_interval_s: float) -> Callable[[ServerSpec], str]:
    """A function from a server's spec to its guest's configuration file (JSON text, to be written 0600)."""

    def config_text(spec: ServerSpec) -> str:
        config = GuestConfig(
            instance_id=spec.instance_id, kafka_bootstrap_servers=bootstrap_servers,
            command_topic=f"{guest_prefix}{spec.instance_id}", conductor_topic=conductor_topic,
            key_hex=instance_key(secret, spec.instance_id).hex(), volume=VOLUME_DIR, run_dir=RUN_DIR,
            port=datastore_port(spec.datastore_manager), memory_mb=int(spec.flavor.get("ram") or 512),
            volume_size_gb=spec.volume_size, report_interval_s=report_interval_s)
        body = {name: str(value) if isinstance(value, Path) else value for name, value in asdict(config).items()}
        return json.dumps(body, indent=1, sort_keys=True)

    return config_text
