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
* **Idle timeouts** (``turn_detection.idle_timeout_ms``): the server announces a
  response of its own with ``input_audio_buffer.timeout_triggered``, commits the
  silence as a user turn and starts the response. It is a server-started response like
  VAD's - the gate holds it as ``active`` from its ``response.created``, and a create
  of ours that crosses it is rejected and re-armed - and with client-driven turns that
  committed turn is not answered again by the client.
* **Cancels.** ``response.cancel`` events are remembered (bounded), so the server's
  ``response_cancel_not_active`` frees the gate.
* **Tool rounds.** The :class:`~rtclient.tools.ToolRunner` (fed by :meth:`step`, on
  the dispatcher thread) returns steps; an output becomes ``Send(kind="output")``, a complete round
  one gate request for its follow-up, a failed round the round waiter's error. A
  round's reader (``ask``) gets ``(calls, follow-up future)`` under ``("followup", id)``.
* **Out of band** (``conversation: "none"``): its own create, outside the gate, with
  its id in the response metadata; its done (or error) settles ``("oob", id)``.
* **Reconnects** (``RealtimeClient(reconnect=...)``; :mod:`rtclient.core.restore`).
  With a :class:`~rtclient.core.restore.ConversationLog` the core records what it sees
  and writes. One core serves one connection: when it is lost, :meth:`detach` closes
  its gate (every waiting request fails with the shell's error; a create is never
  replayed) and says which requests were waiting. A re-attached sideband's new core
  shares the tool runner (the call's tool rounds go on) and takes over the rounds that
  completed while detached (:meth:`hand_over`, :meth:`adopt`); :meth:`recover` hands
  the runner calls found on the server that nobody saw, :meth:`finish_rounds` rounds
  whose ``response.done`` was missed - the runner answers each call once, whatever
  connection carries it.

The core is thread-safe: each method may be called from the loop thread, the
dispatcher, a tool thread or a caller; state is behind the gate's lock, the runner's
lock and one lock of its own, none held while an effect is applied.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from rtclient import logs
from rtclient.core import events as ev
from rtclient.core.gate import (
    TICKET_METADATA_KEY,
    ResponseGate,
    Ticket,
    Trigger,
    is_out_of_band,
)
from rtclient.core.restore import ConversationLog
from rtclient.effects import Dispatch, Effect, Later, Lost, Send, Settle, Start
from rtclient.errors import (
    ClosedError,
    MessageTooLargeError,
    SendRefusedError,
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
    "conversation.item.create": "conversation.item.added",  # an item created with its id
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
        self,
        gate: ResponseGate,
        tools: ToolRunner,
        *,
        client_turns: bool = False,
        log: ConversationLog | None = None,
        observers: list[Observer] | None = None,
    ) -> None:
        self.gate = gate
        self.tools = tools
        self.client_turns = client_turns
        self.observers: list[Observer] = observers if observers is not None else []
        # Reconnects: what this client saw and wrote, the requests still waiting, the
        # rounds that completed while detached, errors a probe expects.
        self.log = log
        self._waiting: list[Trigger] = []
        self._detached = False
        self._deferred: list[RoundComplete] = []
        self._successor: RealtimeProtocol | None = None
        self._quiet: dict[str, frozenset[str]] = {}
        self._recovered = 0
        self._lock = threading.Lock()
        self._cancels: OrderedDict[str, str] = OrderedDict()  # cancel event_id -> response
        # Requests waiting for their answer: event_id -> (answering type, item id or None).
        self._expected: dict[str, tuple[str, str | None]] = {}
        # Turns an idle timeout committed (the server answers them), and its responses
        # announced but not yet created.
        self._idle_items: OrderedDict[str, None] = OrderedDict()
        self._idle_announced = 0
        self._watchdog_armed = False  # a watchdog timer is on its way (at most one)
        self.counters = {
            "events_received": 0,
            "malformed_events": 0,
            "unknown_events": 0,
            "creates_sent": 0,
            "server_errors": 0,
            "client_turns_reasserted": 0,
            "server_started_responses": 0,
            "idle_timeouts": 0,
        }

    # -- requests (caller threads) ---------------------------------------------------

    def request(
        self, reason: str, params: Mapping[str, Any] | None = None
    ) -> tuple[Trigger, list[Effect]]:
        """Ask the gate for a response; the trigger's future resolves with its done.
        Raises :class:`ClosedError` once the session is closed."""
        trigger = Trigger(reason, dict(params) if params else None)
        ticket = self.gate.request(trigger)
        self._note_waiting(trigger)
        return trigger, self._fire(ticket)

    def out_of_band(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """A create outside the conversation and the gate; its waiter is ``("oob", id)``."""
        event = ev.with_event_id({"type": "response.create"})
        oob_id: str = event["event_id"]
        metadata = {**(params.get("metadata") or {}), OOB_METADATA_KEY: oob_id}
        event["response"] = {**params, "metadata": metadata}
        return oob_id, event

    def expect_answer(
        self, event: Mapping[str, Any], item_id: str | None, quiet: frozenset[str] = frozenset()
    ) -> None:
        """``event`` (a key of :data:`ANSWERED_BY`) waits for its answer about ``item_id``.
        An error with a code in ``quiet`` is an answer the caller expects (a probe): it
        is logged at DEBUG, not ERROR."""
        with self._lock:
            self._expected[event["event_id"]] = (ANSWERED_BY[event["type"]], item_id)
            if quiet:
                self._quiet[event["event_id"]] = quiet

    def forget_answer(self, event_id: str) -> None:
        with self._lock:
            self._expected.pop(event_id, None)
            self._quiet.pop(event_id, None)

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
        create claimed while the timer fires is never left unwatched. The timer belongs
        to this core's gate: a tick that reaches another core's (a reconnect's) is
        dropped."""
        with self._lock:
            if self._watchdog_armed:
                return []
            due = self.gate.deadline_in()
            if due is None:
                return []
            self._watchdog_armed = True
        return [Later(due, "watchdog", self.gate)]

    def close(self, error: BaseException) -> None:
        self.gate.close(error)

    # -- reconnects ----------------------------------------------------------------

    def detach(self, error: BaseException, *, defer_rounds: bool = False) -> list[Trigger]:
        """This core's connection is gone: close the gate with ``error`` (every request
        waiting on it fails; nothing is replayed) and return those requests. With
        ``defer_rounds`` (a sideband: the call goes on) a tool round completing from now
        on keeps its follow-up for the next connection's core (:meth:`take_deferred`)."""
        with self._lock:
            self._detached = defer_rounds
            waiting = [t for t in self._waiting if not t.future.done()]
            self._waiting.clear()
        self.gate.close(error)
        return waiting

    def hand_over(self, successor: RealtimeProtocol) -> list[RoundComplete]:
        """The rounds that completed while detached (each handed out once); a round that
        completes here from now on goes straight to ``successor``."""
        with self._lock:
            deferred, self._deferred = self._deferred, []
            self._successor = successor
            return deferred

    def adopt(self, rounds: list[RoundComplete]) -> list[Effect]:
        """Request, through this core's gate, the follow-ups of ``rounds`` (completed
        while the previous connection was lost: never requested, so not a replay)."""
        fx: list[Effect] = []
        for done in rounds:
            fx.extend(self._followup(done))
        return fx

    def recover(self, calls: list[dict[str, Any]]) -> list[Effect]:
        """Hand the runner ``calls`` (``function_call`` items found on the server that no
        event of this client announced) as one round: each is run and answered once
        (the runner skips a call it knows), then the round's one follow-up."""
        if not calls:
            return []
        with self._lock:
            self._recovered += 1
            rid = f"rtclient_recovered_{self._recovered}"
        return self.finish_rounds({rid: calls})

    def finish_rounds(self, rounds: Mapping[str, list[dict[str, Any]]]) -> list[Effect]:
        """Tell the runner each response of ``rounds`` is done, with its calls (a
        ``response.done`` a re-attached sideband missed): its round completes once every
        call has an output, and its follow-up is requested. A done the runner has
        already seen changes nothing."""
        fx: list[Effect] = []
        for rid, calls in rounds.items():
            done = {"type": "response.done", "response": {"id": rid, "output": list(calls)}}
            fx.extend(self._steps(self.tools.on_event(done)))
        return fx

    def _note_waiting(self, trigger: Trigger) -> None:
        """Keep the request (only with a log: a reconnect asks which were waiting)."""
        if self.log is None:
            return
        with self._lock:
            self._waiting = [t for t in self._waiting if not t.future.done()]
            self._waiting.append(trigger)

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
            retry = not isinstance(error, ClosedError | MessageTooLargeError | SendRefusedError)
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
        if self.log is not None:
            self.log.client_event(event)

    def finished(
        self, start: Start, future: Any, submit_error: BaseException | None
    ) -> list[Effect]:
        """A tool ended on the executor (or could not be submitted)."""
        return self._steps(self.tools.finished(start.work, future, submit_error))

    def timer(self, later: Later) -> list[Effect]:
        if later.kind == "watchdog":
            if later.ref is not None and later.ref is not self.gate:
                return []  # another core's gate (before a reconnect): not ours to tick
            with self._lock:
                self._watchdog_armed = False
            if self.gate.closed:
                return []
            self.gate.tick()
            return self.watchdog()  # the next deadline, if anything is still unconfirmed
        return self._steps(self.tools.timer(later))

    # -- server events ---------------------------------------------------------------

    def receive(self, text: str | bytes | dict[str, Any]) -> list[Effect]:
        """One server message (loop thread, in arrival order): its text, or the dict a
        transport already decoded from it."""
        try:
            event = ev.decode(text)
        except ev.MalformedEventError as exc:
            self.counters["malformed_events"] += 1
            logger.warning("[SERVER_EVENT] malformed message skipped: {}", exc)
            return []
        self.counters["events_received"] += 1
        logs.trace_server_event(event)  # before the gate's lines for it: server order
        if self.log is not None:
            self.log.server_event(event)
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
        elif kind == "input_audio_buffer.timeout_triggered":
            self._idle_timeout(event)
        elif kind == "input_audio_buffer.committed" and self.client_turns:
            if not self._committed_by_idle_timeout(event):
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
        with self._lock:
            quiet = self._quiet.pop(error.event_id, frozenset()) if error.event_id else None
        if quiet and error.code in quiet:
            logger.debug("[SERVER_ERROR] {} (expected) for {}", error.code, error.event_id)
        elif error.event_id is not None and not error.event_id.startswith(ev.EVENT_ID_PREFIXES):
            # another connection's event (a sideband sees the browser's errors): not ours
            logger.debug(
                "[SERVER_ERROR] {} for another connection's {}", error.code, error.event_id
            )
            return []
        else:
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
                self._quiet.pop(event_id, None)
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
        if not ours and not is_out_of_band(response) and self._idle_announced > 0:
            with self._lock:
                self._idle_announced -= 1
            logger.info("[CLIENT_TURNS] response {} answers an idle timeout", response.get("id"))
            return
        if not ours and not is_out_of_band(response):
            self.counters["server_started_responses"] += 1
            logger.warning(
                "[CLIENT_TURNS] response {} was started by someone else (the server's VAD "
                "or another connection) although this client drives the turns",
                response.get("id"),
            )

    def _idle_timeout(self, event: dict[str, Any]) -> None:
        """``input_audio_buffer.timeout_triggered``: the user was silent for
        ``idle_timeout_ms``; the server commits that silence as a turn and answers it with
        a response of its own (the gate learns of it from its ``response.created``)."""
        self.counters["idle_timeouts"] += 1
        item_id = event.get("item_id")
        if self.client_turns:  # what the turn's committed event and response will need
            with self._lock:
                self._idle_announced += 1
                if isinstance(item_id, str):
                    self._idle_items[item_id] = None
                    while len(self._idle_items) > _CANCELS_KEPT:
                        self._idle_items.popitem(last=False)
        logger.info(
            "[IDLE_TIMEOUT] no speech from {} to {} ms: the server answers turn {}",
            event.get("audio_start_ms"),
            event.get("audio_end_ms"),
            item_id,
        )

    def _committed_by_idle_timeout(self, event: dict[str, Any]) -> bool:
        """Whether a committed turn is an idle timeout's: the server answers it itself, so
        a client-turns client must not answer it a second time."""
        item_id = event.get("item_id")
        with self._lock:
            if not isinstance(item_id, str) or item_id not in self._idle_items:
                return False
            del self._idle_items[item_id]
            return True

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
                if self.log is not None:  # an id makes a resend idempotent (a duplicate
                    event["item"]["id"] = output_item_id(step.call.call_id)  # is refused)
                fx.append(Send(event, kind="output", ref=step, written=True))
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
        with self._lock:
            successor = self._successor
            if self._detached and successor is None:  # the call goes on: the next core asks
                self._deferred.append(done)
                return []
        if self._detached and successor is not None:
            return successor._followup(done)
        trigger = Trigger(f"tool_calls:{done.response_id}")
        for observer in self.observers:
            observer.round_complete(trigger)  # before the gate: its create may leave at once
        try:
            ticket = self.gate.request(trigger)
        except ClosedError as exc:
            return [Settle(key, exc, keep=True)]
        self._note_waiting(trigger)
        return [Settle(key, (done.calls, trigger.future), keep=True), *self._fire(ticket)]


def output_item_id(call_id: str) -> str:
    """The item id of this client's output for ``call_id``: the same on every send, so
    the server refuses a second copy (``item_create_duplicate_item_id``) - a resend
    after a lost connection cannot answer a call twice. At most 32 characters."""
    return "rtco_" + hashlib.blake2b(call_id.encode(), digest_size=12).hexdigest()


def _turn_detection(session: Any) -> dict[str, Any] | None:
    """The session's ``audio.input.turn_detection`` if it is an object (VAD on)."""
    audio = session.get("audio") if isinstance(session, dict) else None
    audio_input = audio.get("input") if isinstance(audio, dict) else None
    detection = audio_input.get("turn_detection") if isinstance(audio_input, dict) else None
    return dict(detection) if isinstance(detection, dict) else None
