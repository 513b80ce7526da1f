"""RealtimeClient: the synchronous, thread-safe client for the Realtime API.

Who runs what:

* **Caller threads** (Flask/Django workers, scripts) call ``ask``, ``send_text``,
  ``request_response``, ``interrupt``. They claim gate tickets and put events on the
  janus bridge; they never touch aiortc.
* **The loop thread** owns aiortc. It parses each server message once, in order, and
  the protocol core feeds ``response.created``/``response.done``/``error`` to the gate
  *immediately* - a coalesced create after ``response.done`` goes out with no thread
  hop, after everything already on the bridge (the bridge keeps put order).
* **The dispatcher** (a few threads shared by the clients of a loop thread) receives
  the events something reads, in order, and runs user-facing work: tool scheduling,
  ``on()`` callbacks, ``events()`` iterators.
* **Tool threads** (any ``concurrent.futures.Executor``) run tools; outputs go back
  over the bridge, and the follow-up create through the gate, once per response.

The decisions live in :class:`rtclient.core.realtime.RealtimeProtocol` (no threads, no
I/O); the threads, waiting and guards in :class:`rtclient.runtime.session.SessionShell`.
This module holds the options and the public API, and - with ``reconnect=`` - what a
new connection is given (the decisions: :mod:`rtclient.core.restore`): an own session's
conversation restored into a new session, or a sideband's call re-attached with the
tool calls made meanwhile answered.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from rtclient import transports
from rtclient._typed import BETA_ONLY
from rtclient.conversation import ConversationCalls
from rtclient.core import events as ev
from rtclient.core.events import DEFAULT_MODEL
from rtclient.core.gate import ResponseGate
from rtclient.core.lifecycle import State
from rtclient.core.realtime import Observer, RealtimeProtocol
from rtclient.core.restore import (
    EVENT_MODELS,
    NOT_RESTORED_SHOWN,
    RECONNECTED,
    RECONNECTING,
    ConversationLog,
    NotRestored,
    Reconnect,
    Reconnected,
    Reconnecting,
    SeenItem,
    gap_calls,
    merge_session,
    plan_restore,
)
from rtclient.effects import Send
from rtclient.errors import ClosedError, ServerError, SessionReplacedError, WaitTimeoutError
from rtclient.logs import logger
from rtclient.runtime.dispatcher import Catalog, EventStream
from rtclient.runtime.loop import LoopThread
from rtclient.runtime.session import SEND_TIMEOUT, Core, SessionShell, remaining, wait_for
from rtclient.tools import ToolCall, ToolRunner, ToolSpec
from rtclient.transports import AudioFrameCallback, AudioIn, Transport

if TYPE_CHECKING:
    from openai.types.realtime import ResponseDoneEvent

    from rtclient._typed import AnyServerEvent, On


def _to_model(event: Mapping[str, Any]) -> Any:
    """A server event's ``openai`` model, or one of rtclient's own events' models."""
    own = EVENT_MODELS.get(str(event.get("type")))
    return ev.to_model(event) if own is None else own.model_validate(event)


def _prepare(event_types: Iterable[str]) -> None:
    ev.prepare_models([t for t in event_types if t not in EVENT_MODELS])


REALTIME_EVENTS = Catalog(
    api="realtime",
    types=ev.SERVER_EVENT_TYPES | {RECONNECTING, RECONNECTED},  # + the client's own
    raw_only=BETA_ONLY,
    prepare=_prepare,
    to_model=_to_model,
    close_matches=ev.close_matches,
    checks=ev.MODELS.checks,
)
# Gap probe: appended to a re-attached call's conversation to learn its newest item
# (from the probe's previous_item_id), then deleted at once.
PROBE_TEXT = "(rtclient re-attached to this call; this note is deleted at once)"
_DUPLICATE = frozenset({"item_create_duplicate_item_id"})
_UNKNOWN_ITEM = frozenset({"item_retrieve_invalid_item_id"})

__all__ = ["Answer", "EventStream", "RealtimeClient", "ResponseTicket"]


@dataclasses.dataclass
class _Loss:
    """What a reconnect starts from: when and why the connection was lost, its core,
    what the client had seen of its conversation, and the requests to ask again."""

    started: float
    error: BaseException
    core: RealtimeProtocol
    seen: list[SeenItem]
    rerequest: list[tuple[str, Mapping[str, Any] | None]]
    call_id: str | None


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
        catalog: Catalog = REALTIME_EVENTS,
    ) -> None:
        self._future = future
        self.reason = reason
        self._guard = guard
        self._catalog = catalog

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The ``response.done`` event as the raw dict."""
        return self._outcome("result()", timeout)

    def response(self, timeout: float | None = None) -> ResponseDoneEvent:
        """The ``response.done`` event as ``openai.types.realtime.ResponseDoneEvent``
        (parsed on each call; raises :class:`EventValidationError` if it does not
        validate - ``result()`` still has the dict)."""
        event: ResponseDoneEvent = self._catalog.model(self._outcome("response()", timeout))
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

    ``text`` is the final answer (the final response's messages of phase
    ``"final_answer"``, or with no phase, as older models send); ``commentary`` the
    preambles the model spoke first ("Let me check that..."; phase ``"commentary"``) in
    every response of this ask, one line per response that had one. ``raw`` is the final
    ``response.done`` event as the server sent it; ``response`` is the same event as
    ``openai.types.realtime.ResponseDoneEvent``, parsed on first read
    (:class:`EventValidationError` if it does not validate).
    """

    text: str
    tool_calls: list[ToolCall]
    response_ids: list[str]
    raw: dict[str, Any]
    commentary: str = ""

    @functools.cached_property
    def response(self) -> ResponseDoneEvent:
        event: ResponseDoneEvent = REALTIME_EVENTS.model(self.raw)
        return event


class RealtimeClient(ConversationCalls, SessionShell):
    """A synchronous, thread-safe client for the Realtime API.

    It speaks WebRTC by default; ``transport="websocket"`` opens a WebSocket session
    instead, and ``call_id="rtc_..."`` attaches as a sideband to a call a browser holds
    (standard key; the browser carries the audio). Everything else is the same on all
    three: see :mod:`rtclient.transports`.

    ``api_key`` defaults to ``OPENAI_API_KEY``; a callable is a token provider, asked for
    a bearer token for each connection (an Azure ``azure_ad_token_provider``). ``base_url``
    defaults to ``OPENAI_BASE_URL`` or ``https://api.openai.com/v1`` (the ``openai``
    package's convention: it includes ``/v1``); an Azure OpenAI endpoint
    (``https://<resource>.openai.azure.com/openai/v1``) takes the deployment as
    ``model`` and the key as ``api-key`` (:mod:`rtclient.transports.endpoint`).
    ``reasoning_effort`` sets the session's ``reasoning.effort`` (reasoning models such
    as ``gpt-realtime-2``). Tools run on ``executor`` (a thread pool by default). With no tools
    registered, function calls are left to the caller (``submit_tool_output``).
    Pass ``loop_thread`` to share one loop thread between many clients.

    ``client_turns=True`` makes the client start every response: server VAD still
    detects speech, commits the user's turn and cancels a response the user talks over
    (``interrupt_response``), but creates none itself (``create_response: false``); the
    client requests the answer through the gate on ``input_audio_buffer.committed``.
    With nothing else starting responses, no create can cross a server response, so
    the server never rejects one - by construction, not by retry.

    ``reconnect=Reconnect(...)`` (or ``True`` for the defaults) makes a lost connection
    survivable (README "Reconnect"): an own session moves, after a backoff, to a *new*
    session holding the conversation as the client saw it (text as text, audio as its
    transcript, tool calls with their outputs); a sideband re-attaches to the same call
    and answers, once, the tool calls made while it was away. Whatever waited on the old
    connection fails with :class:`SessionReplacedError`; ``on()`` subscriptions, tools
    and ``events()`` iterators carry over, and get ``rtclient.reconnecting`` then
    ``rtclient.reconnected`` (:class:`~rtclient.core.restore.Reconnected`: what was
    restored). A ``response.create`` is never replayed. Off by default: a lost
    connection closes the client, as ever.

    ``send_guard(event)`` runs on the loop thread at the last moment before each event
    is written; if it raises, the event is not written and the sender gets
    :class:`SendRefusedError` (a refused create fails its request, not retried; a
    refused tool output is undelivered). E.g. a holder whose lease may be lost.
    """

    def __init__(
        self,
        *,
        api_key: str | Callable[[], str] | None = None,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        session: Mapping[str, Any] | None = None,
        reasoning_effort: ev.ReasoningEffort | None = None,
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
        reconnect: Reconnect | bool | None = None,
        send_guard: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        if reasoning_effort is not None and reasoning_effort not in ev.REASONING_EFFORTS:
            raise ValueError(
                f"reasoning_effort must be one of {ev.REASONING_EFFORTS}, not {reasoning_effort!r}"
            )
        policy = Reconnect() if reconnect is True else reconnect or None
        if policy is not None and (isinstance(audio_in, str) or audio_out is not None):
            raise ValueError(
                "reconnect= cannot be combined with audio_in=<file> or audio_out=<file>: a "
                "new connection would play the file again from its start (a replay of the "
                "user's speech) or record over it; pass a track or on_audio= instead"
            )
        tool_runner = ToolRunner(tools)
        gate = ResponseGate(confirm_timeout=confirm_timeout, max_attempts=max_attempts)
        log = ConversationLog() if policy is not None else None
        core = RealtimeProtocol(gate, tool_runner, client_turns=client_turns, log=log)
        super().__init__(
            core,
            REALTIME_EVENTS,
            api_key=api_key,
            base_url=base_url,
            executor=executor,
            loop_thread=loop_thread,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
            bridge_size=bridge_size,
            on_audio=on_audio,
            send_guard=send_guard,
        )
        self._core: RealtimeProtocol = core
        self._catalog = REALTIME_EVENTS
        self._kind = "RealtimeClient"
        self._reconnect = policy
        self._confirm_timeout, self._max_create_attempts = confirm_timeout, max_attempts
        self._loss: _Loss | None = None
        self._reconnects = 0
        audio = audio_in is not None or audio_out is not None or on_audio is not None
        self._transport_kind = transports.choose(
            transport, call_id, self._key, audio=audio, base_url=self.base_url
        )
        self._attach_call_id = call_id
        self.model = model
        self._session = dict(session or {})
        self._reasoning_effort = reasoning_effort
        self._client_turns = client_turns
        self._transport_options: dict[str, Any] = {
            "ice_servers": ice_servers,
            "loopback_only": loopback_only,
            "connect_timeout": connect_timeout,
            "audio_in": audio_in,
            "audio_out": audio_out,
            "on_audio_frame": self._dispatcher.put_audio if on_audio is not None else None,
        }
        self._hung_up = False

    def __repr__(self) -> str:
        call = self._transport.call_id if self._transport else None
        where = f"model={self.model} base_url={self.base_url} call={call}"
        return f"<RealtimeClient {where} {self._life!r}>"

    def __enter__(self) -> RealtimeClient:
        return self.connect()

    def connect(self, timeout: float | None = None) -> RealtimeClient:
        """Connect, wait for the session, register tools. Blocking, bounded by ``timeout``.

        A client connects once. ``close()`` from another thread at any moment of this
        call makes it raise :class:`ClosedError` promptly and leaves nothing behind.
        """
        super().connect(timeout)
        return self

    # -- the connection -----------------------------------------------------------------

    def _make_transport(self) -> Transport:
        """The connection this client speaks over (the only place that knows which)."""
        options = dict(self._transport_options)
        on_message, on_closed = self._transport_handlers()
        common: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": self._key,
            "model": self.model,
            "session": self._session_config(),
            "on_message": on_message,
            "on_closed": on_closed,
        }
        if self._transport_kind == "webrtc":
            return transports.WebRTCTransport(**common, **options)
        del options["ice_servers"], options["loopback_only"]  # no ICE on a WebSocket
        return transports.WebSocketTransport(**common, call_id=self._attach_call_id, **options)

    def _when_open(self, deadline: float) -> None:
        """Ready: the session exists (a sideband may attach after session.created) and
        the client's config is applied."""
        if self._attach_call_id is None:
            self._waiters.register(("session", "created")).result(remaining(deadline))
        config = self._session_config()
        if config:
            event = ev.session_update(config)
            self._core.expect_answer(event, None)
            updated = self._waiters.register(("request", event["event_id"]))
            self._send(event)
            updated.result(remaining(deadline))  # a timeout: connect()'s ConnectTimeoutError

    def _session_config(self) -> dict[str, Any]:
        """The session config a connection applies: the client's options, and (after a
        reconnect) every ``session.update`` the server accepted since."""
        config = self._base_session_config()
        log = self._core.log
        updates = log.session_updates() if log is not None else []
        return merge_session(config, updates) if updates else config

    def _base_session_config(self) -> dict[str, Any]:
        config = dict(self._session)
        if self._core.tools.specs:
            config.setdefault("tools", self._core.tools.session_tools())
        if self._reasoning_effort is not None:
            reasoning = dict(config.get("reasoning") or {})
            config["reasoning"] = {**reasoning, "effort": self._reasoning_effort}
        if self._client_turns:
            config = ev.with_client_turns(config)
        if config or self._attach_call_id is not None:  # a sideband's readiness: session.updated
            config.setdefault("type", "realtime")
        return config

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
            connected = self._life.state is State.OPEN and self._life.error is None
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
                    call_id, api_key=self._key.as_api_key(), base_url=self.base_url, timeout=timeout
                )
                self._hung_up = True
            else:
                raise ClosedError("this client has no call to hang up")
        finally:
            self.close(timeout)

    @property
    def call_id(self) -> str | None:
        return self._transport.call_id if self._transport else self._attach_call_id

    # -- requests -------------------------------------------------------------------

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
            oob_id, event = self._core.out_of_band(params)
            future = self._waiters.register(("oob", oob_id))
            try:
                self._send(event)
            except BaseException:
                self._waiters.forget(("oob", oob_id))
                raise
            return ResponseTicket(future, reason, self._may_block, self._catalog)
        try:
            trigger, effects = self._core.request(reason, params)
        except ClosedError:
            self._check_open()  # the gate closed under us: reconnecting, or closed
            raise
        self._apply(effects)
        return ResponseTicket(trigger.future, reason, self._may_block, self._catalog)

    def ask(self, text: str, *, timeout: float | None = 60.0) -> Answer:
        """Send ``text`` and block until the final answer, after any tool rounds
        (``timeout=None``: until the answer or the close of the client)."""
        self._may_block("ask()", True)
        deadline = time.monotonic() + timeout if timeout is not None else None
        gen = self._gen  # a reconnect meanwhile fails the rounds of this connection
        ticket = self.send_text(text)
        assert ticket is not None
        done = ticket.result(remaining(deadline))
        response_ids: list[str] = []
        calls_made: list[ToolCall] = []
        commentary: list[str] = []
        while True:
            rid = (done.get("response") or {}).get("id")
            response_ids.append(str(rid))
            if preamble := ev.response_commentary(done):
                commentary.append(preamble)
            if not ev.function_calls(done) or not self._core.tools.specs:
                break
            waiter = self._register_for(("followup", str(rid)), gen)
            what = f"the tool round of {rid} and its follow-up response"
            calls, followup = wait_for(waiter, remaining(deadline), what)
            calls_made.extend(calls)
            if followup is None:
                break
            done = wait_for(followup, remaining(deadline), what)
        return Answer(ev.response_text(done), calls_made, response_ids, done, "\n".join(commentary))

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
        gen = self._gen
        response_id = self._core.interrupt()
        if response_id is not None:
            try:
                self._send(self._core.cancel_event(response_id))
                logger.info("[RESPONSE_CANCEL] cancel of {} sent", response_id)
            except BaseException:
                self._core.cancel_failed(response_id)  # the next interrupt() tries again
                raise
        self._send(ev.output_audio_buffer_clear())
        if response_id is None or not wait:
            return None
        waiter = self._register_for(("done", response_id), gen)  # fails at once if closed
        done: dict[str, Any] = wait_for(
            waiter, timeout, f"the cancelled response {response_id} to finish"
        )
        return done

    def send_event(self, event: Mapping[str, Any], *, timeout: float = SEND_TIMEOUT) -> None:
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
        return self._subscribe(event_type, callback, raw)

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
        return self._stream(timeout, raw)

    def stats(self) -> dict[str, int]:
        """Counters: the gate's (creates, coalesced, rejections, rearmed, confirm
        timeouts, lost - which must stay 0), the tools', and the connection's; after a
        reconnect, summed over every connection (``reconnects`` counts them)."""
        self._check_process()
        with self._lock:
            cores = [*cast("list[RealtimeProtocol]", self._retired), self._core]
        if len(cores) == 1:
            counters = self._core.stats()
        else:
            counters = {}
            runners: set[int] = set()
            for core in cores:
                part = {**core.gate.stats().as_dict(), **core.counters}
                if id(core.tools) not in runners:  # a sideband's cores share one runner
                    runners.add(id(core.tools))
                    part.update(vars(core.tools.stats))
                for name, value in part.items():
                    counters[name] = counters.get(name, 0) + value
        extra = {"untyped_events": self._dispatcher.untyped_events}
        if self._reconnect is not None:
            extra["reconnects"] = self._reconnects
        return {**counters, **extra}

    @property
    def gate(self) -> ResponseGate:
        return self._core.gate

    def add_observer(self, observer: Observer) -> None:
        """Have ``observer`` told of the moments worth timing (a tool round complete, a
        create on the wire, a response created); ``rtclient.metrics`` uses this."""
        self._core.observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        if observer in self._core.observers:
            self._core.observers.remove(observer)

    # -- reconnects (README "Reconnect"; the decisions: rtclient.core.restore) ------------

    def _keeps_conversation(self) -> bool:
        return self._attach_call_id is not None  # a sideband: the call outlives it

    def _carried(self, core: Core) -> bool:
        return isinstance(core, RealtimeProtocol) and core.tools is self._core.tools

    def _parks(self, send: Send) -> bool:
        return send.kind == "output"

    def _next_core(self) -> RealtimeProtocol:
        """A new gate for every connection; a sideband keeps its tool runner and log (the
        same call), an own session starts both afresh (a new conversation)."""
        old = self._core
        if self._keeps_conversation():
            tools, log = old.tools, old.log
        else:
            tools, log = ToolRunner(old.tools.specs.values()), ConversationLog()
        gate = ResponseGate(
            confirm_timeout=self._confirm_timeout, max_attempts=self._max_create_attempts
        )
        return RealtimeProtocol(
            gate, tools, client_turns=self._client_turns, log=log, observers=old.observers
        )

    def _begin_replacement(
        self, old: Core, replaced: SessionReplacedError, error: BaseException
    ) -> dict[str, Any]:
        """Loop thread, at the loss: detach the old core (its requests fail with
        ``replaced``), keep what the restore starts from, say so to the app."""
        policy = self._reconnect
        assert policy is not None and isinstance(old, RealtimeProtocol)
        sideband = self._keeps_conversation()
        waiting = old.detach(replaced, defer_rounds=sideband)
        seen = old.log.snapshot() if old.log is not None and not sideband else []
        again = [(t.reason, t.params) for t in waiting] if policy.rerequest and not sideband else []
        self._loss = _Loss(time.monotonic(), error, old, seen, again, self.call_id)
        mode: Literal["session", "sideband"] = "sideband" if sideband else "session"
        event = Reconnecting(
            mode=mode, reason=str(error), call_id=self.call_id, failed_requests=len(waiting)
        )
        return event.model_dump()

    def _after_reopen(self, attempt: int, deadline: float) -> dict[str, Any]:
        """The reconnect thread, the new connection ready: restore, then the event."""
        loss = self._loss
        assert loss is not None
        if self._keeps_conversation():
            event = self._reattached(loss, deadline)
        else:
            event = self._restored(loss, deadline)
        event.attempts = attempt
        event.seconds = round(time.monotonic() - loss.started, 4)
        self._reconnects += 1
        return event.model_dump()

    def _restored(self, loss: _Loss, deadline: float) -> Reconnected:
        """A new session: create the conversation the client saw, then (opt-in) ask
        again for what was waiting - new requests through the new gate."""
        policy = self._reconnect
        assert policy is not None
        plan = plan_restore(loss.seen, policy.restore_items)
        answers = []
        for item in plan.items:
            event = ev.with_event_id({"type": "conversation.item.create", "item": item})
            answers.append((item, self._expect(event, item["id"])))
            self._send(event)
        counts = dict(plan.counts)
        not_restored = list(plan.not_restored)
        for (item, answer), kind in zip(answers, plan.kinds, strict=True):
            try:
                wait_for(answer, remaining(deadline), f"the restore of {item['id']}")
            except ServerError as exc:
                counts[kind] -= 1
                why = f"refused by the server ({exc.code})"
                not_restored.append(NotRestored(id=item["id"], type=item["type"], reason=why))
        again: list[str] = []
        for reason, params in loss.rerequest:
            _, effects = self._core.request(f"rerequest:{reason}", params)
            self._apply(effects)
            again.append(reason)
        logger.info(
            "[RECONNECT] new session: {} item(s) restored, {} not, {} request(s) asked again",
            sum(counts.values()),
            len(not_restored),
            len(again),
        )
        return Reconnected(
            mode="session",
            attempts=0,
            seconds=0.0,
            call_id=self.call_id,
            previous_call_id=loss.call_id,
            restored_items=sum(counts.values()),
            restored={k: v for k, v in counts.items() if v},
            not_restored=not_restored[:NOT_RESTORED_SHOWN],
            not_restored_count=len(not_restored),
            rerequested=again,
        )

    def _reattached(self, loss: _Loss, deadline: float) -> Reconnected:
        """The same call: send the outputs held meanwhile, resend (idempotently, by item
        id) the ones whose arrival is unknown, follow up the rounds completed or left
        open meanwhile, then look for calls made while no sideband was attached."""
        core, log = self._core, self._core.log
        assert log is not None
        uncertain = log.unechoed_outputs()
        self._flush_parked()
        resent = 0
        for output in uncertain:
            item = output.get("item") or {}
            if not isinstance(item.get("id"), str):
                continue  # not the runner's (submit_tool_output): no id to make it idempotent
            event = ev.with_event_id({"type": "conversation.item.create", "item": item})
            try:
                self._answer(event, item["id"], deadline, "a resent output", _DUPLICATE)
                resent += 1
            except ServerError as exc:
                if exc.code not in _DUPLICATE:
                    raise
        effects = core.adopt(loss.core.hand_over(core))
        effects.extend(core.finish_rounds(log.open_rounds()))
        self._apply(effects)
        found, checked = self._newest_unseen(deadline)
        calls = gap_calls(log, found)
        ids = [str(c["call_id"]) for c in calls]
        if calls and core.tools.specs:
            self._apply(core.recover(calls))
        if ids:
            logger.warning("[RECONNECT] tool call(s) made while detached: {}", ids)
        return Reconnected(
            mode="sideband",
            attempts=0,
            seconds=0.0,
            call_id=self.call_id,
            previous_call_id=loss.call_id,
            recovered_calls=ids if core.tools.specs else [],
            unanswered_calls=[] if core.tools.specs else ids,
            resent_outputs=resent,
            gap_checked=checked,
        )

    def _newest_unseen(self, deadline: float) -> tuple[list[dict[str, Any]], bool]:
        """The call's newest item if this client never saw it (the API lists no
        conversation: a probe item appended, then deleted, names it as its previous
        item), and whether the look succeeded."""
        log = self._core.log
        assert log is not None
        probe_id = "rtcp_" + uuid.uuid4().hex[:24]
        probe = {
            "id": probe_id,
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": PROBE_TEXT}],
        }
        try:
            create = ev.with_event_id({"type": "conversation.item.create", "item": probe})
            added = self._answer(create, probe_id, deadline, "the probe")
            delete = ev.with_event_id({"type": "conversation.item.delete", "item_id": probe_id})
            self._answer(delete, probe_id, deadline, "the probe's delete")
            newest = added.get("previous_item_id")
            if not isinstance(newest, str) or log.knows(newest):
                return [], True
            get = ev.with_event_id({"type": "conversation.item.retrieve", "item_id": newest})
            answer = self._answer(get, newest, deadline, "the newest item", _UNKNOWN_ITEM)
        except ServerError as exc:
            logger.warning("[RECONNECT] the call's newest item could not be read: {}", exc)
            return [], False
        item = answer.get("item")
        return ([item] if isinstance(item, dict) else []), True

    def _expect(
        self, event: dict[str, Any], item_id: str | None, quiet: frozenset[str] = frozenset()
    ) -> concurrent.futures.Future[Any]:
        """The future of ``event``'s answer, registered before it is sent. An error with
        a code in ``quiet`` is an answer the caller expects (logged at DEBUG)."""
        self._core.expect_answer(event, item_id, quiet)
        future: concurrent.futures.Future[Any] = self._waiters.register(
            ("request", event["event_id"])
        )
        return future

    def _answer(
        self,
        event: dict[str, Any],
        item_id: str | None,
        deadline: float,
        what: str,
        quiet: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """Send ``event`` and wait (until ``deadline``) for its answer, or its error."""
        answer = self._expect(event, item_id, quiet)
        self._send(event)
        result: dict[str, Any] = wait_for(answer, remaining(deadline), what)
        return result
