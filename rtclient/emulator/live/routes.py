"""GPT-Live's HTTP and WebSocket surface, and the control routes that drive it.

API routes (standard key only - GPT-Live issues no ephemeral keys):

- ``GET /v1/live/sessions`` (WebSocket, **no query parameters**): a primary
  connection; the server sends nothing until the client's ``session.start``.
- ``POST /v1/live/sessions`` JSON ``{"session": {...}, "transport": {"type": "webrtc",
  "sdp": "<offer>"}}`` -> ``200`` JSON ``{"session": {"id": "live_..."}, "transport":
  {"type": "webrtc", "sdp": "<answer>"}}``; ``session.started`` follows on the
  ``oai-events`` data channel once it opens. A refused config or offer is a ``400``
  ``{"error": {message, type, param, code}}``.
- ``GET /v1/live/sessions/{id}/attach[?graceful_close=true]`` (WebSocket): a sideband;
  unknown, unstarted or ended ``404`` (code ``session_not_found``).
- ``POST /v1/live/sessions/{id}/hangup``: ends the session (``session.closed``,
  ``close_requested``).

Control routes (no key; ``{id}`` is a ``live_...`` id; bodies are JSON objects):

- ``GET /_emulator/live/{id}``: the session's record (clock, config, counters,
  delegations with their appends, pending appends, transcript, errors, client events).
- ``POST /_emulator/live/{id}/speech`` ``{"text", "duration_ms"?, "with_audio"?}``: the
  user says ``text`` over the next ``duration_ms`` of input audio (``with_audio``: and
  that much silence arrives now); returns ``{"start_ms", "end_ms"}``.
- ``POST /_emulator/live/{id}/audio`` ``{"ms"}``: that much input audio (silence)
  arrives, as if the primary sent it; returns ``{"clock_ms"}``.
- ``POST /_emulator/live/{id}/delegate`` ``{"task"?}``: the model delegates now;
  returns the delegation (``id``, ``target``, ``offset_ms``, ``response_id``, ...).
- ``POST /_emulator/live/{id}/delegations/{delegation_id}/finish``: appends naming it
  are refused from now on (``delegation_not_active``).
- ``POST /_emulator/live/{id}/close`` ``{"reason"?}``: the server ends the session now
  (``session.closed``, default reason ``close_requested``).
- ``POST /_emulator/live/{id}/rules`` / ``POST /_emulator/live/rules``: change a
  session's :class:`~.rules.LiveRules` / the default for new sessions.
- ``POST /_emulator/live/{id}/faults``: change a session's :class:`~..faults.Faults`
  (``POST /_emulator/faults`` sets the default for Realtime and Live alike).
- ``GET /_emulator/live``: :meth:`~..registry.Registry.live_stats`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSMsgType, web
from loguru import logger

from ..errors import ApiError, ClientEventError
from ..peer import Peer
from ..routing import WS_MAX_MESSAGE, authorization, faults_from, json_body, registry
from ..websocket import WebSocketLink
from .rules import LiveRules
from .schema import check_create_request
from .session import LiveSession


def add_live_routes(app: web.Application) -> None:
    app.router.add_get("/v1/live/sessions", primary_websocket)
    app.router.add_post("/v1/live/sessions", create_webrtc_session)
    app.router.add_get("/v1/live/sessions/{session_id}/attach", sideband_websocket)
    app.router.add_post("/v1/live/sessions/{session_id}/hangup", hangup)
    app.router.add_get("/_emulator/live", control_stats)
    app.router.add_post("/_emulator/live/rules", control_default_rules)
    app.router.add_get("/_emulator/live/{key}", control_session)
    app.router.add_post("/_emulator/live/{key}/speech", control_speech)
    app.router.add_post("/_emulator/live/{key}/audio", control_audio)
    app.router.add_post("/_emulator/live/{key}/delegate", control_delegate)
    app.router.add_post("/_emulator/live/{key}/delegations/{delegation_id}/finish", control_finish)
    app.router.add_post("/_emulator/live/{key}/close", control_close)
    app.router.add_post("/_emulator/live/{key}/rules", control_session_rules)
    app.router.add_post("/_emulator/live/{key}/faults", control_session_faults)


# ------------------------------------------------------------------ the API routes
async def primary_websocket(request: web.Request) -> web.StreamResponse:
    emulator = registry(request)
    emulator.keys.authenticate(authorization(request), allow_ephemeral=False)
    for name in request.query:
        raise ApiError(
            400,
            f"Unknown parameter: '{name}'. A Live WebSocket takes no query parameters; the "
            "model and the configuration go in session.start.",
            code="unknown_parameter",
            param=name,
        )
    session = emulator.open_live_session(media="websocket")
    ws = web.WebSocketResponse(max_msg_size=WS_MAX_MESSAGE)
    await ws.prepare(request)
    link = WebSocketLink(ws)
    emulator.register_websocket(link)
    session.attach(link)
    try:
        await _pump(ws, session, link)
    finally:
        session.detach(link)
        link.close()
        await link.closed()
        emulator.forget_websocket(link)
    return ws


async def sideband_websocket(request: web.Request) -> web.StreamResponse:
    emulator = registry(request)
    emulator.keys.authenticate(authorization(request), allow_ephemeral=False)
    for name, value in request.query.items():
        if name != "graceful_close":
            raise ApiError(
                400, f"Unknown parameter: '{name}'.", code="unknown_parameter", param=name
            )
        if value not in ("true", "false"):
            raise ApiError(
                400,
                f"Invalid value for 'graceful_close': '{value}'. Expected true or false.",
                code="invalid_value",
                param="graceful_close",
            )
    session = _running(emulator.live_sessions, request.match_info["session_id"])
    ws = web.WebSocketResponse(max_msg_size=WS_MAX_MESSAGE)
    await ws.prepare(request)
    link = WebSocketLink(ws)
    emulator.register_websocket(link)
    session.attach_sideband(link)
    try:
        await _pump(ws, session, link)
    finally:
        session.detach(link)
        link.close()
        await link.closed()
        emulator.forget_websocket(link)
    return ws


async def _pump(ws: web.WebSocketResponse, session: LiveSession, link: WebSocketLink) -> None:
    async for message in ws:
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            session.handle_text(message.data, link)
        elif message.type == WSMsgType.ERROR:
            break


async def create_webrtc_session(request: web.Request) -> web.Response:
    emulator = registry(request)
    emulator.keys.authenticate(authorization(request), allow_ephemeral=False)
    if request.content_type != "application/json":
        raise ApiError(
            400,
            f"Unsupported content type: '{request.content_type}'. POST /v1/live/sessions takes "
            "a JSON body {session, transport}.",
            code="unsupported_content_type",
        )
    try:
        body: Any = await request.json()
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    try:
        config, offer = check_create_request(body, emulator.live_rules)
    except ClientEventError as exc:
        raise ApiError(400, exc.message, code=exc.code, param=exc.param, type=exc.type) from None
    if not offer.lstrip().startswith("v=0") or "\nm=" not in offer:
        raise ApiError(
            400,
            "Invalid SDP offer: not a session description.",
            code="invalid_offer",
            param="transport.sdp",
        )
    session = emulator.open_live_session(media="webrtc", register=False)
    session.start_media(config)
    peer = Peer(session, emulator.forget_peer)
    try:
        answer = await peer.answer(offer)
    except Exception as exc:
        await peer.close_soon(grace=0)
        logger.debug("emulator: refused a Live offer: {}", exc)
        raise ApiError(
            400, f"Invalid SDP offer: {exc}", code="invalid_offer", param="transport.sdp"
        ) from None
    emulator.register_peer(peer)
    emulator.register_live_session(session)
    return web.json_response(
        {"session": {"id": session.id}, "transport": {"type": "webrtc", "sdp": answer}}
    )


async def hangup(request: web.Request) -> web.Response:
    emulator = registry(request)
    emulator.keys.authenticate(authorization(request), allow_ephemeral=False)
    session = _running(emulator.live_sessions, request.match_info["session_id"])
    session.end("close_requested")
    return web.Response(status=200)


def _running(sessions: list[LiveSession], session_id: str) -> LiveSession:
    """The started, open Live session with this id, else the API's 404."""
    for session in reversed(sessions):
        if session.id == session_id and session.started and not session.closed:
            return session
    raise ApiError(
        404,
        f"Live session '{session_id}' not found.",
        code="session_not_found",
        param="session_id",
    )


# --------------------------------------------------------------- control routes
def _session(request: web.Request) -> LiveSession:
    key = request.match_info["key"]
    try:
        return registry(request).live_session(key)
    except KeyError:
        raise ApiError(404, f"Live session '{key}' not found.", code="session_not_found") from None


def _running_or_409(request: web.Request) -> LiveSession:
    session = _session(request)
    if not session.started or session.closed:
        raise ApiError(409, f"Live session '{session.id}' is not running.", code="session_closed")
    return session


async def control_stats(request: web.Request) -> web.Response:
    return web.json_response(registry(request).live_stats())


async def control_session(request: web.Request) -> web.Response:
    return web.json_response(_session(request).snapshot())


async def control_speech(request: web.Request) -> web.Response:
    session = _running_or_409(request)
    body = await json_body(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(
            400, "'text' must be a non-empty string.", code="invalid_value", param="text"
        )
    duration = body.get("duration_ms")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        raise ApiError(400, "'duration_ms' must be a positive integer.", code="invalid_value")
    result = session.speech(text, duration, with_audio=bool(body.get("with_audio", False)))
    return web.json_response(result)


async def control_audio(request: web.Request) -> web.Response:
    session = _running_or_409(request)
    milliseconds = (await json_body(request)).get("ms")
    if not isinstance(milliseconds, int) or milliseconds <= 0:
        raise ApiError(400, "'ms' must be a positive integer.", code="invalid_value", param="ms")
    return web.json_response({"clock_ms": session.feed(milliseconds)})


async def control_delegate(request: web.Request) -> web.Response:
    session = _running_or_409(request)
    task = str((await json_body(request)).get("task", ""))
    return web.json_response(session.delegate_task(task, session.timeline.now_ms))


async def control_finish(request: web.Request) -> web.Response:
    session = _session(request)
    delegation_id = request.match_info["delegation_id"]
    try:
        session.finish_delegation(delegation_id)
    except KeyError:
        raise ApiError(
            404, f"Delegation '{delegation_id}' not found.", code="delegation_not_found"
        ) from None
    return web.json_response({"id": delegation_id, "finished": True})


async def control_close(request: web.Request) -> web.Response:
    session = _running_or_409(request)
    reason = str((await json_body(request)).get("reason", "close_requested"))
    session.end(reason)
    return web.json_response({"id": session.id, "reason": reason})


def _rules_from(current: LiveRules, body: dict[str, Any]) -> LiveRules:
    try:
        return LiveRules.from_json({**current.to_json(), **body})
    except (TypeError, ValueError) as exc:
        raise ApiError(400, str(exc), code="invalid_value") from None


async def control_session_rules(request: web.Request) -> web.Response:
    session = _session(request)
    session.rules = _rules_from(session.rules, await json_body(request))
    return web.json_response({"rules": session.rules.to_json()})


async def control_default_rules(request: web.Request) -> web.Response:
    emulator = registry(request)
    emulator.live_rules = _rules_from(emulator.live_rules, await json_body(request))
    return web.json_response({"rules": emulator.live_rules.to_json()})


async def control_session_faults(request: web.Request) -> web.Response:
    session = _session(request)
    session.faults = faults_from(session.faults, await json_body(request))
    return web.json_response({"faults": session.faults.to_json()})
