"""GPT-Live's vocabulary for the protocol core: event types, records, client events.

What :mod:`rtclient.core.live` and its two parts (:mod:`.live_delegations`,
:mod:`.live_calls`) share: the server and client event types (written out - importing
``openai`` costs ~1.5 s - and checked against ``openai.types.live`` by the tests),
which command each server event answers, the records kept per delegation and per
function call, and the client-side events the core reports (``rtclient.*``: things
the server never says, such as a result dropped because its delegation timed out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from rtclient.core.live_text import Fragment, render
from rtclient.effects import Dispatch
from rtclient.errors import ClosedError, ServerError
from rtclient.tools.schema import ToolSpec

ConnectionKind = Literal["websocket", "webrtc", "sideband"]
"""``websocket``: a primary WebSocket (sends ``session.start``); ``webrtc``: a session
created by ``POST /live/sessions``; ``sideband``: attached to a running session."""

AppendKind = Literal["commentary", "thinking", "instructions"]
DelegationState = Literal["open", "answered", "timed_out", "failed", "dead"]
ProgressSink = Callable[[str, str, bool], None]
"""``sink(delegation_id, content, spoken)``: where :meth:`DelegationTask.say` and
``think`` report (the shell, which calls :meth:`LiveCore.progress`)."""

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
APPEND_TYPES: dict[str, str] = {
    "commentary": "session.commentary.append",
    "thinking": "session.thinking.append",
    "instructions": "session.instructions.append",
}

# Client-side events the core reports (``Dispatch``), with what they carry. The server
# sends none of them; LiveClient's ``on()``/``events()`` accept these names too.
CLIENT_SIDE_EVENTS: dict[str, str] = {
    "rtclient.delegation.duplicate": "a second session.delegation.created for an id",
    "rtclient.delegation.failed": "the handler raised, or its result was too long",
    "rtclient.delegation.timed_out": "the client's timeout ended the delegation",
    "rtclient.delegation.dropped": "something for an ended delegation was not sent",
    "rtclient.output_dropped": "a function_call_output could not be sent",
    "rtclient.output_refused": "the server refused a function_call_output",
}


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
    return value is the result (spoken).
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
        said = (f.text for f in self.transcript if f.role == "user" and f.start_ms >= self.since_ms)
        return "".join(said).strip()

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
    """One delegation as the core keeps it (``Start.work`` of its handler)."""

    id: str
    target: str
    offset_ms: int
    response_id: str | None = None
    task: DelegationTask | None = None  # client work: what its handler gets
    started: bool = False  # its handler and timeout were started
    state: DelegationState = "open"
    appends: int = 0  # appends handed to the shell for it (progress and result)


@dataclasses.dataclass(eq=False)
class Batch:
    """The function calls of one backend response."""

    response_id: str
    delegation_id: str | None
    calls: dict[str, CallWork] = dataclasses.field(default_factory=dict)
    done: bool = False  # its terminal event came
    failed: bool = False  # it ended failed/incomplete: outputs would be refused
    ready: bool = False  # done, and every output is on the wire
    closed: bool = False  # its follow-up was requested (or it needs none)


@dataclasses.dataclass(eq=False)
class CallWork:
    """One function call of a backend response (``Start.work`` of its tool)."""

    call_id: str
    name: str
    arguments: str
    batch: Batch
    claimed: bool = False  # its output (result, error or timeout) is decided
    sent: bool = False  # that output is on the wire
    output: str | None = None
    error: str | None = None


@dataclasses.dataclass(eq=False)
class Command:
    """A sent command waiting for its answer."""

    event_id: str
    kind: str
    answer: str
    delegation_id: str | None = None
    final: bool = False  # the last part of a delegation's result


def client_event(what: str, delegation_id: str | None = None, **fields: Any) -> Dispatch:
    """A client-side event (:data:`CLIENT_SIDE_EVENTS`) for ``on()``/``events()``."""
    prefix = "rtclient.delegation." if delegation_id is not None else "rtclient."
    return Dispatch({"type": prefix + what, "delegation_id": delegation_id, **fields})


def server_error(event: Mapping[str, Any]) -> ServerError:
    """A GPT-Live ``error`` event as a :class:`ServerError` whose ``event_id`` is the
    command it names (``error.client_event_id``, else the top level's)."""
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


def brief(error: BaseException) -> str:
    """An error in one short line (for client-side events)."""
    return f"{type(error).__name__}: {error}"[:300]


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
