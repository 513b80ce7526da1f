"""The response gate: at most one ``response.create`` in flight, and no trigger lost.

Theory of operation
-------------------
The Realtime API lets one response at a time write to the default conversation; a
second ``response.create`` gets ``conversation_already_has_active_response``. The RCA
(a production voice agent) shows how a single ``responseInProgress`` flag that is
checked, then sent, then set *later* on another thread lets two tool threads both see
"free" and both send. This module is the fix, in two layers:

* :class:`GateMachine` - a pure state machine (no lock, no clock, no I/O, like h11's
  ``_state.py``). Every input is a method call; every output is an :class:`Effects`
  value: a ticket to send, a response to cancel, waiters to resolve or fail, and log
  notes. Time is passed in as ``now``; the machine never reads a clock.
* :class:`ResponseGate` - the machine behind one ``threading.Lock``. Lock rule: the
  lock is held only while the machine computes; futures are resolved, logs written and
  events sent *after* it is released, so no thread ever blocks or runs user code
  (future callbacks) while holding it. The loop thread needs the same lock to process
  ``response.done``; a holder that blocked would stall the conversation.

The state is two slots and a queue - one flag is the RCA's mistake made subtle:

``in_flight``  our ``response.create`` the server has not yet confirmed or rejected.
``active``     the response now writing to the default conversation, ours *or the
               server's* (VAD), by id, with a ``cancelling`` mark.
``pending``    triggers waiting for their turn.

**A create is sent only when both slots are empty**, and the check and the claim of
``in_flight`` are one step (``request`` under the lock: the atomic check-and-set). Why
two slots: a server VAD response may start while our create is on the wire, and its
``response.done`` may arrive *before* our ``response.created``; one flag would read
"free" at that ``done`` and send a second create, which the server rejects.

Transitions (``tests/test_gate_explorer.py`` checks them exhaustively on this code):

====================================  =================================================
event                                 effect
====================================  =================================================
request(trigger), both slots empty    claim ``in_flight`` with a new ticket, send it
request(trigger), otherwise           trigger joins ``pending``; nothing is sent
rollback(ticket) (send failed)        clear ``in_flight``; triggers back to the front of
                                      ``pending``; re-fire within the attempt bound
response.created naming our ticket    clear ``in_flight``; ``active`` = its id; the
                                      ticket's triggers are served by that response
response.created, not ours            ``active`` = its id; ``in_flight`` untouched
error active_response, our ticket     clear ``in_flight``; triggers re-armed (never
                                      dropped); re-fire now if ``active`` is empty and
                                      the response the error names is known done, else
                                      at its ``done`` (an unseen one becomes
                                      ``active``); bounded attempts
other error with our ticket's id      clear ``in_flight``; the ticket's waiters fail
response.done naming our ticket       (its ``response.created`` was lost or is late) as
                                      created, then done: the ticket's triggers are
                                      served and resolved by this done
response.done for ``active``          clear ``active``; resolve its served waiters; if
                                      triggers are pending, claim ONE coalesced ticket
response.done, other id/out-of-band   resolve any waiters it served; gate unchanged
confirm timeout (watchdog, tick)      report once, loudly (``confirm_timeouts``); never
                                      re-send, never free ``in_flight`` (see ``tick``)
cancel()                              ``active`` set and not cancelling: cancel it;
                                      only ``in_flight``: mark its triggers to cancel
                                      the response that serves them (survives a
                                      rejection and re-fire)
cancel_failed(response_id)            the cancel was not sent: clear ``cancelling``
cancel_not_active(response_id)        our cancel of ``active`` was answered "no active
                                      response": free ``active`` (its done was lost),
                                      claim if triggers are pending
close(error)                          CLOSED: every waiter fails; nothing is replayed
====================================  =================================================

Coalescing: plain triggers (tool results, "please respond") that wait together are
merged into one create. A trigger with its own parameters (instructions, tools,
modalities) is never merged; it waits its turn in order. A trigger marked to cancel on
creation is not merged with unmarked ones: the cancel is meant for its answer only.
Out-of-band responses (``conversation: "none"``) bypass the gate entirely.

Attribution: every create carries ``event_id`` = the ticket id and
``response.metadata[TICKET_METADATA_KEY]`` = the same id; the server echoes metadata in
``response.created`` and the ``event_id`` in ``error``. That is how "ours" is known.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from rtclient import logs
from rtclient.errors import (
    ClosedError,
    ResponseRejectedError,
    ServerError,
)
from rtclient.logs import logger

TICKET_METADATA_KEY = "rtclient_ticket"
ACTIVE_RESPONSE_CODE = "conversation_already_has_active_response"

TriggerState = Literal["new", "pending", "in_flight", "served", "done", "failed"]
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
# (level, tag, template, args): formatted and logged only after the lock is released,
# and only if loguru would emit it - the hot path never builds a string for nothing.
Note = tuple[Level, str, str, tuple[Any, ...]]

_FINISHED_KEPT = 64
_STATE = "in_flight={} active={} cancelling={} pending={}"
_RESPONSE_ID = re.compile(r"\bresp_[A-Za-z0-9]+")
_process_tag = f"{os.getpid():x}"


def _new_process() -> None:
    """A forked child tags its tickets with its own pid (see events._new_process)."""
    global _process_tag
    _process_tag = f"{os.getpid():x}"


os.register_at_fork(after_in_child=_new_process)


@dataclass(eq=False)
class Trigger:
    """One wish for a default-conversation response (a tool result, a user turn, ...).

    ``future`` resolves with the ``response.done`` event of the response that served the
    trigger, or fails with a typed error. Only :class:`ResponseGate` resolves it.
    """

    reason: str
    params: Mapping[str, Any] | None = None
    future: Future[dict[str, Any]] = field(default_factory=Future, repr=False)
    attempts: int = 0
    state: TriggerState = "new"
    # interrupt() asked to cancel the response that will serve this trigger (its create
    # was unconfirmed then); kept on the trigger so a rejected, re-fired create keeps it.
    cancel_requested: bool = False

    @property
    def plain(self) -> bool:
        """Plain triggers may share one create; parameterised ones never do."""
        return self.params is None


@dataclass(eq=False, slots=True)
class Ticket:
    """A claimed ``response.create``: its ``event_id`` and the triggers it carries."""

    event_id: str
    triggers: tuple[Trigger, ...]
    params: Mapping[str, Any] | None
    claimed_at: float
    reported: bool = False  # the watchdog has reported it unconfirmed (once)

    @property
    def cancel_requested(self) -> bool:
        return any(t.cancel_requested for t in self.triggers)

    @property
    def reasons(self) -> list[str]:
        return [t.reason for t in self.triggers]


class Effects:
    """What the owner of the machine must do after a transition, outside any lock.

    A plain slotted class, not a dataclass: one is built per decision, on the hot path.
    """

    __slots__ = ("cancel", "failed", "notes", "resolved", "send")

    def __init__(self) -> None:
        self.send: Ticket | None = None
        self.cancel: str | None = None
        # Empty tuples until the first item: most decisions add nothing to them, and
        # three empty lists per decision cost ~0.1 us on the hot path.
        self.resolved: Sequence[tuple[Trigger, dict[str, Any]]] = ()
        self.failed: Sequence[tuple[Trigger, BaseException]] = ()
        self.notes: Sequence[Note] = ()

    def note(self, note: Note) -> None:
        if isinstance(self.notes, list):
            self.notes.append(note)
        else:
            self.notes = [note]

    def resolve(self, trigger: Trigger, event: dict[str, Any]) -> None:
        if isinstance(self.resolved, list):
            self.resolved.append((trigger, event))
        else:
            self.resolved = [(trigger, event)]

    def fail(self, trigger: Trigger, error: BaseException) -> None:
        if isinstance(self.failed, list):
            self.failed.append((trigger, error))
        else:
            self.failed = [(trigger, error)]


@dataclass
class GateStats:
    """Counters. ``lost`` is derived and must always be 0."""

    accepted: int = 0
    creates: int = 0
    coalesced: int = 0
    queued: int = 0
    rejections: int = 0
    rearmed: int = 0
    rollbacks: int = 0
    confirm_timeouts: int = 0
    resolved: int = 0
    failed: int = 0
    outstanding: int = 0

    @property
    def lost(self) -> int:
        return self.accepted - self.resolved - self.failed - self.outstanding

    def as_dict(self) -> dict[str, int]:
        d = dict(self.__dict__)
        d["lost"] = self.lost
        return d


class GateMachine:
    """The pure response gate (see the module docstring). Not thread-safe by itself."""

    def __init__(
        self, *, confirm_timeout: float = 15.0, max_attempts: int = 5, id_prefix: str = ""
    ) -> None:
        if confirm_timeout <= 0 or max_attempts < 1:
            raise ValueError("confirm_timeout must be > 0 and max_attempts >= 1")
        self.confirm_timeout = confirm_timeout
        self.max_attempts = max_attempts
        self.in_flight: Ticket | None = None
        self.active: str | None = None
        self.cancelling = False
        self.pending: deque[Trigger] = deque()
        self.closed: BaseException | None = None
        self._serving: dict[str, list[Trigger]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # recently done ids
        self._ids = itertools.count(1)
        self._prefix = f"rtc_{id_prefix or _process_tag}_{id(self):x}_"
        self.stats = GateStats()
        # Whether to write the hot-path notes (CHECK, QUEUED, COALESCED). The owner sets
        # it from "would anybody log them?"; a pure flag, so the machine stays I/O-free.
        self.diagnostics = True

    # -- queries -------------------------------------------------------------------

    @property
    def free(self) -> bool:
        return self.in_flight is None and self.active is None

    def describe(self) -> str:
        """The state in one line, for the diagnostics."""
        return _STATE.format(*self._state())

    def _state(self) -> tuple[Any, ...]:
        """What ``describe`` shows, unformatted (the hot path defers the formatting)."""
        in_flight = self.in_flight.event_id if self.in_flight else None
        return (in_flight, self.active, self.cancelling, len(self.pending))

    def deadline(self) -> float | None:
        """When the watchdog must next look (``tick``): None if nothing is in flight or
        the create in flight was already reported."""
        if self.in_flight is None or self.in_flight.reported:
            return None
        return self.in_flight.claimed_at + self.confirm_timeout

    def outstanding(self) -> int:
        in_flight = self.in_flight
        carried = sum(t.state == "in_flight" for t in in_flight.triggers) if in_flight else 0
        return len(self.pending) + carried + sum(len(v) for v in self._serving.values())

    def snapshot_stats(self) -> GateStats:
        s = GateStats(**self.stats.__dict__)
        s.outstanding = self.outstanding()
        return s

    # -- inputs --------------------------------------------------------------------

    def request(self, trigger: Trigger, now: float) -> Effects:
        """The atomic check-and-set: claim ``in_flight`` if both slots are empty."""
        if self.closed is not None:
            raise ClosedError(f"the response gate is closed: {self.closed}")
        if trigger.state != "new":
            raise ValueError(f"trigger {trigger.reason!r} was already requested")
        fx = Effects()
        if self.diagnostics:
            fx.note(
                (
                    "DEBUG",
                    "RESPONSE_CREATE_CHECK",
                    _STATE + " for {}",
                    (*self._state(), trigger.reason),
                )
            )
        self.stats.accepted += 1
        if self.in_flight is None and self.active is None:
            if self.pending:  # waiting triggers go first, in order
                trigger.state = "pending"
                self.pending.append(trigger)
                fx.send = self._claim(now, fx)
            else:  # the common case, inlined: this trigger alone, claimed now
                trigger.state = "in_flight"
                fx.send = self.in_flight = Ticket(
                    f"{self._prefix}{next(self._ids)}", (trigger,), trigger.params, now
                )
                self.stats.creates += 1
        else:
            trigger.state = "pending"
            self.pending.append(trigger)
            self.stats.queued += 1
            if self.diagnostics:
                blocker: str | None = self.active
                why = "response {} is active"
                if self.in_flight is not None:
                    why, blocker = "create {} awaits confirmation", self.in_flight.event_id
                fx.note(("INFO", "RESPONSE_QUEUED", "{} queued: " + why, (trigger.reason, blocker)))
        return fx

    def rollback(
        self, ticket: Ticket, error: BaseException, now: float, *, retry: bool = True
    ) -> Effects:
        """The send of ``ticket`` failed: nothing reached the wire, so undo the claim."""
        fx = Effects()
        if self.in_flight is not ticket:
            fx.note(
                ("DEBUG", "RESPONSE_ROLLBACK", "{}", (f"{ticket.event_id} no longer in flight",))
            )
            return fx
        self.in_flight = None
        self.stats.rollbacks += 1
        fx.note(
            (
                "WARNING",
                "RESPONSE_ROLLBACK",
                "{}",
                (f"send of {ticket.event_id} failed: {error!r}",),
            )
        )
        self._rearm(ticket, error, fx, retry=retry)
        fx.send = self._claim(now, fx)
        return fx

    def on_created(
        self, response_id: str, ticket_id: str | None, *, out_of_band: bool, now: float
    ) -> Effects:
        fx = Effects()
        if out_of_band or self.closed is not None:
            return fx
        if response_id in self._finished:  # a duplicate after its done: it is over
            fx.note(("WARNING", "RESPONSE_CREATED", "{}", (f"{response_id} already done",)))
            return fx
        ticket = self._take_in_flight(ticket_id, fx)
        # The active slot may already hold this id (a rejection named it first): then
        # nothing else was in progress.
        was_in_progress = self.active is not None and self.active != response_id
        if was_in_progress:
            fx.note(
                (
                    "WARNING",
                    "RESPONSE_CREATED",
                    "{}",
                    (f"{response_id} created while {self.active} active",),
                )
            )
        self.active, self.cancelling = response_id, False
        owner = ticket.event_id if ticket else "server"
        fx.note(
            (
                "INFO",
                "RESPONSE_CREATED",
                "{}",
                (f"{response_id} by {owner}; was_in_progress={was_in_progress}",),
            )
        )
        if ticket is not None:
            self._serve(ticket, response_id)
            if ticket.cancel_requested:
                self.cancelling = True
                fx.cancel = response_id
        return fx

    def on_done(
        self,
        response_id: str,
        event: dict[str, Any],
        *,
        out_of_band: bool,
        now: float,
        ticket_id: str | None = None,
    ) -> Effects:
        """``ticket_id`` is the ticket the response's metadata names, if any: a done for
        our create whose ``response.created`` never came settles the create here."""
        fx = Effects()
        self._finished[response_id] = None
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.popitem(last=False)
        if not out_of_band and self.closed is None:
            ticket = self._take_in_flight(ticket_id, fx)
            if ticket is not None:
                fx.note(
                    (
                        "WARNING",
                        "RESPONSE_DONE",
                        "{}",
                        (f"{response_id} done for {ticket.event_id}, never seen created",),
                    )
                )
                self._serve(ticket, response_id)
                if self.active is None:
                    self.active = response_id  # cleared just below, like any active done
        for t in self._serving.pop(response_id, []):
            t.state = "done"
            self.stats.resolved += 1
            fx.resolve(t, event)
        if out_of_band or self.closed is not None:
            return fx
        if self.active != response_id:
            fx.note(
                ("DEBUG", "RESPONSE_DONE", "{}", (f"{response_id} is not the active response",))
            )
            return fx
        self.active, self.cancelling = None, False
        fx.note(("INFO", "RESPONSE_DONE", "{}", (f"{response_id} done; {self.describe()}",)))
        fx.send = self._claim(now, fx)
        return fx

    def on_error(
        self, code: str | None, event_id: str | None, error: ServerError, now: float
    ) -> Effects:
        fx = Effects()
        ticket = self.in_flight
        if ticket is None or event_id is None or event_id != ticket.event_id or self.closed:
            return fx  # not about our create (another connection's, or stale): not ours
        self.in_flight = None
        if code == ACTIVE_RESPONSE_CODE:
            self.stats.rejections += 1
            rejected = ResponseRejectedError(
                error.message, code=code, type=error.type, param=error.param, event_id=event_id
            )
            self._rearm(ticket, rejected, fx, retry=True)
            blocker = _blocking_response(error.message)
            adopted = self.active is None and blocker is not None and blocker not in self._finished
            if adopted:
                # The server names a response we have not seen created yet (its
                # response.created is still on the way): it occupies ``active`` now, and
                # its done - not this error - frees the gate. Re-firing now would only
                # be rejected again.
                self.active = blocker
            # The state after the whole transition, blocker included: the line shows
            # the response that is active, not the gate's view before the error named it.
            fx.note(
                (
                    "WARNING",
                    "RESPONSE_REJECTED",
                    "{}",
                    (f"{event_id} rejected ({self.describe()}); re-armed",),
                )
            )
            if adopted:
                fx.note(("INFO", "RESPONSE_QUEUED", "{}", (f"waiting for {blocker} to finish",)))
        else:
            fx.note(("ERROR", "RESPONSE_FAILED", "{}", (f"{event_id} failed: {error}",)))
            for t in ticket.triggers:
                if t.state == "in_flight":
                    self._fail(t, error, fx)
        fx.send = self._claim(now, fx)
        return fx

    def tick(self, now: float) -> Effects:
        """The confirm watchdog: report a create unconfirmed after ``confirm_timeout``.

        It only reports (once per create) and never re-sends or frees the slot. The
        server answers every create in order - ``response.created`` or an ``error`` -
        so an unconfirmed create is either still being processed or its confirmation
        was lost; a second create would then either start a second response for one
        request or be rejected by our own response. The slot is freed by the late
        ``response.created``, by a ``response.done`` naming the ticket, by the error
        naming it, or by the close of the connection.
        """
        fx = Effects()
        ticket = self.in_flight
        if ticket is None or ticket.reported or self.closed:
            return fx
        if now < ticket.claimed_at + self.confirm_timeout:
            return fx
        ticket.reported = True
        self.stats.confirm_timeouts += 1
        fx.note(
            (
                "ERROR",
                "RESPONSE_WATCHDOG",
                "{}",
                (
                    f"{ticket.event_id} unconfirmed after {self.confirm_timeout}s; "
                    "still waiting for its response.created, response.done or error",
                ),
            )
        )
        return fx

    def cancel(self) -> Effects:
        fx = Effects()
        if self.active is not None and not self.cancelling:
            self.cancelling = True
            fx.cancel = self.active
        elif self.active is None and self.in_flight is not None:
            for t in self.in_flight.triggers:
                t.cancel_requested = True
            fx.note(("INFO", "RESPONSE_CANCEL", "{}", (f"{self.in_flight.event_id} on creation",)))
        return fx

    def cancel_not_active(self, response_id: str, now: float) -> Effects:
        """Our ``response.cancel`` for ``response_id`` was answered
        ``response_cancel_not_active``: the server has no active response, so the one we
        believed active is over (its ``response.done`` was lost, or is still on its
        way). Free ``active``: a create now cannot be rejected because of it."""
        fx = Effects()
        if self.active != response_id or self.closed is not None:
            return fx
        self.active, self.cancelling = None, False
        fx.note(("WARNING", "RESPONSE_DONE", "{}", (f"{response_id} is not active on the server",)))
        fx.send = self._claim(now, fx)
        return fx

    def cancel_failed(self, response_id: str) -> Effects:
        """The ``response.cancel`` for ``response_id`` could not be sent: a later
        ``cancel()`` must try again rather than believe one is on its way."""
        fx = Effects()
        if self.active == response_id and self.cancelling:
            self.cancelling = False
            fx.note(("WARNING", "RESPONSE_CANCEL", "{}", (f"cancel of {response_id} not sent",)))
        return fx

    def close(self, error: BaseException) -> Effects:
        """CLOSED: every waiter fails with ``error``; a create is never replayed elsewhere."""
        fx = Effects()
        if self.closed is not None:
            return fx
        self.closed = error
        waiting = list(self.pending)
        if self.in_flight is not None:
            waiting += [t for t in self.in_flight.triggers if t.state == "in_flight"]
        for served in self._serving.values():
            waiting += served
        for t in waiting:
            self._fail(t, error, fx)
        self.pending.clear()
        self._serving.clear()
        self.in_flight, self.active = None, None
        return fx

    # -- internals -----------------------------------------------------------------

    def _take_in_flight(self, ticket_id: str | None, fx: Effects) -> Ticket | None:
        """Clear ``in_flight`` if ``ticket_id`` names it; return that ticket."""
        ticket = self.in_flight
        if ticket is None or ticket_id != ticket.event_id:
            return None
        self.in_flight = None
        if ticket.reported:
            fx.note(("WARNING", "RESPONSE_CREATED", "{}", (f"late confirmation of {ticket_id}",)))
        return ticket

    def _serve(self, ticket: Ticket, response_id: str) -> None:
        """The ticket's waiting triggers are served by ``response_id``."""
        served = [t for t in ticket.triggers if t.state == "in_flight"]
        for t in served:
            t.state = "served"
        self._serving.setdefault(response_id, []).extend(served)

    def _claim(self, now: float, fx: Effects) -> Ticket | None:
        # (properties inlined: this runs on every decision that sends)
        pending = self.pending
        if self.in_flight is not None or self.active is not None or not pending or self.closed:
            return None
        first = pending.popleft()
        batch = [first]
        if first.params is None:
            # A trigger marked to cancel its response on creation (cancel() while its
            # create was unconfirmed, then a rollback or rejection re-armed it) is not
            # merged with unmarked ones - triggers that were not in flight at the
            # interrupt, e.g. requested after it: the cancel would take their answer.
            marked = first.cancel_requested
            while pending and pending[0].params is None and pending[0].cancel_requested == marked:
                batch.append(pending.popleft())
        for t in batch:
            t.state = "in_flight"
        ticket = Ticket(f"{self._prefix}{next(self._ids)}", tuple(batch), first.params, now)
        self.in_flight = ticket
        self.stats.creates += 1
        if len(batch) > 1:
            self.stats.coalesced += len(batch) - 1
        if len(batch) > 1 and self.diagnostics:
            fx.note(
                (
                    "INFO",
                    "RESPONSE_COALESCED",
                    "{} carries {} triggers",
                    (ticket.event_id, len(batch)),
                )
            )
        return ticket

    def _rearm(self, ticket: Ticket, error: BaseException, fx: Effects, *, retry: bool) -> None:
        for t in reversed(ticket.triggers):
            if t.state != "in_flight":
                continue  # already served by a late confirmation, or failed
            t.attempts += 1
            if not retry or t.attempts >= self.max_attempts:
                self._fail(t, error, fx)
            else:
                t.state = "pending"
                self.pending.appendleft(t)
                self.stats.rearmed += 1

    def _fail(self, trigger: Trigger, error: BaseException, fx: Effects) -> None:
        trigger.state = "failed"
        self.stats.failed += 1
        fx.fail(trigger, error)


def _blocking_response(message: str) -> str | None:
    """The ``resp_...`` id a ``conversation_already_has_active_response`` names."""
    match = _RESPONSE_ID.search(message)
    return match.group(0) if match else None


def is_out_of_band(response: Mapping[str, Any]) -> bool:
    """A response outside the conversation (``conversation: "none"``): the server says
    so with an explicit ``conversation_id: null``."""
    return "conversation_id" in response and response["conversation_id"] is None


class ResponseGate:
    """The thread-safe gate: :class:`GateMachine` behind one ``threading.Lock``.

    Lock rule: only the machine runs under the lock. Futures are resolved (their
    callbacks may run user code), log lines written and events sent after release.
    """

    def __init__(
        self,
        *,
        confirm_timeout: float = 15.0,
        max_attempts: int = 5,
        clock: Callable[[], float] = time.monotonic,
        id_prefix: str = "",
    ) -> None:
        self._machine = GateMachine(
            confirm_timeout=confirm_timeout, max_attempts=max_attempts, id_prefix=id_prefix
        )
        self._lock = threading.Lock()
        self._clock = clock

    def __repr__(self) -> str:
        return f"<ResponseGate {self._machine.describe()}>"

    @property
    def machine(self) -> GateMachine:
        """The underlying machine, for inspection in tests (do not mutate)."""
        return self._machine

    def request(
        self, trigger: Trigger | str, params: Mapping[str, Any] | None = None
    ) -> Ticket | None:
        """Ask for a response. Returns the ticket to send now, or None if it was queued.

        The caller that gets a ticket must send it and, if the send fails, call
        :meth:`rollback`. ``trigger.future`` resolves with the serving ``response.done``.
        """
        if isinstance(trigger, str):
            trigger = Trigger(trigger, params)
        diagnostics = logs.wanted()  # nobody sees the notes: skip them on the hot path
        with self._lock:
            self._machine.diagnostics = diagnostics  # for this hot call only
            fx = self._machine.request(trigger, self._clock())
            self._machine.diagnostics = True
        if diagnostics:
            self._apply(fx, threading.get_ident())
        return fx.send

    def rollback(
        self, ticket: Ticket, error: BaseException, *, retry: bool = True
    ) -> Ticket | None:
        """The send of ``ticket`` failed. Returns a ticket to send instead, if any."""
        with self._lock:
            fx = self._machine.rollback(ticket, error, self._clock(), retry=retry)
        self._apply(fx)
        return fx.send

    def on_server_event(self, event: Mapping[str, Any]) -> Effects:
        """Feed one server event, in order. Returns the follow-ups (send, cancel)."""
        kind = event.get("type")
        if kind == "response.created" or kind == "response.done":
            response = event.get("response")
            response_id = response.get("id") if isinstance(response, dict) else None
            if not isinstance(response_id, str):
                return Effects()  # not a response we could attribute: nothing to decide
            assert isinstance(response, dict)
            out_of_band = is_out_of_band(response)
            metadata = response.get("metadata")
            ticket_id = metadata.get(TICKET_METADATA_KEY) if isinstance(metadata, dict) else None
            if not isinstance(ticket_id, str):
                ticket_id = None
            with self._lock:
                if kind == "response.created":
                    fx = self._machine.on_created(
                        response_id, ticket_id, out_of_band=out_of_band, now=self._clock()
                    )
                else:
                    fx = self._machine.on_done(
                        response_id,
                        dict(event),
                        out_of_band=out_of_band,
                        now=self._clock(),
                        ticket_id=ticket_id,
                    )
        elif kind == "error":
            error = ServerError.from_event(dict(event))
            with self._lock:
                fx = self._machine.on_error(error.code, error.event_id, error, self._clock())
        else:
            return Effects()
        self._apply(fx)
        return fx

    def tick(self) -> None:
        """Run the confirm watchdog now (it reports; it never sends)."""
        with self._lock:
            fx = self._machine.tick(self._clock())
        self._apply(fx)

    def deadline(self) -> float | None:
        with self._lock:
            return self._machine.deadline()

    def deadline_in(self) -> float | None:
        """Seconds (by the gate's clock) until the watchdog must look, or None when
        nothing is unconfirmed: the confirm watchdog's timer is armed only then."""
        with self._lock:
            deadline = self._machine.deadline()
            return None if deadline is None else max(0.0, deadline - self._clock())

    def cancel(self) -> str | None:
        """Returns the id of the response to cancel now (send ``response.cancel``), if any."""
        with self._lock:
            fx = self._machine.cancel()
        self._apply(fx)
        return fx.cancel

    def cancel_not_active(self, response_id: str) -> Ticket | None:
        """The server says ``response_id`` is not active; returns a ticket to send, if any."""
        with self._lock:
            fx = self._machine.cancel_not_active(response_id, self._clock())
        self._apply(fx)
        return fx.send

    def cancel_failed(self, response_id: str) -> None:
        """The ``response.cancel`` for ``response_id`` did not reach the wire."""
        with self._lock:
            fx = self._machine.cancel_failed(response_id)
        self._apply(fx)

    def close(self, error: BaseException) -> None:
        with self._lock:
            fx = self._machine.close(error)
        self._apply(fx)

    @property
    def closed(self) -> bool:
        return self._machine.closed is not None

    @property
    def active(self) -> str | None:
        return self._machine.active

    def stats(self) -> GateStats:
        with self._lock:
            return self._machine.snapshot_stats()

    # -- after the lock ------------------------------------------------------------

    def _apply(self, fx: Effects, thread: int | None = None) -> None:
        if logs.wanted():
            self._log(fx, thread)
        for trigger, event in fx.resolved:
            if not trigger.future.done():
                trigger.future.set_result(event)
        for trigger, error in fx.failed:
            if not trigger.future.done():
                trigger.future.set_exception(error)

    @staticmethod
    def _log(fx: Effects, thread: int | None) -> None:
        for level, tag, template, args in fx.notes:
            if tag == "RESPONSE_CREATE_CHECK":
                logger.log(
                    level,
                    "[{}] " + template + " thread={} ts={:.6f}",
                    tag,
                    *args,
                    thread,
                    time.time(),
                )
            else:
                logger.log(level, "[{}] " + template, tag, *args)
        if fx.send is not None:
            logger.info(
                "[RESPONSE_CREATE] {} claimed for {}", fx.send.event_id, ", ".join(fx.send.reasons)
            )
