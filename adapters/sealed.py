"""Secrets sealed for one guest: encrypted under a key only that instance's guest (and the control plane) holds.

A password a user gives the API must reach the database server on the guest, but nothing in between may
read it: not the broker, whose topics keep what they carry, nor an operator reading a command topic.
The control plane seals it with a Fernet key derived from the instance's own key (``instance_key``), so
it needs no key store; the guest, which knows only its own key, unseals it. The signing key and this
encryption key are distinct derivations, so one never stands in for the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken

from domain.guest_protocol import GuestProtocolError, instance_key


class SealBroken(GuestProtocolError):
    """A sealed secret that this key cannot open: sealed for another instance, or changed."""


def _fernet(instance_key: bytes) -> Fernet:
    derived = hmac.new(instance_key, b"trove-es guest secrets/v1", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(instance_key: bytes, secret: str) -> str:
    """``secret`` encrypted (and authenticated) for the guest of ``instance_key``."""
    return _fernet(instance_key).encrypt(secret.encode()).decode("ascii")


def unseal(instance_key: bytes, sealed: str) -> str:
    """The secret ``seal`` made, opened with the guest's own key."""
    try:
        return _fernet(instance_key).decrypt(sealed.encode("ascii")).decode()
    except (InvalidToken, ValueError, UnicodeError):
        raise SealBroken("a sealed secret does not open with this instance's key (sealed for another instance, "
                         "or changed on the way)") from None


class DeploymentSealer:
    """The ``services.ports.GuestSealer`` port: seals for any instance's guest, from the deployment's secret."""

    def __init__(self, deployment_secret: bytes) -> None:
        self._secret = deployment_secret

    def seal(self, instance_id: str, secret: str) -> str:
        return seal(instance_key(self._secret, instance_id), secret)
