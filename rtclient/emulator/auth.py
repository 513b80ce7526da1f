"""Who may call: standard keys, ephemeral ``ek_`` keys, and the API's 401 bodies.

Any non-empty bearer is a standard key unless the emulator was given ``api_key=``, in
which case only that one is. On the Azure OpenAI routes a standard key may also come in
the ``api-key`` header (Azure's resource key), and a bearer token stands for a
Microsoft Entra ID token; the emulator checks both against ``api_key=`` alike. ``ek_``
keys are minted by ``POST /v1/realtime/client_secrets`` with an expiry; an unknown or
expired one is refused.
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
    scheme: str = "bearer"
    """How it came: ``"bearer"`` (``Authorization: Bearer``), ``"api-key"`` (the Azure
    header) or ``"ephemeral"`` (a bearer ``ek_`` key)."""
    shown: str = "***"
    """The credential, redacted: what the emulator records (never the key)."""

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

    def authenticate(
        self, authorization: str | None, *, allow_ephemeral: bool, api_key: str | None = None
    ) -> Credential:
        """Check an ``Authorization`` header value - or, on an Azure route, an ``api-key``
        header value, which comes first; raise ApiError(401) if refused."""
        if api_key is not None:
            key = api_key.strip()
            if not key or (self._api_key is not None and key != self._api_key):
                raise _incorrect(key) if key else ApiError(401, _NO_KEY)
            return Credential(scheme="api-key", shown=redact(key))
        token = _bearer(authorization)
        if not token:
            raise ApiError(401, _NO_KEY)
        if token.startswith(EPHEMERAL_PREFIX):
            ephemeral = self._check_ephemeral(token, allow_ephemeral)
            return Credential(ephemeral, scheme="ephemeral", shown=redact(token))
        if self._api_key is not None and token != self._api_key:
            raise _incorrect(token)
        return Credential(shown=redact(token))

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
