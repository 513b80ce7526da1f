"""Answering a phone call in one step: accept it, attach a sideband, hear its keypresses.

:func:`answer_call` is what a webhook handler calls once a delivery is verified and
claimed: it accepts the call with the app's session config and tools, then attaches a
sideband (``RealtimeClient(call_id=...)``) whose tools run on the app's executor and
whose responses go through the gate - the caller's VAD turns, the tools' follow-ups
and the greeting never collide. If the attach fails the call is hung up (a call
without its tools is no use to the caller) and the error raised.

The caller's keypresses (DTMF) arrive on the sideband: the Realtime API sends
``input_audio_buffer.dtmf_event_received {event, received_at}``, GPT-Live
``transport.dtmf.received {event, event_id}`` (sidebands only). Subscribe with the
client's own typed ``on`` - ``client.on("input_audio_buffer.dtmf_event_received", cb)``
hands ``cb`` the ``openai`` model - or, for either API, pass ``on_dtmf=cb`` (or call
:func:`watch_dtmf`): ``cb`` gets a :class:`Dtmf` (``key`` is ``0``-``9``, ``*``, ``#``,
``A``-``D``), on the client's dispatcher thread, in the order pressed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from rtclient.client import RealtimeClient
from rtclient.core.live_protocol import DelegationTask
from rtclient.errors import RealtimeError
from rtclient.live import LiveClient
from rtclient.logs import logger, short_id
from rtclient.runtime.loop import LoopThread
from rtclient.tools import ToolSpec

from .control import accept_call, hangup_call
from .webhooks import Api, IncomingCall

T = TypeVar("T")
DTMF_EVENTS: dict[Api, str] = {
    "realtime": "input_audio_buffer.dtmf_event_received",
    "live": "transport.dtmf.received",
}
"""The server event that carries one keypress of the caller, per API."""


@dataclass(frozen=True)
class Dtmf:
    """One keypress of the caller: ``key`` (``0``-``9``, ``*``, ``#``, ``A``-``D``)."""

    key: str
    api: Api
    received_at: int | None = None
    """Unix seconds when the server received it (Realtime only)."""
    event_id: str | None = None
    """The event's id (GPT-Live always sends one)."""

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Dtmf:
        """The keypress in either API's DTMF event (``ValueError`` for any other)."""
        kind = event.get("type")
        api = next((a for a, t in DTMF_EVENTS.items() if t == kind), None)
        key = event.get("event")
        if api is None or not isinstance(key, str):
            raise ValueError(f"not a DTMF event: {kind!r}")
        received_at = event.get("received_at")
        event_id = event.get("event_id")
        return cls(
            key=key,
            api=api,
            received_at=received_at if isinstance(received_at, int) else None,
            event_id=event_id if isinstance(event_id, str) else None,
        )


class Subscribable(Protocol):
    """A client whose ``on(event_type, callback, raw=True)`` subscribes to raw events."""

    def on(self, event_type: Any, callback: Any, *, raw: Any = ...) -> Callable[[], None]: ...


def watch_dtmf(
    client: Subscribable, callback: Callable[[Dtmf], object], *, api: Api = "realtime"
) -> Callable[[], None]:
    """Call ``callback(Dtmf)`` for each keypress the sideband ``client`` receives;
    returns the function that unsubscribes. Subscribe before ``connect()`` to miss none."""
    event_type = DTMF_EVENTS[api]

    def deliver(event: Mapping[str, Any]) -> None:
        callback(Dtmf.from_event(event))

    return client.on(event_type, deliver, raw=True)


@overload
def answer_call(
    call: IncomingCall,
    *,
    session: Mapping[str, Any] | None = None,
    tools: Iterable[Callable[..., Any] | ToolSpec] = (),
    executor: concurrent.futures.Executor | None = None,
    loop_thread: LoopThread | None = None,
    model: str | None = None,
    greeting: str | None = None,
    on_dtmf: Callable[[Dtmf], object] | None = None,
    delegation: Callable[[DelegationTask], Any] | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    attach: None = None,
) -> RealtimeClient: ...
@overload
def answer_call(
    call: IncomingCall,
    *,
    session: Mapping[str, Any] | None = None,
    tools: Iterable[Callable[..., Any] | ToolSpec] = (),
    executor: concurrent.futures.Executor | None = None,
    loop_thread: LoopThread | None = None,
    model: str | None = None,
    greeting: str | None = None,
    on_dtmf: Callable[[Dtmf], object] | None = None,
    delegation: Callable[[DelegationTask], Any] | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    attach: Callable[[str], T],
) -> T: ...
def answer_call(
    call: IncomingCall,
    *,
    session: Mapping[str, Any] | None = None,
    tools: Iterable[Callable[..., Any] | ToolSpec] = (),
    executor: concurrent.futures.Executor | None = None,
    loop_thread: LoopThread | None = None,
    model: str | None = None,
    greeting: str | None = None,
    on_dtmf: Callable[[Dtmf], object] | None = None,
    delegation: Callable[[DelegationTask], Any] | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
    attach: Callable[[str], Any] | None = None,
) -> Any:
    """Accept ``call`` and attach a sideband to it; returns the connected client.

    Realtime (``call.api == "realtime"``): accepts with ``session`` (the config at the
    top level, ``type``/``model`` filled in) and ``tools`` described in it, then
    connects ``RealtimeClient(call_id=call.call_id, tools=tools, executor=executor,
    loop_thread=loop_thread)``. ``greeting``: instructions for a first response, asked
    for through the gate as soon as the sideband is up (the caller hears nothing
    until a response runs). ``on_dtmf``: see the module docstring.

    GPT-Live (``call.api == "live"``): accepts with ``{"session": {"type": "live", ...}}``,
    then connects a sideband ``LiveClient(session_id=..., delegation=delegation,
    tools=tools, executor=executor)``: ``delegation`` handles the model's client
    delegations on the executor, ``tools`` are Responses delegation's client-side
    functions. ``greeting`` is Realtime-only (a Live model takes its own turns).

    ``attach(call_id)`` replaces either sideband with your own connected client;
    ``on_dtmf`` then subscribes on what it returns (``on(..., raw=True)``).

    Raises the accept's refusal (:class:`~rtclient.errors.CallNotFoundError`: the call
    is gone or the other API answered it), or the attach's (after hanging the call up).
    """
    common: dict[str, Any] = {"api_key": api_key, "base_url": base_url}
    accept_call(
        call,
        session=session,
        tools=tools if call.api == "realtime" else (),
        model=model,
        timeout=timeout,
        loop_thread=loop_thread,
        **common,
    )
    logger.info("[SIP] {} accepted ({})", short_id(call.call_id), call.api)
    client: Any = None
    try:
        if attach is not None:
            client = attach(call.call_id)
            if on_dtmf is not None:
                watch_dtmf(client, on_dtmf, api=call.api)
            return client
        if call.api == "live":
            client = LiveClient(
                session_id=call.call_id,  # a sideband on the phone call's Live session
                delegation=delegation,
                tools=tools,
                executor=executor,
                loop_thread=loop_thread,
                **common,
            )
            if on_dtmf is not None:
                watch_dtmf(client, on_dtmf, api="live")
            return client.connect(timeout)
        client = RealtimeClient(
            call_id=call.call_id,  # a sideband on the phone call
            tools=tools,
            executor=executor,
            loop_thread=loop_thread,
            **common,
        )
        if on_dtmf is not None:
            watch_dtmf(client, on_dtmf, api="realtime")
        client.connect(timeout)
        if greeting is not None:
            client.request_response(reason="greeting", instructions=greeting)
        return client
    except BaseException:
        # A call without its sideband (its tools) is no use to the caller: end it.
        if isinstance(client, RealtimeClient | LiveClient):
            client.close()
        with contextlib.suppress(RealtimeError):
            hangup_call(call, timeout=timeout, loop_thread=loop_thread, **common)
        raise
