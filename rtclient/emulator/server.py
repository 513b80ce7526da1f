"""Signaling and control over aiohttp: the Realtime API's HTTP and WebSocket surface.

API routes (``/v1`` is part of the base URL, as in the ``openai`` package):

- ``POST /v1/realtime/calls``: ``application/sdp`` body, or ``multipart/form-data``
  with parts ``sdp`` and optional ``session`` (JSON); ``?model=`` optional.
  ``201``, SDP answer, ``Location: /v1/realtime/calls/rtc_...``.
- ``POST /v1/realtime/client_secrets``: mints ``ek_...`` keys (standard key only).
- ``POST /v1/realtime/calls/{call_id}/hangup``: ends a call (standard key only), and
  with it every connection on it (the call's data channel and its sidebands).
- ``GET /v1/realtime?model=...`` (WebSocket): a session over the socket;
  ``?call_id=rtc_...`` (standard key) joins a live WebRTC call's session as a
  sideband: it gets every server event of the session from then on (no
  ``session.created``: that went to the call) and its client events act on the same
  conversation. An unknown or ended call is ``404`` with code ``call_id_not_found``.

Azure OpenAI's shapes of the same API (a ``base_url`` of ``http://127.0.0.1:PORT/openai/v1``
- ``Emulator.azure_url``):

- ``/openai/v1/realtime/calls``, ``.../{call_id}/hangup``, ``/openai/v1/realtime/
  client_secrets`` and ``GET /openai/v1/realtime?model=`` (WebSocket): as above, the
  model being the deployment's name.
- ``GET /openai/realtime?api-version=...&deployment=...`` (WebSocket): the dated API
  versions' route, as the ``openai`` package's ``AzureOpenAI`` client asks it; both
  query parameters are required.
- On these routes a key may come in the ``api-key`` header instead of
  ``Authorization: Bearer`` (an Entra ID token or an ephemeral key). Each session
  records how its requests authenticated (``Session.auth``).

Control routes (no key; for tests and benchmarks in another process):

- ``GET /_emulator/stats``: counters (``sessions``, ``creates``, ``rejections``,
  ``responses`` ...), see :meth:`Emulator.stats`.
- ``GET /_emulator/calls/{id}``: one session's counters, client events and errors.
- ``POST /_emulator/calls/{id}/speech`` ``{"text", "duration_ms"}``: the user speaks.
- ``POST /_emulator/calls/{id}/faults`` ``{knob: value}``: change a live session's faults.
- ``POST /_emulator/faults`` ``{knob: value}``: change the default for new sessions.

``{id}`` is a call id or a session id. Every failure is a JSON body
``{"error": {"message", "type", "param", "code"}}`` with the API's status code, never a
stack trace.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, WSMsgType, web
from loguru import logger
from pydantic import TypeAdapter, ValidationError

from .auth import Credential
from .errors import SERVER_ERROR, ApiError
from .live.routes import add_live_routes
from .peer import Peer
from .registry import Registry
from .routing import REGISTRY_KEY, WS_MAX_MESSAGE, faults_from, json_body
from .routing import authorization as authorization_of
from .routing import registry as registry_of
from .session import Session
from .sip.routes import add_sip_routes
from .websocket import WebSocketLink

try:
    from openai.types.realtime import RealtimeSessionCreateRequest
except ImportError as exc:  # pragma: no cover - dependency missing
    raise ImportError("rtclient.emulator needs the `openai` package: pip install openai") from exc

_SESSION_ADAPTER: TypeAdapter[Any] = TypeAdapter(RealtimeSessionCreateRequest)
AZURE_PREFIX = "/openai"
_DATED_ROUTE = AZURE_PREFIX + "/realtime"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(registry: Registry) -> web.Application:
    app = web.Application(middlewares=[_errors_as_json], client_max_size=WS_MAX_MESSAGE)
    app[REGISTRY_KEY] = registry
    for prefix in ("/v1", AZURE_PREFIX + "/v1"):
        app.router.add_post(f"{prefix}/realtime/calls", create_call)
        app.router.add_post(f"{prefix}/realtime/calls/{{call_id}}/hangup", hangup)
        app.router.add_post(f"{prefix}/realtime/client_secrets", client_secrets)
        app.router.add_get(f"{prefix}/realtime", realtime_websocket)
    app.router.add_get(AZURE_PREFIX + "/realtime", realtime_websocket)  # dated API versions
    app.router.add_get("/_emulator/stats", control_stats)
    app.router.add_get("/_emulator/calls/{key}", control_session)
    app.router.add_post("/_emulator/calls/{key}/speech", control_speech)
    app.router.add_post("/_emulator/calls/{key}/faults", control_session_faults)
    app.router.add_post("/_emulator/faults", control_default_faults)
    add_live_routes(app)
    add_sip_routes(app)
    return app


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status == 404:
            error = ApiError(404, f"Invalid URL ({request.method} {request.path})")
        elif exc.status == 405:
            error = ApiError(405, f"Invalid method for URL ({request.method} {request.path})")
        else:
            error = ApiError(exc.status, exc.reason)
        return web.json_response(error.body(), status=error.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("emulator: {} {} failed", request.method, request.path)
        error = ApiError(
            500,
            "The server had an error while processing your request. Sorry about that!",
            type=SERVER_ERROR,
        )
        return web.json_response(error.body(), status=500)


def _emulator(request: web.Request) -> Registry:
    return registry_of(request)


def _authenticate(request: web.Request, *, allow_ephemeral: bool) -> Credential:
    """The caller's key: ``Authorization: Bearer``, or on an Azure route the ``api-key``
    header (first) or a subprotocol key (a browser's WebSocket)."""
    api_key = request.headers.get("api-key") if _is_azure(request) else None
    return _emulator(request).keys.authenticate(
        authorization_of(request), allow_ephemeral=allow_ephemeral, api_key=api_key
    )


def _is_azure(request: web.Request) -> bool:
    return request.path.startswith(AZURE_PREFIX + "/")


# ------------------------------------------------------------------ the API routes
async def create_call(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    credential = _authenticate(request, allow_ephemeral=True)
    offer, session_part = await _read_offer(request)
    if not offer.lstrip().startswith("v=0") or "\nm=" not in offer:
        raise ApiError(400, "Invalid SDP offer: not a session description.", code="invalid_offer")
    config = emulator.new_session_config(
        model=request.query.get("model"),
        ephemeral_session=credential.ephemeral.session if credential.ephemeral else None,
        session_part=session_part,
    )
    session = emulator.open_session(config, media="webrtc", register=False)
    peer = Peer(session, emulator.forget_peer)
    try:
        answer = await peer.answer(offer)
    except Exception as exc:
        await peer.close_soon(grace=0)
        logger.debug("emulator: refused an offer: {}", exc)
        raise ApiError(400, f"Invalid SDP offer: {exc}", code="invalid_offer") from None
    emulator.register_peer(peer)
    emulator.register_session(session)
    session.record_auth("calls", credential.scheme, credential.shown)
    logger.debug("emulator: call {} answered", peer.call_id)
    prefix = AZURE_PREFIX + "/v1" if _is_azure(request) else "/v1"
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"{prefix}/realtime/calls/{peer.call_id}"},
    )


async def _read_offer(request: web.Request) -> tuple[str, dict[str, Any] | None]:
    content_type = request.content_type
    if content_type == "application/sdp":
        return await request.text(), None
    if content_type != "multipart/form-data":
        raise ApiError(
            400,
            f"Unsupported content type: '{content_type}'. This API method only accepts "
            "'application/sdp' and 'multipart/form-data' requests, but you specified the "
            f"header 'Content-Type: {content_type}'. Please try again with a supported "
            "content type.",
            code="unsupported_content_type",
        )
    offer: str | None = None
    session: dict[str, Any] | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "sdp":
                offer = await part.text()
            elif part.name == "session":
                session = _parse_session_part(await part.text())
    except (ValueError, AssertionError) as exc:
        raise ApiError(
            400, f"Could not parse the multipart body: {exc}", code="invalid_request"
        ) from None
    if offer is None:
        raise ApiError(
            400,
            "Missing required parameter: 'sdp'.",
            code="missing_required_parameter",
            param="sdp",
        )
    return offer, session


def _parse_session_part(text: str) -> dict[str, Any]:
    try:
        session = json.loads(text)
    except ValueError:
        raise ApiError(
            400, "The 'session' part is not valid JSON.", code="invalid_json", param="session"
        ) from None
    return validate_session_object(session, "session")


def validate_session_object(session: Any, param: str) -> dict[str, Any]:
    """A realtime session object as in a client secret request (``type`` required)."""
    if not isinstance(session, dict):
        raise ApiError(
            400,
            f"Invalid type for '{param}': expected an object.",
            code="invalid_type",
            param=param,
        )
    if session.get("type") is None:
        raise ApiError(
            400,
            f"Missing required parameter: '{param}.type'.",
            code="missing_required_parameter",
            param=f"{param}.type",
        )
    try:
        _SESSION_ADAPTER.validate_python(session)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in (param, *first.get("loc", ())))
        raise ApiError(
            400,
            f"Invalid value for '{where}': {first.get('msg')}.",
            code="invalid_value",
            param=where,
        ) from None
    return session


async def hangup(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    credential = _authenticate(request, allow_ephemeral=False)
    call_id = request.match_info["call_id"]
    peer = emulator.peer(call_id)
    if peer is None or peer.session.closed or not isinstance(peer.session, Session):
        raise _call_not_found(call_id)
    peer.session.record_auth("hangup", credential.scheme, credential.shown)
    await peer.close_soon(grace=0)
    return web.Response(status=200)


async def client_secrets(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    _authenticate(request, allow_ephemeral=False)
    body: Any = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
            ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_type")
    expires_after = body.get("expires_after") or {}
    seconds = expires_after.get("seconds", 600) if isinstance(expires_after, dict) else None
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 10 <= seconds <= 7200:
        raise ApiError(
            400,
            "Invalid 'expires_after.seconds': expected an integer from 10 to 7200, "
            f"got {seconds!r}.",
            code="invalid_value",
            param="expires_after.seconds",
        )
    session = validate_session_object(body.get("session") or {"type": "realtime"}, "session")
    if session.get("type") != "realtime":
        raise ApiError(
            400,
            "The emulator only supports realtime sessions (session.type 'realtime').",
            code="invalid_value",
            param="session.type",
        )
    return web.json_response(emulator.mint_client_secret(seconds, session))


async def realtime_websocket(request: web.Request) -> web.StreamResponse:
    emulator = _emulator(request)
    call_id = request.query.get("call_id")
    if call_id:
        credential = _authenticate(request, allow_ephemeral=False)
        peer = emulator.peer(call_id)
        if peer is None or peer.session.closed or not isinstance(peer.session, Session):
            raise _call_not_found(call_id)
        session = peer.session
        session.record_auth("sideband", credential.scheme, credential.shown)
    else:
        credential = _authenticate(request, allow_ephemeral=True)
        model = _websocket_model(request)
        config = emulator.new_session_config(
            model=model,
            ephemeral_session=credential.ephemeral.session if credential.ephemeral else None,
            session_part=None,
        )
        session = emulator.open_session(config, media="websocket")
        session.record_auth("realtime", credential.scheme, credential.shown)

    ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=WS_MAX_MESSAGE)
    await ws.prepare(request)
    link = WebSocketLink(ws)
    emulator.register_websocket(link)
    session.attach(link)
    try:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                session.handle_text(message.data, link)
            elif message.type == WSMsgType.ERROR:
                break
    finally:
        session.detach(link)
        link.close()
        await link.closed()
        emulator.forget_websocket(link)
    return ws


def _websocket_model(request: web.Request) -> str:
    """The session's model: ``?model=``, or on the dated Azure route ``?deployment=``
    (with its ``?api-version=``)."""
    wanted = ["model"]
    if request.path.rstrip("/") == _DATED_ROUTE:
        wanted = ["api-version", "deployment"]
    for name in wanted:
        if not request.query.get(name):
            raise ApiError(
                400,
                f"Missing required parameter: '{name}'.",
                code="missing_required_parameter",
                param=name,
            )
    return request.query[wanted[-1]]


def _call_not_found(call_id: str) -> ApiError:
    """The API's answer for a call it does not know (or that has ended)."""
    return ApiError(404, f"Call '{call_id}' not found.", code="call_id_not_found", param="call_id")


# --------------------------------------------------------------- control routes
async def control_stats(request: web.Request) -> web.Response:
    return web.json_response(_emulator(request).stats())


def _control_session(request: web.Request) -> Any:
    key = request.match_info["key"]
    try:
        return _emulator(request).session(key)
    except KeyError:
        raise ApiError(404, f"Session '{key}' not found.", code="session_not_found") from None


async def control_session(request: web.Request) -> web.Response:
    session = _control_session(request)
    return web.json_response(
        {
            "id": session.id,
            "call_id": session.call_id,
            "media": session.media,
            "closed": session.closed,
            "counters": session.counters,
            "auth": session.auth,
            "faults": session.faults.to_json(),
            "client_events": session.client_events,
            "errors": session.errors,
        }
    )


async def control_speech(request: web.Request) -> web.Response:
    session = _control_session(request)
    body = await json_body(request)
    if session.closed:
        raise ApiError(409, f"Session '{session.id}' is closed.", code="session_closed")
    result = await session.speech(
        text=str(body.get("text", "Hello.")), duration_ms=int(body.get("duration_ms", 800))
    )
    return web.json_response(result)


async def control_session_faults(request: web.Request) -> web.Response:
    session = _control_session(request)
    session.faults = faults_from(session.faults, await json_body(request))
    return web.json_response({"faults": session.faults.to_json()})


async def control_default_faults(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    emulator.faults = faults_from(emulator.faults, await json_body(request))
    return web.json_response({"faults": emulator.faults.to_json()})
