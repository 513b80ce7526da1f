"""Creating and ending a browser's call from the app server (the "unified interface").

The browser sends its SDP offer to the app; the app posts it with its **standard** key
and the session it wants - instructions, voice, and the tools registered with
``@tool`` - and hands the SDP answer back. The browser then talks to the API directly
(audio and events), and the app keeps the key, attaches a sideband to the call
(``RealtimeClient(call_id=answer.call_id, tools=...)``) and runs the tools::

    @app.post("/call")
    def call():
        answer = rtclient.create_call(request.data.decode(), session=SESSION, tools=TOOLS)
        start_sideband(answer.call_id)             # RealtimeClient(call_id=...).connect()
        return answer.sdp, 201, {"Content-Type": "application/sdp"}

Both helpers are synchronous and bounded by ``timeout``, for Flask or Django views and
scripts. They run on ``loop_thread`` when given (e.g. the one the app's clients share),
else on a private event loop for the duration of the call - so from ``async`` code,
pass a ``loop_thread``. Errors are the client's: :class:`SignalingError` with the
API's ``status`` and ``code``, as the ``openai`` package's classes by status
(:class:`AuthenticationError`, :class:`RateLimitError`, ...; :class:`CallNotFoundError`
for an unknown call, :class:`APIConnectionError` when the API cannot be reached), and
:class:`WaitTimeoutError` (also a ``TimeoutError``) when the API does not answer in
time; the key never appears in a message, a repr or a log line.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from rtclient._secret import Secret, credential
from rtclient.core.events import DEFAULT_MODEL
from rtclient.errors import RealtimeError, SignalingError, WaitTimeoutError
from rtclient.runtime.loop import LoopThread
from rtclient.tools import ToolSpec, build_spec
from rtclient.transports import signaling

T = TypeVar("T")


@dataclass(frozen=True)
class CallAnswer:
    """The API's answer to a browser's offer: the SDP to hand back, and the call's id."""

    sdp: str
    call_id: str


def create_call(
    offer_sdp: str,
    *,
    session: Mapping[str, Any] | None = None,
    tools: Iterable[Callable[..., Any] | ToolSpec] = (),
    model: str = DEFAULT_MODEL,
    api_key: str | Callable[[], str] | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    loop_thread: LoopThread | None = None,
) -> CallAnswer:
    """Create the call a browser offered; returns its SDP answer and call id.

    ``session`` is the session config (``type`` and ``model`` are filled in); ``tools``
    are ``@tool`` functions (or :class:`ToolSpec`) described to the model exactly as
    ``RealtimeClient(tools=...)`` describes them - unless ``session`` lists its own.
    ``api_key`` and ``base_url`` are taken as ``RealtimeClient`` takes them (a token
    provider, an Azure OpenAI endpoint with the deployment as ``model``).
    """
    key = _standard_key(api_key, "create_call")
    config = {"type": "realtime", "model": model, **dict(session or {})}
    described = session_tools(tools)
    if described:
        config.setdefault("tools", described)
    url = signaling.resolve_base_url(base_url)

    async def post() -> CallAnswer:
        async with aiohttp.ClientSession() as http:
            sdp, call_id = await signaling.post_offer(http, url, key, offer_sdp, session=config)
        if not call_id:
            raise SignalingError("the answer named no call (no Location header)", status=201)
        return CallAnswer(sdp=sdp, call_id=call_id)

    return _run(post(), timeout, loop_thread, "create_call")


def hangup_call(
    call_id: str,
    *,
    api_key: str | Callable[[], str] | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    loop_thread: LoopThread | None = None,
) -> None:
    """End ``call_id`` for every connection on it (the browser and any sideband)."""
    key = _standard_key(api_key, "hangup_call")
    url = signaling.resolve_base_url(base_url)

    async def post() -> None:
        async with aiohttp.ClientSession() as http:
            await signaling.post_hangup(http, url, key, call_id, timeout=timeout)

    _run(post(), timeout, loop_thread, "hangup_call")


def session_tools(tools: Iterable[Callable[..., Any] | ToolSpec]) -> list[dict[str, Any]]:
    """The session's ``tools`` for these ``@tool`` functions: the same specs
    (:func:`~rtclient.tools.build_spec`) and descriptions (``ToolSpec.session_tool``) a
    client's ToolRunner builds, and the same refusal of two tools with one name."""
    specs = [t if isinstance(t, ToolSpec) else build_spec(t) for t in tools]
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two tools are named {name!r}")
    return [spec.session_tool() for spec in specs]


def _standard_key(api_key: str | Callable[[], str] | None, what: str) -> Secret:
    key = credential(api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", ""))
    if not key:
        raise RealtimeError(f"{what}: no API key: pass api_key= or set OPENAI_API_KEY")
    if key.is_ephemeral:
        raise RealtimeError(
            f"{what} needs a standard key; an ephemeral key belongs to the browser, "
            "which posts its own offer"
        )
    return key


def _run(
    coro: Coroutine[Any, Any, T], timeout: float, loop_thread: LoopThread | None, what: str
) -> T:
    async def bounded() -> T:
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError as exc:
            if isinstance(exc, RealtimeError):  # e.g. APITimeoutError: already says what
                raise
            raise WaitTimeoutError(f"{what} was not answered within {timeout}s") from None

    if loop_thread is not None:
        return loop_thread.call(bounded(), timeout=timeout + 1.0)
    return asyncio.run(bounded())
