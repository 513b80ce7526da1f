"""RealtimeClient: the synchronous, thread-safe facade over the gate, loop and transport.

Who runs what:

* **Caller threads** (Flask/Django workers, scripts) call ``ask``, ``send_text``,
  ``request_response``, ``interrupt``. They claim gate tickets and put events on the
  janus bridge; they never touch aiortc.
* **The loop thread** owns aiortc. It parses each server message once, in order, and
  feeds ``response.created``/``response.done``/``error`` to the gate *immediately* -
  a coalesced create after ``response.done`` goes out with no thread hop, after
  everything already on the bridge (the bridge keeps put order).
* **The dispatcher thread** receives every event in order and runs user-facing work:
  tool scheduling, ``on()`` callbacks, ``events()`` iterators. User code never runs on
  the loop thread, so a slow callback cannot stall audio or the data channel.
* **Tool threads** (any ``concurrent.futures.Executor``) run tools; outputs go back
  over the bridge, and the follow-up create through the gate, once per response.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from rtclient import transports
from rtclient._secret import Secret
from rtclient._typed import BETA_ONLY
from rtclient.core import events as ev
from rtclient.core.gate import ResponseGate, Ticket, Trigger
from rtclient.core.lifecycle import Lifecycle, State
from rtclient.errors import (
    BridgeFullError,
    ClosedError,
    ConnectTimeoutError,
    EventValidationError,
    ForkedProcessError,
    MessageTooLargeError,
    RealtimeError,
    SendRefusedError,
    ServerError,
    SessionExpiredError,
    SignalingError,
    WaitTimeoutError,
    WrongThreadError,
)
from rtclient.logs import logger
from rtclient.runtime.bridge import Bridge
from rtclient.runtime.loop import LoopThread
from rtclient.tools import TOOL_EVENTS, ToolCall, ToolRunner, ToolSpec
from rtclient.transports import AudioFrameCallback, AudioIn, Transport

if TYPE_CHECKING:
    from openai.types.realtime import RealtimeSessionCreateRequest as Session
    from openai.types.realtime import ResponseDoneEvent
    from openai.types.realtime.conversation_item import ConversationItem

    from rtclient._typed import AnyServerEvent, On
    from rtclient.metrics import ClientMetrics

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_STOP = object()
# Settled per-response bookkeeping kept for a late reader (``ask`` or ``interrupt``
# asking after the fact); older entries are dropped, so a long session stays flat.
_SETTLED_KEPT = 64
_SEND_TIMEOUT = 10.0

# The client events whose answer a caller waits for, and the server event answering each.
_ANSWERED_BY = {
    "session.update": "session.updated",
    "conversation.item.retrieve": "conversation.item.retrieved",
    "conversation.item.delete": "conversation.item.deleted",
    "conversation.item.truncate": "conversation.item.truncated",
}
_ANSWERS = frozenset(_ANSWERED_BY.values())

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, eq=False)
class _Subscription:
    callback: Callable[[Any], object]
    raw: bool


class ResponseTicket:
    """A future-like handle on a requested response.

    ``response(timeout)`` returns the ``response.done`` event of the response that
    served the request as the ``openai`` model (``ResponseDoneEvent``); ``result(timeout)``
    returns it as the raw dict (no parsing, no ``openai`` import). Both raise the typed
    error that ended the request (closed, rejected, failed) or :class:`WaitTimeoutError`.
    """

    def __init__(
        self,
        future: concurrent.futures.Future[dict[str, Any]],
        reason: str,
        guard: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._future = future
        self.reason = reason
        self._guard = guard

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The ``response.done`` event as the raw dict."""
        return self._outcome("result()", timeout)

    def response(self, timeout: float | None = None) -> ResponseDoneEvent:
        """The ``response.done`` event as ``openai.types.realtime.ResponseDoneEvent``
        (parsed on each call; raises :class:`EventValidationError` if it does not
        validate - ``result()`` still has the dict)."""
        event: ResponseDoneEvent = _typed_event(self._outcome("response()", timeout))
        return event

    def _outcome(self, what: str, timeout: float | None) -> dict[str, Any]:
        if self._guard is not None:
            self._guard(f"{what} of the ticket for {self.reason}", not self._future.done())
        done, _ = concurrent.futures.wait([self._future], timeout)
        if not done:
            raise WaitTimeoutError(f"no response.done for {self.reason} within {timeout:.3g}s")
        return self._future.result()

    def done(self) -> bool:
        return self._future.done()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._guard is not None:
            self._guard(f"exception() of the ticket for {self.reason}", not self._future.done())
        done, _ = concurrent.futures.wait([self._future], timeout)
        if not done:
            raise WaitTimeoutError(f"no response.done for {self.reason} within {timeout:.3g}s")
        return self._future.exception()

    def __repr__(self) -> str:
        return f"<ResponseTicket {self.reason} {'done' if self.done() else 'pending'}>"


@dataclasses.dataclass
class Answer:
    """What ``ask`` returns: the final text, the tool calls made, the responses seen.

    ``raw`` is the final ``response.done`` event as the server sent it; ``response`` is
    the same event as ``openai.types.realtime.ResponseDoneEvent``, parsed on first read
    (:class:`EventValidationError` if it does not validate).
    """

    text: str
    tool_calls: list[ToolCall]
    response_ids: list[str]
    raw: dict[str, Any]

    @functools.cached_property
    def response(self) -> ResponseDoneEvent:
        event: ResponseDoneEvent = _typed_event(self.raw)
        return event


class EventStream(Iterator[_T], Generic[_T]):
    """A blocking iterator over server events from the moment it was created: the
    ``openai`` models (or the dict of an event no model describes, as for ``"*"``
    callbacks), or the raw dicts if it was opened with ``raw=True``.

    Iteration ends when no event arrives within ``timeout`` or when the client closes.
    """

    def __init__(self, client: RealtimeClient, timeout: float | None, raw: bool = True) -> None:
        self._client = client
        self._timeout = timeout
        self.raw = raw
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        client._register_stream(self)

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def __next__(self) -> _T:
        self._client._may_block("iterating events()", True)
        try:
            item = self._queue.get(timeout=self._timeout)
        except queue.Empty:
            item = _STOP
        if item is _STOP:
            self.close()
            raise StopIteration
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._client._unregister_stream(self)


class RealtimeClient:
    """A synchronous, thread-safe client for the Realtime API.

    It speaks WebRTC by default; ``transport="websocket"`` opens a WebSocket session
    instead, and ``call_id="rtc_..."`` attaches as a sideband to a call a browser holds
    (standard key; the browser carries the audio). Everything else is the same on all
    three: see :mod:`rtclient.transports`.

    ``api_key`` defaults to ``OPENAI_API_KEY``; ``base_url`` to ``OPENAI_BASE_URL`` or
    ``https://api.openai.com/v1`` (the ``openai`` package's convention: it includes
    ``/v1``). Tools run on ``executor`` (a thread pool by default). With no tools
    registered, function calls are left to the caller (``submit_tool_output``).
    Pass ``loop_thread`` to share one loop thread between many clients.

    ``client_turns=True`` makes the client start every response: server VAD still
    detects speech, commits the user's turn and cancels a response the user talks over
    (``interrupt_response``), but creates none itself (``create_response: false``); the
    client requests the answer through the gate on ``input_audio_buffer.committed``.
    With nothing else starting responses, no create can cross a server response, so
    the server never rejects one - by construction, not by retry.

    ``send_guard(event)`` runs on the loop thread at the last moment before each event
    is written; if it raises, the event is not written and the sender gets
    :class:`SendRefusedError` (a refused create fails its request, not retried; a
    refused tool output is undelivered). E.g. a holder whose lease may be lost.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str = "gpt-realtime",
        session: Mapping[str, Any] | None = None,
        tools: Iterable[Callable[..., Any] | ToolSpec] = (),
        executor: concurrent.futures.Executor | None = None,
        loop_thread: LoopThread | None = None,
        transport: transports.Kind | None = None,
        call_id: str | None = None,
        ice_servers: list[Any] | None = None,
        loopback_only: bool = False,
        connect_timeout: float = 15.0,
        confirm_timeout: float = 15.0,
        max_attempts: int = 5,
        audio_in: AudioIn = None,
        audio_out: str | None = None,
        on_audio: AudioFrameCallback | None = None,
        bridge_size: int = 1024,
        close_timeout: float = 10.0,
        client_turns: bool = False,
        send_guard: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise RealtimeError("no API key: pass api_key= or set OPENAI_API_KEY")
        self._key = Secret(key)
        audio = audio_in is not None or audio_out is not None or on_audio is not None
        self._transport_kind = transports.choose(transport, call_id, self._key, audio=audio)
        self._attach_call_id = call_id
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self.model = model
        self._session = dict(session or {})
        self._client_turns = client_turns
        self._send_guard = send_guard
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            thread_name_prefix="rtclient-tool"
        )
        self._own_loop = loop_thread is None
        self._loop_thread = loop_thread
        self._transport_options: dict[str, Any] = {
            "ice_servers": ice_servers,
            "loopback_only": loopback_only,
            "connect_timeout": connect_timeout,
            "audio_in": audio_in,
            "audio_out": audio_out,
            "on_audio_frame": self._on_audio_frame if on_audio is not None else None,
        }
        self._on_audio = on_audio
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self._bridge_size = bridge_size
        self._gate = ResponseGate(confirm_timeout=confirm_timeout, max_attempts=max_attempts)
        self._tools = ToolRunner(
            tools,
            self._executor,
            send_output=self._send_tool_output,
            request_followup=self._request_followup,
            fail_followup=self._settle_followup,
            schedule=self._schedule,
        )
        self._transport: Transport | None = None
        self._bridge: Bridge[dict[str, Any]] | None = None
        self._dispatch_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        self._subscribers: dict[str, list[_Subscription]] = {}
        self._streams: set[EventStream[Any]] = set()
        self._untyped_warned: set[str] = set()  # event types a typed subscriber got as dicts
        # The one lock close() takes: it guards the lifecycle and registers every waiter
        # (the one waiter rule: a waiter registered after close() fails at once). Never
        # held for I/O or while running user code.
        self._lock = threading.Lock()
        self._life = Lifecycle(self._lock)
        self._pid = os.getpid()
        self._connect_future: concurrent.futures.Future[Any] | None = None
        self._done_waiters: dict[str, concurrent.futures.Future[dict[str, Any]]] = {}
        self._done_events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._followups: dict[str, concurrent.futures.Future[Any]] = {}
        self._settled_followups: OrderedDict[str, concurrent.futures.Future[Any]] = OrderedDict()
        self._oob_waiters: dict[str, concurrent.futures.Future[dict[str, Any]]] = {}
        self._cancels: OrderedDict[str, str] = OrderedDict()  # cancel event_id -> response
        self._hung_up = False
        self._session_ready: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        # Client events waiting for their answer (session.update, conversation.item.*):
        # event_id -> future, and event_id -> (answering event type, item id or None).
        self._requests: dict[str, concurrent.futures.Future[Any]] = {}
        self._request_keys: dict[str, tuple[str, str | None]] = {}
        self._closed: BaseException | None = None
        self._watchdog: Any = None
        self._metrics: ClientMetrics | None = None  # rtclient.metrics.instrument() sets it
        self._counters = {
            "events_received": 0,
            "malformed_events": 0,
            "unknown_events": 0,
            "creates_sent": 0,
            "server_errors": 0,
            "untyped_events": 0,
        }

    def __repr__(self) -> str:
        call = self._transport.call_id if self._transport else None
        state = self._life.state.value
        if self._closed is not None and state == "open":
            state = "lost"
        return f"<RealtimeClient model={self.model} base_url={self.base_url} call={call} {state}>"

    def __enter__(self) -> RealtimeClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle -----------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> RealtimeClient:
        """Connect, wait for the session, register tools. Blocking, bounded by ``timeout``.

        A client connects once. ``close()`` from another thread at any moment of this
        call makes it raise :class:`ClosedError` promptly and leaves nothing behind.
        """
        self._may_block("connect()", True)
        with self._lock:
            if self._life.state is not State.NEW and not self._life.ending:
                raise RealtimeError("a RealtimeClient connects once; create a new one")
            self._life.move(State.CONNECTING)  # raises ClosedError after close()
        timeout = timeout if timeout is not None else self.connect_timeout
        failure: BaseException | None = None
        try:
            self._build(timeout)
        except BaseException as exc:
            failure = exc
        finally:
            self._life.connect_finished.set()  # from here on, connect() builds nothing
        if failure is None:
            with self._lock:
                if self._life.state is State.CONNECTING:
                    self._life.move(State.OPEN)
                    return self
            failure = self._closed or ClosedError("the client was closed while connecting")
        self.close()
        if isinstance(failure, concurrent.futures.CancelledError):
            failure = self._closed or ClosedError("the client was closed while connecting")
        # Every timeout of connect() is a ConnectTimeoutError (an APITimeoutError stays
        # as it is); concurrent.futures.TimeoutError is the builtin one only from 3.11.
        timed_out = isinstance(failure, TimeoutError | concurrent.futures.TimeoutError)
        if timed_out and not isinstance(failure, ConnectTimeoutError | SignalingError):
            why = f"the session was not ready within {timeout}s"
            raise ConnectTimeoutError(
                str(failure) if isinstance(failure, RealtimeError) else why
            ) from None
        raise failure

    def _build(self, timeout: float) -> None:
        """connect()'s steps. Each resource is published before the next step, so a
        concurrent close() (which waits for connect_finished) tears down exactly what
        exists; each blocking wait is failed at once by close()."""
        deadline = time.monotonic() + timeout
        if self._loop_thread is None:
            self._loop_thread = LoopThread("rtclient-loop").start()
        loop_thread = self._loop_thread
        config = self._session_config()
        self._check_connecting()
        self._bridge = Bridge(
            loop_thread, self._perform_send, maxsize=self._bridge_size, name="rtclient-bridge"
        ).start()
        self._check_connecting()
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="rtclient-dispatcher", daemon=True
        )
        self._dispatcher.start()
        self._transport = self._make_transport(config)
        with self._lock:
            self._check_connecting()
            self._connect_future = loop_thread.submit(self._transport.connect())
        _wait(self._connect_future, timeout + 1.0, "the connection to open")
        if self._attach_call_id is None:  # a sideband may attach after session.created
            self._session_ready.result(_remaining(deadline))
        if config:
            self._send_request(ev.session_update(config)).result(_remaining(deadline))
        loop_thread.call_soon(self._arm_watchdog)

    def _check_connecting(self) -> None:
        if self._life.state is not State.CONNECTING:
            raise self._closed or ClosedError("the client was closed while connecting")

    def _make_transport(self, config: dict[str, Any]) -> Transport:
        """The connection this client speaks over (the only place that knows which)."""
        options = dict(self._transport_options)
        common: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": self._key,
            "model": self.model,
            "session": config,
            "on_message": self._on_message,
            "on_closed": self._on_connection_lost,
        }
        if self._transport_kind == "webrtc":
            return transports.WebRTCTransport(**common, **options)
        del options["ice_servers"], options["loopback_only"]  # no ICE on a WebSocket
        return transports.WebSocketTransport(**common, call_id=self._attach_call_id, **options)

    def _session_config(self) -> dict[str, Any]:
        config = dict(self._session)
        if self._tools.specs:
            config.setdefault("tools", self._tools.session_tools())
        if self._client_turns:
            config = ev.with_client_turns(config)
        if config or self._attach_call_id is not None:  # a sideband's readiness: session.updated
            config.setdefault("type", "realtime")
        return config

    def close(self, timeout: float | None = None) -> None:
        """Fail every waiter, hang up, stop threads. Idempotent, from any thread (in a
        forked child it returns at once and touches nothing); returns within ``timeout``.
        """
        if os.getpid() != self._pid:
            return  # the parent's connection is not ours to touch
        timeout = timeout if timeout is not None else self.close_timeout
        with self._lock:
            state = self._life.state
            if state is State.NEW:
                self._life.move(State.CLOSED)
            elif not self._life.ending:
                self._life.move(State.CLOSING)
            connect_future = self._connect_future
        if state is State.NEW:
            self._shut_down(ClosedError("the client was closed"))
            if self._own_executor:
                self._executor.shutdown(wait=False, cancel_futures=True)
            return
        if state in (State.CLOSING, State.CLOSED):
            if not self._is_internal_thread():
                self._life.closed.wait(timeout)  # another thread is tearing down
            return
        self._shut_down(self._closed or ClosedError("the client was closed"))
        if state is State.CONNECTING:
            if connect_future is not None:
                connect_future.cancel()  # ICE or signaling in progress: stop it now
            if not self._life.connect_finished.is_set() and not self._is_internal_thread():
                self._life.connect_finished.wait(timeout)
        self._teardown(timeout)
        with self._lock:
            self._life.move(State.CLOSED)

    def _is_internal_thread(self) -> bool:
        """The dispatcher or the loop thread: they must never wait for the teardown."""
        loop_thread = self._loop_thread
        in_loop = loop_thread is not None and loop_thread.in_loop_thread()
        return in_loop or threading.current_thread() is self._dispatcher

    def _teardown(self, timeout: float) -> None:
        """Release what exists: watchdog, connection, bridge, dispatcher, executor, loop."""
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.running:
            if self._watchdog is not None:
                loop_thread.call_soon(self._watchdog.cancel)
            if self._transport is not None:
                try:
                    loop_thread.call(self._transport.close(), timeout=timeout)
                except Exception as exc:
                    logger.warning("[CONNECTION] close: {!r}", exc)
            if self._bridge is not None:
                self._bridge.close(timeout)
        self._dispatch_queue.put(_STOP)
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(timeout)
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._own_loop and loop_thread is not None and not loop_thread.in_loop_thread():
            loop_thread.stop(timeout)

    def _shut_down(self, error: BaseException) -> None:
        """CLOSED for callers: every waiter fails with ``error``. Runs once, any thread."""
        with self._lock:
            if self._closed is None:
                self._closed = error
            waiters = [
                *self._done_waiters.values(),
                *self._followups.values(),
                *self._oob_waiters.values(),
                *self._requests.values(),
                self._session_ready,
            ]
            self._done_waiters.clear()
            self._followups.clear()
            self._oob_waiters.clear()
            self._requests.clear()
            self._request_keys.clear()
            streams = list(self._streams)
        self._gate.close(error)
        for future in waiters:
            _settle(future, error)
        for stream in streams:
            stream.put(_STOP)

    def hangup(self, timeout: float | None = None) -> None:
        """End the call for everyone on it - the browser and every sideband - then close.

        ``close()`` alone detaches a sideband and leaves the call running. On a call this
        is the API's hang-up with the standard key; an own WebSocket session just ends.
        Raises :class:`CallNotFoundError` if the call had already ended (another
        :class:`SignalingError` if the API refused); the client is closed either way.
        """
        self._check_process()
        timeout = timeout if timeout is not None else self.close_timeout
        with self._lock:
            connected = self._life.state is State.OPEN and self._closed is None
        transport, loop_thread, call_id = self._transport, self._loop_thread, self.call_id
        try:
            if self._hung_up:
                raise ClosedError("this client already hung up its call")
            if connected and transport is not None and loop_thread is not None:
                loop_thread.call(transport.end_call(), timeout=timeout)
                self._hung_up = True
            elif call_id is not None and not self._key.is_ephemeral:
                # closed, or its connection was lost: the call may still be up; end it by id
                from rtclient.calls import hangup_call

                hangup_call(
                    call_id, api_key=self._key.reveal(), base_url=self.base_url, timeout=timeout
                )
                self._hung_up = True
            else:
                raise ClosedError("this client has no call to hang up")
        finally:
            self.close(timeout)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def call_id(self) -> str | None:
        return self._transport.call_id if self._transport else self._attach_call_id

    # -- public API ----------------------------------------------------------------

    def send_text(self, text: str, *, respond: bool = True) -> ResponseTicket | None:
        """Add a user message; with ``respond``, request a response through the gate."""
        self._send(ev.user_message(text))
        return self.request_response(reason="user_text") if respond else None

    def request_response(self, reason: str = "request", **params: Any) -> ResponseTicket:
        """Ask for a response. Never sends a second create while one is active.

        Plain requests that wait together are coalesced into one ``response.create``;
        a request with parameters (``instructions``, ``tools``, ...) gets its own.
        ``conversation="none"`` makes an out-of-band response that bypasses the gate.
        """
        self._check_open()
        if params.get("conversation") == "none":
            return self._request_out_of_band(reason, params)
        trigger = Trigger(reason, params or None)
        ticket = self._gate.request(trigger)
        if ticket is not None:
            self._fire(ticket)
        return ResponseTicket(trigger.future, reason, self._may_block)

    def ask(self, text: str, *, timeout: float | None = 60.0) -> Answer:
        """Send ``text`` and block until the final answer, after any tool rounds
        (``timeout=None``: until the answer or the close of the client)."""
        self._may_block("ask()", True)
        deadline = time.monotonic() + timeout if timeout is not None else None
        ticket = self.send_text(text)
        assert ticket is not None
        done = ticket.result(_remaining(deadline))
        response_ids: list[str] = []
        calls_made: list[ToolCall] = []
        while True:
            rid = (done.get("response") or {}).get("id")
            response_ids.append(str(rid))
            if not ev.function_calls(done) or not self._tools.specs:
                break
            waiter = self._followup_future(str(rid))
            what = f"the tool round of {rid} and its follow-up response"
            calls, followup = _wait(waiter, _remaining(deadline), what)
            calls_made.extend(calls)
            if followup is None:
                break
            done = followup
        return Answer(ev.response_text(done), calls_made, response_ids, done)

    def submit_tool_output(
        self, call_id: str, output: Any, *, respond: bool = False
    ) -> ResponseTicket | None:
        """Send a tool result yourself (thread-safe); optionally request the follow-up."""
        text = output if isinstance(output, str) else ev.encode(output)
        self._send(ev.function_call_output(call_id, text))
        return self.request_response(reason=f"tool_output:{call_id}") if respond else None

    def interrupt(
        self, timeout: float | None = 10.0, *, wait: bool = True
    ) -> dict[str, Any] | None:
        """Barge in: cancel the active response (if any), then clear output audio.

        ``response.cancel`` is sent only if a response is active (or, if our create is
        still unconfirmed, as soon as it is created); ``output_audio_buffer.clear``
        always (a WebSocket session has no such buffer: its transport stops playing and
        truncates what was not heard). With ``wait`` it blocks until the cancelled
        response's ``response.done`` and returns it (None if nothing was active). A
        request made right after is queued by the gate until that done - never rejected.
        """
        self._check_open()
        if wait:
            self._may_block("interrupt(wait=True)", True)
        response_id = self._gate.cancel()
        if response_id is not None:
            try:
                self._send(self._cancel_event(response_id))
                logger.info("[RESPONSE_CANCEL] cancel of {} sent", response_id)
            except BaseException:
                self._gate.cancel_failed(response_id)  # the next interrupt() tries again
                raise
        self._send(ev.output_audio_buffer_clear())
        if response_id is None or not wait:
            return None
        waiter = self._done_future(response_id)  # fails at once if closed meanwhile
        done: dict[str, Any] = _wait(
            waiter, timeout, f"the cancelled response {response_id} to finish"
        )
        return done

    def send_event(self, event: Mapping[str, Any], *, timeout: float = _SEND_TIMEOUT) -> None:
        """Send any client event (an ``event_id`` is added). ``response.create`` is refused:
        use ``request_response`` so the gate can keep its promise."""
        self._check_open()
        if event.get("type") == "response.create":
            raise ValueError("send response.create through request_response(), not send_event()")
        self._send(ev.with_event_id(event), timeout=timeout)

    def _on(
        self, event_type: str, callback: Callable[[Any], object], *, raw: bool = False
    ) -> Callable[[], None]:
        """Call ``callback(event)`` on the dispatcher thread for each server event of
        ``event_type`` (``"*"`` for all). Returns a function that unsubscribes.

        The event is its ``openai.types.realtime`` model: ``on("response.done", cb)``
        calls ``cb(ResponseDoneEvent)``, and type checkers check ``cb`` against it
        (``"*"``: the union). Only events that have a typed subscriber are parsed, once
        each, the model shared by every typed subscriber. ``raw=True`` gives the dict
        as received: no parsing, no ``openai`` import (the fast path).

        A typed subscriber gets the raw dict, not a model, for an event no model
        describes: an old beta name (``response.text.delta``...: subscribing to one by
        name simply gives dicts), a type the ``openai`` package does not know (``"*"``
        only), or an event its model rejects - the last two logged at WARNING once per
        type and counted in ``stats()["untyped_events"]``, as a beta name is under
        ``"*"``. Never an exception on the dispatcher.

        ``event_type`` is checked: a name that is neither ``"*"`` nor a server event
        type (:data:`rtclient.core.events.SERVER_EVENT_TYPES`) raises ``ValueError`` naming
        the close matches. The first typed subscription of a process imports ``openai``
        (~1.5 s) on the calling thread.

        A callback must not block on the client (``ask``, ``ticket.result``,
        ``update_session``, ``get_item``..., ``interrupt(wait=True)``): the dispatcher
        thread it runs on is the one that would deliver the answer, so those calls
        raise :class:`WrongThreadError` there.
        """
        self._check_process()
        if event_type != "*" and event_type not in ev.SERVER_EVENT_TYPES:
            matches = ev.close_matches(event_type)
            hint = f"; did you mean {' or '.join(map(repr, matches))}?" if matches else ""
            raise ValueError(f"{event_type!r} is not a server event type{hint}")
        if event_type in BETA_ONLY:
            raw = True  # no GA model: the dict, and nothing to parse (or import) for it
        if not raw:
            ev.prepare_models([event_type])
        subscription = _Subscription(callback, raw)
        with self._lock:
            self._subscribers.setdefault(event_type, []).append(subscription)

        def unsubscribe() -> None:
            with self._lock:
                subscriptions = self._subscribers.get(event_type, [])
                if subscription in subscriptions:
                    subscriptions.remove(subscription)

        return unsubscribe

    if TYPE_CHECKING:
        on: On  # the overloads, one per event type (rtclient/_typed.py)
    else:
        on = _on

    @overload
    def events(
        self, timeout: float | None = None, *, raw: Literal[False] = False
    ) -> EventStream[AnyServerEvent]: ...
    @overload
    def events(
        self, timeout: float | None = None, *, raw: Literal[True]
    ) -> EventStream[dict[str, Any]]: ...
    def events(self, timeout: float | None = None, *, raw: bool = False) -> EventStream[Any]:
        """A blocking iterator over server events from now on: their ``openai`` models
        (as ``"*"`` callbacks get them), or the raw dicts with ``raw=True``. Iteration
        ends when no event arrives within ``timeout`` or when the client closes; opened
        on a closed client it raises :class:`ClosedError`."""
        self._check_process()
        if not raw:
            if self._closed is not None:
                raise ClosedError(f"the client is closed: {self._closed}") from self._closed
            ev.prepare_models(["*"])
        return EventStream(self, timeout, raw)

    # -- the session and the conversation, waitable ----------------------------------

    @overload
    def update_session(
        self, *, timeout: float | None = ..., raw: Literal[False] = False, **fields: Any
    ) -> Session: ...
    @overload
    def update_session(
        self, *, timeout: float | None = ..., raw: Literal[True], **fields: Any
    ) -> dict[str, Any]: ...
    def update_session(
        self, *, timeout: float | None = 10.0, raw: bool = False, **fields: Any
    ) -> Any:
        """Send ``session.update`` with ``fields`` and wait for the ``session.updated``
        that answers it; return its ``session`` (an ``openai.types.realtime.
        RealtimeSessionCreateRequest``; the dict with ``raw=True``). A refusal raises
        the server's :class:`ServerError` (matched by ``event_id``); no answer within
        ``timeout`` raises :class:`WaitTimeoutError`.

        Fields replace the session's (``audio.input``/``audio.output`` merge field by
        field): passing ``tools`` replaces the tools the client declared at connect.
        With ``client_turns=True`` a ``turn_detection`` given here still starts no
        response. The API does not say which ``session.update`` a ``session.updated``
        answers: each one answers the oldest waiting call, so on a sideband an update
        the browser sent at the same moment may answer this call early.
        """
        return self._update_session(fields, timeout, raw, "update_session()")

    def _update_session(
        self, fields: Mapping[str, Any], timeout: float | None, raw: bool, what: str
    ) -> Any:
        if self._client_turns:
            fields = ev.keep_client_turns(fields)
        answer = self._ask_server(ev.session_update(fields), None, timeout, what)
        if raw:
            return answer.get("session")
        session = _typed_event(answer).session
        if getattr(session, "type", None) != "realtime":
            raise EventValidationError(
                f"the session.updated answering {what} holds no realtime session",
                event=answer,
            )
        return session

    @overload
    def set_input_transcription(
        self,
        model: str | None,
        *,
        language: str | None = ...,
        prompt: str | None = ...,
        timeout: float | None = ...,
        raw: Literal[False] = False,
    ) -> Session: ...
    @overload
    def set_input_transcription(
        self,
        model: str | None,
        *,
        language: str | None = ...,
        prompt: str | None = ...,
        timeout: float | None = ...,
        raw: Literal[True],
    ) -> dict[str, Any]: ...
    def set_input_transcription(
        self,
        model: str | None,
        *,
        language: str | None = None,
        prompt: str | None = None,
        timeout: float | None = 10.0,
        raw: bool = False,
    ) -> Any:
        """Transcribe the user's audio with ``model`` (``"gpt-4o-transcribe"``,
        ``"whisper-1"``...; ``None`` turns it off): ``update_session(audio={"input":
        {"transcription": {...}}})``. The transcripts arrive as
        ``conversation.item.input_audio_transcription.delta``/``.completed`` events
        (``.failed`` if one fails) for ``on()`` and ``events()``."""
        transcription: dict[str, Any] | None = None
        if model is not None:
            transcription = {"model": model}
            if language is not None:
                transcription["language"] = language
            if prompt is not None:
                transcription["prompt"] = prompt
        fields = {"audio": {"input": {"transcription": transcription}}}
        return self._update_session(fields, timeout, raw, "set_input_transcription()")

    @overload
    def get_item(
        self, item_id: str, *, timeout: float | None = ..., raw: Literal[False] = False
    ) -> ConversationItem: ...
    @overload
    def get_item(
        self, item_id: str, *, timeout: float | None = ..., raw: Literal[True]
    ) -> dict[str, Any]: ...
    def get_item(self, item_id: str, *, timeout: float | None = 10.0, raw: bool = False) -> Any:
        """The server's copy of a conversation item (``conversation.item.retrieve``,
        answered by ``conversation.item.retrieved``): the ``openai`` model, or the dict
        with ``raw=True``. An unknown item raises the server's :class:`ServerError`."""
        event = ev.with_event_id({"type": "conversation.item.retrieve", "item_id": item_id})
        answer = self._ask_server(event, item_id, timeout, f"get_item({item_id!r})")
        return answer.get("item") if raw else _typed_event(answer).item

    def delete_item(self, item_id: str, *, timeout: float | None = 10.0) -> None:
        """Delete a conversation item and wait for ``conversation.item.deleted``; an
        unknown item raises the server's :class:`ServerError`."""
        event = ev.with_event_id({"type": "conversation.item.delete", "item_id": item_id})
        self._ask_server(event, item_id, timeout, f"delete_item({item_id!r})")

    def truncate_item(
        self,
        item_id: str,
        content_index: int,
        audio_end_ms: int,
        *,
        timeout: float | None = 10.0,
    ) -> None:
        """Cut an assistant item's audio at ``audio_end_ms`` (and drop its unheard
        transcript) and wait for ``conversation.item.truncated``; a refusal (unknown
        item, not audio, beyond its end) raises the server's :class:`ServerError`."""
        event = ev.with_event_id(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )
        self._ask_server(event, item_id, timeout, f"truncate_item({item_id!r})")

    def _ask_server(
        self, event: dict[str, Any], item_id: str | None, timeout: float | None, what: str
    ) -> dict[str, Any]:
        """Send a client event and wait for the server event that answers it, or the
        error naming its ``event_id``.

        Answers are matched by item id (``None``: ``session.updated``), each to the
        oldest call waiting for that answer: two calls about one item at once get
        their answers in the order they were sent, as the server handles a
        connection's events in order. A call that timed out is forgotten: an answer
        that comes after it goes to the next call waiting for the same answer, if any
        (the API carries no id that could tell them apart).
        """
        self._may_block(what, True)
        answer = _ANSWERED_BY[event["type"]]
        future = self._send_request(event, item_id)
        try:
            result: dict[str, Any] = _wait(future, timeout, f"the {answer} answering {what}")
        except WaitTimeoutError:
            with self._lock:
                self._forget_request(event["event_id"])
            raise
        return result

    def _send_request(
        self, event: dict[str, Any], item_id: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """Register the waiter for ``event``'s answer (one waiter rule), then send it."""
        event_id: str = event["event_id"]
        key = (_ANSWERED_BY[event["type"]], item_id)

        def note() -> None:
            self._request_keys[event_id] = key

        future = self._register(self._requests, event_id, also=note)
        if future.done():
            return future  # the client is closed: the waiter failed at once
        try:
            self._send(event)
        except BaseException:
            with self._lock:
                self._forget_request(event_id)
            raise
        return future

    def _forget_request(self, event_id: str) -> concurrent.futures.Future[Any] | None:
        """Under the lock: drop a request's bookkeeping, return its waiter if any."""
        self._request_keys.pop(event_id, None)
        return self._requests.pop(event_id, None)

    def stats(self) -> dict[str, int]:
        """Counters: the gate's (creates, coalesced, rejections, rearmed, confirm
        timeouts, lost - which must stay 0), the tools', and the connection's."""
        self._check_process()
        gate = self._gate.stats().as_dict()
        tools = dataclasses.asdict(self._tools.stats)
        return {**gate, **tools, **self._counters}

    @property
    def gate(self) -> ResponseGate:
        return self._gate

    # -- sending -------------------------------------------------------------------

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise ForkedProcessError(
                f"this RealtimeClient belongs to process {self._pid}; a forked child "
                f"({os.getpid()}) shares none of its threads or its connection - create a "
                "new client in the child"
            )

    def _check_open(self) -> None:
        self._check_process()
        if self._closed is not None:
            raise ClosedError(f"the client is closed: {self._closed}") from self._closed
        if self._bridge is None:
            raise ClosedError("the client is not connected; call connect() first")

    def _may_block(self, what: str, blocking: bool = True) -> None:
        """Refuse a wait that cannot end: in a forked child, or on the thread that would
        have to deliver the answer (the dispatcher runs callbacks; the loop thread
        performs sends and reads events)."""
        self._check_process()
        if not blocking:
            return
        if threading.current_thread() is self._dispatcher:
            raise WrongThreadError(
                f"{what} would block the dispatcher thread, which runs on() callbacks and "
                "delivers the very events it waits for; call it from another thread "
                "(e.g. submit it to an executor)"
            )
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.in_loop_thread():
            raise WrongThreadError(f"{what} would block the loop thread and deadlock")

    def _send(self, event: dict[str, Any], timeout: float = _SEND_TIMEOUT) -> None:
        """Put an event on the bridge and wait for the outcome of the actual send."""
        self._check_open()
        assert self._bridge is not None
        _wait(self._bridge.put(event), timeout, f"the send of {event.get('type')}")

    def _perform_send(self, event: dict[str, Any]) -> None:
        """The bridge's handler: runs on the loop thread, the only thread touching aiortc."""
        if self._transport is None:
            raise ClosedError("not connected")
        if self._send_guard is not None:
            try:
                self._send_guard(event)
            except Exception as exc:
                raise SendRefusedError(f"{event.get('type')} refused: {exc}") from exc
        self._transport.send(event)
        # On the wire. Nothing that can raise may follow (a log call can: a sink that
        # raises would report a sent create as failed, and the gate would send it again);
        # the "[RESPONSE_CREATE] sent" line is written by the bridge's caller after.
        if event.get("type") == "response.create":
            self._counters["creates_sent"] += 1

    def _fire(self, ticket: Ticket | None) -> None:
        """Send a claimed ticket; on failure roll back (and send what the gate says)."""
        while ticket is not None:
            bridge = self._bridge
            try:
                if bridge is None:
                    raise ClosedError("not connected")
                future = bridge.put(ev.response_create(ticket))
            except (BridgeFullError, ClosedError) as exc:
                ticket = self._gate.rollback(ticket, exc, retry=isinstance(exc, BridgeFullError))
                continue
            future.add_done_callback(partial(self._after_create, ticket))
            return

    def _after_create(self, ticket: Ticket, future: concurrent.futures.Future[Any]) -> None:
        exc = future.exception()
        if exc is None:
            if (metrics := self._metrics) is not None:
                metrics.create_sent(ticket)
            logger.info("[RESPONSE_CREATE] {} sent", ticket.event_id)
            return
        retry = not isinstance(exc, ClosedError | MessageTooLargeError | SendRefusedError)
        self._fire(self._gate.rollback(ticket, exc, retry=retry))

    def _request_out_of_band(self, reason: str, params: dict[str, Any]) -> ResponseTicket:
        event = ev.with_event_id({"type": "response.create"})
        oob_id = event["event_id"]
        params["metadata"] = {**(params.get("metadata") or {}), "rtclient_oob": oob_id}
        event["response"] = params
        future = self._register(self._oob_waiters, oob_id)
        try:
            self._send(event)
        except BaseException:
            with self._lock:
                self._oob_waiters.pop(oob_id, None)
            raise
        return ResponseTicket(future, reason, self._may_block)

    def _send_tool_output(self, call_id: str, output: str) -> concurrent.futures.Future[Any]:
        """Hand a tool's output to the bridge without waiting; the future reports the
        outcome of the actual send (on the wire, or why not)."""
        self._check_open()
        assert self._bridge is not None
        return self._bridge.put(ev.function_call_output(call_id, output))

    def _message_limit(self) -> int | None:
        transport = self._transport
        return transport.max_message_size if transport is not None else None

    def _request_followup(self, response_id: str, calls: list[ToolCall]) -> None:
        if not any(c.wants_response for c in calls):
            self._settle_followup(response_id, (calls, None))
            return
        trigger = Trigger(f"tool_calls:{response_id}")
        if (metrics := self._metrics) is not None:
            metrics.round_complete(trigger)  # before the gate: its create may leave at once

        def served(done: concurrent.futures.Future[dict[str, Any]]) -> None:
            exc = done.exception()
            self._settle_followup(response_id, exc if exc is not None else (calls, done.result()))

        trigger.future.add_done_callback(served)
        try:
            ticket = self._gate.request(trigger)
        except ClosedError as exc:
            self._settle_followup(response_id, exc)
            return
        self._fire(ticket)

    def _settle_followup(self, response_id: str, outcome: Any) -> None:
        """A tool round ended: hand it to its reader, or keep it (bounded) for a late one."""
        with self._lock:
            future = self._followups.pop(response_id, None)
            if future is None:
                future = concurrent.futures.Future()
                self._settled_followups[response_id] = future
                while len(self._settled_followups) > _SETTLED_KEPT:
                    self._settled_followups.popitem(last=False)
        _settle(future, outcome)

    def _followup_future(self, response_id: str) -> concurrent.futures.Future[Any]:
        """The (calls, follow-up done) of a response's tool round, for one reader."""
        with self._lock:
            settled = self._settled_followups.pop(response_id, None)
        if settled is not None:
            return settled
        return self._register(self._followups, response_id)

    def _done_future(self, response_id: str) -> concurrent.futures.Future[dict[str, Any]]:
        future = self._register(self._done_waiters, response_id)
        with self._lock:  # already done: answer from the record, leave no waiter behind
            event = self._done_events.get(response_id)
            if event is not None:
                self._done_waiters.pop(response_id, None)
        if event is not None:
            _settle(future, event)
        return future

    def _register(
        self,
        waiters: dict[str, concurrent.futures.Future[Any]],
        key: str,
        *,
        also: Callable[[], None] | None = None,
    ) -> concurrent.futures.Future[Any]:
        """The one waiter rule: register under the lock close() takes, or fail at once.
        ``also`` runs under that lock when the waiter is registered (its bookkeeping)."""
        with self._lock:
            if self._closed is None:
                if also is not None:
                    also()
                return waiters.setdefault(key, concurrent.futures.Future())
            error = self._closed
        failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
        failed.set_exception(error)
        return failed

    def _register_stream(self, stream: EventStream[Any]) -> None:
        with self._lock:
            if self._closed is None:
                self._streams.add(stream)
                return
            error = self._closed
        raise ClosedError(f"the client is closed: {error}") from error

    def _unregister_stream(self, stream: EventStream[Any]) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.running:
            loop = loop_thread.loop
            loop_thread.call_soon(loop.call_later, delay, fn)

    def _arm_watchdog(self) -> None:
        """The gate's confirm watchdog, ticking on the loop thread."""
        if self._closed is not None or self._loop_thread is None:
            return
        self._gate.tick()
        period = min(1.0, self._gate.machine.confirm_timeout / 4)
        self._watchdog = self._loop_thread.loop.call_later(period, self._arm_watchdog)

    # -- receiving (loop thread) ---------------------------------------------------

    def _on_message(self, text: str) -> None:
        try:
            event = ev.decode(text)
        except ev.MalformedEventError as exc:
            self._counters["malformed_events"] += 1
            logger.warning("[SERVER_EVENT] malformed message skipped: {}", exc)
            return
        self._counters["events_received"] += 1
        kind = event["type"]
        if kind not in ev.SERVER_EVENT_TYPES:
            self._counters["unknown_events"] += 1
        if kind in ("response.created", "response.done", "error"):
            fx = self._gate.on_server_event(event)
            if kind == "response.created" and (metrics := self._metrics) is not None:
                metrics.response_created(event)
            if fx.send is not None:
                self._fire(fx.send)
            if fx.cancel is not None:
                self._send_cancel(fx.cancel)
            if kind == "response.done":
                self._on_response_done(event)
            elif kind == "error":
                self._on_error(event)
        elif kind == "input_audio_buffer.committed" and self._client_turns:
            self._respond_to_turn(event)
        elif kind in _ANSWERS:
            self._on_answer(kind, event)
        if self._dispatcher_wants(kind):
            self._dispatch_queue.put(event)

    def _dispatcher_wants(self, kind: str) -> bool:
        """Hand an event to the dispatcher thread only if something there reads it.

        The hand-off is the loop thread's largest per-event cost once a process holds
        hundreds of clients (each with its dispatcher thread: waking one of a thousand
        threads costs 4-85 us where one costs 0.2 us, bench/README "A thread per
        client"); audio and text deltas nobody subscribed to need not pay it. Read
        without the lock: a subscription made while an event arrives may miss that event,
        as one made a moment later would.
        """
        if kind == "session.created" or (self._tools.specs and kind in TOOL_EVENTS):
            return True
        subscribers = self._subscribers
        return bool(self._streams or subscribers.get(kind) or subscribers.get("*"))

    def _on_answer(self, kind: str, event: dict[str, Any]) -> None:
        """A server event answering a request (``session.updated``,
        ``conversation.item.retrieved/deleted/truncated``): settle the oldest request
        waiting for it, for that item."""
        if kind == "session.updated":
            item_id = None
        else:
            item = event.get("item")
            found = item.get("id") if isinstance(item, dict) else event.get("item_id")
            if not isinstance(found, str):
                return
            item_id = found
        key = (kind, item_id)
        with self._lock:
            event_id = next((e for e, want in self._request_keys.items() if want == key), None)
            future = self._forget_request(event_id) if event_id is not None else None
        if future is not None:
            _settle(future, event)

    def _respond_to_turn(self, event: dict[str, Any]) -> None:
        """Client-driven turns: the server committed the user's turn and starts nothing
        itself; we request the answer through the gate (loop thread, no hop)."""
        trigger = Trigger(f"user_turn:{event.get('item_id')}")
        try:
            ticket = self._gate.request(trigger)
        except ClosedError:
            return
        self._fire(ticket)

    def _cancel_event(self, response_id: str) -> dict[str, Any]:
        """A ``response.cancel``, remembered (bounded) so that its error can be matched."""
        event = ev.response_cancel(response_id)
        with self._lock:
            self._cancels[event["event_id"]] = response_id
            while len(self._cancels) > _SETTLED_KEPT:
                self._cancels.popitem(last=False)
        return event

    def _send_cancel(self, response_id: str) -> None:
        """Cancel a response the gate marked (loop thread); if the cancel cannot go out,
        the gate forgets it was cancelling, so a later interrupt() tries again."""
        bridge = self._bridge
        try:
            if bridge is None:
                raise ClosedError("not connected")
            future = bridge.put(self._cancel_event(response_id))
        except RealtimeError as exc:
            future = concurrent.futures.Future()
            future.set_exception(exc)

        def sent(outcome: concurrent.futures.Future[Any]) -> None:
            if outcome.exception() is None:
                logger.info("[RESPONSE_CANCEL] cancel of {} sent", response_id)
            else:
                logger.warning("[SEND] cancel of {} not sent", response_id)
                self._gate.cancel_failed(response_id)

        future.add_done_callback(sent)

    def _on_response_done(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        if not isinstance(response, dict):
            return
        rid = response.get("id")
        metadata = response.get("metadata") or {}
        oob_id = metadata.get("rtclient_oob") if isinstance(metadata, dict) else None
        oob_id = oob_id if isinstance(oob_id, str) else None
        with self._lock:
            if isinstance(rid, str):
                self._done_events[rid] = event
                while len(self._done_events) > _SETTLED_KEPT:
                    self._done_events.popitem(last=False)
                waiter = self._done_waiters.pop(rid, None)
            else:
                waiter = None
            oob = self._oob_waiters.pop(oob_id, None) if oob_id else None
        for future in (waiter, oob):
            if future is not None:
                _settle(future, event)

    def _on_error(self, event: dict[str, Any]) -> None:
        error = ServerError.from_event(event)
        self._counters["server_errors"] += 1
        if error.event_id is not None and not error.event_id.startswith(ev.EVENT_ID_PREFIXES):
            # another connection's event (a sideband sees the browser's errors): not ours
            logger.debug(
                "[SERVER_ERROR] {} for another connection's {}", error.code, error.event_id
            )
            return
        logger.error(
            "[SERVER_ERROR] {} {} (event_id={})",
            error.code or error.type,
            error.message,
            error.event_id,
        )
        with self._lock:
            oob = self._oob_waiters.pop(error.event_id, None) if error.event_id else None
            cancelled = self._cancels.pop(error.event_id, None) if error.event_id else None
            request = self._forget_request(error.event_id) if error.event_id else None
        for waiter in (oob, request):
            if waiter is not None:
                _settle(waiter, error)
        if cancelled is not None and error.code == "response_cancel_not_active":
            # the response we believed active is over on the server: free the gate
            self._fire(self._gate.cancel_not_active(cancelled))
        if isinstance(error, SessionExpiredError):
            self._on_connection_lost(error)  # close() still hangs up and releases the call

    def _on_connection_lost(self, error: BaseException) -> None:
        logger.error("[CONNECTION] lost: {!r}", error)
        self._shut_down(error)
        self._dispatch_queue.put(_STOP)

    def _on_audio_frame(self, frame: Any) -> None:
        self._dispatch_queue.put(("audio", frame))

    # -- dispatching (dispatcher thread) -------------------------------------------

    def _dispatch_loop(self) -> None:
        while True:
            item = self._dispatch_queue.get()
            if item is _STOP:
                break
            if isinstance(item, tuple):
                if self._on_audio is not None:
                    _guard(self._on_audio, item[1])
                continue
            self._dispatch(item)
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.put(_STOP)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.created":
            _settle(self._session_ready, event)
        if self._tools.specs:
            _guard(self._tools.on_event, event)  # a malformed event must not end dispatch
        with self._lock:
            subscriptions = [*self._subscribers.get(kind, ()), *self._subscribers.get("*", ())]
            streams = list(self._streams)
        typed: Any = event
        if any(not s.raw for s in subscriptions) or any(not s.raw for s in streams):
            typed = self._typed_or_raw(event)  # once per event, shared
        for subscription in subscriptions:
            _guard(subscription.callback, event if subscription.raw else typed)
        for stream in streams:
            stream.put(event if stream.raw else typed)

    def _typed_or_raw(self, event: dict[str, Any]) -> Any:
        """The event's ``openai`` model, or the dict itself (logged once per type)."""
        try:
            return ev.to_model(event)
        except LookupError:
            known = event["type"] in ev.SERVER_EVENT_TYPES
            reason = "an old beta name, no GA model" if known else "a type openai does not know"
        except Exception as exc:  # pydantic's ValidationError, or whatever a model raises
            reason = f"its model rejects it ({_validation_summary(exc)})"
        self._counters["untyped_events"] += 1
        kind = event["type"]
        if kind not in self._untyped_warned and len(self._untyped_warned) < 256:
            self._untyped_warned.add(kind)
            logger.warning(
                "[SERVER_EVENT] {} reaches typed subscribers as a dict: {} (once per type)",
                kind,
                reason,
            )
        return event


def _typed_event(event: Mapping[str, Any]) -> Any:
    """``event`` as its ``openai`` model, or :class:`EventValidationError`."""
    try:
        return ev.to_model(event)
    except LookupError as exc:
        raise EventValidationError(str(exc), event=dict(event)) from None
    except ValueError as exc:  # pydantic.ValidationError
        raise EventValidationError(
            f"{event.get('type')} does not validate against its openai model: "
            f"{_validation_summary(exc)}",
            event=dict(event),
        ) from exc


def _validation_summary(exc: BaseException) -> str:
    """The first of a pydantic ``ValidationError``'s errors, on one line."""
    errors = getattr(exc, "errors", None)
    try:
        found = errors() if callable(errors) else []
    except Exception:
        found = []
    if not found:
        return f"{type(exc).__name__}: {exc}"
    first = found[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _wait(future: concurrent.futures.Future[Any], timeout: float | None, what: str) -> Any:
    """``future.result(timeout)``, but a timeout says what was waited for, and is both a
    ``RealtimeError`` and a ``TimeoutError`` (never a TimeoutError raised *by* the work
    mistaken for this wait's)."""
    done, _ = concurrent.futures.wait([future], timeout)
    if not done:
        raise WaitTimeoutError(f"waited {timeout:.3g}s for {what}")
    return future.result()


def _settle(future: concurrent.futures.Future[Any], outcome: Any) -> None:
    """Resolve a future once, with a value or an exception."""
    if future.done():
        return
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except concurrent.futures.InvalidStateError:
        pass


def _guard(callback: Callable[[Any], None], arg: Any) -> None:
    try:
        callback(arg)
    except Exception:
        logger.exception("[CALLBACK] {} raised", getattr(callback, "__name__", callback))
