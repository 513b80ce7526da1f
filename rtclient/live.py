"""LiveClient: the synchronous, thread-safe client for GPT-Live (``gpt-live-1``).

The same conventions as :class:`rtclient.RealtimeClient` - the same shell
(:class:`rtclient.runtime.session.SessionShell`: one loop thread, one dispatcher
thread, one waiter registry, the same guards and close at any moment) - around
GPT-Live's own protocol core (:class:`rtclient.core.live.LiveCore`). Who runs what:

* **Caller threads** call :meth:`~LiveClient.append`, :meth:`~LiveClient.update_session`,
  :meth:`~LiveClient.request_response`...; they hand events to the loop thread and
  wait, bounded, for the answer the server names by ``client_event_id``.
* **The loop thread** owns the connection and feeds each server event to the core in
  order: answers settle their waiters, the gate sees every backend response at once.
* **The dispatcher thread** starts work (a delegation's handler, a backend function
  call) on the executor, then runs ``on()`` callbacks and ``events()`` iterators.
* **Executor threads** run delegation handlers and tools; progress (``task.say()``)
  and results go back to the core, which decides what is sent - once.

Three connections, one API: a primary WebSocket (the default: ``session.start``, then
wait for ``session.started``; silence keeps the session clock moving when no audio
plays), WebRTC (``transport="webrtc"``: created by ``POST /live/sessions``), and a
sideband on a running session (``session_id="live_..."``: ready at once, never
starts the session, carries no audio).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from rtclient import live_events
from rtclient.core.lifecycle import State
from rtclient.core.live import LiveCore
from rtclient.core.live_protocol import (
    AppendKind,
    ConnectionKind,
    DelegationTask,
    Notices,
    session_config,
)
from rtclient.errors import ClosedError, WaitTimeoutError
from rtclient.runtime.dispatcher import Catalog, EventStream
from rtclient.runtime.loop import LoopThread
from rtclient.runtime.session import SessionShell, remaining, wait_for
from rtclient.tools import ToolSpec, specs_by_name
from rtclient.transports import AudioFrameCallback, AudioIn, Transport
from rtclient.transports.live import (
    LiveWebRTCTransport,
    LiveWebSocketTransport,
    webrtc_session,
    websocket_session,
)

if TYPE_CHECKING:
    from rtclient._typed_live import AnyLiveEvent, OnLive


LIVE_EVENTS = Catalog(
    api="live",
    types=live_events.EVENT_TYPES,
    raw_only=frozenset(),
    prepare=live_events.prepare_models,
    to_model=live_events.to_model,
    close_matches=live_events.close_matches,
    checks=live_events.MODELS.checks,
)

_Handler = TypeVar("_Handler", bound=Callable[[DelegationTask], Any])

__all__ = ["LiveClient", "Placement"]


class Placement:
    """An append on its way: :meth:`wait` returns the ``session.<kind>.appended`` of its
    last part (the whole text is on the session timeline: placed, not yet heard), or
    raises the server's error (``context_injection_incomplete`` if the session closed
    first) or :class:`WaitTimeoutError` (the timeline does not move while no input
    audio flows)."""

    def __init__(
        self,
        event_ids: list[str],
        future: concurrent.futures.Future[Any] | None,
        guard: Callable[[str, bool], None],
    ) -> None:
        self.event_ids = event_ids
        self._future = future
        self._guard = guard

    def wait(self, timeout: float | None = 10.0) -> dict[str, Any] | None:
        if self._future is None:
            return None  # nothing was sent (its delegation had ended: reported)
        self._guard("Placement.wait()", not self._future.done())
        placed: dict[str, Any] = wait_for(self._future, timeout, "the append to be placed")
        return placed

    def __repr__(self) -> str:
        return f"<Placement {self.event_ids}>"


class LiveClient(SessionShell):
    """A synchronous, thread-safe client for GPT-Live (see the module docstring).

    ``session`` is the session object (``instructions``, ``audio.output.voice``,
    ``delegation``, ``input``, ...) - strict on the server: an unknown field makes
    ``connect()`` raise the server's :class:`~rtclient.errors.ServerError`
    (``unknown_parameter``). ``delegation=fn`` (or ``@client.delegation``) handles
    client delegations on ``executor``: ``fn(task)`` gets a
    :class:`~rtclient.core.live_protocol.DelegationTask` and returns the result the
    model speaks; ``delegation_timeout`` is the client's (the API has none).
    ``tools`` are the functions a Responses-delegation backend may call
    (``session={"delegation": {"type": "responses", "responses": {"model": ...}}}``):
    each call is answered once and the backend is continued by one
    ``response.create`` through the response gate.
    """

    _kind = "LiveClient"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str = "gpt-live-1",
        session: Mapping[str, Any] | None = None,
        delegation: Callable[[DelegationTask], Any] | None = None,
        tools: Iterable[Callable[..., Any] | ToolSpec] = (),
        executor: concurrent.futures.Executor | None = None,
        loop_thread: LoopThread | None = None,
        transport: Literal["websocket", "webrtc"] | None = None,
        session_id: str | None = None,
        graceful_close: bool = False,
        stream_silence: bool = True,
        ice_servers: list[Any] | None = None,
        loopback_only: bool = False,
        connect_timeout: float = 15.0,
        confirm_timeout: float = 15.0,
        max_attempts: int = 5,
        delegation_timeout: float = 120.0,
        notices: Notices | None = None,
        audio_in: AudioIn = None,
        audio_out: str | None = None,
        on_audio: AudioFrameCallback | None = None,
        bridge_size: int = 1024,
        close_timeout: float = 10.0,
    ) -> None:
        kind = _connection_kind(transport, session_id, audio_in, audio_out, on_audio)
        tools = list(tools)
        config: dict[str, Any] = {}
        if kind != "sideband":
            config = session_config(dict(session or {}), _specs(tools), model=model)
            config = websocket_session(config) if kind == "websocket" else webrtc_session(config)
        core = LiveCore(
            kind=kind,
            config=config,
            tools=tools,
            delegation=delegation,
            progress=self._progress,
            delegation_timeout=delegation_timeout,
            notices=notices or Notices(),
            confirm_timeout=confirm_timeout,
            max_attempts=max_attempts,
        )
        super().__init__(
            core,
            LIVE_EVENTS,
            api_key=api_key,
            base_url=base_url,
            executor=executor,
            loop_thread=loop_thread,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
            bridge_size=bridge_size,
            on_audio=on_audio,
        )
        self._core: LiveCore = core
        self.model = model
        self._connection: ConnectionKind = kind
        self._attach_id = session_id
        self._transport_options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "audio_in": audio_in,
            "audio_out": audio_out,
            "on_audio_frame": self._dispatcher.put_audio if on_audio is not None else None,
        }
        if kind == "webrtc":
            self._transport_options |= {"ice_servers": ice_servers, "loopback_only": loopback_only}
        else:
            self._transport_options |= {
                "session_id": session_id,
                "graceful_close": graceful_close,
                "stream_silence": stream_silence,
            }

    def __repr__(self) -> str:
        return (
            f"<LiveClient {self._connection} base_url={self.base_url} "
            f"session={self.session_id} {self._life!r}>"
        )

    def __enter__(self) -> LiveClient:
        return self.connect()

    def connect(self, timeout: float | None = None) -> LiveClient:
        """Connect and wait until the session is started (a sideband: attached).
        Blocking, bounded by ``timeout``; ``close()`` from another thread at any moment
        makes it raise :class:`ClosedError` promptly and leaves nothing behind. A
        refused session object raises the server's :class:`ServerError`."""
        super().connect(timeout)
        return self

    def delegation(self, fn: _Handler) -> _Handler:
        """Register ``fn`` as the handler of client delegations (usable as a decorator,
        like ``@tool``); replaces any earlier one."""
        self._check_process()
        self._core.delegations.handler = fn
        return fn

    # -- the connection ---------------------------------------------------------------------

    def _make_transport(self) -> Transport:
        common: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": self._key,
            "model": self.model,
            "session": self._core.config or None,
            "on_message": self._on_message,
            "on_closed": self._on_connection_lost,
            **self._transport_options,
        }
        if self._connection == "webrtc":
            return LiveWebRTCTransport(**common)
        return LiveWebSocketTransport(**common)

    def _when_open(self, deadline: float) -> None:
        """Ready: ``session.started`` (a primary sends ``session.start`` first; WebRTC's
        comes on the data channel; a sideband is ready at once)."""
        started = self._waiters.register(("session", "started"))
        self._apply(self._core.connected())
        wait_for(started, remaining(deadline), "session.started")

    @property
    def session_id(self) -> str | None:
        """The session's id (``live_...``), kept byte for byte."""
        transport = self._transport
        found = transport.call_id if transport is not None else None
        return self._core.session_id or found or self._attach_id

    def close(self, timeout: float | None = None) -> None:
        """End the session (a primary or WebRTC: ``session.close``, waiting - bounded -
        for ``session.closed`` so that appends still on their way are placed or
        reported) and release everything. A sideband only detaches: the session runs
        on (:meth:`hangup` ends it for everyone). Idempotent, from any thread."""
        if os.getpid() == self._pid and self._connection != "sideband":
            self._close_session(timeout if timeout is not None else self.close_timeout)
        super().close(timeout)

    def _close_session(self, timeout: float) -> None:
        with self._lock:
            open_now = self._life.state is State.OPEN and self._life.error is None
        if not open_now or self._is_internal_thread():
            return
        closed = self._waiters.register(("session", "closed"))
        try:
            self._apply(self._core.close_session()[1])
            concurrent.futures.wait([closed], timeout)
        except Exception:
            pass  # closing goes on regardless: the teardown below releases everything

    def hangup(self, timeout: float | None = None) -> None:
        """End the session for every connection on it (``POST /live/sessions/{id}/hangup``,
        from any of them - a sideband too), then close. :class:`ClosedError` if this
        client has no running session."""
        self._check_process()
        timeout = timeout if timeout is not None else self.close_timeout
        transport, loop_thread = self._transport, self._loop_thread
        try:
            if transport is None or loop_thread is None or self.closed:
                raise ClosedError("this client has no session to hang up")
            loop_thread.call(transport.end_call(), timeout=timeout)
        finally:
            super().close(timeout)

    # -- commands ---------------------------------------------------------------------------

    def send_event(self, event: Mapping[str, Any]) -> str:
        """Send any client event this connection may send (an ``event_id`` is added, and
        returned). Refused with :class:`~rtclient.errors.CommandRefusedError` before
        anything is sent: ``session.start`` (the client sends it), ``response.create``
        (:meth:`request_response`), input audio or ``session.start`` on a sideband."""
        self._check_open()
        event_id, effects = self._core.command(event)
        self._apply(effects)
        return event_id

    def _command(self, event: dict[str, Any], timeout: float | None, what: str) -> Any:
        self._may_block(what, True)
        self._check_open()
        event_id, effects = self._core.command(event)
        key = ("answer", event_id)
        future = self._waiters.register(key)
        self._apply(effects)
        try:
            return wait_for(future, timeout, what)
        except WaitTimeoutError:
            self._waiters.forget(key)
            raise

    def update_session(self, *, timeout: float | None = 10.0, **fields: Any) -> dict[str, Any]:
        """``session.update`` (only the delegation's Responses settings may change) and
        wait for the ``session.updated`` that names it; returns its ``session``."""
        event = {"type": "session.update", "session": fields}
        answer: dict[str, Any] = self._command(event, timeout, "update_session()")
        return dict(answer.get("session") or {})

    def mute(self, timeout: float | None = 10.0) -> None:
        """The model stops hearing the input (it keeps talking)."""
        self._command({"type": "session.input_audio.mute"}, timeout, "mute()")

    def unmute(self, timeout: float | None = 10.0) -> None:
        self._command({"type": "session.input_audio.unmute"}, timeout, "unmute()")

    def append(
        self, kind: AppendKind, content: str, *, delegation_id: str | None = None
    ) -> Placement:
        """``session.<kind>.append`` (``commentary``: the model tells the user;
        ``thinking``: silent; ``instructions``: a standing rule), split over the
        per-append limit. With ``delegation_id`` it is progress for that delegation
        (its result: :meth:`answer_delegation`)."""
        self._check_open()
        event_ids, effects = self._core.append(kind, content, delegation_id=delegation_id)
        future = self._waiters.register(("answer", event_ids[-1])) if event_ids else None
        self._apply(effects)
        return Placement(event_ids, future, self._may_block)

    def answer_delegation(self, delegation_id: str, content: str, *, spoken: bool = True) -> None:
        """The result of a client delegation answered by the app (no handler): sent once;
        a second one, or one after the delegation ended, is reported, not sent."""
        self._check_open()
        self._apply(self._core.answer(delegation_id, content, spoken=spoken))

    def request_response(self, reason: str = "request") -> concurrent.futures.Future[Any]:
        """Start a backend response (Responses delegation), through the gate: never
        while one runs. The future resolves with the envelope of its terminal event."""
        self._check_open()
        key, effects = self._core.request_response(reason)
        future = self._waiters.register(("response", key))
        self._apply(effects)
        return future

    def _progress(self, delegation_id: str, content: str, spoken: bool) -> None:
        """A handler's ``task.say()``/``task.think()`` (executor thread)."""
        self._check_process()
        self._apply(self._core.progress(delegation_id, content, spoken))

    # -- events -----------------------------------------------------------------------------

    def _on(
        self, event_type: str, callback: Callable[[Any], object], *, raw: bool = False
    ) -> Callable[[], None]:
        """Call ``callback(event)`` on the dispatcher thread for each event of
        ``event_type`` (``"*"``: all): its ``openai.types.live`` model, or - for the
        client's own ``rtclient.*`` events - its :mod:`rtclient.live_events` model;
        ``raw=True`` gives the dict (no ``openai`` import). Returns the unsubscriber.
        A callback must not block on the client (it would raise
        :class:`WrongThreadError`)."""
        return self._subscribe(event_type, callback, raw)

    if TYPE_CHECKING:
        on: OnLive
    else:
        on = _on

    @overload
    def events(
        self, timeout: float | None = None, *, raw: Literal[False] = False
    ) -> EventStream[AnyLiveEvent]: ...
    @overload
    def events(
        self, timeout: float | None = None, *, raw: Literal[True]
    ) -> EventStream[dict[str, Any]]: ...
    def events(self, timeout: float | None = None, *, raw: bool = False) -> EventStream[Any]:
        """A blocking iterator over events from now on (models, or dicts with ``raw``);
        it ends when none comes within ``timeout`` or when the client closes."""
        return self._stream(timeout, raw)

    def stats(self) -> dict[str, int]:
        """Counters: the gate's (``lost`` must stay 0), the delegations', the function
        calls', the connection's, the silence that kept the clock moving and the silence
        skipped because the loop thread fell too far behind (``silence_skipped_ms``)."""
        self._check_process()
        transport = self._transport
        silence = getattr(transport, "silence_sent_ms", 0) if transport is not None else 0
        skipped = getattr(transport, "silence_skipped_ms", 0) if transport is not None else 0
        return {
            **self._core.stats(),
            "untyped_events": self._dispatcher.untyped_events,
            "silence_sent_ms": int(silence),
            "silence_skipped_ms": int(skipped),
        }


def _connection_kind(
    transport: str | None,
    session_id: str | None,
    audio_in: AudioIn,
    audio_out: str | None,
    on_audio: AudioFrameCallback | None,
) -> ConnectionKind:
    if transport not in (None, "websocket", "webrtc"):
        raise ValueError(f"transport must be 'websocket' or 'webrtc', not {transport!r}")
    if session_id is None:
        return "webrtc" if transport == "webrtc" else "websocket"
    if transport == "webrtc":
        raise ValueError("a sideband (session_id=...) attaches over a WebSocket, not WebRTC")
    if not session_id.strip():
        raise ValueError("session_id is empty")
    if audio_in is not None or audio_out is not None or on_audio is not None:
        raise ValueError("a sideband carries no audio: the session's audio is the primary's")
    return "sideband"


def _specs(tools: Iterable[Callable[..., Any] | ToolSpec]) -> list[ToolSpec]:
    return list(specs_by_name(tools).values())
