"""Hypothesis explores the gate against a server that enforces one active response.

The gate against a model server, driven by random interleavings: tool
triggers, sends that fail, a server that processes creates, starts its own (VAD)
responses, finishes responses, drops a ``response.created`` now and then (the
``response.done`` still names our ticket), and a watchdog that fires at any moment.
Invariants checked after every step:

* at most one of our creates is ever on the wire (sent, not yet processed);
* the server never rejects a create because of *our own* response - every rejection
  is caused by a server (VAD) response;
* no ticket is sent twice;
* a rejected trigger is re-armed (pending or in a new ticket), unless out of attempts.

At teardown the system runs to quiescence and every trigger must be served by exactly
one response or failed with an error; the gate's ``lost`` counter must be 0.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rtclient.core.gate import ACTIVE_RESPONSE_CODE, GateMachine, Ticket, Trigger
from rtclient.errors import ServerError

pytestmark = pytest.mark.timeout(300)


class GateAgainstServer(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.gate = GateMachine(confirm_timeout=1.0, max_attempts=4)
        self.now = 0.0
        self.outbox: Ticket | None = None  # claimed, being sent
        self.wire: deque[Ticket] = deque()  # sent, not yet processed by the server
        self.to_client: deque[tuple[str, Any]] = deque()
        self.s_active: str | None = None
        self.s_active_is_ours = False
        self.s_active_ticket: str | None = None
        self.rids = itertools.count(1)
        self.sent_ids: set[str] = set()
        self.triggers: list[Trigger] = []
        self.served_by: dict[int, list[str]] = {}
        self.just_rejected: list[Trigger] = []

    # -- client side -----------------------------------------------------------------

    def _handle(self, fx: Any) -> None:
        # The pure machine only reports; resolving futures is the wrapper's job - do it here.
        for trigger, event in fx.resolved:
            self.served_by.setdefault(id(trigger), []).append(event["response"]["id"])
            trigger.future.set_result(event)
        for trigger, error in fx.failed:
            trigger.future.set_exception(error)
        if fx.send is not None:
            assert self.outbox is None, "a second create was claimed while one is being sent"
            self.outbox = fx.send

    @rule(params=st.booleans())
    def request(self, params: bool) -> None:
        t = Trigger(f"t{len(self.triggers)}", {"instructions": "x"} if params else None)
        self.triggers.append(t)
        self._handle(self.gate.request(t, self.now))

    @precondition(lambda self: self.outbox is not None)
    @rule()
    def transmit(self) -> None:
        assert self.outbox is not None
        ticket, self.outbox = self.outbox, None
        assert ticket.event_id not in self.sent_ids, "a ticket was sent twice"
        self.sent_ids.add(ticket.event_id)
        self.wire.append(ticket)
        assert len(self.wire) <= 1, "two creates on the wire"

    @precondition(lambda self: self.outbox is not None)
    @rule()
    def send_fails(self) -> None:
        assert self.outbox is not None
        ticket, self.outbox = self.outbox, None
        self._handle(self.gate.rollback(ticket, OSError("send failed"), self.now))

    @precondition(lambda self: bool(self.to_client))
    @rule()
    def receive(self) -> None:
        kind, payload = self.to_client.popleft()
        if kind == "created":
            rid, ticket_id = payload
            self._handle(self.gate.on_created(rid, ticket_id, out_of_band=False, now=self.now))
        elif kind == "done":
            rid, ticket_id = payload
            event = {"type": "response.done", "response": {"id": rid}}
            fx = self.gate.on_done(rid, event, out_of_band=False, now=self.now, ticket_id=ticket_id)
            self._handle(fx)
        else:
            ticket: Ticket = payload
            err = ServerError("busy", code=ACTIVE_RESPONSE_CODE, event_id=ticket.event_id)
            fx = self.gate.on_error(ACTIVE_RESPONSE_CODE, ticket.event_id, err, self.now)
            failed = {id(t) for t, _ in fx.failed}
            self.just_rejected = [t for t in ticket.triggers if id(t) not in failed]
            self._handle(fx)

    @rule()
    def watchdog(self) -> None:
        self.now += self.gate.confirm_timeout
        fx = self.gate.tick(self.now)
        assert fx.send is None and not fx.failed, "the watchdog only reports"
        self._handle(fx)

    # -- server side -----------------------------------------------------------------

    @precondition(lambda self: bool(self.wire))
    @rule(drop_created=st.booleans())
    def server_processes_create(self, drop_created: bool = False) -> None:
        ticket = self.wire.popleft()
        if self.s_active is not None:
            assert not self.s_active_is_ours, "rejected because of the client's own response"
            self.to_client.append(("error", ticket))
        else:
            self.s_active, self.s_active_is_ours = f"resp_{next(self.rids)}", True
            self.s_active_ticket = ticket.event_id
            if not drop_created:  # dropped: only the done (naming the ticket) arrives
                self.to_client.append(("created", (self.s_active, ticket.event_id)))

    @precondition(lambda self: True)
    @rule()
    def server_vad(self) -> None:
        if self.s_active is None:
            self.s_active, self.s_active_is_ours = f"resp_{next(self.rids)}", False
            self.s_active_ticket = None
            self.to_client.append(("created", (self.s_active, None)))

    @precondition(lambda self: True)
    @rule()
    def server_finishes(self) -> None:
        if self.s_active is not None:
            self.to_client.append(("done", (self.s_active, self.s_active_ticket)))
            self.s_active = None

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def rejected_triggers_are_rearmed(self) -> None:
        for t in self.just_rejected:
            assert t.state in ("pending", "in_flight", "served", "done"), t.state
        self.just_rejected = []

    @invariant()
    def nothing_lost_so_far(self) -> None:
        assert self.gate.snapshot_stats().lost == 0

    def teardown(self) -> None:
        # Run to quiescence: no loss, the server finishes, everything is delivered.
        for _ in range(10_000):
            if self.outbox is not None:
                self.transmit()
            elif self.wire:
                self.server_processes_create()
            elif self.to_client:
                self.receive()
            elif self.s_active is not None:
                self.server_finishes()
            else:
                break
        assert not self.gate.pending and self.gate.free
        for t in self.triggers:
            assert t.future.done(), f"{t.reason} never resolved ({t.state})"
            if t.future.exception() is None:
                assert len(self.served_by.get(id(t), [])) == 1, "served more than once"
            else:
                assert id(t) not in self.served_by
        stats = self.gate.snapshot_stats()
        assert stats.lost == 0 and stats.accepted == len(self.triggers)


GateAgainstServer.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGateAgainstServer = GateAgainstServer.TestCase
