"""Locally signed tokens for the embedded stack: HMAC-SHA256 over a small JSON payload.

The signing key is a file in the data directory, created on first use with mode 0600, so the CLI
that issues tokens and every API worker that checks them agree without any service to ask. A token
is ``tes1.<payload>.<signature>`` (both base64url): it names its project, user, roles and expiry,
and nothing about it is stored anywhere, so there is nothing to leak from the server side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from adapters.rest.auth import Identity, InvalidToken
from adapters.secret_files import load_or_create_key

PREFIX = "tes1"
KEY_FILE_NAME = "token.key"
DEFAULT_TTL_S = 24 * 3600
# Anything longer is not one of ours; refusing early bounds the work a garbage header can cause.
MAX_TOKEN_LENGTH = 4096
VERIFIED_CACHE_SIZE = 10_000


class LocalTokenAuthority:
    """Issues and verifies locally signed tokens."""

    challenge = 'Token realm="trove-es"'

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock
        # Verified tokens, by digest (the token itself is not kept): a client sends the same token on
        # every request, and verifying it again costs more than the rest of a show's work in Python.
        self._verified: dict[bytes, tuple[Identity, float]] = {}

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> LocalTokenAuthority:
        return cls(load_or_create_key(data_dir, KEY_FILE_NAME))

    def issue(self, *, project_id: str, user_id: str, roles: Iterable[str] = (), ttl_s: int = DEFAULT_TTL_S) -> str:
        if not project_id or not user_id:
            raise ValueError("a token needs a project and a user")
        if ttl_s <= 0:
            raise ValueError("a token's time to live must be positive")
        now = int(self._clock())
        payload = {"project_id": project_id, "user_id": user_id, "roles": sorted(set(roles)),
                   "issued_at": now, "expires_at": now + int(ttl_s), "nonce": secrets.token_hex(8)}
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{PREFIX}.{body}.{self._sign(body)}"

    def authenticate(self, token: str) -> Identity:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("The token is not valid.")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        verified = self._verified.get(digest)
        if verified is None:
            verified = self._verify(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()  # crude, but bounded; a full cache only costs re-verifying
            self._verified[digest] = verified
        identity, expires_at = verified
        if expires_at <= self._clock():
            raise InvalidToken("The token has expired.")
        return identity

    def _verify(self, token: str) -> tuple[Identity, float]:
        prefix, _, rest = token.partition(".")
        body, _, signature = rest.partition(".")
        if prefix != PREFIX or not body or not signature:
            raise InvalidToken("The token is not valid.")
        # Headers arrive as latin-1 text: compare bytes, which compare_digest accepts whatever they hold.
        if not hmac.compare_digest(self._sign(body).encode(), signature.encode("utf-8", "replace")):
            raise InvalidToken("The token is not valid.")
        try:
            payload = json.loads(_b64decode(body))
            identity = Identity(user_id=str(payload["user_id"]), project_id=str(payload["project_id"]),
                                roles=tuple(str(role) for role in payload.get("roles", ())))
            expires_at = float(payload["expires_at"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise InvalidToken("The token is not valid.") from None
        return identity, expires_at

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.new(self._key, f"{PREFIX}.{body}".encode(), hashlib.sha256).digest())


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
