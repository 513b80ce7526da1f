"""The GPT-Live protocol core: server events in, effects out. No threads, no I/O.

GPT-Live (``gpt-live-1``) is not the Realtime API: the model decides its own turns and
hands work to a backend ("delegation") while it keeps talking. What a client must
still get right is decided here; the shell (:class:`rtclient.live.LiveClient` on the
shared session shell) carries events, applies the returned effects
(:mod:`rtclient.effects`) outside every lock and reports their outcomes back.

**Start.** On a primary WebSocket the first message is ``session.start`` and nothing
else goes out before ``session.started``: commands given earlier are held, in order,
and sent when it comes. A WebRTC session is started by its creation (``POST
/live/sessions``): it only waits for ``session.started``. A sideband joins a running
session: it is ready at once and never sends ``session.start`` - nor input audio -
which is refused with :class:`~rtclient.errors.CommandRefusedError` before anything
is sent (``refused_commands``). A refused ``session.start`` (``unknown_parameter``:
the session object is strict) ends the session with the server's typed error.

**Answers.** Every command carries an ``event_id``; the server names it as
``client_event_id`` on the event that answers it (``session.updated``,
``session.commentary.appended``, ...) or in ``error.client_event_id``. Each answered
command is a waiter, ``("answer", event_id)``, settled by the one or the other; other
connections' answers (a sideband sees the primary's acks) settle nothing. An
``*.appended`` acknowledgement comes when the session timeline reaches the text, and
the timeline moves only while input audio flows: the Live WebSocket transport keeps it
moving with silence (:mod:`rtclient.transports.live`).

**Delegations** (:mod:`.live_delegations`): each client delegation ends exactly once,
by its handler's result, its failure, or the client's timeout; anything after that is
reported, never sent. **Function calls** (:mod:`.live_calls`): run like Realtime
tools, one output each, and one ``response.create`` through the response gate once
every output of the session is on the wire.

**Close.** ``session.closed`` (or a connection lost without it) ends everything:
``Lost`` for the shell (every waiter fails), the gate closes, open delegations die.

**Threads.** Like :class:`rtclient.core.realtime.RealtimeProtocol`, the core is
thread-safe: the loop thread (:meth:`LiveCore.receive`, :meth:`~LiveCore.sent`), the
dispatcher (:meth:`~LiveCore.step`: starting work stays off the loop thread), tool and
handler threads (:meth:`~LiveCore.finished`, :meth:`~LiveCore.progress`) and callers
each take one lock of its own for the decision only; what it would log is written
after the lock is released, and no effect is applied under it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

from rtclient import logs
from rtclient.core import events as ev
from rtclient.core.gate import GateMachine, Note, Trigger
from rtclient.core.live_calls import TERMINAL, BackendCalls
from rtclient.core.live_delegations import Delegations
from rtclient.core.live_protocol import (
    ANSWERED_BY,
    APPEND_TYPES,
    CLIENT_EVENT_TYPES,
    SERVER_EVENT_TYPES,
    AppendKind,
    CallWork,
    Command,
    ConnectionKind,
    DelegationTask,
    DelegationWork,
    Notices,
    ProgressSink,
    brief,
    client_event,
    server_error,
)
from rtclient.core.live_text import (
    DEFAULT_MAX_PARTS,
    DEFAULT_TOKEN_BUDGET,
    Role,
    Transcript,
    split_content,
)
from rtclient.effects import Dispatch, Effect, Later, Lost, Send, Settle, Start
from rtclient.errors import ClosedError, CommandRefusedError, SessionClosedError
from rtclient.logs import logger
from rtclient.tools.call import ToolOutcome, failed, specs_by_name
from rtclient.tools.schema import ToolSpec

_NOT_ON_SIDEBAND = frozenset({"session.start", "session.input_audio.append"})
_SIDEBAND_ONLY = frozenset({"transport.dtmf.send"})
_UNANSWERED_KEPT = 4096  # commands waiting for an answer; older ones are forgotten
_STEPPED = frozenset({"session.delegation.created", "response.event"})
_COUNTERS = (
    "events_received",
    "unknown_events",
    "malformed_events",
    "server_errors",
    "refused_commands",
    "commands_unanswered",
    "creates_sent",
    "appends_sent",
    "appends_split",
    "appends_unplaced",
    "delegations",
    "delegations_answered",
    "delegations_empty",
    "delegation_errors",
    "delegation_timeouts",
    "results_too_long",
    "late_results",
    "duplicate_results",
    "results_after_close",
    "undelivered_results",
    "duplicate_delegations",
    "unknown_delegation_ids",
    "tool_calls",
    "tool_errors",
    "tool_timeouts",
    "tool_late_results",
    "outputs_sent",
    "oversized_outputs",
    "undelivered_outputs",
    "refused_outputs",
    "discarded_calls",
    "followups_requested",
)

DEFAULT_NOTICES = Notices()
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialised(
    method: Callable[Concatenate[LiveCore, _P], _R],
) -> Callable[Concatenate[LiveCore, _P], _R]:
    """Run ``method`` under the core's lock; write its log notes after releasing it."""

    def locked(self: LiveCore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        notes: list[Note] = []
        try:
            with self._lock:
                try:
                    return method(self, *args, **kwargs)
                finally:
                    notes = self._notes[:]
                    del self._notes[:]  # the list the core's parts share: emptied in place
        finally:
            write_notes(notes)

    functools.update_wrapper(locked, method)
    return locked


class LiveCore:
    """One GPT-Live connection's decisions (see the module docstring).

    Every input returns the effects to apply, in order; refused input raises a typed
    error and changes nothing. ``clock`` is only read for the gate's timestamps.
    """

    def __init__(
        self,
        *,
        kind: ConnectionKind,
        config: Mapping[str, Any] | None = None,
        tools: Iterable[Callable[..., Any] | ToolSpec] = (),
        delegation: Callable[[DelegationTask], Any] | None = None,
        progress: ProgressSink | None = None,
        delegation_timeout: float = 120.0,
        notices: Notices = DEFAULT_NOTICES,
        confirm_timeout: float = 15.0,
        max_attempts: int = 5,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_parts: int = DEFAULT_MAX_PARTS,
        transcript_kept: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind: ConnectionKind = kind
        self.config = dict(config or {})
        self.token_budget = token_budget
        self.max_parts = max_parts
        for notice in dataclasses.astuple(notices):  # each must fit: checked now
            self._split(notice)
        self._lock = threading.Lock()
        self._clock = clock
        self._notes: list[Note] = []
        self._appended: list[str] = []  # the event ids of the appends just made
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.state = "new"  # new, starting, started, closing, closed
        self.session: dict[str, Any] | None = None  # the latest resolved snapshot
        self.usage: dict[str, Any] | None = None
        self.transcript = Transcript(transcript_kept)
        self.gate = GateMachine(confirm_timeout=confirm_timeout, max_attempts=max_attempts)
        self._held: list[Send] = []  # sends given before session.started
        self._start_id: str | None = None
        self._commands: OrderedDict[str, Command] = OrderedDict()
        self._requests = 0
        self.delegations = Delegations(
            counters=self.counters,
            notes=self._notes,
            send=self._send_appends,
            split=self._split,
            transcript=self.transcript,
            handler=delegation,
            sink=progress,
            timeout=delegation_timeout,
            notices=notices,
        )
        self.calls = BackendCalls(
            specs=specs_by_name(tools),
            gate=self.gate,
            clock=clock,
            counters=self.counters,
            notes=self._notes,
            out=self._out,
            thinking=self._send_appends,
            budget=token_budget,
        )

    # -- queries -------------------------------------------------------------------------

    @property
    def specs(self) -> dict[str, ToolSpec]:
        return self.calls.specs

    @property
    def session_id(self) -> str | None:
        found = (self.session or {}).get("id")
        return found if isinstance(found, str) else None

    @property
    def delegation_mode(self) -> str | None:
        """``client`` or ``responses`` (or ``decisions``): the server's snapshot if one
        came, else the config; None when neither says (a sideband before it hears)."""
        source = self.session
        if source is None and self.kind != "sideband":
            source = self.config
        if source is None:
            return None
        delegation = source.get("delegation")
        if isinstance(delegation, Mapping) and isinstance(delegation.get("type"), str):
            return str(delegation["type"])
        return "client"  # omitted or null: the application does the work

    def delegation(self, delegation_id: str) -> DelegationWork | None:
        return self.delegations.get(delegation_id)

    @_serialised
    def stats(self) -> dict[str, int]:
        """The gate's counters (``lost`` must stay 0) and the core's."""
        return {**self.gate.snapshot_stats().as_dict(), **self.counters}

    # -- the connection ------------------------------------------------------------------

    @_serialised
    def connected(self) -> list[Effect]:
        """The transport is open: a primary WebSocket starts the session; a sideband is
        ready now; a WebRTC session waits for ``session.started``."""
        if self.state != "new":
            return []
        if self.kind == "sideband":
            self.state = "started"
            return [Settle(("session", "started"), None, keep=True)]
        if self.kind == "websocket" and "model" not in self.config:
            raise ValueError("session.start needs the session's model")
        self.state = "starting"
        if self.kind == "webrtc":
            return []
        event = ev.with_event_id({"type": "session.start", "session": self.config})
        self._start_id = event["event_id"]
        return [Send(event, kind="start")]

    @_serialised
    def close(self, error: BaseException) -> None:
        """The session ended for callers (the shell fails every waiter itself)."""
        self._end(error)

    # -- commands (caller threads) -------------------------------------------------------

    @_serialised
    def command(self, event: Mapping[str, Any]) -> tuple[str, list[Effect]]:
        """Send a client event (an ``event_id`` is added). Returns its id and effects;
        the answer, if the command has one, settles ``("answer", event_id)``.

        Refused (:class:`CommandRefusedError`, nothing sent): ``session.start`` (the
        core sends it on a primary WebSocket; the other connections are already
        started), ``response.create`` (:meth:`request_response`: the gate must see
        it), input audio on a sideband, a type GPT-Live does not define, a
        ``delegation_id`` under Responses delegation.
        """
        self._refuse(event.get("type"), event.get("delegation_id"))
        self._check_open()
        out = ev.with_event_id(event)
        return out["event_id"], self._send_command(out)

    @_serialised
    def append(
        self, kind: AppendKind, content: str, *, delegation_id: str | None = None
    ) -> tuple[list[str], list[Effect]]:
        """``session.<kind>.append``, split over the per-append limit (one too long for
        ``max_parts`` raises :class:`~rtclient.errors.ContentTooLongError`). For a
        delegation it is progress; the result goes through :meth:`answer`. Returns the
        event ids, one per part: the last one's ``*.appended`` says all is placed."""
        if kind not in APPEND_TYPES:
            raise ValueError(f"kind must be one of {sorted(APPEND_TYPES)}, not {kind!r}")
        self._refuse(APPEND_TYPES[kind], delegation_id)
        self._check_open()
        self._appended.clear()
        if delegation_id is None:
            fx = self._send_appends(kind, self._split(content), None, False)
        else:
            work = self.delegations.known(delegation_id)
            fx = self.delegations.progress(work, kind, content)
        return list(self._appended), fx

    @_serialised
    def progress(self, delegation_id: str, content: str, spoken: bool) -> list[Effect]:
        """A delegation handler's ``say`` (spoken) or ``think`` (silent)."""
        work = self.delegations.known(delegation_id)
        return self.delegations.progress(work, "commentary" if spoken else "thinking", content)

    @_serialised
    def answer(self, delegation_id: str, content: str, *, spoken: bool = True) -> list[Effect]:
        """The result of a delegation the app answers itself (no handler): sent once."""
        return self.delegations.answer(
            self.delegations.known(delegation_id), content, spoken=spoken
        )

    @_serialised
    def request_response(self, reason: str = "request") -> tuple[str, list[Effect]]:
        """Ask the Responses backend for a response, through the gate. Returns the id of
        the waiter ``("response", id)``: the terminal event of the response that
        served it (or the error)."""
        if self.delegation_mode not in (None, "responses"):
            self.counters["refused_commands"] += 1
            raise CommandRefusedError("response.create requires Responses delegation")
        self._check_open()
        self._requests += 1
        trigger = Trigger(f"{reason}:{self._requests}")
        return trigger.reason, self.calls.request(trigger)

    @_serialised
    def close_session(self) -> tuple[str | None, list[Effect]]:
        """``session.close``: the server finishes its delegation and output work, then
        sends ``session.closed``. None if there is no started session to close."""
        if self.state not in ("started",):
            return None, []
        event = ev.with_event_id({"type": "session.close"})
        return event["event_id"], self._send_command(event)

    def _refuse(self, kind: Any, delegation_id: Any) -> None:
        why: str | None = None
        if kind not in CLIENT_EVENT_TYPES:
            why = f"{kind!r} is not a GPT-Live client event"
        elif kind == "session.start":
            why = {
                "sideband": "a sideband joins a running session and never sends session.start",
                "websocket": "session.start is sent once, by the client itself, as it connects",
                "webrtc": "a WebRTC session is started by its creation: no session.start",
            }[self.kind]
        elif kind == "response.create":
            why = "request a backend response with request_response(): the gate must see it"
        elif self.kind == "sideband" and kind in _NOT_ON_SIDEBAND:
            why = f"a sideband may not send {kind}: the session's audio is the primary's"
        elif self.kind != "sideband" and kind in _SIDEBAND_ONLY:
            why = f"{kind} is sent on a sideband only"
        elif delegation_id is not None and self.delegation_mode == "responses":
            why = "a delegation_id is refused under Responses delegation (use null)"
        if why is not None:
            self.counters["refused_commands"] += 1
            raise CommandRefusedError(why)

    def _check_open(self) -> None:
        if self.state == "closed":
            raise ClosedError("the GPT-Live session is closed")

    def _split(self, content: str) -> list[str]:
        return split_content(content, budget=self.token_budget, max_parts=self.max_parts)

    def _out(self, send: Send) -> list[Effect]:
        """A send now, or held (in order) until ``session.started``."""
        if self.state in ("new", "starting"):
            self._held.append(send)
            return []
        return [send]

    def _send_command(
        self, event: dict[str, Any], *, delegation_id: str | None = None, final: bool = False
    ) -> list[Effect]:
        kind = event["type"]
        if kind == "session.close" and self.state != "closed":
            self.state = "closing"
        answer = ANSWERED_BY.get(kind)
        if answer is not None:
            self._commands[event["event_id"]] = Command(
                event["event_id"], kind, answer, delegation_id, final
            )
            while len(self._commands) > _UNANSWERED_KEPT:
                self._commands.popitem(last=False)
                self.counters["commands_unanswered"] += 1
        return self._out(Send(event, kind="command", ref=event["event_id"]))

    def _send_appends(
        self, kind: AppendKind, parts: list[str], work: DelegationWork | None, final: bool
    ) -> list[Effect]:
        """One append per part (``final``: the last part ends a delegation)."""
        delegation_id = work.id if work is not None else None
        if len(parts) > 1:
            self.counters["appends_split"] += 1
        fx: list[Effect] = []
        for index, part in enumerate(parts):
            event = ev.with_event_id(
                {"type": APPEND_TYPES[kind], "content": part, "delegation_id": delegation_id}
            )
            last = final and index == len(parts) - 1
            self._appended.append(event["event_id"])
            fx += self._send_command(event, delegation_id=delegation_id, final=last)
            self.counters["appends_sent"] += 1
            if work is not None:
                work.appends += 1
        return fx

    # -- outcomes the shell reports ------------------------------------------------------

    @_serialised
    def sent(self, send: Send, error: BaseException | None) -> list[Effect]:
        """The outcome of writing ``send`` (``None``: on the wire)."""
        if send.kind == "start":
            return [] if error is None else self._end(error)
        if send.kind == "create":
            return self.calls.create_sent(send.ref, error)
        if send.kind == "output":
            return self.calls.sent(send, error)
        if error is None:
            return []
        event_id = str(send.event.get("event_id"))
        command = self._commands.pop(event_id, None)
        fx: list[Effect] = [Settle(("answer", event_id), error)]
        if command is not None and command.final and command.delegation_id is not None:
            self.counters["undelivered_results"] += 1
            fx.append(client_event("dropped", command.delegation_id, reason="not_sent",
                                   result=True, error=brief(error)))  # fmt: skip
        return fx

    def written(self, event: Mapping[str, Any]) -> None:
        """``event`` is on the wire (loop thread, right after the write: only counts)."""
        if event.get("type") == "response.create":
            self.counters["creates_sent"] += 1

    @_serialised
    def finished(
        self, start: Start, future: Any, submit_error: BaseException | None
    ) -> list[Effect]:
        """A handler or a tool ended on the executor (or could not be submitted)."""
        result, error = _outcome(future, submit_error)
        if isinstance(start.work, DelegationWork):
            return self.delegations.finished(start.work, result, error)
        if isinstance(start.work, CallWork):
            call = start.work
            if error is not None or not isinstance(result, ToolOutcome):
                result = failed(f"{call.name} did not run: {brief(error or TypeError(result))}")
            return self.calls.outcome(call, result, timed_out=False)
        return []

    @_serialised
    def timer(self, later: Later) -> list[Effect]:
        if later.kind == "delegation":
            return self.delegations.timed_out(later.ref)
        if later.kind == "tool":
            return self.calls.timed_out(later.ref)
        if later.kind == "watchdog":
            return self.calls.gate_fx(self.gate.tick(self._clock()))
        return []

    # -- server events -------------------------------------------------------------------

    def receive(self, text: str | bytes | dict[str, Any]) -> list[Effect]:
        """One server message (loop thread, in arrival order): its text, or the dict a
        transport already decoded from it. Its ``[SERVER_EVENT]``
        trace line (:func:`rtclient.logs.trace_server_event`) is written first, outside
        the lock: in arrival order, before any line about what it causes."""
        try:
            event = ev.decode(text)
        except ev.MalformedEventError as exc:
            return self._malformed(exc)
        logs.trace_server_event(event)
        return self._received(event)

    @_serialised
    def _malformed(self, exc: ev.MalformedEventError) -> list[Effect]:
        self.counters["malformed_events"] += 1
        self._notes.append(("WARNING", "SERVER_EVENT", "malformed message skipped: {}", (exc,)))
        return []

    @_serialised
    def _received(self, event: dict[str, Any]) -> list[Effect]:
        return self._on_event(event)

    @_serialised
    def on_event(self, event: Mapping[str, Any]) -> list[Effect]:
        """One server event already decoded (what :meth:`receive` does after parsing)."""
        if not isinstance(event.get("type"), str):
            self.counters["malformed_events"] += 1
            return []
        return self._on_event(dict(event))

    def step_wants(self, kind: str) -> bool:
        """Whether :meth:`step` reads events of this type (dispatcher thread)."""
        return kind in _STEPPED

    @_serialised
    def step(self, event: Mapping[str, Any]) -> list[Effect]:
        """The events that start work, one step later on the dispatcher thread (in
        order): a delegation's handler and timeout, a backend response's calls."""
        kind = event.get("type")
        if kind == "session.delegation.created":
            return self.delegations.start(event)
        if kind == "response.event" and self.calls.specs:
            inner = event.get("event")
            if isinstance(inner, Mapping) and isinstance(inner.get("type"), str):
                return self.calls.step(event, inner)
        return []

    def _on_event(self, event: dict[str, Any]) -> list[Effect]:
        self.counters["events_received"] += 1
        kind = event["type"]
        if kind not in SERVER_EVENT_TYPES:
            self.counters["unknown_events"] += 1
        fx: list[Effect] = [Dispatch(event)]
        handler = _HANDLERS.get(kind)
        if handler is not None:
            fx += handler(self, event)
        client_event_id = event.get("client_event_id")
        if kind not in ("error", "response.event") and isinstance(client_event_id, str):
            fx += self._answered(client_event_id, kind, event)
        return fx

    def _answered(self, event_id: str, kind: str, event: dict[str, Any]) -> list[Effect]:
        command = self._commands.get(event_id)
        if command is None or command.answer != kind:
            return []  # another connection's command, or not its answer
        del self._commands[event_id]
        return [Settle(("answer", event_id), event, keep=True)]

    def _on_started(self, event: dict[str, Any]) -> list[Effect]:
        self._on_snapshot(event)
        if self.state not in ("new", "starting") or self.kind == "sideband":
            return []  # a sideband's snapshot at attach, or a repeat
        # "new": WebRTC's session.started may come as the data channel opens, before
        # the shell reports the connection open
        self.state = "started"
        held, self._held = self._held, []
        return [Settle(("session", "started"), event, keep=True), *held]

    def _on_snapshot(self, event: dict[str, Any]) -> list[Effect]:
        session = event.get("session")
        if isinstance(session, dict):
            self.session = session
        return []

    def _on_usage(self, event: dict[str, Any]) -> list[Effect]:
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = usage  # cumulative: replace, never add
        return []

    def _on_transcript(self, event: dict[str, Any]) -> list[Effect]:
        role: Role = "user" if event["type"] == "session.input_transcript.delta" else "assistant"
        delta, start, end = event.get("delta"), event.get("start_ms"), event.get("end_ms")
        if isinstance(delta, str) and isinstance(start, int):
            self.transcript.add(role, delta, start, end if isinstance(end, int) else start)
        else:
            self.counters["malformed_events"] += 1
        return []

    def _on_closed(self, event: dict[str, Any]) -> list[Effect]:
        reason = event.get("reason")
        reason = reason if isinstance(reason, str) else None
        self._on_usage(event)
        fx: list[Effect] = [Settle(("session", "closed"), event, keep=True)]
        for command in list(self._commands.values()):
            if command.answer == "session.closed":  # our close, named or not
                fx += self._answered(command.event_id, "session.closed", event)
        error = SessionClosedError(f"the GPT-Live session closed ({reason})", reason=reason)
        return fx + self._end(error)

    def _on_error(self, event: dict[str, Any]) -> list[Effect]:
        error = server_error(event)
        self.counters["server_errors"] += 1
        event_id = error.event_id
        self._notes.append(("ERROR", "SERVER_ERROR", "{} {} (client_event_id={})",
                            (error.code or error.type, error.message, event_id)))  # fmt: skip
        if event_id is None:
            return []
        if event_id == self._start_id and self.state == "starting":
            return self._end(error)
        in_flight = self.gate.in_flight
        if in_flight is not None and in_flight.event_id == event_id:
            return self.calls.rejected(error)
        command = self._commands.pop(event_id, None)
        if command is None:
            return self.calls.refused(event_id, error) or []
        fx: list[Effect] = [Settle(("answer", event_id), error)]
        if error.code == "context_injection_incomplete":
            self.counters["appends_unplaced"] += 1
        if command.final and command.delegation_id is not None:
            self.counters["undelivered_results"] += 1
            fx.append(client_event("dropped", command.delegation_id, reason="refused",
                                   result=True, error=brief(error)))  # fmt: skip
        return fx

    def _on_delegation(self, event: dict[str, Any]) -> list[Effect]:
        return self.delegations.created(event)

    def _on_response_event(self, event: dict[str, Any]) -> list[Effect]:
        inner = event.get("event")
        if not isinstance(inner, dict) or not isinstance(inner.get("type"), str):
            self.counters["malformed_events"] += 1
            return []
        if inner["type"] == "response.created" or inner["type"] in TERMINAL:
            return self.calls.gate_sees(event, inner)
        return []

    # -- the end ---------------------------------------------------------------------------

    def _end(self, error: BaseException) -> list[Effect]:
        if self.state == "closed":
            return []
        starting = self.state in ("new", "starting")
        self.state = "closed"
        self.calls.closed = True
        fx: list[Effect] = []
        if starting:
            fx.append(Settle(("session", "started"), error, keep=True))
        for send in self._held:
            if send.kind == "command":
                fx.append(Settle(("answer", str(send.ref)), error))
        self._held.clear()
        fx += self.delegations.end_all(error)
        fx += self.calls.gate_fx(self.gate.close(error))
        self._commands.clear()
        return [*fx, Lost(error)]


_HANDLERS: dict[str, Callable[[LiveCore, dict[str, Any]], list[Effect]]] = {
    "session.started": LiveCore._on_started,
    "session.updated": LiveCore._on_snapshot,
    "session.usage.updated": LiveCore._on_usage,
    "session.input_transcript.delta": LiveCore._on_transcript,
    "session.output_transcript.delta": LiveCore._on_transcript,
    "session.closed": LiveCore._on_closed,
    "session.delegation.created": LiveCore._on_delegation,
    "response.event": LiveCore._on_response_event,
    "error": LiveCore._on_error,
}


def _outcome(future: Any, submit_error: BaseException | None) -> tuple[Any, BaseException | None]:
    """``(result, error)`` of work the executor ran (or could not take)."""
    if submit_error is not None:
        return None, submit_error
    if future.cancelled():
        return None, concurrent.futures.CancelledError("the executor cancelled it")
    error = future.exception()
    return (None, error) if error is not None else (future.result(), None)


def write_notes(notes: Iterable[Note]) -> None:
    """Log the core's notes (after its lock is released)."""
    for level, tag, template, args in notes:
        logger.log(level, "[{}] " + template, tag, *args)


__all__ = [
    "CLIENT_EVENT_TYPES",
    "SERVER_EVENT_TYPES",
    "DelegationTask",
    "LiveCore",
    "Notices",
    "ToolOutcome",
]
