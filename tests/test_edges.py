"""The promise at the edges: nothing lost, nothing twice, nothing hangs.

Each test tries what a careful user would - an oversized tool result, an out-of-band
response that calls a tool, a fork, a raising or stuck log sink, a wait after close,
a blocking call inside a callback, hundreds of rounds on one client - against the
emulator over real WebRTC on loopback. The emulator's records are the referee.
"""

from __future__ import annotations

import gc
import json
import os
import select
import threading
from collections.abc import Callable
from typing import Any

import pytest
from loguru import logger

from rtclient import (
    ClosedError,
    ForkedProcessError,
    RealtimeClient,
    RealtimeError,
    ToolCall,
    WaitTimeoutError,
    WrongThreadError,
    logs,
    tool,
)
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(90)

Connect = Callable[..., RealtimeClient]


def client_events(emulator: Emulator, kind: str) -> list[dict[str, Any]]:
    return [e for e in emulator.sessions[-1].client_events if e.get("type") == kind]


def is_output(event: dict[str, Any]) -> bool:
    item = event.get("item") or {}
    return event["type"] == "conversation.item.create" and item.get("type") == (
        "function_call_output"
    )


# -- 1. a tool output is never dropped silently --------------------------------------


def test_oversized_tool_output_becomes_an_error_output_before_the_followup(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    @tool
    def dump() -> str:
        """Returns far more than one event may carry."""
        return "x" * 300_000

    @tool
    def small() -> str:
        """Returns a little."""
        return "ok"

    client = rt_connect(tools=[dump, small])
    answer = client.ask("use dump and small", timeout=30)
    by_name = {c.name: c for c in answer.tool_calls}
    assert by_name["small"].output == "ok" and by_name["small"].error is None
    refused = by_name["dump"]
    assert refused.output is None and refused.error is not None
    assert "bytes" in refused.error and "300" in refused.error

    outputs = [e for e in rt_emulator.sessions[-1].client_events if is_output(e)]
    sent = {e["item"]["call_id"]: e["item"]["output"] for e in outputs}
    error_text = json.loads(sent[refused.call_id])["error"]
    assert "bytes" in error_text and "262144" in error_text  # its size and the limit
    # the follow-up was requested only after both outputs were on the wire
    events = rt_emulator.sessions[-1].client_events
    creates = [i for i, e in enumerate(events) if e["type"] == "response.create"]
    outputs_at = [i for i, e in enumerate(events) if is_output(e)]
    assert len(creates) == 2 and len(outputs_at) == 2 and max(outputs_at) < creates[1]
    stats = client.stats()
    assert stats["oversized_outputs"] == 1 and stats["tool_errors"] == 1
    assert stats["undelivered_outputs"] == 0 and stats["lost"] == 0
    assert rt_emulator.stats()["rejections"] == 0 and rt_emulator.stats()["errors"] == 0


# -- 3. out-of-band responses stay out of the conversation ----------------------------


def test_function_call_in_an_out_of_band_response_sends_nothing_to_the_conversation(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    ran = threading.Event()

    @tool
    def classify(i: int = 0) -> str:
        """Classifies."""
        ran.set()
        return "spam"

    client = rt_connect(tools=[classify])
    user = {"type": "message", "role": "user", "content": [{"type": "input_text"}]}
    user["content"][0]["text"] = "use classify"
    done = client.request_response(conversation="none", input=[user]).result(10)
    assert done["response"]["conversation_id"] is None
    calls = [i for i in done["response"]["output"] if i["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["classify"]  # the requester gets the calls
    # nothing else happens: a plain request afterwards is the only other create
    assert client.request_response().result(10)["response"]["status"] == "completed"
    assert not [e for e in rt_emulator.sessions[-1].client_events if is_output(e)]
    assert len(client_events(rt_emulator, "response.create")) == 2
    assert rt_emulator.stats()["errors"] == 0 and not ran.is_set()
    assert client.stats()["tool_calls"] == 0


# -- 4. after fork(), fail fast ---------------------------------------------------------


def _in_child(client: RealtimeClient, ticket: Any) -> dict[str, str]:
    """Every public call, in a forked child: what each raised."""
    calls: dict[str, Callable[[], Any]] = {
        "send_text": lambda: client.send_text("hi"),
        "request_response": client.request_response,
        "ask": lambda: client.ask("hi", timeout=30),
        "interrupt": lambda: client.interrupt(timeout=None),
        "submit_tool_output": lambda: client.submit_tool_output("call_1", "x"),
        "send_event": lambda: client.send_event({"type": "input_audio_buffer.clear"}),
        "events": client.events,
        "on": lambda: client.on("*", print),
        "stats": client.stats,
        "connect": client.connect,
        "ticket.result": lambda: ticket.result(None),
        "ticket.response": lambda: ticket.response(None),
        "update_session": lambda: client.update_session(instructions="x"),
        "get_item": lambda: client.get_item("item_1"),
    }
    raised: dict[str, str] = {}
    for name, call in calls.items():
        try:
            call()
            raised[name] = "returned"
        except BaseException as exc:
            raised[name] = type(exc).__name__
    try:
        client.close()
        raised["close"] = "returned"
    except BaseException as exc:
        raised["close"] = type(exc).__name__
    return raised


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_fails_fast_and_leaves_the_parent_connection_alone(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    ticket = client.request_response()
    ticket.result(10)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any cleanup
        try:
            os.write(write_end, json.dumps(_in_child(client, ticket)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)
        assert ready, "the child hung"
        report = json.loads(os.read(read_end, 65536).decode())
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    expected = {name: "ForkedProcessError" for name in report} | {"close": "returned"}
    assert report == expected
    assert issubclass(ForkedProcessError, RealtimeError)
    # the parent's connection was not touched
    assert client.send_text("still here").result(10)["response"]["status"] == "completed"


# -- 5. "sent" means on the wire; a log sink changes nothing --------------------------


def test_a_raising_log_sink_cannot_undo_a_send(rt_emulator: Emulator, rt_connect: Connect) -> None:
    def explode(message: Any) -> None:
        raise RuntimeError("sink failed")

    client = rt_connect()
    handler = logger.add(explode, catch=False, level="DEBUG")
    logs.enable()
    try:
        for _ in range(3):
            assert client.request_response().result(10)["response"]["status"] == "completed"
    finally:
        logs.disable()
        logger.remove(handler)
    stats = client.stats()
    assert stats["rollbacks"] == 0 and stats["creates_sent"] == 3
    assert rt_emulator.stats()["creates"] == 3 and rt_emulator.stats()["rejections"] == 0


def test_a_stuck_log_sink_does_not_stall_the_loop_thread(rt_connect: Connect) -> None:
    """The sink blocks every record written on an rtclient thread that is not the
    caller's until released. If the loop thread wrote its own records, the next ask()
    could never finish; they go through the log relay instead, which delivers them -
    still marked with the loop thread - once the sink is free."""

    @tool
    def probe() -> str:
        """A tool round: every rtclient thread logs."""
        return "ok"

    client = rt_connect(tools=[probe])
    release = threading.Event()
    seen: list[tuple[str, str]] = []
    blocked = threading.Event()

    def stuck(message: Any) -> None:
        record = message.record
        seen.append((record["thread"].name, threading.current_thread().name))
        if threading.current_thread().name in ("rtclient-loop", "rtclient-log"):
            blocked.set()
            release.wait(30)

    handler = logger.add(stuck, level="DEBUG")
    logs.enable()
    try:
        answer = client.ask("use probe", timeout=20)
        assert [c.output for c in answer.tool_calls] == ["ok"]
        assert blocked.is_set()  # the relay really was stuck meanwhile
    finally:
        release.set()
        client.close()  # the relay writes what waits, then stops with the loop thread
        logs.disable()
        logger.remove(handler)
    made_on_loop = [written for origin, written in seen if origin == "rtclient-loop"]
    assert made_on_loop and set(made_on_loop) == {"rtclient-log"}


# -- 6. every wait ends -----------------------------------------------------------------


def _every_call(client: RealtimeClient) -> dict[str, Callable[[], Any]]:
    return {
        "send_text": lambda: client.send_text("hi"),
        "request_response": client.request_response,
        "ask": lambda: client.ask("hi", timeout=None),  # type: ignore[arg-type]
        "interrupt": lambda: client.interrupt(timeout=None),
        "submit_tool_output": lambda: client.submit_tool_output("call_1", "x"),
        "send_event": lambda: client.send_event({"type": "input_audio_buffer.clear"}),
        "events": lambda: next(client.events()),
        "oob": lambda: client.request_response(conversation="none", input=[]),
    }


def _walk(client: RealtimeClient) -> dict[str, str]:
    raised = {}
    for name, call in _every_call(client).items():
        try:
            call()
            raised[name] = "returned"
        except ClosedError as exc:
            raised[name] = "ClosedError" if exc.args else "ClosedError(no message)"
        except BaseException as exc:
            raised[name] = type(exc).__name__
    return raised


def test_every_blocking_call_after_close_fails_at_once(rt_connect: Connect) -> None:
    client = rt_connect()
    pending = client.request_response()
    client.close()
    walked = _walk(client)
    assert walked == {name: "ClosedError" for name in walked}
    with pytest.raises(ClosedError):
        pending.result(None)  # a ticket from before the close ends too
    with pytest.raises(ClosedError):
        client.connect()  # a closed client never reconnects


def test_every_blocking_call_after_a_lost_connection_fails_at_once(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    stream = client.events(timeout=20)
    rt_emulator.sessions[-1].close()  # the server ends the call
    for _ in stream:  # ends when the client notices the closed channel
        pass
    assert client.closed
    walked = _walk(client)
    assert walked == {name: "ClosedError" for name in walked}


def test_interrupt_waiting_forever_ends_when_the_connection_drops(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    rt_emulator.set_faults(delay_cancel=30.0)  # the cancelled response never finishes
    client = rt_connect()
    session = rt_emulator.sessions[-1]
    session.pace = Pace(delay=0.05, deltas=400)  # a long answer
    started = threading.Event()
    client.on("response.created", lambda e: started.set())
    client.request_response()
    assert started.wait(10)
    outcome: list[BaseException] = []

    def barge_in() -> None:
        try:
            client.interrupt(timeout=None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=barge_in)
    waiter.start()
    cancel_sent = lambda: any(e["type"] == "response.cancel" for e in session.client_events)  # noqa: E731
    assert rt_emulator.wait_for(cancel_sent, 10)
    session.close()  # the connection drops while interrupt() waits
    waiter.join(20)
    assert not waiter.is_alive() and len(outcome) == 1
    assert isinstance(outcome[0], ClosedError)


def test_a_response_whose_done_never_comes_is_freed_by_interrupt(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    """A response.created with no response.done ever (a server that lost it) holds the
    gate; a request waits behind it. interrupt() cancels it; the server answers that
    nothing is active (response_cancel_not_active), which frees the gate."""
    client = rt_connect()
    session = rt_emulator.sessions[-1]
    seen = threading.Event()
    client.on("response.created", lambda e: seen.set())
    phantom = {
        "id": "resp_phantom",
        "object": "realtime.response",
        "status": "in_progress",
        "conversation_id": "conv_phantom",
        "output": [],
    }
    session.inject(json.dumps({"type": "response.created", "response": phantom}))
    assert seen.wait(10) and client.gate.active == "resp_phantom"
    queued = client.request_response(reason="behind the phantom")
    assert not queued.done()
    assert client.interrupt(wait=False) is None
    assert queued.result(10)["response"]["status"] == "completed"
    assert rt_emulator.stats()["rejections"] == 0 and client.stats()["lost"] == 0


# -- 8. bounded memory ----------------------------------------------------------------


def _count(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def test_hundreds_of_tool_rounds_keep_the_client_flat(rt_connect: Connect) -> None:
    @tool
    def step(i: int = 0) -> int:
        """One step."""
        return i

    client = rt_connect(tools=[step])
    sizes = []
    for round_no in range(240):
        answer = client.ask("use step", timeout=20)
        assert len(answer.tool_calls) == 1
        if round_no in (119, 239):
            sizes.append(
                (
                    _count(ToolCall),
                    len(client._waiters._kept.get("done", ())),
                    len(client._waiters._kept.get("followup", ())),
                    len(client._waiters),
                    len(client.gate.machine._serving) + len(client.gate.machine._finished),
                )
            )
    del answer
    assert sizes[0] == sizes[1], sizes  # flat between round 120 and round 240
    assert sizes[1][0] <= 64 and sizes[1][1] <= 64 and client.stats()["lost"] == 0


# -- 9. blocking calls from a callback fail fast ----------------------------------------


def test_blocking_calls_inside_a_callback_are_refused_at_once(rt_connect: Connect) -> None:
    client = rt_connect()
    refused: dict[str, str] = {}
    finished = threading.Event()
    ticket_box: list[Any] = []

    def on_done(event: dict[str, Any]) -> None:
        if finished.is_set():
            return
        for name, call in {
            "ask": lambda: client.ask("again", timeout=30),
            "ticket.result": lambda: client.request_response().result(30),
            "ticket.response": lambda: client.request_response().response(30),
            "interrupt": lambda: client.interrupt(timeout=30),
            "events": lambda: next(client.events(timeout=30)),
        }.items():
            try:
                call()
                refused[name] = "returned"
            except WrongThreadError as exc:
                refused[name] = "WrongThreadError" if "dispatcher" in str(exc) else str(exc)
            except BaseException as exc:
                refused[name] = type(exc).__name__
        ticket_box.append(client.request_response())  # non-blocking calls still work
        finished.set()

    client.on("response.done", on_done)
    client.request_response()
    assert finished.wait(20)
    assert refused == dict.fromkeys(refused, "WrongThreadError") and len(refused) == 5
    ticket_box[0].result(10)


def test_a_timeout_says_what_was_waited_for(rt_emulator: Emulator, rt_connect: Connect) -> None:
    client = rt_connect()
    rt_emulator.sessions[-1].pace = Pace(delay=0.05, deltas=200)
    client.request_response(reason="long answer")
    queued = client.request_response(reason="queued question")
    with pytest.raises(WaitTimeoutError) as info:
        queued.result(0.01)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RealtimeError)
    assert "queued question" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_processes_never_share_event_ids() -> None:
    """gunicorn --preload forks workers from one parent: two of them on one call (a
    failover) must never send the same event_id or ticket id."""
    from rtclient.core import events
    from rtclient.core.gate import GateMachine

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ids = [events.new_event_id(), GateMachine()._prefix]
            os.write(write_end, json.dumps(ids).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)
        assert ready
        child_event, child_ticket = json.loads(os.read(read_end, 4096).decode())
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert f"_{pid:x}_" in child_event and f"_{pid:x}_" in child_ticket
    assert f"_{os.getpid():x}_" in events.new_event_id()
