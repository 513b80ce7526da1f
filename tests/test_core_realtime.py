"""The Realtime protocol core, driven by method calls: no threads, no sockets.

Like ``test_gate.py`` for the gate: feed server messages and outcomes in, check the
effects that come out. Futures stand in for a tool's run (already resolved here).
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

import pytest

from rtclient.core.gate import TICKET_METADATA_KEY, ResponseGate, Ticket
from rtclient.core.realtime import OOB_METADATA_KEY, RealtimeProtocol
from rtclient.effects import Dispatch, Effect, Later, Lost, Send, Settle, Start
from rtclient.errors import (
    BridgeFullError,
    ClosedError,
    ServerError,
    SessionExpiredError,
)
from rtclient.tools import ToolRunner, tool

pytestmark = pytest.mark.timeout(10)


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


def core(*, tools: tuple[Any, ...] = (), client_turns: bool = False) -> RealtimeProtocol:
    return RealtimeProtocol(
        ResponseGate(confirm_timeout=5.0, max_attempts=3),
        ToolRunner(tools),
        client_turns=client_turns,
    )


def msg(event: dict[str, Any]) -> str:
    return json.dumps(event)


def sends(fx: list[Effect], kind: str | None = None) -> list[Send]:
    return [f for f in fx if isinstance(f, Send) and (kind is None or f.kind == kind)]


def settles(fx: list[Effect]) -> dict[tuple[str, str], Any]:
    return {f.key: f.outcome for f in fx if isinstance(f, Settle)}


def created(rid: str, ticket: Ticket | None = None) -> dict[str, Any]:
    metadata = {TICKET_METADATA_KEY: ticket.event_id} if ticket else {}
    return {"type": "response.created", "response": {"id": rid, "metadata": metadata}}


def done(rid: str, ticket: Ticket | None = None, **response: Any) -> dict[str, Any]:
    metadata = {TICKET_METADATA_KEY: ticket.event_id} if ticket else {}
    return {"type": "response.done", "response": {"id": rid, "metadata": metadata, **response}}


def test_a_request_becomes_one_create_and_its_done_resolves_it() -> None:
    c = core()
    trigger, fx = c.request("user_text")
    [create] = sends(fx, "create")
    ticket: Ticket = create.ref
    assert create.event["type"] == "response.create"
    assert c.sent(create, None) == []
    c.written(create.event)
    assert c.counters["creates_sent"] == 1
    c.receive(msg(created("resp_1", ticket)))
    fx = c.receive(msg(done("resp_1", ticket)))
    assert settles(fx)[("done", "resp_1")]["response"]["id"] == "resp_1"
    assert trigger.future.result(0)["response"]["id"] == "resp_1"
    assert isinstance(fx[-1], Dispatch)  # every event is offered to the dispatcher last


def test_requests_while_one_runs_are_coalesced_into_one_create_after_its_done() -> None:
    c = core()
    _, fx = c.request("first")
    [first] = sends(fx)
    c.sent(first, None)
    c.receive(msg(created("resp_1", first.ref)))
    later = [c.request(f"r{i}") for i in range(3)]
    assert all(sends(fx) == [] for _, fx in later)  # queued, not sent
    fx = c.receive(msg(done("resp_1", first.ref)))
    [coalesced] = sends(fx, "create")  # one create serves all three
    assert sorted(coalesced.ref.reasons) == ["r0", "r1", "r2"]


def test_a_full_bridge_rolls_back_and_fires_again_a_closed_one_fails_the_request() -> None:
    c = core()
    trigger, fx = c.request("x")
    [create] = sends(fx)
    [again] = sends(c.sent(create, BridgeFullError("full")), "create")
    assert again.ref.event_id != create.ref.event_id  # a new claim, never a replay
    assert sends(c.sent(again, ClosedError("gone"))) == []
    with pytest.raises(ClosedError):
        trigger.future.result(0)
    assert c.counters["creates_sent"] == 0 and c.stats()["lost"] == 0


def test_a_tool_round_sends_each_output_then_one_followup() -> None:
    c = core(tools=(add,))  # resp_1 was started by the server (VAD): the gate is free
    args = {"type": "response.function_call_arguments.done", "response_id": "resp_1"}
    fx = c.step({**args, "call_id": "c1", "name": "add", "arguments": '{"a": 2, "b": 3}'})
    [start] = [f for f in fx if isinstance(f, Start)]
    assert start.fn is add and start.work.call_id == "c1"  # validated, not yet run
    result: Future[Any] = Future()
    result.set_result(start.fn(*start.args, **start.kwargs))
    [output] = sends(c.finished(start, result, None), "output")
    assert json.loads(output.event["item"]["output"]) == 5
    call = {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{}"}
    assert sends(c.step(done("resp_1", output=[call]))) == []  # the output is not out yet
    fx = c.sent(output, None)  # on the wire: now the round is complete
    [followup] = sends(fx, "create")
    calls, future = settles(fx)[("followup", "resp_1")]
    assert [k.call_id for k in calls] == ["c1"] and future is not None
    assert followup.ref.reasons == ["tool_calls:resp_1"]


def test_an_undelivered_output_fails_the_round_and_sends_no_followup() -> None:
    c = core(tools=(add,))
    call = {"type": "function_call", "call_id": "c1", "name": "add", "arguments": '{"a":1,"b":1}'}
    [start] = [f for f in c.step(done("resp_1", output=[call])) if isinstance(f, Start)]
    result: Future[Any] = Future()
    result.set_result(2)
    [output] = sends(c.finished(start, result, None))
    fx = c.sent(output, ClosedError("gone"))
    assert isinstance(settles(fx)[("followup", "resp_1")], ClosedError) and sends(fx) == []
    assert c.stats()["undelivered_outputs"] == 1


def test_a_tool_timeout_is_a_later_and_its_output_an_error() -> None:
    @tool(timeout=0.5)
    def slow() -> None:
        """Slow."""

    c = core(tools=(slow,))
    call = {"type": "function_call", "call_id": "c1", "name": "slow", "arguments": "{}"}
    fx = c.step(done("resp_1", output=[call]))
    [timer] = [f for f in fx if isinstance(f, Later)]
    [output] = sends(c.timer(timer), "output")
    assert "timed out" in output.event["item"]["output"] and c.stats()["tool_timeouts"] == 1


def test_out_of_band_done_and_errors_settle_their_own_waiters() -> None:
    c = core()
    oob_id, event = c.out_of_band({"conversation": "none"})
    assert event["response"]["metadata"][OOB_METADATA_KEY] == oob_id
    response = {"id": "resp_9", "conversation_id": None, "metadata": {OOB_METADATA_KEY: oob_id}}
    fx = c.receive(msg({"type": "response.done", "response": response}))
    assert settles(fx)[("oob", oob_id)]["response"]["id"] == "resp_9"
    error = {
        "type": "error",
        "error": {"type": "x", "code": "bad", "message": "no", "event_id": oob_id},
    }
    assert isinstance(settles(c.receive(msg(error)))[("oob", oob_id)], ServerError)


def test_answers_settle_the_oldest_request_waiting_for_them() -> None:
    c = core()
    first = {"type": "session.update", "event_id": "evt_rtc_1"}
    second = {"type": "session.update", "event_id": "evt_rtc_2"}
    c.expect_answer(first, None)
    c.expect_answer(second, None)
    assert list(settles(c.receive(msg({"type": "session.updated", "session": {}})))) == [
        ("request", "evt_rtc_1")
    ]
    c.forget_answer("evt_rtc_2")  # its caller gave up: a later answer settles nothing
    assert settles(c.receive(msg({"type": "session.updated", "session": {}}))) == {}


def test_cancel_not_active_frees_the_gate_and_an_expired_session_is_lost() -> None:
    c = core()
    _, fx = c.request("x")
    [create] = sends(fx)
    c.sent(create, None)
    c.receive(msg(created("resp_1", create.ref)))
    assert c.interrupt() == "resp_1"
    cancel = c.cancel_event("resp_1")
    error = {
        "type": "error",
        "error": {
            "code": "response_cancel_not_active",
            "message": "no",
            "event_id": cancel["event_id"],
        },
    }
    c.receive(msg(error))
    assert c.gate.active is None
    expired = {"type": "error", "error": {"code": "session_expired", "message": "over"}}
    [lost] = [f for f in c.receive(msg(expired)) if isinstance(f, Lost)]
    assert isinstance(lost.error, SessionExpiredError)


def test_client_turns_answer_a_committed_turn_and_malformed_messages_are_counted() -> None:
    c = core(client_turns=True)
    fx = c.receive(msg({"type": "input_audio_buffer.committed", "item_id": "item_1"}))
    [create] = sends(fx, "create")
    assert create.ref.reasons == ["user_turn:item_1"]
    assert c.receive("{not json") == [] and c.counters["malformed_events"] == 1


def watchdogs(fx: list[Effect]) -> list[Later]:
    return [f for f in fx if isinstance(f, Later) and f.kind == "watchdog"]


def test_the_watchdog_runs_only_while_a_create_is_unconfirmed() -> None:
    """No timer while idle; the first create arms one (for its deadline), at most one
    is on its way, and it stops once nothing is unconfirmed - re-armed by the next
    create."""
    now = [100.0]
    c = RealtimeProtocol(ResponseGate(confirm_timeout=5.0, clock=lambda: now[0]), ToolRunner(()))
    assert c.watchdog() == []  # idle: nothing to watch
    _, fx = c.request("first")
    [create] = sends(fx, "create")
    [timer] = watchdogs(fx)
    assert timer.delay == 5.0  # the deadline, not a periodic tick
    _, fx = c.request("queued")  # a second request waits; the timer is already armed
    assert sends(fx) == [] and watchdogs(fx) == []
    now[0] = 102.0
    [timer] = c.timer(timer)  # early: nothing to report, armed for the rest
    assert timer.delay == 3.0 and c.gate.stats().confirm_timeouts == 0
    now[0] = 105.0
    assert c.timer(timer) == []  # reported once; nothing left to watch
    assert c.gate.stats().confirm_timeouts == 1
    c.receive(msg(created("resp_1", create.ref)))
    fx = c.receive(msg(done("resp_1", create.ref)))  # the queued request's create leaves
    [create2] = sends(fx, "create")
    [timer] = watchdogs(fx)  # armed again, for that create
    assert timer.delay == 5.0
    c.receive(msg(created("resp_2", create2.ref)))
    assert c.timer(timer) == []  # confirmed: the watchdog stops


def test_after_close_a_request_raises_and_the_watchdog_stops() -> None:
    c = core()
    _, fx = c.request("x")
    [watchdog] = watchdogs(fx)
    c.close(ClosedError("closed"))
    with pytest.raises(ClosedError):
        c.request("y")
    assert c.timer(watchdog) == []


def test_an_idle_timeout_turn_is_the_servers_and_its_response_holds_the_gate() -> None:
    """``input_audio_buffer.timeout_triggered`` announces a server response: with client
    turns its committed silence gets no create of ours, the response is not counted as a
    stranger's, and the gate holds it active - a request waits for its done."""
    p = core(client_turns=True)
    trigger = {"type": "input_audio_buffer.timeout_triggered", "item_id": "item_idle"}
    trigger |= {"audio_start_ms": 0, "audio_end_ms": 5000}
    assert sends(p.receive(msg(trigger))) == []
    committed = {"type": "input_audio_buffer.committed", "item_id": "item_idle"}
    assert sends(p.receive(msg(committed))) == []  # the server answers this turn
    p.receive(msg(created("resp_idle")))
    assert p.gate.active == "resp_idle"
    trigger_, fx = p.request("tool_calls:resp_1")
    assert sends(fx) == []  # waits for the idle response
    (create,) = sends(p.receive(msg(done("resp_idle"))), "create")
    assert create.ref.triggers == (trigger_,)
    spoken = {"type": "input_audio_buffer.committed", "item_id": "item_user"}
    p.receive(msg(created("resp_2", create.ref)))
    p.receive(msg(done("resp_2", create.ref)))
    assert len(sends(p.receive(msg(spoken)), "create")) == 1  # a spoken turn: ours
    assert p.counters["idle_timeouts"] == 1 and p.counters["server_started_responses"] == 0
