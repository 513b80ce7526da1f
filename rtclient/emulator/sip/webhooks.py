"""The webhooks that announce a phone call: built, signed and delivered as the API does.

Each announcement is one JSON event - ``realtime.call.incoming`` (``data.call_id``) or
``live.transport.incoming`` (``data.type: "sip"``, ``data.session_id``) - posted with
the standard-webhooks headers ``webhook-id`` (``wh_...``, the same on every retry of
one message), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` (``v1,<base64>``), signed with the endpoint's ``whsec_...``
secret by the ``standardwebhooks`` package - not by the ``openai`` package that
rtclient verifies with, so the two implementations check each other.

A test can make a delivery go wrong on purpose: ``signature="forged"`` (signed with
another secret), ``"missing"`` (no signature header), or a ``timestamp_offset`` in
seconds (``-600``: a replayed, stale delivery). The endpoint must be on this machine
(``127.0.0.1``, ``localhost`` or ``::1``): the emulator never posts anywhere else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from standardwebhooks.webhooks import Webhook

from ..errors import ApiError

EVENT_TYPES = {"realtime": "realtime.call.incoming", "live": "live.transport.incoming"}
SIGNATURES = ("valid", "forged", "missing")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DELIVERY_TIMEOUT_S = 15.0
USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"


@dataclass(frozen=True)
class Endpoint:
    """Where the webhooks go, and the secret they are signed with (never shown)."""

    url: str
    secret: str

    def __post_init__(self) -> None:
        check_endpoint(self.url, self.secret)

    def __repr__(self) -> str:
        return f"Endpoint(url={self.url!r}, secret='whsec_***')"


@dataclass
class Delivery:
    """One attempt to deliver one message, as recorded."""

    webhook_id: str
    event_type: str
    attempt: int
    signature: str
    timestamp: int
    status: int | None = None
    """The endpoint's HTTP status; None if it could not be reached (``error`` says)."""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_endpoint(url: str, secret: str) -> None:
    """Refuse (400) an endpoint off this machine or a secret that is not ``whsec_``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK_HOSTS:
        raise ApiError(
            400,
            f"The webhook URL must be http(s) on {', '.join(LOOPBACK_HOSTS)}: the emulator "
            "posts nowhere else.",
            code="invalid_value",
            param="url",
        )
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ApiError(
            400,
            "The webhook secret must start with 'whsec_'.",
            code="invalid_value",
            param="secret",
        )
    try:
        Webhook(secret)
    except Exception:
        raise ApiError(
            400, "The webhook secret is not whsec_<base64>.", code="invalid_value", param="secret"
        ) from None


def call_event(api: str, event_id: str, call_id: str, session_id: str, headers: list[Any]) -> bytes:
    """The event body announcing the call to ``api`` (``"realtime"`` or ``"live"``)."""
    data: dict[str, Any]
    if api == "realtime":
        data = {"call_id": call_id, "sip_headers": headers}
    else:
        data = {"type": "sip", "session_id": session_id, "sip_headers": headers}
    event = {
        "object": "event",
        "id": event_id,
        "type": EVENT_TYPES[api],
        "created_at": int(time.time()),
        "data": data,
    }
    return json.dumps(event, separators=(",", ":")).encode()


def signed_headers(
    endpoint: Endpoint, webhook_id: str, body: bytes, *, signature: str, timestamp: int
) -> dict[str, str]:
    """The delivery's headers, signed as ``signature`` says (see the module docstring)."""
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
    }
    if signature == "missing":
        return headers
    secret = endpoint.secret
    if signature == "forged":
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    headers["webhook-signature"] = Webhook(secret).sign(webhook_id, when, body)
    return headers


async def deliver(
    endpoint: Endpoint,
    delivery: Delivery,
    body: bytes,
) -> Delivery:
    """Post one message; records the endpoint's status (or why there was none)."""
    headers = signed_headers(
        endpoint,
        delivery.webhook_id,
        body,
        signature=delivery.signature,
        timestamp=delivery.timestamp,
    )
    timeout = aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(endpoint.url, data=body, headers=headers, allow_redirects=False) as resp,
        ):
            await resp.read()
            delivery.status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        delivery.error = f"{type(exc).__name__}: {exc}"
    return delivery
