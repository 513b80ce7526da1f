"""The GPT-Live protocol core: server events in, effects out (no threads, no I/O).

GPT-Live (``gpt-live-1``) is not the Realtime API: the model decides its own turns and
hands work to a backend ("delegation") while it keeps talking. What a client must
still get right is all here, as one plain object driven by method calls, like the
response gate's machine (:mod:`rtclient.core.gate`); the shell (:mod:`rtclient.live`)
serialises the calls (one lock), applies the returned effects
(:mod:`rtclient.core.effects`) outside that lock, and reports each outcome back.

Theory of operation
-------------------
**Start.** On a primary WebSocket the first message is ``session.start`` and nothing
else goes out before ``session.started``: commands given earlier are held, in order,
and sent when it comes. A WebRTC session is started by its creation (``POST
/live/sessions``): it only waits for ``session.started``. A sideband joins a running
session: it is ready at once and never sends ``session.start`` (nor input audio) -
such a command is refused with :class:`~rtclient.errors.CommandRefusedError` before
anything is sent. A refused ``session.start`` (``unknown_parameter``: the session
object is strict) ends the session with the server's error.

**Answers.** Every command carries an ``event_id``; the server names it as
``client_event_id`` on the event that answers it (``session.updated``,
``session.commentary.appended``, ...) or in ``error.client_event_id``. Each answered
command is a waiter, ``("answer", event_id)``, settled by the one or the other. An
``*.appended`` acknowledgement comes when the session timeline reaches the text, and
the timeline moves only while input audio flows: the Live WebSocket transport keeps it
moving with silence (see :mod:`rtclient.transports.live`).

**Client delegation.** ``session.delegation.created`` names an id and a timeline
offset - no task text. The core keeps both sides' transcript deltas
(:class:`~rtclient.core.live_text.Transcript`) and starts the registered handler
(``Start``) with a :class:`DelegationTask`: the id, the transcript up to the offset,
and ``say()``/``think()`` for progress (``session.commentary.append``, spoken;
``session.thinking.append``, silent). The handler's return value is the result,
spoken. A content over the per-append limit is split (see
:mod:`~rtclient.core.live_text`). Each delegation ends **exactly once**:

====================  ========================================================
how it ends           what goes out, what is reported
====================  ========================================================
a result              the result (commentary); outcome ``answered``
``None``              nothing more if it already said something, else the
                      no-answer notice; outcome ``answered``
the handler raised    the failure notice (spoken); ``rtclient.delegation.failed``,
                      ``delegation_errors``
a result too long     the failure notice; ``rtclient.delegation.failed``
                      (reason ``too_long``), ``results_too_long``
the client's timeout  the timeout notice (spoken: the model holds the topic open
                      until the delegation speaks); ``rtclient.delegation.timed_out``,
                      ``delegation_timeouts``
====================  ========================================================

Anything for a delegation that has ended - a late result after the timeout, a second
result, a result after ``session.closed`` or for a lost session - is never sent: it is
reported as ``rtclient.delegation.dropped`` (with the reason) and counted
(``late_results``, ``duplicate_results``, ``results_after_close``). A second
``session.delegation.created`` for an id is reported (``rtclient.delegation.duplicate``,
``duplicate_delegations``) and starts nothing; an append naming an id the session never
announced raises :class:`~rtclient.errors.UnknownDelegationError`
(``unknown_delegation_ids``).

**Responses delegation's function calls.** The backend's stream arrives as
``response.event`` envelopes. A completed ``function_call`` item is run like a
Realtime tool (:mod:`rtclient.tools`: its schema, validation and timeout); each call
gets exactly one ``function_call_output`` (``response.item.create``). When the
backend response is over and every call of the session has its output **on the
wire**, exactly one ``response.create`` continues it - requested through the response
gate (:class:`~rtclient.core.gate.GateMachine`): claimed before the send, rolled back
if the send fails, never sent while a backend response runs (ours, or one another
connection - a browser - started: "not ours" to the gate, exactly as a server VAD
response is on Realtime). The create's ``event_id`` is the gate's ticket; the server
echoes it as the envelope's ``client_event_id``, which is how ours is told apart.
Calls of a ``response.failed``/``response.incomplete`` response are not answered with
outputs (the server refuses them): their results go to the model as thinking.

**Close.** ``session.closed`` (or a connection lost without it) ends everything:
waiters fail (``Lost``), the gate closes, open delegations are dead.

Log lines: the core writes nothing. What it would log is kept as notes (the gate's
``(level, tag, template, args)``) that the shell writes after releasing its lock
(:meth:`LiveCore.drain_notes`, :func:`write_notes`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from rtclient.core import events as ev
from rtclient.core.effects import Dispatch, Effect, Later, Lost, Send, Settle, Start
from rtclient.core.gate import ACTIVE_RESPONSE_CODE, GateMachine, Note, Ticket, Trigger
from rtclient.core.live_text import (
    DEFAULT_MAX_PARTS,
    DEFAULT_TOKEN_BUDGET,
    Fragment,
    Role,
    Transcript,
    estimate_tokens,
    render,
    split_content,
)
from rtclient.errors import (
    ClosedError,
    CommandRefusedError,
    ContentTooLongError,
    MessageTooLargeError,
    ServerError,
    SessionClosedError,
    UnknownDelegationError,
)
from rtclient.tools.call import ToolOutcome, call_tool, failed, specs_by_name
from rtclient.tools.schema import ToolSpec, error_output

ConnectionKind = Literal["websocket", "webrtc", "sideband"]
"""``websocket``: a primary WebSocket (sends ``session.start``); ``webrtc``: a session
created by ``POST /live/sessions``; ``sideband``: attached to a running session."""

AppendKind = Literal["commentary", "thinking", "instructions"]
SessionState = Literal["new", "starting", "started", "closing", "closed"]
DelegationState = Literal["open", "answered", "timed_out", "failed", "dead"]
ProgressSink = Callable[[str, str, bool], None]
"""``sink(delegation_id, content, spoken)``: where :meth:`DelegationTask.say` and
``think`` report (the shell, which takes its lock and calls :meth:`LiveCore.progress`)."""

# Every server event type GPT-Live defines (the ``openai`` package's ``ServerEvent``
# and the sideband's ``ConnectServerEvent``); tests/test_core_live.py checks this set
# against the package. Written out: importing ``openai`` costs ~1.5 s.
SERVER_EVENT_TYPES: frozenset[str] = frozenset(
    (
        "decision.event",
        "decision.item.created",
        "decision.item.deleted",
        "error",
        "info",
        "response.event",
        "session.closed",
        "session.commentary.appended",
        "session.delegation.created",
        "session.input_audio.append",
        "session.input_audio.muted",
        "session.input_audio.unmuted",
        "session.input_transcript.delta",
        "session.instructions.appended",
        "session.output_audio.delta",
        "session.output_audio.fixture.played",
        "session.output_audio.fixture.playing",
        "session.output_transcript.delta",
        "session.paused",
        "session.resumed",
        "session.started",
        "session.thinking.appended",
        "session.updated",
        "session.usage.updated",
        "transport.answered",
        "transport.dtmf.received",
        "transport.dtmf.send",
        "transport.dtmf.sent",
        "transport.failed",
        "transport.ringing",
    )
)

# Every client event type (``ClientEvent`` and the sideband's ``ConnectClientEvent``).
CLIENT_EVENT_TYPES: frozenset[str] = frozenset(
    (
        "decision.create",
        "decision.item.create",
        "decision.item.delete",
        "response.create",
        "response.item.create",
        "session.close",
        "session.commentary.append",
        "session.input_audio.append",
        "session.input_audio.mute",
        "session.input_audio.unmute",
        "session.instructions.append",
        "session.output_audio.fixture.play",
        "session.start",
        "session.thinking.append",
        "session.update",
        "transport.dtmf.send",
    )
)

# A command and the server event that answers it (matched by ``client_event_id``).
ANSWERED_BY: dict[str, str] = {
    "session.update": "session.updated",
    "session.input_audio.mute": "session.input_audio.muted",
    "session.input_audio.unmute": "session.input_audio.unmuted",
    "session.instructions.append": "session.instructions.appended",
    "session.thinking.append": "session.thinking.appended",
    "session.commentary.append": "session.commentary.appended",
    "session.close": "session.closed",
    "transport.dtmf.send": "transport.dtmf.sent",
    "decision.create": "decision.event",
    "decision.item.create": "decision.item.created",
    "decision.item.delete": "decision.item.deleted",
}
_APPEND_TYPES: dict[str, str] = {
    "commentary": "session.commentary.append",
    "thinking": "session.thinking.append",
    "instructions": "session.instructions.append",
}
_NOT_ON_SIDEBAND = frozenset({"session.start", "session.input_audio.append"})
_SIDEBAND_ONLY = frozenset({"transport.dtmf.send"})
# The nested Responses events that end a backend response.
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
# What the server may answer a response.create with while a backend response runs
# (not documented for GPT-Live; Realtime's code is the one the gate knows).
BUSY_CODES = frozenset({ACTIVE_RESPONSE_CODE, "response_already_active"})
_KEPT = 1024  # ended delegations, finished calls and unanswered commands remembered
_WATCHDOG = "watchdog"


@dataclasses.dataclass(frozen=True)
class Notices:
    """What the client appends (spoken) when a delegation ends without a result."""

    timeout: str = "The task I was working on is taking too long, so I have stopped waiting for it."
    failure: str = "I could not complete that task."
    no_answer: str = "I found nothing to add on that task."


@dataclasses.dataclass(frozen=True, eq=False)
class DelegationTask:
    """What a delegation handler gets: the work's id and the conversation that led to it.

    ``transcript`` holds both sides' fragments that began before ``offset_ms`` (the
    moment the model delegated); ``since_ms`` is the previous delegation's offset, so a
    handler can take only what was said since. ``say(text)`` and ``think(text)`` report
    progress (spoken, silent) and may be called any number of times; the handler's
    return value is the result.
    """

    id: str
    offset_ms: int
    since_ms: int
    transcript: tuple[Fragment, ...]
    _sink: ProgressSink | None = dataclasses.field(default=None, repr=False)

    @property
    def text(self) -> str:
        """The transcript as ``user: ...`` / ``assistant: ...`` lines."""
        return render(self.transcript)

    @property
    def request(self) -> str:
        """What the user said since the previous delegation, as one string."""
        return "".join(
            f.text for f in self.transcript if f.role == "user" and f.start_ms >= self.since_ms
        ).strip()

    def say(self, text: str) -> None:
        """Progress the user should hear (``session.commentary.append``)."""
        self._report(text, True)

    def think(self, text: str) -> None:
        """Silent progress or context (``session.thinking.append``)."""
        self._report(text, False)

    def _report(self, text: str, spoken: bool) -> None:
        if self._sink is None:
            raise ClosedError("this delegation task is not attached to a client")
        self._sink(self.id, text, spoken)


@dataclasses.dataclass(eq=False)
class DelegationWork:
    """The core's record of one delegation (``Start.work`` for its handler)."""

    id: str
    target: str
    offset_ms: int
    response_id: str | None = None
    state: DelegationState = "open"
    appends: int = 0  # appends handed to the shell for it (progress and result)


@dataclasses.dataclass(eq=False)
class CallWork:
    """One function call of a backend response (``Start.work`` for its tool)."""

    call_id: str
    name: str
    arguments: str
    batch: _Batch
    claimed: bool = False  # its output (result, error or timeout) is decided
    sent: bool = False  # that output is on the wire
    output: str | None = None
    error: str | None = None


@dataclasses.dataclass(eq=False)
class _Batch:
    """The function calls of one backend response."""

    response_id: str
    delegation_id: str | None
    calls: dict[str, CallWork] = dataclasses.field(default_factory=dict)
    done: bool = False  # its terminal event came
    failed: bool = False  # it ended failed/incomplete: outputs would be refused
    ready: bool = False  # done, and every output is on the wire
    closed: bool = False  # its follow-up was requested (or it needs none)


@dataclasses.dataclass(eq=False)
class _Command:
    """A sent command waiting for its answer."""

    event_id: str
    kind: str
    answer: str
    delegation_id: str | None = None
    final: bool = False


def session_config(
    config: Mapping[str, Any], tools: Iterable[ToolSpec], *, model: str | None = None
) -> dict[str, Any]:
    """The session object with ``model`` and the tools' schemas in
    ``delegation.responses.tools`` (tools run only under Responses delegation: client
    delegation has no function calls, so tools there are refused)."""
    out = dict(config)
    if model is not None:
        out.setdefault("model", model)
    specs = list(tools)
    if not specs:
        return out
    delegation = out.get("delegation")
    if not isinstance(delegation, Mapping) or delegation.get("type") != "responses":
        raise ValueError(
            "tools run under Responses delegation only: pass session={'delegation': "
            "{'type': 'responses', 'responses': {'model': ...}}}"
        )
    responses = dict(delegation.get("responses") or {})
    given = list(responses.get("tools") or [])
    named = {t.get("name") for t in given if isinstance(t, Mapping)}
    given += [s.session_tool() for s in specs if s.name not in named]
    responses["tools"] = given
    out["delegation"] = {**delegation, "responses": responses}
    return out


class LiveCore:
    """One GPT-Live connection's protocol state (see the module docstring).

    Not thread-safe: the shell calls it under one lock. Every input returns the effects
    to apply, in order; refused input raises a typed error and changes nothing.
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
        notices: Notices = Notices(),
        confirm_timeout: float = 15.0,
        max_attempts: int = 5,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_parts: int = DEFAULT_MAX_PARTS,
        transcript_kept: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if delegation_timeout <= 0:
            raise ValueError("delegation_timeout must be > 0")
        self.kind: ConnectionKind = kind
        self.config = dict(config or {})
        self.specs = specs_by_name(tools)
        self.handler = delegation
        self._sink = progress
        self.delegation_timeout = delegation_timeout
        for notice in dataclasses.astuple(notices):  # each must fit, checked now
            split_content(notice, budget=token_budget, max_parts=max_parts)
        self.notices = notices
        self.token_budget = token_budget
        self.max_parts = max_parts
        self._clock = clock
        self.gate = GateMachine(confirm_timeout=confirm_timeout, max_attempts=max_attempts)
        self.state: SessionState = "new"
        self.session: dict[str, Any] | None = None  # the latest resolved snapshot
        self.usage: dict[str, Any] | None = None
        self.transcript = Transcript(transcript_kept)
        self._held: list[Send] = []  # commands given before session.started
        self._start_id: str | None = None
        self._commands: OrderedDict[str, _Command] = OrderedDict()
        self._delegations: OrderedDict[str, DelegationWork] = OrderedDict()
        self._last_offset = 0
        self._batches: dict[str, _Batch] = {}
        self._current: dict[str | None, str] = {}  # delegation id (None: app) -> response
        self._finished_calls: OrderedDict[str, None] = OrderedDict()
        # response.item.create event id -> its call, for an error naming it (bounded)
        self._output_events: OrderedDict[str, CallWork] = OrderedDict()
        self._requests = 0
        self._notes: list[Note] = []
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "events_received",
                "unknown_events",
                "malformed_events",
                "server_errors",
                "refused_commands",
                "commands_unanswered",
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
            ),
            0,
        )

    # -- queries -------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        session = self.session or {}
        found = session.get("id")
        return found if isinstance(found, str) else None

    @property
    def delegation_mode(self) -> str | None:
        """``client``, ``responses`` (or ``decisions``), from the server's snapshot if one
        came, else from the config; None when neither says (a sideband before it hears)."""
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
        return self._delegations.get(delegation_id)

    def open_calls(self) -> int:
        return sum(not c.sent for b in self._batches.values() for c in b.calls.values())

    def stats(self) -> dict[str, int]:
        return {**self.gate.snapshot_stats().as_dict(), **self.counters}

    def drain_notes(self) -> list[Note]:
        """What the core would have logged since the last call (write it after the lock)."""
        notes, self._notes = self._notes, []
        return notes

    # -- the connection ------------------------------------------------------------

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

    def lost(self, error: BaseException) -> list[Effect]:
        """The connection ended without ``session.closed`` (or the shell closed it)."""
        if self.state == "closed":
            return []
        return self._end(error)

    # -- commands (caller threads, through the shell) ----------------------------------

    def command(self, event: Mapping[str, Any]) -> tuple[str, list[Effect]]:
        """Send a client event (an ``event_id`` is added). Returns its id and effects;
        the answer, if the command has one, settles ``("answer", event_id)``.

        Refused (:class:`CommandRefusedError`, nothing sent): ``session.start`` (the
        core sends it on a primary WebSocket; the other connections are already
        started), ``response.create`` (use :meth:`request_response`: the gate must
        see it), input audio on a sideband, a type GPT-Live does not define.
        """
        kind = event.get("type")
        self._refuse(kind, event.get("delegation_id"))
        self._check_open()
        out = ev.with_event_id(event)
        return out["event_id"], self._send_command(out)

    def _refuse(self, kind: Any, delegation_id: Any) -> None:
        why: str | None = None
        if kind not in CLIENT_EVENT_TYPES:
            why = f"{kind!r} is not a GPT-Live client event"
        elif kind == "session.start":
            why = (
                "a sideband joins a running session and never sends session.start"
                if self.kind == "sideband"
                else "session.start is sent once, by the client itself, when it connects"
                if self.kind == "websocket"
                else "a WebRTC session is started by its creation; session.start is refused"
            )
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
        if self.state in ("closed",):
            raise ClosedError("the GPT-Live session is closed")

    def _send_command(
        self, event: dict[str, Any], *, delegation_id: str | None = None, final: bool = False
    ) -> list[Effect]:
        kind = event["type"]
        answer = ANSWERED_BY.get(kind)
        if kind == "session.close" and self.state != "closed":
            self.state = "closing"
        if answer is not None:
            self._remember(_Command(event["event_id"], kind, answer, delegation_id, final))
        send = Send(event, kind="command", ref=event["event_id"])
        if self.state in ("new", "starting"):
            self._held.append(send)  # nothing before session.started
            return []
        return [send]

    def _remember(self, command: _Command) -> None:
        self._commands[command.event_id] = command
        while len(self._commands) > _KEPT * 4:  # unanswered for a long time: forgotten
            self._commands.popitem(last=False)
            self.counters["commands_unanswered"] += 1

    def append(
        self, kind: AppendKind, content: str, *, delegation_id: str | None = None
    ) -> tuple[list[str], list[Effect]]:
        """``session.<kind>.append`` (split over the per-append limit). For a delegation
        this is progress; its result goes through :meth:`answer`. Returns the event ids
        (one per part; the last one's ``*.appended`` says the whole text is placed)."""
        if kind not in _APPEND_TYPES:
            raise ValueError(f"kind must be one of {sorted(_APPEND_TYPES)}, not {kind!r}")
        self._refuse(_APPEND_TYPES[kind], delegation_id)
        self._check_open()
        if delegation_id is not None:
            work = self._known(delegation_id)
            if work.state != "open":
                return [], self._dropped(work, final=False)
            return self._append_for(work, kind, content, final=False)
        parts = split_content(content, budget=self.token_budget, max_parts=self.max_parts)
        return self._append_parts(kind, parts, None, final=False)

    def progress(self, delegation_id: str, content: str, spoken: bool) -> list[Effect]:
        """A delegation handler's ``say``/``think``: progress, if the delegation is open."""
        work = self._known(delegation_id)
        if work.state != "open" or self.state == "closed":
            return self._dropped(work, final=False)
        return self._append_for(work, "commentary" if spoken else "thinking", content, final=False)[
            1
        ]

    def answer(self, delegation_id: str, content: str, *, spoken: bool = True) -> list[Effect]:
        """The result of a delegation answered by the app itself (no handler): sent once;
        anything after it, or after the delegation ended, is dropped and reported."""
        work = self._known(delegation_id)
        if work.state != "open" or self.state == "closed":
            return self._dropped(work, final=True)
        kind: AppendKind = "commentary" if spoken else "thinking"
        parts = split_content(content, budget=self.token_budget, max_parts=self.max_parts)
        return self._finish(work, "answered", self._append_parts(kind, parts, work, final=True)[1])

    def _known(self, delegation_id: str) -> DelegationWork:
        work = self._delegations.get(delegation_id)
        if work is None or work.target != "client":
            self.counters["unknown_delegation_ids"] += 1
            raise UnknownDelegationError(
                f"delegation {delegation_id!r} was not announced to this session as client "
                "work (ids belong to the session that made them)"
            )
        return work

    def _append_for(
        self, work: DelegationWork, kind: AppendKind, content: str, *, final: bool
    ) -> tuple[list[str], list[Effect]]:
        parts = split_content(content, budget=self.token_budget, max_parts=self.max_parts)
        return self._append_parts(kind, parts, work, final=final)

    def _append_parts(
        self, kind: AppendKind, parts: list[str], work: DelegationWork | None, *, final: bool
    ) -> tuple[list[str], list[Effect]]:
        ids: list[str] = []
        fx: list[Effect] = []
        if len(parts) > 1:
            self.counters["appends_split"] += 1
        for index, part in enumerate(parts):
            event = ev.with_event_id(
                {
                    "type": _APPEND_TYPES[kind],
                    "content": part,
                    "delegation_id": work.id if work is not None else None,
                }
            )
            ids.append(event["event_id"])
            last = final and index == len(parts) - 1
            fx += self._send_command(event, delegation_id=work.id if work else None, final=last)
            self.counters["appends_sent"] += 1
            if work is not None:
                work.appends += 1
        return ids, fx

    def request_response(self, reason: str = "request") -> tuple[str, list[Effect]]:
        """Ask the Responses backend for a response (``response.create``), through the
        gate. Returns the waiter key's id: ``("response", key)`` settles with the
        terminal event of the response that served it, or the error."""
        if self.delegation_mode not in (None, "responses"):
            self.counters["refused_commands"] += 1
            raise CommandRefusedError("response.create requires Responses delegation")
        self._check_open()
        self._requests += 1
        trigger = Trigger(f"{reason}:{self._requests}")
        return trigger.reason, self._gate_request(trigger)

    def close_session(self) -> tuple[str | None, list[Effect]]:
        """``session.close``: the server finishes its delegation and output work, then
        sends ``session.closed``. None if there is no session to close."""
        if self.state in ("new", "closing", "closed"):
            return None, []
        if self.state == "starting":  # never started: nothing to finish
            return None, []
        event = ev.with_event_id({"type": "session.close"})
        return event["event_id"], self._send_command(event)

    # -- outcomes (reported by the shell) ------------------------------------------

    def sent(self, effect: Send, error: BaseException | None) -> list[Effect]:
        """The outcome of a ``Send``: ``None`` means on the wire."""
        if effect.kind == "start":
            if error is None:
                return []
            return self._end(error)
        if effect.kind == "create":
            ticket: Ticket = effect.ref
            if error is None:
                self._notes.append(("INFO", "RESPONSE_CREATE", "{} sent", (ticket.event_id,)))
                return [Later(self.gate.confirm_timeout, _WATCHDOG, ticket)]
            retry = not isinstance(error, ClosedError | MessageTooLargeError)
            return self._gate_fx(self.gate.rollback(ticket, error, self._clock(), retry=retry))
        if effect.kind == "output":
            return self._output_sent(effect.ref, effect.event, error)
        if error is None:
            return []
        event_id = effect.event.get("event_id")
        command = self._commands.pop(event_id, None) if isinstance(event_id, str) else None
        fx: list[Effect] = [Settle(("answer", str(event_id)), error)]
        if command is not None and command.final and command.delegation_id is not None:
            self.counters["undelivered_results"] += 1
            fx.append(
                self._report(
                    "dropped", command.delegation_id, reason="not_sent", error=_brief(error)
                )
            )
        return fx

    def finished(self, effect: Start, result: Any, error: BaseException | None) -> list[Effect]:
        """A ``Start`` ended: a delegation handler, or a tool."""
        if isinstance(effect.work, DelegationWork):
            return self._handler_finished(effect.work, result, error)
        if isinstance(effect.work, CallWork):
            call = effect.work
            if error is not None:  # call_tool never raises; the executor may (cancelled)
                result = failed(f"{call.name} did not run: {_brief(error)}")
            assert isinstance(result, ToolOutcome)
            return self._call_outcome(call, result, timed_out=False)
        return []

    def timer(self, effect: Later) -> list[Effect]:
        """A ``Later`` fired."""
        if effect.kind == "delegation":
            work: DelegationWork = effect.ref
            if work.state != "open" or self.state == "closed":
                return []
            self.counters["delegation_timeouts"] += 1
            fx: list[Effect] = [
                self._report("timed_out", work.id, timeout_s=self.delegation_timeout)
            ]
            fx += self._notice(work, self.notices.timeout)
            return self._finish(work, "timed_out", fx)
        if effect.kind == "tool":
            call: CallWork = effect.ref
            spec = self.specs.get(call.name)
            timeout = spec.timeout if spec is not None else None
            message = f"{call.name} timed out after {timeout}s"
            return self._call_outcome(call, failed(message), timed_out=True)
        if effect.kind == _WATCHDOG:
            return self._gate_fx(self.gate.tick(self._clock()))
        return []

    # -- server events -------------------------------------------------------------

    def on_event(self, event: Mapping[str, Any]) -> list[Effect]:
        """One server event, in arrival order (the loop thread's reader)."""
        kind = event.get("type")
        if not isinstance(kind, str):
            self.counters["malformed_events"] += 1
            return []
        self.counters["events_received"] += 1
        if kind not in SERVER_EVENT_TYPES:
            self.counters["unknown_events"] += 1
        event = dict(event)
        fx: list[Effect] = [Dispatch(event)]
        handler = _HANDLERS.get(kind)
        if handler is not None:
            fx += handler(self, event)
        if kind != "error" and kind != "response.event":
            client_event_id = event.get("client_event_id")
            if isinstance(client_event_id, str):
                fx += self._answered(client_event_id, kind, event)
        return fx

    def _answered(self, event_id: str, kind: str, event: dict[str, Any]) -> list[Effect]:
        command = self._commands.get(event_id)
        if command is None or command.answer != kind:
            return []
        del self._commands[event_id]
        return [Settle(("answer", event_id), event, keep=True)]

    def _on_started(self, event: dict[str, Any]) -> list[Effect]:
        session = event.get("session")
        if isinstance(session, dict):
            self.session = session
        if self.state != "starting":
            return []  # a sideband's snapshot at attach, or a repeat
        self.state = "started"
        held, self._held = self._held, []
        return [Settle(("session", "started"), event, keep=True), *held]

    def _on_updated(self, event: dict[str, Any]) -> list[Effect]:
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
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        error = SessionClosedError(f"the GPT-Live session closed ({reason})", reason=reason)
        fx: list[Effect] = [Settle(("session", "closed"), event, keep=True)]
        client_event_id = event.get("client_event_id")
        if isinstance(client_event_id, str):
            fx += self._answered(client_event_id, "session.closed", event)
        for command in list(self._commands.values()):
            if command.answer == "session.closed":  # our close, whether or not it is named
                fx += self._answered(command.event_id, "session.closed", event)
        return fx + self._end(error)

    def _on_error(self, event: dict[str, Any]) -> list[Effect]:
        error = _server_error(event)
        self.counters["server_errors"] += 1
        event_id = error.event_id
        self._notes.append(
            (
                "ERROR",
                "SERVER_ERROR",
                "{} {} (client_event_id={})",
                (error.code or error.type, error.message, event_id),
            )
        )
        if event_id is None:
            return []
        if event_id == self._start_id and self.state == "starting":
            return self._end(error)
        if self.gate.in_flight is not None and self.gate.in_flight.event_id == event_id:
            code = ACTIVE_RESPONSE_CODE if error.code in BUSY_CODES else error.code
            return self._gate_fx(self.gate.on_error(code, event_id, error, self._clock()))
        fx: list[Effect] = []
        command = self._commands.pop(event_id, None)
        if command is not None:
            fx.append(Settle(("answer", event_id), error))
            if error.code == "context_injection_incomplete":
                self.counters["appends_unplaced"] += 1
            if command.final and command.delegation_id is not None:
                self.counters["undelivered_results"] += 1
                fx.append(
                    self._report(
                        "dropped", command.delegation_id, reason="refused", error=_brief(error)
                    )
                )
            return fx
        call = self._output_events.pop(event_id, None)
        if call is not None:  # a function_call_output the server refused
            self.counters["refused_outputs"] += 1
            fx.append(
                self._report("output_refused", None, call_id=call.call_id, error=_brief(error))
            )
        return fx

    def _on_delegation(self, event: dict[str, Any]) -> list[Effect]:
        delegation = event.get("delegation")
        offset = event.get("offset_ms")
        if not isinstance(delegation, dict) or not isinstance(delegation.get("id"), str):
            self.counters["malformed_events"] += 1
            return []
        delegation_id: str = delegation["id"]
        target = str(delegation.get("target") or "client")
        if delegation_id in self._delegations:
            self.counters["duplicate_delegations"] += 1
            return [self._report("duplicate", delegation_id)]
        offset_ms = offset if isinstance(offset, int) else 0
        response_id = delegation.get("response_id")
        work = DelegationWork(
            delegation_id, target, offset_ms, response_id if isinstance(response_id, str) else None
        )
        self._delegations[delegation_id] = work
        self._forget_ended()
        if target == "responses" and work.response_id is not None:
            self._current[delegation_id] = work.response_id
        if target != "client":
            return []
        self.counters["delegations"] += 1
        task = DelegationTask(
            delegation_id,
            offset_ms,
            self._last_offset,
            self.transcript.until(offset_ms),
            self._sink,
        )
        self._last_offset = max(self._last_offset, offset_ms)
        fx: list[Effect] = [Later(self.delegation_timeout, "delegation", work)]
        if self.handler is not None:
            fx.append(Start(work, self.handler, (task,)))
        return fx

    def _forget_ended(self) -> None:
        """Keep the ended delegations' ids (for duplicates and late results), bounded."""
        if len(self._delegations) <= _KEPT:
            return
        for delegation_id, work in list(self._delegations.items()):
            if len(self._delegations) <= _KEPT:
                break
            if work.state != "open":
                del self._delegations[delegation_id]

    # -- delegations ---------------------------------------------------------------

    def _handler_finished(
        self, work: DelegationWork, result: Any, error: BaseException | None
    ) -> list[Effect]:
        if work.state != "open" or self.state == "closed":
            return self._dropped(work, final=True)
        if error is not None:
            self.counters["delegation_errors"] += 1
            fx = [self._report("failed", work.id, reason="error", error=_brief(error))]
            return self._finish(work, "failed", fx + self._notice(work, self.notices.failure))
        if result is None:
            if work.appends:
                return self._finish(work, "answered", [])
            self.counters["delegations_empty"] += 1
            return self._finish(work, "answered", self._notice(work, self.notices.no_answer))
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        try:
            parts = split_content(text, budget=self.token_budget, max_parts=self.max_parts)
        except (ContentTooLongError, ValueError) as exc:
            self.counters[
                "results_too_long" if isinstance(exc, ContentTooLongError) else "delegation_errors"
            ] += 1
            reason = "too_long" if isinstance(exc, ContentTooLongError) else "empty"
            fx = [self._report("failed", work.id, reason=reason, error=str(exc))]
            return self._finish(work, "failed", fx + self._notice(work, self.notices.failure))
        return self._finish(
            work, "answered", self._append_parts("commentary", parts, work, final=True)[1]
        )

    def _notice(self, work: DelegationWork, text: str) -> list[Effect]:
        return self._append_for(work, "commentary", text, final=True)[1]

    def _finish(
        self, work: DelegationWork, state: DelegationState, fx: list[Effect]
    ) -> list[Effect]:
        work.state = state
        if state == "answered":
            self.counters["delegations_answered"] += 1
        outcome = {"delegation_id": work.id, "outcome": state}
        return [*fx, Settle(("delegation", work.id), outcome, keep=True)]

    def _dropped(self, work: DelegationWork, *, final: bool) -> list[Effect]:
        """Something for a delegation that has ended: never sent, always reported."""
        if self.state == "closed" or work.state == "dead":
            reason, counter = "session_closed", "results_after_close"
        elif work.state == "timed_out":
            reason, counter = "timed_out", "late_results"
        else:
            reason, counter = work.state, "duplicate_results"
        self.counters[counter] += 1
        return [self._report("dropped", work.id, reason=reason, result=final)]

    def _report(self, what: str, delegation_id: str | None, **fields: Any) -> Dispatch:
        """A client-side event for ``on()``/``events()``: ``rtclient.delegation.<what>``."""
        self._notes.append(("WARNING", "DELEGATION", "{} {} {}", (what, delegation_id, fields)))
        prefix = "rtclient.delegation." if delegation_id is not None else "rtclient."
        return Dispatch({"type": prefix + what, "delegation_id": delegation_id, **fields})

    # -- Responses delegation: backend responses and function calls ----------------------

    def _on_response_event(self, event: dict[str, Any]) -> list[Effect]:
        inner = event.get("event")
        if not isinstance(inner, dict) or not isinstance(inner.get("type"), str):
            self.counters["malformed_events"] += 1
            return []
        delegation_id = event.get("delegation_id")
        delegation_id = delegation_id if isinstance(delegation_id, str) else None
        client_event_id = event.get("client_event_id")
        ours = client_event_id if isinstance(client_event_id, str) else None
        kind = inner["type"]
        response = inner.get("response")
        response_id = response.get("id") if isinstance(response, dict) else None
        if kind == "response.created" and isinstance(response_id, str):
            self._current[delegation_id] = response_id
            return self._gate_fx(
                self.gate.on_created(response_id, ours, out_of_band=False, now=self._clock())
            )
        if kind == "response.output_item.done":
            item = inner.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                return self._start_call(item, delegation_id)
            return []
        if kind in _TERMINAL:
            if not isinstance(response_id, str):
                response_id = self._current.get(delegation_id)
            if response_id is None:
                self.counters["malformed_events"] += 1
                return []
            fx = self._gate_fx(
                self.gate.on_done(
                    response_id, event, out_of_band=False, now=self._clock(), ticket_id=ours
                )
            )
            failed = kind != "response.completed"
            return fx + self._response_over(response_id, delegation_id, failed=failed)
        return []

    def _batch_for(self, delegation_id: str | None) -> _Batch:
        response_id = self._current.get(delegation_id) or f"delegation:{delegation_id}"
        batch = self._batches.get(response_id)
        if batch is None:
            batch = self._batches[response_id] = _Batch(response_id, delegation_id)
        return batch

    def _start_call(self, item: dict[str, Any], delegation_id: str | None) -> list[Effect]:
        if not self.specs:
            return []  # no tools registered: the calls are the app's (on()/events())
        if item.get("status") not in (None, "completed"):
            return []
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if not isinstance(call_id, str) or not isinstance(name, str):
            self.counters["malformed_events"] += 1
            return []
        if call_id in self._finished_calls or any(
            call_id in b.calls for b in self._batches.values()
        ):
            return []  # a repeat: a call runs once and is answered once
        batch = self._batch_for(delegation_id)
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        call = CallWork(call_id, name, text, batch)
        batch.calls[call_id] = call
        self.counters["tool_calls"] += 1
        spec = self.specs.get(name)
        if spec is None:
            return self._call_outcome(call, failed(f"unknown tool {name!r}"), timed_out=False)
        fx: list[Effect] = [Start(call, call_tool, (spec, text))]
        if spec.timeout is not None:
            fx.append(Later(spec.timeout, "tool", call))
        return fx

    def _call_outcome(
        self, call: CallWork, outcome: ToolOutcome, *, timed_out: bool
    ) -> list[Effect]:
        """The first of a call's result and its timeout decides its output."""
        if call.claimed:
            if not timed_out:
                self.counters["tool_late_results"] += 1
            return []
        call.claimed = True
        call.output, call.error = outcome.output, outcome.error
        if outcome.error is not None:
            self.counters["tool_errors"] += 1
            if timed_out:
                self.counters["tool_timeouts"] += 1
        return self._deliver(call, outcome.output)

    def _deliver(self, call: CallWork, text: str) -> list[Effect]:
        if self.state == "closed":
            self.counters["undelivered_outputs"] += 1
            return [
                self._report("output_dropped", None, call_id=call.call_id, reason="session_closed")
            ]
        if call.batch.failed:
            return self._discard(call, text)
        event = ev.with_event_id(
            {
                "type": "response.item.create",
                "item": {"type": "function_call_output", "call_id": call.call_id, "output": text},
            }
        )
        self._output_events[event["event_id"]] = call
        while len(self._output_events) > _KEPT:
            self._output_events.popitem(last=False)
        return [Send(event, kind="output", ref=call)]

    def _discard(self, call: CallWork, text: str) -> list[Effect]:
        """A call of a failed/incomplete response: its output would be refused, so the
        voice model gets the result as silent context instead."""
        self.counters["discarded_calls"] += 1
        call.sent = True
        note = f"Result of {call.name} (its backend response ended early): {text}"
        budget = self.token_budget
        while estimate_tokens(note) > budget:
            note = note[: max(1, len(note) * budget // estimate_tokens(note) - 1)]
        fx = (
            self._append_parts("thinking", [note], None, final=False)[1]
            if self.state != "closing"
            else []
        )
        return fx + self._batch_progress(call.batch)

    def _output_sent(
        self, call: CallWork, event: dict[str, Any], error: BaseException | None
    ) -> list[Effect]:
        event_id = str(event.get("event_id"))
        if error is None:
            call.sent = True
            self.counters["outputs_sent"] += 1
            return self._batch_progress(call.batch)
        self._output_events.pop(event_id, None)
        if isinstance(error, MessageTooLargeError) and call.error is None:
            message = (
                f"the result of {call.name} is {error.size} bytes, more than the "
                f"{error.limit} bytes one event may carry; it was not delivered"
            )
            call.error = message
            self.counters["oversized_outputs"] += 1
            return self._deliver(call, error_output(message))
        self.counters["undelivered_outputs"] += 1
        call.batch.closed = True  # no follow-up without this output
        return [
            self._report(
                "output_dropped", None, call_id=call.call_id, reason="not_sent", error=_brief(error)
            )
        ]

    def _response_over(
        self, response_id: str, delegation_id: str | None, *, failed: bool
    ) -> list[Effect]:
        batch = self._batches.get(response_id) or self._batches.get(f"delegation:{delegation_id}")
        if batch is None:
            return []
        batch.done = True
        batch.failed = failed  # outputs already on their way are refused (counted then)
        return self._batch_progress(batch)

    def _batch_progress(self, batch: _Batch) -> list[Effect]:
        """When every call of every finished backend response has its output on the
        wire, ask the gate for ONE ``response.create`` continuing them all."""
        if batch.done and not batch.ready and all(c.sent for c in batch.calls.values()):
            batch.ready = True
        if self.open_calls() or any(not b.done for b in self._batches.values()):
            return []
        ready = [b for b in self._batches.values() if b.ready and not b.closed]
        for b in list(self._batches.values()):
            if b.ready or b.closed:
                del self._batches[b.response_id]
                for call_id in b.calls:
                    self._finished_calls[call_id] = None
        while len(self._finished_calls) > _KEPT:
            self._finished_calls.popitem(last=False)
        wanted = [b for b in ready if not b.failed and b.calls]
        for b in ready:
            b.closed = True
        if not wanted or self.state == "closed":
            return []
        self.counters["followups_requested"] += 1
        trigger = Trigger("tool_calls:" + "+".join(b.response_id for b in wanted))
        return self._gate_request(trigger)

    # -- the gate ------------------------------------------------------------------

    def _gate_request(self, trigger: Trigger) -> list[Effect]:
        return self._gate_fx(self.gate.request(trigger, self._clock()))

    def _gate_fx(self, fx: Any) -> list[Effect]:
        """The gate's effects in the core's vocabulary."""
        self._notes.extend(fx.notes)
        out: list[Effect] = []
        for trigger, event in fx.resolved:
            out.append(Settle(("response", trigger.reason), event, keep=True))
        for trigger, error in fx.failed:
            out.append(Settle(("response", trigger.reason), error, keep=True))
        if fx.send is not None:
            send = Send(
                {"type": "response.create", "event_id": fx.send.event_id},
                kind="create",
                ref=fx.send,
            )
            if self.state in ("new", "starting"):
                self._held.append(send)
            else:
                out.append(send)
        return out

    # -- the end -------------------------------------------------------------------

    def _end(self, error: BaseException) -> list[Effect]:
        if self.state == "closed":
            return []
        starting = self.state in ("new", "starting")
        self.state = "closed"
        fx: list[Effect] = []
        if starting:
            fx.append(Settle(("session", "started"), error, keep=True))
        for send in self._held:
            if send.kind == "command":
                fx.append(Settle(("answer", str(send.ref)), error))
        self._held.clear()
        for work in self._delegations.values():
            if work.state == "open":
                work.state = "dead"
                fx.append(Settle(("delegation", work.id), error, keep=True))
        fx += self._gate_fx(self.gate.close(error))
        self._commands.clear()
        fx.append(Lost(error))
        return fx


_HANDLERS: dict[str, Callable[[LiveCore, dict[str, Any]], list[Effect]]] = {
    "session.started": LiveCore._on_started,
    "session.updated": LiveCore._on_updated,
    "session.usage.updated": LiveCore._on_usage,
    "session.input_transcript.delta": LiveCore._on_transcript,
    "session.output_transcript.delta": LiveCore._on_transcript,
    "session.closed": LiveCore._on_closed,
    "session.delegation.created": LiveCore._on_delegation,
    "response.event": LiveCore._on_response_event,
    "error": LiveCore._on_error,
}


def _server_error(event: Mapping[str, Any]) -> ServerError:
    """A GPT-Live ``error`` event as a :class:`ServerError` whose ``event_id`` is the
    command it names (``error.client_event_id``, falling back to the top level)."""
    err = event.get("error")
    if not isinstance(err, Mapping):
        err = {"message": str(err)}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    return ServerError(
        str(err.get("message") or "server error"),
        code=text(err.get("code")),
        type=text(err.get("type")),
        param=text(err.get("param")),
        event_id=text(err.get("client_event_id")) or text(event.get("client_event_id")),
    )


def _brief(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def write_notes(notes: Iterable[Note]) -> None:
    """Log the core's notes (call it after releasing the lock that guards the core)."""
    from rtclient.logs import logger

    for level, tag, template, args in notes:
        logger.log(level, "[{}] " + template, tag, *args)
