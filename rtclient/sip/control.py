"""Call control for a phone call: accept, reject, refer, hang up - each API its way.

Synchronous like :func:`rtclient.create_call` (bounded by ``timeout``; on
``loop_thread`` when given, else on a private event loop), standard key only. The two
APIs take the same four verbs on different routes and bodies (``{base}`` ends in
``/v1``):

=========  ==============================================  ============================
verb       Realtime (``rtc_...``)                          GPT-Live (``live_...``)
=========  ==============================================  ============================
accept     ``POST {base}/realtime/calls/{id}/accept``,     ``POST {base}/live/sessions/
           the session config at the top level with        {id}/accept``, wrapped:
           ``type: "realtime"``                            ``{"session": {"type":
                                                           "live", "model", ...}}``, no
                                                           ``audio.format``
reject     ``.../reject {"status_code"}``: optional, the   ``.../reject``: required
           API's default is ``603`` (Decline)              (rtclient sends 603 if none)
refer      ``.../refer {"target_uri"}`` (non-blank)        the same
hangup     ``.../hangup``                                  the same
=========  ==============================================  ============================

Checked here before anything is sent (``ValueError``): the config validates against
the ``openai`` package's type for that body (``RealtimeSessionCreateRequest``; Live's
``session_accept_params.Session``) - a Realtime accept whose body lacked ``type`` has
been reported answered 200 and the call then failing, so a bad body never leaves;
a rejection's status code is a SIP final failure, ``300..699`` (GPT-Live's documented
range; the Realtime API documents none, and anything else would not reject); a
transfer target is not blank.

Refusals are typed as every signaling error is (:class:`~rtclient.errors.SignalingError`
by status). A ``404`` is :class:`~rtclient.errors.CallNotFoundError`: the call is gone -
the caller hung up, it was already answered or rejected, or the other API's accept won
it. After a webhook retry that is normal: answer the webhook 200 anyway.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from rtclient.calls import _run, _standard_key, session_tools
from rtclient.core.events import DEFAULT_MODEL
from rtclient.errors import CallNotFoundError, SignalingError
from rtclient.runtime.loop import LoopThread
from rtclient.tools import ToolSpec
from rtclient.transports.signaling import (
    connection_error,
    missing_v1_hint,
    resolve_base_url,
    signaling_error,
)

from .webhooks import Api, IncomingCall

DEFAULT_REALTIME_MODEL = DEFAULT_MODEL  # the client's default
DEFAULT_LIVE_MODEL = "gpt-live-1"
DECLINE = 603
"""SIP 603 Decline: the Realtime API's default rejection, and rtclient's for GPT-Live."""
REJECT_RANGE = range(300, 700)
_ROUTES: dict[Api, str] = {"realtime": "realtime/calls", "live": "live/sessions"}


def accept_call(
    call: IncomingCall | str,
    *,
    session: Mapping[str, Any] | None = None,
    tools: Iterable[Callable[..., Any] | ToolSpec] = (),
    model: str | None = None,
    api: Api | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    loop_thread: LoopThread | None = None,
) -> None:
    """Answer the call with this session config (see :func:`accept_body`)."""
    call_id, which = _target(call, api)
    body = accept_body(which, session, tools=tools, model=model)
    _control(call_id, which, "accept", body, api_key, base_url, timeout, loop_thread)


def reject_call(
    call: IncomingCall | str,
    *,
    status_code: int | None = None,
    api: Api | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    loop_thread: LoopThread | None = None,
) -> None:
    """Decline the call with a SIP status (``486`` Busy Here, ``603`` Decline, ...).

    ``None``: the Realtime API's default (603, nothing sent); GPT-Live requires a code,
    so 603 is sent. A code outside ``300..699`` is a ``ValueError``."""
    call_id, which = _target(call, api)
    if status_code is not None and (
        isinstance(status_code, bool)
        or not isinstance(status_code, int)
        or status_code not in REJECT_RANGE
    ):
        raise ValueError(f"a SIP rejection status is 300..699, not {status_code!r}")
    code = DECLINE if status_code is None and which == "live" else status_code
    body = {} if code is None else {"status_code": code}
    _control(call_id, which, "reject", body, api_key, base_url, timeout, loop_thread)


def refer_call(
    call: IncomingCall | str,
    target_uri: str,
    *,
    api: Api | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    loop_thread: LoopThread | None = None,
) -> None:
    """Transfer the answered call (SIP REFER) to ``target_uri`` (``tel:+1...``,
    ``sip:agent@example.com``). The session then ends. No event reports whether the
    transfer worked: check it on the carrier's side."""
    call_id, which = _target(call, api)
    if not isinstance(target_uri, str) or not target_uri.strip():
        raise ValueError("target_uri must be a non-blank URI such as tel:+14155550123")
    body = {"target_uri": target_uri}
    _control(call_id, which, "refer", body, api_key, base_url, timeout, loop_thread)


def hangup_call(
    call: IncomingCall | str,
    *,
    api: Api | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    loop_thread: LoopThread | None = None,
) -> None:
    """End the call for everyone on it (the caller, every sideband)."""
    call_id, which = _target(call, api)
    _control(call_id, which, "hangup", None, api_key, base_url, timeout, loop_thread)


def accept_body(
    api: Api,
    session: Mapping[str, Any] | None,
    *,
    tools: Iterable[Callable[..., Any] | ToolSpec] = (),
    model: str | None = None,
) -> dict[str, Any]:
    """The JSON an accept sends, checked (``ValueError`` if the ``openai`` type refuses).

    Realtime: ``{"type": "realtime", "model": model or DEFAULT_MODEL, **session}``,
    plus ``tools`` described as :func:`rtclient.create_call` describes them (unless
    ``session`` lists its own). GPT-Live: ``{"session": {"type": "live", "model":
    model or "gpt-live-1", **session}}``; GPT-Live takes no ``tools`` here (its tools
    belong to its delegation config) and no ``audio.format`` (SIP negotiates it).
    """
    config = copy.deepcopy(dict(session or {}))
    if config.get("type") not in (None, api):
        raise ValueError(f"a {api} accept needs session type {api!r}, not {config['type']!r}")
    config["type"] = api
    if model is not None:
        config["model"] = model
    if api == "realtime":
        config.setdefault("model", DEFAULT_REALTIME_MODEL)
        described = session_tools(tools)
        if described:
            config.setdefault("tools", described)
        _check_realtime(config)
        return config
    if list(tools):
        raise ValueError("GPT-Live takes no tools at accept: name them in session.delegation")
    config.setdefault("model", DEFAULT_LIVE_MODEL)
    if isinstance(config.get("audio"), dict) and "format" in config["audio"]:
        raise ValueError("a phone call's audio format is negotiated by SIP: drop audio.format")
    _check_live(config)
    return {"session": config}


def _check_realtime(config: dict[str, Any]) -> None:
    try:
        from openai.types.realtime import RealtimeSessionCreateRequest
    except ImportError:  # an openai package too old to know it: the API will say
        return
    _validate(RealtimeSessionCreateRequest, config, "the Realtime session")


def _check_live(config: dict[str, Any]) -> None:
    try:
        from openai.types.live.session_accept_params import Session
    except ImportError:  # pragma: no cover - an openai package without GPT-Live
        return
    _validate(Session, config, "the Live session")


def _validate(kind: Any, value: dict[str, Any], what: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(kind).validate_python(value, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(f"{what} is invalid at {where or 'the top'}: {first['msg']}") from None


def _target(call: IncomingCall | str, api: Api | None) -> tuple[str, Api]:
    if isinstance(call, IncomingCall):
        if api is not None and api != call.api:
            raise ValueError(f"this call was announced for the {call.api} API, not {api}")
        return call.call_id, call.api
    if not isinstance(call, str) or not call:
        raise ValueError("a call id is a non-empty string")
    which: Api = api or "realtime"
    if which not in _ROUTES:
        raise ValueError(f"api is 'realtime' or 'live', not {which!r}")
    return call, which


def _control(
    call_id: str,
    api: Api,
    verb: str,
    body: dict[str, Any] | None,
    api_key: str | None,
    base_url: str | None,
    timeout: float,
    loop_thread: LoopThread | None,
) -> None:
    key = _standard_key(api_key, f"{verb}_call")
    base = resolve_base_url(base_url)
    url = f"{base}/{_ROUTES[api]}/{quote(call_id, safe='')}/{verb}"
    headers = {"Authorization": f"Bearer {key.reveal()}"}

    async def post() -> None:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(url, json=body, headers=headers) as resp,
            ):
                if resp.status >= 300:
                    error = signaling_error(resp.status, await resp.text(), key, base)
                    raise _gone(error, base) if resp.status == 404 else error
        except aiohttp.ClientError as exc:
            raise connection_error(exc, key) from None

    _run(post(), timeout, loop_thread, f"{verb}_call")


def _gone(error: SignalingError, base_url: str) -> SignalingError:
    """A 404 on a call route: the call is not (or no longer) there to act on - unless
    the base URL lacks ``/v1`` (then the message says so, and it stays a NotFoundError)."""
    if isinstance(error, CallNotFoundError) or missing_v1_hint(base_url):
        return error
    return CallNotFoundError(error.message, status=404, code=error.code)
