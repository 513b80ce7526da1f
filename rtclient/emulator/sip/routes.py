"""The phone-call routes: each API's call control, and the control routes that dial.

API routes (standard key; ``{base}`` = ``/v1``):

- ``POST {base}/realtime/calls/{call_id}/accept``: the Realtime session config at the
  top level (``type: "realtime"`` required; checked strictly against
  ``RealtimeSessionCreateRequest``, an unknown field is ``unknown_parameter``) -> 200.
- ``POST {base}/realtime/calls/{call_id}/reject`` ``{"status_code"?}`` (default 603)
  and ``POST {base}/live/sessions/{session_id}/reject`` ``{"status_code"}``
  (required): ``300..699`` (GPT-Live's documented range; the emulator holds the
  Realtime API to it as well) -> 200.
- ``POST {base}/live/sessions/{session_id}/accept`` ``{"session": {"type": "live",
  "model", ...}}`` (checked strictly; no ``audio.format``: SIP negotiates it) -> 200.
- ``POST .../refer`` ``{"target_uri"}`` (non-blank), both APIs -> 200; the session
  ends. Hang-ups use the routes that end any call (``.../hangup``).

Control routes (no key; ``{id}`` is either of a call's ids):

- ``POST /_emulator/sip/webhook`` ``{"url", "secret"}``: the default webhook endpoint.
- ``POST /_emulator/sip/calls`` ``{"apis"?: ["realtime", "live"], "from"?, "to"?,
  "sip_headers"?, "url"?, "secret"?, "signature"?: "valid"|"forged"|"missing",
  "timestamp_offset"?, "copies"?}``: a call rings; returns its record once the
  webhooks were delivered (``deliveries``: each with the endpoint's ``status``;
  ``copies``: each message delivered that many times at once). ``requests`` lists the
  call-control requests the call got, and how each was answered.
- ``GET /_emulator/sip/calls`` / ``GET /_emulator/sip/calls/{id}``: the records.
- ``POST /_emulator/sip/calls/{id}/redeliver`` ``{"apis"?, "signature"?,
  "timestamp_offset"?, "copies"?}``: the same messages again (same webhook ids): a retry.
- ``POST /_emulator/sip/calls/{id}/speech`` ``{"text", "audio"?: "tone"|"silence",
  "file"?, "duration_ms"?}``: the caller speaks (generated audio, default 200 ms a word,
  or a sound file's) and the session answers; returns once the audio was played.
- ``POST /_emulator/sip/calls/{id}/dtmf`` ``{"digits": "12#"}``: keypresses.
- ``POST /_emulator/sip/calls/{id}/hangup``: the caller hangs up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from aiohttp import web
from openai import BaseModel
from openai.types.realtime import RealtimeSessionCreateRequest
from pydantic import TypeAdapter

from ..errors import ApiError, ClientEventError
from ..live.schema import MediaSessionConfig, check_session
from ..routing import authorization, json_body, registry
from ..validation import check_strictly
from .calls import APIS, Switchboard, switchboard
from .phone import read_audio, tone
from .webhooks import SIGNATURES, Endpoint

_REALTIME_SESSION: TypeAdapter[Any] = TypeAdapter(RealtimeSessionCreateRequest)
REJECT_RANGE = range(300, 700)
DECLINE = 603
_MS_PER_WORD = 200


class LiveAcceptSession(MediaSessionConfig):
    """A SIP accept's ``session``: the WebRTC creation's, plus the required type."""

    type: Literal["live"]
    triggers: Optional[list[Any]] = None  # noqa: UP045 - the openai models' style


class LiveAcceptRequest(BaseModel):
    session: LiveAcceptSession


_LIVE_ACCEPT: TypeAdapter[Any] = TypeAdapter(LiveAcceptRequest)


def add_sip_routes(app: web.Application) -> None:
    for api, base in (
        ("realtime", "/v1/realtime/calls/{key}"),
        ("live", "/v1/live/sessions/{key}"),
    ):
        app.router.add_post(f"{base}/accept", _api_route(api, accept))
        app.router.add_post(f"{base}/reject", _api_route(api, reject))
        app.router.add_post(f"{base}/refer", _api_route(api, refer))
    app.router.add_post("/_emulator/sip/webhook", control_webhook)
    app.router.add_post("/_emulator/sip/calls", control_dial)
    app.router.add_get("/_emulator/sip/calls", control_list)
    app.router.add_get("/_emulator/sip/calls/{key}", control_call)
    app.router.add_post("/_emulator/sip/calls/{key}/redeliver", control_redeliver)
    app.router.add_post("/_emulator/sip/calls/{key}/speech", control_speech)
    app.router.add_post("/_emulator/sip/calls/{key}/dtmf", control_dtmf)
    app.router.add_post("/_emulator/sip/calls/{key}/hangup", control_hangup)


def _board(request: web.Request) -> Switchboard:
    return switchboard(registry(request))


def _api_route(api: str, verb: Any) -> Any:
    async def route(request: web.Request) -> web.Response:
        registry(request).keys.authenticate(authorization(request), allow_ephemeral=False)
        key = request.match_info["key"]
        try:
            await verb(request, api, key, await json_body(request))
        except ApiError as exc:
            _board(request).note(api, key, verb.__name__, exc.status)
            raise
        _board(request).note(api, key, verb.__name__, 200)
        return web.Response(status=200)

    return route


# ------------------------------------------------------------------ the API routes
async def accept(request: web.Request, api: str, key: str, body: dict[str, Any]) -> None:
    board = _board(request)
    try:
        if api == "realtime":
            check_strictly(_REALTIME_SESSION, body)
            config = board.registry.new_session_config(
                model=None, ephemeral_session=None, session_part=body
            )
        else:
            check_strictly(_LIVE_ACCEPT, body)
            config = body["session"]
            check_session(config, board.registry.live_rules, "session")
            for field in ("idle_timeout_s", "wake_policy", "triggers"):
                if config.get(field) is not None:
                    raise ClientEventError(
                        "emulator_unsupported",
                        f"'session.{field}' is not emulated for phone calls.",
                        param=f"session.{field}",
                    )
    except ClientEventError as exc:
        raise ApiError(400, exc.message, code=exc.code, param=exc.param, type=exc.type) from None
    await board.accept(api, key, config, body)


async def reject(request: web.Request, api: str, key: str, body: dict[str, Any]) -> None:
    _only(body, ("status_code",))
    code = body.get("status_code")
    if code is None and api == "realtime":
        code = DECLINE
    if code is None:
        raise ApiError(
            400,
            "Missing required parameter: 'status_code'.",
            code="missing_required_parameter",
            param="status_code",
        )
    if isinstance(code, bool) or not isinstance(code, int) or code not in REJECT_RANGE:
        raise ApiError(
            400,
            f"Invalid 'status_code': {code!r}. Expected a SIP rejection status from 300 to 699.",
            code="invalid_value",
            param="status_code",
        )
    _board(request).reject(api, key, code)


async def refer(request: web.Request, api: str, key: str, body: dict[str, Any]) -> None:
    _only(body, ("target_uri",))
    target = body.get("target_uri")
    if target is None:
        raise ApiError(
            400,
            "Missing required parameter: 'target_uri'.",
            code="missing_required_parameter",
            param="target_uri",
        )
    if not isinstance(target, str) or not target.strip():
        raise ApiError(
            400,
            "Invalid 'target_uri': expected a non-blank URI such as tel:+14155550123.",
            code="invalid_value",
            param="target_uri",
        )
    await _board(request).refer(api, key, target)


def _only(body: dict[str, Any], fields: tuple[str, ...]) -> None:
    for name in body:
        if name not in fields:
            raise ApiError(
                400, f"Unknown parameter: '{name}'.", code="unknown_parameter", param=name
            )


# --------------------------------------------------------------- control routes
def _call(request: web.Request) -> Any:
    key = request.match_info["key"]
    try:
        return _board(request).call(key)
    except KeyError:
        raise ApiError(404, f"Phone call '{key}' not found.", code="call_not_found") from None


async def control_webhook(request: web.Request) -> web.Response:
    body = await json_body(request)
    board = _board(request)
    board.endpoint = Endpoint(str(body.get("url", "")), str(body.get("secret", "")))
    return web.json_response({"url": board.endpoint.url})


async def control_dial(request: web.Request) -> web.Response:
    body = await json_body(request)
    board = _board(request)
    endpoint = board.endpoint
    if "url" in body or "secret" in body:
        default_secret = endpoint.secret if endpoint else ""
        endpoint = Endpoint(
            str(body.get("url", endpoint.url if endpoint else "")),
            str(body.get("secret", default_secret)),
        )
    if endpoint is None:
        raise ApiError(
            400,
            "No webhook endpoint: POST /_emulator/sip/webhook {url, secret} first, or give "
            "url and secret here.",
            code="missing_required_parameter",
            param="url",
        )
    apis = tuple(body.get("apis") or ("realtime",))
    if not apis or any(api not in APIS for api in apis) or len(set(apis)) != len(apis):
        raise ApiError(400, "'apis' lists 'realtime' and/or 'live'.", code="invalid_value")
    headers = body.get("sip_headers")
    if headers is None:
        caller, callee = str(body.get("from", "+15550100")), str(body.get("to", "+15550199"))
        headers = [
            {"name": "From", "value": f"sip:{caller}@sip.example.com"},
            {"name": "To", "value": f"sip:{callee}@sip.example.com"},
            {"name": "Call-ID", "value": f"{board.registry.ids.hex('', 16)[1:]}@emulator"},
        ]
    if not isinstance(headers, list) or not all(
        isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("value"), str)
        for h in headers
    ):
        raise ApiError(400, "'sip_headers' is a list of {name, value}.", code="invalid_value")
    call = await board.dial(endpoint=endpoint, apis=apis, sip_headers=headers, **_how(body))
    return web.json_response(board.snapshot(call.call_id))


def _how(body: dict[str, Any]) -> dict[str, Any]:
    signature = body.get("signature", "valid")
    offset = body.get("timestamp_offset", 0)
    copies = body.get("copies", 1)
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= 16:
        raise ApiError(400, "'copies' is 1..16.", code="invalid_value")
    if signature not in SIGNATURES:
        raise ApiError(400, f"'signature' is one of {', '.join(SIGNATURES)}.", code="invalid_value")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ApiError(400, "'timestamp_offset' is whole seconds.", code="invalid_value")
    return {"signature": signature, "timestamp_offset": offset, "copies": copies}


async def control_list(request: web.Request) -> web.Response:
    board = _board(request)
    return web.json_response([board.snapshot(c.call_id) for c in board.calls])


async def control_call(request: web.Request) -> web.Response:
    return web.json_response(_board(request).snapshot(_call(request).call_id))


async def control_redeliver(request: web.Request) -> web.Response:
    call, body = _call(request), await json_body(request)
    apis = body.get("apis")
    deliveries = await _board(request).redeliver(
        call, apis=tuple(apis) if apis else None, **_how(body)
    )
    return web.json_response([d.to_json() for d in deliveries])


async def control_speech(request: web.Request) -> web.Response:
    call, body = _call(request), await json_body(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "'text' must be a non-empty string.", code="invalid_value")
    if body.get("file") is not None:
        path = Path(str(body["file"]))
        if not path.is_file():
            raise ApiError(400, f"No audio file at {path}.", code="invalid_value", param="file")
        pcm = read_audio(path)
    else:
        duration = body.get("duration_ms") or _MS_PER_WORD * len(text.split())
        if not isinstance(duration, int) or not 20 <= duration <= 60_000:
            raise ApiError(400, "'duration_ms' is 20..60000.", code="invalid_value")
        sound = body.get("audio", "tone")
        if sound not in ("tone", "silence"):
            raise ApiError(400, "'audio' is 'tone' or 'silence'.", code="invalid_value")
        pcm = tone(duration) if sound == "tone" else bytes(duration * 96)
    return web.json_response(await _board(request).speak(call, text, pcm))


async def control_dtmf(request: web.Request) -> web.Response:
    call, body = _call(request), await json_body(request)
    _board(request).press(call, str(body.get("digits", "")))
    return web.json_response({"dtmf": list(call.dtmf)})


async def control_hangup(request: web.Request) -> web.Response:
    call = _call(request)
    await _board(request).caller_hangs_up(call)
    return web.json_response(_board(request).snapshot(call.call_id))
