"""Who is calling: the identity a token stands for, and the authenticators that vouch for it.

Token validation is pluggable (DESIGN, Security): Keystone for OpenStack deployments, locally signed
tokens for the embedded stack. Both answer the same question with the same ``Identity``, so the
REST layer authorises one way whatever vouched for the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from domain.context import ADMIN_ROLE


@dataclass(frozen=True)
class Identity:
    """The caller as a validated token describes them. Never holds the token itself."""

    user_id: str
    project_id: str | None
    roles: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


class InvalidToken(Exception):
    """The token is unknown, malformed, forged or expired (401)."""


class IdentityUnavailable(Exception):
    """The identity service could not be asked (503): not the caller's fault, so not a 401."""


class Authenticator(Protocol):
    #: Sent in ``WWW-Authenticate`` with a 401, so a client knows where to get a token.
    challenge: str

    def authenticate(self, token: str) -> Identity:
        """The identity ``token`` stands for; raises ``InvalidToken`` or ``IdentityUnavailable``."""
        ...
