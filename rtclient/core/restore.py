"""Reconnect decisions, with no threads and no I/O: what a new session is given back,
which tool calls a re-attached sideband still owes, and when to try again.

Theory of operation. A Realtime session lives on the server; when its connection dies,
the session dies with it (an own WebRTC or WebSocket session) or lives on without us
(a call a sideband was attached to). The client cannot ask the server what it missed:
the API has no "list the conversation". What it has is what it *saw* - every
``conversation.item.added``/``done`` in order, the transcripts, the outputs it wrote -
and two narrow questions it may ask a live session afterwards (the newest item, by
appending an item and reading its ``previous_item_id``; any one item, by id). So:

* :class:`ConversationLog` keeps the conversation as this client saw it (fed the server
  events in arrival order, and the client events as they are written). Bounded.
* :func:`plan_restore` turns a log's snapshot into the items to create in a **new**
  session, in order. Text stays text; audio becomes its transcript (the assistant's
  speech an assistant text item, the user's speech the input transcription, when one
  was seen); a tool call is restored together with its output, never alone (a call with
  no output would leave the model waiting for an answer nobody sends); an item cut
  short by a barge-in is not restored (what the user heard of it is unknown), nor one
  that never completed. A ``response.create`` is never part of a restore: the old
  session's requests ended with it.
* :func:`gap_calls` decides, for a re-attached sideband, which function calls found on
  the server are owed an answer: a call the client never saw and nobody answered.
  Calls the client saw are its tool runner's, which answers each call once, whatever
  connection carries the output.
* :class:`Reconnect` is the policy: attempts, and the backoff before each.
* :func:`merge_session` folds the session updates the server accepted into the config
  a new connection applies, so a reconnect does not undo ``update_session()``.

Why not replay what was queued, as the ``openai`` package's reconnecting client does:
a queued ``response.create`` replayed into a new session asks a model whose
conversation is gone to answer it, and one replayed onto a re-attached call may be
the second create for a turn the server already answered. Here a new session is given
the *conversation*, and every response in it is a new request through the gate.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

LOG_LIMIT = 2000  # items a log keeps (the oldest are forgotten first)
_SESSION_PENDING = 64  # session.update events waiting for their session.updated
_OUTPUTS_KEPT = 1024  # outputs this client wrote, until their echo is seen
_LAST = object()  # an event that names no previous item: the item is appended
NOT_RESTORED_SHOWN = 64  # items listed by name in a Reconnected event (all are counted)

# Content part types, by what the restored item carries.
_USER_TEXT = ("input_text",)
_ASSISTANT_TEXT = ("output_text", "text")
_AUDIO = ("input_audio", "output_audio", "audio")


# -- the policy ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reconnect:
    """``RealtimeClient(reconnect=Reconnect(...))``: survive a lost connection (opt-in).

    ``max_attempts`` connections are tried, attempt ``n`` after
    ``min(backoff_max, backoff * 2 ** (n - 1))`` seconds, give or take ``jitter`` of it
    (so that many clients dropped at once do not come back at once). ``rerequest``: a
    request for a response still waiting when an *own* session was lost is requested
    again, as a new request through the gate, once the new session holds the restored
    conversation (its old ticket still fails: the new response arrives as events). Off
    by default, and never on a sideband (the call's server may have answered it already).
    ``restore_items``: at most this many of the newest items are restored.
    """

    max_attempts: int = 5
    backoff: float = 0.25
    backoff_max: float = 8.0
    jitter: float = 0.2
    rerequest: bool = False
    restore_items: int = 500

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff < 0 or self.backoff_max < self.backoff:
            raise ValueError("backoff must be >= 0 and backoff_max >= backoff")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.restore_items < 0:
            raise ValueError("restore_items must be >= 0")

    def delay(self, attempt: int, draw: float = 0.5) -> float:
        """Seconds to wait before attempt ``attempt`` (1-based); ``draw`` in [0, 1) is a
        uniform random draw (0.5: no jitter)."""
        base = min(self.backoff_max, self.backoff * 2.0 ** max(0, attempt - 1))
        return max(0.0, float(base * (1 + self.jitter * (2 * draw - 1))))


# -- what the app is told -----------------------------------------------------------------


class NotRestored(BaseModel):
    """An item the client saw but did not give the new session, and why."""

    id: str
    type: str
    reason: str


class Reconnecting(BaseModel):
    """``rtclient.reconnecting``: the connection was lost; the client is moving to a new
    one. Every waiter of the old connection has failed with
    :class:`~rtclient.errors.SessionReplacedError` (``failed_requests`` of them were
    requests for a response); calls made now raise
    :class:`~rtclient.errors.ReconnectingError`."""

    type: Literal["rtclient.reconnecting"] = "rtclient.reconnecting"
    mode: Literal["session", "sideband"]
    reason: str
    call_id: str | None = None
    failed_requests: int = 0


class Reconnected(BaseModel):
    """``rtclient.reconnected``: the client is usable again, on a new connection.

    ``mode="session"``: a new session (``call_id`` is the new call, for WebRTC) holding
    ``restored_items`` items rebuilt from what the client saw (``restored`` counts them
    by kind; ``not_restored`` names the ones left out, with the reason).
    ``mode="sideband"``: the same call, re-attached; ``recovered_calls`` are function
    calls made while no sideband was attached, handed to the tools (answered once, then
    one follow-up through the gate); ``unanswered_calls`` are such calls no registered
    tool answers (the app's to answer with ``submit_tool_output``); ``gap_checked`` is
    whether the server's newest item could be looked at. ``rerequested``: the reasons of
    the requests requested again (``Reconnect.rerequest``). ``seconds``: from the loss
    to now.
    """

    type: Literal["rtclient.reconnected"] = "rtclient.reconnected"
    mode: Literal["session", "sideband"]
    attempts: int
    seconds: float
    call_id: str | None = None
    previous_call_id: str | None = None
    restored_items: int = 0
    restored: dict[str, int] = Field(default_factory=dict)
    not_restored: list[NotRestored] = Field(default_factory=list)
    not_restored_count: int = 0
    rerequested: list[str] = Field(default_factory=list)
    recovered_calls: list[str] = Field(default_factory=list)
    unanswered_calls: list[str] = Field(default_factory=list)
    resent_outputs: int = 0
    gap_checked: bool = False


RECONNECTING = "rtclient.reconnecting"
RECONNECTED = "rtclient.reconnected"
EVENT_MODELS: dict[str, type[BaseModel]] = {RECONNECTING: Reconnecting, RECONNECTED: Reconnected}


# -- what the client saw ------------------------------------------------------------------


@dataclasses.dataclass
class SeenItem:
    """One conversation item as the client last saw it."""

    id: str
    type: str
    role: str | None = None
    content: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    done: bool = False
    truncated: bool = False
    response_id: str | None = None


class ConversationLog:
    """The conversation as this client saw it, in the server's order.

    ``server_event`` takes every server event in arrival order (the loop thread);
    ``client_event`` every client event as it is written. Both only record: they never
    raise on a malformed event (a field of the wrong type is ignored). A lock guards the
    state, for readers on other threads. At most ``limit`` items are kept, the oldest
    forgotten first (``forgotten`` counts them).
    """

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._order: list[str] = []
        self._items: dict[str, SeenItem] = {}
        self._response_of: dict[str, str] = {}  # function call item id -> response id
        self._open: OrderedDict[str, None] = OrderedDict()  # with calls seen, no done yet
        self._finished: OrderedDict[str, None] = OrderedDict()  # responses seen done
        self._out_of_band: OrderedDict[str, None] = OrderedDict()
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()  # session.update
        self._updates: list[dict[str, Any]] = []  # accepted session updates, in order
        self._outputs: OrderedDict[str, dict[str, Any]] = OrderedDict()  # unechoed, by call
        self._answered: set[str] = set()  # call ids with an output (seen or written)
        self.forgotten = 0

    # -- feeding ----------------------------------------------------------------------

    def server_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        handler = _SERVER_HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            with self._lock:
                handler(self, event)

    def client_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            if kind == "session.update":
                session, event_id = event.get("session"), event.get("event_id")
                if isinstance(session, Mapping) and isinstance(event_id, str):
                    self._pending[event_id] = copy.deepcopy(dict(session))
                    while len(self._pending) > _SESSION_PENDING:
                        self._pending.popitem(last=False)
            elif kind == "conversation.item.create":
                item = event.get("item")
                if isinstance(item, Mapping) and item.get("type") == "function_call_output":
                    self._output_written(event, item)

    # -- reading ----------------------------------------------------------------------

    def snapshot(self) -> list[SeenItem]:
        """The items, oldest first (copies)."""
        with self._lock:
            return [copy.deepcopy(self._items[i]) for i in self._order]

    def last_id(self) -> str | None:
        with self._lock:
            return self._order[-1] if self._order else None

    def knows(self, item_id: str) -> bool:
        with self._lock:
            return item_id in self._items

    def answered(self, call_id: str) -> bool:
        """Whether the client saw or wrote an output for ``call_id``."""
        with self._lock:
            return call_id in self._answered

    def seen_complete_call(self, call_id: str) -> bool:
        """Whether the client saw ``call_id``'s call complete (so its tools had it)."""
        with self._lock:
            return any(
                it.type == "function_call" and it.call_id == call_id and it.done
                for it in self._items.values()
            )

    def unechoed_outputs(self) -> list[dict[str, Any]]:
        """The ``function_call_output`` events this client wrote whose item the server
        has not shown back: each may or may not have arrived (copies, oldest first)."""
        with self._lock:
            return [copy.deepcopy(e) for e in self._outputs.values()]

    def open_rounds(self) -> dict[str, list[dict[str, Any]]]:
        """Responses seen making function calls whose ``response.done`` was not seen:
        their calls as ``function_call`` items (the runner needs a done to complete a
        round; on a re-attached sideband it may never come)."""
        with self._lock:
            rounds: dict[str, list[dict[str, Any]]] = {}
            for item_id in self._order:
                it = self._items[item_id]
                rid = self._response_of.get(item_id)
                if it.type != "function_call" or rid is None or rid not in self._open:
                    continue
                if not it.done or it.call_id is None or it.name is None or it.arguments is None:
                    continue  # never completed: the runner did not start it either
                rounds.setdefault(rid, []).append(_call_item(it))
            return rounds

    def session_updates(self) -> list[dict[str, Any]]:
        """The ``session`` of every ``session.update`` the server accepted, in order."""
        with self._lock:
            return copy.deepcopy(self._updates)

    def _output_written(self, event: Mapping[str, Any], item: Mapping[str, Any]) -> None:
        """Lock held: an output this client wrote. Known to the client whether or not
        its echo comes back: one with an item id (the tool runner's) joins the log at
        once, where the server appends it (its echo then only confirms it)."""
        call_id, item_id, output = item.get("call_id"), item.get("id"), item.get("output")
        if not isinstance(call_id, str):
            return
        self._answered.add(call_id)
        self._outputs[call_id] = copy.deepcopy(dict(event))
        while len(self._outputs) > _OUTPUTS_KEPT:
            self._outputs.popitem(last=False)
        if isinstance(item_id, str) and isinstance(output, str) and item_id not in self._items:
            seen = SeenItem(item_id, "function_call_output", call_id=call_id, output=output)
            seen.done = True
            self._items[item_id] = seen
            self._insert(item_id, _LAST)

    # -- server events (lock held) ----------------------------------------------------

    def _item(self, event: Mapping[str, Any], done: bool) -> None:
        raw = event.get("item")
        if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str):
            return
        item_id: str = raw["id"]
        seen = self._items.get(item_id)
        if seen is None:
            seen = SeenItem(id=item_id, type=str(raw.get("type")))
            self._items[item_id] = seen
            self._insert(item_id, event.get("previous_item_id", _LAST))
        _update(seen, raw)
        if done or raw.get("status") in ("completed", "incomplete"):
            seen.done = True
        if seen.type == "function_call_output" and seen.call_id is not None:
            self._answered.add(seen.call_id)
            self._outputs.pop(seen.call_id, None)

    def _insert(self, item_id: str, previous: Any) -> None:
        order = self._order
        if previous is None and order:  # null: the first item (``"root"``)
            order.insert(0, item_id)
        elif isinstance(previous, str) and previous in self._items and previous != item_id:
            try:
                order.insert(order.index(previous) + 1, item_id)
            except ValueError:
                order.append(item_id)
        else:
            order.append(item_id)
        while len(order) > self._limit:
            gone = order.pop(0)
            self._items.pop(gone, None)
            self._response_of.pop(gone, None)
            self.forgotten += 1

    def _added(self, event: Mapping[str, Any]) -> None:
        self._item(event, done=False)

    def _done(self, event: Mapping[str, Any]) -> None:
        self._item(event, done=True)

    def _deleted(self, event: Mapping[str, Any]) -> None:
        item_id = event.get("item_id")
        if isinstance(item_id, str) and self._items.pop(item_id, None) is not None:
            self._order.remove(item_id)
            self._response_of.pop(item_id, None)

    def _truncated(self, event: Mapping[str, Any]) -> None:
        seen = self._items.get(str(event.get("item_id")))
        if seen is not None:
            seen.truncated = True

    def _part(self, event: Mapping[str, Any], field: str, value: Any) -> None:
        seen = self._items.get(str(event.get("item_id")))
        index = event.get("content_index")
        if seen is None or not isinstance(index, int) or not isinstance(value, str) or index < 0:
            return
        while len(seen.content) <= index:
            seen.content.append({})
        seen.content[index][field] = value

    def _transcript(self, event: Mapping[str, Any]) -> None:
        self._part(event, "transcript", event.get("transcript"))

    def _text(self, event: Mapping[str, Any]) -> None:
        self._part(event, "text", event.get("text"))

    def _output_item(self, event: Mapping[str, Any]) -> None:
        item, rid = event.get("item"), event.get("response_id")
        if not isinstance(item, Mapping) or item.get("type") != "function_call":
            return
        if isinstance(item.get("id"), str) and isinstance(rid, str):
            self._note_call(item["id"], rid)
            seen = self._items.get(item["id"])
            if seen is not None:
                _update(seen, item)
                if event.get("type") == "response.output_item.done":
                    seen.done = True

    def _note_call(self, item_id: str, rid: str) -> None:
        """A function call of response ``rid``: that response is open until its done."""
        self._response_of[item_id] = rid
        if rid not in self._finished and rid not in self._out_of_band:
            self._open[rid] = None
            while len(self._open) > _SESSION_PENDING:
                self._open.popitem(last=False)

    def _arguments(self, event: Mapping[str, Any]) -> None:
        item_id, rid = event.get("item_id"), event.get("response_id")
        if isinstance(item_id, str) and isinstance(rid, str):
            self._note_call(item_id, rid)
            seen = self._items.get(item_id)
            if seen is not None:
                for field in ("call_id", "name", "arguments"):
                    value = event.get(field)
                    if isinstance(value, str):
                        setattr(seen, field, value)
                seen.done = True  # a call is complete once its arguments are

    def _response_created(self, event: Mapping[str, Any]) -> None:
        response = event.get("response")
        out_of_band = isinstance(response, Mapping) and response.get("conversation_id", 1) is None
        if out_of_band and isinstance(response, Mapping) and isinstance(response.get("id"), str):
            _remember(self._out_of_band, response["id"])  # its calls join no round

    def _response_done(self, event: Mapping[str, Any]) -> None:
        response = event.get("response")
        if isinstance(response, Mapping) and isinstance(response.get("id"), str):
            self._open.pop(response["id"], None)
            _remember(self._finished, response["id"])

    def _session_updated(self, event: Mapping[str, Any]) -> None:
        if self._pending:  # a connection's events are answered in order
            self._updates.append(self._pending.popitem(last=False)[1])

    def _error(self, event: Mapping[str, Any]) -> None:
        error = event.get("error")
        event_id = error.get("event_id") if isinstance(error, Mapping) else None
        if isinstance(event_id, str):
            self._pending.pop(event_id, None)


_SERVER_HANDLERS: dict[str, Any] = {
    "conversation.item.added": ConversationLog._added,
    "conversation.item.created": ConversationLog._added,  # beta name
    "conversation.item.done": ConversationLog._done,
    "conversation.item.deleted": ConversationLog._deleted,
    "conversation.item.truncated": ConversationLog._truncated,
    "response.output_audio_transcript.done": ConversationLog._transcript,
    "response.audio_transcript.done": ConversationLog._transcript,  # beta name
    "conversation.item.input_audio_transcription.completed": ConversationLog._transcript,
    "response.output_text.done": ConversationLog._text,
    "response.text.done": ConversationLog._text,  # beta name
    "response.output_item.added": ConversationLog._output_item,
    "response.output_item.done": ConversationLog._output_item,
    "response.function_call_arguments.done": ConversationLog._arguments,
    "response.created": ConversationLog._response_created,
    "response.done": ConversationLog._response_done,
    "session.updated": ConversationLog._session_updated,
    "error": ConversationLog._error,
}


def _update(seen: SeenItem, raw: Mapping[str, Any]) -> None:
    """Take what ``raw`` says of the item (a later event completes an earlier one)."""
    role = raw.get("role")
    if isinstance(role, str):
        seen.role = role
    for field in ("call_id", "name", "arguments", "output"):
        value = raw.get(field)
        if isinstance(value, str):
            setattr(seen, field, value)
    content = raw.get("content")
    if isinstance(content, list):
        for index, part in enumerate(content):
            if not isinstance(part, Mapping):
                continue
            while len(seen.content) <= index:
                seen.content.append({})
            known = seen.content[index]
            for key, value in part.items():
                if value is not None or key not in known:
                    known[key] = copy.deepcopy(value)


def _remember(ids: OrderedDict[str, None], item: str) -> None:
    ids[item] = None
    while len(ids) > _OUTPUTS_KEPT:
        ids.popitem(last=False)


def _call_item(it: SeenItem) -> dict[str, Any]:
    return {
        "id": it.id,
        "type": "function_call",
        "call_id": it.call_id,
        "name": it.name,
        "arguments": it.arguments,
    }


# -- the restore --------------------------------------------------------------------------


@dataclasses.dataclass
class RestorePlan:
    """The items to create in a new session, in order (``kinds[i]`` says what
    ``items[i]`` is), and what was left out."""

    items: list[dict[str, Any]]
    kinds: list[str]
    not_restored: list[NotRestored]

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for kind in self.kinds:
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def plan_restore(seen: Iterable[SeenItem], max_items: int = 500) -> RestorePlan:
    """What a new session is given: see the module docstring. ``max_items``: only the
    newest items are considered (the rest are listed as not restored)."""
    items = list(seen)
    older = items[: max(0, len(items) - max_items)] if max_items >= 0 else []
    window = items[len(older) :]
    not_restored = [NotRestored(id=it.id, type=it.type, reason="older") for it in older]
    outputs = {it.call_id for it in window if it.type == "function_call_output" and it.done}
    calls = {
        it.call_id
        for it in window
        if it.type == "function_call" and it.call_id in outputs and _complete_call(it)
    }
    plan = RestorePlan([], [], not_restored)
    for it in window:
        item, kind, why = _restored(it, calls)
        if item is None:
            plan.not_restored.append(NotRestored(id=it.id, type=it.type, reason=why))
            continue
        plan.items.append(item)
        plan.kinds.append(kind)
    return plan


def _complete_call(it: SeenItem) -> bool:
    return it.done and it.name is not None and it.arguments is not None


def _restored(it: SeenItem, calls: set[str | None]) -> tuple[dict[str, Any] | None, str, str]:
    """``(item to create, its kind, why not)``."""
    if not it.done:
        return None, "", "incomplete"
    if it.type == "function_call":
        if it.call_id not in calls:
            why = "incomplete" if not _complete_call(it) else "no output"
            return None, "", why
        return _call_item(it), "function_calls", ""
    if it.type == "function_call_output":
        if it.call_id not in calls or it.output is None:
            return None, "", "its call is not restored"
        output = {"id": it.id, "type": "function_call_output", "call_id": it.call_id}
        return {**output, "output": it.output}, "function_call_outputs", ""
    if it.type != "message" or it.role not in ("user", "assistant", "system"):
        return None, "", "not a message, a call or an output"
    if it.truncated:
        return None, "", "truncated (what the user heard of it is unknown)"
    parts, audio, missing = _message_parts(it)
    if not parts:
        return None, "", "audio without a transcript" if missing else "empty"
    item = {"id": it.id, "type": "message", "role": it.role, "content": parts}
    if audio:
        return item, f"{it.role}_audio_as_text", ""
    return item, f"{it.role}_messages", ""


def _message_parts(it: SeenItem) -> tuple[list[dict[str, Any]], bool, bool]:
    """The restored content: ``(parts, from audio, audio with no transcript)``."""
    text_type = "output_text" if it.role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = []
    audio = missing = False
    for part in it.content:
        kind = part.get("type")
        if kind in _USER_TEXT or kind in _ASSISTANT_TEXT:
            text = part.get("text")
            if isinstance(text, str) and text:
                parts.append({"type": text_type, "text": text})
        elif kind in _AUDIO:
            transcript = part.get("transcript")
            if isinstance(transcript, str) and transcript.strip():
                parts.append({"type": text_type, "text": transcript})
                audio = True
            else:
                missing = True
        elif kind == "input_image" and it.role == "user" and part.get("image_url"):
            image = {"type": "input_image", "image_url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append(image)
    return parts, audio, missing


# -- a re-attached sideband ---------------------------------------------------------------


def gap_calls(log: ConversationLog, found: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Of the server's items ``found`` after a re-attach, the function calls owed an
    answer: complete, never seen complete by this client, and with no output seen or
    written. (Calls the client saw complete are its tool runner's, which answers each
    once.)"""
    owed: list[dict[str, Any]] = []
    for item in found:
        call_id = item.get("call_id")
        if item.get("type") != "function_call" or not isinstance(call_id, str):
            continue
        if log.answered(call_id) or log.seen_complete_call(call_id):
            continue
        if not isinstance(item.get("name"), str) or not isinstance(item.get("arguments"), str):
            continue
        owed.append(
            {
                "id": item.get("id"),
                "type": "function_call",
                "call_id": call_id,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        )
    return owed


# -- the session config -------------------------------------------------------------------


def merge_session(base: Mapping[str, Any], updates: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``base`` with each update applied in order, as the server merges them: objects
    field by field, anything else (lists such as ``tools``, scalars, ``null``) replaced."""
    merged = copy.deepcopy(dict(base))
    for update in updates:
        merged = _merge(merged, update)
    return merged


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(into)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
