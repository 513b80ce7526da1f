"""The Realtime API's HTTP surface around a call: the SDP offer, the hang-up, and errors.

Used by the WebRTC transport (its own call), the sideband WebSocket (its handshake
errors and ``hangup()``) and :mod:`rtclient.calls` (an app server creating a browser's
call), so that all of them build requests and read errors the same way:

* ``POST {base_url}/realtime/calls``: with a standard key, ``multipart/form-data``
  with parts ``sdp`` and ``session`` (JSON, the session config with ``model``); with
  an ephemeral key (``ek_...``), the raw SDP as ``application/sdp`` (the session was
  fixed when the key was minted). ``201``: the body is the SDP answer and
  ``Location: /v1/realtime/calls/{call_id}`` names the call.
* ``POST {base_url}/realtime/calls/{call_id}/hangup`` (standard key) ends a call for
  every connection on it.
* The same routes under an Azure OpenAI ``base_url`` (:mod:`.endpoint`: the
  deployment is the model; a resource key goes in the ``api-key`` header).
* GPT-Live: ``POST {base_url}/live/sessions`` creates a WebRTC session with JSON in
  and out (:func:`post_live_session`), and ``POST .../live/sessions/{id}/hangup``
  ends one.
* Every refusal is ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx
  status; :func:`signaling_error` makes it a :class:`SignalingError` subclass named as
  in the ``openai`` package (``AuthenticationError`` for 401, ``RateLimitError`` for
  429, ``InternalServerError`` for 5xx, ...; a :class:`CallNotFoundError`, which is a
  ``NotFoundError``, for ``call_id_not_found``) carrying ``status`` and ``code``. No
  HTTP answer at all (refused, reset, DNS) is an :class:`APIConnectionError`
  (:func:`connection_error`); one that does not come in time an
  :class:`APITimeoutError`, also a :class:`WaitTimeoutError`. The key is scrubbed from
  every message, and no message is built from request headers.

Everything here is a coroutine on the caller's event loop (a :class:`LoopThread`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from rtclient._secret import Secret
from rtclient.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CallNotFoundError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SignalingError,
    UnprocessableEntityError,
)
from rtclient.logs import short_id
from rtclient.transports.endpoint import Endpoint

DEFAULT_BASE_URL = "https://api.openai.com/v1"
CALL_NOT_FOUND = "call_id_not_found"
REALTIME_CALLS = "realtime/calls"
LIVE_SESSIONS = "live/sessions"
HANGUP_TIMEOUT = 2.0
# The openai package's split of API refusals by HTTP status (openai._exceptions).
ERRORS_BY_STATUS: dict[int, type[SignalingError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def resolve_base_url(base_url: str | None) -> str:
    """``base_url``, else ``OPENAI_BASE_URL``, else the API's (the ``openai`` package's
    convention: it includes ``/v1``); no trailing slash."""
    return (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def websocket_url(base_url: str, path: str = "realtime") -> str:
    """``{base_url}/{path}`` with the scheme turned to ws/wss."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return f"{base}/{path}"


def call_id_from_location(location: str) -> str | None:
    """The last path segment of ``Location: /v1/realtime/calls/rtc_...``."""
    return location.rstrip("/").rsplit("/", 1)[-1] or None


async def post_offer(
    http: aiohttp.ClientSession,
    base_url: str,
    key: Secret,
    sdp: str,
    *,
    session: Mapping[str, Any] | None,
) -> tuple[str, str | None]:
    """Post an SDP offer; returns ``(answer_sdp, call_id)``. ``session`` must carry
    ``type`` and ``model``; it is not sent with an ephemeral key."""
    endpoint = Endpoint.parse(base_url)
    url = endpoint.calls_url()
    headers = await endpoint.headers(key)
    body: Any
    if key.is_ephemeral:
        headers["Content-Type"] = "application/sdp"
        body = sdp
    else:
        body = aiohttp.FormData()
        body.add_field("sdp", sdp, content_type="application/sdp")
        body.add_field("session", json.dumps(dict(session or {})), content_type="application/json")
    try:
        async with http.post(url, data=body, headers=headers, params=endpoint.query) as resp:
            text = await resp.text()
            if resp.status not in (200, 201):
                raise signaling_error(resp.status, text, key, base_url)
            location = resp.headers.get("Location", "")
    except aiohttp.ClientError as exc:
        raise connection_error(exc, key) from None
    return text, call_id_from_location(location)


async def post_live_session(
    http: aiohttp.ClientSession,
    base_url: str,
    key: Secret,
    sdp: str,
    *,
    session: Mapping[str, Any],
) -> tuple[str, str]:
    """Create a GPT-Live WebRTC session: ``POST {base_url}/live/sessions`` with JSON
    ``{"session": {...}, "transport": {"type": "webrtc", "sdp": offer}}``; the answer
    is JSON too, ``{"session": {"id"}, "transport": {"sdp"}}`` (any 2xx). Returns
    ``(answer_sdp, session_id)``. An answer that is not usable SDP is refused here:
    the session it names is hung up (bounded) and :class:`SignalingError` raised."""
    url = f"{base_url.rstrip('/')}/live/sessions"
    headers = {"Authorization": f"Bearer {key.reveal()}"}
    body = {"session": dict(session), "transport": {"type": "webrtc", "sdp": sdp}}
    try:
        async with http.post(url, json=body, headers=headers) as resp:
            text = await resp.text()
            if not 200 <= resp.status < 300:
                raise signaling_error(resp.status, text, key)
    except aiohttp.ClientError as exc:
        raise connection_error(exc, key) from None
    answer, session_id = _live_answer(text)
    if session_id is None:
        raise SignalingError(key.redact(f"the answer names no session: {text[:200]}"))
    if answer is None or not answer.startswith("v="):
        try:
            await post_hangup(http, base_url, key, session_id, path=LIVE_SESSIONS)
        except SignalingError:
            pass
        raise SignalingError(f"the answer for {session_id} holds no usable SDP; hung up")
    return answer, session_id


def _live_answer(text: str) -> tuple[str | None, str | None]:
    """``(transport.sdp, session.id)`` of a create answer, each None where absent."""
    try:
        body = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    session, transport = body.get("session"), body.get("transport")
    session_id = session.get("id") if isinstance(session, dict) else None
    sdp = transport.get("sdp") if isinstance(transport, dict) else None
    return (
        sdp if isinstance(sdp, str) else None,
        session_id if isinstance(session_id, str) and session_id else None,
    )


async def post_hangup(
    http: aiohttp.ClientSession,
    base_url: str,
    key: Secret,
    call_id: str,
    *,
    timeout: float = HANGUP_TIMEOUT,
    path: str = REALTIME_CALLS,
) -> None:
    """End ``call_id`` for everyone on it (a GPT-Live session with
    ``path=LIVE_SESSIONS``); raises the API's refusal as a typed error."""
    endpoint = Endpoint.parse(base_url)
    if path == REALTIME_CALLS:
        url = endpoint.hangup_url(quote(call_id, safe=""))
    else:
        url = f"{endpoint.base_url}/{path}/{quote(call_id, safe='')}/hangup"
    headers = await endpoint.headers(key)
    try:
        async with http.post(
            url,
            headers=headers,
            params=endpoint.query,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            if resp.status >= 400:
                raise signaling_error(resp.status, await resp.text(), key, base_url)
    except aiohttp.ClientError as exc:
        raise connection_error(exc, key) from None
    except asyncio.TimeoutError:
        raise APITimeoutError(
            f"the hangup of {short_id(call_id)} was not answered within {timeout}s",
            code="timeout",
        ) from None


def error_class(status: int | None, code: str | None) -> type[SignalingError]:
    """The exception class for a refusal: by ``code`` where one is specific enough
    (``call_id_not_found``), else by HTTP status as the ``openai`` package splits them."""
    if code == CALL_NOT_FOUND:
        return CallNotFoundError
    if status is None:
        return SignalingError
    if status >= 500:
        return InternalServerError
    return ERRORS_BY_STATUS.get(status, SignalingError)


def signaling_error(
    status: int, text: str, key: Secret, base_url: str | None = None
) -> SignalingError:
    """The API's JSON error body as a typed exception (the key scrubbed, just in case).

    A 404 that is not about a call, from a ``base_url`` whose path does not end in
    ``/v1``, is almost always that missing ``/v1`` (``OPENAI_BASE_URL=http://host:port``
    instead of ``.../v1``): the message says so."""
    message, code = text[:500], None
    try:
        error = json.loads(text).get("error") or {}
        message = str(error.get("message") or message)
        code = error.get("code") or error.get("type")
    except (ValueError, AttributeError):
        pass
    code = code if isinstance(code, str) else None
    cls = error_class(status, code)
    if status == 404 and cls is not CallNotFoundError and base_url is not None:
        message += missing_v1_hint(base_url)
    return cls(key.redact(message), status=status, code=code)


def missing_v1_hint(base_url: str) -> str:
    """What to add to a 404's message when ``base_url``'s path does not end in ``/v1``
    (the API's routes, and the emulator's, all live under it); else ``""``."""
    path = urlsplit(base_url).path.rstrip("/")
    if path.endswith("/v1") or "/openai" in path:  # Azure's routes are under /openai
        return ""
    fixed = base_url.rstrip("/") + "/v1"
    return (
        f" - the base_url {base_url!r} does not end in /v1, where the Realtime API's "
        f"routes are: did you mean {fixed!r}?"
    )


def connection_error(exc: BaseException, key: Secret) -> APIConnectionError:
    """The server could not be reached at all (refused, reset, DNS ...), or aiohttp's own
    timeout fired first (:class:`APITimeoutError`, also a ``TimeoutError``)."""
    message = key.redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncio.TimeoutError):
        return APITimeoutError(message, code="timeout")
    return APIConnectionError(message, code="connection_error")


class ErrorBodies:
    """Keeps the body of a refused request, for a client that discards it.

    aiohttp's ``ws_connect`` raises ``WSServerHandshakeError`` with the status only; the
    API's JSON error (and its ``code``, e.g. ``call_id_not_found``) is in the body. This
    reads it through aiohttp's documented request tracing, before the handshake check
    releases the response. One instance per ``ClientSession``.
    """

    def __init__(self) -> None:
        self.last: tuple[int, str] | None = None
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_end.append(self._on_request_end)

    async def _on_request_end(
        self, session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        response = params.response
        if response.status >= 400:
            try:
                self.last = (response.status, await response.text())
            except (aiohttp.ClientError, UnicodeDecodeError, asyncio.TimeoutError):
                self.last = (response.status, "")
