"""A guest agent's configuration and the little state it keeps between runs.

The configuration is what the compute driver hands a guest when it boots it (the ``local`` driver
writes it beside the instance; a cloud delivers it in the config drive). It holds the instance's own
key, never the deployment's secret, so a guest can sign only as itself and open only its own secrets.
The file is private to the agent (0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from guest.datastore.base import InstanceLayout


class GuestConfigError(ValueError):
    """A configuration file that cannot be used; the text says which field and why."""


@dataclass(frozen=True)
class GuestConfig:
    instance_id: str
    kafka_bootstrap_servers: str
    command_topic: str
    conductor_topic: str
    key_hex: str  # the instance's own key: signs what it reports, opens what is sealed for it
    volume: Path
    run_dir: Path
    port: int
    memory_mb: int
    volume_size_gb: int | None
    report_interval_s: float = 10.0

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.key_hex)

    @property
    def state_file(self) -> Path:
        return self.run_dir / "agent-state.json"

    def layout(self, state: AgentState) -> InstanceLayout:
        """Where the instance lives, with the limits its last resizes gave it."""
        return InstanceLayout(volume=self.volume, run_dir=self.run_dir, port=self.port,
                              memory_mb=state.memory_mb or self.memory_mb,
                              volume_size_gb=state.volume_size_gb or self.volume_size_gb)

    def write(self, path: Path) -> Path:
        body = {name: str(value) if isinstance(value, Path) else value for name, value in asdict(self).items()}
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(body, handle, indent=1, sort_keys=True)
        return path

    @classmethod
    def read(cls, path: Path) -> GuestConfig:
        try:
            body = json.loads(path.read_text())
        except FileNotFoundError:
            raise GuestConfigError(f"no guest configuration at {path}") from None
        except ValueError as exc:
            raise GuestConfigError(f"{path} is not JSON: {exc}") from None
        try:
            return cls(instance_id=_text(body, "instance_id"),
                       kafka_bootstrap_servers=_text(body, "kafka_bootstrap_servers"),
                       command_topic=_text(body, "command_topic"), conductor_topic=_text(body, "conductor_topic"),
                       key_hex=_key(body), volume=Path(_text(body, "volume")), run_dir=Path(_text(body, "run_dir")),
                       port=_number(body, "port", int), memory_mb=_number(body, "memory_mb", int),
                       volume_size_gb=None if body.get("volume_size_gb") is None
                       else _number(body, "volume_size_gb", int),
                       report_interval_s=float(_number(body, "report_interval_s", (int, float))))
        except GuestConfigError as exc:
            raise GuestConfigError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class AgentState:
    """What the agent must remember across restarts: how far it has read its commands, what it runs."""

    next_offset: int = 0
    manager: str | None = None  # set once prepare has initialised a datastore
    version: str | None = None
    volume_size_gb: int | None = None  # after a resize_volume
    memory_mb: int | None = None  # after a resize_flavor
    prepare_failed: bool = False  # the last prepare failed: the instance reports FAILED until one succeeds

    @classmethod
    def load(cls, path: Path) -> AgentState:
        try:
            body: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        return cls(**{name: body.get(name) for name in ("manager", "version", "volume_size_gb", "memory_mb")},
                   next_offset=int(body.get("next_offset", 0)), prepare_failed=bool(body.get("prepare_failed")))

    def save(self, path: Path) -> None:
        # Replaced whole, so a crash mid-write leaves the previous state rather than half of one.
        # The run directory may not exist yet: before prepare nothing else has made it.
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), sort_keys=True))
        os.replace(temporary, path)

    def but(self, **changes: Any) -> AgentState:
        return replace(self, **changes)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise GuestConfigError(f"{name} must be a non-empty string")
    return value


def _number(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
        raise GuestConfigError(f"{name} must be a non-negative number")
    return value


def _key(body: dict[str, Any]) -> str:
    value = _text(body, "key_hex")
    try:
        if len(bytes.fromhex(value)) < 32:
            raise ValueError
    except ValueError:
        raise GuestConfigError("key_hex must be the instance key in hex (32 bytes)") from None
    return value
