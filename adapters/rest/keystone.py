"""Keystone v3 token validation, with a bounded cache so Keystone is not asked on every request.

The token validates itself (``X-Auth-Token`` and ``X-Subject-Token`` are the same token), which
Keystone's default policy allows, so the API needs no service credentials of its own. Validated
tokens are cached under their SHA-256, never in the clear, until the sooner of ``cache_s`` and the
token's own expiry. Refusals are not cached: a token Keystone has just issued must work at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from adapters.rest.auth import Identity, IdentityUnavailable, InvalidToken

MAX_CACHED_TOKENS = 10_000
MAX_TOKEN_LENGTH = 8192


class KeystoneAuthenticator:
    def __init__(self, keystone_url: str, cache_s: float, *, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not keystone_url:
            raise ValueError("keystone auth needs TROVE_ES_KEYSTONE_URL")
        base = keystone_url.rstrip("/")
        self._tokens_url = (base if base.endswith("/v3") else base + "/v3") + "/auth/tokens"
        self.challenge = f'Keystone uri="{base}"'
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Identity, float]] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Identity:
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > now:
                return cached[0]
        identity, expires_at = self._validate(token)
        if self._cache_s > 0:
            with self._lock:
                self._cache[key] = (identity, min(now + self._cache_s, expires_at))
                self._cache.move_to_end(key)
                while len(self._cache) > MAX_CACHED_TOKENS:
                    self._cache.popitem(last=False)
        return identity

    def _validate(self, token: str) -> tuple[Identity, float]:
        # Keystone's tokens are short printable ASCII; anything else could not even be sent as a header.
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
            raise InvalidToken("The token is not valid.")
        headers = {"X-Auth-Token": token, "X-Subject-Token": token, "Accept": "application/json"}
        request = urllib.request.Request(self._tokens_url, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403, 404):
                raise InvalidToken("The token is not valid.") from None
            raise IdentityUnavailable(f"Keystone answered {exc.code} when validating a token.") from None
        except (urllib.error.URLError, OSError, ValueError):
            raise IdentityUnavailable("Keystone could not be reached to validate the token.") from None
        return _identity(body)


def _identity(body: dict[str, Any]) -> tuple[Identity, float]:
    try:
        token = body["token"]
        user_id = str(token["user"]["id"])
        project = token.get("project") or {}
        roles = tuple(str(role["name"]) for role in token.get("roles") or ())
        expires_at = datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00")).timestamp()
    except (KeyError, TypeError, AttributeError, ValueError):
        raise IdentityUnavailable("Keystone's token validation answer could not be understood.") from None
    project_id = str(project["id"]) if "id" in project else None
    return Identity(user_id=user_id, project_id=project_id, roles=roles), expires_at
