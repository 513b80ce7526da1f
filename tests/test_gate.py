"""Walk every row of the gate's transition table, with no threads and no I/O.

Like h11's test_state: drive :class:`GateMachine` by method calls and check the state
and the effects after each one. A fake clock is just a number passed in.
"""

from __future__ import annotations

from typing import Any

import pytest

from rtclient.core.gate import (
    ACTIVE_RESPONSE_CODE,
    TICKET_METADATA_KEY,
    Effects,
    GateMachine,
    ResponseGate,
    Ticket,
    Trigger,
)
from rtclient.errors import ClosedError, ResponseRejectedError, ServerError

pytestmark = pytest.mark.timeout(10)


def done(rid: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": rid, "status": status}}


def rejection(event_id: str | None) -> ServerError:
    return ServerError("busy", code=ACTIVE_RESPONSE_CODE, event_id=event_id)


@pytest.fixture
def m() -> GateMachine:
    return GateMachine(confirm_timeout=5.0, max_attempts=3)


def texts(fx: Effects) -> list[tuple[str, str]]:
    """The notes as (tag, message) - what the log lines will say."""
    return [(tag, template.format(*args)) for _, tag, template, args in fx.notes]


def claim(m: GateMachine, reason: str = "t", now: float = 0.0) -> Ticket:
    fx = m.request(Trigger(reason), now)
    assert fx.send is not None
    return fx.send


def test_request_when_free_claims_in_flight(m: GateMachine) -> None:
    t = Trigger("tool_call_result:a")
    fx = m.request(t, 0.0)
    assert fx.send is not None and fx.send.triggers == (t,)
    assert m.in_flight is fx.send and m.active is None and not m.pending
    assert t.state == "in_flight"
    assert fx.send.event_id.startswith("rtc_")
    assert fx.notes[0][:2] == ("DEBUG", "RESPONSE_CREATE_CHECK")


def test_request_while_in_flight_queues(m: GateMachine) -> None:
    first = claim(m)
    t = Trigger("b")
    fx = m.request(t, 0.0)
    assert fx.send is None and list(m.pending) == [t] and m.in_flight is first
    assert any(tag == "RESPONSE_QUEUED" and "awaits confirmation" in msg for tag, msg in texts(fx))


def test_request_while_active_queues(m: GateMachine) -> None:
    m.on_created("resp_vad", None, out_of_band=False, now=0)
    fx = m.request(Trigger("b"), 0.0)
    assert fx.send is None and len(m.pending) == 1
    assert any("resp_vad is active" in msg for _, msg in texts(fx))


def test_trigger_cannot_be_requested_twice(m: GateMachine) -> None:
    t = Trigger("a")
    m.request(t, 0.0)
    with pytest.raises(ValueError):
        m.request(t, 0.0)


def test_rollback_rearms_and_refires_within_bound(m: GateMachine) -> None:
    ticket = claim(m)
    fx = m.rollback(ticket, OSError("send failed"), 1.0)
    assert fx.send is not None and fx.send is not ticket
    assert fx.send.triggers == ticket.triggers and m.in_flight is fx.send
    assert m.stats.rollbacks == 1 and m.stats.rearmed == 1


def test_rollback_beyond_bound_fails_the_trigger(m: GateMachine) -> None:
    ticket = claim(m)
    error = OSError("channel closed")
    for _ in range(m.max_attempts - 1):
        fx = m.rollback(ticket, error, 0.0)
        assert fx.send is not None
        ticket = fx.send
    fx = m.rollback(ticket, error, 0.0)
    assert fx.send is None and m.free and not m.pending
    assert [(t.reason, e) for t, e in fx.failed] == [("t", error)]
    assert m.stats.lost == 0


def test_rollback_without_retry_fails_immediately(m: GateMachine) -> None:
    ticket = claim(m)
    fx = m.rollback(ticket, ClosedError("gone"), 0.0, retry=False)
    assert fx.send is None and len(fx.failed) == 1 and m.free


def test_rollback_of_a_ticket_no_longer_in_flight_is_ignored(m: GateMachine) -> None:
    ticket = claim(m)
    m.on_created("resp_1", ticket.event_id, out_of_band=False, now=0)
    fx = m.rollback(ticket, OSError("late"), 0.0)
    assert fx.send is None and not fx.failed and m.active == "resp_1"


def test_rollback_keeps_order_ahead_of_newer_triggers(m: GateMachine) -> None:
    ticket = claim(m, "old")
    m.request(Trigger("new"), 0.0)
    fx = m.rollback(ticket, OSError("x"), 0.0)
    assert fx.send is not None and fx.send.reasons == ["old", "new"]


def test_created_with_our_ticket_serves_it(m: GateMachine) -> None:
    ticket = claim(m)
    fx = m.on_created("resp_1", ticket.event_id, out_of_band=False, now=0)
    assert m.in_flight is None and m.active == "resp_1"
    assert ticket.triggers[0].state == "served"
    assert any("was_in_progress=False" in msg for _, msg in texts(fx))
    fx = m.on_done("resp_1", done("resp_1"), out_of_band=False, now=0)
    assert [t for t, _ in fx.resolved] == list(ticket.triggers)
    assert m.free and fx.send is None and m.stats.lost == 0


def test_server_response_occupies_gate_without_serving_our_ticket(m: GateMachine) -> None:
    ticket = claim(m)
    m.on_created("resp_vad", None, out_of_band=False, now=0)
    assert m.active == "resp_vad" and m.in_flight is ticket
    # The VAD response's done arrives *before* our create is confirmed or rejected:
    # one flag would read "free" here and send a second create. Two slots do not.
    fx = m.request(Trigger("another"), 0.0)
    assert fx.send is None
    fx = m.on_done("resp_vad", done("resp_vad"), out_of_band=False, now=0)
    assert fx.send is None and m.in_flight is ticket and not fx.resolved
    assert ticket.triggers[0].state == "in_flight"


def test_rejection_rearms_and_waits_for_active_done(m: GateMachine) -> None:
    ticket = claim(m)
    m.on_created("resp_vad", None, out_of_band=False, now=0)
    fx = m.on_error(ACTIVE_RESPONSE_CODE, ticket.event_id, rejection(ticket.event_id), 0.0)
    assert fx.send is None and m.in_flight is None and list(m.pending) == list(ticket.triggers)
    assert m.stats.rejections == 1 and m.stats.rearmed == 1
    fx = m.on_done("resp_vad", done("resp_vad"), out_of_band=False, now=0)
    assert fx.send is not None and fx.send.triggers == ticket.triggers


def test_rejection_refires_now_if_blocking_response_already_done(m: GateMachine) -> None:
    ticket = claim(m)
    m.on_created("resp_vad", None, out_of_band=False, now=0)
    m.on_done("resp_vad", done("resp_vad"), out_of_band=False, now=0)
    fx = m.on_error(ACTIVE_RESPONSE_CODE, ticket.event_id, rejection(ticket.event_id), 0.0)
    assert fx.send is not None and fx.send.triggers == ticket.triggers


def test_rejections_are_bounded(m: GateMachine) -> None:
    ticket: Ticket | None = claim(m)
    for _ in range(m.max_attempts):
        assert ticket is not None
        fx = m.on_error(ACTIVE_RESPONSE_CODE, ticket.event_id, rejection(ticket.event_id), 0.0)
        ticket = fx.send
    assert ticket is None and len(fx.failed) == 1
    assert isinstance(fx.failed[0][1], ResponseRejectedError)
    assert m.stats.lost == 0


def test_other_error_fails_the_ticket_and_frees_gate(m: GateMachine) -> None:
    ticket = claim(m)
    later = Trigger("later", {"instructions": "x"})
    m.request(later, 0.0)
    err = ServerError("bad", code="invalid_value", event_id=ticket.event_id)
    fx = m.on_error("invalid_value", ticket.event_id, err, 0.0)
    assert [(t, e) for t, e in fx.failed] == [(ticket.triggers[0], err)]
    assert fx.send is not None and fx.send.triggers == (later,)


def test_error_for_someone_else_is_ignored(m: GateMachine) -> None:
    ticket = claim(m)
    fx = m.on_error(ACTIVE_RESPONSE_CODE, "evt_not_ours", rejection("evt_not_ours"), 0.0)
    assert m.in_flight is ticket and not fx.failed and fx.send is None
    fx = m.on_error("invalid_value", None, ServerError("x"), 0.0)
    assert m.in_flight is ticket


def test_done_coalesces_pending_plain_triggers(m: GateMachine) -> None:
    ticket = claim(m)
    m.on_created("resp_1", ticket.event_id, out_of_band=False, now=0)
    waiting = [Trigger(f"tool:{i}") for i in range(5)]
    for t in waiting:
        assert m.request(t, 0.0).send is None
    fx = m.on_done("resp_1", done("resp_1"), out_of_band=False, now=0)
    assert fx.send is not None and list(fx.send.triggers) == waiting
    assert m.stats.coalesced == 4 and m.stats.creates == 2


def test_parameterised_requests_are_never_merged(m: GateMachine) -> None:
    ticket = claim(m)
    m.on_created("resp_1", ticket.event_id, out_of_band=False, now=0)
    a, p, b = Trigger("a"), Trigger("p", {"instructions": "be brief"}), Trigger("b")
    q = Trigger("q", {"instructions": "other"})
    for t in (a, p, b, q):
        m.request(t, 0.0)
    order = []
    rid = 1
    fx = m.on_done("resp_1", done("resp_1"), out_of_band=False, now=0)
    while fx.send is not None:
        order.append(fx.send.triggers)
        rid += 1
        m.on_created(f"resp_{rid}", fx.send.event_id, out_of_band=False, now=0)
        fx = m.on_done(f"resp_{rid}", done(f"resp_{rid}"), out_of_band=False, now=0)
    assert order == [(a,), (p,), (b,), (q,)]


def test_done_for_another_id_is_ignored(m: GateMachine) -> None:
    m.on_created("resp_1", None, out_of_band=False, now=0)
    m.request(Trigger("a"), 0.0)
    fx = m.on_done("resp_other", done("resp_other"), out_of_band=False, now=0)
    assert fx.send is None and m.active == "resp_1"


def test_out_of_band_responses_do_not_touch_the_gate(m: GateMachine) -> None:
    m.on_created("resp_oob", None, out_of_band=True, now=0)
    assert m.free
    ticket = claim(m)
    m.on_created("resp_oob2", None, out_of_band=True, now=0)
    m.on_done("resp_oob2", done("resp_oob2"), out_of_band=True, now=0)
    assert m.in_flight is ticket and m.active is None


def test_cancel_active(m: GateMachine) -> None:
    m.on_created("resp_1", None, out_of_band=False, now=0)
    assert m.cancel().cancel == "resp_1" and m.cancelling
    assert m.cancel().cancel is None  # already cancelling: not twice
    # create right after cancel (RCA trigger 2): queued until the cancelled done
    t = Trigger("after_cancel")
    assert m.request(t, 0.0).send is None
    fx = m.on_done("resp_1", done("resp_1", "cancelled"), out_of_band=False, now=0)
    assert fx.send is not None and fx.send.triggers == (t,) and not m.cancelling


def test_cancel_with_nothing_active_is_a_no_op(m: GateMachine) -> None:
    assert m.cancel().cancel is None


def test_cancel_while_create_in_flight_cancels_on_creation(m: GateMachine) -> None:
    ticket = claim(m)
    assert m.cancel().cancel is None
    fx = m.on_created("resp_1", ticket.event_id, out_of_band=False, now=0)
    assert fx.cancel == "resp_1" and m.cancelling


def test_watchdog_reports_once_and_never_resends(m: GateMachine) -> None:
    ticket = claim(m, now=0.0)
    assert m.deadline() == 5.0
    assert m.tick(4.9).send is None and m.in_flight is ticket
    fx = m.tick(5.0)
    assert m.stats.confirm_timeouts == 1 and fx.send is None and not fx.failed
    assert any(tag == "RESPONSE_WATCHDOG" for tag, _ in texts(fx))
    assert m.in_flight is ticket and m.deadline() is None  # held, reported once
    assert not m.tick(50.0).notes and m.stats.confirm_timeouts == 1
    # a request meanwhile waits: the slot is still ours
    later = Trigger("later")
    assert m.request(later, 6.0).send is None
    # the late confirmation serves the ticket, exactly once
    fx = m.on_created("resp_1", ticket.event_id, out_of_band=False, now=6)
    assert ticket.triggers[0].state == "served"
    assert any("late confirmation" in text for _, text in texts(fx))
    fx = m.on_done("resp_1", done("resp_1"), out_of_band=False, now=7)
    assert [t for t, _ in fx.resolved] == list(ticket.triggers)
    assert fx.send is not None and fx.send.triggers == (later,)
    assert m.stats.creates == 2 and m.snapshot_stats().lost == 0


def test_done_naming_our_ticket_settles_a_create_never_seen_created(m: GateMachine) -> None:
    ticket = claim(m, now=0.0)
    m.tick(10.0)  # reported, still held
    queued = Trigger("queued")
    m.request(queued, 11.0)
    event = done("resp_1")
    fx = m.on_done("resp_1", event, out_of_band=False, now=12, ticket_id=ticket.event_id)
    assert [(t, e) for t, e in fx.resolved] == [(ticket.triggers[0], event)]
    assert m.active is None and m.in_flight is fx.send
    assert fx.send is not None and fx.send.triggers == (queued,)
    assert m.stats.creates == 2 and m.stats.rejections == 0 and m.snapshot_stats().lost == 0


def test_done_naming_another_ticket_leaves_ours_in_flight(m: GateMachine) -> None:
    ticket = claim(m)
    fx = m.on_done("resp_x", done("resp_x"), out_of_band=False, now=1, ticket_id="rtc_other_1")
    assert not fx.resolved and m.in_flight is ticket


def test_cancel_that_could_not_be_sent_does_not_wedge_interrupts(m: GateMachine) -> None:
    m.on_created("resp_1", None, out_of_band=False, now=0)
    assert m.cancel().cancel == "resp_1"
    assert m.cancel().cancel is None  # believed on its way
    m.cancel_failed("resp_1")
    assert not m.cancelling and m.cancel().cancel == "resp_1"  # tried again
    m.cancel_failed("resp_other")  # a stale report changes nothing
    assert m.cancelling


def test_cancel_on_creation_survives_a_rejected_and_refired_create(m: GateMachine) -> None:
    ticket = claim(m)
    m.on_created("resp_vad", None, out_of_band=False, now=0)  # VAD starts meanwhile
    m.on_done("resp_vad", done("resp_vad"), out_of_band=False, now=0)
    # the interrupt comes while only our create is in flight
    ticket2 = m.in_flight
    assert ticket2 is ticket and m.cancel().cancel is None
    m.on_created("resp_vad2", None, out_of_band=False, now=1)
    fx = m.on_error(ACTIVE_RESPONSE_CODE, ticket.event_id, rejection(ticket.event_id), 1.0)
    assert fx.send is None and ticket.triggers[0].state == "pending"
    fx = m.on_done("resp_vad2", done("resp_vad2"), out_of_band=False, now=2)
    refired = fx.send
    assert refired is not None and refired.cancel_requested
    fx = m.on_created("resp_ours", refired.event_id, out_of_band=False, now=3)
    assert fx.cancel == "resp_ours" and m.cancelling


@pytest.mark.parametrize("undo", ["rollback", "rejection"])
def test_trigger_marked_to_cancel_is_not_merged_with_a_later_one(m: GateMachine, undo: str) -> None:
    """Found by tests/test_gate_explorer.py: an interrupt while t0's create is unconfirmed
    marks t0; t1 is requested after it; t0's create is undone and re-armed. Merged, one
    response would serve both and be cancelled on creation, taking t1's answer too."""
    ticket = claim(m, "t0")
    assert m.cancel().cancel is None  # marks t0
    later = Trigger("t1")
    assert m.request(later, 0.0).send is None
    if undo == "rollback":
        refired = m.rollback(ticket, OSError("send failed"), 0.0).send
    else:
        m.on_created("resp_vad", None, out_of_band=False, now=0)
        m.on_error(ACTIVE_RESPONSE_CODE, ticket.event_id, rejection(ticket.event_id), 0.0)
        refired = m.on_done("resp_vad", done("resp_vad"), out_of_band=False, now=0).send
    assert refired is not None and refired.reasons == ["t0"] and refired.cancel_requested
    assert m.on_created("resp_1", refired.event_id, out_of_band=False, now=0).cancel == "resp_1"
    fx = m.on_done("resp_1", done("resp_1", "cancelled"), out_of_band=False, now=0)
    assert fx.send is not None and fx.send.triggers == (later,)
    assert not fx.send.cancel_requested
    assert m.on_created("resp_2", fx.send.event_id, out_of_band=False, now=0).cancel is None


def test_close_fails_every_waiter_and_refuses_requests(m: GateMachine) -> None:
    served = claim(m, "served")
    m.on_created("resp_1", served.event_id, out_of_band=False, now=0)
    m.request(Trigger("pending"), 0.0)
    err = ClosedError("bye")
    fx = m.close(err)
    assert sorted(t.reason for t, _ in fx.failed) == ["pending", "served"]
    assert all(e is err for _, e in fx.failed) and m.stats.lost == 0
    with pytest.raises(ClosedError):
        m.request(Trigger("x"), 0.0)
    assert not m.close(err).failed  # idempotent
    # events after close change nothing and never produce a send
    assert m.on_done("resp_1", done("resp_1"), out_of_band=False, now=0).send is None


def test_close_fails_in_flight_trigger(m: GateMachine) -> None:
    ticket = claim(m)
    fx = m.close(ClosedError("bye"))
    assert [t for t, _ in fx.failed] == list(ticket.triggers)


# -- the thread-safe wrapper -----------------------------------------------------------


def test_wrapper_parses_events_and_resolves_futures() -> None:
    gate = ResponseGate(confirm_timeout=5.0)
    t = Trigger("a")
    ticket = gate.request(t)
    assert ticket is not None
    created = {
        "type": "response.created",
        "response": {"id": "resp_1", "metadata": {TICKET_METADATA_KEY: ticket.event_id}},
    }
    gate.on_server_event(created)
    assert gate.active == "resp_1" and not t.future.done()
    event = done("resp_1")
    gate.on_server_event(event)
    assert t.future.result(0) == event
    assert gate.stats().as_dict()["lost"] == 0


def test_wrapper_error_event_fails_waiter_with_server_fields() -> None:
    gate = ResponseGate()
    t = Trigger("a")
    ticket = gate.request(t)
    assert ticket is not None
    gate.on_server_event(
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "nope",
                "param": "response.tools",
                "event_id": ticket.event_id,
            },
        }
    )
    with pytest.raises(ServerError) as info:
        t.future.result(0)
    assert info.value.code == "invalid_value" and info.value.param == "response.tools"


def test_wrapper_out_of_band_by_null_conversation_id() -> None:
    gate = ResponseGate()
    gate.on_server_event(
        {"type": "response.created", "response": {"id": "r", "conversation_id": None}}
    )
    assert gate.active is None
    gate.on_server_event(
        {"type": "response.created", "response": {"id": "r2", "conversation_id": "conv_1"}}
    )
    assert gate.active == "r2"


def test_wrapper_watchdog_uses_injected_clock() -> None:
    now = [100.0]
    gate = ResponseGate(confirm_timeout=2.0, clock=lambda: now[0])
    ticket = gate.request("a")
    assert ticket is not None and gate.deadline() == 102.0
    gate.tick()
    assert gate.stats().confirm_timeouts == 0
    now[0] = 102.0
    gate.tick()
    assert gate.stats().confirm_timeouts == 1 and gate.machine.in_flight is ticket


def test_wrapper_settles_our_ticket_from_response_done_metadata() -> None:
    gate = ResponseGate()
    ticket = gate.request("a")
    assert ticket is not None
    trigger = ticket.triggers[0]
    metadata = {"rtclient_ticket": ticket.event_id}
    response = {"id": "resp_9", "conversation_id": "conv_1", "metadata": metadata}
    gate.on_server_event({"type": "response.done", "response": response})
    assert trigger.future.result(0)["response"]["id"] == "resp_9"
    assert gate.machine.free


def test_wrapper_ignores_garbage_events() -> None:
    gate = ResponseGate()
    for event in (
        {"type": "response.created"},
        {"type": "response.created", "response": {"id": 5}},
        {"type": "response.done", "response": None},
        {"type": "error", "error": "not a dict"},
        {"type": "who.knows"},
        {},
    ):
        gate.on_server_event(event)
    assert gate.machine.free


def test_wrapper_never_holds_lock_while_resolving() -> None:
    gate = ResponseGate()
    t = Trigger("a")
    ticket = gate.request(t)
    assert ticket is not None
    seen: list[bool] = []
    # A waiter callback (user code) that re-enters the gate must not deadlock.
    t.future.add_done_callback(lambda _: seen.append(gate.request("from_callback") is not None))
    gate.on_server_event(
        {
            "type": "response.created",
            "response": {"id": "r", "metadata": {TICKET_METADATA_KEY: ticket.event_id}},
        }
    )
    gate.on_server_event(done("r"))
    assert seen == [True]


def test_rejection_naming_an_unseen_response_waits_for_its_done(m: GateMachine) -> None:
    """The server's VAD response is active but its response.created is still on the
    way: the rejection names it, so the gate waits for that response, not re-fires."""
    ticket = claim(m)
    err = ServerError(
        "Conversation already has an active response in progress: resp_VAD1. Wait until "
        "the response is finished before creating a new one.",
        code=ACTIVE_RESPONSE_CODE,
        event_id=ticket.event_id,
    )
    fx = m.on_error(ACTIVE_RESPONSE_CODE, ticket.event_id, err, 0.0)
    assert fx.send is None and m.active == "resp_VAD1" and len(m.pending) == 1
    m.on_created("resp_VAD1", None, out_of_band=False, now=0)
    fx = m.on_done("resp_VAD1", done("resp_VAD1"), out_of_band=False, now=0)
    assert fx.send is not None and fx.send.triggers == ticket.triggers


def test_rejection_naming_a_finished_response_refires_now(m: GateMachine) -> None:
    ticket = claim(m)
    m.on_created("resp_VAD1", None, out_of_band=False, now=0)
    m.on_done("resp_VAD1", done("resp_VAD1"), out_of_band=False, now=0)
    err = ServerError("... in progress: resp_VAD1. Wait ...", code=ACTIVE_RESPONSE_CODE)
    fx = m.on_error(ACTIVE_RESPONSE_CODE, ticket.event_id, err, 0.0)
    assert fx.send is not None and m.active is None
