"""What every route module shares: the registry behind a request, keys, JSON bodies.

The Realtime routes (``server``) and the Live routes (``live.routes``) are mounted on
one aiohttp application; they reach the emulator's state through the registry stored
on it, and read keys and control bodies the same way.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .errors import ApiError
from .faults import Faults
from .registry import Registry

WS_MAX_MESSAGE = 32 * 1024 * 1024  # input_audio_buffer.append carries up to 15 MiB
REGISTRY_KEY: web.AppKey[Registry] = web.AppKey("registry")
_SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."


def registry(request: web.Request) -> Registry:
    return request.app[REGISTRY_KEY]


def authorization(request: web.Request) -> str | None:
    """The ``Authorization`` header, or the key a browser passes as a WebSocket
    subprotocol (``openai-insecure-api-key.<key>``)."""
    header = request.headers.get("Authorization")
    if header:
        return header
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(_SUBPROTOCOL_KEY_PREFIX):
            return "Bearer " + protocol[len(_SUBPROTOCOL_KEY_PREFIX) :]
    return None


async def json_body(request: web.Request) -> dict[str, Any]:
    """A control route's JSON object body (``{}`` when there is none)."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_type")
    return body


def faults_from(current: Faults, body: dict[str, Any]) -> Faults:
    """``current`` with the knobs of a control body replaced (unknown knobs refused)."""
    try:
        return Faults.from_json({**current.to_json(), **body})
    except (TypeError, ValueError) as exc:
        raise ApiError(400, str(exc), code="invalid_value") from None
