"""The webhook that announces a phone call, verified before a byte of it is trusted.

When a SIP INVITE reaches the project's OpenAI SIP address, the API posts a signed
webhook to the app: ``realtime.call.incoming`` (``data.call_id``, an ``rtc_...`` id for
the Realtime API's call routes) and, for a project with GPT-Live, also
``live.transport.incoming`` (``data.session_id``, a ``live_...`` id for the Live
routes; ``live.call.incoming`` is its deprecated name). Both announce the same pending
call: whichever accept succeeds first decides which API runs it.

The signature scheme is standard-webhooks: headers ``webhook-id`` (the same on every
retry of one message), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` (``v1,<base64>`` entries, any one may match), with the project's
``whsec_...`` secret. :func:`verify_webhook` checks it with the ``openai`` package's own
verifier (``client.webhooks.unwrap``) on the raw body, and refuses with a typed error:

* :class:`~rtclient.errors.WebhookTimestampError` - the timestamp is more than
  ``tolerance`` seconds (300) from now, older or newer, or not a number (a replay);
* :class:`~rtclient.errors.WebhookSignatureError` - no signature matches (forged,
  altered, the wrong secret) or a header is missing.

Answer both with ``400`` and do nothing else. ``sip_headers`` are the caller's INVITE
headers: verified to come from OpenAI, but written by whoever dialled - never use them
to authorize anything.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rtclient.errors import RealtimeError, WebhookSignatureError, WebhookTimestampError

if TYPE_CHECKING:
    from openai.resources.webhooks.webhooks import Webhooks

Api = Literal["realtime", "live"]
DEFAULT_TOLERANCE = 300
CALL_EVENTS: dict[str, Api] = {
    "realtime.call.incoming": "realtime",
    "live.transport.incoming": "live",
    "live.call.incoming": "live",  # the deprecated name, still sent to old subscriptions
}
"""The webhook event types that announce a phone call, and the API each one is for."""


@dataclass(frozen=True)
class SipHeader:
    """One header of the caller's INVITE (order and repeats are kept)."""

    name: str
    value: str


@dataclass(frozen=True)
class IncomingCall:
    """A verified announcement of a phone call that waits to be accepted or rejected.

    ``call_id`` is the id the announcing API's call routes take: ``rtc_...`` for
    ``api="realtime"``, the Live session id (``live_...``) for ``api="live"``; pass it
    on unchanged. ``webhook_id`` is the same on every retry of this delivery.
    """

    api: Api
    call_id: str
    webhook_id: str
    event_id: str
    event_type: str
    created_at: int
    sip_headers: tuple[SipHeader, ...]

    def header(self, name: str) -> str | None:
        """The first INVITE header called ``name`` (any case), or None. Untrusted."""
        wanted = name.lower()
        return next((h.value for h in self.sip_headers if h.name.lower() == wanted), None)

    @property
    def caller(self) -> str | None:
        """The INVITE's ``From`` header (the caller says who it is: untrusted)."""
        return self.header("From")

    def dedupe_keys(self) -> tuple[str, str]:
        """What a repeated delivery shares with the first: the webhook id (every retry
        of one message) and the call (a second message about the same call)."""
        return f"webhook:{self.webhook_id}", f"{self.api}:{self.call_id}"


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    secret: str | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> IncomingCall | None:
    """Verify a webhook delivery and return the phone call it announces.

    ``body`` is the raw request body exactly as received (verify before parsing);
    ``headers`` the request's headers (any mapping; names in any case). ``secret`` is the
    endpoint's ``whsec_...`` signing secret (default: ``OPENAI_WEBHOOK_SECRET``).
    Returns None for a genuine webhook of another type (answer it 2xx). Raises
    :class:`~rtclient.errors.WebhookTimestampError` or
    :class:`~rtclient.errors.WebhookSignatureError` (answer 400).
    """
    secret = secret if secret is not None else os.environ.get("OPENAI_WEBHOOK_SECRET")
    if not secret:
        raise RealtimeError("no webhook secret: pass secret= or set OPENAI_WEBHOOK_SECRET")
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not lowered.get(name):
            raise WebhookSignatureError(f"the {name} header is missing")
    _check_timestamp(lowered["webhook-timestamp"], tolerance)
    from openai import InvalidWebhookSignatureError

    try:
        _webhooks(secret).verify_signature(body, lowered, secret=secret, tolerance=tolerance)
    except InvalidWebhookSignatureError:
        raise WebhookSignatureError("the webhook signature does not match its body") from None
    except (ValueError, UnicodeDecodeError) as exc:  # a malformed header or body
        raise WebhookSignatureError(f"the webhook cannot be verified: {exc}") from None
    try:
        event = json.loads(body)
    except ValueError:
        raise WebhookSignatureError("the signed body is not JSON") from None
    return _incoming_call(event, lowered["webhook-id"])


def _check_timestamp(value: str, tolerance: int) -> None:
    """The replay window, checked first so that a stale delivery gets its own type (the
    ``openai`` verifier checks it again, and reports both cases as one error)."""
    try:
        sent = int(value)
    except ValueError:
        raise WebhookTimestampError(f"webhook-timestamp is not a number: {value[:32]!r}") from None
    age = int(time.time()) - sent
    if age > tolerance:
        raise WebhookTimestampError(f"the webhook is {age} s old (tolerance {tolerance} s)")
    if -age > tolerance:
        raise WebhookTimestampError(
            f"the webhook is dated {-age} s ahead (tolerance {tolerance} s)"
        )


@functools.lru_cache(maxsize=4)
def _webhooks(secret: str) -> Webhooks:
    """The ``openai`` package's webhook verifier for ``secret`` (its client makes no
    request: it only verifies)."""
    from openai import OpenAI

    return OpenAI(api_key="unused: webhook verification only", webhook_secret=secret).webhooks


def _incoming_call(event: Any, webhook_id: str) -> IncomingCall | None:
    if not isinstance(event, dict):
        return None
    api = CALL_EVENTS.get(str(event.get("type")))
    data = event.get("data")
    if api is None or not isinstance(data, dict):
        return None
    call_id = data.get("call_id") if api == "realtime" else data.get("session_id")
    if not isinstance(call_id, str) or not call_id:
        return None
    headers = tuple(
        SipHeader(str(h.get("name", "")), str(h.get("value", "")))
        for h in data.get("sip_headers") or []
        if isinstance(h, dict)
    )
    created_at = event.get("created_at")
    return IncomingCall(
        api=api,
        call_id=call_id,
        webhook_id=webhook_id,
        event_id=str(event.get("id") or ""),
        event_type=str(event["type"]),
        created_at=created_at if isinstance(created_at, int) else 0,
        sip_headers=headers,
    )
