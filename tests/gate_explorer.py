"""Every interleaving of a few triggers, explored breadth-first against a model server.

Theory of operation
-------------------
``test_gate_stateful.py`` samples random interleavings of the gate and a server; this
module enumerates *all* of them up to a bound, on the real :class:`GateMachine`, and
returns the shortest trace to each kind of violation it finds.

The system is the machine plus everything around it, each part a plain Python value:

``outbox``   what the client layer was told to send and has not sent yet: a claimed
             ticket (``_fire``) or a ``response.cancel`` (``interrupt()``, or the cancel
             on creation). Any item may go next: tool threads, the interrupting thread
             and the loop thread put on the bridge in no fixed order.
``c2s``      client -> server, in order (one data channel): creates and cancels.
``server``   at most one active response: ours (its ticket, the triggers it carries) or
             its own (VAD).
``s2c``      server -> client, in order: ``response.created``, ``response.done`` and
             ``error`` events, shaped as the API sends them.

Moves (every enabled one, from every state):

* ``request``: the next trigger (``Bounds.triggers``: ``p`` plain, ``P`` with params)
  asks the machine; a claimed ticket joins the outbox. After a close the request must
  raise :class:`ClosedError`, as ``request_response`` does.
* ``send i``: outbox item ``i`` reaches the wire. ``fail i retry`` (bounded): the send
  fails and the client does what ``RealtimeClient._fire``/``_after_create`` do -
  ``rollback(ticket, error, retry=...)``, ``retry=False`` as for a closed connection or
  an oversized message; a cancel that was not sent is ``cancel_failed(response_id)``.
* ``process [drop]``: the server takes the head of ``c2s``. A create is rejected with
  ``conversation_already_has_active_response`` if a response is active (``event_id``
  = the ticket, the message names the active ``resp_...``), else it starts a response
  whose ``response.created`` may be lost (bounded): then only the ``response.done``
  naming the ticket arrives. (A late created is just interleaving.) A cancel finishes
  the named response as ``cancelled`` if it is still active, else the server answers
  ``response_cancel_not_active``. ``process invalid`` (bounded): the server refuses a
  create with another error naming it (``invalid_value``); its triggers fail.
* ``vad [drop]`` (bounded): the idle server starts its own response.
* ``finish``: the active response is done.
* ``deliver``: the client reads the head of ``s2c`` through
  ``ResponseGate.on_server_event`` - the parser the client uses - and acts on the
  effects as ``RealtimeClient._on_message`` does: a send or a cancel joins the outbox.
* ``tick``: the watchdog fires past the deadline (enabled while ``deadline()`` is set).
* ``cancel`` (bounded, while the gate is not free: on a free gate it is a no-op by the
  transition table): ``interrupt()``. Only a cancel that did something (asked to cancel
  a response or marked the create in flight) uses up the bound.
* ``close`` (if allowed): the client closes; the sends it still held fail (rollbacks
  with ``retry=False``), the server is gone, events already received are still read.

Checks after every move. With ``first_only=False`` (the default) the shortest trace of
each kind is kept and a violating state is not expanded:

``two-creates``         two of our creates claimed and unanswered at once (in the
                        outbox or on the wire): the server could see both
``own-rejection``       the server rejected our create because of our own response
``answered-twice``      the server started two responses for one trigger
``answered-and-failed`` a trigger failed, yet a response was started for it (but a
                        close may fail a trigger whose response is running)
``settled-twice``       a trigger resolved or failed twice, or both
``settled-wrongly``     resolved by a response that did not carry it, or failed with
                        an error that is not a :class:`RealtimeError`
``watchdog-sent``       ``tick`` did anything but report
``after-close``         a claim or an accepted request after ``close``
``collateral-cancel``   a response cancelled on creation also serves a trigger
                        requested after the ``interrupt()`` that asked for the cancel
``lost``                ``snapshot_stats().lost != 0``
``stuck``               quiescent (nothing to send, on the wire or to read; the server
                        idle or the client closed) yet something waits: a pending
                        trigger, a slot held, a requested trigger not settled

State copying: by re-execution. A state is stored as its parent and the move that led
to it; to expand it, the explorer replays its path on a fresh system. A copy would
have to reproduce every object in the machine faithfully: a :class:`Trigger` carries
a ``concurrent.futures.Future`` (a ``Condition`` and its lock), :class:`ResponseGate` a
``threading.Lock``, the id counter is an ``itertools.count`` (whose copy and pickle are
deprecated since Python 3.12), and ``rollback`` compares tickets by identity, so a
single copy must cover the whole system. Replay only calls the public inputs, so it
works whatever the machine stores, and every trace is a replay by construction. It is
not slower here: a move costs a few microseconds, and a ``pickle`` round trip of the
system (with the lock and counter shared) measured ~170 us, the price of ~20 moves.

State key: everything that decides what can happen next, with ids renamed. Ticket ids
(``rtc_<pid>_<machine>_<n>``) and response ids are counters, so two states that differ
only in the numbers they drew are one state: ids are renamed in order of first
appearance. The machine's memory of finished responses enters the key only for ids
something still names (later events can name no other). ``claimed_at`` is left out:
the watchdog fires relative to it, so its value never changes a decision. Of the
counters only the three behind ``lost`` are kept (the others count history). The
attributes a subclass adds (a planted bug's flag) enter the key by ``repr``. Keys are
stored as 16-byte BLAKE2 digests, so a million states fit in a few hundred MB.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtclient.core.gate import (
    ACTIVE_RESPONSE_CODE,
    TICKET_METADATA_KEY,
    Effects,
    GateMachine,
    ResponseGate,
    Ticket,
    Trigger,
)
from rtclient.errors import ClosedError, RealtimeError, SendError

CONFIRM_TIMEOUT = 1.0
Move = tuple[Any, ...]
MakeGate = Callable[..., GateMachine]

# GateMachine's own attributes; anything else a subclass adds enters the state key.
_KNOWN = {
    "confirm_timeout",
    "max_attempts",
    "in_flight",
    "active",
    "cancelling",
    "pending",
    "closed",
    "_serving",
    "_finished",
    "_ids",
    "_prefix",
    "stats",
    "diagnostics",
}


@dataclass(frozen=True)
class Bounds:
    """How much may happen in one run."""

    triggers: str = "pP"  # request order: p = plain, P = with params (never coalesced)
    vad: int = 1  # responses the server starts on its own
    send_failures: int = 1  # client sends that fail (creates and cancels)
    drops: int = 1  # response.created events the client never gets
    cancels: int = 1  # interrupt() calls
    close: bool = False  # may the client close
    invalid: int = 0  # creates the server refuses with another error (invalid_value)
    max_attempts: int = 2  # GateMachine(max_attempts=...)


class Violation(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class _NoFuture:
    """A stand-in for ``Trigger.future``: the machine never touches it, and outcomes are
    checked on the machine's :class:`Effects`. It reads as settled, so the wrapper
    (which resolves futures) leaves it alone; a real ``Future`` costs a ``Condition``
    per trigger per replay."""

    def done(self) -> bool:
        return True


def _created(rid: str, ticket_id: str | None) -> dict[str, Any]:
    metadata = {TICKET_METADATA_KEY: ticket_id} if ticket_id else None
    response = {"id": rid, "status": "in_progress", "conversation_id": "conv_1"}
    return {"type": "response.created", "response": {**response, "metadata": metadata}}


def _done(rid: str, ticket_id: str | None, status: str) -> dict[str, Any]:
    metadata = {TICKET_METADATA_KEY: ticket_id} if ticket_id else None
    response = {"id": rid, "status": status, "conversation_id": "conv_1"}
    return {"type": "response.done", "response": {**response, "metadata": metadata}}


def _error(code: str, message: str, event_id: str) -> dict[str, Any]:
    error = {"type": "invalid_request_error", "code": code, "message": message}
    return {"type": "error", "error": {**error, "param": None, "event_id": event_id}}


def _short(value: Any) -> Any:
    """``rtc_1a2b_7f00_3`` -> ``T3`` (ticket ids carry a process and machine tag)."""
    if isinstance(value, str) and value.startswith("rtc_"):
        return "T" + value.rsplit("_", 1)[1]
    return value


class System:
    """The machine, the client layer around it and a model server; one move at a time."""

    def __init__(
        self,
        bounds: Bounds,
        make_gate: MakeGate,
        *,
        ignore: Collection[str] = (),
        narrate: bool = False,
    ) -> None:
        self.b = bounds
        self.ignore = ignore
        self.m = make_gate(confirm_timeout=CONFIRM_TIMEOUT, max_attempts=bounds.max_attempts)
        # The client's parser of server events, in front of this machine.
        self.wrapper = ResponseGate(clock=lambda: 0.0)
        self.wrapper._machine = self.m
        self.triggers = [
            Trigger(f"t{i}", {"instructions": f"t{i}"} if kind == "P" else None, _NoFuture())
            for i, kind in enumerate(bounds.triggers)
        ]
        self.index = {id(t): i for i, t in enumerate(self.triggers)}
        self.requested = 0
        self.outcome: list[str | None] = [None] * len(self.triggers)
        self.answered = [0] * len(self.triggers)  # responses the server started for each
        self.asked_at = [0] * len(self.triggers)  # cancel() calls before the request
        self.marked_at = 0  # the last cancel() that marked a create to cancel on creation
        self.outbox: list[tuple[str, Any]] = []  # ("create", Ticket) | ("cancel", rid)
        self.c2s: deque[tuple[str, Any]] = deque()
        self.s2c: deque[tuple[Any, ...]] = deque()
        self.s_active: tuple[str, str | None, tuple[int, ...]] | None = None  # rid, ticket
        self.rids = 0
        self.vads = self.failures = self.drops = self.cancels = self.invalids = 0
        self.closed = False
        self.narrate = narrate
        self.story: list[str] = []

    # -- moves ---------------------------------------------------------------------

    def moves(self) -> list[Move]:
        b, out = self.b, []
        if self.requested < len(self.triggers):
            out.append(("request",))
        for i, (kind, _) in enumerate(self.outbox):
            if not self.closed:
                out.append(("send", i))
            if self.failures < b.send_failures:
                out.append(("fail", i, True))
                if kind == "create":
                    out.append(("fail", i, False))
        if self.s2c:
            out.append(("deliver",))
        if self.closed:
            return out
        if self.c2s:
            out.append(("process", "answer"))
            if self.c2s[0][0] == "create":
                if self.s_active is None and self.drops < b.drops:
                    out.append(("process", "drop"))
                if self.invalids < b.invalid:
                    out.append(("process", "invalid"))
        if self.s_active is None and self.vads < b.vad:
            out.append(("vad", False))
            if self.drops < b.drops:
                out.append(("vad", True))
        if self.s_active is not None:
            out.append(("finish",))
        if self.m.deadline() is not None:
            out.append(("tick",))
        if self.cancels < b.cancels and not self.m.free:
            out.append(("cancel",))
        if b.close:
            out.append(("close",))
        return out

    def play(self, move: Move, *, check: bool = True) -> None:
        """Apply one move; raises :class:`Violation` if a check fails. A replay of a path
        already explored skips the state checks (they passed on the way in)."""
        getattr(self, "_" + move[0])(*move[1:])
        if check:
            self._check()

    def _request(self) -> None:
        i = self.requested
        self.requested += 1
        trigger = self.triggers[i]
        self.asked_at[i] = self.cancels
        kind = "plain" if trigger.plain else "with params"
        if self.closed:
            try:
                fx = self.m.request(trigger, 0.0)
            except ClosedError:  # what request_response raises to its caller
                self.outcome[i] = "refused"
                self._say("request t{} ({}): refused, the gate is closed", i, kind)
                return
            self._violate("after-close", f"t{i} accepted by a closed gate")
        else:
            fx = self.m.request(trigger, 0.0)
        self._say("request t{} ({}){}", i, kind, self._sends(fx))
        self._effects(fx)

    def _send(self, i: int) -> None:
        kind, what = self.outbox.pop(i)
        self.c2s.append((kind, what))
        self._say("send {} {} -> on the wire", kind, what)

    def _fail(self, i: int, retry: bool) -> None:
        self.failures += 1
        kind, what = self.outbox.pop(i)
        if kind == "cancel":
            self._say("send of cancel {} fails -> cancel_failed", what)
            self._effects(self.m.cancel_failed(what))
            return
        error = SendError("send failed") if retry else ClosedError("connection closed")
        fx = self.m.rollback(what, error, 0.0, retry=retry)
        self._say("send of create {} fails (retry={}){}", what, retry, self._sends(fx))
        self._effects(fx)

    def _process(self, how: str) -> None:
        kind, what = self.c2s.popleft()
        if kind == "cancel":
            if self.s_active is not None and self.s_active[0] == what:
                rid, tid, carried = self.s_active
                self.s_active = None
                self.s2c.append(("done", rid, tid, "cancelled", carried))
                self._say("server: cancels {}", rid)
            else:
                self.s2c.append(("cancel_error", what))
                self._say("server: cancel of {}, not active -> error", what)
            return
        ticket: Ticket = what
        carried = tuple(self.index[id(t)] for t in ticket.triggers)
        if how == "invalid":
            self.invalids += 1
            self.s2c.append(("invalid", ticket.event_id))
            self._say("server: {} is invalid -> error", ticket)
            return
        if self.s_active is not None:
            rid, tid, _ = self.s_active
            self.s2c.append(("rejected", ticket.event_id, rid))
            self._say("server: rejects {} ({} active)", ticket, rid)
            if tid is not None:
                self._violate("own-rejection", f"{_short(ticket.event_id)} rejected by our {rid}")
            return
        rid = self._new_rid()
        self.s_active = (rid, ticket.event_id, carried)
        if how == "drop":
            self.drops += 1
        else:
            self.s2c.append(("created", rid, ticket.event_id, carried))
        lost = ", its response.created is lost" if how == "drop" else ""
        self._say("server: {} for {}{}", rid, ticket, lost)
        for i in carried:
            self.answered[i] += 1
            if self.answered[i] > 1:
                self._violate("answered-twice", f"t{i} answered again, by {rid}")
            if self.outcome[i] is not None:
                self._violate("answered-and-failed", f"{rid} answers t{i}: {self.outcome[i]}")

    def _vad(self, drop: bool) -> None:
        self.vads += 1
        rid = self._new_rid()
        self.s_active = (rid, None, ())
        if not drop:
            self.s2c.append(("created", rid, None, ()))
        else:
            self.drops += 1
        self._say("server: VAD starts {}{}", rid, ", its response.created is lost" if drop else "")

    def _finish(self) -> None:
        assert self.s_active is not None
        rid, tid, carried = self.s_active
        self.s_active = None
        self.s2c.append(("done", rid, tid, "completed", carried))
        self._say("server: {} finishes", rid)

    def _deliver(self) -> None:
        item = self.s2c.popleft()
        kind = item[0]
        if kind == "created":
            event = _created(item[1], item[2])
        elif kind == "done":
            event = _done(item[1], item[2], item[3])
        elif kind == "invalid":
            message = "Invalid value: 'x'. Supported values are: 'text' and 'audio'."
            event = _error("invalid_value", message, item[1])
        elif kind == "rejected":
            message = (
                f"Conversation already has an active response in progress: {item[2]}. "
                "Wait until the response is finished before creating a new one."
            )
            event = _error(ACTIVE_RESPONSE_CODE, message, item[1])
        else:
            message = "Cancellation failed: no active response found"
            event = _error("response_cancel_not_active", message, f"evt_cancel_{item[1]}")
        fx = self.wrapper.on_server_event(event)
        if self.narrate:
            what = {
                "created": "response.created {1} ({2})",
                "done": "response.done {1} ({3})",
                "rejected": "error: {1} rejected, {2} active",
                "invalid": "error: {1} invalid",
                "cancel_error": "error: cancel of {1} not active",
            }[kind]
            shown = [_short(x) if x is not None else "VAD" for x in item]
            self._say("client reads {}{}", what.format(*shown), self._sends(fx))
        if kind == "created" and fx.cancel is not None and self.marked_at:
            for i in item[3]:
                if self.asked_at[i] >= self.marked_at and not self.triggers[i].cancel_requested:
                    self._violate(
                        "collateral-cancel",
                        f"{item[1]} is cancelled on creation, but it also serves t{i},"
                        " requested after the interrupt",
                    )
        self._effects(fx, carried=item[4] if kind == "done" else None)

    def _tick(self) -> None:
        ticket = self.m.in_flight
        assert ticket is not None
        fx = self.m.tick(ticket.claimed_at + CONFIRM_TIMEOUT)
        self._say("watchdog: {} unconfirmed{}", ticket, self._sends(fx))
        if fx.send is not None or fx.failed or fx.resolved or fx.cancel is not None:
            self._violate("watchdog-sent", f"tick did more than report {_short(ticket.event_id)}")
        self._effects(fx)

    def _cancel(self) -> None:
        marks = [t.cancel_requested for t in self.triggers]
        fx = self.m.cancel()
        self._say("interrupt: cancel(){}", self._sends(fx))
        if marks != [t.cancel_requested for t in self.triggers]:
            self.cancels += 1
            self.marked_at = self.cancels  # the create in flight will be cancelled
        elif fx.cancel is not None:
            self.cancels += 1
        self._effects(fx)

    def _close(self) -> None:
        self.closed = True
        self._say("client closes")
        self._effects(self.m.close(ClosedError("client closed")))
        self.c2s.clear()
        self.s_active = None
        while self.outbox:  # the bridge fails what it still held
            kind, what = self.outbox.pop()
            if kind == "cancel":
                self._effects(self.m.cancel_failed(what))
            else:
                self._effects(self.m.rollback(what, ClosedError("closed"), 0.0, retry=False))

    # -- effects and checks --------------------------------------------------------

    def _effects(self, fx: Effects, *, carried: tuple[int, ...] | None = None) -> None:
        for trigger, event in fx.resolved:
            i = self.index[id(trigger)]
            rid = event["response"]["id"]
            if carried is None or i not in carried:
                self._violate("settled-wrongly", f"t{i} resolved by {rid}, which did not carry it")
            self._settle(i, f"served by {rid}")
        for trigger, error in fx.failed:
            i = self.index[id(trigger)]
            if not isinstance(error, RealtimeError):
                self._violate("settled-wrongly", f"t{i} failed with {error!r}")
            if self.answered[i] and not self.closed:
                self._violate("answered-and-failed", f"t{i} failed ({error!r}) but was answered")
            self._settle(i, f"failed ({type(error).__name__})")
        if fx.send is not None:
            if self.closed:
                self._violate("after-close", f"{_short(fx.send.event_id)} claimed after close")
            self.outbox.append(("create", fx.send))
        if fx.cancel is not None and not self.closed:
            self.outbox.append(("cancel", fx.cancel))

    def _settle(self, i: int, how: str) -> None:
        if self.outcome[i] is not None:
            self._violate("settled-twice", f"t{i} {how}, already {self.outcome[i]}")
        self.outcome[i] = how
        self._say("t{} {}", i, how)

    def _check(self) -> None:
        creates = [w for k, w in (*self.outbox, *self.c2s) if k == "create"]
        if len(creates) > 1:
            names = ", ".join(_short(t.event_id) for t in creates)
            self._violate("two-creates", f"{names} claimed and unanswered at once")
        lost = self.m.snapshot_stats().lost
        if lost:
            self._violate("lost", f"snapshot_stats().lost == {lost}")
        if self.quiescent():
            m = self.m
            waiting = [i for i in range(self.requested) if self.outcome[i] is None]
            if m.pending or m.in_flight is not None or m.active is not None or waiting:
                self._violate(
                    "stuck",
                    f"quiescent but {m.describe()}; unsettled: {[f't{i}' for i in waiting]}",
                )

    def _violate(self, kind: str, detail: str) -> None:
        if kind not in self.ignore:
            raise Violation(kind, detail)

    def quiescent(self) -> bool:
        if self.outbox or self.s2c:
            return False
        return self.closed or (not self.c2s and self.s_active is None)

    # -- the state key -------------------------------------------------------------

    def key(self) -> bytes:
        m, ix = self.m, self.index
        names: dict[str, int] = {}

        def n(ident: Any) -> Any:  # an id -> its rank of first appearance
            if isinstance(ident, str) and ident.startswith(("rtc_", "resp_")):
                return names.setdefault(ident, len(names))
            return ident

        def ticket(t: Ticket | None) -> Any:
            if t is None:
                return None
            return (n(t.event_id), tuple(ix[id(x)] for x in t.triggers), t.reported)

        def item(kind: str, what: Any) -> Any:
            return (kind, ticket(what)) if kind == "create" else (kind, n(what))

        raw = (
            (self.requested, self.vads, self.failures, self.drops, self.cancels),
            (self.invalids, self.closed),
            # only "asked after the last marking cancel()" matters: a later mark comes
            # after every request made so far, and a later request after every mark
            tuple(0 < self.marked_at <= at for at in self.asked_at[: self.requested]),
            self.marked_at > 0,
            tuple(
                (t.state, t.attempts, t.cancel_requested, self.outcome[i] is None, self.answered[i])
                for i, t in enumerate(self.triggers)
            ),
            (ticket(m.in_flight), n(m.active), m.cancelling, m.closed is not None),
            tuple(ix[id(t)] for t in m.pending),
            tuple((n(rid), tuple(ix[id(t)] for t in ts)) for rid, ts in m._serving.items()),
            (m.stats.accepted, m.stats.resolved, m.stats.failed),
            tuple(sorted((k, repr(v)) for k, v in vars(m).items() if k not in _KNOWN)),
            tuple(item(k, w) for k, w in self.outbox),
            tuple(item(k, w) for k, w in self.c2s),
            tuple(tuple(n(x) for x in event) for event in self.s2c),
            self.s_active and (n(self.s_active[0]), n(self.s_active[1]), self.s_active[2]),
        )
        # finished responses matter only while something can still name them
        finished = sorted(names[r] for r in m._finished if r in names)
        return hashlib.blake2b(repr((raw, finished)).encode(), digest_size=16).digest()

    # -- narration -----------------------------------------------------------------

    def _new_rid(self) -> str:
        self.rids += 1
        return f"resp_{self.rids}"

    def _say(self, template: str, *args: Any) -> None:
        """Narrate (traces only): ticket ids read ``T<n>``, tickets by their id."""
        if self.narrate:
            shown = (_short(a.event_id) if isinstance(a, Ticket) else _short(a) for a in args)
            self.story.append(template.format(*shown))

    def _sends(self, fx: Effects) -> str:
        if not self.narrate:
            return ""
        out = []
        if fx.send is not None:
            out.append(f"claims {_short(fx.send.event_id)} for {', '.join(fx.send.reasons)}")
        if fx.cancel is not None:
            out.append(f"cancels {fx.cancel}")
        return (" -> " + "; ".join(out)) if out else ""


@dataclass
class Report:
    """What one exploration saw. ``violations`` maps a kind to its shortest trace."""

    bounds: Bounds
    gate: str = "GateMachine"
    states: int = 0
    transitions: int = 0
    depth: int = 0
    seconds: float = 0.0
    complete: bool = False
    violations: dict[str, list[str]] = field(default_factory=dict)  # kind -> trace
    paths: dict[str, list[Move]] = field(default_factory=dict)  # kind -> its moves

    def summary(self) -> str:
        status = "complete" if self.complete else "INCOMPLETE"
        found = ", ".join(self.violations) or "no violation"
        return (
            f"{self.gate} {self.bounds}: {self.states} states, {self.transitions} transitions,"
            f" depth {self.depth}, {self.seconds:.1f} s, {status}; {found}"
        )

    def traces(self) -> str:
        return "\n".join(
            f"shortest {kind} trace ({len(self.paths[kind])} moves):\n" + "\n".join(trace)
            for kind, trace in self.violations.items()
        )


def replay(
    bounds: Bounds, make_gate: MakeGate, path: Sequence[Move], *, ignore: Collection[str] = ()
) -> list[str]:
    """The narrated trace of ``path``: one numbered line per move (and indented lines
    for the triggers it settled); the last line is the violation, if any."""
    system = System(bounds, make_gate, ignore=ignore, narrate=True)
    for n, move in enumerate(path, 1):
        mark = len(system.story)
        violation = None
        try:
            system.play(move)
        except Violation as v:
            violation = v
        lines = system.story[mark:] or [" ".join(map(str, move))]
        system.story[mark:] = [f"{n:>3}. {lines[0]}", *(f"     {x}" for x in lines[1:])]
        if violation is not None:
            system.story.append(f"     VIOLATION {violation}")
            break
    return system.story


def explore(
    bounds: Bounds,
    make_gate: MakeGate = GateMachine,
    *,
    first_only: bool = False,
    ignore: Collection[str] = (),
    max_states: int | None = None,
    progress: Callable[[Report, int], None] | None = None,
) -> Report:
    """Breadth-first over every interleaving within ``bounds``.

    Each violation kind is reported with its shortest trace (breadth first: no shorter
    path reaches it). A violating state is not expanded. ``first_only`` stops at the
    first violation; ``ignore`` turns checks off (to see what a planted bug leads to
    beyond its first symptom); ``max_states`` stops early (``complete`` stays False).
    ``progress(report, frontier_size)`` is called every 10,000 states.
    """
    started = time.perf_counter()
    report = Report(bounds, getattr(make_gate, "__name__", str(make_gate)))
    seen = {System(bounds, make_gate).key()}
    # state number -> (parent number, move): a state's path is rebuilt from here
    parents: list[tuple[int, Move]] = [(-1, ())]
    depth = [0]
    frontier: deque[int] = deque([0])

    def path_of(n: int) -> list[Move]:
        path = []
        while n > 0:
            n, move = parents[n]
            path.append(move)
        return path[::-1]

    def build(path: Sequence[Move]) -> System:
        system = System(bounds, make_gate, ignore=ignore)
        for move in path:
            system.play(move, check=False)
        return system

    def finish(complete: bool) -> Report:
        report.states = len(parents)
        report.complete = complete
        report.seconds = time.perf_counter() - started
        return report

    while frontier:
        n = frontier.popleft()
        path = path_of(n)
        system = build(path)
        for k, move in enumerate(system.moves()):
            if k:  # the first move is played on the build that listed the moves
                system = build(path)
            report.transitions += 1
            try:
                system.play(move)
            except Violation as v:
                if v.kind not in report.violations:
                    report.paths[v.kind] = [*path, move]
                    trace = replay(bounds, make_gate, [*path, move], ignore=ignore)
                    if not trace[-1].endswith(str(v)):
                        raise AssertionError(f"the replay did not reproduce {v}") from v
                    report.violations[v.kind] = trace
                if first_only:
                    return finish(False)
                continue
            key = system.key()
            if key in seen:
                continue
            seen.add(key)
            parents.append((n, move))
            depth.append(depth[n] + 1)
            report.depth = max(report.depth, depth[-1])
            frontier.append(len(parents) - 1)
            if progress is not None and len(parents) % 10_000 == 0:
                report.states = len(parents)
                report.seconds = time.perf_counter() - started
                progress(report, len(frontier))
            if max_states is not None and len(parents) >= max_states:
                return finish(False)
    return finish(True)


# -- planted bugs: the explorer must catch these ---------------------------------------


class OneFlagGate(GateMachine):
    """Planted bug: the RCA's ``responseInProgress``. One busy flag decides "free": set
    when a create is claimed and at any ``response.created``, cleared at any
    ``response.done`` (where a waiting trigger then claims) and when our create is rolled
    back or rejected. The two slots are still kept, for attribution only.

    The bug: a server (VAD) response that starts and finishes while our create is on the
    wire clears the flag at its done, so the next trigger sends a second create.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.busy = False

    def request(self, trigger: Trigger, now: float) -> Effects:
        if self.closed is not None:
            raise ClosedError("closed")
        fx = Effects()
        self.stats.accepted += 1
        trigger.state = "pending"
        self.pending.append(trigger)
        fx.send = self._claim(now, fx)
        return fx

    def _claim(self, now: float, fx: Effects) -> Ticket | None:
        if self.busy:
            return None
        held, active = self.in_flight, self.active
        self.in_flight = self.active = None  # the flag alone says "free"
        ticket = super()._claim(now, fx)
        self.in_flight = ticket or held
        self.active = active
        self.busy = ticket is not None
        return ticket

    def rollback(
        self, ticket: Ticket, error: BaseException, now: float, *, retry: bool = True
    ) -> Effects:
        if self.in_flight is ticket:
            self.busy = False
        return super().rollback(ticket, error, now, retry=retry)

    def on_created(
        self, response_id: str, ticket_id: str | None, *, out_of_band: bool, now: float
    ) -> Effects:
        fx = super().on_created(response_id, ticket_id, out_of_band=out_of_band, now=now)
        self.busy = self.busy or not out_of_band
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
        if not out_of_band:
            self.busy = False
        fx = super().on_done(
            response_id, event, out_of_band=out_of_band, now=now, ticket_id=ticket_id
        )
        if fx.send is None and not out_of_band:
            fx.send = self._claim(now, fx)
        return fx

    def on_error(self, code: str | None, event_id: str | None, error: Any, now: float) -> Effects:
        if self.in_flight is not None and event_id == self.in_flight.event_id:
            self.busy = False
        return super().on_error(code, event_id, error, now)


class ResendingWatchdog(GateMachine):
    """Planted bug: a watchdog that takes an unconfirmed create for lost - frees the
    slot, re-arms its triggers and claims a new create. The late ``response.created`` of
    the first then serves nothing, and the server answers the same trigger twice (or
    rejects the new create because of our own first response)."""

    def tick(self, now: float) -> Effects:
        ticket = self.in_flight
        fx = super().tick(now)
        if ticket is not None and ticket.reported and self.in_flight is ticket:
            self.in_flight = None
            self._rearm(ticket, RealtimeError("unconfirmed"), fx, retry=True)
            fx.send = self._claim(now, fx)
        return fx


class MergesMarkedTriggers(GateMachine):
    """The bug this explorer found in ``GateMachine`` (fixed in ``_claim``), kept to show
    the check finds it: coalescing blind to the cancel-on-creation mark. ``interrupt()``
    while t0's create is unconfirmed marks t0; t1 is requested; t0's create is rolled
    back (or rejected) and re-armed; t0 and t1 share the next create, whose response is
    cancelled on creation - t1's answer with it."""

    def _claim(self, now: float, fx: Effects) -> Ticket | None:
        marks = [t.cancel_requested for t in self.pending]
        for t in self.pending:
            t.cancel_requested = False  # blind to the mark while batching
        ticket = super()._claim(now, fx)
        order = [*(ticket.triggers if ticket else ()), *self.pending]  # the same order
        for t, mark in zip(order, marks, strict=True):
            t.cancel_requested = mark
        return ticket
