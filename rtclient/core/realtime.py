"""The Realtime protocol core: server events in, effects out. No threads, no I/O.

Everything that decides what a Realtime session does lives here; the shell
(:class:`rtclient.client.RealtimeClient`) only carries events and applies effects
(:mod:`rtclient.effects`). What it decides:

* **Firing a create.** A request goes to the :class:`~rtclient.core.gate.ResponseGate`;
  a claimed ticket becomes ``Send(response.create, kind="create")``. When the outcome
  of the write comes back (:meth:`RealtimeProtocol.sent`), success is counted and
  logged; a failure rolls the ticket back, and the gate says what to send instead.
* **The confirm watchdog** runs only while a create is unconfirmed: the first claimed
  ticket arms one timer (``Later(kind="watchdog")``) for the gate's deadline; when it
  fires, the gate looks (``tick``) and the timer is armed again for the next deadline,
  or not at all when nothing is outstanding. An idle session has no timer (a timer a
  second per session was 2.9% of a core for 1,000 idle sessions).
* **Routing server events** (loop thread, in order): ``response.created``,
  ``response.done`` and ``error`` go to the gate first, so a coalesced create after a
  ``response.done`` leaves with no thread hop; a done settles the waiters of its
  response (``("done", id)``) and of an out-of-band request; an error settles the
  request it names; answers (``session.updated``, ``conversation.item.*``) settle the
  oldest request waiting for them; with client-driven turns a committed turn requests
  its answer. Every event is then offered to the dispatcher.
* **Cancels.** ``response.cancel`` events are remembered (bounded), so the server's
  ``response_cancel_not_active`` frees the gate.
* **Tool rounds.** The :class:`~rtclient.tools.ToolRunner` (fed by :meth:`step`, on
  the dispatcher thread) returns steps; an output becomes ``Send(kind="output")``, a complete round
  one gate request for its follow-up, a failed round the round waiter's error. A
  round's reader (``ask``) gets ``(calls, follow-up future)`` under ``("followup", id)``.
* **Out of band** (``conversation: "none"``): its own create, outside the gate, with
  its id in the response metadata; its done (or error) settles ``("oob", id)``.

The core is thread-safe: each method may be called from the loop thread, the
dispatcher, a tool thread or a caller; state is behind the gate's lock, the runner's
lock and one lock of its own, none held while an effect is applied.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from rtclient.core import events as ev
from rtclient.core.gate import (
    TICKET_METADATA_KEY,
    ResponseGate,
    Ticket,
    Trigger,
    is_out_of_band,
)
from rtclient.effects import Dispatch, Effect, Later, Lost, Send, Settle, Start
from rtclient.errors import (
    ClosedError,
    MessageTooLargeError,
    ServerError,
    SessionExpiredError,
)
from rtclient.logs import logger
from rtclient.tools import TOOL_EVENTS, OutputReady, RoundComplete, RoundFailed, ToolRunner
from rtclient.tools.runner import Step

# The client events whose answer a caller waits for, and the server event answering each.
ANSWERED_BY = {
    "session.update": "session.updated",
    "conversation.item.retrieve": "conversation.item.retrieved",
    "conversation.item.delete": "conversation.item.deleted",
    "conversation.item.truncate": "conversation.item.truncated",
}
_ANSWERS = frozenset(ANSWERED_BY.values())
_CANCELS_KEPT = 64
OOB_METADATA_KEY = "rtclient_oob"


class Observer(Protocol):
    """Moments worth timing (``rtclient.metrics`` is one); called where they happen,
    must be quick and must not raise."""

    def round_complete(self, trigger: Trigger) -> None: ...
    def create_sent(self, ticket: Ticket) -> None: ...
    def response_created(self, event: Mapping[str, Any]) -> None: ...


class RealtimeProtocol:
    """One Realtime session's decisions. See the module docstring."""

    def __init__(
        self, gate: ResponseGate, tools: ToolRunner, *, client_turns: bool = False
    ) -> None:
        self.gate = gate
        self.tools = tools
        self.client_turns = client_turns
        self.observers: list[Observer] = []
        self._lock = threading.Lock()
        self._cancels: OrderedDict[str, str] = OrderedDict()  # cancel event_id -> response
        # Requests waiting for their answer: event_id -> (answering type, item id or None).
        self._expected: dict[str, tuple[str, str | None]] = {}
        self._watchdog_armed = False  # a watchdog timer is on its way (at most one)
        self.counters = {
            "events_received": 0,
            "malformed_events": 0,
            "unknown_events": 0,
            "creates_sent": 0,
            "server_errors": 0,
            "client_turns_reasserted": 0,
            "server_started_responses": 0,
        }

    # -- requests (caller threads) ---------------------------------------------------

    def request(
        self, reason: str, params: Mapping[str, Any] | None = None
    ) -> tuple[Trigger, list[Effect]]:
        """Ask the gate for a response; the trigger's future resolves with its done.
        Raises :class:`ClosedError` once the session is closed."""
        trigger = Trigger(reason, dict(params) if params else None)
        return trigger, self._fire(self.gate.request(trigger))

    def out_of_band(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """A create outside the conversation and the gate; its waiter is ``("oob", id)``."""
        event = ev.with_event_id({"type": "response.create"})
        oob_id: str = event["event_id"]
        metadata = {**(params.get("metadata") or {}), OOB_METADATA_KEY: oob_id}
        event["response"] = {**params, "metadata": metadata}
        return oob_id, event

    def expect_answer(self, event: Mapping[str, Any], item_id: str | None) -> None:
        """``event`` (a key of :data:`ANSWERED_BY`) waits for its answer about ``item_id``."""
        with self._lock:
            self._expected[event["event_id"]] = (ANSWERED_BY[event["type"]], item_id)

    def forget_answer(self, event_id: str) -> None:
        with self._lock:
            self._expected.pop(event_id, None)

    def interrupt(self) -> str | None:
        """The response to cancel now, if any (the gate marks an unconfirmed create of
        ours to be cancelled on creation)."""
        return self.gate.cancel()

    def cancel_event(self, response_id: str) -> dict[str, Any]:
        """A ``response.cancel``, remembered (bounded) so that its error can be matched."""
        event = ev.response_cancel(response_id)
        with self._lock:
            self._cancels[event["event_id"]] = response_id
            while len(self._cancels) > _CANCELS_KEPT:
                self._cancels.popitem(last=False)
        return event

    def cancel_failed(self, response_id: str) -> None:
        """A cancel did not reach the wire: a later interrupt tries again."""
        self.gate.cancel_failed(response_id)

    def watchdog(self) -> list[Effect]:
        """The confirm watchdog's timer, if a create awaits confirmation and no timer is
        on its way (it reports; it never sends). The check of the gate's deadline and
        the mark are one step under the lock that :meth:`timer` decides under, so a
        create claimed while the timer fires is never left unwatched."""
        with self._lock:
            if self._watchdog_armed:
                return []
            due = self.gate.deadline_in()
            if due is None:
                return []
            self._watchdog_armed = True
        return [Later(due, "watchdog")]

    def close(self, error: BaseException) -> None:
        self.gate.close(error)

    def stats(self) -> dict[str, int]:
        gate = self.gate.stats().as_dict()
        return {**gate, **vars(self.tools.stats), **self.counters}

    # -- outcomes the shell reports --------------------------------------------------

    def sent(self, send: Send, error: BaseException | None) -> list[Effect]:
        """The outcome of writing ``send`` (``None``: on the wire)."""
        if send.kind == "create":
            ticket: Ticket = send.ref
            if error is None:
                for observer in self.observers:
                    observer.create_sent(ticket)
                logger.info("[RESPONSE_CREATE] {} sent", ticket.event_id)
                return []
            retry = not isinstance(error, ClosedError | MessageTooLargeError)
            return self._fire(self.gate.rollback(ticket, error, retry=retry))
        if send.kind == "cancel":
            if error is None:
                logger.info("[RESPONSE_CANCEL] cancel of {} sent", send.ref)
            else:
                logger.warning("[SEND] cancel of {} not sent", send.ref)
                self.gate.cancel_failed(send.ref)
            return []
        if send.kind == "output":
            return self._steps(self.tools.delivered(send.ref, error))
        return []

    def written(self, event: Mapping[str, Any]) -> None:
        """``event`` is on the wire (loop thread, right after the write: only counts, so
        nothing here can raise and make a sent create look failed)."""
        if event.get("type") == "response.create":
            self.counters["creates_sent"] += 1

    def finished(
        self, start: Start, future: Any, submit_error: BaseException | None
    ) -> list[Effect]:
        """A tool ended on the executor (or could not be submitted)."""
        return self._steps(self.tools.finished(start.work, future, submit_error))

    def timer(self, later: Later) -> list[Effect]:
        if later.kind == "watchdog":
            with self._lock:
                self._watchdog_armed = False
            if self.gate.closed:
                return []
            self.gate.tick()
            return self.watchdog()  # the next deadline, if anything is still unconfirmed
        return self._steps(self.tools.timer(later))

    # -- server events ---------------------------------------------------------------

    def receive(self, text: str | bytes) -> list[Effect]:
        """One server message (loop thread, in arrival order)."""
        try:
            event = ev.decode(text)
        except ev.MalformedEventError as exc:
            self.counters["malformed_events"] += 1
            logger.warning("[SERVER_EVENT] malformed message skipped: {}", exc)
            return []
        self.counters["events_received"] += 1
        kind = event["type"]
        if kind not in ev.SERVER_EVENT_TYPES:
            self.counters["unknown_events"] += 1
        fx: list[Effect] = []
        if kind in ("response.created", "response.done", "error"):
            gate_fx = self.gate.on_server_event(event)
            if kind == "response.created":
                for observer in self.observers:
                    observer.response_created(event)
                if self.client_turns:
                    self._note_server_started(event)
            fx.extend(self._fire(gate_fx.send))
            if gate_fx.cancel is not None:
                fx.append(self._cancel(gate_fx.cancel))
            if kind == "response.done":
                fx.extend(self._response_done(event))
            elif kind == "error":
                fx.extend(self._error(event))
        elif kind == "session.created":
            fx.append(Settle(("session", "created"), event, keep=True))
        elif kind == "input_audio_buffer.committed" and self.client_turns:
            fx.extend(self._respond_to_turn(event))
        elif kind in _ANSWERS:
            fx.extend(self._answer(kind, event))
            if kind == "session.updated":
                fx.extend(self._keep_client_turns(event))
        fx.append(Dispatch(event))
        return fx

    def step(self, event: Mapping[str, Any]) -> list[Effect]:
        """A server event for the tools (dispatcher thread, in order): starting a tool
        is kept off the loop thread, so a slow ``executor.submit`` never stalls it."""
        return self._steps(self.tools.on_event(event))

    def step_wants(self, kind: str) -> bool:
        """Whether :meth:`step` reads events of this type (with no tools: none)."""
        return bool(self.tools.specs) and kind in TOOL_EVENTS

    # -- internals -------------------------------------------------------------------

    def _fire(self, ticket: Ticket | None) -> list[Effect]:
        """A claimed ticket's create. A failure of its write comes back to :meth:`sent`;
        the bridge being full is one such failure."""
        if ticket is None:
            return []
        return [Send(ev.response_create(ticket), kind="create", ref=ticket), *self.watchdog()]

    def _cancel(self, response_id: str) -> Send:
        return Send(self.cancel_event(response_id), kind="cancel", ref=response_id)

    def _response_done(self, event: dict[str, Any]) -> list[Effect]:
        response = event.get("response")
        if not isinstance(response, dict):
            return []
        fx: list[Effect] = []
        rid = response.get("id")
        if isinstance(rid, str):
            fx.append(Settle(("done", rid), event, keep=True))
        metadata = response.get("metadata") or {}
        oob_id = metadata.get(OOB_METADATA_KEY) if isinstance(metadata, dict) else None
        if isinstance(oob_id, str):
            fx.append(Settle(("oob", oob_id), event))
        return fx

    def _error(self, event: dict[str, Any]) -> list[Effect]:
        error = ServerError.from_event(event)
        self.counters["server_errors"] += 1
        if error.event_id is not None and not error.event_id.startswith(ev.EVENT_ID_PREFIXES):
            # another connection's event (a sideband sees the browser's errors): not ours
            logger.debug(
                "[SERVER_ERROR] {} for another connection's {}", error.code, error.event_id
            )
            return []
        logger.error(
            "[SERVER_ERROR] {} {} (event_id={})",
            error.code or error.type,
            error.message,
            error.event_id,
        )
        fx: list[Effect] = []
        if error.event_id:
            with self._lock:
                cancelled = self._cancels.pop(error.event_id, None)
                self._expected.pop(error.event_id, None)
            fx.append(Settle(("oob", error.event_id), error))
            fx.append(Settle(("request", error.event_id), error))
            if cancelled is not None and error.code == "response_cancel_not_active":
                # the response we believed active is over on the server: free the gate
                fx.extend(self._fire(self.gate.cancel_not_active(cancelled)))
        if isinstance(error, SessionExpiredError):
            fx.append(Lost(error))  # close() still hangs up and releases the call
        return fx

    def _answer(self, kind: str, event: dict[str, Any]) -> list[Effect]:
        """A server event answering a request: settle the oldest request waiting for it,
        for that item."""
        if kind == "session.updated":
            item_id = None
        else:
            item = event.get("item")
            found = item.get("id") if isinstance(item, dict) else event.get("item_id")
            if not isinstance(found, str):
                return []
            item_id = found
        key = (kind, item_id)
        with self._lock:
            event_id = next((e for e, want in self._expected.items() if want == key), None)
            if event_id is not None:
                del self._expected[event_id]
        return [] if event_id is None else [Settle(("request", event_id), event)]

    def _keep_client_turns(self, event: dict[str, Any]) -> list[Effect]:
        """Client-driven turns stay client-driven: if a ``session.update`` from anywhere
        (a raw ``send_event``, the browser, another sideband) turned the server's own
        responses back on, say so and turn them off again - otherwise every turn would
        be answered twice (the server's reply, then ours, rejected and re-armed).
        ``session.created`` is not watched: it always precedes the client's own config."""
        if not self.client_turns:
            return []
        detection = _turn_detection(event.get("session"))
        if detection is None or detection.get("create_response") is False:
            return []
        self.counters["client_turns_reasserted"] += 1
        logger.warning(
            "[CLIENT_TURNS] a session.update turned the server's own responses back on "
            "(turn_detection.create_response); re-asserting create_response=false"
        )
        session = ev.with_client_turns(
            {"type": "realtime", "audio": {"input": {"turn_detection": detection}}}
        )
        return [Send(ev.session_update(session), kind="plain", report=False)]

    def _note_server_started(self, event: dict[str, Any]) -> None:
        """With client-driven turns every response should be ours: count and warn about
        one that is not (unless it is out of band, which answers no turn)."""
        response = event.get("response")
        if not isinstance(response, dict):
            return
        metadata = response.get("metadata")
        ours = isinstance(metadata, dict) and (
            TICKET_METADATA_KEY in metadata or OOB_METADATA_KEY in metadata
        )
        if not ours and not is_out_of_band(response):
            self.counters["server_started_responses"] += 1
            logger.warning(
                "[CLIENT_TURNS] response {} was started by someone else (the server's VAD "
                "or another connection) although this client drives the turns",
                response.get("id"),
            )

    def _respond_to_turn(self, event: dict[str, Any]) -> list[Effect]:
        """Client-driven turns: the server committed the user's turn and starts nothing
        itself; we request the answer through the gate (loop thread, no hop)."""
        try:
            _, fx = self.request(f"user_turn:{event.get('item_id')}")
        except ClosedError:
            return []
        return fx

    def _steps(self, steps: list[Step]) -> list[Effect]:
        """The runner's steps as effects: outputs to send, rounds to follow up."""
        fx: list[Effect] = []
        for step in steps:
            if isinstance(step, OutputReady):
                event = ev.function_call_output(step.call.call_id, step.text)
                fx.append(Send(event, kind="output", ref=step))
            elif isinstance(step, RoundComplete):
                fx.extend(self._followup(step))
            elif isinstance(step, RoundFailed):
                fx.append(Settle(("followup", step.response_id), step.error, keep=True))
            else:
                fx.append(step)
        return fx

    def _followup(self, done: RoundComplete) -> list[Effect]:
        """A round is complete: request its one follow-up through the gate, and tell the
        round's reader ``(calls, the follow-up's future)``."""
        key = ("followup", done.response_id)
        if not any(c.wants_response for c in done.calls):
            return [Settle(key, (done.calls, None), keep=True)]
        trigger = Trigger(f"tool_calls:{done.response_id}")
        for observer in self.observers:
            observer.round_complete(trigger)  # before the gate: its create may leave at once
        try:
            ticket = self.gate.request(trigger)
        except ClosedError as exc:
            return [Settle(key, exc, keep=True)]
        return [Settle(key, (done.calls, trigger.future), keep=True), *self._fire(ticket)]


def _turn_detection(session: Any) -> dict[str, Any] | None:
    """The session's ``audio.input.turn_detection`` if it is an object (VAD on)."""
    audio = session.get("audio") if isinstance(session, dict) else None
    audio_input = audio.get("input") if isinstance(audio, dict) else None
    detection = audio_input.get("turn_detection") if isinstance(audio_input, dict) else None
    return dict(detection) if isinstance(detection, dict) else None
