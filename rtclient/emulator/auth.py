"""Who may call: standard keys, ephemeral ``ek_`` keys, and the API's 401 bodies.

Any non-empty bearer is a standard key unless the emulator was given ``api_key=``, in
which case only that one is. ``ek_`` keys are minted by ``POST
/v1/realtime/client_secrets`` with an expiry; an unknown or expired one is refused.
Keys are secrets: nothing here logs them, and refusals show only a redacted form.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError
from .ids import IdFactory

EPHEMERAL_PREFIX = "ek_"

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API "
    "key from https://platform.openai.com/account/api-keys."
)


@dataclass(frozen=True)
class EphemeralKey:
    value: str
    expires_at: int
    session: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Credential:
    """An accepted caller: a standard key, or an ephemeral key with its session."""

    ephemeral: EphemeralKey | None = None

    @property
    def is_standard(self) -> bool:
        return self.ephemeral is None


class KeyStore:
    def __init__(
        self, ids: IdFactory, api_key: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._ids = ids
        self._api_key = api_key
        self._clock = clock
        self._ephemeral: dict[str, EphemeralKey] = {}
        self._lock = threading.Lock()

    def mint(self, ttl_seconds: int, session: dict[str, Any]) -> EphemeralKey:
        key = EphemeralKey(
            value=self._ids.new("ek", 32),
            expires_at=int(self._clock()) + ttl_seconds,
            session=session,
        )
        with self._lock:
            self._ephemeral[key.value] = key
        return key

    def expire(self, value: str) -> None:
        """Make an ephemeral key expired now (for tests of the refusal)."""
        with self._lock:
            key = self._ephemeral.get(value)
            if key is not None:
                self._ephemeral[value] = EphemeralKey(value, int(self._clock()) - 1, key.session)

    def authenticate(self, authorization: str | None, *, allow_ephemeral: bool) -> Credential:
        """Check an ``Authorization`` header value; raise ApiError(401) if refused."""
        token = _bearer(authorization)
        if not token:
            raise ApiError(401, _NO_KEY)
        if token.startswith(EPHEMERAL_PREFIX):
            return Credential(self._check_ephemeral(token, allow_ephemeral))
        if self._api_key is not None and token != self._api_key:
            raise _incorrect(token)
        return Credential()

    def _check_ephemeral(self, token: str, allowed: bool) -> EphemeralKey:
        with self._lock:
            key = self._ephemeral.get(token)
        if key is None:
            raise _incorrect(token)
        if key.expires_at <= self._clock():
            raise ApiError(
                401,
                "The ephemeral key has expired. Create a new one with "
                "POST /v1/realtime/client_secrets.",
                code="invalid_api_key",
            )
        if not allowed:
            raise ApiError(
                401,
                "Ephemeral keys can only start a Realtime session; this endpoint needs a "
                "standard API key.",
                code="invalid_api_key",
            )
        return key


def _bearer(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def redact(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) >= 12 else "***"


def _incorrect(token: str) -> ApiError:
    return ApiError(
        401,
        f"Incorrect API key provided: {redact(token)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )
