"""Reconnect decisions, driven by method calls: no threads, no sockets.

The conversation log is fed server events as a session sends them (the emulator's
order); the plan, the gap decision, the backoff and the session merge are pure
functions of what the log holds. The core's side of a reconnect (detach, hand-over,
recovered rounds) is driven the same way.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

import pytest

from rtclient.core.gate import ResponseGate
from rtclient.core.realtime import RealtimeProtocol, output_item_id
from rtclient.core.restore import (
    ConversationLog,
    Reconnect,
    Reconnected,
    Reconnecting,
    gap_calls,
    merge_session,
    plan_restore,
)
from rtclient.effects import Send, Settle, Start
from rtclient.errors import SessionReplacedError
from rtclient.tools import ToolRunner, tool

pytestmark = pytest.mark.timeout(10)


@tool
def get_weather(city: str = "Oslo") -> str:
    """Weather."""
    return f"sunny in {city}"


def user_text(item_id: str, text: str, previous: str | None) -> list[dict[str, Any]]:
    item = {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }
    added = {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
    return [added, {**added, "type": "conversation.item.done"}]


def assistant(
    item_id: str, previous: str | None, *, audio: str | None = None, text: str = ""
) -> list[dict[str, Any]]:
    part = {"type": "output_audio", "transcript": None} if audio else {"type": "output_text"}
    started = {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    final = {**started, "status": "completed", "content": [dict(part)]}
    if audio:
        final["content"][0]["transcript"] = audio
    else:
        final["content"][0]["text"] = text
    events: list[dict[str, Any]] = [
        {"type": "conversation.item.added", "previous_item_id": previous, "item": started}
    ]
    if audio:
        events.append(
            {
                "type": "response.output_audio_transcript.done",
                "item_id": item_id,
                "content_index": 0,
                "transcript": audio,
            }
        )
    events.append({"type": "conversation.item.done", "previous_item_id": previous, "item": final})
    return events


def call(
    item_id: str, call_id: str, previous: str | None, rid: str = "resp_1"
) -> list[dict[str, Any]]:
    started = {
        "id": item_id,
        "type": "function_call",
        "status": "in_progress",
        "call_id": call_id,
        "name": "get_weather",
        "arguments": "",
    }
    complete = {**started, "status": "completed", "arguments": '{"city": "Paris"}'}
    return [
        {"type": "response.output_item.added", "response_id": rid, "item": started},
        {"type": "conversation.item.added", "previous_item_id": previous, "item": started},
        {
            "type": "response.function_call_arguments.done",
            "response_id": rid,
            "item_id": item_id,
            "call_id": call_id,
            "name": "get_weather",
            "arguments": complete["arguments"],
        },
        {"type": "response.output_item.done", "response_id": rid, "item": complete},
        {"type": "conversation.item.done", "previous_item_id": previous, "item": complete},
    ]


def output(item_id: str, call_id: str, previous: str | None) -> list[dict[str, Any]]:
    item = {
        "id": item_id,
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": '"sunny"',
    }
    added = {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
    return [added, {**added, "type": "conversation.item.done"}]


def fed(*groups: list[dict[str, Any]]) -> ConversationLog:
    log = ConversationLog()
    for group in groups:
        for event in group:
            log.server_event(event)
    return log


def test_a_conversation_is_restored_in_order_text_as_text_audio_as_transcript() -> None:
    log = fed(
        user_text("item_u1", "hello", None),
        assistant("item_a1", "item_u1", text="You said: hello"),
        user_text("item_u2", "get_weather", "item_a1"),
        call("item_f1", "call_1", "item_u2"),
        output("item_o1", "call_1", "item_f1"),
        assistant("item_a2", "item_o1", audio="It is sunny."),
    )
    plan = plan_restore(log.snapshot())
    assert [i["id"] for i in plan.items] == [
        "item_u1",
        "item_a1",
        "item_u2",
        "item_f1",
        "item_o1",
        "item_a2",
    ]
    assert plan.items[1] == {
        "id": "item_a1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "You said: hello"}],
    }
    assert plan.items[3] == {
        "id": "item_f1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert plan.items[5]["content"] == [{"type": "output_text", "text": "It is sunny."}]
    assert plan.counts == {
        "user_messages": 2,
        "assistant_messages": 1,
        "function_calls": 1,
        "function_call_outputs": 1,
        "assistant_audio_as_text": 1,
    }
    assert plan.not_restored == []
    assert all(i["type"] != "response.create" for i in plan.items)


def test_user_audio_becomes_its_transcript_or_is_left_out_without_one() -> None:
    heard = {
        "id": "item_v1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    silent = {**heard, "id": "item_v2"}
    log = fed(
        [{"type": "conversation.item.added", "previous_item_id": None, "item": heard}],
        [{"type": "conversation.item.done", "previous_item_id": None, "item": heard}],
        [
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_v1",
                "content_index": 0,
                "transcript": "book a table",
            }
        ],
        [{"type": "conversation.item.done", "previous_item_id": "item_v1", "item": silent}],
    )
    plan = plan_restore(log.snapshot())
    assert plan.items == [
        {
            "id": "item_v1",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "book a table"}],
        }
    ]
    assert plan.counts == {"user_audio_as_text": 1}
    assert [(n.id, n.reason) for n in plan.not_restored] == [
        ("item_v2", "audio without a transcript")
    ]


def test_a_call_without_output_is_not_restored_nor_an_output_without_its_call() -> None:
    log = fed(
        user_text("item_u1", "get_weather*2", None),
        call("item_f1", "call_1", "item_u1"),
        call("item_f2", "call_2", "item_f1"),
        output("item_o2", "call_2", "item_f2"),
    )
    plan = plan_restore(log.snapshot())
    assert [i["id"] for i in plan.items] == ["item_u1", "item_f2", "item_o2"]
    assert [(n.id, n.reason) for n in plan.not_restored] == [("item_f1", "no output")]
    # the window cuts the call off: its output goes too
    plan = plan_restore(log.snapshot(), max_items=1)
    assert plan.items == []
    assert {n.id: n.reason for n in plan.not_restored} == {
        "item_u1": "older",
        "item_f1": "older",
        "item_f2": "older",
        "item_o2": "its call is not restored",
    }


def test_truncated_incomplete_and_deleted_items_are_left_out() -> None:
    log = fed(
        user_text("item_u1", "tell me a story", None),
        assistant("item_a1", "item_u1", audio="Once upon a time there was"),
        [
            {
                "type": "conversation.item.truncated",
                "item_id": "item_a1",
                "content_index": 0,
                "audio_end_ms": 300,
            }
        ],
        user_text("item_u2", "stop", "item_a1"),
        user_text("item_u3", "scratch that", "item_u2"),
        [{"type": "conversation.item.deleted", "item_id": "item_u3"}],
        assistant("item_a2", "item_u2", text="")[:1],  # added, never done: cut by the drop
    )
    plan = plan_restore(log.snapshot())
    assert [i["id"] for i in plan.items] == ["item_u1", "item_u2"]
    reasons = {n.id: n.reason for n in plan.not_restored}
    assert reasons["item_a1"].startswith("truncated")
    assert reasons["item_a2"] == "incomplete"
    assert "item_u3" not in reasons


def test_items_inserted_after_a_previous_item_keep_the_servers_order() -> None:
    log = fed(
        user_text("item_1", "one", None),
        user_text("item_3", "three", "item_1"),
        user_text("item_2", "two", "item_1"),  # inserted after item_1
        user_text("item_0", "zero", None),  # at the root
    )
    assert [i.id for i in log.snapshot()] == ["item_0", "item_1", "item_2", "item_3"]


def test_a_malformed_event_is_ignored_and_the_log_is_bounded() -> None:
    log = ConversationLog(limit=3)
    for bad in (
        {"type": "conversation.item.added", "item": "nope"},
        {"type": "conversation.item.done", "item": {"id": 7}},
        {"type": "conversation.item.truncated", "item_id": None},
        {"type": "response.output_audio_transcript.done", "item_id": "x", "content_index": "0"},
        {"type": "response.output_item.done", "item": {"type": "function_call"}},
        {"type": "session.updated"},
    ):
        log.server_event(bad)
    assert log.snapshot() == []
    for n in range(5):
        for event in user_text(f"item_{n}", str(n), f"item_{n - 1}" if n else None):
            log.server_event(event)
    assert [i.id for i in log.snapshot()] == ["item_2", "item_3", "item_4"]
    assert log.forgotten == 2
    junk = {"id": "item_x", "type": "message", "role": "user", "content": [1, None]}
    log.server_event({"type": "conversation.item.done", "previous_item_id": "item_4", "item": junk})
    assert plan_restore(log.snapshot()).not_restored[-1].reason == "empty"


def test_session_updates_the_server_accepted_are_merged_over_the_base_config() -> None:
    log = ConversationLog()
    base = {"instructions": "Be brief.", "audio": {"input": {"format": {"type": "audio/pcm"}}}}
    log.client_event({"type": "session.update", "event_id": "e1", "session": {"type": "realtime"}})
    log.client_event(
        {
            "type": "session.update",
            "event_id": "e2",
            "session": {"audio": {"input": {"transcription": {"model": "whisper-1"}}}},
        }
    )
    log.client_event({"type": "session.update", "event_id": "e3", "session": {"tools": []}})
    log.server_event({"type": "session.updated", "session": {}})
    log.server_event({"type": "session.updated", "session": {}})
    log.server_event({"type": "error", "error": {"event_id": "e3", "code": "invalid_value"}})
    merged = merge_session(base, log.session_updates())
    assert merged == {
        "instructions": "Be brief.",
        "type": "realtime",
        "audio": {
            "input": {"format": {"type": "audio/pcm"}, "transcription": {"model": "whisper-1"}}
        },
    }
    assert base["audio"] == {"input": {"format": {"type": "audio/pcm"}}}  # not mutated


def test_gap_calls_are_the_complete_unseen_unanswered_ones() -> None:
    log = fed(
        user_text("item_u1", "get_weather", None),
        call("item_f1", "call_seen", "item_u1"),
        call("item_f2", "call_cut", "item_f1")[:2],  # seen added, the drop came before args
    )
    log.client_event(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_written", "output": "x"},
        }
    )

    def found(item_id: str, call_id: str, **extra: Any) -> dict[str, Any]:
        item = {"id": item_id, "type": "function_call", "call_id": call_id}
        return {**item, "name": "get_weather", "arguments": "{}", **extra}

    owed = gap_calls(
        log,
        [
            found("item_f1", "call_seen"),
            found("item_f2", "call_cut"),  # seen incomplete: the runner never had it
            found("item_f3", "call_written"),
            found("item_f4", "call_new"),
            {"id": "item_m", "type": "message", "role": "assistant"},
            {"id": "item_f5", "type": "function_call", "call_id": "call_partial", "name": "x"},
        ],
    )
    assert [c["call_id"] for c in owed] == ["call_cut", "call_new"]


def test_open_rounds_are_responses_with_calls_and_no_done() -> None:
    log = fed(
        user_text("item_u1", "get_weather", None),
        call("item_f1", "call_1", "item_u1", rid="resp_open"),
        call("item_f2", "call_2", "item_f1", rid="resp_done"),
        [{"type": "response.done", "response": {"id": "resp_done"}}],
    )
    assert log.open_rounds() == {
        "resp_open": [
            {
                "id": "item_f1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            }
        ]
    }


def test_outputs_written_and_not_yet_echoed_are_the_uncertain_ones() -> None:
    log = ConversationLog()
    for call_id in ("call_1", "call_2"):
        item = {"id": output_item_id(call_id), "type": "function_call_output", "call_id": call_id}
        log.client_event({"type": "conversation.item.create", "item": {**item, "output": "x"}})
    for event in output(output_item_id("call_1"), "call_1", None):
        log.server_event(event)
    assert [e["item"]["call_id"] for e in log.unechoed_outputs()] == ["call_2"]
    assert log.answered("call_1") and log.answered("call_2")
    assert output_item_id("call_2") == output_item_id("call_2")  # the same on every send
    assert len(output_item_id("call_" + "x" * 200)) <= 32


def test_backoff_doubles_up_to_its_cap_within_its_jitter() -> None:
    policy = Reconnect(backoff=0.5, backoff_max=3.0, jitter=0.2)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(1, draw=0.0) == pytest.approx(0.4)
    assert policy.delay(1, draw=0.999999) == pytest.approx(0.6, abs=1e-5)
    for bad in ({"max_attempts": 0}, {"backoff": -1}, {"backoff_max": 0.1}, {"jitter": 1.0}):
        with pytest.raises(ValueError):
            Reconnect(**bad)


def test_the_events_are_typed_and_round_trip_as_dicts() -> None:
    event = Reconnected(mode="session", attempts=2, seconds=0.31, restored={"user_messages": 2})
    raw = json.loads(json.dumps(event.model_dump()))
    assert raw["type"] == "rtclient.reconnected"
    assert Reconnected.model_validate(raw) == event
    assert Reconnecting(mode="sideband", reason="lost").type == "rtclient.reconnecting"


# -- the core's side ----------------------------------------------------------------------


def core(runner: ToolRunner | None = None, log: ConversationLog | None = None) -> RealtimeProtocol:
    runner = runner if runner is not None else ToolRunner([get_weather])
    gate = ResponseGate(confirm_timeout=5.0, max_attempts=3)
    return RealtimeProtocol(gate, runner, log=log if log is not None else ConversationLog())


def test_detach_fails_every_waiting_request_and_returns_them_and_nothing_is_sent() -> None:
    c = core()
    first, fx = c.request("user_text")
    assert [s.kind for s in fx if isinstance(s, Send)] == ["create"]
    second, fx = c.request("again", {"instructions": "Shorter."})
    assert fx == []  # queued behind the first
    replaced = SessionReplacedError("lost")
    waiting = c.detach(replaced)
    assert [(t.reason, t.params) for t in waiting] == [
        ("user_text", None),
        ("again", {"instructions": "Shorter."}),
    ]
    for trigger in (first, second):
        assert trigger.future.exception(0) is replaced
    assert c.stats()["lost"] == 0
    with pytest.raises(Exception, match="closed"):
        c.request("after")


def run(fx: list[Any], c: RealtimeProtocol) -> list[Any]:
    """Play the effects a shell would: run each tool at once, report each send written."""
    out: list[Any] = []
    queue = list(fx)
    while queue:
        effect = queue.pop(0)
        out.append(effect)
        if isinstance(effect, Start):
            future: Future[Any] = Future()
            future.set_result(effect.fn(*effect.args, **effect.kwargs))
            queue.extend(c.finished(effect, future, None))
        elif isinstance(effect, Send):
            c.written(effect.event)
            queue.extend(c.sent(effect, None))
    return out


def test_a_sideband_round_that_completes_while_detached_is_followed_up_by_the_next_core() -> None:
    log = ConversationLog()
    old = core(log=log)
    for event in call("item_f1", "call_1", None, rid="resp_1"):
        old.receive(json.dumps(event))
    starts = [
        f
        for f in old.step(
            {
                "type": "response.done",
                "response": {
                    "id": "resp_1",
                    "output": [call("item_f1", "call_1", None)[3]["item"]],
                },
            }
        )
        if isinstance(f, Start)
    ]
    assert len(starts) == 1
    old.detach(SessionReplacedError("lost"), defer_rounds=True)
    future: Future[Any] = Future()
    future.set_result("sunny")
    fx = run(old.finished(starts[0], future, None), old)
    outputs = [f for f in fx if isinstance(f, Send)]
    assert [f.kind for f in outputs] == ["output"]  # sent over whichever connection is up
    assert outputs[0].event["item"]["id"] == output_item_id("call_1")
    assert not any(isinstance(f, Send) and f.kind == "create" for f in fx)  # deferred
    new = core(runner=old.tools, log=log)
    fx = new.adopt(old.hand_over(new))
    assert [f.kind for f in fx if isinstance(f, Send)] == ["create"]  # one follow-up, new gate
    assert ("followup", "resp_1") in {f.key for f in fx if isinstance(f, Settle)}
    assert new.adopt(old.hand_over(new)) == []  # handed over once


def test_recovered_calls_run_once_and_get_one_follow_up() -> None:
    c = core()
    found = [
        {
            "id": "item_gap",
            "type": "function_call",
            "call_id": "call_gap",
            "name": "get_weather",
            "arguments": '{"city": "Rome"}',
        }
    ]
    fx = run(c.recover(found), c)
    outputs = [f for f in fx if isinstance(f, Send) and f.kind == "output"]
    creates = [f for f in fx if isinstance(f, Send) and f.kind == "create"]
    assert [o.event["item"]["output"] for o in outputs] == ["sunny in Rome"]
    assert len(creates) == 1
    # the same call again (say, the response's own done arrives now): nothing more
    again = run(c.recover(found), c)
    again += run(c.finish_rounds({"resp_gap": found}), c)
    assert not [f for f in again if isinstance(f, (Send, Start))]


def test_an_output_the_client_wrote_is_restored_with_its_call_echoed_or_not() -> None:
    log = fed(user_text("item_u1", "get_weather", None), call("item_f1", "call_1", "item_u1"))
    item = {"id": output_item_id("call_1"), "type": "function_call_output", "call_id": "call_1"}
    log.client_event({"type": "conversation.item.create", "item": {**item, "output": "sunny"}})
    # the connection died before the echo: the client still knows what it answered
    plan = plan_restore(log.snapshot())
    assert [i["id"] for i in plan.items] == ["item_u1", "item_f1", output_item_id("call_1")]
    assert plan.items[-1] == {**item, "output": "sunny"}
    # the echo changes nothing but the certainty
    for event in output(output_item_id("call_1"), "call_1", "item_f1"):
        log.server_event(event)
    assert [i.id for i in log.snapshot()] == ["item_u1", "item_f1", output_item_id("call_1")]
    assert log.unechoed_outputs() == []
